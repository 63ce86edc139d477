"""The data types every reader returns, and the shared plumbing: decoding, line numbering, bad-row reporting."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.errors import DataError

log = logging.getLogger(__name__)


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
    if p.is_dir():
        raise DataError(f"data file {p} is a folder; pass a data file")
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
    if not math.isfinite(x):
        bad(line, f"{what} {value.strip()!r} is not a finite number (NaN / inf)")
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


