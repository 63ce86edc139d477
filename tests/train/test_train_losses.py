"""The sentence-embedding losses (bertkit.train.losses) on toy batches: each against a value computed here
independently (plain math / numpy), and CoSENT, AnglE and MNRL against sentence-transformers' own losses on the
same embeddings. Also the multi-dataset batching and the hard negatives MNRL is given."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from bertkit.data import SentencePair
from bertkit.errors import InputError
from bertkit.train.losses import (
    AnglELoss,
    CoSENTLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    SoftmaxLoss,
    make_loss,
)
from bertkit.train.sbert_data import make_batcher, prepare, rows_of


def st_losses():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers.sentence_transformer import losses
    return losses


def unit2(c: float) -> list[float]:
    return [c, math.sqrt(1 - c * c)]


def np_cosent(sims: np.ndarray, target: np.ndarray, scale: float = 20.0) -> float:
    terms = [1.0] + [math.exp(scale * (sims[j] - sims[i])) for i in range(len(sims)) for j in range(len(sims))
                     if target[i] > target[j]]
    return math.log(sum(terms))


def np_cos(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)


def np_angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|Re + Im| of sum(z_u * conj(z_v)), the vectors read as complex numbers (first half real, second imaginary)
    after L2 normalisation."""
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    h = u.shape[1] // 2
    z = ((u[:, :h] + 1j * u[:, h:]) * np.conj(v[:, :h] + 1j * v[:, h:])).sum(1)
    return np.abs(z.real + z.imag)


def np_mnrl(u: np.ndarray, cands: np.ndarray, scale: float = 20.0) -> float:
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    c = cands / np.linalg.norm(cands, axis=1, keepdims=True)
    s = u @ c.T * scale
    logz = np.log(np.exp(s).sum(1))
    return float(np.mean(logz - s[np.arange(len(u)), np.arange(len(u))]))


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    u, v, n = (torch.randn(6, 8, generator=g) for _ in range(3))
    return u, v, n, torch.tensor([0.2, 4.0, 2.5, 2.5, 1.0, 5.0])


def test_cosent_hand_value_and_sentence_transformers(batch):
    # cosines 0.9, 0.5, 0.1; gold order pair 1 > pair 2 > pair 0
    u = torch.tensor([[1.0, 0.0]] * 3)
    v = torch.tensor([unit2(0.9), unit2(0.5), unit2(0.1)])
    expected = math.log(1 + math.exp(20 * (0.1 - 0.5)) + math.exp(20 * (0.9 - 0.5)) + math.exp(20 * (0.9 - 0.1)))
    assert float(CoSENTLoss()(u, v, torch.tensor([1.0, 3.0, 2.0]))) == pytest.approx(expected, rel=1e-5)
    # the right order costs almost nothing: log(1 + e^-8 + e^-16 + e^-8)
    assert float(CoSENTLoss()(u, v, torch.tensor([3.0, 2.0, 1.0]))) == pytest.approx(
        math.log(1 + 2 * math.exp(-8) + math.exp(-16)), rel=1e-4)
    u, v, _, t = batch
    ours = float(CoSENTLoss()(u, v, t))
    assert ours == pytest.approx(np_cosent(np_cos(u.numpy(), v.numpy()), t.numpy()), rel=1e-5)
    st = float(st_losses().CoSENTLoss(None).compute_loss_from_embeddings([u, v], t))
    assert ours == pytest.approx(st, rel=1e-5)


def test_angle_hand_value_and_sentence_transformers(batch):
    u, v, _, t = batch
    un, vn, tn = u.numpy(), v.numpy(), t.numpy()
    angle_only = float(AnglELoss(cosine_weight=0.0)(u, v, t))
    assert angle_only == pytest.approx(np_cosent(np_angle(un, vn), tn), rel=1e-5)
    full = float(AnglELoss()(u, v, t))
    assert full == pytest.approx(np_cosent(np_angle(un, vn), tn) + np_cosent(np_cos(un, vn), tn), rel=1e-5)
    losses = st_losses()
    st_angle = float(losses.AnglELoss(None).compute_loss_from_embeddings([u, v], t))
    st_cosent = float(losses.CoSENTLoss(None).compute_loss_from_embeddings([u, v], t))
    assert angle_only == pytest.approx(st_angle, rel=1e-5)
    assert full == pytest.approx(st_angle + st_cosent, rel=1e-5)
    # an odd width is padded with a zero coordinate (as sentence-transformers does)
    odd = float(AnglELoss(cosine_weight=0.0)(u[:, :7], v[:, :7], t))
    pad = np.pad(un[:, :7], ((0, 0), (0, 1))), np.pad(vn[:, :7], ((0, 0), (0, 1)))
    assert odd == pytest.approx(np_cosent(np_angle(*pad), tn), rel=1e-5)


