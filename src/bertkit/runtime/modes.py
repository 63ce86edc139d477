"""Inference precisions and backends for `Encoder.load(precision=..., backend=...)`: their names, stated
tolerances and the checks on them that need no torch (the CLI's option parsing uses them too).

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
is reported per mode in docs/RESULTS.md). int8-static is calibrated once on a few hundred texts
(bertkit.runtime.openvino) and so skips the per-batch activation range pass of dynamic int8; it runs on OpenVINO
(`pip install 'bertkit[openvino]'`), its tolerance is held by tests/test_onnx_int8.py (worst of those texts 0.974;
on all STS-B dev sentences the worst is 0.928, the mean 0.995).

Each backend is one module (bertkit.runtime.torch_backend, .onnxrt, .openvino) behind bertkit.runtime.seam;
bertkit.runtime.open picks one. A requested mode that would be slower than exact fp32 on this CPU falls back to
the fastest correct one (bertkit.runtime.verdicts).
"""

from __future__ import annotations

from bertkit.errors import OptionError
from bertkit.runtime.seam import BackendError

PRECISIONS = ("fp32", "bf16", "int8", "int8-static")
BACKENDS = ("torch", "onnx")
# Minimum cosine between a mode's vectors and the exact fp32 ones (what the tests hold each mode to).
TOLERANCE = {("fp32", "torch"): 1 - 1e-5, ("bf16", "torch"): 0.999, ("int8", "torch"): 0.88,
             ("fp32", "onnx"): 1 - 1e-5, ("int8", "onnx"): 0.94, ("int8-static", "onnx"): 0.96}


def check_names(precision: str, backend: str) -> None:
    """Unknown names and pairs that never run; device-dependent checks are in torch_backend.check_options."""
    if precision not in PRECISIONS:
        raise OptionError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise OptionError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "onnx" and precision == "bf16":
        raise BackendError("precision bf16 runs on the torch backend only; "
                           "use --backend torch (or precision int8 with onnx)")
    if backend == "torch" and precision == "int8-static":
        raise BackendError("precision int8-static runs on the onnx backend only; add --backend onnx (or use int8)")
