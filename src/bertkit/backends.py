"""Inference precisions and backends for `Encoder.load(precision=..., backend=...)`.

| precision | backend | what runs                                                               | stated tolerance   |
|-----------|---------|-------------------------------------------------------------------------|--------------------|
| fp32      | torch   | bertkit's own model, packed (no compute on padding), fused QKV, SDPA    | cos >= 1 - 1e-5   |
| bf16      | torch   | the same under CPU/GPU autocast to bfloat16 (AVX512-BF16 / AMX on CPU)  | cos >= 0.999      |
| int8      | torch   | dynamic int8 quantization of every Linear, per-channel weight scales     | cos >= 0.88       |
| fp32      | onnx    | ONNX Runtime on a graph bertkit exports itself, cached next to the model | cos >= 1 - 1e-5   |
| int8      | onnx    | ONNX Runtime dynamic int8 quantization of that graph, per-channel        | cos >= 0.94       |

The tolerances are the minimum cosine to the exact fp32 vectors over short and long sentences that
tests/test_speed.py holds each mode to. int8 is lossy on this small model (the worst case is a one-word text;
typical sentences stay above 0.95): use it where ranking quality, not vector identity, matters (STS Spearman
is reported per mode in docs/RESULTS.md).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bertkit.errors import BertkitError, OptionError
from bertkit.model import Bert, BertOutput

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
BACKENDS = ("torch", "onnx")
# Minimum cosine between a mode's vectors and the exact fp32 ones (what the tests hold each mode to).
TOLERANCE = {("fp32", "torch"): 1 - 1e-5, ("bf16", "torch"): 0.999, ("int8", "torch"): 0.88,
             ("fp32", "onnx"): 1 - 1e-5, ("int8", "onnx"): 0.94}
ONNX_FORMAT = 1  # bumped when the exported graph changes, so stale cached exports are not reused


class BackendError(BertkitError):
    """A precision / backend combination that cannot run here (missing package, unsupported pair)."""


def check_options(precision: str, backend: str, device: torch.device | str = "cpu") -> None:
    if precision not in PRECISIONS:
        raise OptionError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise OptionError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "onnx" and precision == "bf16":
        raise BackendError("precision bf16 runs on the torch backend only; use --backend torch (or precision int8 with onnx)")
    if backend == "onnx" and torch.device(device).type != "cpu":
        raise BackendError("the onnx backend runs on CPU; use --backend torch on a GPU")
    if precision == "int8" and backend == "torch" and torch.device(device).type != "cpu":
        raise BackendError("int8 dynamic quantization runs on CPU only; use --precision bf16 on a GPU")


def autocast(precision: str, device: torch.device):
    """bf16 autocast: matmuls and attention in bfloat16, LayerNorm and the residual stream stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def quantize_int8(model: Bert) -> Bert:
    """A copy of the model whose nn.Linear layers are dynamically quantized to int8 (the fp32 model is kept
    for training and for calls that need exact outputs)."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # Per-channel weight scales: per-tensor ones lose much more on this model (min cosine 0.80 vs 0.91).
    with warnings.catch_warnings():  # torch.ao's deprecation notices, once per load
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )


# ---- ONNX Runtime -------------------------------------------------------------------------------------------


class _ExportGraph(nn.Module):
    """What the ONNX graph computes: last hidden state, every hidden state (stacked) and the pooler output.
    The key mask is always built (no data-dependent branch), so one graph serves padded and unpadded batches."""

    def __init__(self, model: Bert):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        m = self.model
        x = m.bert.embeddings(input_ids, token_type_ids)
        mask = attention_mask.bool()[:, None, None, :]
        x, hidden, _ = m.bert.encoder(x, mask, output_hidden_states=True)  # the padded forward's layer loop
        outputs = (x, torch.stack(hidden))
        return outputs + (m.bert.pooler(x),) if m.has_pooler else outputs


def _fingerprint(model: Bert) -> str:
    """Hash of the weights and the export format: a retrained or different model never reuses a stale graph."""
    h = hashlib.sha256(f"format={ONNX_FORMAT};torch={torch.__version__}".encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        t = t.detach().float().cpu()
        h.update(t.flatten()[:1024].numpy().tobytes())  # the head of each tensor, its shape and its sum
        h.update(f"{tuple(t.shape)}{float(t.sum())}".encode())
    return h.hexdigest()[:16]


def onnx_cache_dir(model_dir: Path) -> Path:
    """`<model folder>/onnx`, next to the model; a per-user cache when that folder is read-only."""
    here = Path(model_dir) / "onnx"
    try:
        here.mkdir(exist_ok=True)
        if os.access(here, os.W_OK):
            return here
    except OSError:
        pass
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bertkit" / "onnx"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def export_onnx(model: Bert, path: Path) -> Path:
    """Export the fp32 model with dynamic batch and sequence axes (written to a temp file, then renamed)."""
    model = copy.deepcopy(model).float().cpu().eval()
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 7592, 102, 0, 0]])
    mask = (ids != 0).long()
    names = ["last_hidden_state", "hidden_states"] + (["pooler_output"] if model.has_pooler else [])
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "token_type_ids": {0: "batch", 1: "seq"}, "last_hidden_state": {0: "batch", 1: "seq"},
            "hidden_states": {1: "batch", 2: "seq"}, "pooler_output": {0: "batch"}}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with torch.no_grad():
            torch.onnx.export(
                _ExportGraph(model), (ids, mask, torch.zeros_like(ids)), str(tmp), dynamo=False, opset_version=17,
                input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=names,
                dynamic_axes={k: v for k, v in axes.items() if k in names or k.endswith("_ids") or k == "attention_mask"},
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def onnx_model_path(model: Bert, model_dir: Path, precision: str) -> Path:
    """The cached graph for this model and precision, exporting (and quantizing) it on first use."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise BackendError("backend onnx needs onnxruntime and onnx: pip install 'bertkit[fast]'") from e
    folder = onnx_cache_dir(model_dir)
    tag = _fingerprint(model)
    fp32 = folder / f"bertkit-{tag}-fp32.onnx"
    if not fp32.is_file():
        log.info("exporting the model to ONNX: %s", fp32)
        export_onnx(model, fp32)
    if precision == "fp32":
        return fp32
    int8 = folder / f"bertkit-{tag}-int8.onnx"
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = int8.with_name(f".{int8.name}.tmp-{os.getpid()}.onnx")
        try:
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
            os.replace(tmp, int8)
        finally:
            tmp.unlink(missing_ok=True)
    return int8


