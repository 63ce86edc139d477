"""The error policy of `bertkit` (src/bertkit/cli/entry.py): a user's mistake is one line and exit 2, a bug is
exit 1 with its traceback, Ctrl-C is 130."""

from __future__ import annotations

import pytest
from support import assert_user_error


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["encode", ""], ["text 0 is empty"]),
        (["encode", "   "], ["text 0 is empty or whitespace only"]),
        (["encode", "x", "--pooling", "avg"], ["unknown pooling 'avg'", "mean_sqrt_len"]),
        (["encode", "x", "--model", "/no/such/folder"], ["does not exist"]),
        (["encode", "x", "--model", "bert-base-uncased"], ["could not get model 'bert-base-uncased'", "offline"]),
        (["encode", "x", "--output", "out.csv"], ["unknown format '.csv'"]),
        (["encode", "--input", "/no/such/file.txt"], ["input file /no/such/file.txt does not exist"]),
        (["encode", "x", "--precision", "fp16"], ["unknown precision 'fp16'", "int8"]),
        (["fill-mask", "The [MASK] sat."], ["masked-LM head", "bertkit pretrain"]),
        (["nsp", "A.", "B."], ["next-sentence-prediction head"]),
        (["similarity", "a", "b", "--pooling", "nope"], ["unknown pooling 'nope'"]),
    ],
)
def test_user_errors_exit_2_with_one_line(run, args, fragments, tmp_path):
    assert_user_error(run(*args, cwd=tmp_path), *fragments)


@pytest.mark.parametrize("exception", [ValueError, KeyError])
def test_a_bug_exits_1_with_its_traceback(run, monkeypatch, exception):
    """A library function that fails with a plain exception is a bug, not the user's mistake: the traceback is
    shown and the exit status is 1 (before, a ValueError was printed as a user error with exit 2)."""
    from bertkit.encoder import Encoder

    def broken(self, a, b, **kwargs):
        raise exception("cosine of a broken vector")

    monkeypatch.setattr(Encoder, "similarity", broken)
    r = run("similarity", "A man plays guitar.", "Someone plays music.")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert f"{exception.__name__}: " in err and "cosine of a broken vector" in err
    assert "bertkit: error:" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"bertkit: internal error ({exception.__name__})") and "bug" in last, last


def test_bertkit_debug_shows_the_traceback_of_a_user_error(run, monkeypatch):
    monkeypatch.setenv("BERTKIT_DEBUG", "1")
    r = run("encode", "x", "--pooling", "avg")
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback (most recent call last)" in err and "OptionError" in err
    assert err.strip().splitlines()[-1].startswith("bertkit: error: unknown pooling 'avg'")


@pytest.mark.parametrize("args, fragment", [
    (["encode", "x", "--batch-size", "many"], "Invalid value for '--batch-size'"),
    (["encode", "x", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["encode", "x", "--no-such-option"], "No such option: --no-such-option"),
    (["evaluate", "sts"], "Missing argument 'data'"),
])
def test_typer_usage_errors_keep_exit_2(run, args, fragment):
    r = run(*args)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert fragment in err and "Traceback" not in err


def test_ctrl_c_exits_130(run, monkeypatch):
    from bertkit.encoder import Encoder

    def interrupted(self, a, b, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Encoder, "similarity", interrupted)
    r = run("similarity", "a", "b")
    assert r.returncode == 130 and "Traceback" not in r.stderr.decode()
