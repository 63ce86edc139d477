"""The code blocks of README.md and docs/**/*.md as tests (tools/docs/code_blocks.py: how each block runs)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools" / "docs"))

from code_blocks import collector, docs_server  # noqa: F401  (docs_server: the fixture the blocks use)

pytest_collect_file = collector()
