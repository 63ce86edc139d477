"""Exported ONNX graphs on disk: their files, keys and records (no torch, no runtime: running them is
bertkit.runtime.onnxrt / bertkit.runtime.openvino).

A graph exported from a model folder is named by the folder's *source key*: a hash of config.json and the
weight files (their full contents) and of ONNX_FORMAT. A retrained model, an edited config or a new export
format therefore never reuses an old graph. Next to each graph lies its record (`<graph>.json`): the key, the
model folder, the graph's own sha256 (checked on load: a corrupt file is never run), the model facts the
encoder needs without torch (hidden size, layers, which heads exist) and, for int8-static, the calibration.
int8-static is not an ONNX graph but an OpenVINO IR (`.xml` + `.bin`, bertkit.runtime.openvino), checked the same way.
Both hashes (source key, graph check) are remembered in the user cache by each file's stat (`files_sha256`), so a
start after the first reads neither the weights nor the graph twice; any write to a file changes its stat.

Where: `<model folder>/onnx`, or, when that folder cannot be written, `$XDG_CACHE_HOME/bertkit/onnx`
(default ~/.cache/bertkit/onnx); both are searched. bertkit.runtime.export writes graphs (it needs torch);
`bertkit export` writes them explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertkit.errors import BackendError, OutputError
from bertkit.outputs import atomic_write

log = logging.getLogger(__name__)

ONNX_FORMAT = 2  # bumped when the exported graph or its record changes, so stale cached exports are not reused
WEIGHT_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
GRAPH_PRECISIONS = ("fp32", "int8", "int8-static")
HASH_MEMO = "file-hashes.json"  # in the user cache: path(s) -> stat and sha256 (see files_sha256)
RACY_SECONDS = 2


# ---- where graphs live ----------------------------------------------------------------------------------------


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bertkit" / "onnx"


def _can_write(folder: Path) -> bool:
    """Really try (os.access says yes to root on a read-only mount)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def cache_dirs(model_dir: Path) -> list[Path]:
    """Where to look for a graph, in order."""
    return [Path(model_dir) / "onnx", user_cache_dir()]


def writable_cache_dir(model_dir: Path) -> Path:
    """`<model folder>/onnx`, else the per-user cache (logged, so the user knows where the graph went)."""
    here, fallback = cache_dirs(model_dir)
    if _can_write(here):
        return here
    if not _can_write(fallback):
        raise BackendError(f"cannot write the ONNX graph to {here} nor to {fallback}; make one of them writable "
                           "or set XDG_CACHE_HOME to a writable folder")
    log.warning("model folder %s is not writable; caching the ONNX graph in %s", model_dir, fallback)
    return fallback


# ---- what a graph was made from -------------------------------------------------------------------------------


def _stat(path: Path) -> list[int]:
    """What changes whenever a file's contents do: a write sets ctime (which no tool can set back), a rename or a
    copy gives another inode."""
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def files_sha256(*paths: Path) -> str:
    """sha256 over the files in turn; remembered in the user cache by their stat, so that a cold start does not
    read 2 x 90 MB again (0.18 s of 0.34 s on the packaged model). As git does for its index, a file changed in
    the last RACY_SECONDS is not remembered: a second write within the file system's clock tick would keep its
    times."""
    key = "\n".join(str(p.resolve()) for p in paths)
    stats = [_stat(p) for p in paths]
    memo_file = user_cache_dir() / HASH_MEMO
    memo = _read_json(memo_file) or {}
    hit = memo.get(key)
    if isinstance(hit, dict) and hit.get("stat") == stats and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    newest = max(max(s[3], s[4]) for s in stats)
    if [_stat(p) for p in paths] == stats and time.time_ns() - newest > RACY_SECONDS * 1e9:
        memo = {k: v for k, v in memo.items() if Path(k.split("\n")[0]).exists()}  # forget removed files
        memo[key] = {"stat": stats, "sha256": h.hexdigest()}
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(memo_file, json.dumps(memo, indent=0))
        except (OutputError, OSError) as e:  # only a lost shortcut: the next start hashes again
            log.debug("could not remember file hashes in %s: %s", memo_file, e)
    return h.hexdigest()


def source_files(model_dir: Path) -> list[Path]:
    """The files a graph depends on: the transformer folder's config.json and weights (shards included)."""
    from bertkit.model.locate import read_json, transformer_dir

    folder = transformer_dir(Path(model_dir))
    files = [folder / n for n in WEIGHT_FILES if (folder / n).is_file()]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files += sorted({folder / f for f in read_json(index).get("weight_map", {}).values()})
    return files


