"""TEI's API (text-embeddings-inference) beside bertkit's: shapes, options and TEI-shaped error answers.

One in-process server (the app under uvicorn in a thread: no second model load). The real client libraries
against a real `bertkit serve`: test_tei_clients.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from support import error_of, thread_server

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

MAX_INPUTS, MAX_QUEUED = 8, 1000
TEXTS = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply today."]
LONG = " ".join(["word"] * 400)  # > 256 tokens


@pytest.fixture(scope="module")
def server(encoder):
    from bertkit.serve import Limits, create_app

    app = create_app(encoder, Limits(max_inputs=MAX_INPUTS, max_queued_tokens=MAX_QUEUED, max_wait_ms=10))
    app.state.service.prompts = {"query": "query: ", "plain": ""}  # as config_sentence_transformers.json gives
    with thread_server(app) as srv:
        yield srv


def tei_error(r, status: int, error_type: str) -> str:
    """The message of a TEI-shaped error answer: exactly {"error", "error_type"}."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    return body["error"]


# ----------------------------------------------------------------------------------------------------------
# Shapes and options


@pytest.mark.parametrize("path", ["/embed", "/"])
def test_embed_answers_a_list_of_vectors(server, encoder, path):
    expected = encoder.encode(TEXTS, normalize=True)
    np.testing.assert_allclose(np.array(server.post(path, {"inputs": TEXTS}).json()), expected, atol=1e-5)
    one = server.post(path, {"inputs": TEXTS[0]}).json()  # one string: still a list of one vector
    np.testing.assert_allclose(np.array(one), expected[:1], atol=1e-5)
    raw = server.post(path, {"inputs": TEXTS, "normalize": False, "truncate": True}).json()
    np.testing.assert_allclose(np.array(raw), encoder.encode(TEXTS), atol=1e-5)


def test_bertkit_body_on_the_same_route_keeps_its_shape(server, encoder):
    body = server.post("/embed", {"texts": TEXTS, "pooling": "cls"}).json()
    np.testing.assert_allclose(np.array(body["embeddings"]), encoder.encode(TEXTS, pooling="cls"), atol=1e-5)
    assert body["dimensions"] == 384
    assert error_of(server.post("/embed", {"texts": []}), 400, "empty_input")  # bertkit's error body


def test_dimensions_keep_the_first_n_and_renormalise(server, encoder):
    full = encoder.encode(TEXTS)
    cut = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(server.post("/embed", {"inputs": TEXTS, "dimensions": 64}).json()), cut,
                               atol=1e-5)
    raw = server.post("/embed", {"inputs": TEXTS, "dimensions": 64, "normalize": False}).json()
    np.testing.assert_allclose(np.array(raw), full[:, :64], atol=1e-5)


def test_truncation_direction_left_keeps_the_end(server, encoder):
    text = "alpha " * 300 + "omega " * 300
    left = server.post("/embed", {"inputs": text, "truncation_direction": "left"}).json()[0]
    np.testing.assert_allclose(left, encoder.encode(" ".join(["omega"] * 254), normalize=True)[0], atol=1e-5)
    right = server.post("/embed", {"inputs": text, "truncation_direction": "Right"}).json()[0]
    np.testing.assert_allclose(right, encoder.encode(text, normalize=True)[0], atol=1e-5)


def test_prompt_name_puts_the_models_prompt_in_front(server, encoder):
    got = server.post("/embed", {"inputs": TEXTS[:1], "prompt_name": "query"}).json()
    np.testing.assert_allclose(got, encoder.encode(["query: " + TEXTS[0]], normalize=True), atol=1e-5)
    msg = tei_error(server.post("/embed", {"inputs": "x", "prompt_name": "passage"}), 413, "Validation")
    assert "'passage'" in msg and "plain, query" in msg


def test_similarity_at_the_base_url(server, encoder):
    body = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}, "parameters": {"truncate": True}}
    v = encoder.encode(TEXTS, normalize=True)
    np.testing.assert_allclose(server.post("/", body).json(), v[1:] @ v[0], atol=1e-5)


def test_embed_all_gives_every_token_vector(server, encoder):
    got = server.post("/embed_all", {"inputs": ["Angela Merkel visited Paris.", "b"]}).json()
    for g, tv in zip(got, encoder.encode_tokens(["Angela Merkel visited Paris.", "b"])):
        np.testing.assert_allclose(np.array(g), tv.vectors, atol=1e-5)


