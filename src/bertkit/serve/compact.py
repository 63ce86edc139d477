"""The steps after pooling over HTTP: each request's options become one `bertkit.vectors.VectorSpec` with the
server's whitening and calibration, checked once before any work, for /embed (bertkit's body and TEI's) and
/v1/embeddings (whose `dtype` is bertkit's extension: an OpenAI client never sends it, so its answers are
OpenAI's).

int8 / uint8 need the server's calibration (`bertkit serve --calibration FILE`, from `bertkit calibrate`). Codes
are answered as JSON integers (int8 / uint8 per dimension; binary / ubinary: ceil(dims / 8) packed bytes, numpy
`packbits` layout), or with /v1/embeddings' `encoding_format: base64` as the base64 of their raw bytes.
Refusals are 400s naming the field (`param`), the same message on every route: an unknown dtype, dimensions
outside 1..the vectors' size (`invalid_dimensions`), int8 without a calibration, or a calibration fit on other
vectors. TEI's dialect answers them 413 `Validation`, as it answers every refused input but an empty batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bertkit.errors import BertkitError
from bertkit.serve.errors import ServeError, user_error_code
from bertkit.vectors.compact import CALIBRATED
from bertkit.vectors.post import VectorSpec

if TYPE_CHECKING:
    from bertkit.serve.service import Service

# The spec's field -> the code of its refusal and the request field it names (the server's whitening and
# calibration are files given at start; a request names them by `whiten` and `dtype`).
CODES = {"pooling": "invalid_value", "layers": "invalid_value", "template": "invalid_value",
         "dimensions": "invalid_dimensions", "dtype": "invalid_dtype", "calibration": "calibration_mismatch"}
PARAMS = {"whitening": "whiten", "calibration": "dtype"}


def request_spec(service: Service, pooling: str = "mean", layers: list[int] | None = None,
                 normalize: bool = False, whiten: bool = False, template: str | None = None,
                 dtype: str = "float32", dimensions: int | None = None,
                 renormalize: bool = True) -> VectorSpec:
    """A request's options as a VectorSpec with the server's whitening and calibration (checked by
    `checked_spec`); refused here when it asks for one the server was not started with."""
    if whiten and service.whitening is None:
        raise ServeError("this server has no whitening; start it with `bertkit serve --whitening FILE.npz` "
                         "(make one with `bertkit whiten`)", 400, "no_whitening", "whiten")
    calibrated = dtype in CALIBRATED
    if calibrated and service.calibration is None:
        raise ServeError(f"dtype {dtype} needs a calibration (per-dimension ranges): start the server with "
                         "`bertkit serve --calibration FILE` (from `bertkit calibrate`)", 400,
                         "no_calibration", "dtype")
    return VectorSpec(pooling, layers, template, service.whitening if whiten else None, normalize, dimensions,
                      renormalize, dtype, service.calibration if calibrated else None)


def checked_spec(service: Service, spec: VectorSpec) -> VectorSpec:
    """`spec.check` against the served model, its refusals as 400s whose `param` names the request's field."""
    try:
        return spec.check(service.encoder.hidden_size, service.encoder.tokenizer.mask_token)
    except BertkitError as e:
        field = getattr(e, "param", None)
        code = CODES.get(field) or user_error_code(e)
        raise ServeError(str(e), 400, code, PARAMS.get(field, field)) from None
