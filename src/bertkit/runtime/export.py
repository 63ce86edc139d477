"""Inference precisions and backends for `Encoder.load(precision=..., backend=...)`.

| precision | backend | what runs                                                               | stated tolerance   |
|-----------|---------|-------------------------------------------------------------------------|--------------------|
| fp32      | torch   | bertkit's own model, packed (no compute on padding), fused QKV, SDPA    | cos >= 1 - 1e-5   |
| bf16      | torch   | the same under CPU/GPU autocast to bfloat16 (AVX512-BF16 / AMX on CPU)  | cos >= 0.999      |
| int8      | torch   | dynamic int8 quantization of every Linear, per-channel weight scales     | cos >= 0.88       |
| fp32      | onnx    | ONNX Runtime on a graph bertkit exports itself, cached next to the model | cos >= 1 - 1e-5   |
| int8      | onnx    | ONNX Runtime dynamic int8 quantization of that graph, per-channel        | cos >= 0.94       |
| int8-static | onnx  | OpenVINO int8, quantized by NNCF on calibration texts (fixed activation ranges) | cos >= 0.96 |

The tolerances are the minimum cosine to the exact fp32 vectors over short and long sentences that
tests/test_speed.py holds each mode to. int8 is lossy on this small model (the worst case is a one-word text;
typical sentences stay above 0.95): use it where ranking quality, not vector identity, matters (STS Spearman
is reported per mode in docs/RESULTS.md). int8-static is calibrated once on a few hundred texts (bertkit.runtime.openvino)
and so skips the per-batch activation range pass of dynamic int8; it runs on OpenVINO (`pip install
'bertkit[openvino]'`), its tolerance is held by tests/test_onnx_int8.py (worst of those texts 0.974; on all STS-B
dev sentences the worst is 0.928, the mean 0.995).

`Encoder.load(backend="onnx")` runs without torch once a graph is cached (bertkit.runtime.cache,
bertkit.runtime.onnx_encoder); this module exports graphs and needs torch. A requested mode that would be slower than
exact fp32 on this CPU falls back to the fastest correct one (bertkit.runtime.verdicts).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from bertkit.runtime import cache
from bertkit.model import Bert, BertOutput
from bertkit.runtime.modes import BACKENDS, PRECISIONS, TOLERANCE, check_names  # noqa: F401  (re-exported)
from bertkit.runtime.cache import ONNX_FORMAT, BackendError, Graph

log = logging.getLogger(__name__)


def check_options(precision: str, backend: str, device: torch.device | str = "cpu") -> None:
    check_names(precision, backend)
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


def model_facts(model: Bert) -> dict:
    """What the torch-free encoder needs to know about the model (kept in the graph's record)."""
    c = model.config
    return {"hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
            "max_position_embeddings": c.max_position_embeddings, "has_pooler": model.has_pooler,
            "has_mlm": model.has_mlm, "has_nsp": model.has_nsp}


def export_graph(model: Bert, tokenizer, model_dir: Path, precision: str, *, key: str | None = None,
                 calibration: list[str] | None = None, calibration_name: str | None = None) -> Graph:
    """The cached graph of this model and precision, exported (and quantized) when missing, corrupt or asked to
    be recalibrated (calibration texts given), with its record. key=None: the model folder's source key (the
    model was loaded from those files); else e.g. _fingerprint(model) for a model held only in memory."""
    from bertkit import __version__

    cache.require_onnxruntime()
    if precision == "int8-static":
        from bertkit.runtime.openvino import require_openvino

        require_openvino()
    source = "files" if key is None else "memory"
    key = key or cache.source_key(model_dir)
    found, why = cache.find_graph(model_dir, precision, key)
    if found is not None and not (precision == "int8-static" and calibration is not None):
        return found
    if why:
        log.warning("%s; exporting again", why)
    if precision != "fp32":
        fp32 = export_graph(model, tokenizer, model_dir, "fp32", key=None if source == "files" else key).path
    folder = cache.writable_cache_dir(model_dir)
    path = cache.graph_path(folder, key, precision)
    record = {"key": key, "source": source, "precision": precision, "model_dir": str(Path(model_dir).resolve()),
              **model_facts(model), "bertkit": __version__, "torch": torch.__version__}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        if precision == "fp32":
            log.info("exporting the model to ONNX: %s", path)
            export_onnx(model, tmp)
        elif precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        else:
            from bertkit.runtime.openvino import quantize_static_graph

            record["calibration"] = quantize_static_graph(fp32, tmp, tokenizer, calibration, calibration_name)
        cache.replace_graph(tmp, path)
    finally:
        cache.remove_graph(tmp)
    cache.write_record(path, record)
    return Graph(path, cache.check_graph(path)[0])


def export_folder(name_or_path: str | Path | None, precisions: list[str], calibration: list[str] | None = None,
                  calibration_name: str | None = None) -> list[Graph]:
    """`bertkit export`: the graphs of a model folder (packaged model, folder or hub id), one per precision; an
    int8-static graph is recalibrated when calibration texts are given."""
    from bertkit.model import load_model, resolve_model_dir, transformer_dir
    from bertkit.tokenizer import BertTokenizer

    for p in precisions:
        check_names(p, "onnx")
    cache.require_onnxruntime()
    if "int8-static" in precisions:  # before loading the model
        from bertkit.runtime.openvino import require_openvino

        require_openvino()
    root = resolve_model_dir(name_or_path)
    model, _ = load_model(root)
    tokenizer = BertTokenizer.from_dir(transformer_dir(root), root=root)
    return [export_graph(model, tokenizer, root, p, calibration=calibration if p == "int8-static" else None,
                         calibration_name=calibration_name) for p in precisions]


def onnx_model_path(model: Bert, model_dir: Path, precision: str, tokenizer=None) -> Path:
    """The cached graph of a model held in memory (named by its weights' fingerprint), exported on first use."""
    return export_graph(model, tokenizer, model_dir, precision, key=_fingerprint(model)).path


class OnnxRunner:
    """A cached graph's runner (onnx_cache.open_runner: ONNX Runtime, or OpenVINO for int8-static) with torch
    tensors in and a BertOutput out (the torch-backed Encoder's ONNX path)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.run = cache.open_runner(self.path).run

    def __call__(self, input_ids, attention_mask, token_type_ids, output_hidden_states: bool = False) -> BertOutput:
        got = self.run(input_ids.cpu().numpy(), attention_mask.cpu().numpy(), token_type_ids.cpu().numpy(),
                       output_hidden_states)
        return BertOutput(
            last_hidden_state=torch.from_numpy(got.last_hidden_state),
            pooler_output=torch.from_numpy(got.pooler_output) if got.pooler_output is not None else None,
            hidden_states=tuple(torch.from_numpy(h) for h in got.hidden_states) if got.hidden_states else None,
        )
