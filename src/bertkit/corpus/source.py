"""Reading a corpus: the format, the shard plan (where each shard starts) and the rows of one shard."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from bertkit.errors import InputError, OptionError
from bertkit.tokenizer import embeddable

log = logging.getLogger(__name__)
from bertkit.corpus.spec import FORMATS, SUFFIX_FORMATS, CorpusError, CorpusJob, Shard, Source
from bertkit.corpus.storage import file_info, is_remote, open_input, parquet_file

# csv's default 128 KiB field limit would reject long documents, which are exactly what chunking is for.
csv.field_size_limit(2**31 - 1)


def detect_format(path: PurePath, fmt: str | None) -> str:
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
    remote = is_remote(job.input)
    path: PurePath = PurePosixPath(str(job.input)) if remote else Path(job.input).expanduser()
    if not file_info(str(job.input) if remote else str(path))[0]:
        raise InputError(f"input {job.input if remote else path} does not exist; pass an existing JSONL, CSV, TSV, "
                         "Parquet or text file")
    fmt = detect_format(path, job.format)
    text_column = job.text_column
    if fmt == "text":
        if text_column is not None or job.id_column is not None:
            raise CorpusError("a text file has one text a line and no columns; drop --text-column / --id-column")
    elif text_column is None:
        text_column = "text" if fmt not in ("csv", "tsv") or job.header else "0"
    location = str(job.input) if remote else str(Path(path).resolve())
    return Source(location, fmt, text_column, job.id_column, job.header)


def _lines(path: str, offset: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line) from `offset` on; binary iteration is buffered and fast."""
    with open_input(path) as f:
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
    return nxt[0] if nxt is not None else file_info(source.path)[1]


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
        pf = parquet_file(source.path)
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
        Shard(s.index, s.first_row,
              (shards[i + 1].first_row if i + 1 < len(shards) else last + 1) - s.first_row, s.offset)
        for i, s in enumerate(shards)
    ]


def _bad(source: Source, row: int, why: str) -> InputError:
    return InputError(f"{source.path}: row {row} {why}; fix it or pass --skip-bad-rows to skip such rows")


def _text_of(value: Any) -> str | None:
    """The row's text, or None when it has nothing to embed (as Encoder.encode refuses: empty, only whitespace /
    control / zero-width characters, or not valid Unicode)."""
    return value if embeddable(value) else None


def _raw_rows(source: Source, shard: Shard, skip_bad_rows: bool = False) -> Iterator[tuple[int, Any, Any]]:
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
        missing = next((c for c in (source.text_column, source.id_column) if c is not None and c not in obj), None)
        if missing is not None:
            if skip_bad_rows:  # a bad row like any other: skipped and counted
                yield row, None, row
                continue
            option = "--text-column" if missing == source.text_column else "--id-column"
            raise CorpusError(f"{source.path}: row {row} has no {missing!r} key (keys: {sorted(obj)[:20]}); pass "
                              f"{option}, or --skip-bad-rows to skip such rows")
        yield row, _text_of(obj[source.text_column]), obj[source.id_column] if source.id_column else row


def _parquet_rows(source: Source, shard: Shard) -> Iterator[tuple[int, Any, Any]]:
    pf = parquet_file(source.path)
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
    for row, text, ident in _raw_rows(source, shard, skip_bad_rows):
        if text is None:
            if not skip_bad_rows:
                raise _bad(source, row, "has no text (empty, missing, or not valid UTF-8 / JSON)")
            skipped += 1
            continue
        rows.append(row)
        ids.append(str(ident))
        texts.append(text)
    return rows, ids, texts, skipped
