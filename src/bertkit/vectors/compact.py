"""Compact sentence vectors: int8 / uint8 codes over calibrated ranges, packed sign bits, truncated dimensions.

    from bertkit.vectors.compact import calibrate
    cal = calibrate(enc, texts, normalize=True); cal.save("cal.npz")        # per-dimension ranges, a small file
    codes = enc.encode(texts, normalize=True, dtype="int8", calibration="cal.npz")   # (n, 384) int8
    bits = enc.encode(texts, normalize=True, dtype="ubinary")                # (n, 48) uint8, 32x smaller
    short = enc.encode(texts, dimensions=128)                                 # first 128, re-normalised

The layouts are sentence-transformers' (`quantize_embeddings`; tested equal):
- `ubinary`: `np.packbits(v > 0, axis=-1)`: one bit per dimension, dimension 0 in the highest bit of byte 0
  (numpy's big-endian bit order), the last byte padded with zero bits when dims is not a multiple of 8;
  shape (n, ceil(dims / 8)), uint8. Hamming distance between two rows counts the dimensions whose signs differ.
- `binary`: the same bytes shifted into int8: `ubinary - 128` (0 -> -128, 255 -> 127).
- `uint8`: per dimension, `floor((v - lo) / step)` clipped to 0..255, `step = (hi - lo) / 255`, with lo / hi the
  calibration's ranges (min and max of the calibration vectors); `int8` is `uint8 - 128`. `dequantize` maps a
  code back to the middle of its bin, so a value inside the ranges comes back within half a step.
- `dimensions=N` keeps the first N dimensions and L2-normalises them (Matryoshka truncation, as OpenAI's
  `dimensions` and bertkit's /v1/embeddings do); truncation comes before quantisation.

A calibration file (`Calibration.save`, `bertkit calibrate`) is an .npz with `ranges` (2, dims) float32 and a
JSON `meta` (model, pooling, layers, whether the vectors were unit length, dimensions, how many texts). Codes
written by bertkit keep it beside them (`<output stem>.calibration.npz`, a corpus's `calibration.npz`, an
index's `calibration.npz`); `load_vectors` refuses int8 codes whose calibration is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import CalibrationError, OptionError
from bertkit.outputs import atomic_write
from bertkit.pooling import normalize_rows

log = logging.getLogger(__name__)

FLOAT = "float32"
DTYPES = ("float32", "int8", "uint8", "binary", "ubinary")
CALIBRATED = ("int8", "uint8")
PACKED = ("binary", "ubinary")
NUMPY_DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}


@dataclass
class Calibration:
    """Per-dimension ranges for int8 / uint8 codes: row 0 the minimum, row 1 the maximum of each dimension."""

    ranges: np.ndarray  # (2, dims) float32
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.ranges.shape[1])

    @property
    def steps(self) -> np.ndarray:
        """Bin width per dimension ((hi - lo) / 255; 1 where a dimension never varied), as sentence-transformers."""
        steps = (self.ranges[1] - self.ranges[0]) / 255
        return np.where(steps == 0, 1, steps).astype(np.float32)

    @property
    def digest(self) -> str:
        """What the codes depend on: sha256 of the ranges (little-endian float32), 16 hex digits."""
        return hashlib.sha256(np.ascontiguousarray(self.ranges, "<f4").tobytes()).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write the .npz through a temporary file and a rename."""
        ranges, meta = self.ranges.astype(np.float32), np.array(json.dumps(self.meta))
        return atomic_write(Path(path).expanduser(), lambda tmp: np.savez(tmp, ranges=ranges, meta=meta), suffix=".npz")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration .npz (`bertkit calibrate`); CalibrationError when it is missing or bad."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise CalibrationError(f"calibration file {path} is a folder; give the .npz that `bertkit calibrate` wrote")
        if not path.is_file():
            raise CalibrationError(f"calibration file {path} does not exist; make one with `bertkit calibrate`")
        try:
            with np.load(path, allow_pickle=False) as z:
                ranges, meta = z["ranges"].astype(np.float32), json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError) as e:
            raise CalibrationError(f"{path} is not a bertkit calibration file ({npz_problem(e)}); make one with "
                                   "`bertkit calibrate`") from None
        if ranges.ndim != 2 or ranges.shape[0] != 2:
            raise CalibrationError(f"{path}: ranges have shape {ranges.shape}, expected (2, dims)")
        return cls(ranges, {**meta, "path": str(path)})

    def check(self, dims: int | None, pooling: str | None = None, unit: bool | None = None) -> None:
        """Refuse vectors this calibration was not fit on: another size (None: not known yet), pooling or
        normalisation."""
        made = f"fit on {self.meta.get('texts', '?')} texts, {self.dim} dimensions"
        if dims is not None and dims != self.dim:
            raise CalibrationError(f"the calibration has {self.dim} dimensions ({made}), the vectors {dims}; "
                                   f"calibrate with the same model and dimensions")
        for key, want in (("pooling", pooling), ("unit", unit)):
            have = self.meta.get(key)
            if want is not None and have is not None and have != want:
                what = {"pooling": f"pooling {have!r}, not {want!r}", "unit": "unit-length vectors"
                        if have else "raw (not normalised) vectors"}[key]
                raise CalibrationError(f"the calibration was fit on {what}: calibrate the vectors the way "
                                       "they are encoded (same --pooling, --normalize, --dimensions)")


