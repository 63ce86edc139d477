"""Compact vectors as a user runs them: `calibrate`, `encode --dtype --dimensions`, `embed-corpus --dtype`,
`index build --kind binary --rescore` -> `search`, and each refusal as one line with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import assert_user_error

from bertkit.vectors.compact import load_vectors

TEXTS = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply today.",
         "OPEC agreed to cut oil production to lift crude prices.", "The cat sat on the mat in the sun.",
         "Stock markets fell after the bank raised interest rates.", "Rain is expected over the weekend.",
         "The team won the final in extra time."]


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def test_encode_binary_int8_and_dimensions(run, encoder, texts_file, tmp_path):
    floats = encoder.encode(TEXTS[:2], normalize=True)
    r = run("encode", *TEXTS[:2], "--normalize", "--dtype", "ubinary")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    np.testing.assert_array_equal(np.array(rows), np.packbits(floats > 0, axis=-1))

    cal = tmp_path / "cal.npz"
    r = run("calibrate", texts_file, "--normalize", "-o", cal)
    assert r.returncode == 0 and cal.is_file(), r.stderr
    out = tmp_path / "codes.parquet"
    r = run("encode", "--input", texts_file, "--normalize", "--dtype", "int8", "--calibration", cal, "-o", out)
    assert r.returncode == 0, r.stderr
    codes, dtype, got_cal = load_vectors(out)  # the calibration was written beside the codes
    assert dtype == "int8" and codes.shape == (len(TEXTS), 384) and (tmp_path / "codes.calibration.npz").is_file()
    assert np.all(np.abs(got_cal.ranges[0] + (codes + 128.5) * got_cal.steps
                         - encoder.encode(TEXTS, normalize=True)) <= got_cal.steps)

    r = run("encode", *TEXTS[:2], "--dimensions", "64", "-o", tmp_path / "short.npy")
    assert r.returncode == 0, r.stderr
    cut = encoder.encode(TEXTS[:2])[:, :64]
    np.testing.assert_allclose(np.load(tmp_path / "short.npy"), cut / np.linalg.norm(cut, axis=1, keepdims=True),
                               atol=1e-6)


@pytest.mark.parametrize("args, fragments", [
    (("--dtype", "int4"), ("dtype 'int4' is unknown",)),
    (("--dimensions", "0"), ("dimensions must be between 1 and 384",)),
    (("--dimensions", "-5"), ("dimensions must be between 1 and 384",)),
    (("--dimensions", "1000"), ("dimensions must be between 1 and 384",)),
    (("--dtype", "int8"), ("int8 needs a calibration", "bertkit calibrate")),
    (("--dtype", "binary", "--calibration", "x.npz"), ("calibration is for dtype int8",)),
    (("--dtype", "uint8", "--calibration", "missing.npz"), ("missing.npz does not exist",)),
])
def test_encode_refusals_are_one_line(run, args, fragments):
    assert_user_error(run("encode", "A text.", *args), *fragments)


def test_corpus_index_search_and_refusals(run, texts_file, tmp_path):
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    assert run("embed-corpus", texts_file, emb, "--normalize", "--keep-text").returncode == 0
    r = run("index", "build", emb, "-o", idx, "--kind", "binary", "--rescore", "5")
    assert r.returncode == 0, r.stderr
    r = run("search", idx, "oil production cuts", "-k", "2", "--json")
    assert r.returncode == 0, r.stderr
    hits = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert hits[0]["text"].startswith("OPEC") and len(hits) == 2

    # A binary index queried with vectors of another model (splade-tiny: 128 dimensions).
    assert_user_error(run("search", idx, "oil", "--model", "splade-tiny"), "dimension 128",
                      "built from 384-dimensional float vectors")
    assert_user_error(run("index", "build", emb, "-o", tmp_path / "x", "--kind", "binary", "--dimensions", "0"),
                      "dimensions must be between 1 and 384")
    assert_user_error(run("index", "build", emb, "-o", tmp_path / "x", "--kind", "int4"), "--kind 'int4' is unknown")
    # Resuming a job with another dtype is refused; so are int8 without calibration and an unknown dtype.
    b = tmp_path / "b"
    assert run("embed-corpus", texts_file, b, "--normalize", "--dtype", "binary", "--shard-rows", "4").returncode == 0
    assert_user_error(run("embed-corpus", texts_file, b, "--normalize", "--dtype", "ubinary", "--shard-rows", "4"),
                      "different job")
    assert_user_error(run("embed-corpus", texts_file, tmp_path / "c", "--dtype", "int8"), "int8 needs a calibration")
    assert_user_error(run("embed-corpus", texts_file, tmp_path / "c", "--dtype", "fp8"), "dtype 'fp8' is unknown")
    assert_user_error(run("embed-corpus", texts_file, tmp_path / "c", "--dimensions", "999"),
                      "dimensions must be between 1 and 384")
    assert not (tmp_path / "c").exists()
