"""BERT-whitening (Su et al., 2021): make sentence vectors isotropic with one affine map, optionally reducing them.

    x' = (x - mean) @ W,   W = U diag(1/sqrt(S)) [:, :k]   with  U S U^T = cov(x)

Whitening lives outside `Encoder`: fit it on vectors that `Encoder.encode` returned for unlabelled texts, save
it (a small .npz next to the model), and `apply` it to vectors from the same model and pooling.

    enc = Encoder.load()
    w = fit(enc.encode(texts, pooling="mean"), k=256, pooling="mean", model=enc.name)
    w.save("whitening-mean-k256.npz")
    vecs = Whitening.load("whitening-mean-k256.npz").apply(enc.encode(["a text"], pooling="mean"))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertkit.errors import InputError
from bertkit.outputs import atomic_write
from bertkit.pooling import normalize_rows
from bertkit.vectors.compact import npz_problem

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class Whitening:
    """BERT-whitening: `apply(vectors)` maps (n, H) vectors to (n, k) ones, zero mean, identity covariance."""

    mean: np.ndarray  # (H,) float64
    matrix: np.ndarray  # (H, k) float64
    meta: dict = field(default_factory=dict)  # pooling, layers, model, n_texts: checked or shown on use

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def k(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def pooling(self) -> str | None:
        return self.meta.get("pooling")

    @property
    def layers(self) -> list[int] | None:
        return self.meta.get("layers")

    def apply(self, vectors: np.ndarray, normalize: bool = False) -> np.ndarray:
        """(n, H) vectors -> (n, k) whitened float32 vectors (L2-normalised when asked)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(
                f"whitening expects vectors of size {self.dim} (it was fit on {self.meta.get('model', 'a model')} "
                f"with pooling={self.pooling}); got shape {vectors.shape}. Use the same model and pooling."
            )
        out = (vectors.astype(np.float64) - self.mean) @ self.matrix
        return normalize_rows(out) if normalize else out.astype(np.float32)

    def reduce(self, k: int) -> Whitening:
        """The same whitening keeping only the k leading directions (the SVD is sorted, so no refit is needed)."""
        if not 1 <= k <= self.k:
            raise InputError(f"k must be between 1 and {self.k} for this whitening; got {k}")
        return Whitening(self.mean, self.matrix[:, :k], {**self.meta, "k": k})

    def check_compatible(self, pooling: str, layers: Sequence[int] | None) -> None:
        """Refuse vectors pooled differently from those it was fit on: the statistics would not fit them."""
        want_layers = list(layers) if layers is not None else None
        if self.pooling is not None and (pooling != self.pooling or want_layers != self.layers):
            raise InputError(
                f"this whitening was fit on pooling={self.pooling}, layers={self.layers}; you asked for "
                f"pooling={pooling}, layers={want_layers}. Pass the same --pooling/--layers or fit a new one."
            )

    def save(self, path: str | Path) -> Path:
        """Write an .npz (arrays + JSON metadata, no pickles); temporary file then rename."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({**self.meta, "format_version": FORMAT_VERSION, "k": self.k, "dim": self.dim})
        return atomic_write(path, lambda tmp: np.savez(tmp, mean=self.mean, matrix=self.matrix, meta=np.array(meta)),
                            suffix=".npz")

    @classmethod
    def load(cls, path: str | Path) -> Whitening:
        """Read a whitening .npz (`bertkit whiten`); raises InputError when it is missing or not one."""
        path = Path(path)
        if path.is_dir():
            raise InputError(f"whitening file {path} is a folder; give the .npz that `bertkit whiten` wrote")
        if not path.is_file():
            raise InputError(f"whitening file {path} does not exist; "
                             f"create one with `bertkit whiten TEXTS --output {path}`")
        try:
            with np.load(path, allow_pickle=False) as z:
                mean, matrix, meta = z["mean"], z["matrix"], json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"{path} is not a bertkit whitening file ({npz_problem(e)})") from None
        if mean.ndim != 1 or matrix.ndim != 2 or matrix.shape[0] != mean.shape[0]:
            raise InputError(f"{path} is damaged: mean {mean.shape} and matrix {matrix.shape} do not match")
        return cls(mean, matrix, {**meta, "path": str(path)})


def fit(vectors: np.ndarray, k: int | None = None, eps: float = 1e-8, **meta) -> Whitening:
    """Mean and whitening matrix of (n, H) vectors; keep the k leading directions (None = all H)."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"whitening needs at least 2 vectors of shape (n, H); got {x.shape}")
    n, h = x.shape
    k = h if k is None else k
    if not 1 <= k <= h:
        raise InputError(f"k must be between 1 and the vector size {h}; got {k}")
    if n <= h:
        # The covariance is then rank-deficient: trailing directions are noise scaled up by 1/sqrt(~0).
        log.warning("fitting whitening on %d texts for %d dimensions; "
                    "use more texts than dimensions (or a small k)", n, h)
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)  # (H, H)
    u, s, _ = np.linalg.svd(cov)  # cov is symmetric PSD, so its SVD is its eigendecomposition, sorted
    matrix = u[:, :k] / np.sqrt(np.maximum(s[:k], eps))
    return Whitening(mean, matrix, {**meta, "n_texts": n})


def fit_texts(encoder, texts: Sequence[str], pooling: str = "mean", layers: Sequence[int] | None = None,
              k: int | None = None, batch_size: int = 32, progress: bool = False) -> Whitening:
    """Encode unlabelled texts with `encoder` and fit on their vectors; the metadata records how they were made."""
    vecs = encoder.encode(list(texts), pooling=pooling, layers=layers, batch_size=batch_size, progress=progress)
    return fit(vecs, k=k, pooling=pooling, layers=list(layers) if layers is not None else None, model=encoder.name)


def default_path(model_dir: str | Path, pooling: str, k: int | None) -> Path:
    """`whitening-<pooling>[-k<k>].npz` next to the model's files."""
    return Path(model_dir) / f"whitening-{pooling}{f'-k{k}' if k else ''}.npz"
