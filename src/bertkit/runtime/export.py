"""Exporting graphs: the fp32 ONNX graph of a model, and its int8 (ONNX Runtime dynamic) and int8-static
(OpenVINO, bertkit.runtime.openvino) quantizations, cached by bertkit.runtime.cache with their records.

The only runtime module besides bertkit.runtime.torch_backend that imports torch: once a graph is cached,
`Encoder.load(backend="onnx")` runs without torch (bertkit.runtime.open, bertkit.runtime.onnxrt).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from bertkit.model import Bert, BertModel
from bertkit.runtime import cache
from bertkit.runtime.cache import Graph
from bertkit.runtime.folder import load_body, open_folder
from bertkit.runtime.modes import check_names
from bertkit.runtime.onnx_attention import fuse_file
from bertkit.runtime.onnxrt import require_onnxruntime
from bertkit.runtime.torch_backend import model_facts

log = logging.getLogger(__name__)


# ---- ONNX Runtime -------------------------------------------------------------------------------------------


class _ExportGraph(nn.Module):
    """What the ONNX graph computes: last hidden state, every hidden state (stacked) and the pooler output.
    The key mask is always built (no data-dependent branch), so one graph serves padded and unpadded batches.
    A family without token types (DistilBERT, MPNet, ModernBERT) gets a graph without that input."""

    def __init__(self, model: Bert):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        m = self.model
        if isinstance(m.bert, BertModel):  # the BERT-shaped families: the padded forward's layer loop
            x = m.bert.embeddings(input_ids, token_type_ids)
            mask = attention_mask.bool()[:, None, None, :]
            x, hidden, _ = m.bert.encoder(x, mask, output_hidden_states=True)
        else:  # ModernBERT: its body builds its masks and rotations from the shapes, with no branch on data
            out = m.bert(input_ids, attention_mask, output_hidden_states=True)
            x, hidden = out.last_hidden_state, out.hidden_states
        outputs = (x, torch.stack(hidden))
        return outputs + (m.bert.pooler(x),) if m.has_pooler else outputs


def graph_inputs(model: Bert) -> list[str]:
    """The inputs the exported graph takes: token_type_ids only where the family has token types."""
    types = getattr(model.bert.embeddings, "token_type_embeddings", None) is not None
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])


def example_batch(tokenizer) -> tuple[torch.Tensor, ...]:
    """Two texts of different lengths in the model's own vocabulary, padded with its own pad id (the export
    traces the graph on them; their values do not matter, their ids must exist)."""
    batch = tokenizer.pad(tokenizer.encode(["Hello world, again.", "Hi"]))
    return batch.input_ids, batch.attention_mask, batch.token_type_ids


def export_onnx(model: Bert, path: Path, tokenizer) -> Path:
    """Export the fp32 model with dynamic batch and sequence axes (written to a temp file, then renamed)."""
    model = copy.deepcopy(model).float().cpu().eval()
    inputs = graph_inputs(model)
    names = ["last_hidden_state", "hidden_states"] + (["pooler_output"] if model.has_pooler else [])
    axes = {name: {0: "batch", 1: "seq"} for name in [*inputs, "last_hidden_state"]}
    axes |= {"hidden_states": {1: "batch", 2: "seq"}, "pooler_output": {0: "batch"}}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with torch.no_grad():
            torch.onnx.export(
                _ExportGraph(model), example_batch(tokenizer)[: len(inputs)], str(tmp), dynamo=False,
                opset_version=17, input_names=inputs, output_names=names,
                dynamic_axes={k: v for k, v in axes.items() if k in names or k in inputs},
            )
        feed = dict(zip(inputs, (t.numpy() for t in example_batch(tokenizer)), strict=False))
        fuse_file(tmp, model.config.num_attention_heads, model.config.hidden_size, feed)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def openvino_model(model: Bert, tokenizer):
    """The fp32 model as an OpenVINO model with the ONNX graph's inputs and outputs, converted from torch, not
    from the ONNX graph: OpenVINO's PyTorch frontend keeps each layer's attention as one ScaledDotProductAttention
    op, which its CPU plugin runs fused and NNCF leaves in float, where through ONNX attention arrives as MatMul /
    Softmax ops whose matmuls NNCF quantizes (2-core AMD EPYC, 512-token documents: 26.5 -> 31.0 texts/s, mean
    cosine to exact 0.958 -> 0.984; docs/RESULTS.md, issue 30)."""
    import openvino as ov

    model = copy.deepcopy(model).float().cpu().eval()
    inputs = graph_inputs(model)
    example = example_batch(tokenizer)[: len(inputs)]
    dynamic = {name: {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for name in inputs}
    # Not under no_grad: that path's fused q/k/v weight is cached by data pointer, which export's fake tensors
    # lack; the three HF-named projections trace as three MatMuls (what the ONNX graph has too).
    with warnings.catch_warnings():  # torch.export's own deprecation notices (pytree internals), not the user's
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        program = torch.export.export(_ExportGraph(model), example, dynamic_shapes=dynamic)
    converted = ov.convert_model(program)
    names = ["last_hidden_state", "hidden_states"] + (["pooler_output"] if model.has_pooler else [])
    for port, name in [*zip(converted.inputs, inputs, strict=True), *zip(converted.outputs, names, strict=True)]:
        port.get_tensor().set_names({name})
    return converted


def quantize_int8(fp32: Path, out: Path) -> None:
    """ONNX Runtime's dynamic int8 of the fp32 graph: int8 weights per output channel, activations quantized per
    batch; attention (MultiHeadAttention or spelled out) stays float."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # every tensor of our graphs is float: the default type where onnx's shape inference stops at a contrib op
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})


