"""Sentence-BERT and SimCSE training: losses on known answers, data preparation, 2-step runs that change the
weights and round-trip through save/load in bertkit, sentence-transformers and transformers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bertkit.data import SentencePair
from bertkit.encoder import Encoder
from bertkit.errors import InputError
from bertkit.model import Bert, BertConfig
from bertkit.tokenizer import BertTokenizer
from bertkit.train.loop import TrainConfig
from bertkit.train.sbert import (
    CosineSimilarityLoss,
    MultipleNegativesRankingLoss,
    SoftmaxLoss,
    prepare,
    train_sentence_model,
)
from bertkit.train.simcse import train_simcse

TRAIN = [
    SentencePair("A man is playing a guitar.", "Someone plays an instrument.", 4.0, "ENTAILMENT"),
    SentencePair("A cat sits on a mat.", "The stock market fell.", 0.2, "NEUTRAL"),
    SentencePair("A woman slices an onion.", "A woman cuts an onion.", 4.8, "ENTAILMENT"),
    SentencePair("Two dogs play in snow.", "No dogs are playing.", 1.5, "CONTRADICTION"),
    SentencePair("A plane takes off.", "An aircraft is departing.", 4.5, "ENTAILMENT"),
    SentencePair("A child rides a horse.", "A man eats soup.", 0.0, "NEUTRAL"),
    SentencePair("The sun is shining.", "It is a sunny day.", 4.2, "ENTAILMENT"),
    SentencePair("A boy kicks a ball.", "Nobody kicks a ball.", 2.0, "CONTRADICTION"),
]
DEV = [SentencePair(p.a, p.b, p.score, line=i + 1) for i, p in enumerate(TRAIN[:6])]
TEXTS = ["A man is playing a guitar.", "Someone plays an instrument, slowly and well.", "Hi"]


@pytest.fixture()
def tiny(packaged_dir):
    """A randomly initialised 2-layer BERT with the packaged tokenizer: fast to train."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return Bert(config, pooler=True), BertTokenizer.from_dir(packaged_dir)


def config(**kw) -> TrainConfig:
    return TrainConfig(**({"max_steps": 2, "batch_size": 4, "lr": 1e-3, "checkpoint_every": None,
                           "progress": False} | kw))


def snapshot(model: Bert) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_change(before: dict[str, torch.Tensor], model: Bert) -> float:
    return max(float((model.state_dict()[k] - v).abs().max()) for k, v in before.items())


def test_losses_known_answers():
    u = torch.eye(4)
    assert float(CosineSimilarityLoss()(u, u, torch.ones(4))) == pytest.approx(0.0)
    assert float(CosineSimilarityLoss()(u, u.roll(1, 0), torch.ones(4))) == pytest.approx(1.0)  # cos 0 vs target 1
    # one-hot u = v with scale 2: the right pair scores 2, each of the 3 others 0 -> loss = log(1 + 3 e^-2)
    assert float(MultipleNegativesRankingLoss(2.0)(u, u)) == pytest.approx(math.log(1 + 3 * math.exp(-2)), rel=1e-5)
    # shifted: the right pair scores 0 and one wrong pair 2 -> loss = log(3 + e^2)
    shifted = MultipleNegativesRankingLoss(2.0)(u, u.roll(1, 0))
    assert float(shifted) == pytest.approx(math.log(3 + math.exp(2)), rel=1e-5)
    head = SoftmaxLoss(4, 3)
    torch.nn.init.zeros_(head.classifier.weight)
    torch.nn.init.zeros_(head.classifier.bias)
    uniform = head(u, u, torch.tensor([0, 1, 2, 0])).detach()
    assert float(uniform) == pytest.approx(math.log(3))  # uniform over 3 classes


