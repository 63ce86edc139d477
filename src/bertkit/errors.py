"""Errors a user can cause. Each message says what went wrong and how to fix it.

The CLI turns any BertkitError into one line on stderr and exit status 2; the server into a 4xx.
"""

from __future__ import annotations


class BertkitError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ModelNotFoundError(BertkitError):
    """A model path does not exist, or a hub id could not be fetched."""


class MissingHeadError(BertkitError):
    """The loaded checkpoint lacks a head (MLM, NSP, pooler) that the call needs."""


class InputError(BertkitError, ValueError):
    """Bad texts or files: empty text, over-long text with truncation off, undecodable lines."""
