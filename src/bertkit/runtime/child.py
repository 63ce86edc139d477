"""The model process of bertkit.runtime.process: opens a runner and answers padded batches until its pipe closes.

    python -m bertkit.runtime.child FD MODEL_DIR BACKEND PRECISION THREADS     # started by ProcessRunner only

FD is its end of a socket pair with the serving process; THREADS its CPU threads. It sends
("ready", (facts, precision, threads)) or ("error", exception) once, then for each batch (ids, mask, types,
hidden_states) the arrays ("ok", (last_hidden_state, pooler_output, hidden_states)) or ("error", e).
"""

from __future__ import annotations

import logging
import pickle
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection

from bertkit.runtime.seam import Runner, set_default_threads


def main(conn, model_dir: str, backend: str, precision: str, threads: int) -> None:
    """Open the runner, then answer batches until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    set_default_threads(threads)
    try:
        from bertkit.runtime.folder import open_folder
        from bertkit.runtime.open import open_runner

        runner = open_runner(open_folder(model_dir), backend, precision, "cpu")
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", _sendable(e)))
        return
    conn.send(("ready", (runner.facts, runner.precision, runner.threads())))
    # Answers go out on a thread of their own: a few MB each, written as fast as the busy serving process reads
    # them, while this thread already runs the next batch (waiting on that write cost the child ~3 % of its time).
    answers: queue.SimpleQueue = queue.SimpleQueue()
    sender = threading.Thread(target=_send_answers, args=(conn, answers), name="bertkit-answers", daemon=True)
    sender.start()
    while True:
        try:
            ids, mask, types, hidden_states = conn.recv()
        except (EOFError, OSError):
            break
        try:
            answers.put(("ok", _run(runner, ids, mask, types, hidden_states)))
        except Exception as e:  # noqa: BLE001 - the parent raises it for the batch that caused it
            answers.put(("error", _sendable(e)))
    answers.put(None)
    sender.join()


def _send_answers(conn, answers: queue.SimpleQueue) -> None:
    """Send each answer in turn until None (or until the parent is gone)."""
    while (answer := answers.get()) is not None:
        try:
            conn.send(answer)
        except OSError:  # the parent closed its end: the main loop's recv ends too
            return


def _sendable(e: BaseException) -> BaseException:
    """The exception itself when it pickles, else a RuntimeError naming it (the parent raises what it gets)."""
    try:
        pickle.dumps(e)
    except Exception:  # noqa: BLE001 - any failure to pickle
        return RuntimeError(f"{type(e).__name__}: {e}")
    return e


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


if __name__ == "__main__":  # the child: python -m bertkit.runtime.child FD MODEL_DIR BACKEND PRECISION THREADS
    _fd, _dir, _backend, _precision, _threads = sys.argv[1:6]
    logging.basicConfig(level=logging.WARNING)
    main(Connection(int(_fd)), _dir, _backend, _precision, int(_threads))
