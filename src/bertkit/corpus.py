"""Embed a corpus (JSONL / CSV / TSV / Parquet / text) into Parquet shards with a manifest.

    from bertkit.corpus import CorpusJob, embed_corpus
    embed_corpus(CorpusJob("docs.jsonl", "out/", text_column="body", normalize=True))

The input is cut into shards of `shard_rows` consecutive rows. A first, cheap pass over the file records
where each shard starts (a byte offset for line formats, a row number for Parquet), so that every engine
reads exactly the same rows into exactly the same shard, and a restarted run seeks straight past the
shards that are done. Each shard is embedded and written as `part-NNNNN.parquet` through a temporary file
and a rename: a shard file that exists is complete. `manifest.json` records the job (input, model,
options) and the shard plan; it says `"complete": true` once every shard is there.

Memory stays flat in the corpus size: only one shard of texts and vectors is held at a time.

Output columns: `row` (0-based row of the input), `id` (the --id-column value as a string, or the row
number), `text_hash` (sha256 of the UTF-8 text), `embedding` (fixed-size list of float32); with chunking
also `chunk`, `start`, `end` (character offsets of the chunk in the text); with keep_text also `text`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertkit.errors import BertkitError, InputError, OptionError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "bertkit-corpus/1"
SUFFIX_FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".text": "text",
}
FORMATS = ("jsonl", "csv", "tsv", "parquet", "text")
ENGINES = ("local", "ray")
# csv's default 128 KiB field limit would reject long documents, which are exactly what chunking is for.
csv.field_size_limit(2**31 - 1)


class CorpusError(BertkitError):
    """A corpus job that cannot run as asked: bad input columns, an output folder from another job."""


@dataclass(frozen=True)
class Source:
    """Where the texts come from and how to read them."""

    path: str
    format: str
    text_column: str | None = None  # None for text files; a name, or a 0-based index for headerless CSV/TSV
    id_column: str | None = None
    header: bool = True  # CSV/TSV only


@dataclass(frozen=True)
class Shard:
    index: int
    first_row: int
    rows: int  # input rows, bad ones included
    offset: int  # byte offset of the first row (line formats); 0 for Parquet

    @property
    def file(self) -> str:
        return f"part-{self.index:05d}.parquet"


@dataclass(frozen=True)
class EmbedOptions:
    """Everything that decides the vectors; a resumed run must use the same."""

    model: str | None = None
    pooling: str = "mean"
    normalize: bool = False
    batch_size: int = 32
    chunk_tokens: int | None = None
    chunk_overlap: int = 0
    keep_text: bool = False
    precision: str | None = None  # None: Encoder.load's default (fp32 / torch); kept None in manifests
    backend: str | None = None


@dataclass
class CorpusJob:
    input: str | Path
    output_dir: str | Path
    text_column: str | None = None
    id_column: str | None = None
    format: str | None = None  # inferred from the suffix when None
    header: bool = True
    shard_rows: int = 4096
    skip_bad_rows: bool = False
    overwrite: bool = False
    options: EmbedOptions = field(default_factory=EmbedOptions)


@dataclass
class CorpusResult:
    output_dir: Path
    shards: int
    written: int  # shards embedded by this run (the rest were already done)
    rows: int  # output rows (chunks when chunking)
    skipped: int  # bad input rows skipped


# -- reading -----------------------------------------------------------------------------------------------


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise CorpusError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
        return fmt
    try:
        return SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise CorpusError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}; pass --format "
            f"({'|'.join(FORMATS)})"
        ) from None


def make_source(job: CorpusJob) -> Source:
    path = Path(job.input).expanduser()
    if not path.is_file():
        raise InputError(f"input {path} does not exist; pass an existing JSONL, CSV, TSV, Parquet or text file")
    fmt = detect_format(path, job.format)
    text_column = job.text_column
    if fmt == "text":
        if text_column is not None or job.id_column is not None:
            raise CorpusError("a text file has one text a line and no columns; drop --text-column / --id-column")
    elif text_column is None:
        text_column = "text" if fmt not in ("csv", "tsv") or job.header else "0"
    return Source(str(path.resolve()), fmt, text_column, job.id_column, job.header)


def _lines(path: str, offset: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line) from `offset` on; binary iteration is buffered and fast."""
    with open(path, "rb") as f:
        f.seek(offset)
        pos = offset
        for line in f:
            yield pos, line
            pos += len(line)


