"""What makes a text embeddable, without loading the tokenizer (the CLI's readers and the corpus use it too)."""

from __future__ import annotations


def is_visible(text: str) -> bool:
    """Whether the text has a character the tokenizer keeps: not whitespace, not a control, format (zero-width),
    private-use or unassigned character (what BERT's normalizer removes), not U+FFFD."""
    return any(c.isprintable() and not c.isspace() and c != "\ufffd" for c in text)


def lone_surrogate(text: str) -> int | None:
    """The position of the first lone surrogate (a str that is not valid Unicode, e.g. from undecodable bytes
    through surrogateescape, or "\\ud800" in JSON), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def embeddable(value: object) -> bool:
    """A string that is valid Unicode and has something to embed."""
    return isinstance(value, str) and lone_surrogate(value) is None and is_visible(value)
