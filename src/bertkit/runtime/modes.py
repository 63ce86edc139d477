"""The names of the precision modes and backends, their stated tolerances, and the checks on them that need no
torch (the torch-free ONNX path and the CLI's option parsing use them; bertkit.runtime.export runs the modes)."""

from __future__ import annotations

from bertkit.errors import OptionError
from bertkit.runtime.cache import BackendError

PRECISIONS = ("fp32", "bf16", "int8", "int8-static")
BACKENDS = ("torch", "onnx")
# Minimum cosine between a mode's vectors and the exact fp32 ones (what the tests hold each mode to).
TOLERANCE = {("fp32", "torch"): 1 - 1e-5, ("bf16", "torch"): 0.999, ("int8", "torch"): 0.88,
             ("fp32", "onnx"): 1 - 1e-5, ("int8", "onnx"): 0.94, ("int8-static", "onnx"): 0.96}


def check_names(precision: str, backend: str) -> None:
    """Unknown names and pairs that never run; device-dependent checks are in backends.check_options."""
    if precision not in PRECISIONS:
        raise OptionError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise OptionError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "onnx" and precision == "bf16":
        raise BackendError("precision bf16 runs on the torch backend only; use --backend torch (or precision int8 with onnx)")
    if backend == "torch" and precision == "int8-static":
        raise BackendError("precision int8-static runs on the onnx backend only; add --backend onnx (or use int8)")
