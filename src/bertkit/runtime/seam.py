"""The one seam between the Encoder and what runs the model: the `Runner` protocol (as TEI's Backend trait).

A runner runs one padded batch (ids / mask / token types) and returns the model's output arrays; it knows
the model's facts (sizes, which heads exist), its device and precision, and how threads are set where it
runs. Each backend is one module that makes runners: bertkit.runtime.torch_backend (bertkit's own model),
bertkit.runtime.onnxrt (ONNX Runtime) and bertkit.runtime.openvino (OpenVINO) behind bertkit.runtime.open.

    runner = open_runner(open_folder("splade-tiny"), backend="onnx", precision="fp32")
    out = runner.run(ids, mask, types)          # out.last_hidden_state: (B, T, H)
    Encoder(runner, tokenizer, path)            # the only encoder class, whatever the backend

This module imports neither torch nor any backend: the torch-free ONNX path goes through it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bertkit.errors import BackendError  # noqa: F401  (defined in bertkit.errors; this path kept)


@dataclass
class ArrayOutput:
    """Bert.forward's output fields as numpy arrays (what the graph runners return and the pooling takes)."""

    last_hidden_state: np.ndarray  # (B, T, H)
    pooler_output: np.ndarray | None = None  # (B, H)
    hidden_states: tuple[np.ndarray, ...] | None = None  # L + 1 of (B, T, H)


def graph_feed(names, input_ids, attention_mask, token_type_ids) -> dict[str, np.ndarray]:
    """The int64 inputs of a graph, by the names it lists: a family without token types (DistilBERT, MPNet,
    ModernBERT) exports no token_type_ids input, and a graph refuses an input it does not have."""
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    return {name: np.ascontiguousarray(arrays[name], dtype=np.int64) for name in names}


@dataclass(frozen=True)
class Facts:
    """What an encoder needs to know about its model without loading it (a graph's record keeps these)."""

    hidden_size: int
    num_hidden_layers: int
    max_position_embeddings: int
    has_pooler: bool
    has_mlm: bool
    has_nsp: bool

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Facts:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Cpu:
    """Stands for torch.device("cpu") where no torch is loaded (`.type`, `str()`)."""

    type = "cpu"

    def __str__(self) -> str:
        return "cpu"

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return str(other) == "cpu"

    def __hash__(self) -> int:
        return hash("cpu")


# An ONNX Runtime graph's cost of one more batch, in padded tokens: over its tokens, a batch costs the dynamic
# int8 graph ~0.1-0.3 ms, at ~77 us per token on one AMD EPYC core; with encode()'s own per-batch work, ~16
# tokens. Cut so, a server's merged batches pad ~4 % instead of ~22 % (bench/padding_cuts.py: 106-text calls
# 1,084 -> 1,233 texts/s, 2026-12-07, docs/RESULTS.md). OpenVINO (int8-static) keeps count cuts: 1,187 -> 1,207
# there, within noise, and it compiles kernels for each new batch shape on first sight (more shapes, slower start).
GRAPH_BATCH_COST = 16


def graph_batch_cost(precision: str) -> int | None:
    """A graph runner's batch_cost by its precision: None for int8-static (OpenVINO), above."""
    return None if precision == "int8-static" else GRAPH_BATCH_COST


@runtime_checkable
class Runner(Protocol):
    """What runs the model for an Encoder. A new backend is one module with one class that answers this."""

    backend: str  # "torch", "onnx", ...
    precision: str  # the precision that runs
    requested_precision: str  # the one asked for (differs when this CPU's verdict made it fall back)
    device: Any  # torch.device, or Cpu()
    facts: Facts
    arrays: str  # "torch" or "numpy": the kind of arrays run() takes (padded batches) and returns
    # What one more batch costs in padded tokens, where run() computes on padding (an exported graph): encode()
    # then cuts its length-sorted texts where padding plus this per batch is least (batching.by_length).
    # None: run() computes nothing on padding (the torch packed forward), so fewer, fuller batches are best.
    batch_cost: int | None

    def run(self, input_ids, attention_mask, token_type_ids, hidden_states: bool = False) -> Any:
        """The fast path: vectors only. An output with last_hidden_state (B, T, H), pooler_output (B, H) or
        None, hidden_states (L + 1 of (B, T, H)) when asked, in the runner's kind of arrays."""

    def forward(self, input_ids, attention_mask, token_type_ids, *, hidden_states: bool = False,
                attentions: bool = False, heads: bool | tuple[str, ...] = False) -> Any:
        """The reference forward of the torch model (heads, attention probabilities): a BertOutput."""

    @property
    def model(self) -> Any:
        """The fp32 torch model (graph runners load it on first use)."""

    def inference(self) -> Any:
        """A context manager around model calls (torch.inference_mode(); nothing for numpy runners)."""

    def threads(self) -> int:
        """How many threads a call from this OS thread runs on: the default count of CPU workers."""

    def set_threads(self, n: int) -> None:
        """The thread count for calls from this OS thread (encode()'s workers set 1 each)."""


# ---- threads: per OS thread, with one process-wide default ---------------------------------------------------

_local = threading.local()
_default: list[int | None] = [None]


def set_default_threads(n: int | None) -> None:
    """The thread count a runner uses where its calling thread set none (`bertkit serve --threads`). torch,
    should it load later, starts with this many too."""
    _default[0] = n
    if n is not None:
        os.environ["OMP_NUM_THREADS"] = str(n)


def default_threads() -> int | None:
    return _default[0]


def set_local_threads(n: int | None) -> None:
    """Threads for graphs run from this OS thread (None: back to the default)."""
    _local.threads = n


def local_threads() -> int:
    """This OS thread's setting; else the process default; else every CPU this process may use."""
    n = getattr(_local, "threads", None)
    return n if n is not None else _default[0] or cpu_budget()


def cpu_budget() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
