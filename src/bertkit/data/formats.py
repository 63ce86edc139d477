"""One entry point that reads any supported file, and what the others build on it."""

from __future__ import annotations

from pathlib import Path

from bertkit.data.infer import FORMATS, PAIR_FORMATS, infer_format
from bertkit.data.published import (
    read_agnews,
    read_conll,
    read_mrpc,
    read_sick,
    read_sst2,
    read_stsb,
    read_texts,
)
from bertkit.data.rows import DataError, LabeledText, SentencePair, TaggedSentence
from bertkit.data.tables import read_hf, read_pairs


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


def read_scored_pairs(path: str | Path, fmt: str | None = None, skip_bad: bool = False,
                      **columns) -> list[SentencePair]:
    """Pairs that all carry a gold score (for STS evaluation and the cosine loss)."""
    fmt = fmt or ("csv" if str(path).startswith("hf:") else infer_format(path))
    if fmt not in PAIR_FORMATS:
        raise DataError(f"{path} is read as {fmt!r}, which has no sentence pairs; "
                        f"pass --format ({', '.join(PAIR_FORMATS)})")
    pairs = read_dataset(path, fmt, skip_bad=skip_bad, **columns)
    missing = [p.line for p in pairs if p.score is None]
    if missing:
        raise DataError(f"{path}: line {missing[0]} has no score ({len(missing)} rows without one); "
                        "a similarity set needs a score column")
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


