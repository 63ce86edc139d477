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

On object storage (`s3://` input or output) the same happens through `corpus.output.ObjectOutput`, whose
commit protocol (attempt objects, commit markers, publication by the driver, the manifest written last)
replaces the rename; see that module.

Output columns: `row` (0-based row of the input), `id` (the --id-column value as a string, or the row
number), `text_hash` (sha256 of the UTF-8 text), `embedding` (fixed-size list of float32); with chunking
also `chunk`, `start`, `end` (character offsets of the chunk in the text); with keep_text also `text`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)
from bertkit.corpus.output import LocalOutput, ObjectOutput, open_output, save_calibration
from bertkit.corpus.shards import ShardEmbedder, load_encoder
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
from bertkit.corpus.storage import file_info
from bertkit.corpus.verify import check_resume

Output = LocalOutput | ObjectOutput


def _input_fingerprint(source: Source) -> dict[str, Any]:
    _, size, mtime_ns = file_info(source.path)
    return {**asdict(source), "size": size, "mtime_ns": mtime_ns}


def _job_key(manifest: dict[str, Any]) -> dict[str, Any]:
    key = {k: manifest[k] for k in ("input", "embedding", "shard_rows", "skip_bad_rows")}
    # A manifest written before an option existed holds no value for it, which means its default: such a job
    # still resumes, while a job that sets the new option differs.
    key["embedding"] = {**asdict(EmbedOptions()), **manifest["embedding"]}
    return key


def read_manifest(output_dir: str | Path) -> dict[str, Any]:
    """An embed-corpus output folder's manifest.json as a dict; raises CorpusError when there is none."""
    manifest = open_output(output_dir).read_manifest()
    if manifest is None:
        raise CorpusError(f"{output_dir} has no {MANIFEST}; is it an embed-corpus output folder?")
    return manifest


def prepare(job: CorpusJob, out: Output) -> tuple[Source, list[Shard], dict[str, Any]]:
    """Validate, plan the shards and write (or check, on a rerun) the manifest."""
    source = make_source(job)
    manifest = {
        "format": MANIFEST_FORMAT,
        "input": _input_fingerprint(source),
        "embedding": asdict(job.options),
        "shard_rows": job.shard_rows,
        "skip_bad_rows": job.skip_bad_rows,
    }
    if out.is_file():
        raise CorpusError(f"output {out.uri} is a file; pass a folder")
    old = out.read_manifest()
    if old is not None:
        if old.get("format") == MANIFEST_FORMAT and _job_key(old) == _job_key(manifest) and "shards" in old:
            log.info("resuming the job in %s", out.uri)
            out.cleanup()  # temporary files / uncommitted attempts of a killed run: never counted
            shards = [Shard(**s) for s in old["shards"]]
            check_resume(source, out, shards, job.shard_rows, job.skip_bad_rows)  # rows edited in place: re-embed
            return source, shards, old
        if not job.overwrite:
            raise CorpusError(
                f"{out.uri} holds the output of a different job (input or options changed); pass --overwrite to "
                "replace it, or choose another output folder"
            )
        out.clear()
    elif out.not_empty() and not job.overwrite:
        raise CorpusError(f"{out.uri} is not empty and is not an embed-corpus output; choose an empty or new folder")
    out.make()
    shards = plan_shards(source, job.shard_rows)
    manifest.update(shards=[asdict(s) for s in shards], total_input_rows=sum(s.rows for s in shards),
                    complete=False)
    out.write_manifest(manifest)
    return source, shards, manifest


def finish(out: Output, shards: list[Shard], manifest: dict[str, Any], engine: str, written: int) -> CorpusResult:
    """Check that every shard is there exactly once, publish them, and mark the manifest complete (last)."""
    missing = [s.file for s in shards if not out.done(s)]
    if missing:
        raise CorpusError(f"{len(missing)} shard(s) missing after the run ({missing[:3]}...); run the command again")
    out.publish(shards)
    rows = skipped = 0
    for s in shards:
        md = out.metadata(s)
        rows += md.num_rows
        skipped += int((md.metadata or {}).get(b"bertkit.skipped", b"0"))
    manifest.update(complete=True, rows=rows, skipped=skipped, engine=engine)
    out.write_manifest(manifest)
    out.tidy()
    return CorpusResult(out.dir if not out.remote else out.uri, len(shards), written, rows, skipped)


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
    out = open_output(job.output_dir)
    pending = [s for s in shards if not out.done(s)]
    if not pending:
        return 0
    bar = _progress(sum(s.rows for s in shards), sum(s.rows for s in shards if s not in pending), progress)
    if bar is not None:
        bar.start()
    try:
        for shard in pending:
            rows, ids, texts, skipped = read_shard(source, shard, job.skip_bad_rows)
            out.write(shard, embedder.embed(rows, ids, texts), skipped)
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
    from bertkit.corpus.compact import pin_calibration

    job = pin_calibration(job)  # compact options checked; the calibration's digest becomes part of the job
    # Where the job reads and writes (credentials, bucket) and the cluster it joins: checked before the model loads.
    make_source(job)
    out = open_output(job.output_dir)
    if address is not None:
        from bertkit.corpus.cluster import check_address

        check_address(address)
    embedder = None
    if engine == "local":
        # The checks that need the model (chunk sizes, the masked-LM head of --sparse) run before anything
        # is written, so a refused job leaves no manifest behind.
        embedder = ShardEmbedder(encoder or load_encoder(job.options), job.options)
    existed, fresh = out.exists(), out.read_manifest() is None
    try:
        source, shards, manifest = prepare(job, out)
        save_calibration(out, job.options)
        if embedder is not None:
            written = run_local(source, shards, job, embedder, progress=progress)
        else:
            from bertkit.corpus.ray import run_ray

            written = run_ray(source, shards, job, address=address, **ray_options)
    except BaseException:
        if fresh:  # a bad row, a missing key, Ctrl-C before any shard: leave no manifest-only folder behind
            out.forget_failed_start(existed)
        raise
    return finish(out, shards, manifest, engine, written)


def read_embeddings(output_dir: str | Path, columns: list[str] | None = None) -> tuple[pa.Table, np.ndarray]:
    """All shards of a finished job, in row order: (the other columns, the (n, dim) float32 vectors; the
    int8 / uint8 codes as stored for a corpus embedded with --dtype, see corpus/compact.py)."""
    out = open_output(output_dir)
    manifest = read_manifest(output_dir)
    if not manifest.get("complete"):
        raise CorpusError(f"{output_dir} is an unfinished embed-corpus job; run the same embed-corpus command again")
    if manifest["embedding"].get("sparse"):
        raise CorpusError(f"{output_dir} holds sparse (SPLADE) vectors: build an index of them with --kind sparse "
                          "(bertkit.index.sparse.read_sparse_embeddings reads them)")
    tables = [out.read(Shard(**s), columns=columns) for s in manifest["shards"]]
    if not tables:  # an empty input: no shards, no vectors
        return pa.table({}), np.zeros((0, 0), np.float32)
    table = pa.concat_tables(tables)
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    vectors = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    if manifest["embedding"].get("dtype", "float32") == "float32":  # else the codes as stored (corpus/compact.py)
        vectors = vectors.astype(np.float32, copy=False)
    return table.drop_columns(["embedding"]), vectors
