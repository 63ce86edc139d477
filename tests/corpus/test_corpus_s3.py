"""embed-corpus on object storage: s3:// input and output against a real S3-compatible server (moto's server
mode on loopback), the commit protocol of bertkit.corpus.output under a kill mid-upload, and the user errors
of an s3:// URI (no credentials, a missing bucket, a prefix holding another job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from s3_support import BUCKET, FreezingProxy, listing, put, s3_env

from bertkit.corpus import CorpusError, CorpusJob, embed_corpus, read_embeddings, read_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3():
    """The server's endpoint, with the AWS_* variables of a client of it set for the module."""
    with s3_env() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def local_run(ag60_local) -> Path:
    return ag60_local


@pytest.fixture(scope="module")
def s3_input(s3, ag60_lines) -> str:
    put(s3, "in/ag.tsv", ag60_lines.encode())
    return f"s3://{BUCKET}/in/ag.tsv"


def assert_same(uri: str, local: Path) -> None:
    """Same rows, ids, hashes and order as the local run, vectors to 1e-5, every row once."""
    meta, vectors = read_embeddings(uri)
    meta_l, vectors_l = read_embeddings(local)
    assert meta.column("row").to_pylist() == list(range(60))
    assert meta.to_pylist() == meta_l.to_pylist()
    np.testing.assert_allclose(vectors, vectors_l, atol=1e-5, rtol=0)


def only_final_objects(endpoint: str, prefix: str, shards: int = 12) -> bool:
    return listing(endpoint, prefix) == ["manifest.json"] + [f"part-{i:05d}.parquet" for i in range(shards)]


def test_s3_input_and_output_equal_the_local_run(s3, s3_input, local_run, encoder):
    result = embed_corpus(CorpusJob(s3_input, f"s3://{BUCKET}/plain", header=False, shard_rows=5), encoder=encoder)
    assert (result.shards, result.written, result.rows) == (12, 12, 60)
    manifest = read_manifest(f"s3://{BUCKET}/plain")
    assert manifest["complete"] and manifest["input"]["path"] == s3_input and manifest["input"]["size"] > 0
    assert_same(f"s3://{BUCKET}/plain", local_run)
    assert only_final_objects(s3, "plain")  # no attempt object or commit marker left visible
    again = embed_corpus(CorpusJob(s3_input, f"s3://{BUCKET}/plain", header=False, shard_rows=5), encoder=encoder)
    assert again.written == 0  # a finished job reruns as a no-op


def test_upload_killed_half_way_then_rerun_commits_each_shard_once(s3, s3_input, local_run, tmp_path):
    """A real `bertkit embed-corpus` uploads through a proxy that freezes its third shard upload half-way; the
    process is SIGKILLed there. The half-sent object never appears; a rerun (straight to the server) deletes an
    uncommitted attempt, embeds only the uncommitted shards, and publishes each shard once."""
    out = f"s3://{BUCKET}/killed"
    proxy = FreezingProxy(s3, f"PUT /{BUCKET}/killed/_attempts/".encode(), count=3)
    cmd = [sys.executable, "-m", "bertkit.cli", "embed-corpus", s3_input, out, "--no-header", "--shard-rows", "5"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env={**os.environ, "AWS_ENDPOINT_URL": proxy.url})
    try:
        assert proxy.frozen.wait(180), proc.stderr.read().decode() if proc.poll() is not None else "no upload"
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting on its frozen upload
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proxy.close()
    left = listing(s3, "killed")
    assert [k for k in left if k.startswith("_commits/")] == ["_commits/part-00000.json", "_commits/part-00001.json"]
    assert len([k for k in left if k.startswith("_attempts/")]) == 2  # the frozen third never became an object
    assert not [k for k in left if k.startswith("part-")] and not read_manifest(out)["complete"]
    # An upload that finished but whose marker was never written (a kill between the two): never trusted.
    put(s3, "killed/_attempts/0123abcd/part-00002.parquet", b"PAR1 not a whole shard")
    # A marker whose write was cut off (an actor stopped with its dead driver's job left one empty): not a commit.
    put(s3, "killed/_commits/part-00003.json", b"")
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert "10 embedded now, 2 already done" in rerun.stderr
    assert_same(out, local_run)
    assert only_final_objects(s3, "killed")


def test_s3_user_errors_are_one_line_and_exit_2(s3, s3_input, tmp_path):
    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bertkit.cli", "embed-corpus", *args], capture_output=True,
                              text=True, timeout=120, check=False, env=env or dict(os.environ))

    no_keys = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    no_keys.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_ENDPOINT_URL=s3)
    r = cli(s3_input, str(tmp_path / "o"), "--no-header", env=no_keys)
    assert r.returncode == 2 and "no AWS credentials found; set AWS_ACCESS_KEY_ID" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli(s3_input, "s3://no-such-bucket/out", "--no-header")
    assert r.returncode == 2 and "bucket 'no-such-bucket' does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("s3://no-such-bucket/ag.tsv", str(tmp_path / "o2"), "--no-header")
    assert r.returncode == 2 and "bucket 'no-such-bucket' does not exist" in r.stderr
    # The output prefix of another job (other options): refused, its manifest untouched.
    prefix = f"s3://{BUCKET}/other"
    put(s3, "other/manifest.json", b'{"format": "bertkit-corpus/1", "input": {"path": "elsewhere"}, '
        b'"embedding": {}, "shard_rows": 7, "skip_bad_rows": false, "shards": [], "complete": true}')
    r = cli(s3_input, prefix, "--no-header")
    assert r.returncode == 2 and "holds the output of a different job" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert read_manifest(prefix)["shard_rows"] == 7
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


def test_overwrite_replaces_another_jobs_prefix_and_leaves_foreign_objects(s3, encoder):
    put(s3, "in/seven.txt", "".join(f"text number {i}\n" for i in range(7)).encode())
    prefix = f"s3://{BUCKET}/replaced"
    embed_corpus(CorpusJob(f"s3://{BUCKET}/in/seven.txt", prefix, shard_rows=3), encoder=encoder)
    put(s3, "replaced/notes.md", b"not ours")
    with pytest.raises(CorpusError, match="holds the output of a different job"):
        embed_corpus(CorpusJob(f"s3://{BUCKET}/in/seven.txt", prefix, shard_rows=2), encoder=encoder)
    result = embed_corpus(CorpusJob(f"s3://{BUCKET}/in/seven.txt", prefix, shard_rows=2, overwrite=True),
                          encoder=encoder)
    assert (result.shards, result.rows) == (4, 7) and read_manifest(prefix)["shard_rows"] == 2
    assert listing(s3, "replaced") == ["manifest.json", "notes.md"] + [f"part-{i:05d}.parquet" for i in range(4)]
    meta, vectors = read_embeddings(prefix)
    assert meta.column("id").to_pylist() == [str(i) for i in range(7)]
    np.testing.assert_allclose(vectors, encoder.encode([f"text number {i}" for i in range(7)]), atol=1e-5)