def export_graph(model: Bert, tokenizer, model_dir: Path, precision: str, *, key: str | None = None,
                 calibration: list[str] | None = None, calibration_name: str | None = None,
                 overwrite: bool = False) -> Graph:
    """The cached graph of this model and precision, exported (and quantized) when missing, corrupt, asked to
    be recalibrated (calibration texts given) or to be written again (`overwrite`: a graph cached by an earlier
    bertkit keeps its spelled-out attention until then), with its record. key=None: the model folder's source
    key (the model was loaded from those files), the only key a graph is found by."""
    from importlib.metadata import (
        version,  # not `bertkit.__version__`: the runtime does not import the package top
    )

    require_onnxruntime()
    if precision == "int8-static":
        from bertkit.runtime.openvino import require_openvino

        require_openvino()
    source = "files" if key is None else "memory"
    key = key or cache.source_key(model_dir)
    found, why = cache.find_graph(model_dir, precision, key)
    if found is not None and not overwrite and not (precision == "int8-static" and calibration is not None):
        return found
    if why:
        log.warning("%s; exporting again", why)
    # int8-static too, though it is converted from torch: where a CPU's verdict turns int8 down the fp32 graph
    # runs instead, and a machine without torch could not export it then
    if precision != "fp32":
        fp32 = export_graph(model, tokenizer, model_dir, "fp32", key=None if source == "files" else key).path
    folder = cache.writable_cache_dir(model_dir)
    path = cache.graph_path(folder, key, precision)
    record = {"key": key, "source": source, "precision": precision, "model_dir": str(Path(model_dir).resolve()),
              **model_facts(model).as_dict(), "bertkit": version("bertkit"), "torch": torch.__version__}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        if precision == "fp32":
            log.info("exporting the model to ONNX: %s", path)
            export_onnx(model, tmp, tokenizer)
        elif precision == "int8":
            quantize_int8(fp32, tmp)
        else:
            from bertkit.runtime.openvino import quantize_static_graph

            record["calibration"] = quantize_static_graph(lambda: openvino_model(model, tokenizer), tmp, tokenizer,
                                                          calibration, calibration_name)
        cache.replace_graph(tmp, path)
    finally:
        cache.remove_graph(tmp)
    cache.write_record(path, record)
    return Graph(path, cache.check_graph(path)[0])


def export_folder(name_or_path: str | Path | None, precisions: list[str], calibration: list[str] | None = None,
                  calibration_name: str | None = None, overwrite: bool = False) -> list[Graph]:
    """`bertkit export`: the graphs of a model folder (packaged model, folder or hub id), one per precision; an
    int8-static graph is recalibrated when calibration texts are given; `overwrite` writes cached ones again
    (int8 after a fresh fp32 graph, which it quantizes)."""
    for p in precisions:
        check_names(p, "onnx")
    require_onnxruntime()
    if "int8-static" in precisions:  # before loading the model
        from bertkit.runtime.openvino import require_openvino

        require_openvino()
    folder = open_folder(name_or_path)
    model = load_body(folder)
    done = {}
    if overwrite and "int8" in precisions:  # quantized from the fp32 graph: that one first, written again
        done["fp32"] = export_graph(model, folder.tokenizer, folder.root, "fp32", overwrite=True)
    return [done.get(p) or export_graph(model, folder.tokenizer, folder.root, p, overwrite=overwrite,
                                        calibration=calibration if p == "int8-static" else None,
                                        calibration_name=calibration_name)
            for p in precisions]
