"""Reading and writing weights: one explicit map from our parameter names to Hugging Face checkpoint names,
with count and shape checks, and `load_model`, which finds a folder (locate.py), reads config.json's
model_type and loads it as that family (FAMILIES: BERT here, the others in their own modules).

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
from bertkit.model import distilbert, electra, modernbert, mpnet, roberta
from bertkit.model.config import BertConfig
from bertkit.model.keys import Family, bert_names, renamed
from bertkit.model.locate import read_json, resolve_model_dir, transformer_dir
from bertkit.model.network import Bert

log = logging.getLogger(__name__)

def checkpoint_key_map(config: BertConfig, pooler: bool, mlm: bool, nsp: bool) -> dict[str, str]:
    """Our parameter name -> the name in a BertForPreTraining checkpoint (after `normalize_key`): the same."""
    return {n: n for n in bert_names(config, pooler, mlm, nsp)}


def bert_parts(state: dict) -> dict[str, bool]:
    pooler = "bert.pooler.dense.weight" in state
    return {"pooler": pooler, "mlm": "cls.predictions.transform.dense.weight" in state,
            "nsp": "cls.seq_relationship.weight" in state and pooler}


BERT = Family(
    BertConfig, Bert, bert_parts, bert_names, (), "bert", ("embeddings", "encoder", "pooler"),
    # Checkpoint keys that carry no weights of ours, or duplicate one we already load.
    re.compile(r"^(bert\.embeddings\.position_ids|cls\.predictions\.decoder\.(weight|bias))$"),
    "cls.predictions.decoder.weight",
)
IGNORED_KEYS = BERT.ignored
FAMILIES = {t: f for f in (BERT, *roberta.FAMILIES, distilbert.FAMILY, electra.FAMILY, mpnet.FAMILY, modernbert.FAMILY)
            for t in f.config.model_types}


def normalize_key(key: str) -> str:
    """Bring a BERT checkpoint key to BertForPreTraining naming: add the `bert.` prefix a bare BertModel lacks,
    and rename the TF-era LayerNorm `gamma`/`beta` to `weight`/`bias`."""
    return BERT.normalize(key)


def config_from_dict(d: dict) -> BertConfig:
    """config.json's contents as its family's config; an unsupported model_type is one line naming those we load."""
    model_type = d.get("model_type", "bert")
    if model_type not in FAMILIES:
        raise CheckpointError(
            f"config.json says model_type={model_type!r}; bertkit loads model_type {', '.join(map(repr, FAMILIES))}"
        )
    return FAMILIES[model_type].config.from_dict(d)


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


def model_from_state_dict(config: BertConfig,
                          state: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Build the config's family's model with exactly the parts present in `state` and load them.

    Returns the model and the checkpoint entries it did not use (e.g. a classifier head), so that task
    heads can take theirs.
    """
    family = FAMILIES[config.model_types[0]]
    state = {family.normalize(k): v for k, v in state.items()}
    parts = family.parts(state)
    model = family.model(config, **parts)

    key_map = family.key_map(config, parts)
    params = dict(model.named_parameters())  # tied decoder weight appears once, as the word embeddings
    missing = [ckpt for ckpt in key_map.values() if ckpt not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint is missing {len(missing)} {config.family} weights (first: {missing[:3]}); "
            f"is it a {config.family} checkpoint matching its config.json (model_type={config.model_types[0]!r})?"
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

    decoder = state.get(family.tied_decoder) if parts.get("mlm") else None
    if decoder is not None and not torch.equal(decoder, state[key_map[model.word_embeddings_name]]):
        log.warning("checkpoint's MLM decoder is not tied to the word embeddings; using the tied (embedding) matrix")
    used = set(key_map.values())
    leftover = {k: v for k, v in state.items() if k not in used and not family.ignored.match(k)}
    if leftover:
        log.info("checkpoint entries not used by the %s body/heads: %s", config.family, sorted(leftover)[:8])
    log.info("loaded %d %s tensors (%s)", loaded, config.family, ", ".join(f"{k}={v}" for k, v in parts.items()))
    return model, leftover


def save_model(model: nn.Module, folder: Path, extra_state: dict[str, torch.Tensor] | None = None,
               **config_extra) -> None:
    """Write config.json + model.safetensors in the layout transformers' classes for the family read.

    `model` is a Bert (or another family's model) or a task head (heads.py): anything with a `config` whose
    weights are named as in transformers' BERT (`bert.*`, `cls.*`, `classifier.*`); the family's rename rules
    give the names its checkpoints use.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.update(config_extra)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    state.pop("cls.predictions.decoder.weight", None)  # tied to the word embeddings; transformers re-ties it
    state.pop("decoder.weight", None)  # ModernBERT's, tied likewise
    names = renamed(list(state), FAMILIES[model.config.model_types[0]].rules)  # the family's checkpoint names
    state = {names[k]: v for k, v in state.items()}
    state.update({k: v.detach().contiguous().cpu() for k, v in (extra_state or {}).items()})
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_model(name_or_path: str | Path | None = None) -> tuple[nn.Module, Path]:
    """Load config + weights; returns the model (in eval mode) and the folder holding its files."""
    folder = transformer_dir(resolve_model_dir(name_or_path))
    config = config_from_dict(read_json(folder / "config.json"))
    model, leftover = model_from_state_dict(config, read_state_dict(folder))
    model.leftover_state = leftover  # task heads (classification, token classification) pick theirs from here
    return model, folder
