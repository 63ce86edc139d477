"""Sequence classification: it learns, saves a folder transformers' BertForSequenceClassification reproduces
(labels included), handles pairs, regression and class weights, and refuses bad input with a clear message."""

from __future__ import annotations

import json
import random
import sys

import pytest
import torch

from bertkit.data import read_examples
from bertkit.errors import InputError
from bertkit.heads.predict import Classifier
from bertkit.train.classify import class_weight_tensor, train_classifier
from bertkit.train.common import save_folder
from bertkit.train.loop import TrainConfig
from bertkit.train.pretrain import initial_model

POSITIVE = ["great", "wonderful", "superb", "lovely", "brilliant"]
NEGATIVE = ["awful", "terrible", "dreadful", "boring", "horrible"]
FILLER = ["the film was", "a truly", "this movie is", "what a", "overall quite"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good = rng.random() < 0.5
        rows.append({"text": f"{rng.choice(FILLER)} {rng.choice(POSITIVE if good else NEGATIVE)}",
                     "label": "positive" if good else "negative"})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A random 2-layer, 128-wide BERT with pooler and the packaged vocabulary, saved as a folder."""
    torch.manual_seed(0)
    model, tok = initial_model("none", "tiny", None)
    folder = tmp_path_factory.mktemp("tiny-bert")
    save_folder(model, tok, folder, architectures=["BertForPreTraining"])
    return str(folder)


def hf_logits(folder, clf: Classifier, texts, pairs=None):
    import transformers

    theirs = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    batch = clf.tokenizer(texts, pairs)
    with torch.no_grad():
        ref = theirs(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     token_type_ids=batch.token_type_ids).logits
    return theirs, ref


def test_learns_saves_and_matches_transformers(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(160, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(40, 1))
    out = tmp_path / "clf"
    r = train_classifier(train, dev, out, model=tiny_model,
                         config=TrainConfig(epochs=4, batch_size=16, lr=2e-3, progress=False))
    assert r.labels == ["negative", "positive"] and r.train_examples == 160 and r.dev_examples == 40
    assert r.dev_metrics["accuracy"] >= 90 and r.dev_metrics["macro_f1"] >= 90
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}

    clf = Classifier.load(out, device="cpu")
    texts = ["what a superb", "the film was dreadful", "a truly boring and long and slow movie of no merit"]
    assert [lab for lab, _ in clf.predict(texts[:2])] == ["positive", "negative"]
    theirs, ref = hf_logits(out, clf, texts)
    assert torch.allclose(clf.logits(texts), ref, atol=1e-4)
    assert theirs.config.id2label == {0: "negative", 1: "positive"}

    # --model pointing at this folder continues with its head (same labels) instead of a fresh one
    from bertkit.heads.task import BertSequenceClassifier
    from bertkit.train.common import load_base, task_model

    again = task_model(load_base(out)[0], BertSequenceClassifier, ["negative", "positive"])
    assert torch.equal(again.classifier.weight, clf.model.classifier.weight)


def test_pairs_with_packaged_model_match_transformers(tmp_path):
    # MRPC-format pairs (quality, id1, id2, s1, s2); the packaged model's real pooler under the head.
    rows = [("1", "A man plays a guitar.", "Someone plays a guitar."), ("0", "A man plays a guitar.", "Stocks fell."),
            ("1", "The cat sleeps.", "A cat is sleeping."), ("0", "The cat sleeps.", "It rained in Paris.")] * 3
    path = tmp_path / "pairs.txt"
    path.write_text("".join(f"{q}\t{i}\t{i + 1}\t{a}\t{b}\n" for i, (q, a, b) in enumerate(rows)), encoding="utf-8")
    out = tmp_path / "mrpc"
    r = train_classifier(path, path, out, fmt="mrpc", config=TrainConfig(max_steps=2, batch_size=4, progress=False))
    assert r.labels == ["0", "1"]
    clf = Classifier.load(out, device="cpu")
    a, b = ["A man plays a guitar.", "The cat sleeps."], ["Someone plays music.", "It rained."]
    _, ref = hf_logits(out, clf, a, b)
    assert torch.allclose(clf.logits(a, b), ref, atol=1e-4)


def test_regression_mean_pooling_and_class_weights(tmp_path, tiny_model):
    # STS-B format: genre, file, year, id, score, s1, s2 -> one output, MSE; mean pooling under the head.
    rng = random.Random(0)
    lines = []
    for i in range(48):
        w = rng.choice(POSITIVE + NEGATIVE)
        score = 5.0 if i % 2 else 0.0
        b = w if score else rng.choice([x for x in POSITIVE + NEGATIVE if x != w])
        lines.append(f"main\tf\t2012\t{i:04d}\t{score}\tit is {w}\tit is {b}\n")
    path = tmp_path / "sts.tsv"
    path.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "reg"
    r = train_classifier(path, path, out, fmt="stsb", regression=True, pooling="mean", model=tiny_model,
                         config=TrainConfig(max_steps=3, batch_size=16, progress=False))
    assert r.labels == ["score"] and set(r.dev_metrics) == {"spearman", "pearson", "mse"}
    clf = Classifier.load(out, device="cpu")
    assert clf.regression and clf.model.pooling == "mean"
    (label, value), = clf.predict(["it is great"], ["it is great"])
    assert label == "score" and isinstance(value, float)

    w = class_weight_tensor("balanced", [0, 0, 0, 1], 2)
    assert torch.allclose(w, torch.tensor([4 / 6, 4 / 2]))
    with pytest.raises(ValueError, match="need 2 positive numbers"):
        class_weight_tensor("1,2,3", [0, 1], 2)


def test_bad_inputs(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(20, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(5, 1) + [{"text": "so so", "label": "neutral"}])
    with pytest.raises(InputError, match=r"label 'neutral' \(line 6\) was not seen in training"):
        train_classifier(train, dev, tmp_path / "o", model=tiny_model, config=TrainConfig(max_steps=1, progress=False))
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\tlabel\n", encoding="utf-8")
    with pytest.raises(InputError, match="holds no examples"):
        read_examples(empty, "sst2")
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    with pytest.raises(InputError, match="single label"):
        train_classifier(one, None, tmp_path / "o", model=tiny_model, config=TrainConfig(max_steps=1, progress=False))


def test_truncation_is_reported(tmp_path, tiny_model):
    rows = sentiment_rows(16, 0) + [{"text": "great " * 300, "label": "positive"}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    r = train_classifier(train, train, tmp_path / "o", model=tiny_model, max_length=32,
                         config=TrainConfig(max_steps=1, batch_size=8, progress=False))
    assert r.truncated == {"train": 1, "dev": 1}


def test_cli_train_and_predict(tmp_path, tiny_model, capsys):
    from bertkit.cli import main

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32, 0))
    out = tmp_path / "cli"

    def run(*argv):
        sys.argv = ["bertkit", *argv]
        try:
            main()
        except SystemExit as e:
            return e.code
        return 0

    assert run("train", "classify", "--train", train, "--dev", train, "--max-steps", "2", "--batch-size", "8",
               "--model", tiny_model, "--output", str(out)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["labels"] == "negative,positive" and "accuracy" in summary
    assert run("predict", str(out), "what a lovely film") == 0
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == "what a lovely film" and row["label"] in ("negative", "positive")
    assert run("predict", str(out), train) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 32 and "predict: accuracy:" in captured.err
    assert run("predict", str(tmp_path / "missing"), "text") == 2
