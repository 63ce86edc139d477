"""BERT-whitening: known answers on synthetic data, save/load round trip, reduction, misuse errors, and
`bertkit encode --whiten` equal to applying the file to `Encoder.encode` vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertkit.errors import InputError
from bertkit.vectors.whitening import Whitening, default_path, fit, fit_texts


@pytest.fixture(scope="module")
def correlated() -> np.ndarray:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(8, 8)) * np.linspace(0.1, 5, 8)  # very anisotropic
    return rng.normal(size=(4000, 8)) @ mix + rng.normal(size=8) * 10


def test_whitened_vectors_have_zero_mean_and_identity_covariance(correlated):
    w = fit(correlated)
    z = w.apply(correlated).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(8), atol=1e-3)


def test_reduced_whitening_keeps_leading_directions(correlated):
    w2 = fit(correlated, k=3)
    z = w2.apply(correlated)
    assert z.shape == (4000, 3)
    np.testing.assert_allclose(np.cov(z.astype(np.float64), rowvar=False), np.eye(3), atol=1e-3)
    full = fit(correlated)
    np.testing.assert_allclose(full.reduce(3).apply(correlated), z, atol=1e-5)  # same as refitting with k=3
    # columns are u_i / sqrt(s_i) with s descending: the kept directions are those of largest variance
    assert np.all(np.diff(np.linalg.norm(full.matrix, axis=0)) >= 0)


def test_save_load_round_trip_and_metadata(correlated, tmp_path):
    w = fit(correlated, k=5, pooling="mean", layers=None, model="toy")
    path = w.save(tmp_path / "w")  # suffix added
    assert path.name == "w.npz"
    back = Whitening.load(path)
    np.testing.assert_array_equal(back.mean, w.mean)
    np.testing.assert_array_equal(back.matrix, w.matrix)
    assert (back.pooling, back.k, back.meta["n_texts"], back.meta["model"]) == ("mean", 5, 4000, "toy")
    x = correlated[:3]
    n = back.apply(x, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-6)
    assert default_path("/m", "mean", 256).name == "whitening-mean-k256.npz"


def test_misuse_is_a_clear_error(correlated, tmp_path):
    w = fit(correlated, pooling="mean")
    with pytest.raises(InputError, match="vectors of size 8"):
        w.apply(np.zeros((2, 4)))
    with pytest.raises(InputError, match="fit on pooling=mean"):
        w.check_compatible("cls", None)
    with pytest.raises(InputError, match="k must be between 1 and the vector size 8"):
        fit(correlated, k=9)
    with pytest.raises(InputError, match="at least 2 vectors"):
        fit(correlated[:1])
    with pytest.raises(InputError, match="does not exist"):
        Whitening.load(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a bertkit whitening file"):
        Whitening.load(tmp_path / "junk.npz")


TEXTS = [
    "A man is playing a guitar.", "Someone is playing an instrument.", "The cat sat on the mat.",
    "A cat is sitting on a rug.", "The stock market fell sharply today.", "Quantum computers use qubits.",
    "A woman is slicing an onion.", "Two dogs play in the snow.", "A plane is taking off.", "Kids run outside.",
]


def test_encode_whiten_cli_equals_library(encoder, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bertkit.cli import app

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    wpath = tmp_path / "w.npz"
    runner = CliRunner()
    r = runner.invoke(app, ["whiten", str(texts), "--output", str(wpath), "--k", "4"])
    assert r.exit_code == 0, r.output
    w = Whitening.load(wpath)
    assert (w.k, w.dim, w.pooling, w.meta["n_texts"]) == (4, 384, "mean", 10)
    lib = fit_texts(encoder, TEXTS, pooling="mean", k=4)
    np.testing.assert_allclose(w.matrix, lib.matrix, atol=1e-6)

    r = runner.invoke(app, ["encode", *TEXTS[:2], "--whiten", str(wpath), "--normalize"])
    assert r.exit_code == 0, r.output
    got = np.array([json.loads(line) for line in r.stdout.splitlines()])
    want = w.apply(encoder.encode(TEXTS[:2], pooling="mean"), normalize=True)
    np.testing.assert_allclose(got, want, atol=1e-5)

    r = runner.invoke(app, ["encode", "hello", "--whiten", str(wpath), "--pooling", "cls"])
    assert r.exit_code != 0 and "fit on pooling=mean" in str(r.exception)