class OnnxRunner:
    """An ONNX Runtime session that answers like Bert.forward(..., compute_heads=False).

    One session per intra-op thread count, made on first use: a call runs on as many threads as torch gives the
    calling thread, so that the encoder's concurrent batches (one thread each) and a lone batch (all threads)
    both get the right session. Sessions do not spin-wait between calls: a spinning pool kept burning the
    cores after run() returned and slowed whatever ran next in the process.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()
        self.outputs = [o.name for o in self.session(torch.get_num_threads()).get_outputs()]

    def session(self, threads: int):
        with self._lock:
            if threads not in self._sessions:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._sessions[threads] = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def __call__(self, input_ids, attention_mask, token_type_ids, output_hidden_states: bool = False) -> BertOutput:
        feed = {
            "input_ids": input_ids.cpu().numpy().astype(np.int64),
            "attention_mask": attention_mask.cpu().numpy().astype(np.int64),
            "token_type_ids": token_type_ids.cpu().numpy().astype(np.int64),
        }
        wanted = [n for n in self.outputs if n != "hidden_states" or output_hidden_states]
        got = dict(zip(wanted, self.session(torch.get_num_threads()).run(wanted, feed)))
        hidden = got.get("hidden_states")
        return BertOutput(
            last_hidden_state=torch.from_numpy(got["last_hidden_state"]),
            pooler_output=torch.from_numpy(got["pooler_output"]) if "pooler_output" in got else None,
            hidden_states=tuple(torch.from_numpy(h) for h in hidden) if hidden is not None else None,
        )
