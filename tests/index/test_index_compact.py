"""Compact index kinds (bertkit.index.compact) and compact corpora: known Hamming ranks, recall against exact
float search, rescoring, sizes, and the refusals (wrong query vectors, mixed jobs, missing calibration)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertkit.corpus import (
    CorpusError,
    CorpusJob,
    EmbedOptions,
    Shard,
    embed_corpus,
    read_embeddings,
    write_shard,
)
from bertkit.errors import BertkitError, VectorIndexError
from bertkit.index.compact import set_rescore
from bertkit.index.folder import Index, build_index, recall_at_k
from bertkit.vectors.compact import calibrate

pytest.importorskip("faiss", reason="compact indexes need FAISS (the scale extra)")


def toy_corpus(root: Path, vectors: np.ndarray) -> Path:
    """An embed-corpus folder holding these float vectors (ids = row numbers)."""
    root.mkdir(parents=True)
    n = len(vectors)
    table = pa.table({"row": pa.array(range(n), pa.int64()), "id": pa.array([str(i) for i in range(n)]),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                                                     vectors.shape[1])})
    write_shard(root, Shard(0, 0, n, 0), table, 0)
    manifest = {"format": "bertkit-corpus/1", "embedding": {"model": "toy", "pooling": "mean", "normalize": False},
                "shards": [Shard(0, 0, n, 0).__dict__], "complete": True, "rows": n}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize("kind", ["binary", "binary-hnsw"])
def test_hamming_search_on_a_toy_set_gives_the_known_ranks(tmp_path, kind):
    # Row r has its first flips[r] signs negative: Hamming distance flips[r] from the all-positive query.
    flips = np.array([5, 0, 9, 2, 7, 1, 3, 8, 4, 6])
    vectors = np.ones((10, 16), np.float32)
    for r, f in enumerate(flips):
        vectors[r, :f] = -1
    vectors *= np.linspace(0.5, 2.0, 16, dtype=np.float32)  # magnitudes do not matter, signs do
    idx = Index.load(build_index(toy_corpus(tmp_path / "emb", vectors), tmp_path / "idx", kind=kind))
    assert idx.kind == kind and idx.info["params"]["compact"]["bytes_per_vector"] == 2
    scores, positions = idx.search_vectors(np.ones((1, 16), np.float32), k=10)
    np.testing.assert_array_equal(positions[0], np.argsort(flips))
    np.testing.assert_allclose(scores[0], 1 - 2 * np.sort(flips) / 16)  # share of agreeing signs, in [-1, 1]
    (top,) = [idx.hits(s, p) for s, p in zip(*idx.search_vectors(-np.ones(16, np.float32), k=2))]
    assert [h.id for h in top] == ["2", "7"]  # the most flipped rows are the nearest to the opposite query


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory, encoder) -> Path:
    """150 AG News texts, float32, normalised."""
    lines = (data_dir / "agnews" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:150]
    root = tmp_path_factory.mktemp("compact")
    (root / "ag.tsv").write_text("".join(lines), encoding="utf-8")
    embed_corpus(CorpusJob(root / "ag.tsv", root / "emb", header=False, options=EmbedOptions(normalize=True)),
                 encoder=encoder)
    return root / "emb"


@pytest.fixture(scope="module")
def queries(corpus) -> np.ndarray:
    _, vectors = read_embeddings(corpus)
    rng = np.random.default_rng(0)
    return vectors[:40] + 0.03 * rng.standard_normal((40, vectors.shape[1])).astype(np.float32)


def test_recall_against_exact_float_search_and_sizes(corpus, queries, tmp_path):
    truth = Index.load(build_index(corpus, tmp_path / "exact")).search_vectors(queries, 10)[1]
    recall = {}
    for name, kind, kw in [("binary", "binary", {}), ("binary+rescore", "binary", {"rescore": 50}),
                           ("int8", "int8", {}), ("dims128", "exact", {"dimensions": 128})]:
        idx = Index.load(build_index(corpus, tmp_path / name, kind=kind, **kw))
        scores, positions = idx.search_vectors(queries, 10)
        assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
        recall[name] = recall_at_k(positions, truth, 10)
    assert recall["binary+rescore"] >= 0.95 and recall["int8"] >= 0.9
    assert recall["binary+rescore"] > recall["binary"] and recall["dims128"] >= 0.5
    # The binary codes are 32x smaller than float32 (48 bytes a vector); rescoring reads the corpus's store.
    codes = (tmp_path / "binary+rescore" / "compact.faiss").stat().st_size
    floats = (tmp_path / "exact" / "vectors.npy").stat().st_size
    assert floats / codes >= 16 and (corpus / "rescore.float32.npy").is_file()
    idx = Index.load(tmp_path / "binary+rescore")
    set_rescore(idx, 0)
    np.testing.assert_array_equal(idx.search_vectors(queries, 10)[1],
                                  Index.load(tmp_path / "binary").search_vectors(queries, 10)[1])


def test_text_search_and_wrong_query_vectors(encoder, corpus, tmp_path):
    idx = Index.load(build_index(corpus, tmp_path / "bin", kind="binary", rescore=20))
    text = (corpus.parent / "ag.tsv").read_text(encoding="utf-8").splitlines()[42].split("\t")[0]
    (hits,) = idx.search_text(encoder, text, k=3)
    assert hits[0].id == "42" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    for bad in (np.ones((1, 128), np.float32), np.ones((1, 768), np.float32), np.ones((1, 48), np.uint8)):
        with pytest.raises(VectorIndexError, match="built from 384-dimensional float vectors of model"):
            idx.search_vectors(bad, 5)


def test_rescoring_needs_the_corpus_store(corpus, tmp_path):
    build_index(corpus, tmp_path / "idx", kind="int8", rescore=10)
    store = corpus / "rescore.float32.npy"
    store.rename(tmp_path / "moved.npy")
    try:
        with pytest.raises(VectorIndexError, match="rescoring needs"):
            Index.load(tmp_path / "idx")
    finally:
        (tmp_path / "moved.npy").rename(store)
    with pytest.raises(VectorIndexError, match="built without --rescore"):
        set_rescore(Index.load(build_index(corpus, tmp_path / "plain", kind="binary")), 5)


def test_compact_corpora_record_their_codes_and_refuse_mixing(encoder, corpus, tmp_path):
    src = corpus.parent / "ag.tsv"
    job = lambda out, **o: CorpusJob(src, tmp_path / out, header=False, options=EmbedOptions(normalize=True, **o))
    embed_corpus(job("bin", dtype="ubinary"), encoder=encoder)
    schema = pq.read_schema(tmp_path / "bin" / "part-00000.parquet")
    assert schema.field("embedding").type == pa.list_(pa.uint8(), 48)
    assert schema.metadata[b"bertkit.dtype"] == b"ubinary" and schema.metadata[b"bertkit.dimensions"] == b"384"
    _, floats = read_embeddings(corpus)
    np.testing.assert_array_equal(read_embeddings(tmp_path / "bin")[1], np.packbits(floats > 0, axis=-1))
    idx = Index.load(build_index(tmp_path / "bin", tmp_path / "bin-idx", kind="binary"))
    assert idx.search_vectors(floats[7:8], 1)[1][0, 0] == 7
    with pytest.raises(VectorIndexError, match="holds ubinary codes: build --kind binary"):
        build_index(tmp_path / "bin", tmp_path / "x", kind="exact")
    with pytest.raises(CorpusError, match="different job"):  # resuming with another dtype: refused, not mixed
        embed_corpus(job("bin", dtype="binary"), encoder=encoder)
    with pytest.raises(BertkitError, match="needs a calibration"):
        embed_corpus(job("i8", dtype="int8"), encoder=encoder)
    assert not (tmp_path / "i8").exists()
    cal = calibrate(encoder, src.read_text().splitlines()[:100], normalize=True).save(tmp_path / "cal.npz")
    embed_corpus(job("i8", dtype="int8", calibration=str(cal)), encoder=encoder)
    assert pq.read_schema(tmp_path / "i8" / "part-00000.parquet").metadata[b"bertkit.calibration"]
    idx = Index.load(build_index(tmp_path / "i8", tmp_path / "i8-idx", kind="int8"))
    assert idx.search_vectors(floats[9:10], 1)[1][0, 0] == 9
    (tmp_path / "i8" / "calibration.npz").unlink()
    with pytest.raises(BertkitError, match="calibration.npz"):
        build_index(tmp_path / "i8", tmp_path / "i8-idx2", kind="int8")
    calibrate(encoder, src.read_text().splitlines()[:50], normalize=True).save(cal)  # the file changed in place
    with pytest.raises(CorpusError, match="different job"):
        embed_corpus(job("i8", dtype="int8", calibration=str(cal)), encoder=encoder)
