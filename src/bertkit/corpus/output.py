"""Where a corpus job writes: a local folder, or an `s3://bucket/prefix` on an object store.

Both hold the same final layout (`manifest.json`, `part-NNNNN.parquet`, maybe `calibration.npz`) and both
guarantee that a shard a reader can see is whole and appears once. They get there differently:

- A local folder (`LocalOutput`) writes each shard to a hidden temporary file and renames it: a part file
  that exists is complete; a rerun removes temporary files a killed run left.
- An object store (`ObjectOutput`) has no rename, and a killed upload, or a retried task racing the task it
  replaces, must never leave a half-written or doubled shard visible. A shard is serialised in memory, then
  uploaded to a key of its own attempt, `_attempts/<uuid>/part-NNNNN.parquet` (a PUT, or a multipart upload,
  only makes an object visible once it is complete); once its size is checked, a small commit marker
  `_commits/part-NNNNN.json` naming that object, its size and sha256 is written (one upload, whole or not at
  all, see `_upload`; an empty one, left by an older bertkit's stopped task, reads as no marker). A shard is
  done only when its marker names an object of that size. Two attempts of the same shard write the same bytes
  and the marker names exactly one of them, so no row is ever counted twice. When every shard is committed the
  driver alone publishes: it copies each committed object to its final key `part-NNNNN.parquet` (a server-side
  copy: the object appears whole), writes `manifest.json` with `"complete": true` last, then deletes
  `_attempts/` and `_commits/`. A rerun first deletes the attempt objects no marker names (the uploads of a
  killed run), then embeds only the shards without a marker; a run killed while publishing publishes again.
  Readers trust only a manifest that says complete and read only the shards it lists. Incomplete multipart
  uploads of a killed run are invisible; a bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims their
  space. One driver per output prefix at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bertkit.corpus.shards import shard_done, shard_table, write_shard
from bertkit.corpus.spec import MANIFEST, Shard
from bertkit.corpus.storage import check_bucket, is_remote, s3_filesystem
from bertkit.outputs import atomic_write, writing

log = logging.getLogger(__name__)

ATTEMPTS, COMMITS = "_attempts", "_commits"


def open_output(location: str | Path) -> LocalOutput | ObjectOutput:
    return ObjectOutput(str(location)) if is_remote(location) else LocalOutput(location)


class LocalOutput:
    """A local folder: shards written through a temporary file and a rename (see the module docstring)."""

    remote = False

    def __init__(self, location: str | Path):
        self.dir = Path(location).expanduser()
        self.uri = str(self.dir)

    def is_file(self) -> bool:
        return self.dir.exists() and not self.dir.is_dir()

    def exists(self) -> bool:
        return self.dir.exists()

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.dir / MANIFEST
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_manifest(self, data: dict[str, Any]) -> None:
        atomic_write(self.dir / MANIFEST, json.dumps(data, indent=1) + "\n")  # a full disk: one line

    def not_empty(self) -> bool:
        return self.dir.is_dir() and any(self.dir.iterdir())

    def make(self) -> None:
        with writing(self.dir):  # /proc, a read-only folder, a full disk: one line naming the cause
            self.dir.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        for f in self.dir.glob("part-*.parquet"):
            f.unlink()
        (self.dir / MANIFEST).unlink(missing_ok=True)

    def cleanup(self) -> None:
        for tmp in self.dir.glob(".part-*.parquet.tmp-*"):  # left by a killed run; never renamed, never counted
            tmp.unlink(missing_ok=True)

    def done(self, shard: Shard) -> bool:
        return shard_done(self.dir, shard)

    def write(self, shard: Shard, table: pa.Table, skipped: int) -> None:
        write_shard(self.dir, shard, table, skipped)

    def metadata(self, shard: Shard) -> pq.FileMetaData:
        return pq.read_metadata(self.dir / shard.file)

    def read(self, shard: Shard, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.dir / shard.file, columns=columns)

    read_committed = read

    def remove(self, shard: Shard) -> None:
        (self.dir / shard.file).unlink(missing_ok=True)

    def publish(self, shards: list[Shard]) -> None:
        """Nothing to do: a renamed part file is already final."""

    def tidy(self) -> None:
        """Nothing to do: no temporary file outlives its run's rename."""

    def forget_failed_start(self, existed: bool) -> None:
        """After a run that failed before writing any shard: remove what it wrote (the manifest; the folder, if
        this run created it), so a corrected rerun does not find "the output of a different job" there."""
        if not self.dir.is_dir() or any(self.dir.glob("part-*.parquet")):
            return
        if not existed:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        (self.dir / MANIFEST).unlink(missing_ok=True)


