"""Readers for the published formats of ../shared/data (STS-B, SICK, MRPC, SST-2, AG News, CoNLL-2003)."""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

from bertkit.data.rows import (
    BadRows,
    LabeledText,
    SentencePair,
    TaggedSentence,
    nonempty,
    numbered_lines,
    parse_float,
    tsv_rows,
)

log = logging.getLogger(__name__)


def read_stsb(path: str | Path, skip_bad: bool = False) -> list[SentencePair]:
    """STS benchmark: genre, file, year, id, score (0-5), sentence1, sentence2; trailing extra fields ignored."""
    bad, pairs = BadRows(Path(path), skip_bad, "stsb"), []
    for n, f in tsv_rows(path):
        if len(f) < 7:
            bad(n, "expected 7 tab-separated fields (genre, file, year, id, score, sentence1, sentence2), "
                f"got {len(f)}")
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
            bad(n, "expected 5 tab-separated fields (pair_ID, sentence_A, sentence_B, relatedness, label), "
                f"got {len(f)}")
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
