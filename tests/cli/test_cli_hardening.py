"""Issue 16 (hardening), the command line's rows: each test sends exactly the input that broke it.
1 undecodable argv bytes; 5 huge, sparse, NUL-filled and single-line inputs; 7 outputs that cannot be written;
10 folders, FIFOs and process substitution as --input; 13 STS gold scores that are constant, NaN or inf;
15 help texts, choices, and a busy port. A user error is one line and exit 2, never a traceback."""

from __future__ import annotations

import errno
import os
import resource
import socket
import threading

import numpy as np
import pytest
from support import assert_user_error


@pytest.fixture
def encoder_once(monkeypatch, encoder):
    """`bertkit encode` with the session's encoder (the model is loaded once, not per command)."""
    from bertkit.cli import representations

    monkeypatch.setattr(representations, "load_encoder", lambda *a, **k: encoder)
    return encoder


# -- row 1 ---------------------------------------------------------------------------------------------------


def test_row1_undecodable_argv_byte_is_one_line(run, encoder_once):
    # `bertkit encode $'\xff'`: Python hands the byte over as the lone surrogate U+DCFF
    assert_user_error(run("encode", "\udcff"), "text 0 is not valid Unicode", "U+DCFF")


# -- row 5 ---------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_row5_a_2gb_sparse_file_is_refused_without_reading_it(run, encoder_once, tmp_path):
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(2 * 1024**3)  # 2 GB of NUL bytes that take no disk space
    before = peak_rss_mb()
    assert_user_error(run("encode", "--input", path), "line 1 is longer than 100,000 bytes", "--skip-bad-lines")
    assert peak_rss_mb() - before < 200  # bounded by the line limit, not the file


def test_row5_a_20mb_file_of_nul_bytes_is_refused(run, encoder_once, tmp_path):
    path = tmp_path / "nul.bin"
    path.write_bytes(b"\x00" * 20_000_000)
    assert_user_error(run("encode", "--input", path), "line 1 is longer than 100,000 bytes")
    path.write_bytes(b"\x00\x00\n" * 1000)  # short NUL lines: nothing to embed, like blank lines
    assert_user_error(run("encode", "--input", path), "line 1 is empty", "control or zero-width")


def test_row5_a_5mb_single_line_is_refused_and_the_limit_can_be_raised(run, encoder_once, tmp_path):
    path = tmp_path / "long.txt"
    path.write_bytes(b"word " * 1_000_000 + b"\n")
    before = peak_rss_mb()
    assert_user_error(run("encode", "--input", path), "line 1 is longer than 100,000 bytes (--max-line-bytes)")
    assert peak_rss_mb() - before < 200
    r = run("encode", "--input", path, "--skip-bad-lines", "--max-line-bytes", "1000")
    err = r.stderr.decode()  # the only line was skipped, with a warning
    assert r.returncode == 2 and "skipped 1 bad line" in err and "no texts to encode" in err and "Traceback" not in err
    path.write_bytes(b"word " * 100 + b"\nshort\n")
    r = run("encode", "--input", path, "--max-line-bytes", "1000")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr


# -- row 7 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output, fragment", [("/proc/x.npy", "cannot write /proc/x.npy"),
                                              ("/sys/x.jsonl", "cannot write /sys/x.jsonl")])
def test_row7_pseudo_file_systems_are_one_line(run, encoder_once, output, fragment):
    assert_user_error(run("encode", "hello", "--output", output), fragment)


def test_row7_a_full_disk_is_one_line_and_keeps_the_old_output(run, encoder_once, tmp_path, monkeypatch):
    out = tmp_path / "vecs.npy"
    out.write_bytes(b"the earlier output")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full)
    assert_user_error(run("encode", "hello", "--output", out), f"cannot write {out}: no space left on the device")
    assert out.read_bytes() == b"the earlier output"
    assert [p.name for p in tmp_path.iterdir()] == ["vecs.npy"]  # no temporary file left


