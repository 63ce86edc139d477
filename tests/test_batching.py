"""Length-sorted batching and the truncation note, shared by encode, prediction and training."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bertkit.batching import by_length, truncated_positions, truncation_note
from bertkit.errors import OptionError


def test_batches_are_longest_first_and_cover_every_item_once():
    lengths = [3, 9, 1, 9, 5, 2, 7]
    batches = by_length(lengths, batch_size=3)
    assert [b.tolist() for b in batches] == [[1, 3, 6], [4, 0, 5], [2]]  # ties keep their input order
    assert all(b.dtype == np.int64 for b in batches)


def test_token_budget_shrinks_batches_of_long_items_only():
    lengths = [100, 10, 10, 10, 10, 300, 10]
    batches = by_length(lengths, batch_size=4, max_tokens=200)
    assert [b.tolist() for b in batches] == [[5], [0, 1], [2, 3, 4, 6]]  # a lone over-budget item still runs
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 200


def test_indices_batch_a_subset_keeping_their_order_among_equal_lengths():
    lengths = [4, 4, 4, 4, 8, 8]
    batches = by_length(lengths, batch_size=2, indices=[3, 1, 5, 0, 4])
    assert [b.tolist() for b in batches] == [[5, 4], [3, 1], [0]]  # 2 is not in the subset


def test_empty_input_and_bad_batch_size():
    assert by_length([], batch_size=8) == [] and by_length([], 8, max_tokens=64) == []
    with pytest.raises(OptionError, match="batch_size must be >= 1, got 0"):
        by_length([1, 2], batch_size=0)


def test_truncation_note_counts_and_warns_once(encoder, caplog):
    texts = ["short", "word " * 400, "also short", "word " * 300]
    encodings = encoder.tokenizer.encode(texts)
    assert truncated_positions(encodings) == [1, 3]
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        assert truncation_note(encodings, encoder.max_length, "sentences") == 2
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 4 sentences were longer than 256 tokens and were truncated"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        assert truncation_note(encodings[:1], encoder.max_length) == 0
    assert not caplog.records
