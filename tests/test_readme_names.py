"""Every bertkit name the README and the docs site import still imports (issue 28: moved names keep an import
path, or the docs change with them). The docs' blocks also run (conftest.py); this names the culprit faster."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FROM_IMPORT = re.compile(r"^\s*from (bertkit[\w.]*) import ([\w, ]+)", re.MULTILINE)
PLAIN_IMPORT = re.compile(r"^\s*import (bertkit[\w.]*)", re.MULTILINE)


def readme_imports() -> list[tuple[str, str | None]]:
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    found = {(m.group(1), name.strip()) for m in FROM_IMPORT.finditer(text) for name in m.group(2).split(",")}
    found |= {(m.group(1), None) for m in PLAIN_IMPORT.finditer(text)}
    return sorted(found, key=lambda x: (x[0], x[1] or ""))


def test_the_docs_import_something():
    assert len(readme_imports()) >= 10  # the parser found the examples (pages without any would pass below)


@pytest.mark.parametrize(("module", "name"), readme_imports())
def test_readme_name_imports(module, name):
    mod = importlib.import_module(module)
    if name is not None:
        assert hasattr(mod, name), f"the docs import {name} from {module}, which has no such name"
