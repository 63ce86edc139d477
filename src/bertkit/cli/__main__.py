"""`python -m bertkit.cli ...` runs the same `bertkit` command line."""

from __future__ import annotations

from bertkit.cli.entry import main

main()