def fit(vectors: np.ndarray, **meta: Any) -> Calibration:
    """Ranges (min, max per dimension) of calibration vectors, as sentence-transformers computes them."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise CalibrationError(f"calibration needs at least 2 vectors, got {len(vectors)}; use a few hundred texts")
    if len(vectors) < 100:
        log.warning("calibrating int8 ranges on %d vectors; a few hundred or more give steadier ranges", len(vectors))
    return Calibration(np.vstack([vectors.min(0), vectors.max(0)]), {"texts": len(vectors), **meta})


def calibrate(encoder, texts: Sequence[str], pooling: str = "mean", layers: Sequence[int] | None = None,
              normalize: bool = False, dimensions: int | None = None, **encode_options: Any) -> Calibration:
    """Fit int8 / uint8 ranges on the vectors of `texts`, encoded exactly as the codes will be."""
    check_dimensions(dimensions, encoder.hidden_size)
    vectors = encoder.encode(list(texts), pooling=pooling, layers=layers, normalize=normalize, **encode_options)
    if dimensions is not None:
        vectors = truncate(vectors, dimensions)
    return fit(vectors, model=encoder.name, pooling=pooling, layers=list(layers) if layers else None,
               unit=bool(normalize or dimensions is not None), dimensions=dimensions)


# -- options ---------------------------------------------------------------------------------------------------


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise OptionError(f"dtype {dtype!r} is unknown; use one of {', '.join(DTYPES)}")
    return dtype


def check_dimensions(dimensions: int | None, hidden: int) -> None:
    if dimensions is None:
        return
    whole = isinstance(dimensions, (int, np.integer)) and not isinstance(dimensions, bool)
    if not whole or not 1 <= dimensions <= hidden:
        raise OptionError(f"dimensions must be between 1 and {hidden} (the vectors' size), got {dimensions}: "
                          "ask for fewer dimensions, or leave dimensions out for all of them")


def as_calibration(calibration: Calibration | str | Path | None) -> Calibration | None:
    if calibration is None or isinstance(calibration, Calibration):
        return calibration
    return Calibration.load(calibration)


def check_calibration(dtype: str, calibration: Calibration | str | Path | None, dims: int | None,
                      pooling: str | None = None, unit: bool | None = None) -> Calibration | None:
    """The loaded calibration that int8 / uint8 codes of these vectors need (None for other dtypes), refused
    when missing or fit on other vectors (another size, pooling or normalisation; dims None: not known)."""
    if dtype not in CALIBRATED:
        return None
    if calibration is None:
        raise CalibrationError(f"dtype {dtype} needs a calibration (per-dimension ranges): make one with "
                               "`bertkit calibrate TEXTS -o cal.npz` and pass it (--calibration cal.npz)")
    cal = as_calibration(calibration)
    cal.check(dims, pooling, unit)
    return cal


# -- the transforms ----------------------------------------------------------------------------------------------


def truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first `dimensions` of each row, L2-normalised."""
    cut = np.asarray(vectors, dtype=np.float32)[:, :dimensions]
    return normalize_rows(cut)


def quantize(vectors: np.ndarray, dtype: str, calibration: Calibration | None = None) -> np.ndarray:
    """Float vectors to `dtype` codes (layouts in the module docstring)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    check_dtype(dtype)
    if dtype == FLOAT:
        return vectors
    if dtype in PACKED:
        packed = np.packbits(vectors > 0, axis=-1)
        return packed if dtype == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    if calibration is None:
        raise CalibrationError(f"dtype {dtype} needs a calibration; see `bertkit calibrate`")
    if vectors.shape[1] != calibration.dim:
        calibration.check(vectors.shape[1])
    codes = np.clip(np.floor((vectors - calibration.ranges[0]) / calibration.steps), 0, 255)
    return codes.astype(np.uint8) if dtype == "uint8" else (codes - 128).astype(np.int8)


def to_ubinary(codes: np.ndarray) -> np.ndarray:
    """binary (int8) or ubinary (uint8) codes as ubinary bytes, the layout FAISS's binary indexes read."""
    codes = np.asarray(codes)
    return codes if codes.dtype == np.uint8 else (codes.astype(np.int16) + 128).astype(np.uint8)


