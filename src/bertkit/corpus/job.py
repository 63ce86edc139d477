"""Embed a corpus (JSONL / CSV / TSV / Parquet / text) into Parquet shards with a manifest.

    from bertkit.corpus import CorpusJob, embed_corpus
    embed_corpus(CorpusJob("docs.jsonl", "out/", text_column="body", normalize=True))

The input is cut into shards of `shard_rows` consecutive rows. A first, cheap pass over the file records
where each shard starts (a byte offset for line formats, a row number for Parquet), so that every engine
reads exactly the same rows into exactly the same shard, and a restarted run seeks straight past the
shards that are done. Each shard is embedded and written as `part-NNNNN.parquet` through a temporary file
and a rename: a shard file that exists is complete. `manifest.json` records the job (input, model,
options) and the shard plan; it says `"complete": true` once every shard is there.

Memory stays flat in the corpus size: only one shard of texts and vectors is held at a time.

Output columns: `row` (0-based row of the input), `id` (the --id-column value as a string, or the row
number), `text_hash` (sha256 of the UTF-8 text), `embedding` (fixed-size list of float32); with chunking
also `chunk`, `start`, `end` (character offsets of the chunk in the text); with keep_text also `text`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
from bertkit.corpus.shards import ShardEmbedder, load_encoder, shard_done, write_shard
from bertkit.corpus.source import make_source, plan_shards, read_shard
from bertkit.corpus.spec import (
    ENGINES,
    MANIFEST,
    MANIFEST_FORMAT,
    CorpusError,
    CorpusJob,
    CorpusResult,
    EmbedOptions,
    Shard,
    Source,
)
from bertkit.corpus.verify import check_resume, forget_failed_start
from bertkit.outputs import writing


def _input_fingerprint(source: Source) -> dict[str, Any]:
    st = os.stat(source.path)
    return {**asdict(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _job_key(manifest: dict[str, Any]) -> dict[str, Any]:
    key = {k: manifest[k] for k in ("input", "embedding", "shard_rows", "skip_bad_rows")}
    # A manifest written before an option existed holds no value for it, which means its default: such a job
    # still resumes, while a job that sets the new option differs.
    key["embedding"] = {**asdict(EmbedOptions()), **manifest["embedding"]}
    return key


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with writing(path):  # a full disk: one line naming the cause
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def read_manifest(output_dir: str | Path) -> dict[str, Any]:
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        raise CorpusError(f"{output_dir} has no {MANIFEST}; is it an embed-corpus output folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def prepare(job: CorpusJob) -> tuple[Source, list[Shard], dict[str, Any]]:
    """Validate, plan the shards and write (or check, on a rerun) the manifest."""
    source = make_source(job)
    out = Path(job.output_dir).expanduser()
    manifest = {
        "format": MANIFEST_FORMAT,
        "input": _input_fingerprint(source),
        "embedding": asdict(job.options),
        "shard_rows": job.shard_rows,
        "skip_bad_rows": job.skip_bad_rows,
    }
    if out.exists() and not out.is_dir():
        raise CorpusError(f"output {out} is a file; pass a folder")
    old_path = out / MANIFEST
    if old_path.is_file():
        old = json.loads(old_path.read_text(encoding="utf-8"))
        if old.get("format") == MANIFEST_FORMAT and _job_key(old) == _job_key(manifest) and "shards" in old:
            log.info("resuming the job in %s", out)
            for tmp in out.glob(".part-*.parquet.tmp-*"):  # left by a killed run; never renamed, never counted
                tmp.unlink(missing_ok=True)
            shards = [Shard(**s) for s in old["shards"]]
            check_resume(source, out, shards, job.shard_rows, job.skip_bad_rows)  # rows edited in place: re-embed
            return source, shards, old
        if not job.overwrite:
            raise CorpusError(
                f"{out} holds the output of a different job (input or options changed); pass --overwrite to "
                "replace it, or choose another output folder"
            )
        for f in out.glob("part-*.parquet"):
            f.unlink()
        old_path.unlink()
    elif out.is_dir() and any(out.iterdir()) and not job.overwrite:
        raise CorpusError(f"{out} is not empty and is not an embed-corpus output; choose an empty or new folder")
    with writing(out):  # /proc, a read-only folder, a full disk: one line naming the cause
        out.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(source, job.shard_rows)
    manifest.update(shards=[asdict(s) for s in shards], total_input_rows=sum(s.rows for s in shards),
                    complete=False)
    _write_json(old_path, manifest)
    return source, shards, manifest


def finish(out: Path, shards: list[Shard], manifest: dict[str, Any], engine: str, written: int) -> CorpusResult:
    """Check that every shard is there exactly once and mark the manifest complete."""
    missing = [s.file for s in shards if not shard_done(out, s)]
    if missing:
        raise CorpusError(f"{len(missing)} shard(s) missing after the run ({missing[:3]}...); run the command again")
    rows = skipped = 0
    for s in shards:
        md = pq.read_metadata(out / s.file)
        rows += md.num_rows
        skipped += int((md.metadata or {}).get(b"bertkit.skipped", b"0"))
    manifest.update(complete=True, rows=rows, skipped=skipped, engine=engine)
    _write_json(out / MANIFEST, manifest)
    return CorpusResult(out, len(shards), written, rows, skipped)


def _progress(total_rows: int, done_rows: int, enabled: bool):
    """A rich progress bar counting input rows, with rate and ETA; a no-op when disabled."""
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )
    bar.add_task("rows", total=total_rows, completed=done_rows, rate="")
    return bar


def run_local(source: Source, shards: list[Shard], job: CorpusJob, embedder: ShardEmbedder,
              progress: bool = False) -> int:
    """Embed the pending shards one after another in this process; returns how many were written."""
    out = Path(job.output_dir).expanduser()
    pending = [s for s in shards if not shard_done(out, s)]
    if not pending:
        return 0
    bar = _progress(sum(s.rows for s in shards), sum(s.rows for s in shards if s not in pending), progress)
    if bar is not None:
        bar.start()
    try:
        for shard in pending:
            rows, ids, texts, skipped = read_shard(source, shard, job.skip_bad_rows)
            write_shard(out, shard, embedder.embed(rows, ids, texts), skipped)
            log.info("wrote %s (%d rows)", shard.file, shard.rows)
            if bar is not None:
                task = bar.tasks[0]
                bar.update(task.id, advance=shard.rows)
                bar.update(task.id, rate=f"{task.speed or 0:,.0f} rows/s")
    finally:
        if bar is not None:
            bar.stop()
    return len(pending)


def embed_corpus(job: CorpusJob, engine: str = "local", address: str | None = None, progress: bool = False,
                 encoder=None, **ray_options: Any) -> CorpusResult:
    """Run (or resume) the job with the local engine or Ray Data; see the module docstring."""
    if engine not in ENGINES:
        raise CorpusError(f"--engine {engine!r} is unknown; use local or ray")
    if address is not None and engine != "ray":
        raise CorpusError("--address is for --engine ray")
    if job.options.chunk_tokens is None and job.options.chunk_overlap:
        raise CorpusError("--chunk-overlap needs --chunk-tokens")
    from bertkit.corpus.compact import pin_calibration, save_corpus_calibration

    job = pin_calibration(job)  # compact options checked; the calibration's digest becomes part of the job
    embedder = None
    if engine == "local":
        # The checks that need the model (chunk sizes, the masked-LM head of --sparse) run before anything
        # is written, so a refused job leaves no manifest behind.
        embedder = ShardEmbedder(encoder or load_encoder(job.options), job.options)
    out = Path(job.output_dir).expanduser()
    existed, fresh = out.exists(), not (out / MANIFEST).is_file()
    try:
        source, shards, manifest = prepare(job)
        save_corpus_calibration(out, job.options)
        if embedder is not None:
            written = run_local(source, shards, job, embedder, progress=progress)
        else:
            from bertkit.corpus_ray import run_ray

            written = run_ray(source, shards, job, address=address, **ray_options)
    except BaseException:
        if fresh:  # a bad row, a missing key, Ctrl-C before any shard: leave no manifest-only folder behind
            forget_failed_start(out, existed)
        raise
    return finish(out, shards, manifest, engine, written)


def read_embeddings(output_dir: str | Path, columns: list[str] | None = None) -> tuple[pa.Table, np.ndarray]:
    """All shards of a finished job, in row order: (the other columns, the (n, dim) float32 vectors; the
    int8 / uint8 codes as stored for a corpus embedded with --dtype, see corpus/compact.py)."""
    out = Path(output_dir)
    manifest = read_manifest(out)
    if not manifest.get("complete"):
        raise CorpusError(f"{out} is an unfinished embed-corpus job; run the same embed-corpus command again")
    if manifest["embedding"].get("sparse"):
        raise CorpusError(f"{out} holds sparse (SPLADE) vectors: build an index of them with --kind sparse "
                          "(bertkit.index_sparse.read_sparse_embeddings reads them)")
    tables = [pq.read_table(out / Shard(**s).file, columns=columns) for s in manifest["shards"]]
    if not tables:  # an empty input: no shards, no vectors
        return pa.table({}), np.zeros((0, 0), np.float32)
    table = pa.concat_tables(tables)
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    vectors = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    if manifest["embedding"].get("dtype", "float32") == "float32":  # else the codes as stored (corpus/compact.py)
        vectors = vectors.astype(np.float32, copy=False)
    return table.drop_columns(["embedding"]), vectors
