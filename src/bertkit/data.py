"""Readers for the evaluation and training sets bertkit uses, each returning plain dataclasses.

| reader          | format (see ../shared/data/README.md)                                  | returns           |
|-----------------|------------------------------------------------------------------------|-------------------|
| read_stsb       | TSV, no header: genre, file, year, id, score, s1, s2 [, extra ...]     | list[SentencePair] |
| read_sick       | TSV: pair_ID, A, B, relatedness (1-5), entailment label [header opt.]  | list[SentencePair] |
| read_mrpc       | TSV: quality (0/1), id1, id2, s1, s2; BOM and header optional          | list[SentencePair] |
| read_sst2       | TSV with header sentence<TAB>label                                     | list[LabeledText]  |
| read_agnews     | TSV, no header: text, label; HTML entities (`#39;`) decoded            | list[LabeledText]  |
| read_conll      | `token ... TAG` per line, blank line between sentences, -DOCSTART- skipped | list[TaggedSentence] |
| read_pairs      | CSV / TSV / JSONL with named columns (sentence1, sentence2, score ...) | list[SentencePair] |
| read_texts      | plain text, one sentence a line (unlabelled, for whitening / SimCSE)   | list[str]          |
| read_hf         | a Hugging Face `datasets` name (needs `datasets` and the network)      | list[SentencePair] |

`read_dataset(path, fmt=None)` picks the reader; `infer_format(path)` guesses `fmt` from the file name and its
first lines. A malformed row raises `DataError` naming the file and line number; `skip_bad=True` skips such
rows instead, with one warning that counts them and lists the first line numbers.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.errors import InputError

log = logging.getLogger(__name__)

PAIR_FORMATS = ("stsb", "sick", "mrpc", "csv", "tsv", "jsonl")
TEXT_FORMATS = ("sst2", "agnews")
FORMATS = (*PAIR_FORMATS, *TEXT_FORMATS, "conll", "txt")


class DataError(InputError):
    """A data file that cannot be read as the format it was given or inferred as."""


@dataclass(frozen=True)
class SentencePair:
    a: str
    b: str
    score: float | None = None  # similarity / relatedness (STS-B 0-5, SICK 1-5)
    label: str | None = None  # class label as written in the file (SICK "ENTAILMENT", MRPC "1")
    line: int = 0  # 1-based line in the source file (0 when not from a file)


@dataclass(frozen=True)
class LabeledText:
    text: str
    label: str
    line: int = 0


@dataclass
class TaggedSentence:
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # BIO tags, one per token
    line: int = 0  # line of the first token


# ----------------------------------------------------------------------------------------------------------
# Shared plumbing: decoding, line numbering, bad-row reporting


class BadRows:
    """Collects malformed rows: raises on the first one, or (skip_bad=True) counts and warns once at the end."""

    def __init__(self, path: Path, skip_bad: bool, fmt: str):
        self.path, self.skip_bad, self.fmt = path, skip_bad, fmt
        self.lines: list[int] = []

    def __call__(self, line: int, problem: str) -> None:
        if not self.skip_bad:
            raise DataError(
                f"{self.path}: line {line}: {problem} (read as format {self.fmt!r}); fix the row, pass the right "
                "--format, or skip bad rows (skip_bad=True / --skip-bad-rows)"
            )
        self.lines.append(line)

    def report(self) -> None:
        if self.lines:
            shown = ", ".join(map(str, self.lines[:10])) + (" ..." if len(self.lines) > 10 else "")
            log.warning("skipped %d malformed row(s) of %s: lines %s", len(self.lines), self.path, shown)


def read_text(path: str | Path) -> str:
    """The whole file as text, without a leading BOM; a missing file or invalid UTF-8 is a DataError."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist; pass an existing file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{p}: line {line} is not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline). Split on \\n only: texts may hold other separators."""
    for n, line in enumerate(read_text(path).split("\n"), start=1):
        yield n, line.removesuffix("\r")


