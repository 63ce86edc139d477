"""The sparse (SPLADE) index kind: embed-corpus --sparse -> index build --kind sparse -> search."""

from __future__ import annotations

import numpy as np
import pytest

from bertkit import Encoder
from bertkit.corpus import CorpusError, CorpusJob, EmbedOptions, embed_corpus, read_embeddings
from bertkit.index.folder import Index, VectorIndexError, build_index
from bertkit.index.sparse import read_sparse_embeddings

DOCS = [
    "OPEC agreed to cut oil production to lift crude prices.",
    "The cat sat on the mat in the sun.",
    "A man is playing a guitar on the stage.",
    "Stock markets fell sharply after the bank raised interest rates.",
    "The football team won the championship final.",
    "Astronomers found water on a distant planet.",
]


@pytest.fixture(scope="module")
def splade():
    return Encoder.load("splade-tiny", device="cpu")


@pytest.fixture(scope="module")
def sparse_corpus(tmp_path_factory, splade):
    root = tmp_path_factory.mktemp("sparse")
    (root / "docs.txt").write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    options = EmbedOptions(model="splade-tiny", sparse=True, keep_text=True)
    embed_corpus(CorpusJob(root / "docs.txt", root / "emb", shard_rows=4, options=options), encoder=splade)
    return root


def test_sparse_corpus_rows_equal_encode_sparse(sparse_corpus, splade):
    meta, matrix = read_sparse_embeddings(sparse_corpus / "emb")
    assert meta.column("row").to_pylist() == list(range(6)) and matrix.shape == (6, 30522)
    np.testing.assert_allclose(matrix.toarray(), splade.encode_sparse(DOCS).toarray(), atol=1e-5)
    with pytest.raises(CorpusError, match="--kind sparse"):
        read_embeddings(sparse_corpus / "emb")  # the dense reader names the fix


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_sparse_search_equals_brute_force(sparse_corpus, splade, metric):
    idx = Index.load(build_index(sparse_corpus / "emb", sparse_corpus / f"idx-{metric}", kind="sparse",
                                 metric=None if metric == "dot" else metric))
    assert (idx.kind, idx.info["metric"], len(idx)) == ("sparse", metric, 6)
    docs = splade.encode_sparse(DOCS).toarray()
    queries = ["oil prices and OPEC output", "a cat on a mat", "interest rates and stocks"]
    q = splade.encode_sparse(queries).toarray()
    if metric == "cosine":
        docs, q = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (docs, q))
    expected = q @ docs.T
    scores, positions = idx.search_vectors(splade.encode_sparse(queries), k=3)
    np.testing.assert_array_equal(positions, np.argsort(-expected, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(scores, np.sort(expected, axis=1)[:, ::-1][:, :3], rtol=1e-5)
    hits = idx.search_text(splade, queries, k=1)
    assert [h[0].id for h in hits] == ["0", "1", "3"] and hits[0][0].text == DOCS[0]


def test_sparse_index_errors_name_the_fix(sparse_corpus, encoder, tmp_path):
    idx = Index.load(build_index(sparse_corpus / "emb", tmp_path / "idx", kind="sparse"))
    with pytest.raises(VectorIndexError, match="masked-LM head.*search with the corpus's model .splade-tiny."):
        idx.search_text(encoder, "a dense query model", k=3)
    with pytest.raises(VectorIndexError, match="dimension 384, the sparse index 30522"):
        idx.search_vectors(encoder.encode(["a dense query vector"]), k=3)
    with pytest.raises(CorpusError, match="--kind sparse"):
        build_index(sparse_corpus / "emb", tmp_path / "dense", kind="exact")


def test_sparse_kind_refuses_a_dense_corpus(tmp_path, encoder):
    (tmp_path / "d.txt").write_text("one text\nanother text\n")
    embed_corpus(CorpusJob(tmp_path / "d.txt", tmp_path / "emb"), encoder=encoder)
    with pytest.raises(VectorIndexError, match="holds dense vectors"):
        build_index(tmp_path / "emb", tmp_path / "idx", kind="sparse")
