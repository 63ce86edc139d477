"""`--recipe best` picks each file's loss from its kind (the choice measured in docs/RESULTS.md, issue 20)."""

from __future__ import annotations

import pytest

from bertkit.data import SentencePair
from bertkit.train.sbert_recipe import RECIPES, kind_of, recipe_tasks

STSB = [SentencePair("a", "b", score=s) for s in (0.0, 2.5, 5.0)]
SICK = [SentencePair("a", "b", score=s, label=lab) for s, lab in ((1.0, "NEUTRAL"), (3.2, "ENTAILMENT"),
                                                                      (4.9, "CONTRADICTION"))]
MRPC = [SentencePair("a", "b", score=q, label=str(int(q))) for q in (0.0, 1.0, 1.0)]  # 0/1 quality: a label
PAIRS = [SentencePair("a", "b"), SentencePair("c", "d")]


@pytest.mark.parametrize("pairs, kind, losses", [
    (STSB, (True, False), ["cosine"]),
    (SICK, (True, True), ["cosine"]),
    (MRPC, (False, True), ["mnrl"]),
    (PAIRS, (False, False), ["mnrl"]),
])
def test_best_recipe_loss_per_file_kind(pairs, kind, losses):
    assert kind_of(pairs) == kind
    assert [t.loss for t in recipe_tasks("f", pairs, RECIPES["best"])] == losses
