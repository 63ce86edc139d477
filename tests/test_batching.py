"""Length-sorted batching and the truncation note, shared by encode, prediction and training."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bertkit.batching import by_length, padding_cuts, truncated_positions, truncation_note
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


def brute_force_cost(widths, batch_size, max_tokens, batch_cost) -> float:
    """The least padded tokens + batch_cost per batch over every way to cut `widths` (longest first)."""
    import itertools

    n, best = len(widths), float("inf")
    for cuts in itertools.product([False, True], repeat=n - 1):
        starts = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        sizes = [b - a for a, b in itertools.pairwise(starts)]
        if any(s > batch_size or (s > 1 and max_tokens and s * widths[a] > max_tokens)
               for a, s in zip(starts, sizes, strict=False)):
            continue
        best = min(best, sum(s * widths[a] + batch_cost for a, s in zip(starts, sizes, strict=False)))
    return best


def cut_cost(widths, sizes, batch_cost) -> float:
    at, total = 0, 0.0
    for s in sizes:
        total += s * widths[at] + batch_cost
        at += s
    return total


def test_padding_cuts_known_answer():
    # three long and three short: one batch pads 24 tokens, two batches cost one batch_cost more
    assert padding_cuts(np.array([10, 10, 10, 2, 2, 2]), 6, None, batch_cost=1) == [3, 3]
    assert padding_cuts(np.array([10, 10, 10, 2, 2, 2]), 6, None, batch_cost=30) == [6]
    assert padding_cuts(np.array([10, 10, 10, 2, 2, 2]), 2, None, batch_cost=1) in ([1, 2, 1, 2], [2, 1, 2, 1])
    assert padding_cuts(np.array([], dtype=np.int64), 4, None, 16) == []


def test_padding_cuts_are_the_cheapest_cut_within_the_bounds():
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(1, 10))
        widths = np.sort(rng.integers(1, 40, n))[::-1]
        batch_size, cost = int(rng.integers(1, 6)), int(rng.integers(0, 30))
        max_tokens = int(rng.integers(20, 120)) if trial % 2 else None
        sizes = padding_cuts(widths, batch_size, max_tokens, cost)
        assert sum(sizes) == n and all(1 <= s <= batch_size for s in sizes)
        at = 0
        for s in sizes:  # within max_tokens, or a lone item
            assert s == 1 or max_tokens is None or s * widths[at] <= max_tokens
            at += s
        assert cut_cost(widths, sizes, cost) == brute_force_cost(widths, batch_size, max_tokens, cost), (
            widths, batch_size, max_tokens, cost, sizes)


def test_by_length_with_a_batch_cost_cuts_the_sorted_items_where_padding_is_least(monkeypatch):
    lengths = [5, 40, 6, 38, 5, 39, 7, 6]
    plain = by_length(lengths, batch_size=4)
    assert [b.tolist() for b in plain] == [[1, 5, 3, 6], [2, 7, 0, 4]]  # 40 pads 7 to 40
    cut = by_length(lengths, batch_size=4, batch_cost=8)
    assert len(cut[0]) == 3  # 40, 39, 38 alone: 7 padded to 38 costs more than a batch
    assert np.concatenate(cut).tolist() == np.concatenate(plain).tolist()  # the same order, cut elsewhere
    widths = np.sort(lengths)[::-1]
    assert cut_cost(widths, [len(b) for b in cut], 8) == brute_force_cost(widths, 4, None, 8) == 175
    # windows of CUT_WINDOW sorted items: each is cut alone
    from bertkit import batching

    monkeypatch.setattr(batching, "CUT_WINDOW", 4)
    assert padding_cuts(np.array([30, 30, 30, 2, 2, 2]), 4, None, 1) == [3, 1, 2]