def test_row7_index_build_on_a_zero_row_corpus_is_one_line(run, tmp_path, encoder):
    from bertkit.corpus import CorpusJob, embed_corpus

    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    embed_corpus(CorpusJob(tmp_path / "empty.txt", tmp_path / "emb"), encoder=encoder)
    assert_user_error(run("index", "build", tmp_path / "emb", "--output", tmp_path / "idx"), "holds no vectors")


# -- row 10 --------------------------------------------------------------------------------------------------


def test_row10_a_folder_as_input_says_so(run, encoder_once, tmp_path):
    assert_user_error(run("encode", "--input", tmp_path), f"input {tmp_path} is a folder")


def test_row10_a_fifo_is_read(run, encoder_once, tmp_path):
    fifo = tmp_path / "texts.fifo"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "w", encoding="utf-8") as f:
            f.write("a\nb\n")

    writer = threading.Thread(target=write)
    writer.start()
    r = run("encode", "--input", fifo)
    writer.join(10)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr


def test_row10_process_substitution_is_read(run, encoder_once):
    # <(printf 'a\n') is a pipe's /dev/fd/N
    read, write = os.pipe()
    os.write(write, b"a\n")
    os.close(write)
    try:
        r = run("encode", "--input", f"/dev/fd/{read}")
    finally:
        os.close(read)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1, r.stderr


# -- row 13 --------------------------------------------------------------------------------------------------


def sts(tmp_path, scores) -> str:
    pairs = [("A man plays guitar.", "Someone plays music."), ("Stocks fell.", "The cat sat."),
             ("It rains.", "It is raining."), ("A dog runs.", "Markets rose.")]
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, ((a, b), s) in enumerate(zip(pairs, scores))),
                    encoding="utf-8")
    return str(path)


def test_row13_constant_gold_scores_are_one_clear_line(run, tmp_path):
    assert_user_error(run("evaluate", "sts", sts(tmp_path, [3, 3, 3, 3]), "--pooling", "mean"),
                      "every gold score is 3", "constant labels")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_row13_nan_and_inf_scores_are_named(run, tmp_path, bad):
    r = run("evaluate", "sts", sts(tmp_path, [1, bad, 3, 4]), "--pooling", "mean")
    assert_user_error(r, "line 2", f"score '{bad}' is not a finite number")


# -- row 15 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["encode"], ["serve"], ["embed-corpus"], ["evaluate", "sts"], ["compare"]])
def test_row15_help_texts_name_no_issues_and_list_choices(run, command):
    r = run(*command, "--help")
    out = r.stdout.decode()
    assert r.returncode == 0 and "(issue" not in out
    if "--precision" in out:
        assert "fp32|bf16|int8" in out and "torch|onnx" in out, out


def test_row15_a_bad_precision_lists_the_choices(run):
    r = run("serve", "--precision", "fp64")
    assert_user_error(r, "unknown precision 'fp64'", "fp32, bf16, int8")


def test_row15_serve_on_a_busy_port_fails_before_loading_the_model(run, monkeypatch):
    from bertkit.cli import serving

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(serving, "load_encoder", must_not_load)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_user_error(run("serve", "--port", port), f"port {port} on 127.0.0.1 is already in use", "--port")


def test_row7_corpus_and_index_outputs_that_cannot_be_written_are_one_line(run, tmp_path, encoder, monkeypatch):
    from bertkit.corpus import CorpusJob, embed_corpus, job

    monkeypatch.setattr(job, "load_encoder", lambda *a, **k: encoder)
    (tmp_path / "docs.txt").write_text("a\nb\n", encoding="utf-8")
    assert_user_error(run("embed-corpus", tmp_path / "docs.txt", "/proc/out"), "cannot write /proc/out")
    embed_corpus(CorpusJob(tmp_path / "docs.txt", tmp_path / "emb"), encoder=encoder)
    for output in ("/proc/idx", "/sys/idx"):
        assert_user_error(run("index", "build", tmp_path / "emb", "--output", output), f"cannot write {output}")