def tsv_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank lines split on tabs. These files are published unquoted: a '"' is text, never a quote."""
    for n, line in numbered_lines(path):
        if line.strip():
            yield n, line.split("\t")


def parse_float(value: str, what: str, bad: BadRows, line: int, lo: float, hi: float) -> float | None:
    try:
        x = float(value)
    except ValueError:
        bad(line, f"{what} {value!r} is not a number")
        return None
    if not lo <= x <= hi:
        bad(line, f"{what} {x} is outside [{lo:g}, {hi:g}]")
        return None
    return x


def nonempty(parts: list[str], bad: BadRows, line: int, names: str) -> bool:
    if any(not p.strip() for p in parts):
        bad(line, f"empty {names}")
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# The published formats


def read_stsb(path: str | Path, skip_bad: bool = False) -> list[SentencePair]:
    """STS benchmark: genre, file, year, id, score (0-5), sentence1, sentence2; trailing extra fields ignored."""
    bad, pairs = BadRows(Path(path), skip_bad, "stsb"), []
    for n, f in tsv_rows(path):
        if len(f) < 7:
            bad(n, f"expected 7 tab-separated fields (genre, file, year, id, score, sentence1, sentence2), got {len(f)}")
            continue
        score = parse_float(f[4], "score", bad, n, 0.0, 5.0)
        if score is not None and nonempty(f[5:7], bad, n, "sentence"):
            pairs.append(SentencePair(f[5], f[6], score=score, line=n))
    bad.report()
    return pairs


SICK_LABELS = ("NEUTRAL", "ENTAILMENT", "CONTRADICTION")


def read_sick(path: str | Path, skip_bad: bool = False) -> list[SentencePair]:
    """SICK: pair_ID, sentence_A, sentence_B, relatedness (1-5), entailment label. A header line is skipped."""
    bad, pairs = BadRows(Path(path), skip_bad, "sick"), []
    for n, f in tsv_rows(path):
        if f[0] == "pair_ID":  # the original distribution has a header; the shared copy does not
            continue
        if len(f) < 5:
            bad(n, f"expected 5 tab-separated fields (pair_ID, sentence_A, sentence_B, relatedness, label), got {len(f)}")
            continue
        score = parse_float(f[3], "relatedness score", bad, n, 1.0, 5.0)
        if score is None:
            continue
        label = f[4].strip().upper()
        if label not in SICK_LABELS:
            bad(n, f"entailment label {f[4]!r} is not one of {', '.join(SICK_LABELS)}")
            continue
        if nonempty(f[1:3], bad, n, "sentence"):
            pairs.append(SentencePair(f[1], f[2], score=score, label=label, line=n))
    bad.report()
    return pairs


def read_mrpc(path: str | Path, skip_bad: bool = False) -> list[SentencePair]:
    """MRPC: quality (1 = paraphrase), id1, id2, string1, string2. `score` is the quality as 0.0 / 1.0."""
    bad, pairs = BadRows(Path(path), skip_bad, "mrpc"), []
    for n, f in tsv_rows(path):
        if f[0] == "Quality":  # header of the original distribution
            continue
        if len(f) < 5:
            bad(n, f"expected 5 tab-separated fields (quality, id1, id2, string1, string2), got {len(f)}")
            continue
        if f[0].strip() not in ("0", "1"):
            bad(n, f"quality {f[0]!r} is not 0 or 1")
            continue
        if nonempty(f[3:5], bad, n, "string"):
            pairs.append(SentencePair(f[3], f[4], score=float(f[0]), label=f[0].strip(), line=n))
    bad.report()
    return pairs


def read_sst2(path: str | Path, skip_bad: bool = False) -> list[LabeledText]:
    """SST-2: header `sentence<TAB>label`, label 1 = positive. Phrases keep their text minus trailing spaces."""
    bad, rows = BadRows(Path(path), skip_bad, "sst2"), []
    for n, f in tsv_rows(path):
        if n == 1 and f[0].strip() == "sentence":
            continue
        if len(f) != 2:
            bad(n, f"expected 2 tab-separated fields (sentence, label), got {len(f)}")
            continue
        if f[1].strip() not in ("0", "1"):
            bad(n, f"label {f[1]!r} is not 0 or 1")
            continue
        if nonempty(f[:1], bad, n, "sentence"):
            rows.append(LabeledText(f[0].strip(), f[1].strip(), line=n))
    bad.report()
    return rows


# AG News escapes entities without the ampersand ("It #39;s", "#36;5") next to regular ones ("&lt;b&gt;"),
# CSV-quotes some fields ("...""verdana""...") inside its TSV, and carries HTML markup once decoded.
BARE_ENTITY = re.compile(r"(?<!&) ?#(\d{1,5});")  # the space stands for the lost "&"
HTML_TAG = re.compile(r"<[^<>]{1,200}>")


def clean_agnews(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    text = html.unescape(BARE_ENTITY.sub(r"&#\1;", text))
    text = HTML_TAG.sub(" ", text).replace("\\", " ")
    return " ".join(text.split())


def read_agnews(path: str | Path, skip_bad: bool = False) -> list[LabeledText]:
    """AG News: text, label (World / Sports / Business / Sci/Tech). HTML entities are decoded."""
    bad, rows = BadRows(Path(path), skip_bad, "agnews"), []
    for n, f in tsv_rows(path):
        if len(f) != 2:
            bad(n, f"expected 2 tab-separated fields (text, label), got {len(f)}")
            continue
        text, label = clean_agnews(f[0]), f[1].strip()
        if not label:
            bad(n, "empty label")
            continue
        if nonempty([text], bad, n, "text"):
            rows.append(LabeledText(text, label, line=n))
    bad.report()
    return rows


BIO_TAG = re.compile(r"^(O|[BIES]-\S+)$")


def read_conll(path: str | Path, skip_bad: bool = False) -> list[TaggedSentence]:
    """CoNLL-2003 style: one `token ... TAG` a line, a blank line between sentences, -DOCSTART- lines skipped.

    The NER tag is the last field that looks like a BIO tag, which is right both for the 4-column original
    (token POS chunk NER, where chunk tags are BIO too) and for the shared 3-column copy (token TAG 0).
    """
    bad, sentences = BadRows(Path(path), skip_bad, "conll"), []
    current = TaggedSentence()
    for n, line in numbered_lines(path):
        f = line.split()
        if not f or f[0] == "-DOCSTART-":
            if current.tokens:
                sentences.append(current)
            current = TaggedSentence()
            continue
        tags = [x for x in f[1:] if BIO_TAG.match(x)]
        if not tags:
            bad(n, f"no BIO tag (O, B-X, I-X) after the token in {line.strip()!r}")
            continue
        if not current.tokens:
            current.line = n
        current.tokens.append(f[0])
        current.tags.append(tags[-1])
    if current.tokens:
        sentences.append(current)
    bad.report()
    return sentences


def read_texts(path: str | Path, skip_bad: bool = False) -> list[str]:
    """Unlabelled sentences, one a line; blank lines are skipped (they carry no sentence)."""
    return [line.strip() for _, line in numbered_lines(path) if line.strip()]


# ----------------------------------------------------------------------------------------------------------
# Generic pair files with named columns

A_COLUMNS = ("sentence1", "sentence_a", "sentence_A", "text_a", "text1", "anchor", "premise", "query", "s1")
B_COLUMNS = ("sentence2", "sentence_b", "sentence_B", "text_b", "text2", "positive", "hypothesis", "s2")
SCORE_COLUMNS = ("score", "similarity", "relatedness_score", "relatedness", "gold")
LABEL_COLUMNS = ("label", "entailment_judgment", "gold_label", "quality")


def pick_column(names: list[str], given: str | None, candidates: tuple[str, ...], what: str, required: bool) -> str | None:
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


# ----------------------------------------------------------------------------------------------------------
# Format inference and dispatch


def infer_format(path: str | Path) -> str:
    """Guess the format from the suffix and the first non-blank line; raise DataError naming --format if unsure."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    first = next((line for _, line in numbered_lines(p) if line.strip()), "")
    f = first.split("\t")
    if len(f) >= 7 and is_number(f[4]):
        return "stsb"
    if len(f) >= 5 and (f[0] == "pair_ID" or (is_number(f[3]) and f[4].strip().upper() in SICK_LABELS)):
        return "sick"
    if len(f) >= 5 and (f[0] == "Quality" or (f[0] in ("0", "1") and f[1].isdigit() and f[2].isdigit())):
        return "mrpc"
    if len(f) == 2 and f[0].strip() == "sentence" and f[1].strip() == "label":
        return "sst2"
    if len(f) == 2 and f[1].strip() in ("World", "Sports", "Business", "Sci/Tech"):
        return "agnews"
    words = first.split()
    looks_tagged = "\t" not in first and 2 <= len(words) <= 4 and any(BIO_TAG.match(w) for w in words[1:])
    if words and (words[0] == "-DOCSTART-" or looks_tagged):
        return "conll"
    if len(f) >= 2:
        return "tsv"
    if suffix == ".txt" or len(f) == 1:
        return "txt"
    raise DataError(f"cannot tell the format of {p}; pass --format (one of {', '.join(FORMATS)})")


