"""Writing outputs: an output that cannot be written is the user's to fix, not a bug.

A full disk, a read-only or pseudo file system (`/proc`, `/sys`), a folder that is not there or not writable:
`writing(path)` turns the OSError into an `OutputError` naming the path, the cause and the fix, which the CLI
prints as one line (exit 2).

Every output is written in one place, here: `atomic_write(path, writer)` writes a file through a temporary
sibling and a rename, `atomic_folder(out)` a whole folder through a temporary sibling folder and a rename, so a
failed or killed run never leaves a half output and an existing output survives the failure. Before any work,
`check_output_folder` refuses a folder that holds something else (unless --overwrite) and `probe_writable`
a place that cannot take the output, so an hour of training never ends in a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
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


def _sibling(path: Path, tag: str, suffix: str = "") -> Path:
    """A hidden name beside `path`, unique to this process: on the same file system, so a rename is atomic."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}{suffix}")


def atomic_write(path: str | Path, data: str | bytes | Callable[[Path], object], *, suffix: str = "") -> Path:
    """Write `data` (text, bytes, or `writer(tmp_path)`) to a temporary sibling, then rename it onto `path`.

    `suffix` ends the temporary name, for writers that insist on one (numpy's savez adds `.npz` otherwise).
    An OSError is the output's fault: an OutputError naming `path`. The temporary file never outlives the call."""
    path = Path(path)
    tmp = _sibling(path, "tmp", suffix)
    try:
        with writing(path):  # a full disk, /proc, a read-only folder: one line naming the cause, exit 2
            if isinstance(data, str):
                tmp.write_text(data, encoding="utf-8")
            elif isinstance(data, bytes):
                tmp.write_bytes(data)
            else:
                data(tmp)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


@contextmanager
def atomic_folder(out: str | Path, *, carry: Iterable[str] = ()) -> Iterator[Path]:
    """Yields a temporary sibling folder to fill; when the block ends without an error it replaces `out`.

    The old folder is renamed aside first and removed last, so `out` is at every moment either the old folder
    or the new one, never a mix. `carry` names entries of the old folder that move into the new one (a training
    run's `checkpoint`, which lives beside the model it is writing)."""
    out = Path(out)
    tmp, old = _sibling(out, "tmp"), _sibling(out, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(out):
            tmp.mkdir(parents=True)
        yield tmp
        with writing(out):
            if out.is_dir():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out, old)
            os.replace(tmp, out)
            for name in carry:
                if (old / name).exists():
                    os.replace(old / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def check_output_folder(out: str | Path, *, overwrite: bool, option: str = "--output",
                        own: Callable[[Path], bool] | None = None) -> None:
    """Before any work: `out` must be a folder that is missing or empty, or one `own(out)` recognises as this
    command's own (a checkpoint to resume), unless `overwrite`; and its place must take new files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out} is a file, not a folder; give a folder name (a new or empty folder)")
    if out.is_dir() and not overwrite and any(out.iterdir()) and not (own is not None and own(out)):
        raise OutputError(f"{option} {out} is a folder that already holds files; give a new or empty folder, "
                          "or pass --overwrite to replace it")
    probe_writable(out.parent if not out.is_dir() else out, out)


def probe_writable(folder: str | Path, output: str | Path | None = None) -> None:
    """Before any work: create and remove a file in `folder` (its nearest existing ancestor when it is still to
    be made), so a read-only or full place is one line now, not a traceback after the work."""
    folder = Path(folder).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    named = output if output is not None else folder
    if not folder.is_dir():
        raise OutputError(f"cannot write {named}: a part of the path is a file, not a folder; fix the path")
    probe = folder / f".bertkit-probe-{os.getpid()}"
    try:
        with writing(named):
            probe.write_bytes(b"")
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
