"""`train_cross_encoder`: a tiny cross-encoder trained by bertkit loads in sentence-transformers' CrossEncoder and
transformers' BertForSequenceClassification with the same scores; score scaling; bad training files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ce_support import PAIRS, train_tiny_cross_encoder, write_pairs

from bertkit.errors import InputError, OptionError
from bertkit.heads.rerank import CrossEncoder
from bertkit.train.cross_encoder import read_pairs, scaler

LONG = ("a very long passage about many different things " * 80).strip()
CHECK = [(a, b) for a, b, _ in PAIRS[:6]] + [("what is this long passage about?", LONG)]


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory):
    return train_tiny_cross_encoder(tmp_path_factory.mktemp("ce"))


def test_saved_cross_encoder_gives_the_same_scores_in_sentence_transformers(ce_dir):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    ours = CrossEncoder.load(ce_dir, device="cpu")
    scores = ours.predict(CHECK)
    assert ours.truncated == [6]  # the long pair was cut (longest first), as transformers' tokenizer cuts it
    theirs = STCrossEncoder(str(ce_dir), device="cpu").predict(CHECK, show_progress_bar=False)
    np.testing.assert_allclose(scores, theirs, atol=1e-5)
    assert 0 < scores.min() and scores.max() < 1  # probabilities: ST's default Sigmoid on one label

    config = json.loads((ce_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["id2label"] == {"0": "LABEL_0"}
    assert config["sentence_transformers"]["activation_fn"].endswith("Sigmoid")
    assert config["bertkit_score_range"] == [0.0, 4.6]


def test_transformers_classifier_gives_the_same_logits(ce_dir):
    import transformers

    hf = transformers.BertForSequenceClassification.from_pretrained(str(ce_dir)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(ce_dir))
    batch = tok([a for a, _ in CHECK], [b for _, b in CHECK], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        logits = hf(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(CrossEncoder.load(ce_dir, device="cpu").predict(CHECK, raw=True), logits, atol=1e-5)


def test_scores_are_scaled_to_zero_one(tmp_path):
    assert scaler([0.0, 2.5, 5.0], None) == (0.0, 5.0)
    assert scaler([0.0, 1.0, 1.0], None) == (0.0, 1.0)  # 0/1 labels stay as they are
    assert scaler([3.0], (1.0, 5.0)) == (1.0, 5.0)
    with pytest.raises(OptionError, match="score range 2.0..2.0 is empty"):
        scaler([2.0, 2.0], None)
    pairs = read_pairs(write_pairs(tmp_path / "p.tsv"))
    assert pairs[0].text == PAIRS[0][0] and pairs[0].pair == PAIRS[0][1] and pairs[0].label == pytest.approx(4.4)


def test_training_files_must_hold_scored_pairs(tmp_path):
    (tmp_path / "single.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    with pytest.raises(InputError, match="single text; a cross-encoder trains on pairs"):
        read_pairs(tmp_path / "single.tsv")
    (tmp_path / "nli.jsonl").write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": "maybe"}) + "\n")
    with pytest.raises(InputError, match="label 'maybe' is not a score or a 0/1 label"):
        read_pairs(tmp_path / "nli.jsonl")
