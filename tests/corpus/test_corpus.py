"""embed-corpus: readers, shards and manifest, resume after a real kill, chunking, and the Ray Data engine
(local Ray instance, one per module) including an actor process killed mid-job."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import parent_pid

from bertkit.corpus import CorpusError, CorpusJob, EmbedOptions, embed_corpus, read_embeddings, read_manifest
from bertkit.errors import InputError

TEXTS = [
    "A man is playing a guitar.",
    'She said "hello, world" and left.',
    "Stocks fell sharply on Monday.",
    "The cat sat on the mat.",
    "Quantum computers use qubits.",
    "Rain is expected tomorrow in Paris.",
    "The team won the final 3-1.",
]


def run(encoder, src, out, **kw) -> tuple[pa.Table, np.ndarray]:
    options = kw.pop("options", EmbedOptions())
    embed_corpus(CorpusJob(src, out, options=options, **kw), encoder=encoder)
    return read_embeddings(out)


@pytest.fixture(scope="module")
def agnews60(data_dir, tmp_path_factory) -> Path:
    """The first 60 rows of AG News dev (text TAB label, no header), in a temporary file."""
    lines = (data_dir / "agnews" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:60]
    path = tmp_path_factory.mktemp("ag") / "ag.tsv"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local_ag(agnews60, tmp_path_factory, encoder) -> Path:
    """The uninterrupted local run every other engine / interrupted run must equal."""
    out = tmp_path_factory.mktemp("local") / "out"
    embed_corpus(CorpusJob(agnews60, out, header=False, shard_rows=5), encoder=encoder)
    return out


def assert_same_output(a: Path, b: Path, atol: float = 1e-5) -> None:
    meta_a, va = read_embeddings(a)
    meta_b, vb = read_embeddings(b)
    assert meta_a.to_pylist() == meta_b.to_pylist()  # same rows, ids, hashes, in the same order
    assert va.shape == vb.shape
    np.testing.assert_allclose(va, vb, atol=atol, rtol=0)
    assert sorted(p.name for p in a.glob("part-*")) == sorted(p.name for p in b.glob("part-*"))


# -- formats -----------------------------------------------------------------------------------------------


def test_every_format_gives_the_encoders_vectors_ids_and_hashes(tmp_path, encoder):
    import hashlib

    expected = encoder.encode(TEXTS)
    ids = [f"doc-{i}" for i in range(len(TEXTS))]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"body": t, "key": k}) + "\n" for t, k in zip(TEXTS, ids)))
    pq.write_table(pa.table({"key": ids, "body": TEXTS}), tmp_path / "c.parquet", row_group_size=3)
    import csv

    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "body"])
        w.writerows(zip(ids, TEXTS))
    for name in ("c.jsonl", "c.parquet", "c.csv"):
        meta, vecs = run(encoder, tmp_path / name, tmp_path / f"out-{name}", text_column="body", id_column="key",
                         shard_rows=3)
        assert meta.column("id").to_pylist() == ids, name
        assert meta.column("row").to_pylist() == list(range(len(TEXTS)))
        assert meta.column("text_hash").to_pylist() == [hashlib.sha256(t.encode()).hexdigest() for t in TEXTS]
        np.testing.assert_allclose(vecs, expected, atol=1e-5)
        assert len(list((tmp_path / f"out-{name}").glob("part-*.parquet"))) == 3  # 7 rows in shards of 3
    # A text file: a line per text, ids are row numbers; a BOM and CRLF line ends are not part of the text.
    (tmp_path / "c.txt").write_bytes(("\ufeff" + "\r\n".join(TEXTS) + "\r\n").encode())
    meta, vecs = run(encoder, tmp_path / "c.txt", tmp_path / "out-txt", shard_rows=2)
    assert meta.column("id").to_pylist() == [str(i) for i in range(len(TEXTS))]
    np.testing.assert_allclose(vecs, expected, atol=1e-5)


def test_csv_shard_boundaries_follow_records_not_lines(tmp_path, encoder):
    """A quoted field spanning lines must not shift the byte offsets the shards start at."""
    texts = ["first line\nsecond line of the same text", "plain", 'quote "inside", and a comma', "last one"]
    import csv

    with open(tmp_path / "m.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in texts)
    meta, vecs = run(encoder, tmp_path / "m.csv", tmp_path / "out", shard_rows=1, options=EmbedOptions(keep_text=True))
    assert meta.column("text").to_pylist() == texts
    np.testing.assert_allclose(vecs, encoder.encode(texts), atol=1e-5)


def test_bad_rows_are_errors_naming_the_row_or_skipped_keeping_ids(tmp_path, encoder):
    (tmp_path / "b.txt").write_text("good one\n\nanother good one\n   \nlast\n")
    with pytest.raises(InputError, match=r"row 1 .*--skip-bad-rows"):
        run(encoder, tmp_path / "b.txt", tmp_path / "o1")
    embed_corpus(CorpusJob(tmp_path / "b.txt", tmp_path / "o2", skip_bad_rows=True, shard_rows=2), encoder=encoder)
    meta, _ = read_embeddings(tmp_path / "o2")
    assert meta.column("id").to_pylist() == ["0", "2", "4"]
    assert read_manifest(tmp_path / "o2")["skipped"] == 2


def test_user_errors_are_clear(tmp_path, encoder):
    (tmp_path / "x.jsonl").write_text('{"body": "hi"}\n')
    with pytest.raises(CorpusError, match="no 'text' key.*--text-column"):
        run(encoder, tmp_path / "x.jsonl", tmp_path / "o")
    (tmp_path / "x.dat").write_text("hi\n")
    with pytest.raises(CorpusError, match="--format"):
        run(encoder, tmp_path / "x.dat", tmp_path / "o2")
    (tmp_path / "h.csv").write_text("title,body\na,b\n")
    with pytest.raises(CorpusError, match=r"not in the header .*\['title', 'body'\]"):
        run(encoder, tmp_path / "h.csv", tmp_path / "o3")
    with pytest.raises(CorpusError, match="--chunk-tokens .* 254"):
        run(encoder, tmp_path / "h.csv", tmp_path / "o4", text_column="body", options=EmbedOptions(chunk_tokens=400))


# -- chunking ----------------------------------------------------------------------------------------------


def test_chunks_are_overlapping_windows_with_offsets(tmp_path, encoder):
    long = " ".join(f"word{i} is here." for i in range(60))  # ~300 wordpieces
    texts = [long, "A short text."]
    (tmp_path / "l.txt").write_text("\n".join(texts) + "\n")
    options = EmbedOptions(chunk_tokens=64, chunk_overlap=16, keep_text=True)
    meta, vecs = run(encoder, tmp_path / "l.txt", tmp_path / "out", options=options)
    rows = meta.to_pylist()
    long_chunks = [r for r in rows if r["id"] == "0"]
    assert [r["chunk"] for r in long_chunks] == list(range(len(long_chunks))) and len(long_chunks) >= 5
    assert long_chunks[0]["start"] == 0 and long_chunks[-1]["end"] == len(long)
    for a, b in itertools.pairwise(long_chunks):
        assert b["start"] < a["end"]  # windows overlap
    for r in rows:
        assert r["text"] == texts[int(r["id"])][r["start"] : r["end"]]
    tok = encoder.tokenizer.tokenizer
    assert max(len(tok.encode(r["text"], add_special_tokens=False).ids) for r in long_chunks) <= 64 + 2
    # Each vector is the chunk text's vector; a short text is one chunk, the same as without chunking.
    np.testing.assert_allclose(vecs, encoder.encode([r["text"] for r in rows]), atol=1e-5)
    assert rows[-1] | {"text": None} == {"row": 1, "id": "1", "chunk": 0, "start": 0, "end": 13, "text": None,
                                         "text_hash": rows[-1]["text_hash"]}


# -- resume ------------------------------------------------------------------------------------------------


def test_rerun_skips_finished_shards(local_ag, agnews60, tmp_path, encoder):
    out = tmp_path / "out"
    shutil.copytree(local_ag, out)  # a finished job, as if run here
    job = CorpusJob(agnews60, out, header=False, shard_rows=5)
    assert embed_corpus(job, encoder=encoder).written == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    (out / "part-00004.parquet").unlink()
    again = embed_corpus(job, encoder=encoder)
    assert (again.shards, again.written, again.rows) == (12, 1, 60)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert {k for k in after if after[k] != before.get(k)} == {"part-00004.parquet"}
    assert_same_output(out, local_ag)


def test_a_different_job_in_the_same_folder_needs_overwrite(tmp_path, encoder):
    (tmp_path / "a.txt").write_text("one text\nanother text\n")
    embed_corpus(CorpusJob(tmp_path / "a.txt", tmp_path / "out"), encoder=encoder)
    changed = CorpusJob(tmp_path / "a.txt", tmp_path / "out", options=EmbedOptions(normalize=True))
    with pytest.raises(CorpusError, match="different job.*--overwrite"):
        embed_corpus(changed, encoder=encoder)
    changed.overwrite = True
    assert embed_corpus(changed, encoder=encoder).written == 1
    _, vecs = read_embeddings(tmp_path / "out")
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.md").write_text("mine")
    with pytest.raises(CorpusError, match="not empty and is not an embed-corpus output"):
        embed_corpus(CorpusJob(tmp_path / "a.txt", tmp_path / "other"), encoder=encoder)


def test_a_job_from_before_an_option_existed_still_resumes(tmp_path, encoder):
    """A manifest written by an older bertkit lacks the newer options (e.g. `sparse`); they mean their default."""
    (tmp_path / "a.txt").write_text("one text\nanother text\n")
    job = CorpusJob(tmp_path / "a.txt", tmp_path / "out", shard_rows=1)
    embed_corpus(job, encoder=encoder)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for newer in ("sparse", "sparse_top_k"):
        del manifest["embedding"][newer]
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "out" / "part-00001.parquet").unlink()
    assert embed_corpus(job, encoder=encoder).written == 1
    newer = CorpusJob(tmp_path / "a.txt", tmp_path / "out", shard_rows=1, options=EmbedOptions(sparse_top_k=5))
    with pytest.raises(CorpusError, match="different job"):
        embed_corpus(newer, encoder=encoder)


def test_a_job_refused_for_its_model_writes_nothing(tmp_path, encoder):
    """--sparse needs the masked-LM head, which the packaged model lacks: refused before the manifest."""
    from bertkit.errors import MissingHeadError

    (tmp_path / "a.txt").write_text("one text\n")
    with pytest.raises(MissingHeadError, match="masked-LM head"):
        embed_corpus(CorpusJob(tmp_path / "a.txt", tmp_path / "out", options=EmbedOptions(sparse=True)),
                     encoder=encoder)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_killed_run_restarted_equals_uninterrupted_run(local_ag, agnews60, tmp_path):
    """SIGKILL a real `bertkit embed-corpus` process mid-way, rerun it: same output, no shard lost or doubled."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bertkit.cli", "embed-corpus", str(agnews60), str(out), "--no-header",
           "--shard-rows", "5", "--batch-size", "4"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(out.glob("part-*.parquet")))
    assert 2 <= done_at_kill < 12 and not read_manifest(out)["complete"]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - done_at_kill} embedded now, {done_at_kill} already done" in rerun.stderr
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["rows"] == 60
    assert not list(out.glob(".part-*"))  # no temporary file of the killed run is left
    meta, _ = read_embeddings(out)
    assert meta.column("row").to_pylist() == list(range(60))  # none lost, none duplicated
    assert_same_output(out, local_ag)


