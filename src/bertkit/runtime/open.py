"""The one place that picks and opens a Runner for (model folder, backend, precision, device).

torch: bertkit's model (loaded here, or the one given). onnx: the folder's cached graph of that precision,
found without importing torch; only when none is cached is the torch model loaded, once, to export it
(bertkit.runtime.export; `bertkit export` does it ahead of time). int8-static graphs run on OpenVINO.
A requested precision slower than fp32 on this CPU falls back (bertkit.runtime.verdicts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bertkit.runtime import verdicts
from bertkit.runtime.cache import find_graph
from bertkit.runtime.folder import Folder, load_body
from bertkit.runtime.modes import check_names
from bertkit.runtime.seam import BackendError, Runner

if TYPE_CHECKING:
    from bertkit.model import Bert


def open_runner(folder: Folder, backend: str = "torch", precision: str = "fp32", device: str | None = None,
                model: Bert | None = None) -> Runner:
    """A runner of the folder's model. `model`: its torch model when already loaded (not loaded again)."""
    check_names(precision, backend)
    if backend == "onnx":
        return _open_graph(folder, precision, device, model)
    return torch_runner(model if model is not None else load_body(folder), device, precision, folder.root)


def process_runner(folder: Folder, backend: str = "torch", precision: str = "fp32",
                   device: str | None = None) -> Runner:
    """A runner whose vectors' forward pass runs in a child process (bertkit.runtime.process); CPU only."""
    from bertkit.runtime.process import ProcessRunner

    check_names(precision, backend)
    if device is not None and str(device) != "cpu":
        raise BackendError(f"the model process runs on CPU, not {device}: on a GPU the model does not share the "
                           "GIL's time with the server; drop --model-process")
    return ProcessRunner(lambda: open_runner(folder, backend, precision, "cpu"), folder.root, backend, precision)


def torch_runner(model: Bert, device: str | None, precision: str, model_dir: Path) -> Runner:
    """The torch backend's runner of a model held in memory (the verdict on `precision` applied)."""
    from bertkit.runtime.torch_backend import TorchRunner, check_options, default_device

    device = device or default_device()
    check_options(precision, "torch", device)
    chosen = verdicts.choose(precision, "torch", model_dir, str(device).split(":")[0])
    return TorchRunner(model, device, chosen, precision)


def _open_graph(folder: Folder, precision: str, device, model) -> Runner:
    from bertkit.runtime.onnxrt import UNFUSED, GraphRunner, OrtSession, require_onnxruntime

    if device is not None and str(device) != "cpu":
        raise BackendError("the onnx backend runs on CPU; use --backend torch on a GPU")
    require_onnxruntime()
    chosen = verdicts.choose(precision, "onnx", folder.root)
    if chosen == "int8-static":
        from bertkit.runtime.openvino import require_openvino

        require_openvino()
    graph, why = find_graph(folder.root, chosen)
    if graph is None:
        if not _torch_importable():
            raise BackendError(
                f"{why or f'no {chosen} ONNX graph of {folder.root} is cached'}; torch is not installed here to "
                f"export one: run `bertkit export --model {folder.root} --precision {chosen}` where torch is installed"
            )
        from bertkit.runtime.export import export_graph

        model = model if model is not None else load_body(folder)
        graph = export_graph(model, folder.tokenizer, folder.root, chosen)
    if graph.path.suffix == ".xml":
        from bertkit.runtime.openvino import OpenVinoSession

        session = OpenVinoSession(graph.path)
    else:
        session = OrtSession(graph.path, UNFUSED.get(chosen, ()))
    return GraphRunner(graph, session, folder.root, chosen, precision, model=model)


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401  (only on a cache miss: the export needs it anyway)
    except ImportError:
        return False
    return True
