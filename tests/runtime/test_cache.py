"""The sha256 memo of cached graphs and weights (bertkit.runtime.cache.files_sha256): a cold start skips reading
files whose stat is unchanged, and never trusts the memo for a file that was written since."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from bertkit.runtime import cache


@pytest.fixture
def memo_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(cache, "RACY_SECONDS", 0)  # files written by the test are old enough at once
    return cache.user_cache_dir() / cache.HASH_MEMO


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_the_memo_answers_for_an_unchanged_file(tmp_path, memo_home):
    f = write(tmp_path / "w.bin", b"a" * 1000)
    assert cache.files_sha256(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    memo = json.loads(memo_home.read_text())
    (entry,) = memo.values()
    entry["sha256"] = "remembered"  # proves the second call reads the memo, not the file
    memo_home.write_text(json.dumps(memo))
    assert cache.files_sha256(f) == "remembered"


def test_a_rewrite_with_the_same_size_and_mtime_is_hashed_again(tmp_path, memo_home):
    f = write(tmp_path / "w.bin", b"a" * 1000)
    cache.files_sha256(f)
    st = f.stat()
    time.sleep(0.05)  # past the file system's clock tick
    write(f, b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` or rsync would leave it: only ctime tells
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert cache.files_sha256(f) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_several_files_hash_as_one_stream(tmp_path, memo_home):
    a, b = write(tmp_path / "g.xml", b"graph"), write(tmp_path / "g.bin", b"weights")
    assert cache.files_sha256(a, b) == hashlib.sha256(b"graphweights").hexdigest()
    assert cache.files_sha256(a, b) == hashlib.sha256(b"graphweights").hexdigest()  # from the memo
    assert cache.files_sha256(a) == hashlib.sha256(b"graph").hexdigest()


def test_a_file_written_just_now_is_not_remembered(tmp_path, memo_home, monkeypatch):
    monkeypatch.setattr(cache, "RACY_SECONDS", 2)
    f = write(tmp_path / "w.bin", b"fresh")
    assert cache.files_sha256(f) == hashlib.sha256(b"fresh").hexdigest()
    assert not memo_home.exists()


def test_an_unwritable_cache_costs_only_the_shortcut(tmp_path, monkeypatch):
    blocker = write(tmp_path / "not-a-folder", b"")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(cache, "RACY_SECONDS", 0)
    f = write(tmp_path / "w.bin", b"x")
    assert cache.files_sha256(f) == hashlib.sha256(b"x").hexdigest()


def test_memo_entries_of_removed_files_are_dropped(tmp_path, memo_home):
    gone, kept = write(tmp_path / "gone.bin", b"1"), write(tmp_path / "kept.bin", b"2")
    cache.files_sha256(gone)
    gone.unlink()
    cache.files_sha256(kept)
    assert list(json.loads(memo_home.read_text())) == [str(kept.resolve())]
