"""The representation commands (encode, tokens, fill-mask, nsp, similarity, inspect, demo) run as a user runs
them: a real process or `main()`, real files, the packaged model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import assert_user_error, run_process


def test_encode_arguments_print_one_json_array_per_text(encoder):
    r = run_process("encode", "A man is playing a guitar.", "Hi", "--normalize")
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    expected = encoder.encode(["A man is playing a guitar.", "Hi"], normalize=True)
    assert np.abs(np.array(rows) - expected).max() < 1e-6


@pytest.mark.parametrize("suffix", [".npy", ".jsonl", ".parquet"])
def test_encode_file_round_trips_through_every_output_format(run, encoder, tmp_path, suffix):
    texts = ["first line", "second, longer line of text", "ünïcode third"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / f"vecs{suffix}"
    r = run("encode", "--input", tmp_path / "in.txt", "--output", out, "--pooling", "cls", "--layers", "2",
            "--layers", "-1")
    assert r.returncode == 0, r.stderr.decode()
    expected = encoder.encode(texts, pooling="cls", layers=[2, -1])
    if suffix == ".npy":
        got = np.load(out)
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["text"] for r in rows] == texts
        got = np.array([r["embedding"] for r in rows])
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column("text").to_pylist() == texts
        got = np.array(table.column("embedding").to_pylist())
    assert got.shape == (3, 384) and np.abs(got - expected).max() < 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.txt", out.name])  # no temp files left


def test_encode_reads_stdin(encoder):
    r = run_process("encode", "--input", "-", input=b"one\ntwo\n")
    assert r.returncode == 0 and len(r.stdout.decode().splitlines()) == 2


def test_invalid_utf8_line_is_named_and_existing_output_is_kept(tmp_path):
    run = run_process
    (tmp_path / "in.txt").write_bytes(b"good line\nbad \xff\xfe line\nanother good line\n")
    out = tmp_path / "keep.npy"
    np.save(out, np.arange(3.0))
    r = run("encode", "--input", tmp_path / "in.txt", "--output", out)
    assert_user_error(r, "line 2 is not valid UTF-8", "--skip-bad-lines")
    assert np.array_equal(np.load(out), np.arange(3.0))  # data already written is never lost


def test_skip_bad_lines_warns_with_a_count(run, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"good line\nbad \xff line\n\nanother good line\n")
    out = tmp_path / "v.npy"
    r = run("encode", "--input", tmp_path / "in.txt", "--output", out, "--skip-bad-lines")
    assert r.returncode == 0, r.stderr.decode()
    assert "skipped 2 bad line(s)" in r.stderr.decode() and "2, 3" in r.stderr.decode()
    assert np.load(out).shape == (2, 384)


def test_long_text_is_truncated_with_a_warning_and_no_truncate_refuses(run):
    long_text = " ".join(["word"] * 10_000)
    r = run("encode", long_text)
    assert r.returncode == 0
    assert "1 of 1 inputs were longer than 256 tokens and were truncated" in r.stderr.decode()
    assert_user_error(run("encode", long_text, "--no-truncate"), "more than 256 tokens")


def test_tokens_similarity_inspect_and_demo(run):
    r = run("tokens", "Angela Merkel visited Paris.")
    assert r.returncode == 0 and "##kel" in r.stdout.decode()
    r = run("similarity", "A man is playing a guitar.", "Someone plays an instrument.")
    assert r.returncode == 0 and 0.4 < float(r.stdout) < 1.0
    r = run("inspect")
    out = r.stdout.decode()
    assert r.returncode == 0 and "total parameters: 22,713,216" in out and "encoder.layer.5" in out
    assert "masked-LM head absent" in out
    r = run_process("demo")  # a real process, as `make demo` runs it
    assert r.returncode == 0 and "Here mean separates them best" in r.stdout.decode()


def test_fill_mask_and_nsp_on_a_checkpoint_with_heads(run, pretraining_checkpoint):
    r = run("fill-mask", "The [MASK] sat on the mat.", "--top-k", "3", "--model", pretraining_checkpoint)
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and lines[0] == "[MASK] #1:" and len(lines) == 4
    r = run("nsp", "He went to the store.", "He bought milk.", "--model", pretraining_checkpoint)
    assert r.returncode == 0 and 0.0 <= float(r.stdout) <= 1.0
