"""Another runner's fast path in a child process: the server's model off the HTTP process's GIL.

In one Python process the model thread must win the GIL back after every torch op while the event loop parses
requests, validates bodies and encodes answers; on a busy server the two take turns, and the model runs ~20 %
slower than offline while a core sits idle (bench/serve_load.py). `ProcessRunner` moves `run` (vectors: the
packed forward, an ONNX / OpenVINO graph) into a child process that loads the same folder, backend and
precision, and trades padded int64 batches for float32 arrays through a pipe (a few MB a batch, ~1 ms beside a
forward of tens of ms). Everything else (heads, attention probabilities, `model`) runs on the parent's own
runner, opened on first use (until then the parent holds no model and, for a cached graph, no torch).

    Encoder.load(model, process=True)          # bertkit serve --model-process
    runner = ProcessRunner(lambda: open_runner(folder, "torch", "fp32", "cpu"), folder.root, "torch", "fp32")

The child (bertkit.runtime.child) ignores SIGINT (the parent decides when it stops), exits when the pipe closes
(the parent died or closed it), and is started again on the next call should it die.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from bertkit.errors import BackendError
from bertkit.runtime.seam import ArrayOutput, Cpu, Runner, cpu_budget, default_threads, graph_batch_cost

log = logging.getLogger(__name__)
START_TIMEOUT_S = 300.0  # loading a model (and, once, exporting a graph) in the child
GPU_NODES = ("/dev/nvidiactl", "/dev/kfd")  # CUDA's and ROCm's driver nodes: no GPU torch could pick without one


def child_pays(threads: int | None, backend: str = "torch") -> bool:
    """Whether a server should run the model in a child process (`bertkit serve` without --model-process or
    --in-process): on CPU, when its torch threads leave the HTTP side at least one core of its own. Then the
    child serves 0.95-0.99 of offline throughput against 0.80-0.85 in process (2 cores, --threads 1); on every
    core, in process serves more (the child would stall whenever the event loop takes a core), and a GPU does
    not share the GIL's time with the server (docs/RESULTS.md, issue 28)."""
    if threads is None or threads >= cpu_budget():
        return False
    if backend == "torch" and any(Path(node).exists() for node in GPU_NODES):
        import torch  # only where a GPU driver is present: elsewhere the answer is CPU without importing torch

        return not torch.cuda.is_available()
    return True