def test_mnrl_with_hard_negatives_hand_value_and_sentence_transformers(batch):
    u, v, n, _ = batch
    mnrl = MultipleNegativesRankingLoss()
    with_negs = float(mnrl(u, v, None, n))
    assert with_negs == pytest.approx(np_mnrl(u.numpy(), np.concatenate([v.numpy(), n.numpy()])), rel=1e-5)
    st = st_losses().MultipleNegativesRankingLoss(None)
    assert with_negs == pytest.approx(float(st.compute_loss_from_embeddings([u, v, n], None)), rel=1e-5)
    assert float(mnrl(u, v)) == pytest.approx(float(st.compute_loss_from_embeddings([u, v], None)), rel=1e-5)
    # fewer negatives than anchors: each is one more wrong answer for every anchor
    assert float(mnrl(u, v, None, n[:2])) == pytest.approx(
        np_mnrl(u.numpy(), np.concatenate([v.numpy(), n[:2].numpy()])), rel=1e-5)
    # one-hot toy: u = v = e_i, scale 2, one extra negative e_0 -> anchor 0 sees its positive twice
    e = torch.eye(3)
    expected = (math.log(2 * math.exp(2) + 2) - 2 + 2 * (math.log(math.exp(2) + 3) - 2)) / 3
    assert float(MultipleNegativesRankingLoss(2.0)(e, e, None, e[:1])) == pytest.approx(expected, rel=1e-5)


def test_matryoshka_sums_the_loss_at_each_width(batch):
    u, v, n, t = batch
    un, vn, nn_, tn = u.numpy(), v.numpy(), n.numpy(), t.numpy()
    m = MatryoshkaLoss(CoSENTLoss(), [2, 8, 4])
    assert m.dims == [8, 4, 2]
    expected = sum(np_cosent(np_cos(un[:, :d], vn[:, :d]), tn) for d in (8, 4, 2))
    assert float(m(u, v, t)) == pytest.approx(expected, rel=1e-5)
    weighted = MatryoshkaLoss(MultipleNegativesRankingLoss(), [8, 3], weights=[1.0, 0.5])
    expected = np_mnrl(un, np.concatenate([vn, nn_])) + 0.5 * np_mnrl(un[:, :3], np.concatenate([vn, nn_])[:, :3])
    assert float(weighted(u, v, None, n)) == pytest.approx(expected, rel=1e-5)
    assert isinstance(make_loss("angle", 8, matryoshka=[8, 4]), MatryoshkaLoss)
    with pytest.raises(TypeError, match="fixed-width"):
        MatryoshkaLoss(SoftmaxLoss(8, 3), [4])


def test_mnrl_hard_negatives_from_contradictions_and_low_scores():
    sick = [SentencePair("A", "A entailed", 4.5, "ENTAILMENT"), SentencePair("A", "not A", 1.5, "CONTRADICTION"),
            SentencePair("B", "B entailed", 4.0, "ENTAILMENT"), SentencePair("C", "C maybe", 3.0, "NEUTRAL")]
    p = prepare(sick, "mnrl")
    assert [e[:2] for e in p.examples] == [("A", "A entailed"), ("B", "B entailed")]
    assert p.negatives == ["not A", None]
    assert [r[4] for r in rows_of(3, p)] == ["not A", None] and rows_of(3, p)[0][0] == 3
    scored = [SentencePair("A", "close", 5.0), SentencePair("A", "far", 0.0), SentencePair("B", "near", 4.8),
              SentencePair("C", "mid", 2.5)]
    assert prepare(scored, "mnrl").negatives == ["far", None]
    with pytest.raises(InputError, match="needs a similarity score"):
        prepare([SentencePair("a", "b", label="1")], "cosent")
    with pytest.raises(InputError, match="at least 2 positive pairs"):
        prepare([SentencePair("a", "b", label="CONTRADICTION")] * 3, "mnrl")


@pytest.mark.parametrize("sampling", ["proportional", "round-robin"])
def test_batches_each_from_one_dataset(sampling):
    sizes = [10, 4, 7]
    batcher = make_batcher(sizes, 3, seed=1, sampling=sampling)
    owner = np.repeat(np.arange(3), sizes)
    for epoch in (0, 1):
        batches = batcher(epoch)
        assert all(len(set(owner[b.numpy()])) == 1 for b in batches)
        if sampling == "proportional":  # every row once per epoch
            assert sorted(torch.cat(batches).tolist()) == list(range(21))
        else:  # one batch of each dataset in turn, as many rounds as the smallest has batches (2)
            assert [int(owner[b[0]]) for b in batches] == [0, 1, 2, 0, 1, 2]
    assert [b.tolist() for b in batcher(0)] == [b.tolist() for b in batcher(0)]  # seeded
    with pytest.raises(InputError, match="sampling"):
        make_batcher(sizes, 3, 1, "random")
