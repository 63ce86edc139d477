"""Compact vectors over HTTP: `dtype` / `dimensions` on POST /embed and bertkit's `dtype` extension of
POST /v1/embeddings (an OpenAI client never sends it, so OpenAI's answers are unchanged).

int8 / uint8 need the server's calibration (`bertkit serve --calibration FILE`, from `bertkit calibrate`). Codes
are answered as JSON integers (int8 / uint8 per dimension; binary / ubinary: ceil(dims / 8) packed bytes, numpy
`packbits` layout), or with /v1/embeddings' `encoding_format: base64` as the base64 of their raw bytes.
Refusals are 400s naming the field (`param`): an unknown dtype, dimensions outside 1..the vectors' size, int8
without a calibration, or a calibration fit on other vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bertkit.errors import BertkitError
from bertkit.vectors.compact import CALIBRATED, DTYPES, check_dimensions, compact
from bertkit.serve.errors import ServeError

if TYPE_CHECKING:
    from bertkit.serve.service import Service


def compact_request(service: Service, dtype: str, dimensions: int | None, pooling: str, normalize: bool,
                    whiten: bool = False) -> Callable[[np.ndarray], np.ndarray] | None:
    """Check a request's compact options before any work; the function turning its float vectors into what was
    asked (None: plain float32, nothing to do)."""
    if dtype not in DTYPES:
        raise ServeError(f"dtype {dtype!r} is unknown; use one of {', '.join(DTYPES)}", 400, "invalid_dtype", "dtype")
    size = service.whitening.k if whiten and service.whitening is not None else service.encoder.hidden_size
    try:
        check_dimensions(dimensions, size)
    except BertkitError as e:
        raise ServeError(str(e), 400, "invalid_dimensions", "dimensions") from None
    if dtype == "float32" and dimensions is None:
        return None
    cal = None
    if dtype in CALIBRATED:
        cal = service.calibration
        if cal is None:
            raise ServeError(f"dtype {dtype} needs a calibration (per-dimension ranges): start the server with "
                             "`bertkit serve --calibration FILE` (from `bertkit calibrate`)", 400, "no_calibration",
                             "dtype")
        try:
            cal.check(dimensions or size, None if whiten else pooling, True if dimensions else normalize)
        except BertkitError as e:
            raise ServeError(f"dtype {dtype}: {e}", 400, "calibration_mismatch", "dtype") from None
    return lambda vectors: compact(vectors, dtype, dimensions, cal)
