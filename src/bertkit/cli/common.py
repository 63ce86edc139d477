"""What the command groups share: the options every command spells the same way, the one way to load an
encoder, reading texts from a file or stdin, and writing vectors without clobbering an existing file."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer

log = logging.getLogger("bertkit")

ModelOpt = typer.Option(None, "--model", "-m", help="Model folder or hub id (default: packaged all-MiniLM-L6-v2).")
PoolingOpt = typer.Option("mean", "--pooling", "-p", help="cls|pooler|mean|max|mean_sqrt_len|first_last_avg|mask_prompt")
LayersOpt = typer.Option(None, "--layers", "-l", help="Hidden states to average (0 = embeddings, -1 = last); repeat.")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32 (exact) | bf16 | int8: faster, approximate.")
BackendOpt = typer.Option("torch", "--backend", help="torch | onnx (ONNX Runtime, exported and cached once).")
FormatOpt = typer.Option(None, "--format", "-f", help="stsb|sick|mrpc|csv|tsv|jsonl (inferred from the file when omitted).")
SkipRowsOpt = typer.Option(False, "--skip-bad-rows", help="Skip malformed rows (reported with their line numbers).")

OUTPUT_SUFFIXES = (".npy", ".jsonl", ".parquet")


def load_encoder(model: str | None, precision: str | None = None, backend: str | None = None,
                 device: str | None = None):
    """The one way the CLI loads an encoder: `Encoder.load`, with precision / backend when given (None keeps
    Encoder.load's defaults, fp32 on torch). Unknown values are refused there with an OptionError."""
    from bertkit.encoder import Encoder

    modes = {k: v for k, v in {"precision": precision, "backend": backend}.items() if v is not None}
    return Encoder.load(model, device, **modes)


def load_cross_encoder(folder):
    """The one way the CLI loads a cross-encoder (`rerank`, `search --rerank`, `serve --reranker`): a folder that
    is not a one-output pair model is refused with a NotACrossEncoderError."""
    from bertkit.rerank import CrossEncoder

    return CrossEncoder.load(folder)


def read_lines(path: str, skip_bad_lines: bool) -> list[str]:
    """One text per line from a file or stdin ('-'). Invalid UTF-8 or blank lines are errors naming the line,
    or, with --skip-bad-lines, skipped with a warning and a count."""
    from bertkit.errors import InputError

    if path == "-":
        raw = sys.stdin.buffer.read()
        name = "stdin"
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"input file {path} does not exist; pass an existing file, or - for stdin")
        raw = p.read_bytes()
        name = path
    texts, skipped = [], []
    for n, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            if not skip_bad_lines:
                raise InputError(
                    f"{name}: line {n} is not valid UTF-8 (byte {e.start}); fix the file or pass --skip-bad-lines"
                ) from None
            skipped.append(n)
            continue
        if n == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            if not skip_bad_lines:
                raise InputError(f"{name}: line {n} is empty; remove blank lines or pass --skip-bad-lines")
            skipped.append(n)
            continue
        texts.append(text)
    if skipped:
        log.warning(
            "skipped %d bad line(s) of %s (invalid UTF-8 or blank): %s%s",
            len(skipped), name, ", ".join(map(str, skipped[:10])), " ..." if len(skipped) > 10 else "",
        )
    return texts


def write_vectors(path: Path, texts: list[str], vectors) -> None:
    """Write to a temporary file first, then rename: a failed run never clobbers an existing output."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors)
        elif path.suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": t, "embedding": v.tolist()}) + "\n" for t, v in zip(texts, vectors))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            dim = vectors.shape[1]
            emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
            pq.write_table(pa.table({"text": texts, "embedding": emb}), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
