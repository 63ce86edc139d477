"""TEI's POST /embed_sparse and /rerank, and /search over a sparse index, on real uvicorn servers in threads:
splade-tiny (masked-LM head) with a cross-encoder beside it, and a cross-encoder folder served on its own."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from ce_support import save_classifier
from support import error_of, thread_server

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

TEXTS = ["A man is playing a guitar.", "Oil prices rose on Monday.", "The cat sat on the mat."]
LONG = "word " * 700  # over 512 tokens


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory, packaged_dir):
    return save_classifier(tmp_path_factory.mktemp("ce"), packaged_dir, 1)


@pytest.fixture(scope="module")
def splade():
    from bertkit import Encoder

    return Encoder.load("splade-tiny", device="cpu")


@pytest.fixture(scope="module")
def server(splade, ce_dir, tmp_path_factory):
    """splade-tiny with a sparse index of TEXTS (POST /search) and a cross-encoder (as `serve --reranker`)."""
    from bertkit.corpus import CorpusJob, EmbedOptions, embed_corpus
    from bertkit.heads.rerank import CrossEncoder
    from bertkit.index.folder import Index, build_index
    from bertkit.serve import create_app

    root = tmp_path_factory.mktemp("sparse-serve")
    (root / "t.txt").write_text("\n".join(TEXTS) + "\n")
    options = EmbedOptions(model="splade-tiny", sparse=True, keep_text=True)
    embed_corpus(CorpusJob(root / "t.txt", root / "emb", options=options), encoder=splade)
    app = create_app(splade, index=Index.load(build_index(root / "emb", root / "idx", kind="sparse")))
    app.state.service.reranker = CrossEncoder.load(ce_dir, device="cpu")
    with thread_server(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def ce_server(ce_dir):
    """A cross-encoder folder served on its own: /rerank from the model itself, no masked-LM head."""
    from bertkit import Encoder
    from bertkit.serve import create_app

    with thread_server(create_app(Encoder.load(ce_dir, device="cpu"))) as srv:
        yield srv


def tei_error(r, status: int, error_type: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    return body["error"]


def test_embed_sparse_answers_teis_shape(server, splade):
    def dense(row: list[dict]) -> np.ndarray:
        assert [d["index"] for d in row] == sorted(d["index"] for d in row)
        out = np.zeros(30522, np.float32)
        out[[d["index"] for d in row]] = [d["value"] for d in row]
        return out

    body = server.post("/embed_sparse", {"inputs": TEXTS, "truncate": True}).json()
    np.testing.assert_allclose(np.stack([dense(r) for r in body]), splade.encode_sparse(TEXTS).toarray(), atol=1e-5)
    one = server.post("/embed_sparse", {"inputs": TEXTS[0]}).json()  # one string: still a list of one
    assert len(one) == 1
    np.testing.assert_allclose(dense(one[0]), dense(body[0]), atol=1e-5)


def test_embed_sparse_truncation_is_reported_or_refused(server):
    r = server.post("/embed_sparse", {"inputs": [TEXTS[0], LONG]})
    assert r.status_code == 200 and r.headers["x-truncated"] == "1"
    assert "512" in tei_error(server.post("/embed_sparse", {"inputs": [LONG], "truncate": False}), 413, "Validation")
    tei_error(server.post("/embed_sparse", {"inputs": []}), 400, "Empty")


def test_rerank_accepts_the_body_a_tei_client_sends(server, ce_dir):
    from bertkit.heads.rerank import CrossEncoder

    query = "What is a guitar?"
    body = {"query": query, "texts": TEXTS, "raw_scores": False, "return_text": False, "truncate": False,
            "truncation_direction": "right"}  # TEI's documented /rerank body, as sent by its clients
    r = httpx.post(server.url + "/rerank", json=body, timeout=60)
    assert r.status_code == 200, r.text
    expected = CrossEncoder.load(ce_dir, device="cpu").rank(query, TEXTS)
    assert [x["index"] for x in r.json()] == [x["index"] for x in expected]
    np.testing.assert_allclose([x["score"] for x in r.json()], [x["score"] for x in expected], atol=1e-6)
    assert set(r.json()[0]) == {"index", "score"}

    raw = server.post("/rerank", {"query": query, "texts": TEXTS, "raw_scores": True, "return_text": True}).json()
    assert [x["text"] for x in raw] == [TEXTS[x["index"]] for x in raw]
    probs = 1 / (1 + np.exp(-np.array([x["score"] for x in raw])))
    np.testing.assert_allclose(probs, [x["score"] for x in r.json()], atol=1e-6)


def test_rerank_refusals_in_teis_shape(server, ce_server):
    r = server.post("/rerank", {"query": "q", "texts": ["short", LONG]})
    assert r.status_code == 200 and r.headers["x-truncated"] == "1"  # cut, and said so
    msg = tei_error(server.post("/rerank", {"query": "q", "texts": ["short", LONG], "truncate": False}), 413,
                    "Validation")
    assert "query + document 1 is longer than the model's limit of 512 tokens" in msg
    tei_error(server.post("/rerank", {"query": "q", "texts": []}), 400, "Empty")
    assert "query 0 is empty" in tei_error(server.post("/rerank", {"query": " ", "texts": ["a"]}), 413, "Validation")
    tei_error(server.post("/rerank", {"query": "q"}), 422, "Validation")
    tei_error(server.post("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "left"}), 413, "Validation")
    # The served model decides what it can do: a cross-encoder reranks but has no masked-LM head ...
    ranked = ce_server.post("/rerank", {"query": "q", "texts": ["a", "b"]}).json()
    assert [x["index"] for x in ranked] in ([0, 1], [1, 0])
    assert "masked-LM head" in tei_error(ce_server.post("/embed_sparse", {"inputs": ["a"]}), 424, "Validation")
    assert ce_server.get("/info").json()["heads"]["rerank"] is True


def test_rerank_without_a_cross_encoder_is_424(splade):
    from bertkit.serve import create_app

    with thread_server(create_app(splade)) as srv:
        msg = tei_error(srv.post("/rerank", {"query": "q", "texts": ["a"]}), 424, "Validation")
        assert "no cross-encoder" in msg and "--reranker" in msg


def test_search_on_a_sparse_index(server):
    body = server.post("/search", {"query": "oil prices", "k": 2}).json()
    assert body["index"]["kind"] == "sparse" and body["results"][0]["text"] == TEXTS[1]
    assert error_of(server.post("/search", {"query": " ", "k": 2}), 400)


def test_serve_refuses_a_reranker_that_is_not_a_cross_encoder(monkeypatch, capsys):
    from bertkit.cli import main

    monkeypatch.setattr(sys, "argv", ["bertkit", "serve", "--reranker", "splade-tiny"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "not a cross-encoder" in err and len(err.strip().splitlines()) == 1