# -- Ray Data ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="the Ray engine needs the 'scale' extra")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024**2)
    yield ray
    ray.shutdown()


def descends_from_this_process(pid: int) -> bool:
    """Whether pid was started (through any chain of parents) by this test process: its own Ray cluster's workers,
    not those of a Ray cluster another pytest-xdist worker runs at the same time."""
    while pid > 1:
        if pid == os.getpid():
            return True
        pid = parent_pid(pid)
    return False


def map_worker_pids() -> set[int]:
    """Processes of this test's Ray Data actor pool (titled ray::MapWorker...; EmbedActor is the only map here)."""
    pids = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"MapWorker" in (p / "cmdline").read_bytes() and descends_from_this_process(int(p.name)):
                    pids.add(int(p.name))
            except OSError:
                pass
    return pids


def test_ray_engine_equals_local_engine(ray_local, local_ag, agnews60, tmp_path):
    out = tmp_path / "ray"
    result = embed_corpus(CorpusJob(agnews60, out, header=False, shard_rows=5), engine="ray")
    assert (result.shards, result.written, result.rows) == (12, 12, 60)
    assert read_manifest(out)["engine"] == "ray"
    assert_same_output(out, local_ag)


def test_ray_actor_killed_mid_job_is_retried_and_output_complete(ray_local, local_ag, agnews60, tmp_path):
    out = tmp_path / "ray-kill"
    job = CorpusJob(agnews60, out, header=False, shard_rows=5, options=EmbedOptions(batch_size=1))
    errors: list[BaseException] = []

    def work():
        try:
            embed_corpus(job, engine="ray")
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 180
    while not (map_worker_pids() and list(out.glob("part-*.parquet"))):
        assert thread.is_alive() and time.monotonic() < deadline, errors
        time.sleep(0.01)
    (victim,) = map_worker_pids()
    os.kill(victim, signal.SIGKILL)
    killed_at = len(list(out.glob("part-*.parquet")))
    seen: set[int] = set()
    while thread.is_alive() and time.monotonic() < deadline + 120:
        seen |= map_worker_pids()
        time.sleep(0.05)
    thread.join(timeout=1)
    assert not thread.is_alive() and not errors, errors
    assert killed_at < 12, "the job finished before the actor could be killed"
    assert seen - {victim}, "Ray did not start a new actor after the kill"
    assert not Path(f"/proc/{victim}").exists() or b"MapWorker" not in Path(f"/proc/{victim}/cmdline").read_bytes()
    assert read_manifest(out)["complete"]
    assert_same_output(out, local_ag)
