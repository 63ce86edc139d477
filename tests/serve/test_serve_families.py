"""The server for every encoder family (issue 31): each tiny family model of tests/model/families_support.py,
served by the real app on a loopback uvicorn server in a thread, answers what Encoder answers offline.

One server per family (module-scoped), on the family's checkpoint with its masked-LM head, so /fill-mask runs
on every family; /embed, /v1/embeddings and /tokens are checked against Encoder.encode / encode_tokens.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from support import error_of, thread_server

pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

# The family builders live beside the model tests; pytest puts tests/model on sys.path only when it collects
# a test there, so a run of this file alone adds it here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from families_support import FAMILIES, SHAPE, save_family

NO_POOLER = ("distilbert", "electra", "modernbert")
SENTENCES = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.", "naïve café, 日本語"]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(family, its Encoder, a server on it): the checkpoint with its masked-LM head, loaded once."""
    from bertkit import Encoder
    from bertkit.serve import create_app

    name = request.param
    encoder = Encoder.load(save_family(name, 0, tmp_path_factory.mktemp(f"serve-{name}")), device="cpu")
    with thread_server(create_app(encoder)) as srv:
        yield name, encoder, srv


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embed_and_openai_embeddings_equal_encode(family, pooling):
    _, encoder, srv = family
    r = srv.post("/embed", {"texts": SENTENCES, "pooling": pooling})
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(np.array(body["embeddings"]), encoder.encode(SENTENCES, pooling=pooling), atol=1e-5)
    assert body["dimensions"] == SHAPE["hidden_size"]
    if pooling == "mean":  # the OpenAI route: the server's default pooling, normalized
        r = srv.post("/v1/embeddings", {"input": SENTENCES, "model": "m", "encoding_format": "float"})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]])
        np.testing.assert_allclose(got, encoder.encode(SENTENCES, normalize=True), atol=1e-5)


def test_fill_mask_with_the_familys_mask_token(family):
    _, encoder, srv = family
    text = f"Paris is the {encoder.tokenizer.mask_token} of France."
    r = srv.post("/fill-mask", {"text": text, "top_k": 3})
    assert r.status_code == 200, r.text
    (got,) = r.json()["masks"]
    (want,) = encoder.fill_mask(text, top_k=3)
    assert [p["token"] for p in got] == [t for t, _ in want]
    np.testing.assert_allclose([p["score"] for p in got], [s for _, s in want], atol=1e-5)
    assert srv.get("/info").json()["heads"]["mlm"] is True


def test_tokens_offsets_equal_encode_tokens(family):
    _, encoder, srv = family
    r = srv.post("/tokens", {"texts": SENTENCES})
    assert r.status_code == 200, r.text
    for text, res, tv in zip(SENTENCES, r.json()["results"], encoder.encode_tokens(SENTENCES)):
        assert res["tokens"] == tv.tokens
        assert [tuple(o) for o in res["offsets"]] == tv.offsets
        assert any(e > s for s, e in tv.offsets) and all(0 <= s <= e <= len(text) for s, e in tv.offsets)
        np.testing.assert_allclose(np.array(res["vectors"]), tv.vectors, atol=1e-5)


def test_pooler_answers_400_naming_what_the_model_lacks(family):
    """The masked-LM checkpoints carry no pooler; DistilBERT, ELECTRA and ModernBERT never have one."""
    name, _, srv = family
    msg = error_of(srv.post("/embed", {"texts": SENTENCES, "pooling": "pooler"}), 400)
    if name in NO_POOLER:
        label = {"distilbert": "DistilBERT", "electra": "ELECTRA", "modernbert": "ModernBERT"}[name]
        assert f"{label} has no pooler; use cls or mean" in msg, msg
    else:
        assert "needs the pooler" in msg and "use cls or mean" in msg, msg