def test_prepare_per_loss():
    cos = prepare(TRAIN, "cosine")
    assert [t for _, _, t in cos.examples][:3] == pytest.approx([4.0 / 4.8, 0.2 / 4.8, 1.0])  # file range -> [0, 1]
    soft = prepare(TRAIN, "softmax")
    assert soft.labels == ["CONTRADICTION", "ENTAILMENT", "NEUTRAL"] and soft.examples[3][2] == 0.0
    mnrl = prepare(TRAIN, "mnrl")  # labelled: ENTAILMENT pairs are the positives
    assert len(mnrl.examples) == 4
    by_score = prepare([SentencePair(p.a, p.b, p.score) for p in TRAIN], "mnrl")  # top fifth of the score range
    assert [a for a, _, _ in by_score.examples] == [TRAIN[0].a, TRAIN[2].a, TRAIN[4].a, TRAIN[6].a]
    with pytest.raises(InputError, match="needs a similarity score"):
        prepare([SentencePair("a", "b")], "cosine")
    with pytest.raises(InputError, match="needs a class label"):
        prepare([SentencePair("a", "b", 1.0)], "softmax")


def test_two_step_cosine_training_changes_weights_and_round_trips(tiny, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = tiny
    before = snapshot(model)
    out = tmp_path / "sbert"
    result = train_sentence_model(model, tokenizer, TRAIN, DEV, out, loss="cosine", config=config())
    assert result.steps == 2 and result.best is not None and "spearman" in result.best
    assert max_change(before, model) > 1e-4
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "modules.json",
                 "1_Pooling/config.json", "sentence_bert_config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True

    trained = Encoder.from_model(model, tokenizer, out, "cpu").encode(TEXTS, pooling="mean")
    loaded = Encoder.load(out, device="cpu").encode(TEXTS, pooling="mean")
    np.testing.assert_allclose(loaded, trained, atol=1e-6)
    st = SentenceTransformer(str(out), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(st, loaded, atol=1e-5)
    hf, tok = AutoModel.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    np.testing.assert_allclose(((hidden * mask).sum(1) / mask.sum(1)).numpy(), loaded, atol=1e-5)


@pytest.mark.parametrize("loss", ["mnrl", "softmax"])
def test_two_step_mnrl_and_softmax_training(tiny, tmp_path, loss):
    model, tokenizer = tiny
    before = snapshot(model)
    out = tmp_path / loss
    result = train_sentence_model(model, tokenizer, TRAIN, DEV, out, loss=loss, pooling="cls", config=config())
    assert result.steps == 2 and max_change(before, model) > 1e-4
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True
    np.testing.assert_allclose(Encoder.load(out).encode(TEXTS, pooling="cls"),
                               Encoder.from_model(model, tokenizer, out, "cpu").encode(TEXTS, pooling="cls"), atol=1e-6)
    if loss == "softmax":  # the classifier is not part of the model, its label names are kept beside it
        assert json.loads((out / "sbert_labels.json").read_text()) == ["CONTRADICTION", "ENTAILMENT", "NEUTRAL"]


def test_simcse_two_steps(tiny, tmp_path):
    model, tokenizer = tiny
    before = snapshot(model)
    sentences = [p.a for p in TRAIN] + [p.b for p in TRAIN]
    result = train_simcse(model, tokenizer, sentences, None, tmp_path / "simcse", config=config(batch_size=8))
    assert result.steps == 2 and max_change(before, model) > 1e-4
    assert (tmp_path / "simcse" / "modules.json").is_file()
    # SimCSE trains on 64-token windows, but the saved model keeps the tokenizer's full limit
    assert json.loads((tmp_path / "simcse" / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    with pytest.raises(InputError, match="at least 2 distinct"):
        train_simcse(model, tokenizer, ["same", "same"], None, tmp_path / "x")


def test_cli_train_sbert_on_packaged_model_loads_in_sentence_transformers(tmp_path, packaged_dir):
    from sentence_transformers import SentenceTransformer
    from typer.testing import CliRunner

    from bertkit.cli import app

    data = tmp_path / "train.tsv"
    data.write_text("".join(f"g\tf\t2012\t{i}\t{p.score}\t{p.a}\t{p.b}\n" for i, p in enumerate(TRAIN)),
                    encoding="utf-8")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["train", "sbert", "--train", str(data), "--dev", str(data), "--loss", "cosine",
                                 "--max-steps", "2", "--batch-size", "4", "--output", str(out)])
    assert r.exit_code == 0, r.output
    ours = Encoder.load(out).encode(TEXTS, pooling="mean")
    original = Encoder.load().encode(TEXTS, pooling="mean")
    assert np.abs(ours - original).max() > 1e-5  # trained
    st = SentenceTransformer(str(out), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(st, ours, atol=1e-5)
