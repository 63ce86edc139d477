"""Screenshots of the built site (site/): the start page and a reference page at desktop and phone widths, and
the search box in use, into docs/site-screenshots/. Needs Debian's chromium and playwright (the test extra).

    make docs && .venv/bin/python tools/docs/screenshots.py
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "site-screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
PAGES = {"start": "", "reference-python": "reference/python/", "reference-cli": "reference/cli/"}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def serve_site() -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ROOT / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    server, url = serve_site()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            for size, (width, height) in SIZES.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                for name, path in PAGES.items():
                    page.goto(url + path, wait_until="networkidle")
                    page.screenshot(path=str(OUT / f"{name}-{size}.png"))
                page.goto(url, wait_until="networkidle")  # the search box, typed into
                if size == "phone":
                    page.click("label[for=__search]")
                page.type("input[data-md-component=search-query]", "api keys", delay=50)
                page.wait_for_timeout(3000)
                page.screenshot(path=str(OUT / f"search-{size}.png"))
                page.close()
            browser.close()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