def is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_dataset(path: str | Path, fmt: str | None = None, skip_bad: bool = False, **columns):
    """Read any supported file: pairs for stsb/sick/mrpc/csv/tsv/jsonl, LabeledText for sst2/agnews,
    TaggedSentence for conll, str for txt. `columns` (text_a=, text_b=, score=, label=) go to read_pairs.
    `hf:NAME[:SPLIT]` (e.g. hf:sentence-transformers/stsb:validation) reads a Hugging Face dataset (online)."""
    if str(path).startswith("hf:"):
        name, _, split = str(path)[3:].partition(":")
        return read_hf(name, split or "validation", **columns)
    fmt = fmt or infer_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt in ("csv", "tsv", "jsonl"):
        return read_pairs(path, fmt, skip_bad=skip_bad, **columns)
    readers = {"stsb": read_stsb, "sick": read_sick, "mrpc": read_mrpc, "sst2": read_sst2,
               "agnews": read_agnews, "conll": read_conll, "txt": read_texts}
    return readers[fmt](path, skip_bad=skip_bad)


def read_scored_pairs(path: str | Path, fmt: str | None = None, skip_bad: bool = False, **columns) -> list[SentencePair]:
    """Pairs that all carry a gold score (for STS evaluation and the cosine loss)."""
    fmt = fmt or ("csv" if str(path).startswith("hf:") else infer_format(path))
    if fmt not in PAIR_FORMATS:
        raise DataError(f"{path} is read as {fmt!r}, which has no sentence pairs; pass --format ({', '.join(PAIR_FORMATS)})")
    pairs = read_dataset(path, fmt, skip_bad=skip_bad, **columns)
    missing = [p.line for p in pairs if p.score is None]
    if missing:
        raise DataError(f"{path}: line {missing[0]} has no score ({len(missing)} rows without one); a similarity set needs a score column")
    if not pairs:
        raise DataError(f"{path} has no sentence pairs")
    return pairs


def sentences_of(items: list) -> list[str]:
    """Every distinct text of a dataset (both sides of pairs), in first-seen order: input for whitening/SimCSE."""
    out: list[str] = []
    for it in items:
        if isinstance(it, SentencePair):
            out += [it.a, it.b]
        elif isinstance(it, LabeledText):
            out.append(it.text)
        elif isinstance(it, TaggedSentence):
            out.append(" ".join(it.tokens))
        else:
            out.append(str(it))
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------------------------------------
# (issue 4)

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


def read_conll_documents(path: str | Path) -> list[list[str]]:
    """CoNLL text as documents (split at -DOCSTART-) of sentences (tokens joined by spaces), for pretraining."""
    docs: list[list[str]] = [[]]
    sentence: list[str] = []
    for _, line in numbered_lines(path):
        f = line.split()
        if not f or f[0] == "-DOCSTART-":
            if sentence:
                docs[-1].append(" ".join(sentence))
                sentence = []
            if f and docs[-1]:
                docs.append([])
            continue
        sentence.append(f[0])
    if sentence:
        docs[-1].append(" ".join(sentence))
    return [d for d in docs if d]
