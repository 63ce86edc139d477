"""bertkit.heads.rerank.CrossEncoder on folders saved by transformers (one output, or several): scores, rank, rerank
of index hits, and the refusals (no documents, not a one-output pair model, over-long pairs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ce_support import save_classifier

from bertkit.errors import InputError, OptionError
from bertkit.heads.rerank import CrossEncoder, NotACrossEncoderError
from bertkit.index.folder import Hit
from bertkit.index.rerank import rerank_hits


@pytest.fixture(scope="module")
def one_output(tmp_path_factory, packaged_dir):
    """A randomly initialised one-label BertForSequenceClassification: what a foreign cross-encoder looks like."""
    return save_classifier(tmp_path_factory.mktemp("ce1"), packaged_dir, 1, max_positions=64)


def test_scores_are_the_sigmoid_of_transformers_logits(one_output):
    import transformers

    ce = CrossEncoder.load(one_output, device="cpu")
    pairs = [("a query", "a passage"), ("another query", "a much longer passage " * 40)]
    hf = transformers.BertForSequenceClassification.from_pretrained(str(one_output)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(one_output))
    batch = tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, truncation=True, max_length=64,
                return_tensors="pt")
    with torch.no_grad():
        logits = hf(**batch).logits[:, 0]
    np.testing.assert_allclose(ce.predict(pairs, raw=True), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(ce.predict(pairs), logits.sigmoid().numpy(), atol=1e-6)
    assert ce.truncated == [1] and ce.max_length == 64


def test_rank_sorts_best_first_and_keeps_positions(one_output):
    ce = CrossEncoder.load(one_output, device="cpu")
    docs = ["first passage", "second passage about cats", "third one", "fourth"]
    scores = ce.predict([("cats?", d) for d in docs])
    ranked = ce.rank("cats?", docs, return_text=True)
    assert [r["index"] for r in ranked] == list(np.argsort(-scores, kind="stable"))
    assert [r["text"] for r in ranked] == [docs[r["index"]] for r in ranked]
    np.testing.assert_allclose([r["score"] for r in ranked], np.sort(scores)[::-1], atol=1e-6)
    assert len(ce.rank("cats?", docs, top_k=2)) == 2 and "text" not in ce.rank("cats?", docs)[0]

    hits = [Hit(rank=i + 1, score=0.0, id=f"d{i}", row=i, text=d) for i, d in enumerate(docs)]
    reranked = rerank_hits(ce, "cats?", hits, k=3)
    assert [h.id for h in reranked] == [f"d{r['index']}" for r in ranked[:3]]
    assert [h.rank for h in reranked] == [1, 2, 3]


def test_bad_inputs_are_refused_with_the_fix(one_output, tmp_path, packaged_dir):
    ce = CrossEncoder.load(one_output, device="cpu")
    with pytest.raises(InputError, match="no documents to rank"):
        ce.rank("a query", [])
    with pytest.raises(InputError, match="document 1 is empty"):
        ce.rank("a query", ["fine", "  "])
    with pytest.raises(InputError, match="query . document 0 is longer than the model's limit of 64 tokens"):
        ce.rank("a query", ["word " * 100], truncate=False)
    with pytest.raises(OptionError, match="top_k must be >= 1"):
        ce.rank("a query", ["a"], top_k=0)
    with pytest.raises(InputError, match="no text to rerank .first id x."):
        rerank_hits(ce, "q", [Hit(1, 0.5, "x", 0)])
    with pytest.raises(NotACrossEncoderError, match="not a cross-encoder .architectures=BertModel."):
        CrossEncoder.load(packaged_dir)  # a plain encoder
    three = save_classifier(tmp_path / "three", packaged_dir, 3)
    with pytest.raises(NotACrossEncoderError, match="3 label.s. and 3 output.s., not a one-output pair model"):
        CrossEncoder.load(three)
