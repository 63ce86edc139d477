"""`bertkit evaluate sts` and `bertkit compare` with --precision / --backend (issue 13, defect 1): the STS cost
of a fast mode is measured with the tool itself."""

from __future__ import annotations

import json
import math

import pytest
from support import assert_user_error

PAIRS = [  # (a, b, gold 0-5): a small STS-like set with a clear ordering
    ("A man is playing a guitar.", "Someone is playing an instrument.", 3.8),
    ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.6),
    ("The cat sat on the mat.", "A cat is sitting on a rug.", 4.0),
    ("A child is riding a horse.", "A kid rides a pony.", 3.9),
    ("A man is playing a guitar.", "The stock market fell sharply today.", 0.0),
    ("The cat sat on the mat.", "Quantum computers use qubits.", 0.0),
    ("A plane is taking off.", "A woman is eating an apple.", 0.2),
    ("A woman is slicing an onion.", "A woman is dancing.", 1.0),
]


@pytest.fixture
def sts_file(tmp_path):
    """The pairs as an STS-B style TSV (genre, file, year, id, score, a, b)."""
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(PAIRS)), encoding="utf-8")
    return path


def spearman_of(result) -> float:
    assert result.returncode == 0, result.stderr.decode()
    (score,) = json.loads(result.stdout)["scores"]
    return score["spearman"]


def test_evaluate_sts_int8_reports_a_number(run, sts_file):
    exact = spearman_of(run("evaluate", "sts", sts_file, "--pooling", "mean", "--json"))
    int8 = spearman_of(run("evaluate", "sts", sts_file, "--pooling", "mean", "--json", "--precision", "int8"))
    assert math.isfinite(int8) and -100 <= int8 <= 100
    assert abs(int8 - exact) < 20  # int8 is an approximation of the same model, not another model


def test_compare_takes_precision_and_backend(run, sts_file, tmp_path):
    plot = tmp_path / "cmp.png"
    r = run("compare", sts_file, "--precision", "int8", "--backend", "torch", "--json", "--plot", plot)
    assert r.returncode == 0, r.stderr.decode()
    assert {p["pooling"] for p in json.loads(r.stdout)["poolings"]} >= {"cls", "mean", "max"}
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("command", [["evaluate", "sts"], ["compare"]])
@pytest.mark.parametrize("option, value, fragment", [
    ("--precision", "fp16", "unknown precision 'fp16'"),
    ("--backend", "tensorrt", "unknown backend 'tensorrt'"),
])
def test_evaluate_and_compare_refuse_unknown_modes(run, sts_file, tmp_path, command, option, value, fragment):
    r = run(*command, sts_file, option, value, cwd=tmp_path)
    assert_user_error(r, fragment)