def source_key(model_dir: Path) -> str:
    """Hash of the export format and of every file the graph depends on (names and full contents)."""
    h = hashlib.sha256(f"format={ONNX_FORMAT}".encode())
    for f in source_files(model_dir):
        h.update(f"{f.name}={files_sha256(f)};".encode())
    return h.hexdigest()[:16]


# int8-static is an OpenVINO IR (bertkit.runtime.openvino): the .xml named here and its weights in the .bin beside it.
SUFFIX = {"int8-static": ".xml"}


def graph_path(folder: Path, key: str, precision: str) -> Path:
    return Path(folder) / f"bertkit-{key}-{precision}{SUFFIX.get(precision, '.onnx')}"


def graph_files(graph: Path) -> list[Path]:
    """The files a cached graph is made of: the graph, and for an OpenVINO IR (.xml) its weights (.bin)."""
    return [graph, graph.with_suffix(".bin")] if graph.suffix == ".xml" else [graph]


def replace_graph(tmp: Path, graph: Path) -> None:
    """Move a graph written under a temporary name (and its .bin) into place; the named file last."""
    for src, dst in reversed(list(zip(graph_files(tmp), graph_files(graph)))):
        os.replace(src, dst)


def remove_graph(graph: Path) -> None:
    for f in graph_files(graph):
        f.unlink(missing_ok=True)


def record_path(graph: Path) -> Path:
    return graph.with_name(graph.name + ".json")


@dataclass
class Graph:
    """A cached graph and its record."""

    path: Path
    record: dict[str, Any]


def write_record(graph: Path, record: dict[str, Any]) -> None:
    """The record next to the graph, with the graph's sha256 (temporary file, then rename)."""
    files = graph_files(graph)  # sha256 and size over the graph and, for an IR, its .bin
    record = {**record, "format": ONNX_FORMAT, "graph_sha256": files_sha256(*files),
              "graph_bytes": sum(f.stat().st_size for f in files)}
    target = record_path(graph)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def _read_record(graph: Path) -> dict[str, Any] | None:
    return _read_json(record_path(graph))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def check_graph(graph: Path, model_dir: Path | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a sound graph; (None, why) for a missing record or a graph that is not the one recorded
    (or, given the model folder, whose recorded sizes are not its config.json's: a new export replaces it)."""
    if any(f.is_dir() for f in graph_files(graph)):  # nothing can be written there: say so, in one line
        raise OutputError(f"cannot write {graph}: it is a folder where bertkit keeps a cached graph file; delete it, "
                          "then run again")
    record = _read_record(graph)
    if record is None:
        return None, f"{graph} has no readable record ({record_path(graph).name})"
    if record.get("format") != ONNX_FORMAT:
        return None, f"{graph} was written by another bertkit export format ({record.get('format')} != {ONNX_FORMAT})"
    files = graph_files(graph)
    if (not all(f.is_file() for f in files) or sum(f.stat().st_size for f in files) != record.get("graph_bytes")
            or files_sha256(*files) != record.get("graph_sha256")):
        return None, f"{graph} is corrupt (its size or sha256 differs from the one recorded at export)"
    config = _read_json(Path(model_dir) / "config.json") if model_dir is not None else None
    sizes = ("hidden_size", "num_hidden_layers", "max_position_embeddings")
    if config is not None and any(k in config and record.get(k) != config[k] for k in sizes):
        return None, f"{graph} is corrupt (the sizes in its record are not those of {Path(model_dir) / 'config.json'})"
    return record, None


def find_graph(model_dir: Path, precision: str, key: str | None = None) -> tuple[Graph | None, str | None]:
    """The cached graph of this model folder (as it is now) and precision: (Graph, None), or (None, why not).

    why is None when nothing was ever exported; else it names a corrupt graph, or a graph exported from an
    earlier state of the model folder (weights or config changed since), so the caller can say so."""
    key = key or source_key(model_dir)
    why = None
    for folder in cache_dirs(model_dir):
        path = graph_path(folder, key, precision)
        if path.exists():
            record, problem = check_graph(path, model_dir)
            if record is not None:
                return Graph(path, record), None
            why = problem
    if why is None:
        why = _stale_note(model_dir, precision)
    return None, why


def _stale_note(model_dir: Path, precision: str) -> str | None:
    """A note when graphs of this precision exist for this folder but for other contents of it."""
    here = str(Path(model_dir).resolve())
    beside, user = cache_dirs(model_dir)
    for folder in (beside, user):
        pattern = graph_path(folder, "*", precision).name
        for p in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            record = _read_record(p) or {}
            # A graph beside the model was made from it (the folder may have been copied since); in the user
            # cache, the record says which folder it came from.
            if record.get("source") == "files" and (folder == beside or record.get("model_dir") == here):
                return (f"the cached graph {p.name} was exported from an earlier version of {model_dir} "
                        "(its weights or config changed since), so it is not used")
    return None
