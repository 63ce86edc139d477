"""Another runner's fast path in a child process: the server's model off the HTTP process's GIL.

In one Python process the model thread must win the GIL back after every torch op while the event loop parses
requests, validates bodies and encodes answers; on a busy server the two take turns, and the model runs ~20 %
slower than offline while a core sits idle (bench/serve_load.py). `ProcessRunner` moves `run` (vectors: the
packed forward, an ONNX / OpenVINO graph) into a child process that loads the same folder, backend and
precision, and trades padded int64 batches for float32 arrays through a pipe (a few MB a batch, ~1 ms beside a
forward of tens of ms). Everything else (heads, attention probabilities, `model`) runs on the parent's own
runner, as before, so answers do not change.

    runner = in_child(open_runner(folder, "torch", "fp32"), folder.root)   # bertkit serve --model-process

The child ignores SIGINT (the parent decides when it stops), exits when the pipe closes (the parent died or
closed it), and is started again on the next call should it die.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from bertkit.errors import BackendError
from bertkit.runtime.seam import ArrayOutput, Runner, set_default_threads

log = logging.getLogger(__name__)
START_TIMEOUT_S = 300.0  # loading a model (and, once, exporting a graph) in the child


def in_child(runner: Runner, model_dir: str | Path) -> ProcessRunner:
    """`runner`'s `run` in a child process that opens `model_dir` with the same backend and precision."""
    return ProcessRunner(runner, model_dir)


class ProcessRunner:
    """A Runner whose `run` goes to a child process; `forward` and `model` stay with the parent's runner."""

    arrays = "numpy"  # padded batches cross the pipe as numpy arrays

    def __init__(self, inner: Runner, model_dir: str | Path):
        if str(inner.device) != "cpu":
            raise BackendError("--model-process runs on CPU; on a GPU the model is not slowed by the GIL: drop it")
        self.inner, self.model_dir = inner, Path(model_dir)
        self.backend, self.precision = inner.backend, inner.precision
        self.requested_precision, self.device, self.facts = inner.requested_precision, inner.device, inner.facts
        self._threads = inner.threads()
        self._local = threading.local()
        self._lock = threading.Lock()  # one batch at a time through the pipe
        self._proc = self._conn = None
        self._start()

    def _start(self) -> None:
        # A fresh interpreter, not multiprocessing's spawn: spawn re-runs the caller's main script, which breaks
        # any script without an `if __name__ == "__main__"` guard; and never fork a process running torch threads.
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", "bertkit.runtime.process", str(theirs.fileno()), str(self.model_dir),
               self.backend, self.precision, str(self._threads)]
        with theirs:
            proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        conn = Connection(ours.detach())
        if not conn.poll(START_TIMEOUT_S):
            proc.kill()
            raise BackendError(f"the model process did not load {self.model_dir} in {START_TIMEOUT_S:.0f} s")
        kind, payload = _receive(conn, proc)
        if kind == "error":
            raise payload
        self._proc, self._conn = proc, conn
        weakref.finalize(self, _stop, proc, conn)
        log.info("the model runs in process %d (%s, %s, %d threads)", proc.pid, self.backend, self.precision,
                 self._threads)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def run(self, input_ids, attention_mask, token_type_ids, hidden_states: bool = False) -> ArrayOutput:
        batch = tuple(np.ascontiguousarray(t, dtype=np.int64) for t in (input_ids, attention_mask, token_type_ids))
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                log.warning("the model process is gone; starting it again")
                self._start()
            self._conn.send((*batch, bool(hidden_states), self.threads()))
            kind, payload = _receive(self._conn, self._proc)
        if kind == "error":
            raise payload
        return ArrayOutput(*payload)

    def forward(self, input_ids, attention_mask, token_type_ids, **options):
        """The parent runner's reference forward (heads, attention probabilities), from numpy inputs."""
        inputs = (input_ids, attention_mask, token_type_ids)
        if self.inner.arrays == "torch":
            import torch

            inputs = tuple(torch.as_tensor(t, device=self.inner.device) for t in inputs)
        with self.inner.inference():
            return self.inner.forward(*inputs, **options)

    @property
    def model(self):
        return self.inner.model

    def inference(self):
        return contextlib.nullcontext()  # forward() enters the parent runner's own

    def threads(self) -> int:
        n = getattr(self._local, "threads", None)
        return n if n is not None else self._threads

    def set_threads(self, n: int) -> None:
        """The child's thread count for batches sent from this OS thread."""
        self._local.threads = n

    def close(self) -> None:
        """Stop the child (it also stops when this process exits)."""
        if self._proc is not None:
            _stop(self._proc, self._conn)
            self._proc = self._conn = None


def _receive(conn, proc) -> tuple[str, object]:
    try:
        return conn.recv()
    except (EOFError, OSError) as e:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        raise BackendError(f"the model process exited (exit code {proc.returncode}); see its log above. The next "
                           "request starts it again") from e


def _stop(proc, conn) -> None:
    with contextlib.suppress(OSError):
        conn.close()  # the child's recv ends: it exits by itself
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- the child -----------------------------------------------------------------------------------------------

def _child(conn, model_dir: str, backend: str, precision: str, threads: int) -> None:
    """Open the runner, then answer batches until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    set_default_threads(threads)
    try:
        from bertkit.runtime.folder import open_folder
        from bertkit.runtime.open import open_runner

        runner = open_runner(open_folder(model_dir), backend, precision, "cpu")
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", e))
        return
    conn.send(("ready", None))
    current = threads
    while True:
        try:
            ids, mask, types, hidden_states, want = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if want != current:
                runner.set_threads(want)
                current = want
            conn.send(("ok", _run(runner, ids, mask, types, hidden_states)))
        except (BrokenPipeError, OSError):
            return
        except Exception as e:  # noqa: BLE001 - the parent raises it for the batch that caused it
            conn.send(("error", e))


def _run(runner: Runner, ids, mask, types, hidden_states: bool) -> tuple:
    """One batch through the child's runner, as (last_hidden_state, pooler_output, hidden_states) arrays."""
    if runner.arrays == "torch":
        import torch

        ids, mask, types = (torch.from_numpy(t) for t in (ids, mask, types))
    with runner.inference():
        out = runner.run(ids, mask, types, hidden_states)
    arrays = [out.last_hidden_state, out.pooler_output, out.hidden_states]
    if runner.arrays == "torch":
        arrays[:2] = [None if t is None else t.float().numpy() for t in arrays[:2]]
        arrays[2] = None if arrays[2] is None else tuple(t.float().numpy() for t in arrays[2])
    return tuple(arrays)


if __name__ == "__main__":  # the child: python -m bertkit.runtime.process FD MODEL_DIR BACKEND PRECISION THREADS
    _fd, _dir, _backend, _precision, _threads = sys.argv[1:6]
    logging.basicConfig(level=logging.WARNING)
    _child(Connection(int(_fd)), _dir, _backend, _precision, int(_threads))
