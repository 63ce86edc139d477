"""Labelled examples for sequence classification, from any dataset file the readers know: single texts or
sentence pairs, with a class label or (regression) a score."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertkit.data.formats import read_dataset
from bertkit.data.infer import infer_format
from bertkit.data.rows import LabeledText, SentencePair, TaggedSentence
from bertkit.data.tables import has_pair_columns, read_labeled_texts
from bertkit.errors import InputError


@dataclass(frozen=True)
class Example:
    text: str
    pair: str | None = None  # second text of a sentence pair
    label: str | float | None = None  # class name, or a score for regression; None when unlabelled
    line: int = 0


def read_examples(path: str | Path, fmt: str | None = None, regression: bool = False,
                  skip_bad: bool = False) -> list[Example]:
    """Labelled examples from any dataset file. Pair sets give (text, pair); `regression` takes the score
    (STS-B, SICK relatedness) instead of the class label. A plain text file gives unlabelled examples."""
    fmt = fmt or infer_format(path)
    if fmt == "conll":
        raise InputError(f"{path} is a CoNLL file; token classification is `bertkit train ner`")
    if fmt in ("csv", "tsv", "jsonl") and not has_pair_columns(path, fmt):
        items: list = read_labeled_texts(path, fmt, skip_bad=skip_bad)
    else:
        items = read_dataset(path, fmt, skip_bad=skip_bad)
    out = []
    for it in items:
        if isinstance(it, SentencePair):
            label = it.score if (regression or it.label is None) else it.label
            out.append(Example(it.a, it.b, label, it.line))
        elif isinstance(it, LabeledText):
            label: str | float = it.label
            if regression:
                try:
                    label = float(it.label)
                except ValueError:
                    raise InputError(f"{path}: line {it.line}: "
                                     f"label {it.label!r} is not a number (regression)") from None
            out.append(Example(it.text, None, label, it.line))
        elif isinstance(it, TaggedSentence):  # pragma: no cover - conll refused above
            continue
        else:
            out.append(Example(str(it)))
    if not out:
        raise InputError(f"{path} holds no examples; give a file with at least one")
    return out
