"""MkDocs hooks (mkdocs.yml `hooks:`): the generated reference pages, made at build time from the code.

- reference/cli.md from the Typer app (cli_reference.py);
- reference/http.md from the server's OpenAPI schema (http_reference.py);
- explanations/layout.md from the source tree's module docstrings (layout_reference.py).

They are added to the build as generated files, never written into docs/, so they cannot go stale in git.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mkdocs loads this file by path, not as a package

from cli_reference import cli_markdown
from http_reference import http_markdown
from layout_reference import layout_markdown

log = logging.getLogger("mkdocs.hooks.bertkit")
GENERATED = {"reference/cli.md": cli_markdown, "reference/http.md": http_markdown,
             "explanations/layout.md": layout_markdown}


def on_files(files: Files, config) -> Files:
    for uri, make in GENERATED.items():
        if files.get_file_from_path(uri) is not None:
            raise RuntimeError(f"docs/{uri} exists, but it is generated at build time: delete it")
        logging.getLogger("bertkit").setLevel(logging.WARNING)
        files.append(File.generated(config, uri, content=make()))
        log.info("generated %s", uri)
    return files
