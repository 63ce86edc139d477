"""The server's one admission path (issue 28: tokenize once; issue 29 rows 2, 3, 4, 5, 10, 22b).

Real uvicorn servers in threads, one per model: the packaged model (with a dense index), splade-tiny (a sparse
index and a cross-encoder beside it), a random model with MLM and NSP heads, and random classifier and tagger
folders. Every route that runs the model: its answer bound (413 `max_answer_values`, before any model work),
the shared token budget (429 when full) and splitting (a small request finishes before a big one's pieces).
The model thread is held (a blocking call put on its one thread) so that what is queued is exact.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
from ce_support import save_classifier
from support import RANDOM_SHAPES, assert_user_error, copy_tokenizer, error_of, run_process, thread_server

pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

TEXTS = ["A man plays guitar.", "Stocks fell.", "The cat sat on the mat."]
SENTENCE = "the quick brown fox jumps over the lazy dog near the river bank"  # 13 words, 15 tokens


# -- servers -------------------------------------------------------------------------------------------------


@contextmanager
def served(encoder, **kw):
    from bertkit.serve import create_app

    app = create_app(encoder, **kw)
    with thread_server(app) as srv:
        srv.service = app.state.service
        yield srv


@pytest.fixture(scope="module")
def plain(encoder, tmp_path_factory):
    from bertkit.corpus import CorpusJob, embed_corpus
    from bertkit.index.folder import Index, build_index

    root = tmp_path_factory.mktemp("admission-index")
    (root / "docs.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    embed_corpus(CorpusJob(root / "docs.txt", root / "emb"), encoder=encoder)
    with served(encoder, index=Index.load(build_index(root / "emb", root / "idx"))) as srv:
        yield srv


@pytest.fixture(scope="module")
def sparse(tmp_path_factory, packaged_dir):
    """splade-tiny with a sparse index (POST /search) and a cross-encoder (POST /rerank)."""
    from bertkit import Encoder
    from bertkit.corpus import CorpusJob, EmbedOptions, embed_corpus
    from bertkit.heads.rerank import CrossEncoder
    from bertkit.index.folder import Index, build_index

    splade = Encoder.load("splade-tiny", device="cpu")
    root = tmp_path_factory.mktemp("admission-sparse")
    (root / "t.txt").write_text("\n".join(TEXTS) + "\n")
    embed_corpus(CorpusJob(root / "t.txt", root / "emb", options=EmbedOptions(model="splade-tiny", sparse=True,
                                                                               keep_text=True)), encoder=splade)
    with served(splade, index=Index.load(build_index(root / "emb", root / "idx", kind="sparse"))) as srv:
        srv.service.reranker = CrossEncoder.load(save_classifier(root / "ce", packaged_dir, 1), device="cpu")
        yield srv


def random_folder(folder, packaged_dir, labels: list[str] | None = None, arch: str | None = None):
    """A tiny random BERT: with MLM and NSP heads, or a fine-tuned-style classifier / tagger (`labels`)."""
    import torch

    from bertkit.model import Bert, BertConfig, save_model

    torch.manual_seed(0)
    config = BertConfig(**RANDOM_SHAPES["small"])
    if labels is None:
        save_model(Bert(config, pooler=True, mlm=True, nsp=True), folder)
    else:
        head = {"classifier.weight": torch.randn(len(labels), config.hidden_size),
                "classifier.bias": torch.randn(len(labels))}
        save_model(Bert(config, pooler=True), folder, extra_state=head, architectures=[arch],
                   id2label={str(i): lab for i, lab in enumerate(labels)},
                   label2id={lab: i for i, lab in enumerate(labels)})
    copy_tokenizer(packaged_dir, folder)
    return folder


@pytest.fixture(scope="module")
def heads(tmp_path_factory, packaged_dir):
    from bertkit import Encoder

    folder = random_folder(tmp_path_factory.mktemp("admission-heads"), packaged_dir)
    with served(Encoder.load(folder, device="cpu")) as srv:
        yield srv


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, packaged_dir):
    from bertkit import Encoder

    folder = random_folder(tmp_path_factory.mktemp("admission-clf"), packaged_dir, ["neg", "pos"],
                           "BertForSequenceClassification")
    with served(Encoder.load(folder, device="cpu")) as srv:
        yield srv


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, packaged_dir):
    from bertkit import Encoder

    folder = random_folder(tmp_path_factory.mktemp("admission-ner"), packaged_dir, ["O", "B-PER", "I-PER"],
                           "BertForTokenClassification")
    with served(Encoder.load(folder, device="cpu")) as srv:
        yield srv


SERVERS = ("plain", "sparse", "heads", "classifier", "tagger")


@contextmanager
def held(srv):
    """The model thread busy until the block ends: what is sent meanwhile stays queued."""
    release = threading.Event()
    srv.service.batcher.executor.submit(release.wait, 60)
    try:
        yield
    finally:
        release.set()


def queued(srv, at_least: int = 1) -> None:
    """Wait until the batcher holds at least `at_least` accepted tokens."""
    for _ in range(500):
        if srv.service.batcher.accepted_tokens >= at_least:
            return
        time.sleep(0.01)
    raise AssertionError("the request never reached the queue")


def in_background(srv, path: str, body: dict, done: list):
    def post():
        r = srv.post(path, body)
        done.append((path, r.status_code))

    thread = threading.Thread(target=post)
    thread.start()
    return thread


# -- the routes: (server, path, a body over the answer bound of 100 values, a small body) -----------------------

WORDS = " ".join([SENTENCE] * 9)  # about 120 tokens
ROUTES = [
    ("plain", "/embed", {"texts": ["hello"]}),  # 384 floats
    ("plain", "/v1/embeddings", {"input": "hello"}),
    ("plain", "/embed#tei", {"inputs": "hello"}),
    ("plain", "/", {"inputs": "hello"}),
    ("plain", "/similarity", {"texts": ["a"] * 11}),  # 121 scores
    ("plain", "/search", {"query": "guitar", "k": 30}),  # 30 hits
    ("plain", "/tokens", {"texts": ["hello"]}),
    ("plain", "/embed_all", {"inputs": "hello"}),
    ("plain", "/layers", {"texts": ["a", "b", "c", "d"], "poolings": ["mean", "cls"]}),  # 2 x 7 x 16
    ("plain", "/layers/tokens", {"text": SENTENCE}),  # 8 x 15
    ("plain", "/attention", {"text": "hi"}),  # 6 x 12 x 3^2
    ("plain", "/model/outputs", {"text": WORDS}),
    ("plain", "/tokenize", {"inputs": SENTENCE + " " + SENTENCE}),  # 5 x 28
    ("plain", "/decode", {"ids": [[1000] * 101]}),
    ("sparse", "/embed_sparse", {"inputs": "hello"}),
    ("sparse", "/search#sparse", {"query": "guitar", "k": 30}),
    ("sparse", "/rerank", {"query": "q", "texts": ["a"] * 34}),
    ("heads", "/fill-mask", {"text": "a [MASK] b", "top_k": 51}),
    ("heads", "/nsp", {"a": ["x"] * 101, "b": ["y"] * 101}),
    ("classifier", "/classify", {"texts": ["x"] * 51}),
    ("tagger", "/ner", {"texts": [SENTENCE * 2]}),
]


def model_batches(srv) -> float:
    return srv.metric("bertkit_batch_size_count")


@pytest.mark.parametrize(("which", "path", "body"), ROUTES, ids=[r[1] for r in ROUTES])
def test_an_answer_over_max_answer_values_is_413_before_any_model_work(request, monkeypatch, which, path, body):
    srv = request.getfixturevalue(which)
    monkeypatch.setattr(srv.service.limits, "max_answer_values", 100)
    before = model_batches(srv)
    r = srv.post(path.partition("#")[0], body)
    assert r.status_code == 413, r.text
    message = r.json()["error"]
    message = message["message"] if isinstance(message, dict) else message  # TEI's body is a bare string
    assert "max_answer_values is 100" in message, message
    assert model_batches(srv) == before  # refused before the model ran


# -- the shared token budget: with max_queued_tokens 60, a second concurrent request is 429 -------------------

SMALL = [  # each about 30 tokens: alone under the budget, beside /embed's 40 over it
    ("plain", "/tokens", {"texts": [SENTENCE * 2]}),
    ("plain", "/embed_all", {"inputs": [SENTENCE * 2]}),
    ("plain", "/layers", {"texts": [SENTENCE, SENTENCE]}),
    ("plain", "/layers/tokens", {"text": SENTENCE * 2}),
    ("plain", "/attention", {"text": SENTENCE, "pair": SENTENCE}),
    ("plain", "/model/outputs", {"text": SENTENCE * 2}),
    ("sparse", "/embed_sparse", {"inputs": [SENTENCE * 2]}),
    ("sparse", "/search#sparse", {"query": SENTENCE * 2}),
    ("sparse", "/rerank", {"query": SENTENCE, "texts": [SENTENCE]}),
    ("heads", "/fill-mask", {"text": SENTENCE + " [MASK] " + SENTENCE}),
    ("heads", "/nsp", {"a": SENTENCE, "b": SENTENCE}),
    ("classifier", "/classify", {"texts": [SENTENCE * 2]}),
    ("tagger", "/ner", {"texts": [SENTENCE * 2]}),
]


@pytest.mark.parametrize(("which", "path", "body"), SMALL, ids=[r[1] for r in SMALL])
def test_a_second_concurrent_request_over_max_queued_tokens_is_429(request, monkeypatch, which, path, body):
    srv = request.getfixturevalue(which)
    monkeypatch.setattr(srv.service.limits, "max_queued_tokens", 60)
    done: list = []
    with held(srv):
        first = in_background(srv, "/embed", {"texts": [SENTENCE * 3][:1]}, done)  # ~40 tokens, queued
        queued(srv)
        r = srv.post(path.partition("#")[0], body)
        assert "max_queued_tokens is 60" in str(r.json()), r.text
        assert r.status_code == 429, r.text
    first.join(60)
    assert done == [("/embed", 200)]


# -- splitting: a small request sent after a big one finishes first -------------------------------------------

BIG = [  # 20 texts of ~30 tokens: 600 tokens, over split_tokens 64, pieces of two texts
    ("plain", "/tokens", {"texts": [SENTENCE * 2] * 20}),
    ("plain", "/embed_all", {"inputs": [SENTENCE * 2] * 20}),
    ("plain", "/similarity", {"texts": [SENTENCE * 2] * 20}),
    ("sparse", "/embed_sparse", {"inputs": [SENTENCE * 2] * 20}),
    ("sparse", "/search#sparse", {"query": [SENTENCE * 2] * 20}),
    ("sparse", "/rerank", {"query": SENTENCE, "texts": [SENTENCE] * 20}),
    ("heads", "/nsp", {"a": [SENTENCE] * 20, "b": [SENTENCE] * 20}),
    ("classifier", "/classify", {"texts": [SENTENCE * 2] * 20}),
    ("tagger", "/ner", {"texts": [SENTENCE * 2] * 20}),
]


@pytest.mark.parametrize(("which", "path", "body"), BIG, ids=[r[1] for r in BIG])
def test_a_request_over_split_tokens_runs_in_pieces_with_others_between(request, monkeypatch, which, path, body):
    srv = request.getfixturevalue(which)
    monkeypatch.setattr(srv.service.limits, "split_tokens", 64)
    done: list = []
    with held(srv):
        big = in_background(srv, path.partition("#")[0], body, done)
        queued(srv, 300)
        tokens = srv.service.batcher.accepted_tokens
        small = in_background(srv, "/embed", {"texts": ["hi"]}, done)
        queued(srv, tokens + 3)
    big.join(120)
    small.join(120)
    assert done == [("/embed", 200), (path.partition("#")[0], 200)], done  # the small one first


# -- tokenized once (issue 28) ---------------------------------------------------------------------------------


class Counting:
    """The real Rust tokenizer, counting the texts it encodes."""

    def __init__(self, inner):
        self.inner, self.texts = inner, 0

    def encode_batch(self, inputs, *args, **kwargs):
        self.texts += len(inputs)
        return self.inner.encode_batch(inputs, *args, **kwargs)

    def encode(self, *args, **kwargs):
        self.texts += 1
        return self.inner.encode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/embeddings", {"input": TEXTS}),
    ("/embed", {"texts": TEXTS}),
    ("/embed", {"inputs": TEXTS}),  # TEI's body
    ("/", {"inputs": TEXTS}),
    ("/similarity", {"texts": TEXTS}),
    ("/similarity", {"texts": TEXTS, "poolings": ["mean", "cls", "max", "mean"]}),
])
def test_each_text_is_tokenized_once_per_request(plain, monkeypatch, path, body):
    tokenizer = plain.service.encoder.tokenizer
    counting = Counting(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", counting)
    r = plain.post(path, body)
    assert r.status_code == 200, r.text
    assert counting.texts == len(TEXTS), counting.texts


# -- /tokenize and /decode are charged (row 5); duplicate key names (row 22b) ------------------------------------


def test_tokenize_and_decode_charge_the_keys_tokens(encoder, tmp_path):
    from bertkit.serve.auth import AccessPolicy, KeyStore

    (tmp_path / "keys.txt").write_text("sk-admission-bob bob tpm=40\n")
    with served(encoder, access=AccessPolicy(KeyStore(path=tmp_path / "keys.txt"))) as srv:
        auth = {"Authorization": "Bearer sk-admission-bob"}
        r = srv.post("/tokenize", {"inputs": SENTENCE + " " + SENTENCE}, headers=auth)  # 28 tokens
        assert r.status_code == 200 and len(r.json()[0]) == 28, r.text
        r = srv.post("/decode", {"ids": [[1000] * 20]}, headers=auth)  # TEI's error body: a bare message
        assert r.status_code == 429 and "has used its 40 tokens per minute" in r.json()["error"], r.text
        r = srv.post("/tokenize", {"inputs": [SENTENCE] * 4}, headers=auth)  # 60 > the whole quota
        assert r.status_code == 413 and "may use 40 tokens per minute" in r.json()["error"], r.text


def test_two_keys_with_one_name_are_refused_at_start(tmp_path):
    from bertkit.errors import OptionError
    from bertkit.serve.auth import KeyStore

    (tmp_path / "keys.txt").write_text("sk-admission-one team\nsk-admission-two team\n")
    with pytest.raises(OptionError, match="two API keys are named 'team'; give each key its own name"):
        KeyStore(path=tmp_path / "keys.txt")


def test_serve_refuses_duplicate_key_names_with_exit_2(tmp_path):
    (tmp_path / "keys.txt").write_text("sk-admission-one team\nsk-admission-two team\n")
    result = run_process("serve", "--api-keys", tmp_path / "keys.txt", "--port", "1")
    assert_user_error(result, "two API keys are named 'team'")


def test_layers_merges_repeated_poolings(plain):
    r = plain.post("/layers", {"texts": ["a", "b"], "poolings": ["mean"] * 20_000})
    assert r.status_code == 200 and r.json()["poolings"] == ["mean"], r.text[:200]
    r = plain.post("/layers", {"texts": ["a", "b"], "poolings": [f"p{i}" for i in range(8)]})
    error_of(r, 413, "max_poolings")


def test_info_reports_the_answer_bound(plain):
    info = plain.get("/info").json()
    assert info["limits"]["max_answer_values"] == 4_000_000
    assert info["limits"]["encode_batch_size"] == 32  # in process: a batch per CPU worker, as offline
    assert "max_answer_values" in info["costs"]["admission"]


def test_search_reads_the_corpus_once_per_request_not_once_per_query(plain, monkeypatch):
    """Hits without a stored text are filled from the corpus input: one read of each shard per request (it was
    one per query: 118 queries held the GIL 1.1 s, and every small request behind them waited; serve_hol)."""
    import httpx

    import bertkit.corpus

    reads = []
    real = bertkit.corpus.read_shard
    monkeypatch.setattr(bertkit.corpus, "read_shard", lambda *a, **kw: reads.append(1) or real(*a, **kw))
    r = httpx.post(plain.url + "/search", json={"query": TEXTS * 4, "k": 3}, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 12 and len(reads) == 1
    for query, hits in zip(TEXTS * 4, results):
        assert hits[0]["text"] == query and all(h["text"] in TEXTS for h in hits)


def test_nsp_tokenizes_each_pair_once_and_runs_only_the_nsp_head(heads, monkeypatch):
    """/nsp ran the pairs' texts through the tokenizer a second time on the model thread and computed the (B, T, V)
    MLM logits it threw away (serve_hol: a 1-text request waited 799 ms p99 behind the largest /nsp request)."""
    import numpy as np

    encoder = heads.service.encoder
    a, b = TEXTS, TEXTS[::-1]
    expected = encoder.next_sentence(a, b)
    counting = Counting(encoder.tokenizer.tokenizer)
    monkeypatch.setattr(encoder.tokenizer, "tokenizer", counting)
    mlm_calls = []
    hook = encoder.model.cls.predictions.register_forward_hook(lambda *_: mlm_calls.append(1))
    try:
        r = heads.post("/nsp", {"a": a, "b": b})
    finally:
        hook.remove()
    assert r.status_code == 200, r.text
    assert counting.texts == len(a) and mlm_calls == []
    np.testing.assert_allclose(r.json()["probabilities"], expected, atol=1e-6)


@pytest.mark.parametrize(("which", "path", "body", "count"), [
    ("classifier", "/classify", {"texts": TEXTS}, len(TEXTS)),
    ("classifier", "/classify", {"texts": TEXTS, "pairs": TEXTS[::-1]}, len(TEXTS)),
    ("tagger", "/ner", {"texts": TEXTS}, len(TEXTS)),
    ("heads", "/fill-mask", {"text": "Paris is the [MASK] of France.", "top_k": 3}, 1),
])
def test_head_routes_tokenize_each_text_once(request, monkeypatch, which, path, body, count):
    """/classify, /ner and /fill-mask tokenized at admission (to count and bound the request) and again on the
    model thread; now the head runs on the admitted encodings. The answers are the head's own offline ones."""
    srv = request.getfixturevalue(which)
    service = srv.service
    if path == "/classify":
        expected = [list(p) for p in service.classifier.predict(body["texts"], body.get("pairs"))]
        tokenizer = service.classifier.tokenizer
    elif path == "/ner":
        expected = service.tagger.entities(body["texts"])
        tokenizer = service.tagger.tokenizer
    else:
        expected = service.encoder.fill_mask(body["text"], top_k=3)
        tokenizer = service.encoder.tokenizer
    counting = Counting(tokenizer.tokenizer)
    monkeypatch.setattr(tokenizer, "tokenizer", counting)
    r = srv.post(path, body)
    assert r.status_code == 200, r.text
    assert counting.texts == count, counting.texts
    got = r.json()
    if path == "/classify":
        assert [[p["label"], pytest.approx(p["probability"], abs=1e-5)] for p in got["predictions"]] == expected
    elif path == "/ner":
        assert got["entities"] == expected
    else:
        assert [[[t["token"], pytest.approx(t["score"], abs=1e-5)] for t in mask] for mask in got["masks"]] \
            == [[list(t) for t in mask] for mask in expected]
