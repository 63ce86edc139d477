"""The playground's look-inside views in headless Chromium: each view is opened, used (type, click a head,
switch layers) and the numbers it shows are checked against the API's JSON for the same input; a refused
request shows an error line, not a blank panel; page weight and first paint are measured in the browser.

Chromium and playwright as in test_playground.py. BERTKIT_SCREENSHOTS=DIR saves a screenshot of each view at
1280x800 and 390x844 (full page) into DIR: docs/playground/ holds the ones shown in the README.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from test_playground import CHROMIUM_FLAGS, find_chromium, install_chromium

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

log = logging.getLogger(__name__)
REPORT = Path(__file__).resolve().parents[2] / "docs" / "report"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
MAX_PAGE_BYTES, MAX_FIRST_PAINT_MS = 200_000, 1000


@pytest.fixture(scope="module")
def chromium_context(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    chromium = find_chromium() or install_chromium()
    if chromium is None:
        pytest.skip("no chromium: install Debian's chromium (apt-get install -y chromium) to run the playground test")
    with sync_api.sync_playwright() as p:
        try:
            context = p.chromium.launch_persistent_context(
                str(tmp_path_factory.mktemp("chromium-views")), executable_path=chromium, headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 800},
            )
        except Exception as e:  # noqa: BLE001 - a browser that cannot start is an environment problem
            pytest.skip(f"chromium at {chromium} did not start under playwright: {str(e).splitlines()[0]}")
        yield context
        context.close()


@pytest.fixture(scope="module")
def server(encoder):
    """The packaged model with docs/report behind the which-vector panel and splade-tiny behind fill-mask."""
    from support import thread_server

    from bertkit import Encoder
    from bertkit.serve import create_app

    app = create_app(encoder)
    app.state.service.report_dir = REPORT
    app.state.service.mask_encoder = Encoder.load("splade-tiny", device="cpu")
    with thread_server(app) as s:
        yield s


@pytest.fixture
def page(chromium_context):
    page = chromium_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.close()
    assert not errors, errors  # no script error on any view


def open_view(page, url: str, view: str) -> None:
    page.goto(f"{url}/#{view}")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert page.is_visible(f"section#{view}") and page.get_attribute(f"#views a[href='#{view}']", "class") == "active"


def wait_renders(page, panel: str, n: int) -> None:
    """Until the panel has drawn (or refused) its n-th answer."""
    page.wait_for_function(f"Number(document.getElementById('{panel}').dataset.renders || 0) >= {n}", timeout=60_000)


def values(page, selector: str) -> np.ndarray:
    return np.asarray(page.eval_on_selector_all(
        selector, "els => els.map(e => Number(e.dataset.value ?? e.getAttribute('data-value')))"))


def screenshots(page, view: str, prepare=None) -> None:
    """With BERTKIT_SCREENSHOTS=DIR: DIR/VIEW-desktop.png (1280x800) and DIR/VIEW-phone.png (390x844), full page."""
    folder = os.environ.get("BERTKIT_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, (w, h) in SIZES.items():
        page.set_viewport_size({"width": w, "height": h})
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        if prepare:
            prepare(page)
        page.wait_for_timeout(300)
        path = Path(folder) / f"{view}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        small_png(path)
    page.set_viewport_size({"width": 1280, "height": 800})


def small_png(path: Path) -> None:
    """Rewrite a screenshot as a 256-colour PNG (about 2.5x smaller; flat UI colours survive it)."""
    from PIL import Image

    with Image.open(path) as im:
        palette = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(path, optimize=True)


# ----------------------------------------------------------------------------------------------------------


def test_attention_view(page, server):
    open_view(page, server.url, "attention")
    wait_renders(page, "att-grid", 1)
    page.fill("#att-text", "Angela Merkel visited Paris.")
    page.fill("#att-pair", "She met the mayor.")
    page.click("#att-run")
    wait_renders(page, "att-grid", 2)
    api = server.post("/attention", {"text": "Angela Merkel visited Paris.", "pair": "She met the mayor."}).json()
    att = np.asarray(api["attentions"])
    n = len(api["tokens"])
    assert page.eval_on_selector_all("#att-grid button.head", "bs => bs.length") == 6 * 12

    # Click a head: the enlarged map is that head's matrix, with the tokens on both axes.
    page.click("#att-grid button.head[data-layer='2'][data-head='4']")
    assert (page.get_attribute("#att-focus", "data-layer") == "2"
            and page.get_attribute("#att-focus", "data-head") == "4")
    shown = values(page, "#att-focus rect.cell").reshape(n, n)
    assert np.abs(shown - att[2, 4]).max() <= 1e-6
    texts = page.eval_on_selector_all("#att-focus text.cell-text", "ts => ts.map(t => Number(t.textContent))")
    assert texts == [round(100 * v) for v in att[2, 4].ravel()]  # the numbers printed in the cells, in %
    labels = page.eval_on_selector_all("#att-focus text.tok", "ts => ts.map(t => t.textContent)")
    assert labels[::2] == api["tokens"] and labels[1::2] == api["tokens"]  # rows and columns
    assert "Layer 3, head 5" in page.inner_text("#att-focus h3")

    # Heavy heads are marked as the API says; the [CLS] table is the head-mean [CLS] row of each layer.
    marked = page.eval_on_selector_all("#att-grid button.cls-heavy",
                                       "bs => bs.map(b => [+b.dataset.layer, +b.dataset.head])")
    assert sorted(marked) == sorted(api["cls_heavy"])
    assert page.eval_on_selector_all("#att-grid button.sep-heavy", "bs => bs.length") == len(api["sep_heavy"])
    cls_rows = values(page, "#att-cls td").reshape(n, 6)
    assert np.abs(cls_rows - att[:, :, 0, :].mean(1).T).max() < 1e-6

    # The packaged model has no [SEP]-heavy head; BERT-base has many. The page frames whichever heads the API
    # lists: an answer with two listed (the rest of it real) shows exactly those two.
    def two_sep_heavy(route):
        body = route.fetch().json()
        route.fulfill(json={**body, "sep_heavy": [[1, 2], [4, 7]]})

    page.route("**/attention", two_sep_heavy)
    page.click("#att-run")
    wait_renders(page, "att-grid", 3)
    framed = page.eval_on_selector_all("#att-grid button.sep-heavy",
                                       "bs => bs.map(b => [+b.dataset.layer, +b.dataset.head])")
    assert framed == [[1, 2], [4, 7]] and "head (≥50% of its attention on [SEP]): 2" in page.inner_text("#att-grid")
    page.unroute("**/attention")

    # Over the stated limit: an error line and an error in each panel, never a blank one.
    page.fill("#att-text", " ".join(["word"] * 70))
    page.click("#att-run")
    wait_renders(page, "att-grid", 4)
    assert "413" in page.inner_text("#att-status") and "at most 64" in page.inner_text("#att-status")
    assert "error" in page.get_attribute("#att-status", "class")
    for panel in ("att-grid", "att-focus", "att-cls"):
        assert "The server refused" in page.inner_text(f"#{panel} .panel-error")
    screenshots(page, "attention", lambda p: wait_renders(p, "att-grid", 1))


def test_layers_view(page, server):
    open_view(page, server.url, "layers")
    wait_renders(page, "layers-lines", 1)
    texts = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply today.",
             "A woman plays the violin."]
    page.fill("#layers-texts", "\n".join(texts))
    page.click("#layers-run")
    wait_renders(page, "layers-lines", 2)
    api = server.post("/layers", {"texts": texts}).json()
    m = {p: np.asarray(v) for p, v in api["matrices"].items()}

    # A line per pair across the hidden states, one chart per pooling.
    for p in ("cls", "mean", "max"):
        points = values(page, f"svg.line-chart[data-pooling='{p}'] circle").reshape(6, 7)  # 6 pairs x 7 states
        pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
        assert np.abs(points - np.stack([m[p][:, i, j] for i, j in pairs])).max() < 1e-6
    assert page.inner_text(".legend").split() == ["s1–s2", "s1–s3", "s1–s4", "s2–s3", "s2–s4", "s3–s4"]

    # Switch layers: the heat maps follow.
    for state in (6, 2, 0):
        if state != 6:
            page.click(f"#layers-pick button.state[data-state='{state}']")
        for p in ("cls", "mean", "max"):
            shown = values(page, f"table.layer-map[data-pooling='{p}'][data-state='{state}'] td").reshape(4, 4)
            assert np.abs(shown - m[p][state]).max() < 1e-6
    assert "0 (embeddings)" in page.inner_text("#layers-maps")

    # Each token against [CLS], per layer.
    page.fill("#tokcls-text", "The cat sat on the mat.")
    page.click("#tokcls-run")
    wait_renders(page, "tokcls-table", 2)
    tok = server.post("/layers/tokens", {"text": "The cat sat on the mat."}).json()
    shown = values(page, "#tokcls-table td").reshape(len(tok["tokens"]), tok["states"])
    assert np.abs(shown - np.asarray(tok["similarity"]).T).max() < 1e-6

    # Refused: more sentences than the route takes.
    page.fill("#layers-texts", "\n".join(f"sentence number {i}" for i in range(9)))
    page.click("#layers-run")
    wait_renders(page, "layers-lines", 3)
    assert "413" in page.inner_text("#layers-status") and "at most 8" in page.inner_text("#layers-lines .panel-error")
    screenshots(page, "layers", lambda p: (wait_renders(p, "layers-lines", 1), wait_renders(p, "tokcls-table", 1)))


def test_model_view(page, server):
    open_view(page, server.url, "model")
    wait_renders(page, "outputs-table", 1)
    tree = server.get("/model").json()
    assert page.eval_on_selector_all("#model-tree details", "ds => ds.map(d => d.dataset.part)") == [
        p["name"] for p in tree["parts"]]
    assert page.get_attribute("#model-total", "data-total") == str(tree["total"])
    assert "22,713,216" in page.inner_text("#model-total")
    assert "pooler present" in page.inner_text("#model-tree .heads")
    page.click("#model-tree details[data-part='encoder.layer.0'] summary")
    assert "attention.self.query.weight" in page.inner_text("#model-tree details[data-part='encoder.layer.0']")

    page.fill("#outputs-text", "Angela Merkel visited Paris.")
    page.click("#outputs-run")
    wait_renders(page, "outputs-table", 2)
    api = server.post("/model/outputs", {"text": "Angela Merkel visited Paris."}).json()["outputs"]
    rows = page.eval_on_selector_all("#outputs-table tr[data-output]", "trs => trs.map(tr => [tr.dataset.output, "
                                     "JSON.parse(tr.cells[1].dataset.shape), tr.cells[1].dataset.count])")
    assert [r[0] for r in rows] == ["last_hidden_state", "pooler_output", "hidden_states", "attentions"]
    for name, shape, count in rows:
        assert shape == api[name]["shape"] and count == str(api[name].get("count") or "")
    assert "7 × (1, 8, 384)" in page.inner_text("#outputs-table")
    screenshots(page, "model", lambda p: wait_renders(p, "outputs-table", 1))


def test_which_vector_view(page, server):
    open_view(page, server.url, "which")
    wait_renders(page, "which-body", 1)
    api = server.get("/report").json()
    recs = page.eval_on_selector_all("#which-recs li", "ls => ls.map(l => l.textContent)")
    assert len(recs) == len(api["recommendations"])
    assert recs[0].startswith("sts (stsb/dev.tsv): use mean (spearman 86.7")
    shown = values(page, "table.report td")
    expected = [c["score"] if c["score"] is not None else np.nan for r in api["rows"] for c in r["cells"]]
    assert np.allclose(np.where(np.isnan(expected), 0, shown), np.nan_to_num(expected), atol=1e-9)
    assert page.eval_on_selector_all("table.report td.best", "ts => ts.length") == sum(
        c["best"] for r in api["rows"] for c in r["cells"])
    page.wait_for_function("document.querySelector('#which-figure img')"
                           " && document.querySelector('#which-figure img').naturalWidth > 0")
    assert page.eval_on_selector("#which-figure img", "i => i.naturalWidth") == 1956  # docs/report/summary.png
    screenshots(page, "which", lambda p: p.wait_for_function(
        "document.querySelector('#which-figure img') && document.querySelector('#which-figure img').naturalWidth > 0"))


def test_words_view_fill_mask_with_the_packaged_masked_lm(page, server):
    open_view(page, server.url, "words")
    assert "retrieval" in page.inner_text("#fill-note") and page.is_visible("#fill-note")
    assert "splade-tiny" in page.inner_text("#fill-model")
    page.fill("#mask-text", "Paris is the [MASK] of France.")
    page.click("#fill")
    page.wait_for_selector("#fill-results table.mask-preds")
    rows = page.eval_on_selector_all("#fill-results table.mask-preds tr",
                                     "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")
    api = server.post("/fill-mask", {"text": "Paris is the [MASK] of France.", "top_k": 5}).json()["masks"][0]
    assert [r[0] for r in rows[1:]] == [p["token"] for p in api]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([p["score"] for p in api], abs=1e-4)

    def prepare(p):
        p.click("#fill")
        p.click("#tokenize")
        p.wait_for_selector("#fill-results table.mask-preds")
        p.wait_for_selector("#token-results .token")

    screenshots(page, "words", prepare)


def test_similarity_view_screenshot(page, server):
    open_view(page, server.url, "similarity")

    def prepare(p):
        p.click("#compare")
        p.wait_for_selector("table.heatmap[data-pooling='mask_prompt']", timeout=60_000)

    prepare(page)
    screenshots(page, "similarity", prepare)


def test_page_weight_and_first_paint(chromium_context, server):
    """The page without images under 200 KB, and its first paint under 1 s, measured by the browser's
    Performance API on loopback (a fresh page; the machine may be busy, so the bound is generous)."""
    page = chromium_context.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    timing = page.evaluate("""() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource').filter(r => r.initiatorType !== 'img');
        const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
        return {bytes: nav.decodedBodySize + res.reduce((s, r) => s + r.decodedBodySize, 0),
                files: [nav.name, ...res.map(r => r.name)], paint};
    }""")
    page.close()
    first_paint = timing["paint"].get("first-contentful-paint", timing["paint"].get("first-paint"))
    log.warning("playground: %d bytes in %d files (no images), first contentful paint %.0f ms",
                timing["bytes"], len(timing["files"]), first_paint)
    assert (any(f.endswith("/static/app.js") for f in timing["files"])
            and any(f.endswith("/info") for f in timing["files"]))
    assert timing["bytes"] < MAX_PAGE_BYTES, timing
    assert first_paint is not None and first_paint < MAX_FIRST_PAINT_MS, timing
    # The files themselves, for the record: everything in static/ together is under the bound too.
    static = Path(__file__).resolve().parents[2] / "src" / "bertkit" / "static"
    assert sum(f.stat().st_size for f in static.iterdir()) < MAX_PAGE_BYTES


def test_views_with_an_api_key(chromium_context, encoder):
    """With keys, the page asks for one once; every view's requests carry it, the chart image included."""
    from support import thread_server

    from bertkit.serve import create_app
    from bertkit.serve.auth import AccessPolicy, KeyStore

    key = "sk-views-5a4b3c2d"
    app = create_app(encoder, access=AccessPolicy(KeyStore([key])))
    app.state.service.report_dir = REPORT
    with thread_server(app) as srv:
        page = chromium_context.new_page()
        page.goto(srv.url + "/#which")
        page.wait_for_selector("body[data-needs-key='1']", timeout=30_000)
        assert "needs an API key" in page.inner_text("#key-status")
        page.fill("#api-key", key)
        page.click("#use-key")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        page.wait_for_function("document.querySelector('#which-figure img') && "
                               "document.querySelector('#which-figure img').naturalWidth > 0", timeout=30_000)
        page.click("#views a[href='#attention']")
        wait_renders(page, "att-grid", 1)
        assert page.eval_on_selector_all("#att-grid button.head", "bs => bs.length") == 72
        page.evaluate("sessionStorage.clear()")
        page.close()
