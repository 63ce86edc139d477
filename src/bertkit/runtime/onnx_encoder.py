"""`Encoder.load(..., backend="onnx")`: an Encoder whose vectors come from a cached ONNX graph, without torch.

Loading finds the model folder, its tokenizer and the cached graph of its current contents (bertkit.runtime.cache)
and imports neither torch nor bertkit's torch model: tokenizers + onnxruntime (+ openvino for int8-static) +
numpy, every pooling and the normalisation included (bertkit.pooling takes numpy arrays). Only when no graph is cached yet is the torch model
loaded, once, to export one (bertkit.runtime.export.export_graph; `bertkit export` does it ahead of time).

What the graph does not hold (the masked-LM / NSP heads, attention probabilities) is still there: the first
call that needs it loads the torch model (`encoder.model`), logged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import numpy as np

from bertkit.encoder import Encoder
from bertkit.errors import MissingHeadError, OptionError
from bertkit.runtime.cache import (
    BackendError,
    Graph,
    find_graph,
    open_runner,
    require_onnxruntime,
    set_threads,
    threads_here,
)

log = logging.getLogger(__name__)


class _Cpu:
    """Stands for torch.device("cpu") where no torch is loaded (`.type`, `str()`)."""

    type = "cpu"

    def __str__(self) -> str:
        return "cpu"

    __repr__ = __str__


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401  (only on a cache miss: the export needs it anyway)
    except ImportError:
        return False
    return True


class OnnxEncoder(Encoder):
    def __init__(self, graph: Graph, tokenizer, path: Path, precision: str, model=None, requested: str | None = None):
        self.device = _Cpu()
        self.tokenizer = tokenizer
        self.path = Path(path)
        self.name = str(path)
        self.last_truncated = 0
        self.precision, self.backend = precision, "onnx"
        self.requested_precision = requested or precision  # differs when a verdict made it fall back
        self.graph = graph
        self.facts = graph.record
        self._int8 = None
        self._onnx = open_runner(graph.path)  # ONNX Runtime, or OpenVINO for int8-static
        self._model = model  # the fp32 torch model, loaded only when needed
        self._model_lock = threading.Lock()
        self._pools: dict = {}
        self._pools_lock = threading.Lock()

    @classmethod
    def load_graph(cls, name_or_path: str | Path | None = None, device: str | None = None, *,
                   precision: str = "fp32") -> OnnxEncoder:
        from bertkit.runtime import verdicts
        from bertkit.model.locate import display_name, resolve_model_dir, transformer_dir
        from bertkit.runtime.modes import check_names
        from bertkit.tokenizer import BertTokenizer

        check_names(precision, "onnx")
        if device not in (None, "cpu"):
            raise BackendError("the onnx backend runs on CPU; use --backend torch on a GPU")
        require_onnxruntime()
        root = resolve_model_dir(name_or_path)
        tokenizer = BertTokenizer.from_dir(transformer_dir(root), root=root)
        requested = precision
        precision = verdicts.choose(precision, "onnx", root)
        if precision == "int8-static":
            from bertkit.runtime.openvino import require_openvino

            require_openvino()
        graph, why = find_graph(root, precision)
        model = None
        if graph is None:
            if not _torch_importable():
                raise BackendError(
                    f"{why or f'no {precision} ONNX graph of {root} is cached'}; torch is not installed here to "
                    f"export one: run `bertkit export --model {root} --precision {precision}` where torch is installed"
                )
            from bertkit.runtime.export import export_graph
            from bertkit.model import load_model

            model, _ = load_model(root)
            graph = export_graph(model, tokenizer, root, precision)
        encoder = cls(graph, tokenizer, root, precision, model=model, requested=requested)
        encoder.name = display_name(name_or_path) or encoder.name
        return encoder

    # -- the torch model, for what the graph does not compute ------------------------------------------------

    @property
    def model(self):
        with self._model_lock:
            if self._model is None:
                from bertkit.model import load_model

                log.info("loading the torch model of %s (heads and attention are not in the ONNX graph)", self.path)
                self._model = load_model(self.path)[0].eval()
            return self._model

    def set_mode(self, precision: str = "fp32", backend: str = "onnx") -> None:
        if backend != "onnx":
            raise OptionError("this encoder was loaded with backend onnx; use Encoder.load(..., backend='torch')")
        other = OnnxEncoder.load_graph(self.path, precision=precision)
        self.precision, self.requested_precision = other.precision, other.requested_precision
        self.graph, self.facts, self._onnx = other.graph, other.facts, other._onnx

    # -- what the base class asks of torch, answered without it -----------------------------------------------

    @property
    def hidden_size(self) -> int:
        return self.facts["hidden_size"]

    @property
    def num_hidden_layers(self) -> int:
        return self.facts["num_hidden_layers"]

    def has_head(self, head: str) -> bool:
        return bool(self.facts[f"has_{head}"])

    def require(self, head: str, purpose: str) -> None:
        if head == "pooler" and not self.facts["has_pooler"]:
            raise MissingHeadError(f"{purpose} needs the pooler (bert.pooler.dense.*), which this checkpoint does not "
                                   "have; use cls or mean pooling")
        if head != "pooler":
            self.model.require(head, purpose)

    def _grad_off(self):
        return contextlib.nullcontext()

    def _pad(self, encodings):
        return self.tokenizer.pad(encodings, numpy=True)

    def _default_workers(self) -> int:
        return threads_here()

    @staticmethod
    def _worker_init() -> None:
        set_threads(1)

    def _mask_positions(self, input_ids, template: str):
        if not isinstance(input_ids, np.ndarray):
            return super()._mask_positions(input_ids, template)
        is_mask = input_ids == self.tokenizer.mask_id  # (B, T)
        if not bool(is_mask.any(1).all()):
            from bertkit.errors import InputError

            raise InputError("a prompt lost its [MASK] token; use a shorter template")
        after_text = template.index(self.tokenizer.mask_token) > template.index("{text}")
        T = input_ids.shape[1]
        pos = np.broadcast_to(np.arange(T), input_ids.shape)
        if after_text:
            return np.where(is_mask, pos, -1).max(1)
        return np.where(is_mask, pos, T).min(1)

    def run_batch(self, batch, hidden_states: bool = False, attentions: bool = False, heads: bool = False):
        if not heads and not attentions:
            ids, mask, types = (np.asarray(t) if isinstance(t, np.ndarray) else t.cpu().numpy()
                                for t in (batch.input_ids, batch.attention_mask, batch.token_type_ids))
            return self._onnx.run(ids, mask, types, hidden_states)
        import torch

        from bertkit.tokenizer import Batch

        if isinstance(batch.input_ids, np.ndarray):
            batch = Batch(*(torch.from_numpy(t) for t in (batch.input_ids, batch.attention_mask, batch.token_type_ids)),
                          batch.encodings, batch.truncated)
        model = self.model
        with torch.inference_mode():
            return model(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                         output_hidden_states=hidden_states, output_attentions=attentions, compute_heads=heads)
