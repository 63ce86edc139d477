"""Issue 16 (hardening), the corpus rows: 6 a resumed job whose rows were edited in place (size and mtime
kept), 11 --skip-bad-rows and a JSONL row without the text key, and the folders a refused job leaves behind."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bertkit.corpus import CorpusError, CorpusJob, embed_corpus, read_embeddings, read_manifest
from bertkit.errors import BertkitError

ROWS = 1_700


def write_rows(path, texts):
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")


def kill_after_two_shards(out):
    """What a run killed after its second shard leaves: two shard files and an unfinished manifest."""
    (out / "part-00002.parquet").unlink()
    manifest = read_manifest(out)
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def edit_in_place(path, edits: dict[int, str]):
    """Replace rows by texts of the same length, then put back the file's size and mtime."""
    st = os.stat(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    for row, text in edits.items():
        assert len(text) == len(lines[row])
        lines[row] = text
    write_rows(path, lines)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def test_row6_rows_edited_in_place_are_embedded_again(tmp_path, encoder):
    src, out = tmp_path / "docs.txt", tmp_path / "out"
    texts = [f"document number {i:05d}" for i in range(ROWS)]
    write_rows(src, texts)
    job = CorpusJob(src, out, shard_rows=800)
    embed_corpus(job, encoder=encoder)
    kill_after_two_shards(out)
    new = {100: "a guitar in row 00100", 1500: "stock prices in 01500"}
    edit_in_place(src, new)

    result = embed_corpus(job, encoder=encoder)
    assert result.written == 3  # the two edited shards again, and the one never written
    _, vectors = read_embeddings(out)
    for row, text in new.items():
        np.testing.assert_allclose(vectors[row], encoder.encode([text])[0], atol=1e-5)
    np.testing.assert_allclose(vectors[0], encoder.encode([texts[0]])[0], atol=1e-5)


def test_row6_rows_that_moved_are_refused(tmp_path, encoder):
    src, out = tmp_path / "docs.txt", tmp_path / "out"
    write_rows(src, [f"doc {i:03d}" for i in range(30)])
    job = CorpusJob(src, out, shard_rows=10)
    embed_corpus(job, encoder=encoder)
    kill_after_two_shards(out)
    st = os.stat(src)
    raw = src.read_bytes()
    src.write_bytes(raw.replace(b"doc 005\n", b"do\nc\n05\n", 1))  # same size, two rows more: rows shifted
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(CorpusError, match="rows moved.*--overwrite"):
        embed_corpus(job, encoder=encoder)


def test_row11_skip_bad_rows_skips_a_row_without_the_text_key(tmp_path, encoder):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text": "a"}\n{"body": "no text key"}\n{"text": "c"}\n', encoding="utf-8")
    result = embed_corpus(CorpusJob(src, tmp_path / "out", skip_bad_rows=True), encoder=encoder)
    assert (result.rows, result.skipped) == (2, 1)
    items, _ = read_embeddings(tmp_path / "out")
    assert items.column("row").to_pylist() == [0, 2]


def test_row11_a_refused_job_leaves_no_folder_behind(tmp_path, encoder):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text": "a"}\n{"body": "no text key"}\n', encoding="utf-8")
    with pytest.raises(BertkitError, match="row 1 has no 'text' key.*--skip-bad-rows"):
        embed_corpus(CorpusJob(src, tmp_path / "new"), encoder=encoder)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made: kept, without a manifest in it
    with pytest.raises(BertkitError):
        embed_corpus(CorpusJob(src, tmp_path / "mine"), encoder=encoder)
    assert list((tmp_path / "mine").iterdir()) == []
    src.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")  # fixed: the same folder now works
    assert embed_corpus(CorpusJob(src, tmp_path / "mine"), encoder=encoder).rows == 2


def test_row12_rows_with_nothing_to_embed_are_bad_rows(tmp_path, encoder):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text": "a"}\n{"text": "\\u200b\\u0000"}\n{"text": "\\ud800"}\n{"text": "c"}\n', encoding="utf-8")
    result = embed_corpus(CorpusJob(src, tmp_path / "out", skip_bad_rows=True), encoder=encoder)
    assert (result.rows, result.skipped) == (2, 2)
