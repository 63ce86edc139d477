"""Compact vectors over HTTP (serve/compact.py): `dtype` / `dimensions` on /embed, bertkit's `dtype` extension
of /v1/embeddings, an unmodified OpenAI client's answers unchanged, and 400s naming the field; plus `serve
--calibration` refusing a bad file before the model loads."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from support import assert_user_error, error_of, free_port, run_process, thread_server

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

SENTENCES = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply today."]
CALIBRATION_TEXTS = SENTENCES + ["The cat sat on the mat.", "Oil prices rose again.", "Rain is expected tomorrow.",
                                 "He scored twice in the final.", "Quantum computers use qubits."]


@pytest.fixture(scope="module")
def cal(encoder):
    from bertkit.vectors.compact import calibrate

    return calibrate(encoder, CALIBRATION_TEXTS, normalize=True)


@pytest.fixture(scope="module")
def server(encoder, cal):
    from bertkit.serve import create_app

    app = create_app(encoder)
    app.state.service.calibration = cal
    with thread_server(app) as srv:
        yield srv


def test_embed_dtypes_and_dimensions(server, encoder, cal):
    from bertkit.vectors.compact import quantize, truncate

    floats = encoder.encode(SENTENCES, normalize=True)
    for dtype in ("int8", "uint8", "binary", "ubinary"):
        r = server.post("/embed", {"texts": SENTENCES, "normalize": True, "dtype": dtype})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dtype"] == dtype
        np.testing.assert_array_equal(np.array(body["embeddings"]), quantize(floats, dtype, cal))
    r = server.post("/embed", {"texts": SENTENCES, "dimensions": 32, "dtype": "ubinary"})
    np.testing.assert_array_equal(np.array(r.json()["embeddings"]), np.packbits(truncate(floats, 32) > 0, axis=-1))
    r = server.post("/embed", {"texts": SENTENCES[:1], "normalize": True})
    assert r.json()["dtype"] == "float32" and r.json()["dimensions"] == 384


def test_openai_client_answers_are_unchanged_and_the_extension_is_opt_in(server, encoder, cal):
    openai = pytest.importorskip("openai", reason="the test extra is not installed (openai)")
    from bertkit.vectors.compact import quantize

    expected = encoder.encode(SENTENCES, normalize=True)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    resp = client.embeddings.create(input=SENTENCES, model="m")  # the SDK asks for base64 float32
    np.testing.assert_allclose(np.array([d.embedding for d in resp.data]), expected, atol=1e-5)
    resp = client.embeddings.create(input=SENTENCES, model="m", encoding_format="float", dimensions=64)
    cut = expected[:, :64] / np.linalg.norm(expected[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(np.array([d.embedding for d in resp.data]), cut, atol=1e-5)

    plain = server.post("/v1/embeddings", {"input": SENTENCES, "encoding_format": "base64"}).json()
    assert "dtype" not in plain  # the answer OpenAI clients get is as before
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in plain["data"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    r = server.post("/v1/embeddings", {"input": SENTENCES, "dtype": "int8"}).json()
    assert r["dtype"] == "int8"
    np.testing.assert_array_equal(np.array([d["embedding"] for d in r["data"]]), quantize(expected, "int8", cal))
    r = server.post("/v1/embeddings", {"input": SENTENCES, "dtype": "ubinary", "encoding_format": "base64"}).json()
    packed = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), np.uint8) for d in r["data"]])
    np.testing.assert_array_equal(packed, np.packbits(expected > 0, axis=-1))


@pytest.mark.parametrize("path, body, param, fragment", [
    ("/embed", {"dtype": "int4"}, "dtype", "dtype 'int4' is unknown"),
    ("/embed", {"dimensions": 0}, "dimensions", "between 1 and 384"),
    ("/embed", {"dimensions": -2}, "dimensions", "between 1 and 384"),
    ("/embed", {"dimensions": 385}, "dimensions", "between 1 and 384"),
    ("/embed", {"dtype": "int8"}, "dtype", "unit-length"),  # the calibration was fit on normalised vectors
    ("/embed", {"dtype": "int8", "normalize": True, "dimensions": 64}, "dtype", "384 dimensions"),
    ("/v1/embeddings", {"dtype": "fp8"}, "dtype", "dtype 'fp8' is unknown"),
    ("/v1/embeddings", {"dimensions": 0}, "dimensions", "between 1 and 384"),
])
def test_bad_compact_options_are_400s_naming_the_field(server, path, body, param, fragment):
    key = "texts" if path == "/embed" else "input"
    r = server.post(path, {key: SENTENCES[:1], **body})
    assert fragment in error_of(r, 400)
    assert r.json()["error"]["param"] == param


def test_int8_without_a_calibration_and_a_bad_calibration_file(encoder, tmp_path):
    from bertkit.serve import create_app

    with thread_server(create_app(encoder)) as srv:
        r = srv.post("/embed", {"texts": ["a"], "dtype": "uint8"})
        assert "needs a calibration" in error_of(r, 400, "no_calibration") and r.json()["error"]["param"] == "dtype"
    (tmp_path / "bad.npz").write_bytes(b"nope")
    assert_user_error(run_process("serve", "--calibration", tmp_path / "bad.npz", "--port", str(free_port())),
                      "not a bertkit calibration file")


@pytest.mark.parametrize("dimensions", [0, -1, 385])
def test_bad_dimensions_get_one_answer_on_every_route(server, dimensions):
    """One check (VectorSpec), one message, one code, on bertkit's /embed, /v1/embeddings and TEI's /embed.
    The status is 400 in bertkit's and OpenAI's dialect; TEI's answers every refused input 413 `Validation`
    (README)."""
    bertkit = server.post("/embed", {"texts": ["x"], "dimensions": dimensions})
    openai = server.post("/v1/embeddings", {"input": ["x"], "dimensions": dimensions})
    tei = server.post("/embed", {"inputs": ["x"], "dimensions": dimensions})  # was 422 (0, -1), 413 (385)
    message = error_of(bertkit, 400, "invalid_dimensions")
    assert message.startswith("dimensions must be between 1 and 384 (the vectors' size)"), message
    assert error_of(openai, 400, "invalid_dimensions") == message
    assert bertkit.json()["error"]["param"] == openai.json()["error"]["param"] == "dimensions"
    assert tei.status_code == 413 and tei.json() == {"error": message, "error_type": "Validation"}
