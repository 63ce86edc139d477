"""Compact vectors in embed-corpus: int8 / uint8 / binary / ubinary codes and truncated dimensions in the shards.

    bertkit calibrate ../shared/data/stsb/train.tsv --normalize -o cal.npz
    bertkit embed-corpus docs.txt emb --normalize --dtype int8 --calibration cal.npz

The job's options record `dtype`, `dimensions`, the calibration file and the digest of its ranges, so a rerun
with other settings (or a calibration file changed in place) is another job: refused, never mixed. Each
shard's `embedding` column is a fixed-size list of the codes (int8 / uint8; binary and ubinary hold
ceil(dims / 8) bytes), and its schema metadata repeats `bertkit.dtype`, `bertkit.dimensions` and
`bertkit.calibration` (the digest). The calibration is copied into the output folder as `calibration.npz`,
next to the codes; `read_calibration` refuses int8 codes without it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa

from bertkit.corpus.spec import CorpusError, CorpusJob, EmbedOptions

CALIBRATION_FILE = "calibration.npz"


def pin_calibration(job: CorpusJob) -> CorpusJob:
    """The job with its compact options checked and its calibration pinned (absolute path and digest)."""
    from bertkit.vectors.compact import CALIBRATED, Calibration, check_dtype

    o = job.options
    check_dtype(o.dtype)
    if o.sparse and (o.dtype != "float32" or o.dimensions is not None):
        raise CorpusError("--sparse vectors are SPLADE weights; --dtype and --dimensions are for dense vectors")
    if o.calibration is None:
        if o.dtype in CALIBRATED:
            raise CorpusError(f"--dtype {o.dtype} needs a calibration (per-dimension ranges): make one with "
                              "`bertkit calibrate TEXTS -o cal.npz` and pass --calibration cal.npz")
        return job
    if o.dtype not in CALIBRATED:
        raise CorpusError(f"--calibration is for --dtype int8 / uint8, not {o.dtype}")
    path = Path(o.calibration).expanduser().resolve()
    digest = Calibration.load(path).digest
    return dataclasses.replace(job, options=dataclasses.replace(o, calibration=str(path), calibration_digest=digest))


def shard_calibration(options: EmbedOptions, encoder):
    """The calibration the shards are encoded with (None without int8 / uint8), checked against the model and
    the options; refused if the file changed since the job was pinned."""
    from bertkit.vectors.compact import Calibration, check_compact

    cal = Calibration.load(options.calibration) if options.calibration is not None else None
    if cal is not None and options.calibration_digest not in (None, cal.digest):
        raise CorpusError(f"calibration file {options.calibration} changed since the job started; restore it, or "
                          "run the job again with --overwrite")
    return check_compact(options.dtype, options.dimensions, cal, encoder.hidden_size, options.pooling,
                         options.normalize)


def compact_columns(encoder, o: EmbedOptions, calibration, columns: dict[str, Any], texts: list[str]) -> pa.Table:
    """The shard table with an `embedding` column of codes (or truncated floats) and the schema metadata."""
    import numpy as np

    from bertkit.vectors.compact import NUMPY_DTYPES, PACKED

    dims = o.dimensions or encoder.hidden_size
    width = (dims + 7) // 8 if o.dtype in PACKED else dims
    if texts:
        codes = encoder.encode(texts, pooling=o.pooling, normalize=o.normalize, batch_size=o.batch_size,
                               dtype=o.dtype, dimensions=o.dimensions, calibration=calibration)
    else:
        codes = np.zeros((0, width), NUMPY_DTYPES[o.dtype])
    values = pa.array(codes.reshape(-1), pa.from_numpy_dtype(codes.dtype))
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(values, width)
    meta = {b"bertkit.dtype": o.dtype.encode(), b"bertkit.dimensions": str(dims).encode(),
            b"bertkit.calibration": (o.calibration_digest or "").encode(),
            b"bertkit.hidden_size": str(encoder.hidden_size).encode()}
    return pa.table(columns).replace_schema_metadata(meta)


def read_calibration(output_dir: str | Path, embedding: dict[str, Any]):
    """The calibration of an int8 / uint8 corpus, from its folder; None for other dtypes."""
    from bertkit.vectors.compact import CALIBRATED, Calibration, CalibrationError

    if embedding.get("dtype", "float32") not in CALIBRATED:
        return None
    path = Path(output_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise CalibrationError(f"{output_dir} holds {embedding['dtype']} codes but not their {CALIBRATION_FILE}; "
                               "the codes cannot be read without it: copy it back, or embed the corpus again")
    cal = Calibration.load(path)
    if embedding.get("calibration_digest") not in (None, cal.digest):
        raise CalibrationError(f"{path} is not the calibration {output_dir} was embedded with (digest "
                               f"{cal.digest}, the manifest says {embedding['calibration_digest']})")
    return cal
