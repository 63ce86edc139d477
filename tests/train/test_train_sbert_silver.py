"""Augmented SBERT (bertkit.train.sbert_silver): nearest-neighbour re-pairings against a brute-force search, and
silver pairs scored by a real (tiny, trained) cross-encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ce_support import PAIRS, train_tiny_cross_encoder

from bertkit.data import SentencePair
from bertkit.errors import InputError
from bertkit.heads.rerank import CrossEncoder
from bertkit.model import Bert, BertConfig
from bertkit.tokenizer import BertTokenizer
from bertkit.train.sbert_silver import nearest_partners, silver_pairs


def test_nearest_partners_match_brute_force():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(9, 5)).astype(np.float32)
    excluded = {(0, 1), (2, 5)}
    got = nearest_partners(v, 1, excluded, chunk=4)  # chunks smaller than the set: the same answer
    assert got == nearest_partners(v, 1, excluded)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    sims = unit @ unit.T
    seen: set = set()
    expected = []
    for i in range(9):
        order = [j for j in np.argsort(-sims[i], kind="stable") if j != i]
        for j in order:
            key = (min(i, j), max(i, j))
            if key not in excluded and key not in seen:
                seen.add(key)
                expected.append((i, int(j)))
                break
    assert got == expected
    assert len(nearest_partners(v, 3, set())) == len({tuple(sorted(p)) for p in nearest_partners(v, 3, set())})


def test_silver_pairs_are_new_and_scored_by_the_cross_encoder(tmp_path, packaged_dir):
    torch.manual_seed(0)
    model = Bert(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    tokenizer = BertTokenizer.from_dir(packaged_dir)
    ce_dir = train_tiny_cross_encoder(tmp_path)
    gold = [SentencePair(a, b, s) for a, b, s in PAIRS]
    silver = silver_pairs(model, tokenizer, gold, ce_dir, k=2)
    gold_keys = {frozenset((p.a, p.b)) for p in gold}
    keys = [frozenset((p.a, p.b)) for p in silver]
    assert silver and all(len(k) == 2 for k in keys)  # never a sentence with itself
    assert not gold_keys & set(keys) and len(set(keys)) == len(keys)  # new pairs, each once
    sentences = {s for p in gold for s in (p.a, p.b)}
    assert len(silver) <= 2 * len(sentences)
    expected = CrossEncoder.load(ce_dir, device="cpu").predict([(p.a, p.b) for p in silver])
    np.testing.assert_allclose([p.score for p in silver], expected, atol=1e-6)
    assert all(0.0 <= p.score <= 1.0 for p in silver)
    with pytest.raises(InputError, match="--silver-k 0"):
        silver_pairs(model, tokenizer, gold, ce_dir, k=0)