def _decode_line(raw: bytes, offset: int) -> str | None:
    """The line's text without its line ending; None when it is not valid UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if offset == 0:
        text = text.removeprefix("\ufeff")
    return text.rstrip("\r\n")


def _csv_records(source: Source, offset: int) -> Iterator[tuple[int, list[str]]]:
    """(byte offset, fields) per CSV/TSV record; a quoted field may span lines, so offsets follow the
    lines the csv reader actually consumed."""
    consumed = [offset]

    def lines() -> Iterator[str]:
        for pos, raw in _lines(source.path, offset):
            consumed[0] = pos + len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{source.path}: bytes {pos}-{pos + len(raw)} are not valid UTF-8 ({e.reason}); fix the file"
                ) from None
            yield text.removeprefix("\ufeff") if pos == 0 else text

    if source.format == "tsv":
        # TSV files (AG News, STS-B) are not quoted: a '"' is part of the text.
        reader = csv.reader(lines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines())
    start = offset
    for record in reader:
        yield start, record
        start = consumed[0]


def _csv_layout(source: Source) -> tuple[int, int, int | None]:
    """(byte offset of the first data record, text column index, id column index)."""
    if not source.header:
        names: list[str] | None = None
        data_offset = 0
    else:
        first = next(_csv_records(source, 0), None)
        if first is None:
            raise InputError(f"{source.path} is empty; it needs a header line and rows")
        names = first[1]
        data_offset = _offset_after_first(source)

    def index_of(col: str, what: str) -> int:
        if names is None:
            if not col.isdigit():
                raise CorpusError(f"--{what}-column {col!r}: without a header columns are 0-based numbers")
            return int(col)
        if col in names:
            return names.index(col)
        raise CorpusError(f"--{what}-column {col!r} is not in the header of {source.path}: {names}")

    assert source.text_column is not None
    text_idx = index_of(source.text_column, "text")
    id_idx = index_of(source.id_column, "id") if source.id_column is not None else None
    return data_offset, text_idx, id_idx


def _offset_after_first(source: Source) -> int:
    records = _csv_records(source, 0)
    next(records)
    nxt = next(records, None)
    return nxt[0] if nxt is not None else os.path.getsize(source.path)


def _record_offsets(source: Source) -> Iterator[int]:
    """The byte offset of every input row (line formats)."""
    if source.format in ("csv", "tsv"):
        data_offset = _csv_layout(source)[0]
        for pos, _ in _csv_records(source, data_offset):
            yield pos
    else:
        for pos, _ in _lines(source.path, 0):
            yield pos


def plan_shards(source: Source, shard_rows: int) -> list[Shard]:
    """One pass over the input: where each shard of `shard_rows` rows starts."""
    if shard_rows < 1:
        raise OptionError(f"shard_rows must be >= 1, got {shard_rows}")
    if source.format == "parquet":
        pf = pq.ParquetFile(source.path)
        missing = [c for c in (source.text_column, source.id_column) if c and c not in pf.schema_arrow.names]
        if missing:
            raise CorpusError(f"column(s) {missing} not in {source.path}; it has {pf.schema_arrow.names}")
        total = pf.metadata.num_rows
        return [Shard(i, s, min(shard_rows, total - s), 0) for i, s in enumerate(range(0, total, shard_rows))]
    shards: list[Shard] = []
    row = 0
    for pos in _record_offsets(source):
        if row % shard_rows == 0:
            shards.append(Shard(len(shards), row, 0, pos))
        row += 1
    last = row - 1
    return [
        Shard(s.index, s.first_row, (shards[i + 1].first_row if i + 1 < len(shards) else last + 1) - s.first_row, s.offset)
        for i, s in enumerate(shards)
    ]


def _bad(source: Source, row: int, why: str) -> InputError:
    return InputError(f"{source.path}: row {row} {why}; fix it or pass --skip-bad-rows to skip such rows")


def _text_of(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _raw_rows(source: Source, shard: Shard) -> Iterator[tuple[int, Any, Any]]:
    """(row, text or None when bad, id value) for the rows of one shard."""
    end = shard.first_row + shard.rows
    if source.format == "parquet":
        yield from _parquet_rows(source, shard)
        return
    if source.format in ("csv", "tsv"):
        _, text_idx, id_idx = _csv_layout(source)
        records = _csv_records(source, shard.offset)
        for row, (_, rec) in zip(range(shard.first_row, end), records):
            text = _text_of(rec[text_idx]) if len(rec) > text_idx else None
            ident = rec[id_idx] if id_idx is not None and len(rec) > id_idx else row
            yield row, text, ident
        return
    for row, (pos, raw) in zip(range(shard.first_row, end), _lines(source.path, shard.offset)):
        line = _decode_line(raw, pos)
        if source.format == "text" or line is None:
            yield row, _text_of(line), row
            continue
        try:
            obj = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            yield row, None, row
            continue
        if source.text_column not in obj:
            raise CorpusError(f"{source.path}: row {row} has no {source.text_column!r} key (keys: {sorted(obj)}); "
                              "pass --text-column")
        if source.id_column is not None and source.id_column not in obj:
            raise CorpusError(f"{source.path}: row {row} has no {source.id_column!r} key; pass --id-column")
        yield row, _text_of(obj[source.text_column]), obj[source.id_column] if source.id_column else row


def _parquet_rows(source: Source, shard: Shard) -> Iterator[tuple[int, Any, Any]]:
    pf = pq.ParquetFile(source.path)
    columns = [c for c in (source.text_column, source.id_column) if c]
    # Start at the row group holding the shard's first row; earlier groups are never read.
    group_start, first_group = 0, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if group_start + n > shard.first_row:
            first_group = g
            break
        group_start += n
    row = group_start
    end = shard.first_row + shard.rows
    groups = list(range(first_group, pf.metadata.num_row_groups))
    for batch in pf.iter_batches(batch_size=8192, row_groups=groups, columns=columns):
        texts = batch.column(source.text_column).to_pylist()
        ids = batch.column(source.id_column).to_pylist() if source.id_column else None
        for i, text in enumerate(texts):
            if row >= end:
                return
            if row >= shard.first_row:
                yield row, _text_of(text), ids[i] if ids is not None else row
            row += 1


def read_shard(source: Source, shard: Shard, skip_bad_rows: bool) -> tuple[list[int], list[str], list[str], int]:
    """(rows, ids, texts, number skipped) of one shard. Bad rows (empty, missing or undecodable text) are
    errors naming the row, or skipped and counted."""
    rows, ids, texts, skipped = [], [], [], 0
    for row, text, ident in _raw_rows(source, shard):
        if text is None:
            if not skip_bad_rows:
                raise _bad(source, row, "has no text (empty, missing, or not valid UTF-8 / JSON)")
            skipped += 1
            continue
        rows.append(row)
        ids.append(str(ident))
        texts.append(text)
    return rows, ids, texts, skipped


# -- embedding -----------------------------------------------------------------------------------------------


def load_encoder(options: EmbedOptions, device: str | None = None):
    """The encoder the options name, in their precision / backend (None: Encoder.load's fp32 / torch)."""
    from bertkit.encoder import Encoder

    return Encoder.load(options.model, device, precision=options.precision or "fp32", backend=options.backend or "torch")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_chunking(options: EmbedOptions, max_length: int) -> None:
    if options.chunk_tokens is None:
        return
    limit = max_length - 2  # [CLS] and [SEP]
    if not 1 <= options.chunk_tokens <= limit:
        raise CorpusError(f"--chunk-tokens {options.chunk_tokens}: must be between 1 and {limit} for this model")
    if not 0 <= options.chunk_overlap < options.chunk_tokens:
        raise CorpusError(f"--chunk-overlap {options.chunk_overlap}: must be >= 0 and below --chunk-tokens")


class ShardEmbedder:
    """Turns the rows of a shard into the output table. Used by both engines, so they agree exactly."""

    def __init__(self, encoder, options: EmbedOptions):
        self.encoder = encoder
        self.options = options
        check_chunking(options, encoder.max_length)
        self._chunker = None
        if options.chunk_tokens is not None:
            from tokenizers import Tokenizer

            # A truncation-free copy: the windows must cover the whole text.
            self._chunker = Tokenizer.from_str(encoder.tokenizer.tokenizer.to_str())
            self._chunker.no_truncation()

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of overlapping windows of chunk_tokens wordpieces; one span for a short text."""
        size, overlap = self.options.chunk_tokens, self.options.chunk_overlap
        offsets = self._chunker.encode(text, add_special_tokens=False).offsets
        if len(offsets) <= size:
            return [(0, len(text))]
        spans = []
        for start in range(0, len(offsets), size - overlap):
            end = min(start + size, len(offsets))
            spans.append((offsets[start][0], offsets[end - 1][1]))
            if end == len(offsets):
                break
        return spans

    def embed(self, rows: list[int], ids: list[str], texts: list[str]) -> pa.Table:
        o = self.options
        columns: dict[str, Any] = {"row": pa.array(rows, pa.int64()), "id": pa.array(ids, pa.string())}
        if self._chunker is not None:
            expanded = [(i, s, e) for i, t in enumerate(texts) for s, e in self.spans(t)]
            src = [i for i, _, _ in expanded]
            chunk_texts = [texts[i][s:e] for i, s, e in expanded]
            chunk_no = [0] * len(expanded)
            for k in range(1, len(expanded)):
                chunk_no[k] = chunk_no[k - 1] + 1 if src[k] == src[k - 1] else 0
            columns = {"row": pa.array([rows[i] for i in src], pa.int64()), "id": pa.array([ids[i] for i in src])}
            columns["chunk"] = pa.array(chunk_no, pa.int32())
            columns["start"] = pa.array([s for _, s, _ in expanded], pa.int32())
            columns["end"] = pa.array([e for _, _, e in expanded], pa.int32())
            hashes = [text_hash(t) for t in texts]
            columns["text_hash"] = pa.array([hashes[i] for i in src], pa.string())
            to_embed = chunk_texts
        else:
            columns["text_hash"] = pa.array([text_hash(t) for t in texts], pa.string())
            to_embed = texts
        if o.keep_text:
            columns["text"] = pa.array(to_embed, pa.string())
        dim = self.encoder.hidden_size
        if to_embed:
            vectors = self.encoder.encode(to_embed, pooling=o.pooling, normalize=o.normalize, batch_size=o.batch_size)
        else:
            vectors = np.zeros((0, dim), np.float32)
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        return pa.table(columns)


def write_shard(output_dir: Path, shard: Shard, table: pa.Table, skipped: int) -> None:
    """Write through a temporary file and a rename: a part file that exists is whole."""
    meta = {b"bertkit.shard": str(shard.index).encode(), b"bertkit.skipped": str(skipped).encode(),
            b"bertkit.source_rows": str(shard.rows).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    final = Path(output_dir) / shard.file
    tmp = final.with_name(f".{shard.file}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def shard_done(output_dir: Path, shard: Shard) -> bool:
    path = Path(output_dir) / shard.file
    if not path.is_file():
        return False
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (pa.ArrowInvalid, OSError):
        log.warning("%s is unreadable; embedding that shard again", path)
        return False
    return meta.get(b"bertkit.shard") == str(shard.index).encode()


# -- the job: manifest, resume, engines ---------------------------------------------------------------------


def _input_fingerprint(source: Source) -> dict[str, Any]:
    st = os.stat(source.path)
    return {**asdict(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _job_key(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest[k] for k in ("input", "embedding", "shard_rows", "skip_bad_rows")}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(output_dir: str | Path) -> dict[str, Any]:
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        raise CorpusError(f"{output_dir} has no {MANIFEST}; is it an embed-corpus output folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def prepare(job: CorpusJob) -> tuple[Source, list[Shard], dict[str, Any]]:
    """Validate, plan the shards and write (or check, on a rerun) the manifest."""
    source = make_source(job)
    out = Path(job.output_dir).expanduser()
    manifest = {
        "format": MANIFEST_FORMAT,
        "input": _input_fingerprint(source),
        "embedding": asdict(job.options),
        "shard_rows": job.shard_rows,
        "skip_bad_rows": job.skip_bad_rows,
    }
    if out.exists() and not out.is_dir():
        raise CorpusError(f"output {out} is a file; pass a folder")
    old_path = out / MANIFEST
    if old_path.is_file():
        old = json.loads(old_path.read_text(encoding="utf-8"))
        if old.get("format") == MANIFEST_FORMAT and _job_key(old) == _job_key(manifest) and "shards" in old:
            log.info("resuming the job in %s", out)
            for tmp in out.glob(".part-*.parquet.tmp-*"):  # left by a killed run; never renamed, never counted
                tmp.unlink(missing_ok=True)
            return source, [Shard(**s) for s in old["shards"]], old
        if not job.overwrite:
            raise CorpusError(
                f"{out} holds the output of a different job (input or options changed); pass --overwrite to "
                "replace it, or choose another output folder"
            )
        for f in out.glob("part-*.parquet"):
            f.unlink()
        old_path.unlink()
    elif out.is_dir() and any(out.iterdir()) and not job.overwrite:
        raise CorpusError(f"{out} is not empty and is not an embed-corpus output; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(source, job.shard_rows)
    manifest.update(shards=[asdict(s) for s in shards], total_input_rows=sum(s.rows for s in shards),
                    complete=False)
    _write_json(old_path, manifest)
    return source, shards, manifest


def finish(out: Path, shards: list[Shard], manifest: dict[str, Any], engine: str, written: int) -> CorpusResult:
    """Check that every shard is there exactly once and mark the manifest complete."""
    missing = [s.file for s in shards if not shard_done(out, s)]
    if missing:
        raise CorpusError(f"{len(missing)} shard(s) missing after the run ({missing[:3]}...); run the command again")
    rows = skipped = 0
    for s in shards:
        md = pq.read_metadata(out / s.file)
        rows += md.num_rows
        skipped += int((md.metadata or {}).get(b"bertkit.skipped", b"0"))
    manifest.update(complete=True, rows=rows, skipped=skipped, engine=engine)
    _write_json(out / MANIFEST, manifest)
    return CorpusResult(out, len(shards), written, rows, skipped)


def _progress(total_rows: int, done_rows: int, enabled: bool):
    """A rich progress bar counting input rows, with rate and ETA; a no-op when disabled."""
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )
    bar.add_task("rows", total=total_rows, completed=done_rows, rate="")
    return bar


def run_local(source: Source, shards: list[Shard], job: CorpusJob, progress: bool = False, encoder=None) -> int:
    """Embed the pending shards one after another in this process; returns how many were written."""
    out = Path(job.output_dir).expanduser()
    pending = [s for s in shards if not shard_done(out, s)]
    if not pending:
        return 0
    embedder = ShardEmbedder(encoder or load_encoder(job.options), job.options)
    bar = _progress(sum(s.rows for s in shards), sum(s.rows for s in shards if s not in pending), progress)
    if bar is not None:
        bar.start()
    try:
        for shard in pending:
            rows, ids, texts, skipped = read_shard(source, shard, job.skip_bad_rows)
            write_shard(out, shard, embedder.embed(rows, ids, texts), skipped)
            log.info("wrote %s (%d rows)", shard.file, shard.rows)
            if bar is not None:
                task = bar.tasks[0]
                bar.update(task.id, advance=shard.rows)
                bar.update(task.id, rate=f"{task.speed or 0:,.0f} rows/s")
    finally:
        if bar is not None:
            bar.stop()
    return len(pending)


def embed_corpus(job: CorpusJob, engine: str = "local", address: str | None = None, progress: bool = False,
                 encoder=None, **ray_options: Any) -> CorpusResult:
    """Run (or resume) the job with the local engine or Ray Data; see the module docstring."""
    if engine not in ENGINES:
        raise CorpusError(f"--engine {engine!r} is unknown; use local or ray")
    if address is not None and engine != "ray":
        raise CorpusError("--address is for --engine ray")
    if job.options.chunk_tokens is None and job.options.chunk_overlap:
        raise CorpusError("--chunk-overlap needs --chunk-tokens")
    source, shards, manifest = prepare(job)
    out = Path(job.output_dir).expanduser()
    if engine == "local":
        written = run_local(source, shards, job, progress=progress, encoder=encoder)
    else:
        from bertkit.corpus_ray import run_ray

        written = run_ray(source, shards, job, address=address, **ray_options)
    return finish(out, shards, manifest, engine, written)


def read_embeddings(output_dir: str | Path, columns: list[str] | None = None) -> tuple[pa.Table, np.ndarray]:
    """All shards of a finished job, in row order: (the other columns, the (n, dim) float32 vectors)."""
    out = Path(output_dir)
    manifest = read_manifest(out)
    if not manifest.get("complete"):
        raise CorpusError(f"{out} is an unfinished embed-corpus job; run the same embed-corpus command again")
    tables = [pq.read_table(out / Shard(**s).file, columns=columns) for s in manifest["shards"]]
    table = pa.concat_tables(tables) if tables else pa.table({})
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    vectors = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
    return table.drop_columns(["embedding"]), vectors
