"""Property-based fuzzing of what a user can type or feed in (hypothesis): the CLI's line reader, the text
checks, `Encoder.encode`, and `bertkit encode` itself, on arbitrary unicode, lone surrogates, control, NUL and
zero-width characters, and arbitrary bytes.

The property everywhere: either an answer that is right (finite vectors, one per text; lines that are valid,
visible text) or a user error (`InputError`, exit status 2 with one line); never another exception, never a
traceback, never the empty [CLS] [SEP] vector of a text with nothing in it. BERTKIT_FUZZ_EXAMPLES scales the
number of cases (a few in `make test`; `make fuzz` runs thousands and prints the count).
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter

import numpy as np
import pytest
from support import Result

hypothesis = pytest.importorskip("hypothesis", reason="the test extra is not installed: pip install -e '.[test]'")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertkit.errors import InputError
from bertkit.tokenizer import embeddable

EXAMPLES = int(os.environ.get("BERTKIT_FUZZ_EXAMPLES", "4"))
COUNTS: Counter = Counter()
FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=EXAMPLES < 10, database=None)

# What users paste: any code point (lone surrogates included), with the troublemakers made likely.
NASTY = ["\ud800", "\udcff", "\x00", "\u200b", "\u200d", "\ufeff", "\u0301", "\x07", "\u2028", "\ufffd", "\xad",
         " ", "\t", "\r", "\n", "[MASK]", "a", "Paris", "\U0001f600", "\ue000"]
pieces = st.one_of(st.characters(codec=None, exclude_categories=()), st.sampled_from(NASTY))
texts = st.lists(pieces, max_size=30).map("".join)
text_lists = st.lists(texts, min_size=1, max_size=4)


@pytest.fixture
def run(capfdbinary, monkeypatch):
    """bertkit's `main()` in this process, as tests/cli's `run` fixture (argv in; exit status and output out)."""
    import logging
    import sys

    from bertkit.cli import main

    def _run(*args):
        monkeypatch.setattr(sys, "argv", ["bertkit", *args])
        capfdbinary.readouterr()
        handlers = logging.root.handlers[:]
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


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nfuzz (inputs): {sum(COUNTS.values())} generated inputs: {dict(sorted(COUNTS.items()))}")


def test_text_checks_accept_only_embeddable_texts():
    from bertkit.tokenizer import as_text_list

    @given(text_lists)
    @settings(max_examples=EXAMPLES * 20, **FUZZ)
    def check(items):
        COUNTS["as_text_list"] += 1
        try:
            out = as_text_list(items)
        except InputError as e:
            assert str(e).startswith("text ") and any(not embeddable(t) for t in items), e
            return
        assert out == items and all(embeddable(t) for t in out)

    check()


def test_read_lines_takes_any_bytes():
    """Arbitrary bytes (NUL, invalid UTF-8, CR, long lines): valid lines in order, or a user error naming a
    line; with --skip-bad-lines, never an error."""
    from bertkit.cli.common import _read_lines

    lines = st.lists(st.one_of(st.binary(max_size=30), texts.map(lambda t: t.encode("utf-8", "surrogatepass"))),
                     max_size=6)

    @given(lines, st.booleans(), st.integers(4, 64))
    @settings(max_examples=EXAMPLES * 10, **FUZZ)
    def check(parts, skip, max_bytes):
        COUNTS["read_lines"] += 1
        raw = b"\n".join(parts)
        try:
            out = _read_lines(io.BytesIO(raw), "input", skip, max_bytes)
        except InputError as e:
            assert not skip and str(e).startswith("input: line "), e
            return
        assert all(embeddable(t) and len(t.encode()) <= max_bytes for t in out), out
        assert len(out) <= raw.count(b"\n") + 1

    check()


def test_encode_gives_finite_vectors_or_a_user_error(encoder):
    empty = encoder.encode(["a"], pooling="mean")  # any text; only its shape is used
    dims = empty.shape[1]

    @given(text_lists, st.sampled_from(["mean", "cls", "max", "mask_prompt"]))
    @settings(max_examples=EXAMPLES * 5, **FUZZ)
    def check(items, pooling):
        COUNTS["encode"] += 1
        try:
            vectors = encoder.encode(items, pooling=pooling)
        except InputError:
            assert any(not embeddable(t) for t in items) or pooling != "mask_prompt", items
            return
        assert vectors.shape == (len(items), dims) and np.isfinite(vectors).all()

    check()


def test_bertkit_encode_never_shows_a_traceback(run, encoder, monkeypatch):
    """`bertkit encode TEXT...` (argv as the OS hands it over: undecodable bytes arrive as lone surrogates):
    exit 0 with one JSON vector per text, or exit 2 with one line."""
    from bertkit.cli import representations

    monkeypatch.setattr(representations, "load_encoder", lambda *a, **k: encoder)  # load the model once

    @given(st.lists(texts.filter(lambda t: "\x00" not in t and not t.startswith("-")), min_size=1, max_size=3))
    @settings(max_examples=EXAMPLES * 2, **FUZZ)
    def check(items):
        COUNTS["bertkit encode"] += 1
        r = run("encode", *items)
        err = r.stderr.decode(errors="replace")
        assert "Traceback" not in err and r.returncode in (0, 2), err
        if r.returncode == 0:
            rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
            assert len(rows) == len(items) and all(np.isfinite(row).all() for row in rows)
        else:
            assert len([x for x in err.splitlines() if x.strip()]) == 1, err

    check()
