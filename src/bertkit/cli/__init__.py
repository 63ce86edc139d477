"""The `bertkit` command line: it parses, validates and calls the library; heavy imports stay inside commands.

`app` is the typer app and `main` the console script (`bertkit = "bertkit.cli:main"`); see entry.py for the
command tree and the error policy, and one module per command group beside it.
"""

from __future__ import annotations

from bertkit.cli.entry import app, main

__all__ = ["app", "main"]
