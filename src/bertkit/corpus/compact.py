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

import numpy as np
import pyarrow as pa

from bertkit.corpus.spec import CorpusError, CorpusJob, EmbedOptions
from bertkit.vectors.post import VectorSpec

CALIBRATION_FILE = "calibration.npz"


def pin_calibration(job: CorpusJob) -> CorpusJob:
    """The job with its compact options checked and its calibration pinned (absolute path and digest)."""
    o = job.options
    if o.sparse and (o.dtype != "float32" or o.dimensions is not None):
        raise CorpusError("--sparse vectors are SPLADE weights; --dtype and --dimensions are for dense vectors")
    spec = o.vector_spec().check(None)  # what needs no model: the dtype, a calibration (int8 / uint8 only)
    if spec.calibration is None:
        return job
    path = str(Path(o.calibration).expanduser().resolve())
    return dataclasses.replace(job, options=dataclasses.replace(o, calibration=path,
                                                                calibration_digest=spec.calibration.digest))


def shard_spec(options: EmbedOptions, encoder) -> VectorSpec:
    """The checked steps after pooling the shards are made with (its calibration loaded), against the model;
    refused if the calibration file changed since the job was pinned."""
    spec = options.vector_spec().check(encoder.hidden_size, encoder.tokenizer.mask_token)
    cal = spec.calibration
    if cal is not None and options.calibration_digest not in (None, cal.digest):
        raise CorpusError(f"calibration file {options.calibration} changed since the job started; restore it, or "
                          "run the job again with --overwrite")
    return spec


def compact_columns(encoder, o: EmbedOptions, columns: dict[str, Any], codes: np.ndarray | None) -> pa.Table:
    """The shard table with an `embedding` column of codes (or truncated floats; None: no rows) and the schema
    metadata."""
    from bertkit.vectors.compact import NUMPY_DTYPES, PACKED

    dims = o.dimensions or encoder.hidden_size
    width = (dims + 7) // 8 if o.dtype in PACKED else dims
    if codes is None:
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
