"""Exact and HNSW indexes over embed-corpus output: known answers, recall against exact, persistence, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bertkit.corpus import CorpusJob, EmbedOptions, embed_corpus, read_embeddings
from bertkit.index.folder import Index, VectorIndexError, build_index, recall_at_k


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory, encoder) -> Path:
    """120 AG News texts, normalised vectors, texts kept."""
    lines = (data_dir / "agnews" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:120]
    root = tmp_path_factory.mktemp("corpus")
    (root / "ag.tsv").write_text("".join(lines), encoding="utf-8")
    options = EmbedOptions(normalize=True, keep_text=True)
    embed_corpus(CorpusJob(root / "ag.tsv", root / "emb", header=False, shard_rows=64, options=options),
                 encoder=encoder)
    return root / "emb"


@pytest.fixture(scope="module")
def indexes(corpus, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("idx")
    return {kind: build_index(corpus, root / kind, kind=kind) for kind in ("exact", "hnsw")}


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q @ v.T), axis=1, kind="stable")[:, :k]


def test_exact_index_returns_the_brute_force_top_k(corpus, indexes):
    meta, vectors = read_embeddings(corpus)
    idx = Index.load(indexes["exact"])
    rng = np.random.default_rng(0)
    queries = vectors[:20] + 0.05 * rng.standard_normal((20, vectors.shape[1])).astype(np.float32)
    scores, positions = idx.search_vectors(queries, k=10)
    np.testing.assert_array_equal(positions, brute_force(vectors, queries, 10))
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # best first
    # A corpus vector finds itself first, with cosine 1; the hit carries its id, row and text.
    (hit, *_), = [idx.hits(s, p) for s, p in zip(*idx.search_vectors(vectors[7:8], k=3))]
    assert (hit.id, hit.row, hit.text) == ("7", 7, meta.column("text")[7].as_py())
    assert hit.score == pytest.approx(1.0, abs=1e-5)
    assert idx.search_vectors(vectors[:1], k=10_000)[1].shape == (1, 120)  # k is capped at the index size


def test_hnsw_recall_at_10_against_exact(corpus, indexes):
    _, vectors = read_embeddings(corpus)
    exact = Index.load(indexes["exact"]).search_vectors(vectors, 10)[1]
    approx = Index.load(indexes["hnsw"]).search_vectors(vectors, 10)[1]
    assert recall_at_k(approx, exact, 10) >= 0.95
    assert recall_at_k(exact, exact, 10) == 1.0
    low = Index.load(indexes["hnsw"], ef_search=1).search_vectors(vectors, 1)[1]
    assert low.shape == (120, 1)


def test_text_search_finds_the_matching_article(encoder, corpus, indexes):
    meta, _ = read_embeddings(corpus)
    target = meta.column("text")[42].as_py()
    for kind in ("exact", "hnsw"):
        (hits,) = Index.load(indexes[kind]).search_text(encoder, target, k=5)
        assert hits[0].id == "42" and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]


def test_chunked_corpus_hits_carry_offsets(tmp_path, encoder):
    long = "Oil prices rose again on Monday. " * 40 + "The central bank kept interest rates unchanged."
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": long, "id": "doc"}) + "\n"
                                      + json.dumps({"text": "A cat sat on a mat.", "id": "cat"}) + "\n")
    options = EmbedOptions(chunk_tokens=32, chunk_overlap=8)
    embed_corpus(CorpusJob(tmp_path / "c.jsonl", tmp_path / "emb", id_column="id", options=options), encoder=encoder)
    idx = Index.load(build_index(tmp_path / "emb", tmp_path / "idx"))
    (hits,) = idx.search_text(encoder, "central bank interest rates", k=1)
    assert hits[0].id == "doc" and hits[0].chunk > 0
    assert "central bank" in long[hits[0].start : hits[0].end]
    # No text was kept: search reads it back from the input file (the chunk's span of it).
    assert hits[0].text is None and idx.fill_texts(hits)[0].text == long[hits[0].start : hits[0].end]


def test_index_errors_name_the_fix(tmp_path, corpus, indexes):
    with pytest.raises(VectorIndexError, match="already holds an index; pass --overwrite"):
        build_index(corpus, indexes["exact"])
    with pytest.raises(VectorIndexError, match="--kind 'ivf' is unknown"):
        build_index(corpus, tmp_path / "x", kind="ivf")
    with pytest.raises(VectorIndexError, match="not a bertkit index"):
        Index.load(tmp_path)
    with pytest.raises(VectorIndexError, match="dimension 5, the index 384"):
        Index.load(indexes["exact"]).search_vectors(np.ones((1, 5)), 3)


def test_cli_embed_build_search(tmp_path, data_dir, monkeypatch, capsys):
    """The README walk-through: embed-corpus -> index build -> search, through the real CLI entry point."""
    from bertkit.cli import main

    lines = (data_dir / "agnews" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:40]
    (tmp_path / "ag.tsv").write_text("".join(lines), encoding="utf-8")

    def cli(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["bertkit", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = cli("embed-corpus", tmp_path / "ag.tsv", tmp_path / "emb", "--no-header", "--normalize",
                       "--keep-text")
    assert code == 0 and "40 vectors in 1 shard(s)" in err, err
    code, _, err = cli("index", "build", tmp_path / "emb", "--output", tmp_path / "idx", "--kind", "hnsw")
    assert code == 0, err
    code, out, err = cli("search", tmp_path / "idx", "robots exploring the planet Mars", "-k", "3", "--json")
    assert code == 0, err
    hits = [json.loads(line) for line in out.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["id"] == "13" and "Mars" in hits[0]["text"]
    code, _, err = cli("search", tmp_path / "emb", "x")
    assert code == 2 and err.strip().startswith("bertkit: error:") and "index build" in err


def test_server_post_search_on_loopback(indexes, corpus):
    """`bertkit serve --index` on a real loopback port: POST /search answers like Index.search_text."""
    import signal
    import socket
    import subprocess
    import time

    httpx = pytest.importorskip("httpx", reason="the server needs the 'serve' extra")
    meta, _ = read_embeddings(corpus)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "bertkit.cli", "serve", "--port", str(port), "--index", str(indexes["hnsw"]),
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        target = meta.column("text")[42].as_py()
        r = httpx.post(f"{url}/search", json={"query": target, "k": 3}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [h["rank"] for h in body["results"]] == [1, 2, 3]
        assert body["results"][0]["id"] == "42" and body["results"][0]["text"] == target
        assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert body["index"] == {"kind": "hnsw", "metric": "cosine", "size": 120}
        r = httpx.post(f"{url}/search", json={"query": [target, meta.column("text")[7].as_py()], "k": 2}, timeout=60)
        assert [hits[0]["id"] for hits in r.json()["results"]] == ["42", "7"]
        assert httpx.post(f"{url}/search", json={"query": "  ", "k": 3}, timeout=60).status_code == 400
        assert httpx.post(f"{url}/search", json={"query": "x", "k": 0}, timeout=60).status_code == 422
        assert httpx.get(f"{url}/info", timeout=30).json()["search"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_serve_refuses_an_index_of_another_model(indexes, monkeypatch, capsys):
    from bertkit.cli import main

    monkeypatch.setattr(sys, "argv",
                        ["bertkit", "serve", "--index", str(indexes["exact"]), "--model", "bert-base-uncased"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "serve it with that --model" in err and len(err.strip().splitlines()) == 1
