"""Static (calibrated) int8 graphs: `precision="int8-static"` on the onnx backend.

ONNX Runtime's `quantize_static` in QDQ format: int8 weights with one scale per output channel, uint8
activations whose ranges are fixed once, from the fp32 graph run over calibration texts (min / max), instead
of being measured on every batch as dynamic int8 does. Quantized: the MatMuls of the Linear layers (query, key,
value, attention output, feed-forward up), except those the `SKIP` rule keeps in fp32 (`skipped_matmuls`):
- the two attention products (activation x activation: fixed ranges for scores fit badly), always;
- with `keep_ffn_down=True` (the default), the feed-forward down projections (input wider than output): the GELU
  outputs they read have rare large values that one fixed range per tensor clips or coarsens; keeping them
  fp32 took the worst cosine to exact fp32 on STS-B dev from 0.86 to 0.98 (Spearman 86.67 -> 86.71; exact 86.72).
LayerNorm, softmax and GELU stay fp32.

Speed, measured on a Zen 4 CPU (AVX512-VNNI, no AMX; docs/RESULTS.md, issue 22): faster than fp32, but not
faster than dynamic int8. ONNX Runtime runs the QDQ graph as QLinearMatMul with a QuantizeLinear /
DequantizeLinear pass over the activations around each, where dynamic int8 is one fused DynamicQuantizeMatMul
(ONNX Runtime's own quantization guide recommends dynamic quantization for transformer models).

Calibration texts: the user's (`bertkit export --calibration FILE`, or `export_graph(..., calibration=[...])`),
else the default set shipped with bertkit (calibration_texts.txt: 300 plain English sentences written for
this purpose, 2 to 60 words). What was used is recorded next to the graph: count, sha256 of the texts, source,
method.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from pathlib import Path

import numpy as np

from bertkit.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "bertkit default (calibration_texts.txt)"
BATCH = 16


def default_texts() -> list[str]:
    text = resources.files("bertkit").joinpath("calibration_texts.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def texts_sha256(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


class _Feeds:
    """ONNX Runtime's CalibrationDataReader protocol over padded batches of the calibration texts."""

    def __init__(self, tokenizer, texts: list[str]):
        encodings = tokenizer.encode(texts)
        self.batches = [tokenizer.pad(encodings[i : i + BATCH], numpy=True) for i in range(0, len(encodings), BATCH)]
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        b = self.batches[self.i]
        self.i += 1
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "token_type_ids": b.token_type_ids}

    def rewind(self) -> None:
        self.i = 0


def skipped_matmuls(fp32: Path, keep_ffn_down: bool = True) -> list[str]:
    """Names of the MatMul nodes left in fp32: no weight input (attention products), or (keep_ffn_down) a weight
    of shape (in, out) with in > out."""
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    skip = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weights = [shapes[i] for i in node.input if i in shapes]
        if not weights or (keep_ffn_down and len(weights[0]) == 2 and weights[0][0] > weights[0][1]):
            skip.append(node.name)
    return skip


def quantize_static_graph(fp32: Path, out: Path, tokenizer, texts: list[str] | None, source: str | None) -> dict:
    """Write the static int8 graph of `fp32` to `out`; returns the calibration record."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if texts is None:
        texts, source = default_texts(), DEFAULT_SOURCE
    texts = [t for t in texts if t.strip()]
    if len(texts) < 10:
        raise InputError(f"int8-static calibration needs at least 10 non-empty texts, got {len(texts)}; "
                         "pass a file with a few hundred typical texts (one a line)")
    log.info("calibrating int8-static on %d texts (%s)", len(texts), source or "user texts")
    skip = skipped_matmuls(fp32)
    options = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                   weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], nodes_to_exclude=skip,
                   calibrate_method=CalibrationMethod.MinMax,
                   extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    quantize_static(str(fp32), str(out), _Feeds(tokenizer, texts), **options)
    return {"texts": len(texts), "texts_sha256": texts_sha256(texts), "source": source or "user texts",
            "method": "onnxruntime quantize_static, QDQ, MinMax activation ranges (uint8, asymmetric), "
                      "int8 per-channel symmetric weights; Linear MatMuls only, attention products and "
                      "feed-forward down projections kept fp32",
            "fp32_matmuls": len(skip),
            "batch": BATCH}