def test_tokenize_reports_byte_spans_and_decode_inverts(server):
    (tokens,) = server.post("/tokenize", {"inputs": "Angela Merkel café ok"}).json()
    assert tokens[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert [t["text"] for t in tokens[1:4]] == ["Angela", "Mer", "kel"]  # the input's own spans
    cafe, ok = tokens[-3], tokens[-2]
    assert (cafe["text"], cafe["start"], cafe["stop"]) == ("café", 14, 19)  # é is two bytes
    assert (ok["start"], ok["stop"]) == (20, 22)
    bare = server.post("/tokenize", {"inputs": ["a b", "c"], "add_special_tokens": False}).json()
    assert [[t["text"] for t in row] for row in bare] == [["a", "b"], ["c"]]
    ids = [t["id"] for t in tokens]
    assert server.post("/decode", {"ids": ids}).json() == ["angela merkel cafe ok"]
    assert server.post("/decode", {"ids": [ids, ids[:2]], "skip_special_tokens": False}).json()[1] == "[CLS] angela"
    long = server.post("/tokenize", {"inputs": LONG}).json()[0]  # never truncated
    assert len(long) == 402


def test_info_has_the_fields_tei_clients_read(server):
    info = server.get("/info").json()
    assert info["model_id"] == "all-MiniLM-L6-v2" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 256 and info["max_client_batch_size"] == MAX_INPUTS
    assert info["model_dtype"] == "float32" and info["auto_truncate"] is True
    assert info["dimensions"] == 384  # bertkit's own fields are still there
    assert server.get("/health").status_code == 200


# ----------------------------------------------------------------------------------------------------------
# TEI-shaped errors: TEI's body and statuses, and the server keeps serving


@pytest.mark.parametrize(
    "path,body,status,error_type,fragment",
    [
        ("/embed", {"inputs": ["short", LONG], "truncate": False}, 413, "Validation", "text 1 has more than 256"),
        ("/", {"inputs": LONG, "truncate": False}, 413, "Validation", "more than 256 tokens"),
        ("/embed_all", {"inputs": LONG, "truncate": False}, 413, "Validation", "more than 256 tokens"),
        ("/embed", {"inputs": ["x"] * (MAX_INPUTS + 1)}, 413, "Validation", "max_inputs is 8"),
        ("/tokenize", {"inputs": ["x"] * (MAX_INPUTS + 1)}, 413, "Validation", "max_inputs is 8"),
        ("/decode", {"ids": [[101]] * (MAX_INPUTS + 1)}, 413, "Validation", "max_inputs is 8"),
        ("/embed", {"inputs": []}, 400, "Empty", "no inputs given"),
        ("/", {"inputs": []}, 400, "Empty", "no inputs given"),
        ("/decode", {"ids": []}, 400, "Empty", "no ids given"),
        ("/embed", {"inputs": ""}, 413, "Validation", "input 0 is empty"),
        ("/embed", {"inputs": ["ok", "  "]}, 413, "Validation", "input 1 is empty"),
        ("/decode", {"ids": [10**9]}, 413, "Validation", "token ids in 0..30521"),
        ("/embed", {"inputs": 5}, 422, "Validation", "inputs:"),
        ("/embed", {"inputs": ["x", 3]}, 422, "Validation", "inputs"),
        ("/embed", {"inputs": "x", "normalize": "yes"}, 422, "Validation", "normalize:"),
        ("/embed", {"inputs": "x", "truncation_direction": "up"}, 422, "Validation", "truncation_direction:"),
        ("/embed", {"inputs": "x", "dimensions": 0}, 413, "Validation", "between 1 and 384"),  # issue 29, 21
        ("/embed", {"inputs": "x", "dimensions": -1}, 413, "Validation", "between 1 and 384"),
        ("/embed", {"inputs": "x", "dimensions": 1000}, 413, "Validation", "between 1 and 384"),
        ("/embed", {"inputs": "x", "pooling": "cls"}, 422, "Validation", "mixes TEI's `inputs` with bertkit's pooling"),
        # issue 29 row 12: every bertkit /embed field beside `inputs` is refused, not dropped (dtype: float32)
        ("/embed", {"inputs": "hello", "dtype": "int8"}, 422, "Validation", "with bertkit's dtype"),
        ("/embed", {"inputs": "x", "texts": ["x"]}, 422, "Validation", "bertkit's texts"),
        ("/embed", {"inputs": "x", "whiten": True, "template": "[MASK] {text}"}, 422, "Validation",
         "template, whiten"),
        ("/", {"inputs": "x", "dtype": "ubinary"}, 422, "Validation", "bertkit's dtype"),
        ("/", {"texts": ["x"]}, 422, "Validation", "inputs: Field required"),
        ("/", {"inputs": {"source_sentence": "x"}}, 422, "Validation", "sentences"),
        ("/tokenize", {}, 422, "Validation", "inputs: Field required"),
    ],
)
def test_tei_errors(server, path, body, status, error_type, fragment):
    assert fragment in tei_error(server.post(path, body), status, error_type)
    assert server.post("/embed", {"inputs": "still serving"}).status_code == 200


@pytest.mark.parametrize("path", ["/", "/embed_all", "/tokenize", "/decode"])
def test_malformed_json_on_tei_routes(server, path):
    for raw in (b"{bad", b"", b"[1, 2]"):
        r = httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"}, timeout=30)
        tei_error(r, 422, "Validation")


def test_queue_full_is_429_overloaded(server):
    texts = ["w " * 300] * 3  # 3 x 256 = 768 tokens: one fits the 1000-token queue, two do not
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: server.post("/embed", {"inputs": texts}), range(4)))
    statuses = sorted(r.status_code for r in results)
    assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}, statuses
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "max_queued_tokens" in tei_error(refused, 429, "Overloaded")
