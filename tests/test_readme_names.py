"""Every bertkit name the README imports still imports (issue 28: moved names keep an import path, or the README
changes with them)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FROM_IMPORT = re.compile(r"^\s*from (bertkit[\w.]*) import ([\w, ]+)", re.M)
PLAIN_IMPORT = re.compile(r"^\s*import (bertkit[\w.]*)", re.M)


def readme_imports() -> list[tuple[str, str | None]]:
    text = README.read_text(encoding="utf-8")
    found = {(m.group(1), name.strip()) for m in FROM_IMPORT.finditer(text) for name in m.group(2).split(",")}
    found |= {(m.group(1), None) for m in PLAIN_IMPORT.finditer(text)}
    return sorted(found, key=lambda x: (x[0], x[1] or ""))


def test_the_readme_imports_something():
    assert len(readme_imports()) >= 10  # the parser found the examples (a README without any would pass below)


@pytest.mark.parametrize(("module", "name"), readme_imports())
def test_readme_name_imports(module, name):
    mod = importlib.import_module(module)
    if name is not None:
        assert hasattr(mod, name), f"README imports {name} from {module}, which has no such name"
