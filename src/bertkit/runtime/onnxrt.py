"""The onnx backend: a cached graph (bertkit.runtime.cache) run by ONNX Runtime, as a Runner, without torch.

`GraphRunner` is the Runner of every exported graph: its fast path is a session (`OrtSession` here, or
bertkit.runtime.openvino's `OpenVinoSession` for int8-static), its facts come from the graph's record, and
what the graph does not hold (the masked-LM / NSP heads, attention probabilities) runs on the torch model,
loaded on first use (logged). numpy in, numpy out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bertkit.runtime.cache import Graph
from bertkit.runtime.seam import (
    ArrayOutput,
    BackendError,
    Cpu,
    Facts,
    graph_batch_cost,
    graph_feed,
    local_threads,
    set_local_threads,
)

log = logging.getLogger(__name__)


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendError("backend onnx needs onnxruntime: "
                           "pip install 'bertkit[onnx]' (or use --backend torch)") from e
    return onnxruntime


class Session(Protocol):
    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray,
            output_hidden_states: bool = False) -> ArrayOutput: ...


# Graph optimizations of ONNX Runtime's not run per precision: SkipLayerNormFusion (the residual Add and LayerNorm
# as one op, which ORT finds once attention is one op) slowed the dynamic-int8 graph on 2 AMD EPYC cores
# (2026-12-07, 1-thread sessions on 2 workers, 6 rounds: STS-B 1,430 vs 1,658 texts/s, AG News 341 vs 416,
# 512-token documents 15.6 vs 17.3); fp32 was unchanged within noise with it.
UNFUSED = {"int8": ("SkipLayerNormFusion",)}


def worker_affinities(threads: int) -> str | None:
    """ONNX Runtime's affinity string that pins a session's pool workers one to a CPU, when the session has as
    many threads as this process has CPUs (it owns them, as ORT's own default pool, which pins the same way);
    None otherwise (several sessions or processes sharing the CPUs must not pile onto the same ones).

    Why: a worker left free can be woken onto the caller's CPU after the machine was idle (the scheduler packs
    threads when load looks low), and a pool that spins within a run then shares one CPU with its caller. On a
    2-vCPU AMD EPYC VM (2026-12-07), a 10-token int8 run after 0.3 s idle took 11.1-11.8 ms unpinned against 4.6
    pinned (4.1-5.0 when called back to back either way). The calling thread is left free: ORT never pins it.
    ORT numbers processors from 1; workers are threads - 1, separated by ';'."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if threads < 2 or len(cpus) != threads:
        return None
    return ";".join(str(c + 1) for c in cpus[1:])


class OrtSession:
    """An ONNX Runtime session that answers like Bert.forward(..., compute_heads=False), in numpy.

    One session per intra-op thread count, made on first use: a call runs on local_threads() threads, so that
    the encoder's concurrent batches (one thread each) and a lone batch (all threads) both get the right
    session. Sessions spin-wait only within a call and pin their pool workers when they own the CPUs (see
    session() and worker_affinities()).
    """

    def __init__(self, path: Path, disabled_optimizers: tuple[str, ...] = ()):
        self.path = Path(path)
        self.disabled_optimizers = list(disabled_optimizers)
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        first = self.session(local_threads())
        self.outputs = [o.name for o in first.get_outputs()]
        self.inputs = [i.name for i in first.get_inputs()]

    def session(self, threads: int):
        with self._lock:
            if threads not in self._sessions:
                ort = require_onnxruntime()
                opts = ort.SessionOptions()
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
                # Spin between ops within a run, stop at its end: the many small ops of a short batch hand over
                # without a futex wake each, and nothing burns the cores after run() returns (spinning
                # otherwise kept a worker busy ~40 ms after each run and slowed whatever ran next).
                opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
                opts.add_session_config_entry("session.force_spinning_stop", "1")
                affinities = worker_affinities(threads)
                if affinities:
                    opts.add_session_config_entry("session.intra_op_thread_affinities", affinities)
                try:
                    self._sessions[threads] = ort.InferenceSession(
                        str(self.path), opts, providers=["CPUExecutionProvider"],
                        disabled_optimizers=self.disabled_optimizers)
                except Exception as e:  # ORT raises its own Fail / InvalidProtobuf types
                    raise BackendError(f"ONNX Runtime cannot load {self.path} ({type(e).__name__}); delete it and "
                                       "run `bertkit export` again") from e
            return self._sessions[threads]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray,
            output_hidden_states: bool = False) -> ArrayOutput:
        feed = graph_feed(self.inputs, input_ids, attention_mask, token_type_ids)
        wanted = [n for n in self.outputs if n != "hidden_states" or output_hidden_states]
        got = dict(zip(wanted, self.session(local_threads()).run(wanted, feed)))
        hidden = got.get("hidden_states")
        return ArrayOutput(got["last_hidden_state"], got.get("pooler_output"),
                           tuple(hidden) if hidden is not None else None)


class GraphRunner:
    """A cached graph as a Runner: `session` runs it; the torch model is loaded only for heads / attentions."""

    backend = "onnx"
    arrays = "numpy"

    def __init__(self, graph: Graph, session: Session, model_dir: Path, precision: str,
                 requested_precision: str | None = None, model=None):
        self.graph, self.session, self.model_dir = graph, session, Path(model_dir)
        self.precision = precision
        self.requested_precision = requested_precision or precision
        self.batch_cost = graph_batch_cost(precision)  # a graph computes on padding
        self.device = Cpu()
        self.facts = Facts.of(graph.record)
        self._model = model  # the fp32 torch model, loaded only when needed
        self._model_lock = threading.Lock()

    @property
    def model(self):
        with self._model_lock:
            if self._model is None:
                import torch

                from bertkit.model import load_model

                log.info("loading the torch model of %s (heads and attention are not in the ONNX graph)",
                         self.model_dir)
                with torch.inference_mode(False):  # a first use inside inference mode must not freeze the weights
                    self._model = load_model(self.model_dir)[0].eval()
            return self._model

    def run(self, input_ids, attention_mask, token_type_ids, hidden_states: bool = False) -> ArrayOutput:
        return self.session.run(input_ids, attention_mask, token_type_ids, hidden_states)

    def forward(self, input_ids, attention_mask, token_type_ids, *, hidden_states: bool = False,
                attentions: bool = False, heads: bool | tuple[str, ...] = False):
        """The torch model's reference forward in fp32 (numpy inputs are taken as they are)."""
        import torch

        model = self.model
        ids, mask, types = (torch.as_tensor(t) for t in (input_ids, attention_mask, token_type_ids))
        with torch.inference_mode():
            return model(ids, mask, types, output_hidden_states=hidden_states, output_attentions=attentions,
                         compute_heads=heads)

    def inference(self):
        return contextlib.nullcontext()

    def threads(self) -> int:
        return local_threads()

    def set_threads(self, n: int) -> None:
        set_local_threads(n)
