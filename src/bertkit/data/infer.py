"""Which format a file is in: from its suffix and its first non-blank line."""

from __future__ import annotations

from pathlib import Path

from bertkit.data.published import BIO_TAG, SICK_LABELS
from bertkit.data.rows import DataError, numbered_lines

PAIR_FORMATS = ("stsb", "sick", "mrpc", "csv", "tsv", "jsonl")
TEXT_FORMATS = ("sst2", "agnews")
FORMATS = (*PAIR_FORMATS, *TEXT_FORMATS, "conll", "txt")


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
