"""The playground page in headless Chromium: type two sentences, see the heat maps; tokens; fill-mask state.

Needs Debian's `chromium` and the Python `playwright` package (the `test` extra). The fixture installs
chromium with apt-get when it is missing and this process may (root, apt-get present, BERTKIT_NO_APT unset);
otherwise the tests skip saying why. Playwright never downloads a browser here: it drives /usr/bin/chromium.
Set BERTKIT_SCREENSHOT=path.png to keep a screenshot of the page for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium() -> str | None:
    """apt-get install chromium, when we may; None when it is not possible here."""
    if os.environ.get("BERTKIT_NO_APT") or not shutil.which("apt-get") or os.geteuid() != 0:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=False).returncode != 0:
            return None
    return find_chromium()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    chromium = find_chromium() or install_chromium()
    if chromium is None:
        pytest.skip("no chromium: install Debian's chromium (apt-get install -y chromium) to run the playground test")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a new, empty user data dir
    with sync_api.sync_playwright() as p:
        try:
            context = p.chromium.launch_persistent_context(
                str(profile), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 900},
            )
        except Exception as e:  # noqa: BLE001 - a browser that cannot start is an environment problem
            pytest.skip(f"chromium at {chromium} did not start under playwright: {str(e).splitlines()[0]}")
        yield context
        context.close()


@pytest.fixture(scope="module")
def url(encoder):
    """A real uvicorn server in a thread of this process, serving the packaged model on a free port."""
    from support import thread_server

    from bertkit.serve import create_app

    with thread_server(create_app(encoder)) as server:
        yield server.url


def test_two_sentences_give_heat_maps(browser, url, encoder):
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert "384 dimensions" in page.inner_text("#model-info")

    a, b = "A man is playing a guitar.", "Someone is playing an instrument."
    page.fill("#sentences", f"{a}\n{b}")
    page.click("#compare")
    page.wait_for_selector("table.heatmap[data-pooling='mask_prompt']", timeout=60_000)

    poolings = page.eval_on_selector_all("table.heatmap", "ts => ts.map(t => t.dataset.pooling)")
    assert poolings == ["cls", "pooler", "mean", "mask_prompt"]
    for pooling in poolings:
        cells = page.eval_on_selector_all(
            f"table.heatmap[data-pooling='{pooling}'] td",
            "tds => tds.map(td => [Number(td.dataset.value), td.style.background])",
        )
        assert len(cells) == 4  # 2 x 2
        expected = encoder.similarity(a, b, pooling=pooling)
        assert abs(cells[1][0] - expected) < 1e-4 and abs(cells[2][0] - expected) < 1e-4
        assert abs(cells[0][0] - 1) < 1e-4 and cells[0][1] == cells[3][1]  # the diagonal: one colour
        if expected < 0.9:  # a lower similarity is drawn lighter
            assert cells[1][1] != cells[0][1] and cells[1][1].startswith("rgb(")

    shot = os.environ.get("BERTKIT_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)

    # Tokens of a text, with offsets (in the fill-mask & tokens view).
    page.click("#views a[href='#words']")
    page.fill("#token-text", "Angela Merkel visited Paris.")
    page.click("#tokenize")
    page.wait_for_selector("#token-results .token")
    tokens = page.eval_on_selector_all("#token-results .token", "els => els.map(e => e.firstChild.textContent.trim())")
    assert tokens == ["[CLS]", "angela", "mer", "##kel", "visited", "paris", ".", "[SEP]"]

    # The packaged model has no masked-LM head: the page says so instead of offering a broken button.
    assert page.is_disabled("#fill")
    assert "no masked-LM head" in page.inner_text("#fill-status")

    # Errors are shown, not swallowed: one sentence is not enough for a matrix.
    page.click("#views a[href='#similarity']")
    page.fill("#sentences", "only one")
    page.click("#compare")
    assert "at least two" in page.inner_text("#similarity-status")
    page.close()


def test_page_files_are_packaged():
    static = Path(__file__).resolve().parents[2] / "src" / "bertkit" / "static"
    assert {"index.html", "core.js", "charts.js", "attention.js", "layers.js", "model.js", "app.js", "style.css"} <= {
        p.name for p in static.iterdir()}


def test_fill_mask_panel_with_a_trained_head(browser):
    """splade-tiny's trained (retrieval-tuned) masked-LM head behind the fill-mask panel: the page shows the
    predictions the library gives."""
    from support import thread_server

    from bertkit import Encoder
    from bertkit.serve import create_app

    splade = Encoder.load("splade-tiny", device="cpu")
    text = "Paris is the [MASK] of France."
    with thread_server(create_app(splade)) as server:
        page = browser.new_page()
        page.goto(server.url + "/#words")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert not page.is_disabled("#fill")
        page.fill("#mask-text", text)
        page.click("#fill")
        page.wait_for_selector("#fill-results table.mask-preds")
        rows = page.eval_on_selector_all("#fill-results table.mask-preds tr",
                                         "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")
        page.close()
    expected = splade.fill_mask(text, top_k=5)[0]
    assert rows[0] == ["[MASK] #1"]
    assert [r[0] for r in rows[1:]] == [t for t, _ in expected]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([p for _, p in expected], abs=1e-4)
