"""Reading and writing weights: one explicit map from our parameter names to Hugging Face checkpoint names,
with count and shape checks, and `load_model`, which finds a folder (locate.py) and loads it.

A folder that is found but does not fit (missing tensors, wrong shapes, no weights file, a config bertkit
cannot run) raises CheckpointError; a folder that is not found raises ModelNotFoundError (locate.py).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from torch import nn

from bertkit.errors import CheckpointError
from bertkit.model.config import BertConfig
from bertkit.model.locate import resolve_model_dir, transformer_dir
from bertkit.model.network import Bert

log = logging.getLogger(__name__)

LAYER_PARTS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


def checkpoint_key_map(config: BertConfig, pooler: bool, mlm: bool, nsp: bool) -> dict[str, str]:
    """Our parameter name -> the name in a BertForPreTraining checkpoint (after `normalize_key`)."""
    names = [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
    ]
    for i in range(config.num_hidden_layers):
        for part in LAYER_PARTS:
            names += [f"bert.encoder.layer.{i}.{part}.weight", f"bert.encoder.layer.{i}.{part}.bias"]
    if pooler:
        names += ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    if mlm:
        # cls.predictions.decoder.weight is tied to the word embeddings and not loaded separately.
        for part in ("transform.dense", "transform.LayerNorm"):
            names += [f"cls.predictions.{part}.weight", f"cls.predictions.{part}.bias"]
        names += ["cls.predictions.bias"]
    if nsp:
        names += ["cls.seq_relationship.weight", "cls.seq_relationship.bias"]
    return {n: n for n in names}


# Checkpoint keys that carry no weights of ours, or duplicate one we already load.
IGNORED_KEYS = re.compile(r"^(bert\.embeddings\.position_ids|cls\.predictions\.decoder\.(weight|bias))$")


def normalize_key(key: str) -> str:
    """Bring a checkpoint key to BertForPreTraining naming: add the `bert.` prefix a bare BertModel lacks,
    and rename the TF-era LayerNorm `gamma`/`beta` to `weight`/`bias`."""
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    return key


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (single or sharded) or pytorch_model.bin (read with weights_only=True)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if (folder / "model.safetensors.index.json").is_file():
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(folder / shard))
        return state
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(
        f"no weights in {folder}: expected model.safetensors or pytorch_model.bin. "
        "Point --model at a Hugging Face BERT folder (config.json + weights + tokenizer files)."
    )


def model_from_state_dict(config: BertConfig, state: dict[str, torch.Tensor]) -> tuple[Bert, dict[str, torch.Tensor]]:
    """Build a Bert with exactly the parts present in `state` and load them.

    Returns the model and the checkpoint entries it did not use (e.g. a classifier head), so that task
    heads can take theirs.
    """
    state = {normalize_key(k): v for k, v in state.items()}
    pooler = "bert.pooler.dense.weight" in state
    mlm = "cls.predictions.transform.dense.weight" in state
    nsp = "cls.seq_relationship.weight" in state and pooler
    model = Bert(config, pooler=pooler, mlm=mlm, nsp=nsp)

    key_map = checkpoint_key_map(config, pooler, mlm, nsp)
    params = dict(model.named_parameters())  # tied decoder weight appears once, as the word embeddings
    missing = [ckpt for ckpt in key_map.values() if ckpt not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint is missing {len(missing)} BERT weights (first: {missing[:3]}); "
            "is it a BERT checkpoint matching its config.json?"
        )
    with torch.no_grad():
        for ours, ckpt in key_map.items():
            src, dst = state[ckpt], params[ours]
            if src.shape != dst.shape:
                raise CheckpointError(f"weight {ckpt} has shape {tuple(src.shape)}, config says {tuple(dst.shape)}")
            dst.copy_(src.to(dst.dtype))
    loaded = len(key_map)
    expected = sum(1 for n in params if n in key_map)
    assert loaded == expected == len(params), f"loaded {loaded} of {len(params)} parameters"

    decoder = state.get("cls.predictions.decoder.weight") if mlm else None
    if decoder is not None and not torch.equal(decoder, state["bert.embeddings.word_embeddings.weight"]):
        log.warning("checkpoint's MLM decoder is not tied to the word embeddings; using the tied (embedding) matrix")
    used = set(key_map.values())
    leftover = {k: v for k, v in state.items() if k not in used and not IGNORED_KEYS.match(k)}
    if leftover:
        log.info("checkpoint entries not used by the BERT body/heads: %s", sorted(leftover)[:8])
    log.info("loaded %d tensors (pooler=%s, mlm=%s, nsp=%s)", loaded, pooler, mlm, nsp)
    return model, leftover


def save_model(model: nn.Module, folder: Path, extra_state: dict[str, torch.Tensor] | None = None, **config_extra) -> None:
    """Write config.json + model.safetensors in the layout transformers' BERT classes read.

    `model` is a Bert or a task head (heads.py): anything with a `config` whose weights are named as in
    transformers (`bert.*`, `cls.*`, `classifier.*`).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.update(config_extra)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    state.pop("cls.predictions.decoder.weight", None)  # tied to the word embeddings; transformers re-ties it
    state.update({k: v.detach().contiguous().cpu() for k, v in (extra_state or {}).items()})
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_model(name_or_path: str | Path | None = None) -> tuple[Bert, Path]:
    """Load config + weights; returns the model (in eval mode) and the folder holding its files."""
    folder = transformer_dir(resolve_model_dir(name_or_path))
    config = BertConfig.from_file(folder / "config.json")
    model, leftover = model_from_state_dict(config, read_state_dict(folder))
    model.leftover_state = leftover  # task heads (classification, token classification) pick theirs from here
    return model, folder
