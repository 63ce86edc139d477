"""The model in a child process (bertkit.runtime.process, `bertkit serve --model-process`): the same vectors as
in process, heads still answered, a dead child started again, an error in a batch raised for that batch, and a
caller's script without a main guard not re-run (no multiprocessing spawn)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bertkit import Encoder
from bertkit.errors import BackendError
from bertkit.runtime.seam import Runner

TEXTS = ["A man is playing a guitar.", "Hi.", "The quick brown fox jumps over the lazy dog near the river bank.",
         "Paris is the capital of France."]


@pytest.fixture(scope="module")
def pair():
    """(in process, in a child) encoders of the packaged model."""
    here = Encoder.load(device="cpu")
    there = Encoder.load(device="cpu", process=True)
    yield here, there
    there.runner.close()


def test_the_child_gives_the_vectors_of_the_process(pair):
    here, there = pair
    assert isinstance(there.runner, Runner) and there.runner.pid not in (None, os.getpid())
    assert there.runner.batch_cost is None  # a torch child's packed forward: batches cut by count
    for kw in ({"pooling": "mean", "normalize": True}, {"pooling": "cls", "layers": [1, -1]},
               {"pooling": "pooler"}, {"pooling": "max"}):
        # 1e-5, not 1e-6: the child runs on one CPU fewer than this process, and fp32 sums in another order
        np.testing.assert_allclose(there.encode(TEXTS, **kw), here.encode(TEXTS, **kw), atol=1e-5, err_msg=str(kw))
    a, b = here.encode_tokens(TEXTS), there.encode_tokens(TEXTS)
    for x, y in zip(a, b):
        assert y.tokens == x.tokens
        np.testing.assert_allclose(y.vectors, x.vectors, atol=1e-5)


def test_heads_and_attentions_stay_in_the_parent(pair):
    here, there = pair
    ref, got = here.forward(TEXTS, output_attentions=True), there.forward(TEXTS, output_attentions=True)
    np.testing.assert_allclose(got.attentions[-1].numpy(), ref.attentions[-1].numpy(), atol=1e-6)


def test_encode_workers_do_not_shrink_the_child(pair):
    """encode()'s CPU workers ask their runner for 1 thread each; the child runs one batch at a time and keeps
    all of its threads (it used to be sent each caller's count, so N workers meant one core in the child)."""
    here, there = pair
    before = there.runner.threads()
    there.runner.set_threads(1)
    assert there.runner.threads() == before
    many = TEXTS * 20
    np.testing.assert_allclose(there.encode(many, batch_size=4, workers=2), here.encode(many, batch_size=4),
                               atol=1e-5)


def test_a_dead_child_is_started_again(pair):
    here, there = pair
    old = there.runner.pid
    os.kill(old, signal.SIGKILL)
    there.runner._pipe.proc.wait(10)
    np.testing.assert_allclose(there.encode(TEXTS), here.encode(TEXTS), atol=1e-5)
    assert there.runner.pid not in (old, None)


def test_callers_on_several_threads_each_get_their_own_answer(pair):
    """Batches from several threads are pipelined through the pipe (sent while the child runs another) and
    each caller reads its own answer: texts of different lengths make a mix-up show in the shapes and values."""
    here, there = pair
    jobs = [[f"text number {i} " * (1 + i % 7)] * (1 + i % 5) for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda texts: there.encode(texts, workers=1), jobs))
    for texts, vecs in zip(jobs, got):
        np.testing.assert_allclose(vecs, here.encode(texts), atol=1e-5)


def test_batches_in_flight_when_the_child_dies_fail_and_the_next_starts_it_again(pair):
    """A child killed with two batches sent: both callers get BackendError (neither waits forever for an
    answer that will not come), and the next call starts a fresh child."""
    here, there = pair
    ids = np.full((64, 128), 2000, dtype=np.int64)  # long enough that both are still in flight when it dies
    mask, types = np.ones_like(ids), np.zeros_like(ids)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(there.runner.run, ids, mask, types, True) for _ in range(2)]
        time.sleep(0.05)
        os.kill(there.runner.pid, signal.SIGKILL)
        for run in runs:
            with pytest.raises(BackendError, match="model process"):
                run.result(timeout=60)
    np.testing.assert_allclose(there.encode(TEXTS), here.encode(TEXTS), atol=1e-5)


def test_an_error_in_a_batch_is_raised_for_that_batch_only(pair):
    _, there = pair
    ids = np.full((1, 4), 10**9, dtype=np.int64)  # past the vocabulary: the child's embedding lookup fails
    with pytest.raises(IndexError):
        there.runner.run(ids, np.ones_like(ids), np.zeros_like(ids))
    assert there.encode(["still fine"]).shape == (1, 384)


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent("""
        from bertkit import Encoder
        enc = Encoder.load(device="cpu", process=True)
        print("vectors", enc.encode(["hello"]).shape)
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("vectors") == 1 and "(1, 384)" in r.stdout


def test_the_model_process_is_cpu_only():
    with pytest.raises(BackendError, match="CPU"):
        Encoder.load(device="cuda", process=True)


def test_the_parent_opens_its_own_model_only_for_heads():
    enc = Encoder.load(device="cpu", process=True)
    try:
        assert enc.hidden_size == 384 and enc.precision == "fp32" and enc.backend == "torch"
        enc.encode(TEXTS)
        assert enc.runner._inner is None  # vectors never load the model in this process
        enc.forward(TEXTS[:1], output_attentions=True)
        assert enc.runner._inner is not None
    finally:
        enc.runner.close()


def test_a_server_runs_the_model_in_a_child_only_when_its_threads_leave_a_core_to_http(monkeypatch):
    from bertkit.runtime import process

    monkeypatch.setattr(process, "cpu_budget", lambda: 4)
    monkeypatch.setattr(process, "GPU_NODES", ())  # as on a machine without a GPU driver
    assert process.child_pays(1) and process.child_pays(3) and process.child_pays(2, backend="onnx")
    assert not process.child_pays(4) and not process.child_pays(8)  # every core: in process serves more
    assert not process.child_pays(None)  # torch's default: every core
    monkeypatch.setattr(process, "cpu_budget", lambda: 1)
    assert not process.child_pays(1)  # one CPU: no core for the HTTP side either way
