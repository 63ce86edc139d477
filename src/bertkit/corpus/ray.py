"""The Ray Data engine of embed-corpus (extra `scale`): read -> map_batches on an actor pool -> write.

The same shard plan, reader, embedder and shard writer as the local engine run inside Ray: one read task
per pending shard (a custom Datasource), an actor pool whose actors each hold the model (one GPU each when
the cluster has GPUs), and a Datasink that writes `part-NNNNN.parquet` files. The outputs of both engines
are therefore identical in layout, row order and ids. Ray restarts a killed actor and retries its batch
(Ray Data's defaults for actor pools: max_restarts=-1, max_task_retries=-1); a shard file is only ever
written whole, so a retry cannot duplicate rows.

On a cluster (--address) every node must have bertkit installed (with the `scale` extra) and reach the input
and output: a shared file system, or (no shared disk) `s3://` URIs, whose writes follow the commit protocol of
`bertkit.corpus.output`. The driver's AWS_* variables (endpoint, region, credentials) are passed to the job's
workers as its runtime environment when this process starts Ray's connection.
"""

from __future__ import annotations

import logging
import os
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from bertkit.corpus.output import LocalOutput, ObjectOutput, open_output
from bertkit.corpus.shards import ShardEmbedder, load_encoder
from bertkit.corpus.source import read_shard
from bertkit.corpus.spec import CorpusJob, EmbedOptions, Shard, Source
from bertkit.errors import CorpusError

log = logging.getLogger(__name__)

try:
    import ray
    from ray.data import ActorPoolStrategy, DataContext
    from ray.data.block import BlockAccessor, BlockMetadata
    from ray.data.datasource import Datasink, Datasource, ReadTask
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise CorpusError("--engine ray needs Ray Data: pip install 'bertkit[scale]'") from e

# Fractions of a CPU for reading and writing, so that on a small machine the actors can hold whole CPUs
# and the I/O tasks still get scheduled beside them.
IO_CPUS = 0.25


def _read(source: Source, shard: Shard, skip_bad_rows: bool) -> list[pa.Table]:
    rows, ids, texts, skipped = read_shard(source, shard, skip_bad_rows)
    n = len(rows)
    return [pa.table({
        "shard": pa.array([shard.index] * n, pa.int32()),
        "skipped": pa.array([skipped] * n, pa.int32()),  # per shard, so the sink can check completeness
        "row": pa.array(rows, pa.int64()),
        "id": pa.array(ids, pa.string()),
        "text": pa.array(texts, pa.string()),
    })]


class ShardDatasource(Datasource):
    """One read task per shard, each reading exactly the rows the local engine would."""

    def __init__(self, source: Source, shards: list[Shard], skip_bad_rows: bool):
        super().__init__()
        self.source, self.shards, self.skip_bad_rows = source, shards, skip_bad_rows

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        return [
            ReadTask(partial(_read, self.source, s, self.skip_bad_rows),
                     BlockMetadata(num_rows=s.rows, size_bytes=None, exec_stats=None, input_files=[self.source.path]))
            for s in self.shards
        ]


class EmbedActor:
    """Holds the model; embeds whole shards (a batch may carry several, each is embedded on its own)."""

    def __init__(self, options: EmbedOptions, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.embedder = ShardEmbedder(load_encoder(options), options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        outs = []
        for shard in sorted(set(batch.column("shard").to_pylist())):
            part = batch.filter(pc.equal(batch.column("shard"), shard))
            table = self.embedder.embed(part.column("row").to_pylist(), part.column("id").to_pylist(),
                                        part.column("text").to_pylist())
            n = table.num_rows
            outs.append(table.append_column("shard", pa.array([shard] * n, pa.int32()))
                        .append_column("skipped", pa.array([part.column("skipped")[0].as_py()] * n, pa.int32())))
        return pa.concat_tables(outs)


class ShardDatasink(Datasink):
    """Writes each shard to its part file, once it holds all of the shard's rows."""

    def __init__(self, output: LocalOutput | ObjectOutput, shards: list[Shard]):
        self.output = output
        self.shards = {s.index: s for s in shards}

    def write(self, blocks, ctx) -> list[int]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables)
        written = []
        for index in sorted(set(table.column("shard").to_pylist())):
            shard = self.shards[index]
            part = table.filter(pc.equal(table.column("shard"), index))
            skipped = part.column("skipped")[0].as_py()
            # Ray keeps a shard in one block (batch_size=None, large block limit); check rather than trust.
            if len(set(part.column("row").to_pylist())) + skipped != shard.rows:
                raise CorpusError(f"shard {index} reached the writer split in pieces; raise --shard-rows limits")
            sort_keys = [("row", "ascending")] + ([("chunk", "ascending")] if "chunk" in part.column_names else [])
            part = part.sort_by(sort_keys).drop_columns(["shard", "skipped"])
            self.output.write(shard, part, skipped)
            written.append(index)
        return written


def default_actors(cpus_per_actor: int) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU when there are GPUs, else the CPUs left after I/O."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, 1.0
    return max(1, int((resources.get("CPU", 1) - IO_CPUS) // cpus_per_actor)), 0.0


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (one clear line when nobody answers there), or start a local Ray."""
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    runtime_env = {"env_vars": env} if env else None
    if not address:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=True,
                 runtime_env=runtime_env)
        return
    from bertkit.corpus.cluster import check_address

    check_address(address)
    ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)


def run_ray(source: Source, shards: list[Shard], job: CorpusJob, address: str | None = None,
            actors: int | None = None, cpus_per_actor: int = 1, num_cpus: int | None = None) -> int:
    """Run the pending shards as a Ray Data pipeline; returns how many shards were written."""
    out = open_output(job.output_dir)
    if not out.remote:
        out = LocalOutput(out.dir.resolve())  # the workers may run elsewhere: an absolute path
    pending = [s for s in shards if not out.done(s)]
    if not pending:
        return 0
    started = False
    if not ray.is_initialized():
        connect(address, num_cpus)
        started = True
    try:
        ctx = DataContext.get_current()
        # A shard must stay one block from read to write (the sink checks it): allow big blocks.
        ctx.target_max_block_size = max(ctx.target_max_block_size or 0, 2 * 1024**3)
        n_actors, gpus = default_actors(cpus_per_actor) if actors is None else (actors, 0.0)
        if actors is not None and ray.cluster_resources().get("GPU", 0):
            gpus = 1.0
        log.info("Ray Data: %d shard(s), %d actor(s), %s GPU each", len(pending), n_actors, gpus)
        ds = ray.data.read_datasource(ShardDatasource(source, pending, job.skip_bad_rows),
                                      override_num_blocks=len(pending), num_cpus=IO_CPUS)
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"options": job.options, "threads": cpus_per_actor},
            batch_size=None,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=n_actors),
            num_cpus=cpus_per_actor,
            num_gpus=gpus,
        )
        ds.write_datasink(ShardDatasink(out, pending), ray_remote_args={"num_cpus": IO_CPUS})
    finally:
        if started:
            ray.shutdown()
    return len(pending)

