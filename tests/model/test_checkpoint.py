"""Every checkpoint layout the loader accepts or refuses, and saving. A folder that is found but does not fit
raises CheckpointError, never ModelNotFoundError (which means "not found")."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from model_parity import assert_close, hf_model

from bertkit.errors import CheckpointError, MissingHeadError, ModelNotFoundError
from bertkit.model import BertConfig, load_model, model_from_state_dict, read_state_dict, save_model


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
    with pytest.raises(CheckpointError, match="pooler.dense.bias has shape"):
        model_from_state_dict(config, bad)
    missing = {k: v for k, v in state.items() if "layer.1.output.dense" not in k}
    with pytest.raises(CheckpointError, match="missing 2 BERT weights"):
        model_from_state_dict(config, missing)


def test_found_folder_that_does_not_fit_is_a_checkpoint_error_not_model_not_found(pretraining_checkpoint, tmp_path):
    """Issue 13, defect 4: a wrong shape in a folder that exists is the checkpoint's fault, not "not found"."""
    shutil.copytree(pretraining_checkpoint, tmp_path / "m")
    folder = tmp_path / "m"
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] += 8  # the weights no longer fit the config
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="intermediate.dense.weight has shape") as caught:
        load_model(folder)
    assert not isinstance(caught.value, ModelNotFoundError)

    (folder / "model.safetensors").unlink()  # config.json but no weights at all
    with pytest.raises(CheckpointError, match="no weights in") as caught:
        load_model(folder)
    assert not isinstance(caught.value, ModelNotFoundError)


@pytest.mark.parametrize("key, value, message", [
    ("model_type", "gpt2", "model_type='gpt2'; bertkit loads model_type 'bert', 'roberta'"),
    ("hidden_act", "swish_plus", "hidden_act='swish_plus'"),
    ("position_embedding_type", "relative_key", "position_embedding_type='relative_key'"),
    ("num_attention_heads", 5, "not a multiple of num_attention_heads=5"),
])
def test_config_bertkit_cannot_run_is_a_checkpoint_error(tmp_path, packaged_dir, key, value, message):
    cfg = json.loads((packaged_dir / "config.json").read_text())
    cfg[key] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message) as caught:
        load_model(tmp_path)
    assert not isinstance(caught.value, ModelNotFoundError)


def test_broken_config_json_is_a_checkpoint_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_model(tmp_path)


def test_missing_folder_is_still_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")


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
