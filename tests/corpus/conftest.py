"""Fixtures shared by the object-storage and cluster tests of embed-corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertkit.corpus import CorpusJob, embed_corpus


@pytest.fixture(scope="session")
def ag60_lines(data_dir) -> str:
    """The first 60 rows of AG News dev (text TAB label, no header)."""
    return "".join((data_dir / "agnews" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:60])


@pytest.fixture(scope="session")
def ag60_local(ag60_lines, tmp_path_factory, encoder) -> Path:
    """The local engine's uninterrupted run of them (shards of 5 rows) on local disk: the reference every
    object-store and cluster run must equal."""
    folder = tmp_path_factory.mktemp("ag60-local")
    (folder / "ag.tsv").write_text(ag60_lines, encoding="utf-8")
    embed_corpus(CorpusJob(folder / "ag.tsv", folder / "out", header=False, shard_rows=5), encoder=encoder)
    return folder / "out"
