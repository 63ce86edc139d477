"""What is done to a sentence vector after the model, as one value: `VectorSpec`.

    spec = VectorSpec(pooling="mean", normalize=True, dimensions=128, dtype="int8", calibration="cal.npz")
    spec = spec.check(encoder.hidden_size)      # refuses bad options (errors naming the field), loads files
    pooled = encoder.encode(texts, pooling=spec.pooling, normalize=spec.pool_normalize)
    codes = spec.apply(pooled)                  # (n, 128) int8

`Encoder.encode`, `bertkit encode`, the server's /embed, /v1/embeddings and TEI's /embed, and the corpus job
all build one, check it once before any work, and apply it to the pooled vectors, so the same option means the
same thing, and the same mistake gets the same message, everywhere.

`apply` runs, in this order:
1. whiten: the whitening was fit on raw pooled vectors, so it comes first (pooling then does not normalise);
2. normalize: unit length; after whitening, because whitened vectors are not unit length. Without whitening
   the pooling step does it on the model's device (`pool_normalize`), as it always has;
3. dimensions: the first N, L2-normalised again (Matryoshka truncation, as OpenAI's `dimensions`); before
   quantising, so that the codes are of the vectors that are compared;
4. dtype: int8 / uint8 codes over the calibration's ranges, or packed sign bits (bertkit.vectors.compact).
   Last, because codes are not vectors any more: a calibration must be fit on vectors made by steps 1-3
   exactly, which `check` verifies (size, pooling, unit length).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bertkit.errors import BertkitError, InputError, OptionError
from bertkit.pooling import DEFAULT_PROMPT, POOLING_MODES, check_pooling, check_template
from bertkit.vectors.compact import (
    FLOAT,
    Calibration,
    check_calibration,
    check_dimensions,
    check_dtype,
    quantize,
    truncate,
)
from bertkit.vectors.whitening import Whitening


@contextmanager
def naming(field: str) -> Iterator[None]:
    """A user error raised inside names `field` as its `param` (the server answers it; `field` is the
    option's name in every API: pooling, layers, template, whitening, dimensions, dtype, calibration)."""
    try:
        yield
    except BertkitError as e:
        if getattr(e, "param", None) is None:
            e.param = field
        raise


@dataclass(frozen=True)
class VectorSpec:
    """How a sentence vector is made from the model's output: pooling, then the steps of `apply`."""

    pooling: str = "mean"
    layers: tuple[int, ...] | None = None  # hidden states averaged (0 = embeddings, -1 = last); None: last
    template: str | None = None  # mask_prompt's template; None: DEFAULT_PROMPT
    whitening: Whitening | str | Path | None = None  # a Whitening or its .npz file (`bertkit whiten`)
    normalize: bool = False
    dimensions: int | None = None  # keep the first N
    renormalize: bool = True  # L2-normalise the first N again; False only for TEI's `normalize: false`
    dtype: str = FLOAT
    calibration: Calibration | str | Path | None = None  # int8 / uint8: the ranges or their file

    def __post_init__(self) -> None:
        if self.layers is not None and not isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", tuple(self.layers))

    @property
    def layer_list(self) -> list[int] | None:
        return list(self.layers) if self.layers is not None else None

    @property
    def prompt(self) -> str:
        return self.template or DEFAULT_PROMPT

    @property
    def pool_normalize(self) -> bool:
        """Whether the pooling step normalises: only without whitening (which needs the raw vectors)."""
        return self.normalize and self.whitening is None

    @property
    def unit(self) -> bool:
        """Whether the vectors are unit length before quantising (what a calibration records as `unit`)."""
        return self.normalize or (self.dimensions is not None and self.renormalize)

    @property
    def is_float(self) -> bool:
        """Nothing after pooling: plain pooled float32 vectors."""
        return self.whitening is None and self.dimensions is None and self.dtype == FLOAT

    # -- check: every refusal before any work, each naming its field ---------------------------------------

    def check(self, hidden_size: int | None, mask_token: str = "[MASK]") -> VectorSpec:
        """This spec with its whitening and calibration files loaded, or a BertkitError whose message names
        the option and the fix (and whose `param` names the field). hidden_size None: only what needs no
        model (run it before loading one; run it again with the model's size)."""
        with naming("pooling" if self.pooling not in POOLING_MODES else "layers"):
            check_pooling(self.pooling, self.layer_list)
        if self.template is not None or self.pooling == "mask_prompt":
            with naming("template"):
                check_template(self.prompt, mask_token)
        whitening = self._checked_whitening(hidden_size)
        size = whitening.k if whitening is not None else hidden_size
        if size is not None:
            with naming("dimensions"):
                check_dimensions(self.dimensions, size)
        with naming("dtype"):
            check_dtype(self.dtype)
        with naming("calibration"):
            if self.calibration is not None and self.dtype not in ("int8", "uint8"):
                raise OptionError(f"calibration is for dtype int8 / uint8, not {self.dtype}: drop it")
            dims = self.dimensions or size
            pooling = None if whitening is not None else self.pooling  # whitened vectors are another space
            calibration = check_calibration(self.dtype, self.calibration, dims, pooling, self.unit)
        return replace(self, whitening=whitening, calibration=calibration)

    def _checked_whitening(self, hidden_size: int | None) -> Whitening | None:
        if self.whitening is None:
            return None
        with naming("whitening"):
            w = self.whitening if isinstance(self.whitening, Whitening) else Whitening.load(self.whitening)
            w.check_compatible(self.pooling, self.layer_list)
            if hidden_size is not None and w.dim != hidden_size:
                raise InputError(f"the whitening was fit on {w.dim}-dimensional vectors and this model gives "
                                 f"{hidden_size}: fit one on this model's vectors with `bertkit whiten`")
        return w

    # -- apply ---------------------------------------------------------------------------------------------

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Pooled (n, hidden) float32 vectors (pooled with `pool_normalize`) -> whitened, normalised, cut
        and quantised as the spec says (order and reasons in the module docstring). Plain float32 comes back
        as is. Call it on a checked spec: `spec.check(hidden_size).apply(...)`."""
        if isinstance(self.whitening, (str, Path)) or isinstance(self.calibration, (str, Path)):
            raise TypeError("VectorSpec.apply needs the checked spec (files loaded): spec.check(n).apply(v)")
        if self.whitening is not None:
            vectors = self.whitening.apply(vectors, normalize=self.normalize)
        if self.dimensions is not None:
            vectors = truncate(vectors, self.dimensions) if self.renormalize else \
                np.ascontiguousarray(vectors[:, : self.dimensions], dtype=np.float32)
        return quantize(vectors, self.dtype, self.calibration)

