"""STS evaluation: correlations on known toy cases, the one-pass multi-pooling encoder against Encoder.encode,
parity with sentence-transformers, compare's ranking, reading and charts, and the CLI commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertkit.data import SentencePair
from bertkit.pooling import POOLING_MODES
from bertkit.which.evaluate import (
    Spec,
    compare,
    correlations,
    cosine,
    encode_specs,
    evaluate_sts,
    plot_layers,
    plot_poolings,
    unique_texts,
)

PAIRS = [  # (a, b, gold 0-5): a small STS-like set with a clear ordering
    ("A man is playing a guitar.", "A man is playing a guitar.", 5.0),
    ("A man is playing a guitar.", "Someone is playing an instrument.", 3.8),
    ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.6),
    ("The cat sat on the mat.", "A cat is sitting on a rug.", 4.0),
    ("A child is riding a horse.", "A kid rides a pony.", 3.9),
    ("Two dogs play in the snow.", "Dogs are playing outside in winter.", 3.5),
    ("A man is playing a guitar.", "The stock market fell sharply today.", 0.0),
    ("The cat sat on the mat.", "Quantum computers use qubits.", 0.0),
    ("A plane is taking off.", "A woman is eating an apple.", 0.2),
    ("The president gave a speech.", "A man is swimming in the lake.", 0.1),
    ("A woman is slicing an onion.", "A woman is dancing.", 1.0),
    ("Two dogs play in the snow.", "A dog sleeps on the sofa.", 1.6),
]


@pytest.fixture(scope="module")
def pairs() -> list[SentencePair]:
    return [SentencePair(a, b, s, line=i + 1) for i, (a, b, s) in enumerate(PAIRS)]


def test_spearman_and_pearson_known_answers():
    # ranks of pred: 1 3 2 5 4, of gold: 1 3 2 4 5 -> sum d^2 = 2 -> rho = 1 - 6*2 / (5*24) = 0.9
    s, p = correlations([0.1, 0.4, 0.2, 0.9, 0.5], [1, 3, 2, 4, 5])
    assert s == pytest.approx(90.0)
    assert correlations([1, 2, 3], [2, 4, 6]) == pytest.approx((100.0, 100.0))  # linear: both perfect
    assert correlations([1, 2, 3], [3, 2, 1]) == pytest.approx((-100.0, -100.0))
    s, p = correlations([1, 2, 3, 4], [1, 4, 9, 100])
    assert s == pytest.approx(100.0) and p < 95  # monotone but not linear: Spearman 100, Pearson lower
    assert correlations([1, 1, 1], [1, 2, 3]) == (0.0, 0.0)  # constant: undefined, reported as 0
    with pytest.raises(ValueError, match="equal-length"):
        correlations([1, 2], [1, 2, 3])


def test_cosine_rowwise():
    u = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    v = np.array([[0.0, 3.0], [2.0, 2.0], [-1.0, 0.0]])
    assert cosine(u, v) == pytest.approx([0.0, 1.0, -1.0])


@pytest.fixture(scope="module")
def int8_encoder(encoder):
    """The packaged model in int8 (dynamic quantization): a mode whose vectors differ from the exact ones."""
    from bertkit import Encoder

    return Encoder.from_model(encoder.model, encoder.tokenizer, encoder.path, "cpu", precision="int8")


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_one_pass_multi_pooling_equals_encoder_encode(encoder, int8_encoder, mode):
    enc = int8_encoder if mode == "int8" else encoder
    texts = [a for a, _, _ in PAIRS[:6]]
    specs = [Spec(p) for p in POOLING_MODES] + [Spec("mean", (2,)), Spec("cls", (0, -1))]
    got = encode_specs(enc, texts, specs, batch_size=4)
    for s in specs:
        want = enc.encode(texts, pooling=s.pooling, layers=list(s.layers) if s.layers else None, batch_size=4)
        np.testing.assert_allclose(got[s], want, atol=1e-5, err_msg=s.label)
    exact = encoder.encode(texts, batch_size=4)
    assert (np.abs(got[Spec("mean")] - exact).max() > 1e-3) == (mode == "int8")  # int8 really was measured


def test_sts_scores_of_a_fast_mode_are_those_of_its_own_vectors(encoder, int8_encoder, pairs):
    """evaluate_sts and compare measure the encoder as loaded (here int8), not the exact fp32 model behind it."""
    texts, ia, ib = unique_texts(pairs)
    gold = [p.score for p in pairs]
    scores = {s.pooling: s for s in evaluate_sts(int8_encoder, pairs, ["mean", "cls"])}
    for pooling, score in scores.items():
        vecs = int8_encoder.encode(texts, pooling=pooling)
        spearman, pearson = correlations(cosine(vecs[ia], vecs[ib]), gold)
        assert (score.spearman, score.pearson) == pytest.approx((spearman, pearson), abs=1e-6), pooling
    (exact,) = evaluate_sts(encoder, pairs, ["mean"])
    assert abs(exact.pearson - scores["mean"].pearson) > 1e-3
    ranked = {s.pooling: s for s in compare(int8_encoder, pairs, per_layer=True).poolings}
    assert ranked["mean"].pearson == pytest.approx(scores["mean"].pearson, abs=1e-6)


def test_sts_vectors_come_from_the_onnx_backend(pretraining_checkpoint, pairs):
    pytest.importorskip("onnxruntime")
    from bertkit import Encoder

    exact = Encoder.load(pretraining_checkpoint, device="cpu")
    onnx = Encoder.load(pretraining_checkpoint, device="cpu", backend="onnx", precision="int8")
    texts, _, _ = unique_texts(pairs)
    specs = [Spec("mean"), Spec("pooler"), Spec("cls", (1,)), Spec("first_last_avg")]
    got = encode_specs(onnx, texts, specs)
    for s in specs:
        want = onnx.encode(texts, pooling=s.pooling, layers=list(s.layers) if s.layers else None)
        np.testing.assert_allclose(got[s], want, atol=1e-5, err_msg=s.label)
    assert np.abs(got[Spec("mean")] - exact.encode(texts)).max() > 1e-3


def test_mean_spearman_matches_sentence_transformers(encoder, packaged_dir, pairs):
    from sentence_transformers import SentenceTransformer

    (ours,) = evaluate_sts(encoder, pairs, ["mean"])
    st = SentenceTransformer(str(packaged_dir), device="cpu")
    a = st.encode([p.a for p in pairs], convert_to_numpy=True)
    b = st.encode([p.b for p in pairs], convert_to_numpy=True)
    theirs, _ = correlations(cosine(a, b), [p.score for p in pairs])
    assert abs(ours.spearman - theirs) < 0.05
    assert ours.spearman > 80 and ours.n == len(pairs)


def test_compare_ranks_every_pooling_and_draws_readable_charts(encoder, pairs, tmp_path):
    c = compare(encoder, pairs, "toy", per_layer=True)
    assert {s.pooling for s in c.poolings} == set(POOLING_MODES)  # packaged model has a pooler
    spearmans = [s.spearman for s in c.poolings]
    assert spearmans == sorted(spearmans, reverse=True)
    assert set(c.per_layer) == {"cls", "mean", "max"}
    assert all(len(v) == encoder.model.config.num_hidden_layers + 1 for v in c.per_layer.values())
    # the per-layer last hidden state is the plain pooling
    by = {s.pooling: s.spearman for s in c.poolings}
    assert c.per_layer["mean"][-1] == pytest.approx(by["mean"])
    text = c.to_dict()["reading"]
    assert f"{c.poolings[0].pooling} pooling ranks first" in text and "[CLS] or mean?" in text
    for path in (plot_poolings(c, tmp_path / "bars.png"), plot_layers(c, tmp_path / "layers.png")):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def write_sts(tmp_path) -> str:
    path = tmp_path / "toy.tsv"
    path.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(PAIRS)), encoding="utf-8")
    return str(path)


def test_cli_evaluate_sts_json_and_compare(encoder, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bertkit.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    data = write_sts(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", "sts", data, "--pooling", "mean", "--pooling", "cls", "--json"])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)["scores"]
    assert [s["pooling"] for s in scores] == ["mean", "cls"]
    (direct,) = evaluate_sts(encoder, [SentencePair(a, b, s) for a, b, s in PAIRS], ["mean"])
    assert scores[0]["spearman"] == pytest.approx(direct.spearman, abs=1e-6)

    plot = tmp_path / "cmp.png"
    r = runner.invoke(app, ["compare", data, "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    assert "ranks first" in r.stdout and "mask_prompt" in r.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
