"""What the command groups share: the options every command spells the same way, the one way to load an
encoder, reading texts from a file or stdin, and writing vectors without clobbering an existing file."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

log = logging.getLogger("bertkit")

ModelOpt = typer.Option(None, "--model", "-m", help="Model folder or hub id (default: packaged all-MiniLM-L6-v2).")
PoolingOpt = typer.Option("mean", "--pooling", "-p",
                          help="cls|pooler|mean|max|mean_sqrt_len|first_last_avg|mask_prompt")
LayersOpt = typer.Option(None, "--layers", "-l", help="Hidden states to average (0 = embeddings, -1 = last); repeat.")
# The choices of backends.PRECISIONS / BACKENDS (not imported here: that would load torch for every command).
PRECISIONS, BACKENDS = ("fp32", "bf16", "int8", "int8-static"), ("torch", "onnx")


def one_of(what: str, choices: tuple[str, ...]):
    """An option callback refusing a value that is not one of `choices` before anything loads: one line, exit 2
    (the same OptionError, and words, as backends.check_options)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            from bertkit.errors import OptionError

            raise OptionError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
        return value

    return check


PrecisionOpt = typer.Option("fp32", "--precision", metavar="[fp32|bf16|int8|int8-static]",
                            callback=one_of("precision", PRECISIONS), help="fp32 (exact) | bf16 | int8 | int8-static "
                            "(onnx, calibrated): faster, approximate; slower than fp32 on this CPU falls back to fp32.")
BackendOpt = typer.Option("torch", "--backend", metavar="[torch|onnx]", callback=one_of("backend", BACKENDS),
                          help="torch | onnx (ONNX Runtime, exported and cached once).")
FormatOpt = typer.Option(None, "--format", "-f",
                         help="stsb|sick|mrpc|csv|tsv|jsonl (inferred from the file when omitted).")
SkipRowsOpt = typer.Option(False, "--skip-bad-rows", help="Skip malformed rows (reported with their line numbers).")

OUTPUT_SUFFIXES = (".npy", ".jsonl", ".parquet")


def load_encoder(model: str | None, precision: str | None = None, backend: str | None = None,
                 device: str | None = None, process: bool = False):
    """The one way the CLI loads an encoder: `Encoder.load`, with precision / backend when given (None keeps
    Encoder.load's defaults, fp32 on torch). Unknown values are refused there with an OptionError."""
    from bertkit.encoder import Encoder

    modes = {k: v for k, v in {"precision": precision, "backend": backend}.items() if v is not None}
    return Encoder.load(model, device, process=process, **modes)


def load_cross_encoder(folder):
    """The one way the CLI loads a cross-encoder (`rerank`, `search --rerank`, `serve --reranker`): a folder that
    is not a one-output pair model is refused with a NotACrossEncoderError."""
    from bertkit.heads.rerank import CrossEncoder

    return CrossEncoder.load(folder)


MAX_LINE_BYTES = 100_000  # a longer input line is refused before it is read whole (far past any model's limit)


def read_lines(path: str, skip_bad_lines: bool, max_line_bytes: int = MAX_LINE_BYTES, *,
               can_skip: bool = True) -> list[str]:
    """One text per line from a file, a FIFO (`<(cmd)`) or stdin ('-'), read a line at a time. A line that is
    not valid UTF-8, is blank (or holds only control / zero-width characters), or is over max_line_bytes
    (refused before it is held in memory) is an error naming the line, or, with --skip-bad-lines, skipped with
    a warning and a count. can_skip=False: the command has no --skip-bad-lines, so errors don't suggest it."""
    from bertkit.errors import InputError

    if path == "-":
        return _read_lines(sys.stdin.buffer, "stdin", skip_bad_lines, max_line_bytes, can_skip)
    p = Path(path)
    if p.is_dir():
        raise InputError(f"input {path} is a folder; pass a file with one text a line, or - for stdin")
    if not p.exists():
        raise InputError(f"input file {path} does not exist; pass an existing file, or - for stdin")
    try:
        with open(p, "rb") as f:
            return _read_lines(f, path, skip_bad_lines, max_line_bytes, can_skip)
    except PermissionError:
        raise InputError(f"input file {path} cannot be read (permission denied); pass a readable file") from None


def _read_lines(f, name: str, skip_bad_lines: bool, max_line_bytes: int, can_skip: bool = True) -> list[str]:
    from bertkit.errors import InputError
    from bertkit.tokenizer import is_visible

    texts, skipped = [], []
    n = 0
    while True:
        line = f.readline(max_line_bytes + 1)
        if not line:
            break
        n += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            why = f"is longer than {max_line_bytes:,} bytes (--max-line-bytes)"
            while skip_bad_lines and line and not line.endswith(b"\n"):  # the rest is read and dropped, never held
                line = f.readline(1 << 20)
        else:
            line = line.rstrip(b"\r\n")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                text, why = None, f"is not valid UTF-8 (byte {e.start})"
            if text is not None:
                text = text.removeprefix("\ufeff") if n == 1 else text
                why = None if is_visible(text) else "is empty (or only whitespace, control or zero-width characters)"
        if why is None:
            texts.append(text)
            continue
        if not skip_bad_lines:
            hint = " or pass --skip-bad-lines" if can_skip else ""
            raise InputError(f"{name}: line {n} {why}; fix the file{hint}")
        skipped.append(n)
    if skipped:
        log.warning(
            "skipped %d bad line(s) of %s (invalid UTF-8, blank or too long): %s%s",
            len(skipped), name, ", ".join(map(str, skipped[:10])), " ..." if len(skipped) > 10 else "",
        )
    return texts


def write_vectors(path: Path, texts: list[str], vectors) -> None:
    """Write to a temporary file first, then rename: a failed run never clobbers an existing output."""
    from bertkit.outputs import atomic_write

    atomic_write(path, lambda tmp: _write_vectors(tmp, path.suffix, texts, vectors))


def _write_vectors(tmp: Path, suffix: str, texts: list[str], vectors) -> None:
    import numpy as np

    if suffix == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    elif suffix == ".jsonl":
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t, "embedding": v.tolist()}) + "\n" for t, v in zip(texts, vectors))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        dim = vectors.shape[1]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        pq.write_table(pa.table({"text": texts, "embedding": emb}), tmp)
