"""embed-corpus --engine ray on a real multi-node Ray cluster (ray.cluster_utils.Cluster: a head and two
worker nodes, each its own raylet process) with no shared disk in play: input and output on S3 (moto's server
on loopback). The output equals the local engine's; a worker node removed mid-job, and a driver killed
mid-job then rerun, still give every row exactly once and no temporary object under the output prefix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from s3_support import BUCKET, listing, put, s3_env
from support import parent_pid

from bertkit.corpus import CorpusJob, EmbedOptions, embed_corpus, read_embeddings, read_manifest

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the Ray engine needs the 'scale' extra")


@pytest.fixture(scope="module")
def s3c():
    with s3_env() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def cluster(s3c):
    """A head (no CPUs: it schedules, it does not embed) and two worker nodes of 3 logical CPUs each, so that
    after one is removed the other still fits both model actors (1 CPU each) and the 0.25-CPU I/O tasks. The
    nodes start after the AWS_* variables are set, so their workers reach the S3 server."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 128 * 1024**2,
                                                      "include_dashboard": False})
    workers = [c.add_node(num_cpus=3, object_store_memory=128 * 1024**2) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def ag(ag60_lines, ag60_local, s3c) -> tuple[str, Path]:
    """AG News dev's first 60 rows on S3, and the local engine's uninterrupted run of them on local disk."""
    put(s3c, "cluster/ag.tsv", ag60_lines.encode())
    return f"s3://{BUCKET}/cluster/ag.tsv", ag60_local


def assert_equal_to_local(uri: str, local: Path, endpoint: str, prefix: str) -> None:
    meta, vectors = read_embeddings(uri)
    meta_l, vectors_l = read_embeddings(local)
    assert meta.column("row").to_pylist() == list(range(60))  # every row exactly once, in order
    assert meta.to_pylist() == meta_l.to_pylist()  # same ids and text hashes
    np.testing.assert_allclose(vectors, vectors_l, atol=1e-5, rtol=0)
    assert listing(endpoint, prefix) == ["manifest.json"] + [f"part-{i:05d}.parquet" for i in range(12)]


def map_workers() -> dict[int, int]:
    """pid -> parent pid of Ray Data's actor processes (ray::MapWorker...); the parent is its node's raylet."""
    found = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"MapWorker" in (p / "cmdline").read_bytes():
                    found[int(p.name)] = parent_pid(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def test_two_worker_nodes_equal_the_local_engine(cluster, ag, s3c):
    uri, local = ag
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    result = embed_corpus(CorpusJob(uri, f"s3://{BUCKET}/cluster/plain", header=False, shard_rows=5),
                          engine="ray", actors=2, cpus_per_actor=1)
    assert (result.shards, result.written, result.rows) == (12, 12, 60)
    assert read_manifest(f"s3://{BUCKET}/cluster/plain")["engine"] == "ray"
    assert_equal_to_local(f"s3://{BUCKET}/cluster/plain", local, s3c, "cluster/plain")


def test_worker_node_removed_mid_job_every_row_once(cluster, ag, s3c):
    c, workers = cluster
    uri, local = ag
    out = f"s3://{BUCKET}/cluster/node-lost"
    job = CorpusJob(uri, out, header=False, shard_rows=5, options=EmbedOptions(batch_size=1))
    errors: list[BaseException] = []

    def work():
        try:
            embed_corpus(job, engine="ray", actors=2, cpus_per_actor=1)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    victim = workers[-1]
    deadline = time.monotonic() + 240
    # Wait for an actor on the victim node and a first committed shard, then take the node away.
    while not (raylet_pid(victim) in map_workers().values()
               and [k for k in listing(s3c, "cluster/node-lost") if k.startswith("_commits/")]):
        assert thread.is_alive() and time.monotonic() < deadline, errors
        time.sleep(0.05)
    committed = len([k for k in listing(s3c, "cluster/node-lost") if k.startswith("_commits/")])
    c.remove_node(victim)
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    assert committed < 12, "the job finished before the node could be removed"
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert_equal_to_local(out, local, s3c, "cluster/node-lost")
    workers.remove(victim)


def test_driver_killed_mid_job_then_rerun_resumes(cluster, ag, s3c):
    c, _ = cluster
    uri, local = ag
    out = f"s3://{BUCKET}/cluster/driver-lost"
    cmd = [sys.executable, "-m", "bertkit.cli", "embed-corpus", uri, out, "--no-header", "--shard-rows", "5",
           "--batch-size", "1", "--engine", "ray", "--address", c.address, "--actors", "2", "--cpus-per-actor", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.monotonic() + 240
    while len([k for k in listing(s3c, "cluster/driver-lost") if k.startswith("_commits/")]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the driver ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # Ray ends the dead driver's job: its actors and tasks
    done = len([k for k in listing(s3c, "cluster/driver-lost") if k.startswith("_commits/")])
    assert 2 <= done < 12 and not read_manifest(out)["complete"]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{12 - done} embedded now, {done} already done" in rerun.stderr
    assert_equal_to_local(out, local, s3c, "cluster/driver-lost")


def test_unreachable_address_is_one_line_and_exit_2(ag, tmp_path):
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "bertkit.cli", "embed-corpus", ag[0], str(tmp_path / "o"),
                        "--no-header", "--engine", "ray", "--address", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and f"--address 127.0.0.1:{port}: no Ray cluster answers there" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()
