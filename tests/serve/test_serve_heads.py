"""`bertkit serve` for models with heads, each on a real uvicorn server in a thread, on a loopback port:
a tiny random checkpoint with MLM + NSP heads (/fill-mask, /nsp), and fine-tuned-style folders (/classify, /ner).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import RANDOM_SHAPES, copy_tokenizer, error_of, thread_server

pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")


@pytest.fixture(scope="module")
def heads_model(tmp_path_factory, packaged_dir) -> Path:
    """A tiny random BERT with pooler, MLM and NSP heads and the packaged tokenizer (bertkit's own save)."""
    import torch

    from bertkit.model import Bert, BertConfig, save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("serve-heads")
    save_model(Bert(BertConfig(**RANDOM_SHAPES["small"]), pooler=True, mlm=True, nsp=True), folder)
    copy_tokenizer(packaged_dir, folder)
    return folder


@pytest.fixture(scope="module")
def heads_server(heads_model):
    from bertkit import Encoder
    from bertkit.serve import create_app

    with thread_server(create_app(Encoder.load(heads_model, device="cpu"))) as srv:
        yield srv


def task_model(folder: Path, packaged_dir: Path, arch: str, labels: list[str]) -> Path:
    """A tiny random fine-tuned-style checkpoint: BERT body + `classifier.*`, id2label, architectures."""
    import torch

    from bertkit.model import Bert, BertConfig, save_model

    torch.manual_seed(1)
    config = BertConfig(**RANDOM_SHAPES["small"])
    head = {"classifier.weight": torch.randn(len(labels), config.hidden_size),
            "classifier.bias": torch.randn(len(labels))}
    save_model(Bert(config, pooler=True), folder, extra_state=head, architectures=[arch],
               id2label={str(i): lab for i, lab in enumerate(labels)},
               label2id={lab: i for i, lab in enumerate(labels)})
    copy_tokenizer(packaged_dir, folder)
    return folder


def test_fill_mask_and_nsp_with_heads(heads_server, heads_model):
    from bertkit import Encoder

    enc = Encoder.load(heads_model, device="cpu")
    body = heads_server.post("/fill-mask", {"text": "The [MASK] sat on the [MASK].", "top_k": 3}).json()
    expected = enc.fill_mask("The [MASK] sat on the [MASK].", top_k=3)
    assert [[p["token"] for p in m] for m in body["masks"]] == [[t for t, _ in m] for m in expected]
    np.testing.assert_allclose([[p["score"] for p in m] for m in body["masks"]],
                               [[s for _, s in m] for m in expected], atol=1e-5)
    assert "has no [MASK] token" in error_of(heads_server.post("/fill-mask", {"text": "no mask"}), 400)
    error_of(heads_server.post("/fill-mask", {"text": "a [MASK]", "top_k": 0}), 422)
    probs = heads_server.post("/nsp", {"a": ["He went out.", "x"], "b": ["He bought milk.", "y"]}).json()
    np.testing.assert_allclose(probs["probabilities"],
                               enc.next_sentence(["He went out.", "x"], ["He bought milk.", "y"]), atol=1e-5)
    error_of(heads_server.post("/nsp", {"a": ["x", "y"], "b": ["z"]}), 400, "bad_shape")
    info = heads_server.get("/info").json()
    assert info["heads"]["mlm"] and info["heads"]["nsp"] and info["dimensions"] == 32


def test_embed_whiten_without_a_whitening_file_says_so(heads_server):
    error_of(heads_server.post("/embed", {"texts": ["x"], "whiten": True}), 400, "no_whitening")


def test_classify_and_ner_with_task_heads(tmp_path, packaged_dir):
    from bertkit import Encoder
    from bertkit.heads.predict import Classifier, Tagger
    from bertkit.serve import create_app

    texts = ["Angela Merkel visited Paris.", "A great film."]
    clf_dir = task_model(tmp_path / "clf", packaged_dir, "BertForSequenceClassification", ["neg", "pos"])
    with thread_server(create_app(Encoder.load(clf_dir, device="cpu"))) as srv:
        assert srv.get("/info").json()["labels"]["classification"] == ["neg", "pos"]
        preds = srv.post("/classify", {"texts": texts}).json()["predictions"]
        expected = Classifier.load(clf_dir).predict(texts)
        assert [p["label"] for p in preds] == [lab for lab, _ in expected]
        np.testing.assert_allclose([p["probability"] for p in preds], [p for _, p in expected], atol=1e-5)
        error_of(srv.post("/classify", {"texts": texts, "pairs": ["one"]}), 400, "bad_shape")
        error_of(srv.post("/ner", {"texts": texts}), 400, "no_ner_head")
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    ner_dir = task_model(tmp_path / "ner", packaged_dir, "BertForTokenClassification", tags)
    with thread_server(create_app(Encoder.load(ner_dir, device="cpu"))) as srv:
        assert srv.get("/info").json()["heads"]["ner"] is True
        got = srv.post("/ner", {"texts": texts}).json()["entities"]
        assert got == Tagger.load(ner_dir).entities(texts)
        error_of(srv.post("/classify", {"texts": texts}), 400, "no_classification_head")
