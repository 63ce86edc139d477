"""The `run` fixture: bertkit's `main()` in this process, as the console script runs it."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from support import Result


@pytest.fixture
def run(capfdbinary, monkeypatch):
    """The same `main()` in this process (no start-up cost per call): argv in, exit status and output out."""
    from huggingface_hub import constants

    from bertkit.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("COLUMNS", "200")

    def _run(*args, input: bytes | None = None, cwd=None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["bertkit", *map(str, args)])
        if input is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(input)))
        capfdbinary.readouterr()
        handlers = logging.root.handlers[:]  # main() installs a stderr handler; don't leave it to later tests
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            logging.root.handlers[:] = handlers
        out, err = capfdbinary.readouterr()
        return Result(code, out, err)

    return _run
