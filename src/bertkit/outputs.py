"""Writing outputs: an output that cannot be written is the user's to fix, not a bug.

A full disk, a read-only or pseudo file system (`/proc`, `/sys`), a folder that is not there or not writable:
`writing(path)` turns the OSError into an `OutputError` naming the path, the cause and the fix, which the CLI
prints as one line (exit 2). Outputs are still written to a temporary file and renamed (see the callers), so
an existing output survives the failure.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bertkit.errors import OutputError

CAUSES = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "permission denied; write to a folder you can write to",
    errno.EPERM: "operation not permitted; write to an ordinary folder you can write to",
    errno.ENOENT: "its folder does not exist or does not take new files; write to an existing, ordinary folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EISDIR: "it is a folder; give a file name",
    errno.ENAMETOOLONG: "the file name is too long; choose a shorter one",
}


def describe(path: str | Path, e: OSError) -> str:
    cause = CAUSES.get(e.errno, f"{e.strerror or e}; write elsewhere")
    return f"cannot write {path}: {cause}"


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Inside this block, an OSError is the output's fault: it becomes an OutputError naming `path`."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(describe(path, e)) from None
