"""Silver pairs for the cross-encoder (bertkit.train.ce_silver): re-pairings scored by a real bi-encoder (the
packaged all-MiniLM-L6-v2) against a numpy reference, both orders, and the option checks."""

from __future__ import annotations

import numpy as np
import pytest
from ce_support import write_pairs

from bertkit.errors import OptionError
from bertkit.train.ce_silver import bi_encoder_silver, both_orders
from bertkit.train.cross_encoder import read_pairs
from bertkit.train.sbert_silver import nearest_partners


def test_silver_scores_are_the_bi_encoders_cosine_on_the_gold_scale(tmp_path, encoder, packaged_dir):
    gold = read_pairs(write_pairs(tmp_path / "p.tsv"))  # 8 pairs twice, 12 distinct sentences
    silver = bi_encoder_silver(gold, packaged_dir, k=1, random_pairs=5)

    sentences = list(dict.fromkeys(s for e in gold for s in (e.text, e.pair)))
    v = encoder.encode(sentences, pooling="mean", normalize=True)
    at = {s: i for i, s in enumerate(sentences)}
    cos = np.array([v[at[e.text]] @ v[at[e.pair]] for e in gold])
    slope, intercept = np.polyfit(cos, [e.label for e in gold], 1)
    expected = np.clip(slope * np.array([v[at[e.text]] @ v[at[e.pair]] for e in silver]) + intercept, 0.0, 4.6)
    np.testing.assert_allclose([e.label for e in silver], expected, atol=1e-5)
    assert slope > 0  # similar sentences score higher, on the gold scale

    gold_keys = {frozenset((e.text, e.pair)) for e in gold}
    keys = [frozenset((e.text, e.pair)) for e in silver]
    assert len(set(keys)) == len(keys) and not set(keys) & gold_keys  # new pairs, each once
    neighbours = nearest_partners(v, 1, {(min(at[e.text], at[e.pair]), max(at[e.text], at[e.pair])) for e in gold})
    partners = [(sentences[i], sentences[j]) for i, j in neighbours]
    assert [(e.text, e.pair) for e in silver[: len(neighbours)]] == partners
    assert len(silver) == len(neighbours) + 5 and [e.line for e in silver] == list(range(-1, -len(silver) - 1, -1))
    assert bi_encoder_silver(gold, packaged_dir, k=1, random_pairs=5) == silver  # seeded: the same pairs again


def test_both_orders_adds_each_pair_reversed(tmp_path):
    gold = read_pairs(write_pairs(tmp_path / "p.tsv", repeat=1))
    both = both_orders(gold)
    assert both[: len(gold)] == gold and len(both) == 2 * len(gold)
    assert [(e.pair, e.text, e.label) for e in both[len(gold):]] == [(e.text, e.pair, e.label) for e in gold]


@pytest.mark.parametrize("k, random_pairs", [(0, 0), (-1, 5), (2, -1)])
def test_bad_silver_counts_are_refused(tmp_path, packaged_dir, k, random_pairs):
    gold = read_pairs(write_pairs(tmp_path / "p.tsv", repeat=1))
    with pytest.raises(OptionError, match=f"--silver-k {k} --silver-random {random_pairs}: give"):
        bi_encoder_silver(gold, packaged_dir, k=k, random_pairs=random_pairs)
