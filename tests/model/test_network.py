"""Numerical parity with transformers, and every checkpoint layout the loader accepts or refuses."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bertkit.errors import MissingHeadError, ModelNotFoundError
from bertkit.model import (
    Bert,
    BertConfig,
    describe,
    load_model,
    model_from_state_dict,
    read_state_dict,
    save_model,
)
from bertkit.tokenizer import BertTokenizer

TEXTS = [
    "Hi.",
    "A considerably longer sentence, with punctuation; numbers like 3.14 and words such as unbelievably.",
    "Short one",
    " ".join(["long"] * 90),
]
PAIRS = ["Is this the second segment?", "Yes.", "A pair's second text that is somewhat longer than most.", "no"]
ATOL = 1e-4


def hf_model(folder, cls_name: str):
    import transformers

    return getattr(transformers, cls_name).from_pretrained(folder, attn_implementation="eager").eval()


def batches(folder):
    tok = BertTokenizer.from_dir(folder)
    yield "single", tok(TEXTS)
    yield "pairs", tok(TEXTS, PAIRS)


def assert_close(ours, theirs, what, mask=None):
    """Max abs error below 1e-4. With `mask` (B, T), only real-token positions count: the vectors computed at
    padding positions are never used (every pooling excludes them) and differ by up to ~2e-4 between
    attention implementations, while real tokens agree to ~5e-6."""
    assert ours.shape == theirs.shape, what
    diff = ours - theirs
    err = (diff[mask.bool()] if mask is not None else diff).abs().max().item()
    assert err < ATOL, f"{what}: max abs error {err:.2e}"


def compare_outputs(model: Bert, hf, batch, heads: bool):
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids)
    with torch.no_grad():
        ours = model(**kwargs, output_hidden_states=True, output_attentions=True)
        theirs = hf(**kwargs, output_hidden_states=True, output_attentions=True)
    mask = batch.attention_mask
    body = theirs if not heads else None
    if heads:  # BertForPreTraining exposes the body's outputs under other names; run the body for them
        body = hf.bert(**kwargs, output_hidden_states=True, output_attentions=True)
        assert_close(ours.mlm_logits, theirs.prediction_logits, "mlm_logits", mask)
        assert_close(ours.nsp_logits, theirs.seq_relationship_logits, "nsp_logits")
    assert_close(ours.last_hidden_state, body.last_hidden_state, "last_hidden_state", mask)
    assert_close(ours.pooler_output, body.pooler_output, "pooler_output")
    assert len(ours.hidden_states) == len(body.hidden_states) == model.config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(ours.hidden_states, body.hidden_states)):
        assert_close(a, b, f"hidden_states[{i}]", mask)
    assert len(ours.attentions) == len(body.attentions) == model.config.num_hidden_layers
    for i, (a, b) in enumerate(zip(ours.attentions, body.attentions)):
        assert_close(a, b, f"attentions[{i}]")


def test_packaged_model_matches_transformers(packaged_dir):
    model, folder = load_model(packaged_dir)
    assert model.has_pooler and not model.has_mlm and not model.has_nsp
    hf = hf_model(folder, "BertModel")
    for name, batch in batches(folder):
        assert batch.attention_mask.min() == 0, "the batch must mix lengths so padding is exercised"
        compare_outputs(model, hf, batch, heads=False)


def test_random_pretraining_checkpoints_match_transformers(pretraining_checkpoint):
    model, folder = load_model(pretraining_checkpoint)
    assert model.has_pooler and model.has_mlm and model.has_nsp
    hf = hf_model(folder, "BertForPreTraining")
    for name, batch in batches(folder):
        compare_outputs(model, hf, batch, heads=True)


def test_sdpa_path_equals_explicit_attention_path(pretraining_checkpoint):
    model, folder = load_model(pretraining_checkpoint)
    batch = BertTokenizer.from_dir(folder)(TEXTS, PAIRS)
    with torch.no_grad():
        fast = model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        slow = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, output_attentions=True)
    assert_close(fast.last_hidden_state, slow.last_hidden_state, "sdpa vs explicit", batch.attention_mask)


def test_pytorch_bin_and_unprefixed_and_gamma_beta_keys_load_the_same(pretraining_checkpoint, tmp_path):
    reference, _ = load_model(pretraining_checkpoint)
    state = read_state_dict(pretraining_checkpoint)
    # Old TF-era naming, no `bert.` prefix, saved as pytorch_model.bin.
    renamed = {}
    for k, v in state.items():
        k = k.removeprefix("bert.")
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[k] = v
    shutil.copy(pretraining_checkpoint / "config.json", tmp_path / "config.json")
    torch.save(renamed, tmp_path / "pytorch_model.bin")
    model, _ = load_model(tmp_path)
    assert model.has_mlm and model.has_nsp
    for (n1, p1), (n2, p2) in zip(reference.state_dict().items(), model.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_checkpoint_without_heads_has_them_absent_not_random(pretraining_checkpoint):
    state = {k: v for k, v in read_state_dict(pretraining_checkpoint).items() if not k.startswith("cls.")}
    config = BertConfig.from_file(pretraining_checkpoint / "config.json")
    model, leftover = model_from_state_dict(config, state)
    assert model.has_pooler and not model.has_mlm and not model.has_nsp and model.cls is None
    assert leftover == {}
    out = model(torch.tensor([[101, 7592, 102]]))
    assert out.mlm_logits is None and out.nsp_logits is None
    with pytest.raises(MissingHeadError, match="masked-LM head.*pretrain"):
        model.require("mlm", "fill-mask")


def test_unused_entries_are_returned_for_task_heads(pretraining_checkpoint):
    state = dict(read_state_dict(pretraining_checkpoint))
    state["classifier.weight"] = torch.zeros(3, 4)
    config = BertConfig.from_file(pretraining_checkpoint / "config.json")
    _, leftover = model_from_state_dict(config, state)
    assert list(leftover) == ["classifier.weight"]


def test_shape_mismatch_and_missing_weights_are_clear_errors(pretraining_checkpoint):
    config = BertConfig.from_file(pretraining_checkpoint / "config.json")
    state = dict(read_state_dict(pretraining_checkpoint))
    bad = dict(state, **{"bert.pooler.dense.bias": torch.zeros(7)})
    with pytest.raises(ModelNotFoundError, match="pooler.dense.bias has shape"):
        model_from_state_dict(config, bad)
    missing = {k: v for k, v in state.items() if "layer.1.output.dense" not in k}
    with pytest.raises(ModelNotFoundError, match="missing 2 BERT weights"):
        model_from_state_dict(config, missing)


def test_save_round_trip_loads_in_transformers(pretraining_checkpoint, tmp_path):
    model, _ = load_model(pretraining_checkpoint)
    save_model(model, tmp_path, architectures=["BertForPreTraining"])
    again, _ = load_model(tmp_path)
    hf = hf_model(tmp_path, "BertForPreTraining")
    ids = torch.tensor([[101, 2023, 2003, 103, 102]])
    with torch.no_grad():
        assert_close(again(ids).mlm_logits, hf(ids).prediction_logits, "mlm after save")
        assert_close(model(ids).nsp_logits, hf(ids).seq_relationship_logits, "nsp after save")
    assert json.loads((tmp_path / "config.json").read_text())["bertkit_config_version"] == 1


def test_non_bert_config_is_refused(tmp_path, packaged_dir):
    cfg = json.loads((packaged_dir / "config.json").read_text())
    cfg["model_type"] = "roberta"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelNotFoundError, match="model_type='roberta'"):
        load_model(tmp_path)


def test_describe_counts_every_parameter_once(pretraining_checkpoint):
    model, _ = load_model(pretraining_checkpoint)
    parts = describe(model)
    assert [p.name for p in parts][-2:] == ["cls.predictions", "cls.seq_relationship"]
    assert sum(p.count for p in parts) == sum(p.numel() for p in model.parameters())


def test_packaged_model_parameter_count(packaged_dir):
    model, _ = load_model(packaged_dir)
    # all-MiniLM-L6-v2: 22,713,216 parameters including the pooler (the published 22.7M)
    assert sum(p.count for p in describe(model)) == 22_713_216
