"""Issue 29 row 24: a page on an allowed origin calls `bertkit serve` through the OpenAI JavaScript SDK, in
headless Chromium. The SDK sends `X-Stainless-*` headers with `Authorization`, so the browser asks a CORS
preflight first; the server must allow those headers for an allowed origin.

The SDK is the npm package `openai` (pinned in tests/js/package.json), installed into tests/js/node_modules by
`make install` (tests run without network); this test skips, saying so, when it is not there. The page is
served by a second loopback server (another port: another origin) as a native ES module, unbundled.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from support import free_port, thread_server

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

SDK = Path(__file__).resolve().parents[1] / "js" / "node_modules" / "openai"
KEY = "sk-browser-4d3c2b1a"
SENTENCES = ["A man is playing a guitar.", "Someone is playing an instrument."]
PAGE = """<!doctype html><meta charset="utf-8"><title>bertkit from the OpenAI JS SDK</title>
<script type="module">
import OpenAI from "./openai/index.mjs";
window.embed = async (baseURL, apiKey, input) => {
  const client = new OpenAI({baseURL, apiKey, dangerouslyAllowBrowser: true, maxRetries: 0});
  try {
    const r = await client.embeddings.create({input, model: "all-MiniLM-L6-v2"});
    return {vectors: r.data.map((d) => Array.from(d.embedding)), usage: r.usage};
  } catch (e) {
    return {status: e.status ?? null, error: String(e)};
  }
};
window.sdkReady = true;
</script>"""


@pytest.fixture(scope="module")
def page_origin(tmp_path_factory):
    """A static server for the page and the SDK's files, on its own port (its own origin)."""
    if not (SDK / "index.mjs").is_file():
        pytest.skip(f"the OpenAI JS SDK is not installed at {SDK}: run `make install` (npm ci --prefix tests/js)")
    root = tmp_path_factory.mktemp("sdk-page")
    (root / "index.html").write_text(PAGE, encoding="utf-8")
    (root / "openai").symlink_to(SDK, target_is_directory=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        extensions_map: ClassVar = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

        def log_message(self, *args):
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()


def test_row24_the_openai_js_sdk_calls_the_server_from_an_allowed_origin(encoder, page_origin):
    from test_playground import CHROMIUM_FLAGS, find_chromium, install_chromium

    from bertkit.serve import create_app
    from bertkit.serve.auth import AccessPolicy, KeyStore

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    chromium = find_chromium() or install_chromium()
    if chromium is None:
        pytest.skip("no chromium: install Debian's chromium (apt-get install -y chromium) to run the browser test")
    app = create_app(encoder, access=AccessPolicy(KeyStore([KEY]), cors_origins=(page_origin,)))
    with thread_server(app) as srv, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        sent: list[dict] = []
        page.on("request", lambda r: sent.append({"method": r.method, **r.headers}) if srv.url in r.url else None)
        page.goto(page_origin + "/index.html")
        page.wait_for_function("window.sdkReady === true", timeout=30_000)
        got = page.evaluate("([url, key, input]) => window.embed(url, key, input)", [srv.url + "/v1", KEY, SENTENCES])
        assert "vectors" in got, got
        np.testing.assert_allclose(got["vectors"], encoder.encode(SENTENCES, normalize=True), atol=1e-4)
        assert got["usage"]["prompt_tokens"] > 0
        post = next(h for h in sent if h["method"] == "POST")
        assert post["x-stainless-lang"] == "js" and "x-stainless-package-version" in post, post
        # A wrong key: the 401 reaches the page (the CORS headers are on it), the SDK raises its status.
        refused = page.evaluate("([url, input]) => window.embed(url, 'sk-wrong', input)", [srv.url + "/v1", SENTENCES])
        assert refused["status"] == 401, refused
        browser.close()
