"""Task heads: plain modules over a shared body, saved under transformers' names, loaded back from leftovers."""

from __future__ import annotations

import json

import pytest
import torch

from bertkit.errors import CheckpointError, MissingHeadError, OptionError
from bertkit.heads.task import BertSequenceClassifier, BertTokenClassifier, load_task_head
from bertkit.model import Bert, load_model, model_from_state_dict, read_state_dict, save_model

IDS = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]])
MASK = (IDS != 0).long()


def hf(folder, cls_name: str):
    import transformers

    return getattr(transformers, cls_name).from_pretrained(folder, attn_implementation="eager").eval()


def test_heads_share_the_body_and_keep_transformers_names(pretraining_checkpoint):
    body, _ = load_model(pretraining_checkpoint)
    for head in (BertSequenceClassifier(body, 3, pooling="mean"), BertTokenClassifier(body, 5)):
        assert not isinstance(head, Bert) and head.bert is body.bert and head.config is body.config
        body_names = {k for k in body.state_dict() if k.startswith("bert.")}
        assert set(head.state_dict()) == body_names | {"classifier.weight", "classifier.bias"}  # no cls.*
        words = body.bert.embeddings.word_embeddings.weight
        assert head.bert.embeddings.word_embeddings.weight.data_ptr() == words.data_ptr()


def test_pooler_head_needs_the_pooler_and_a_known_pooling(pretraining_checkpoint):
    state = {k: v for k, v in read_state_dict(pretraining_checkpoint).items() if "pooler" not in k and "cls." not in k}
    body, _ = model_from_state_dict(load_model(pretraining_checkpoint)[0].config, state)
    with pytest.raises(MissingHeadError, match="pooler"):
        BertSequenceClassifier(body, 2)
    with pytest.raises(OptionError, match="pooler, cls, mean"):
        BertSequenceClassifier(body, 2, pooling="first_last_avg")
    assert BertSequenceClassifier(body, 2, pooling="cls").pooling == "cls"


@pytest.mark.parametrize("head, cls_name, kwargs", [
    (BertSequenceClassifier, "BertForSequenceClassification", {}),
    (BertTokenClassifier, "BertForTokenClassification", {}),
])
def test_saved_head_loads_in_transformers_and_back(pretraining_checkpoint, tmp_path, head, cls_name, kwargs):
    torch.manual_seed(0)
    body, _ = load_model(pretraining_checkpoint)
    model = head(body, 3, **kwargs).eval()
    labels = {"architectures": [cls_name], "id2label": {i: f"L{i}" for i in range(3)},
              "label2id": {f"L{i}": i for i in range(3)}}
    save_model(model, tmp_path, **labels)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls_name]
    with torch.no_grad():
        ours = model(IDS, MASK).logits
        theirs = hf(tmp_path, cls_name)(input_ids=IDS, attention_mask=MASK).logits
        again = load_task_head(load_model(tmp_path)[0], head, 3, **kwargs)(IDS, MASK).logits
    real = MASK.bool() if ours.ndim == 3 else slice(None)
    assert (ours[real] - theirs[real]).abs().max().item() < 1e-5
    assert torch.equal(ours, again)


def test_losses_match_transformers(pretraining_checkpoint, tmp_path):
    torch.manual_seed(0)
    body, _ = load_model(pretraining_checkpoint)
    clf = BertSequenceClassifier(body, 2).eval()
    save_model(clf, tmp_path, architectures=["BertForSequenceClassification"], id2label={0: "a", 1: "b"})
    labels = torch.tensor([1, 0])
    with torch.no_grad():
        ours = clf(IDS, MASK, labels=labels).loss
        theirs = hf(tmp_path, "BertForSequenceClassification")(input_ids=IDS, attention_mask=MASK, labels=labels).loss
    assert abs(ours.item() - theirs.item()) < 1e-5
    tagger = BertTokenClassifier(body, 4).eval()
    tags = torch.tensor([[-100, 1, 2, 3, 0, -100], [-100, 2, -100, -100, -100, -100]])
    logits = tagger(IDS, MASK).logits
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), tags.reshape(-1), ignore_index=-100)
    assert torch.allclose(tagger(IDS, MASK, labels=tags).loss, expected)


def test_checkpoint_classifier_of_the_wrong_shape_is_a_checkpoint_error(pretraining_checkpoint):
    body, _ = load_model(pretraining_checkpoint)
    body.leftover_state = {"classifier.weight": torch.zeros(4, body.config.hidden_size),
                           "classifier.bias": torch.zeros(4)}
    with pytest.raises(CheckpointError, match="id2label does not match"):
        load_task_head(body, BertTokenClassifier, 3)
    head = load_task_head(body, BertTokenClassifier, 4)
    assert torch.equal(head.classifier.weight, torch.zeros(4, body.config.hidden_size)) and not head.training
