"""CSV / TSV / JSONL files with named columns: sentence pairs, or single texts with a label."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from bertkit.data.infer import infer_format
from bertkit.data.rows import BadRows, DataError, LabeledText, SentencePair, parse_float, read_text

log = logging.getLogger(__name__)

A_COLUMNS = ("sentence1", "sentence_a", "sentence_A", "text_a", "text1", "anchor", "premise", "query", "s1")
B_COLUMNS = ("sentence2", "sentence_b", "sentence_B", "text_b", "text2", "positive", "hypothesis", "s2")
SCORE_COLUMNS = ("score", "similarity", "relatedness_score", "relatedness", "gold")
LABEL_COLUMNS = ("label", "entailment_judgment", "gold_label", "quality")


def pick_column(names: list[str], given: str | None, candidates: tuple[str, ...], what: str,
                required: bool) -> str | None:
    if given is not None:
        if given not in names:
            raise DataError(f"column {given!r} ({what}) is not in the file; its columns are: {', '.join(names)}")
        return given
    for c in candidates:
        if c in names:
            return c
    if required:
        raise DataError(
            f"no {what} column among {', '.join(names)}; name it with one of {', '.join(candidates)} "
            f"or pass the column name explicitly"
        )
    return None


def table_rows(path: str | Path, fmt: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """Column names and (line, row dict) for a CSV / TSV file with a header, or a JSONL file."""
    text = read_text(path)
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n} is not valid JSON ({e.msg}); fix the row") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {n} is a JSON {type(row).__name__}, not an object with named fields")
            rows.append((n, row))
        names = list(dict.fromkeys(k for _, r in rows for k in r))
        return names, iter(rows)
    reader = csv.reader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ",")
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path} is empty; a {fmt} pair file needs a header line and rows") from None

    def rows_iter() -> Iterator[tuple[int, dict]]:
        for values in reader:
            n = reader.line_num  # counts physical lines, so quoted multi-line cells keep numbering right
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                yield n, {"__error__": f"expected {len(header)} fields as in the header, got {len(values)}"}
                continue
            yield n, dict(zip(header, values))

    return header, rows_iter()


def read_pairs(
    path: str | Path,
    fmt: str | None = None,
    text_a: str | None = None,
    text_b: str | None = None,
    score: str | None = None,
    label: str | None = None,
    skip_bad: bool = False,
) -> list[SentencePair]:
    """A CSV / TSV (with header) or JSONL pair file. Column names are found among common spellings
    (sentence1/sentence2/score/label, sentence_A/sentence_B, anchor/positive, premise/hypothesis ...)
    unless given."""
    fmt = fmt or infer_format(path)
    if fmt not in ("csv", "tsv", "jsonl"):
        raise DataError(f"read_pairs reads csv, tsv or jsonl files, not {fmt!r}; use read_dataset for other formats")
    names, rows = table_rows(path, fmt)
    col_a = pick_column(names, text_a, A_COLUMNS, "first-sentence", True)
    col_b = pick_column(names, text_b, B_COLUMNS, "second-sentence", True)
    col_s = pick_column(names, score, SCORE_COLUMNS, "score", False)
    col_l = pick_column(names, label, LABEL_COLUMNS, "label", False)
    bad, pairs = BadRows(Path(path), skip_bad, fmt), []
    for n, row in rows:
        if "__error__" in row:
            bad(n, row["__error__"])
            continue
        a, b = row.get(col_a), row.get(col_b)
        if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
            bad(n, f"missing or empty {col_a!r} / {col_b!r}")
            continue
        s = None
        if col_s is not None and row.get(col_s) not in (None, ""):
            s = parse_float(str(row[col_s]), col_s, bad, n, float("-inf"), float("inf"))
            if s is None:
                continue
        lab = row.get(col_l) if col_l is not None else None
        pairs.append(SentencePair(a, b, score=s, label=None if lab in (None, "") else str(lab), line=n))
    bad.report()
    return pairs


def read_hf(name: str, split: str = "validation", config: str | None = None, text_a: str | None = None,
            text_b: str | None = None, score: str | None = None, label: str | None = None) -> list[SentencePair]:
    """Pairs from a Hugging Face `datasets` name (e.g. "sentence-transformers/stsb"); needs the network."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading the hub dataset {name!r} needs `pip install datasets` (and network access)") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown name, unknown split: one message for the user
        raise DataError(f"could not load dataset {name!r} split {split!r} ({type(e).__name__}: {e}); offline?") from e
    names = list(ds.column_names)
    col_a = pick_column(names, text_a, A_COLUMNS, "first-sentence", True)
    col_b = pick_column(names, text_b, B_COLUMNS, "second-sentence", True)
    col_s = pick_column(names, score, SCORE_COLUMNS, "score", False)
    col_l = pick_column(names, label, LABEL_COLUMNS, "label", False)
    return [
        SentencePair(r[col_a], r[col_b], score=None if col_s is None else float(r[col_s]),
                     label=None if col_l is None else str(r[col_l]), line=i + 1)
        for i, r in enumerate(ds)
    ]


TEXT_COLUMNS = ("text", "sentence", "content", "review", "sentence1", "text_a")


def has_pair_columns(path: str | Path, fmt: str) -> bool:
    """Whether a csv / tsv / jsonl file names a second-sentence column (else it holds single texts)."""
    names, _ = table_rows(path, fmt)
    return any(c in names for c in B_COLUMNS)


def read_labeled_texts(path: str | Path, fmt: str, text: str | None = None, label: str | None = None,
                       skip_bad: bool = False) -> list[LabeledText]:
    """Single texts with a label from a csv / tsv (with header) or jsonl file: columns text/sentence and label."""
    names, rows = table_rows(path, fmt)
    col_t = pick_column(names, text, TEXT_COLUMNS, "text", True)
    col_l = pick_column(names, label, LABEL_COLUMNS + SCORE_COLUMNS, "label", True)
    bad, out = BadRows(Path(path), skip_bad, fmt), []
    for n, row in rows:
        if "__error__" in row:
            bad(n, row["__error__"])
            continue
        t, lab = row.get(col_t), row.get(col_l)
        if not isinstance(t, str) or not t.strip() or lab in (None, ""):
            bad(n, f"missing or empty {col_t!r} / {col_l!r}")
            continue
        out.append(LabeledText(t, str(lab), line=n))
    bad.report()
    return out