class ObjectOutput:
    """An s3:// prefix: attempt objects, commit markers, publication by the driver (see the module docstring).
    Picklable (the Ray engine's writer tasks hold one)."""

    remote = True

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs = s3_filesystem(uri)
        self.path = check_bucket(self.fs, uri)

    def _key(self, *parts: str) -> str:
        return "/".join((self.path, *parts))

    def _files(self, sub: str = "") -> list[Any]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self._key(sub) if sub else self.path, recursive=True, allow_not_found=True)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]

    def _put(self, key: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            body = Path(tmp) / "body"
            body.write_bytes(data)
            self._upload(body, key)

    def _upload(self, local: Path, key: str) -> None:
        """One object, whole or not at all. pyarrow's S3 stream starts a multipart upload when opened and completes
        it when closed, also when an exception closes it: a `with fs.open_output_stream(...)` stopped between the
        open and the write (an exception raised as the open's network call returned) left an empty object, seen
        as an empty commit marker of a Ray actor stopped with its dead driver's job. copy_files opens, writes and
        closes in one call, which no Python exception can split; a killed process leaves an unfinished upload."""
        from pyarrow import fs as pafs

        pafs.copy_files(str(local), key, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)

    def _get_json(self, key: str) -> dict[str, Any] | None:
        from pyarrow import fs as pafs

        if self.fs.get_file_info(key).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(key) as f:
            return json.loads(f.read().decode("utf-8"))

    def is_file(self) -> bool:
        from pyarrow import fs as pafs

        return self.path.count("/") > 0 and self.fs.get_file_info(self.path).type == pafs.FileType.File

    def exists(self) -> bool:
        return bool(self._files())

    def read_manifest(self) -> dict[str, Any] | None:
        return self._get_json(self._key(MANIFEST))

    def write_manifest(self, data: dict[str, Any]) -> None:
        self._put(self._key(MANIFEST), (json.dumps(data, indent=1) + "\n").encode("utf-8"))

    def not_empty(self) -> bool:
        return self.exists()

    def make(self) -> None:
        """Nothing to do: an object store has no folders."""

    def clear(self) -> None:
        for info in self._files():
            name = info.path[len(self.path) + 1:]
            if name == MANIFEST or name.startswith(("part-", ATTEMPTS + "/", COMMITS + "/")):
                self.fs.delete_file(info.path)

    def _marker(self, shard: Shard) -> dict[str, Any] | None:
        return self._read_marker(self._key(COMMITS, shard.file.replace(".parquet", ".json")))

    def _read_marker(self, key: str) -> dict[str, Any] | None:
        """A commit marker, or None: absent, or not whole (one left empty by a stopped task of a bertkit before
        `_upload`: tests/corpus/test_corpus_cluster.py, 2026-12-07). Such a shard is simply not committed; the
        rerun embeds it again and its new marker replaces the broken one."""
        try:
            marker = self._get_json(key)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            log.warning("ignoring the unreadable commit marker %s (a write cut off by a stopped run)", key)
            return None
        return marker if isinstance(marker, dict) and {"object", "size"} <= marker.keys() else None

    def _committed(self, shard: Shard) -> str | None:
        """The key of the shard's committed object: its marker's attempt, or the published part file."""
        marker = self._marker(shard)
        if marker is not None and self.fs.get_file_info(marker["object"]).size == marker["size"]:
            return marker["object"]
        final = self._key(shard.file)
        if self.fs.get_file_info(final).size:
            meta = pq.read_metadata(self.fs.open_input_file(final)).metadata or {}
            if meta.get(b"bertkit.shard") == str(shard.index).encode():
                return final
        return None

    def cleanup(self) -> None:
        """Delete the attempt objects no commit marker names (uploads of a killed or superseded attempt)."""
        named = {m["object"] for m in (self._read_marker(i.path) for i in self._files(COMMITS)) if m}
        stale = [i.path for i in self._files(ATTEMPTS) if i.path not in named]
        for path in stale:
            self.fs.delete_file(path)
        if stale:
            log.info("deleted %d uncommitted attempt object(s) under %s/%s", len(stale), self.uri, ATTEMPTS)

    def done(self, shard: Shard) -> bool:
        return self._committed(shard) is not None

    def write(self, shard: Shard, table: pa.Table, skipped: int) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(shard_table(shard, table, skipped), sink)
        data = sink.getvalue().to_pybytes()
        key = self._key(ATTEMPTS, uuid.uuid4().hex, shard.file)
        self._put(key, data)
        size = self.fs.get_file_info(key).size
        if size != len(data):
            raise OSError(f"{self.uri}: upload of {shard.file} holds {size} of {len(data)} bytes")
        marker = {"object": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                  "rows": table.num_rows}
        self._put(self._key(COMMITS, shard.file.replace(".parquet", ".json")), json.dumps(marker).encode())

    def metadata(self, shard: Shard) -> pq.FileMetaData:
        return pq.read_metadata(self.fs.open_input_file(self._committed(shard) or self._key(shard.file)))

    def read(self, shard: Shard, columns: list[str] | None = None) -> pa.Table:
        """A published shard (a complete job's)."""
        return pq.read_table(self._key(shard.file), columns=columns, filesystem=self.fs)

    def read_committed(self, shard: Shard, columns: list[str] | None = None) -> pa.Table:
        """A committed shard, published or not (a resumed job's check of its rows)."""
        return pq.read_table(self._committed(shard) or self._key(shard.file), columns=columns, filesystem=self.fs)

    def remove(self, shard: Shard) -> None:
        for key in (self._key(COMMITS, shard.file.replace(".parquet", ".json")), self._key(shard.file)):
            if self.fs.get_file_info(key).size is not None:
                self.fs.delete_file(key)

    def publish(self, shards: list[Shard]) -> None:
        """Copy each committed attempt to its final key (a server-side copy: the object appears whole)."""
        for shard in shards:
            src = self._committed(shard)
            final = self._key(shard.file)
            if src is None:
                raise OSError(f"{self.uri}: {shard.file} is not committed")
            if src != final:
                self.fs.copy_file(src, final)

    def tidy(self) -> None:
        """After the complete manifest: delete the attempt objects and commit markers."""
        for info in self._files(ATTEMPTS) + self._files(COMMITS):
            self.fs.delete_file(info.path)

    def put_file(self, name: str, local: Path) -> None:
        self._upload(Path(local), self._key(name))

    def forget_failed_start(self, existed: bool) -> None:
        names = [i.path[len(self.path) + 1:] for i in self._files()]
        if any(n.startswith(("part-", COMMITS + "/")) for n in names):
            return
        for n in names:
            if n == MANIFEST or n.startswith(ATTEMPTS + "/"):
                self.fs.delete_file(self._key(n))


def save_calibration(output: LocalOutput | ObjectOutput, options) -> None:
    """Copy the job's calibration next to its shards (once per run; the digest is already pinned)."""
    from bertkit.corpus.compact import CALIBRATION_FILE
    from bertkit.vectors.compact import Calibration

    if options.calibration is None:
        return
    if not output.remote:
        Calibration.load(options.calibration).save(output.dir / CALIBRATION_FILE)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / CALIBRATION_FILE
        Calibration.load(options.calibration).save(local)
        output.put_file(CALIBRATION_FILE, local)