def dequantize(codes: np.ndarray, dtype: str, calibration: Calibration | None = None,
               dims: int | None = None) -> np.ndarray:
    """Codes back to float32: int8 / uint8 to their bin's middle; binary / ubinary to +1 / -1 per dimension."""
    check_dtype(dtype)
    codes = np.asarray(codes)
    if dtype == FLOAT:
        return codes.astype(np.float32)
    if dtype in PACKED:
        bits = np.unpackbits(to_ubinary(codes), axis=-1, count=dims)
        return bits.astype(np.float32) * 2 - 1
    if calibration is None:
        raise CalibrationError(f"{dtype} codes need their calibration to be read as vectors; it is the "
                               "calibration file saved next to them")
    q = codes.astype(np.float32) + (128 if dtype == "int8" else 0)
    return calibration.ranges[0] + (q + 0.5) * calibration.steps


# -- files -------------------------------------------------------------------------------------------------------


def calibration_path(output: str | Path) -> Path:
    """Where the calibration of codes written to `output` lives: `<stem>.calibration.npz` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}.calibration.npz")


def load_vectors(path: str | Path, dtype: str | None = None) -> tuple[np.ndarray, str, Calibration | None]:
    """Vectors written by `bertkit encode` (.npy / .parquet / .jsonl): (codes or floats, dtype, calibration).

    The dtype is read from a Parquet file's schema; for .npy / .jsonl an integer array is int8 / uint8 codes
    when its calibration file lies beside it, else pass dtype="binary" / "ubinary". int8 / uint8 codes
    without their calibration file are refused: they cannot be compared or read back without it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CalibrationError(f"{path} does not exist")
    stored = None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["embedding"])
        stored = (table.schema.metadata or {}).get(b"bertkit.dtype", b"").decode() or None
        emb = table.column("embedding").combine_chunks()
        values = emb.flatten().to_numpy(zero_copy_only=False)
        codes = values.reshape(-1, emb.type.list_size) if len(emb) else values.reshape(0, emb.type.list_size)
    elif path.suffix == ".npy":
        codes = np.load(path, allow_pickle=False)
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        stored = rows[0].get("dtype") if rows else None
        codes = np.array([r["embedding"] for r in rows])
    dtype = dtype or stored
    side = calibration_path(path)
    if dtype is None:
        dtype = FLOAT if codes.dtype.kind == "f" else (str(codes.dtype) if side.is_file() else None)
    if dtype is None:
        raise CalibrationError(f"{path} holds {codes.dtype} codes and no calibration file {side.name} lies beside "
                               "it: int8 / uint8 codes cannot be read without it (copy it there); for packed bits "
                               "pass dtype='binary' or 'ubinary'")
    check_dtype(dtype)
    if dtype not in CALIBRATED:
        return codes.astype(NUMPY_DTYPES[dtype]), dtype, None
    if not side.is_file():
        raise CalibrationError(f"{path} holds {dtype} codes, but their calibration {side.name} is not beside it: "
                               "codes cannot be read without the ranges they were made with")
    return codes.astype(NUMPY_DTYPES[dtype]), dtype, Calibration.load(side)


def npz_problem(e: Exception) -> str:
    """What np.load's error means to a user: numpy calls any file that is not .npy / .npz "pickled data"."""
    return "not an .npz file" if "pickled" in str(e) else f"{type(e).__name__}: {e}"


def save_vectors(path: str | Path, texts: list[str], codes: np.ndarray, dtype: str,
                 calibration: Calibration | str | Path | None = None) -> None:
    """Compact codes to .npy / .jsonl / .parquet (through a temporary file and a rename), the dtype recorded
    (Parquet schema, a `dtype` per JSON line) and, for int8 / uint8, the calibration saved beside them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)

    def write(tmp: Path) -> None:
        if path.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, codes)
        elif path.suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": t, "dtype": dtype, "embedding": v.tolist()}) + "\n"
                             for t, v in zip(texts, codes))
        else:
            arrow = pa.from_numpy_dtype(codes.dtype)
            emb = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1), arrow), codes.shape[1])
            table = pa.table({"text": texts, "embedding": emb})
            pq.write_table(table.replace_schema_metadata({b"bertkit.dtype": dtype.encode()}), tmp)
        if calibration is not None and dtype in CALIBRATED:  # beside the codes, before they are renamed in
            as_calibration(calibration).save(calibration_path(path))

    atomic_write(path, write)
