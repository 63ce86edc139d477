"""The code-layout page, generated from the source tree: every package and module of src/bertkit in layer
order (pyproject.toml's import-linter contract, lowest first) with the first sentence of its docstring, so the
page follows the code as modules move."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "bertkit"

HEADER = """# How the code is laid out

Generated from `src/bertkit` when the site is built: each module with the first sentence of its docstring.
The packages are layered, lowest first below; a module imports only from layers below its own, never above,
not even lazily inside a function (checked by `lint-imports` in `make test`, contracts in `pyproject.toml`).
Tests mirror the tree (`tests/model`, `tests/serve`, ...); `bench/` holds speed and memory benchmarks.

Where a new piece goes:

- **a pooling**: a row in `pooling.py`'s table and a branch of its `pool` function (`POOLING_MODES` is the one
  list every check uses), plus a case in `tests/test_pooling.py`;
- **a loss**: sentence-embedding losses live in `train/losses.py` (`LOSSES`, `make_loss`); a new objective is
  a new file in `train/` that calls `train.loop.train`;
- **a route**: a request type in `serve/schemas.py`, the work in a `Service` method (`serve/service.py`), and a
  handler in `serve/routes.py`; it appears in the [HTTP reference](../reference/http.md) by itself;
- **a command**: a function in its group's module under `cli/`, and one registration line in `cli/entry.py`;
  it appears in the [CLI reference](../reference/cli.md) by itself. User errors raise a `bertkit.errors` type.
"""


def layers() -> list[str]:
    """The layer names of the layering contract, lowest first ("a | b" split into a, b)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract.get("type") == "layers":
            return [name.strip() for layer in reversed(contract["layers"]) for name in layer.split("|")]
    return []


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    end = re.search(r"[.:]\s+(?=[A-Z`(])", first)  # the first sentence: "e.g. its" does not end one
    return (first[: end.start() + 1] if end else first).replace("|", "\\|")


def layout_markdown() -> str:
    order = layers()
    names = sorted({p.stem if p.is_file() else p.name for p in SRC.iterdir()
                    if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__init__.py"},
                   key=lambda n: (order.index(n) if n in order else len(order), n))
    parts = [HEADER, "| module | what it holds |", "|---|---|", f"| `bertkit` | {summary(SRC / '__init__.py')} |"]
    for name in names:
        package = SRC / name
        if package.is_dir():
            parts.append(f"| **`{name}/`** | {summary(package / '__init__.py')} |")
            parts += [f"| `{name}/{m.name}` | {summary(m)} |" for m in sorted(package.glob("*.py"))
                      if m.name != "__init__.py"]
        else:
            parts.append(f"| `{name}.py` | {summary(SRC / f'{name}.py')} |")
    return "\n".join(parts) + "\n"
