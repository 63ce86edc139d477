"""Errors a user can cause. Each message says what went wrong and how to fix it.

Everything a user can get wrong raises a subclass of `BertkitError`; the CLI prints such an error as one line
on stderr with exit status 2, and the server answers it with a 4xx. Any other exception is a bug: the CLI
exits 1 with its traceback and the server answers 500 with a request id and logs the traceback. So a library
function must never raise a bare `ValueError` for bad user input (it would be reported as a bug), and must
never wrap a bug in a `BertkitError` (it would be reported as the user's fault).
"""

from __future__ import annotations


class BertkitError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ModelNotFoundError(BertkitError):
    """A model path does not exist, or a hub id could not be fetched."""


class CheckpointError(BertkitError):
    """A model folder was found but its weights or config do not fit (missing tensors, wrong shapes)."""


class MissingHeadError(BertkitError):
    """The loaded checkpoint lacks a head (MLM, NSP, pooler) that the call needs."""


class InputError(BertkitError, ValueError):
    """Bad texts or files: empty text, over-long text with truncation off, undecodable lines."""


class OptionError(BertkitError, ValueError):
    """A bad option or argument value: an unknown pooling, a batch size of 0, a missing required option.

    Also a ValueError, so code that caught ValueError from bertkit's checks keeps working.
    """


class VectorIndexError(BertkitError):
    """A missing, foreign or mismatched index folder."""


class OutputError(BertkitError):
    """An output that cannot be written: a full disk, a read-only or missing folder (bertkit.outputs)."""


class CorpusError(BertkitError):
    """A corpus job that cannot run as asked: bad input columns, an output folder from another job."""


class StorageError(InputError):
    """An object-store URI that cannot be used: no credentials, a missing bucket, an unreachable endpoint."""


class DataError(InputError):
    """A data file that cannot be read as the format it was given or inferred as."""


class NotACrossEncoderError(CheckpointError):
    """A folder that is a model, but not a one-output pair model (e.g. a plain encoder or a 3-class
    classifier)."""


class CalibrationError(BertkitError):
    """int8 / uint8 codes without their calibration, or a calibration that does not fit the vectors."""


class BackendError(BertkitError):
    """A precision / backend combination that cannot run here (missing package, unsupported pair, no
    graph)."""


class ServeError(BertkitError):
    """A request the server refuses; `code` names the limit or rule, `status` is the HTTP status;
    `retry_after` (seconds) the Retry-After header of a 429 (1 when not given)."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request",
                 param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.param, self.retry_after = status, code, param, retry_after
