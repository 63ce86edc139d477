"""The client libraries people already use, unchanged but for the URL, against a real `bertkit serve`.

The code run is the clients guide (docs/how-to/clients.md) itself (its Python blocks and its curl lines), so
the README cannot drift from what works. Every client must stay on loopback: any other connection or name
lookup from this process fails the test.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import serve_process, wait_ready

pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

README_URL = "http://127.0.0.1:8000"
SECTION = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "clients.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, re.DOTALL)
PREAMBLE, CLIENT_BLOCKS = BLOCKS[0], BLOCKS[1:]
CLIENTS = {  # the first line of each block names the client; the module it needs
    "huggingface_hub": "huggingface_hub",
    "langchain-huggingface < 1.2.2": "langchain_huggingface",
    "langchain-huggingface >= 1.2.2": "langchain_huggingface",
    "OpenAI's API": "langchain_openai",
    "LlamaIndex": "llama_index.embeddings.text_embeddings_inference",
}


def client_of(block: str) -> str:
    first = block.splitlines()[0]
    return next(name for name in CLIENTS if name in first)


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """`bertkit serve` with its documented defaults (--max-inputs 256: OpenAIEmbeddings' chunk_size)."""
    with serve_process(tmp_path_factory.mktemp("tei-serve-log"), "--log-level", "warning") as server:
        yield server


@pytest.fixture(scope="module")
def server(server_process, encoder):
    wait_ready(server_process.url, server_process.proc)
    return server_process


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail on any connection or name lookup from this process that is not loopback (clients must not phone
    home), and let huggingface_hub reach loopback even where the environment sets HF_HUB_OFFLINE=1."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def is_loopback(host) -> bool:
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            raise AssertionError(f"a client tried to reach {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if not is_loopback(host.decode() if isinstance(host, bytes) else host):
            raise AssertionError(f"a client tried to look up {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_readme_lists_every_client():
    assert sorted(client_of(b) for b in CLIENT_BLOCKS) == sorted(CLIENTS)
    assert all(README_URL in b for b in CLIENT_BLOCKS)


@pytest.mark.parametrize("block", CLIENT_BLOCKS, ids=client_of)
def test_readme_client_block_gets_encode_vectors(server, encoder, loopback_only, block):
    pytest.importorskip(CLIENTS[client_of(block)], reason="the test extra is not installed")
    namespace: dict = {}
    exec(PREAMBLE, namespace)  # noqa: S102 - README's own code, the point of the test (texts = [...])
    exec(block.replace(README_URL, server.url), namespace)  # noqa: S102
    expected = encoder.encode(namespace["texts"], normalize=True)
    np.testing.assert_allclose(np.asarray(namespace["vectors"], dtype=np.float64), expected, atol=1e-5)


def test_inference_client_one_text_and_similarity(server, encoder, loopback_only):
    from huggingface_hub import InferenceClient

    texts = ["A man plays guitar.", "Someone plays music.", "Stocks fell."]
    client = InferenceClient(model=server.url)
    v = encoder.encode(texts, normalize=True)
    np.testing.assert_allclose(client.feature_extraction(texts[0]), v[:1], atol=1e-5)
    np.testing.assert_allclose(client.sentence_similarity(texts[0], other_sentences=texts[1:]), v[1:] @ v[0], atol=1e-5)
    raw = client.feature_extraction(texts, normalize=False, truncate=True, truncation_direction="right")
    np.testing.assert_allclose(raw, encoder.encode(texts), atol=1e-5)


def test_llamaindex_query_and_async(server, encoder, loopback_only):
    import asyncio

    pytest.importorskip("llama_index.embeddings.text_embeddings_inference", reason="the test extra is not installed")
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    model = TextEmbeddingsInference(model_name="all-MiniLM-L6-v2", base_url=server.url)
    np.testing.assert_allclose(model.get_query_embedding("A man plays guitar."),
                               encoder.encode("A man plays guitar.", normalize=True)[0], atol=1e-5)
    got = asyncio.run(model.aget_text_embedding_batch(["a", "b"]))
    np.testing.assert_allclose(got, encoder.encode(["a", "b"], normalize=True), atol=1e-5)


def test_readme_tei_curl_lines(server):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    lines = [line for line in SECTION.splitlines() if line.startswith("curl ")]
    assert len(lines) == 5
    port = server.url.rsplit(":", 1)[1]
    for line in lines:
        out = subprocess.run(["bash", "-c", line.replace("localhost:8000", f"127.0.0.1:{port}")],
                             check=False, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (line, out.stderr)
        body = json.loads(out.stdout)
        assert isinstance(body, list) and body, (line, body)  # TEI answers bare lists; errors are objects