class ProcessRunner:
    """A Runner whose `run` goes to a child process; `forward` and `model` use the parent's own runner, opened by
    `opener` on first use. Facts, precision and threads are the child's."""

    arrays = "numpy"  # padded batches cross the pipe as numpy arrays

    def __init__(self, opener: Callable[[], Runner], model_dir: str | Path, backend: str, precision: str):
        self._opener, self._inner = opener, None
        self._inner_lock = threading.Lock()
        self.model_dir, self.backend, self.requested_precision = Path(model_dir), backend, precision
        self.device = Cpu()
        self._send_lock = threading.Lock()  # one sender at a time; answers are read in the order sent
        self._pipe: _Pipe | None = None
        # Without --threads, every CPU but one: the serving process needs a core for HTTP, and a child whose
        # threads spread over every core stalls at each parallel region whenever the server runs (2 cores:
        # 0.42 of offline vs 0.65 in process, bench/serve_load.py).
        self._threads = default_threads() or max(1, cpu_budget() - 1)
        self._start()

    def _start(self) -> None:
        # A fresh interpreter, not multiprocessing's spawn: spawn re-runs the caller's main script, which breaks
        # any script without an `if __name__ == "__main__"` guard; and never fork a process running torch threads.
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", "bertkit.runtime.child", str(theirs.fileno()), str(self.model_dir),
               self.backend, self.requested_precision, str(self._threads)]
        with theirs:
            proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        conn = Connection(ours.detach())
        if not conn.poll(START_TIMEOUT_S):
            proc.kill()
            raise BackendError(f"the model process did not load {self.model_dir} in {START_TIMEOUT_S:.0f} s")
        kind, payload = _receive(conn, proc)
        if kind == "error":
            raise payload
        self.facts, self.precision, self._child_threads = payload
        self.batch_cost = graph_batch_cost(self.precision) if self.backend == "onnx" else None  # as the child's
        self._pipe = _Pipe(proc, conn)
        weakref.finalize(self, _stop, proc, conn)
        log.info("the model runs in process %d (%s, %s, %d threads)", proc.pid, self.backend, self.precision,
                 self._child_threads)

    @property
    def pid(self) -> int | None:
        return self._pipe.proc.pid if self._pipe is not None else None

    def run(self, input_ids, attention_mask, token_type_ids, hidden_states: bool = False) -> ArrayOutput:
        """One padded batch through the child. Callers on several threads pipeline: the next batch is sent while
        the child runs this one, so the child never waits for the serving process to read an answer and hand
        over more work (bertkit serve's model threads, serve/batcher.py)."""
        batch = tuple(np.ascontiguousarray(t, dtype=np.int64) for t in (input_ids, attention_mask, token_type_ids))
        with self._send_lock:
            if self._pipe is None or self._pipe.proc.poll() is not None:
                log.warning("the model process is gone; starting it again")
                self._start()
            pipe = self._pipe
            ticket = pipe.send((*batch, bool(hidden_states)))
        kind, payload = pipe.answer(ticket)
        if kind == "error":
            raise payload
        return ArrayOutput(*payload)

    @property
    def inner(self) -> Runner:
        """The parent's own runner (heads, attention probabilities), opened on first use."""
        with self._inner_lock:
            if self._inner is None:
                log.info("opening %s in the serving process too (heads and attention are not run in the child)",
                         self.model_dir)
                self._inner = self._opener()
            return self._inner

    def forward(self, input_ids, attention_mask, token_type_ids, **options):
        """The parent runner's reference forward (heads, attention probabilities), from numpy inputs."""
        inner, inputs = self.inner, (input_ids, attention_mask, token_type_ids)
        if inner.arrays == "torch":
            import torch

            inputs = tuple(torch.as_tensor(t, device=inner.device) for t in inputs)
        with inner.inference():
            return inner.forward(*inputs, **options)

    @property
    def model(self):
        return self.inner.model

    def inference(self):
        return contextlib.nullcontext()  # forward() enters the parent runner's own

    def threads(self) -> int:
        return self._child_threads

    def set_threads(self, n: int) -> None:
        """Nothing: the child runs one batch at a time, always on all of its threads. (encode()'s CPU workers each
        ask for 1; here they only overlap their padding and pooling with the child's forward.)"""

    def close(self) -> None:
        """Stop the child (it also stops when this process exits)."""
        if self._pipe is not None:
            _stop(self._pipe.proc, self._pipe.conn)
            self._pipe = None


class _Pipe:
    """One child's connection: batches go out in order, and each caller reads its own answer in its turn."""

    def __init__(self, proc: subprocess.Popen, conn: Connection):
        self.proc, self.conn = proc, conn
        self.sent = self.read = 0  # tickets handed out / answers read
        self.broken = False  # the child died: every answer not yet read is lost
        self._turn = threading.Condition()

    def send(self, message: tuple) -> int:
        """Send a batch (the caller holds the runner's send lock); its ticket for `answer`."""
        try:
            self.conn.send(message)
        except OSError as e:
            self._break()
            raise BackendError("the model process exited; the next request starts it again") from e
        self.sent += 1
        return self.sent - 1

    def answer(self, ticket: int) -> tuple[str, object]:
        """The answer to batch `ticket`, once every earlier one has been read."""
        with self._turn:
            self._turn.wait_for(lambda: self.read == ticket or self.broken)
            if self.broken:
                raise BackendError("the model process exited before it answered; the next request starts it again")
            try:
                return _receive(self.conn, self.proc)
            except BackendError:
                self.broken = True
                raise
            finally:
                self.read += 1
                self._turn.notify_all()

    def _break(self) -> None:
        with self._turn:
            self.broken = True
            self._turn.notify_all()


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
