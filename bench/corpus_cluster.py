"""embed-corpus throughput: the local engine vs Ray with 1 and 2 worker nodes, on AG News dev (issue 19).

    .venv/bin/python bench/corpus_cluster.py [--rows N] [--cpus-per-node C] [--workers 0,1,2] [--s3]
                                             [--work /tmp/bertkit-cluster] [--json out.json]

Each configuration runs the real command, `bertkit embed-corpus DEV OUT --no-header --overwrite`, timed from
start to exit (model loading and Ray's start-up included, as a user sees it):

- workers 0: `--engine local`, torch limited to C threads (OMP_NUM_THREADS=C: one node's worth of CPUs);
- workers k >= 1: a `ray.cluster_utils.Cluster` on this machine (a head with no CPUs and k worker nodes, each its
  own raylet, C + 1 logical CPUs each: one actor of C torch threads plus room for the I/O tasks), and
  `--engine ray --address HEAD --actors k --cpus-per-actor C`.

With --s3 the input and output are s3:// URIs on a moto server on loopback (the object-store commit protocol's
cost). Every run's output is checked against the local engine's (ids, order, max |diff| of the vectors). All
nodes share this machine's cores: 2 worker nodes only beat 1 when the machine has at least 2 * C free cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "agnews" / "dev.tsv"
CLI = [sys.executable, "-m", "bertkit.cli", "embed-corpus"]


def compare(a: str, b: str) -> dict:
    from bertkit.corpus import read_embeddings

    meta_a, va = read_embeddings(a)
    meta_b, vb = read_embeddings(b)
    return {"same_rows_ids_hashes": meta_a.select(["row", "id", "text_hash"]).equals(meta_b.select(["row", "id",
                                                                                                    "text_hash"])),
            "max_abs_diff": float(np.abs(va - vb).max()) if va.shape == vb.shape and len(va) else None}


@contextlib.contextmanager
def storage(use_s3: bool, data: Path, work: Path):
    """(input location, output location for a name) on local disk, or on a moto S3 server on loopback."""
    if not use_s3:
        yield str(data), lambda name: str(work / name)
        return
    from moto.server import ThreadedMotoServer
    from pyarrow import fs as pafs

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    os.environ.update(env)
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="bench", secret_key="bench",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("bench")
    with fs.open_output_stream("bench/in/dev.tsv") as f:
        f.write(data.read_bytes())
    try:
        yield "s3://bench/in/dev.tsv", lambda name: f"s3://bench/{name}"
    finally:
        server.stop()


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_ray(k: int, cpus: int, src: str, out: str, shard_rows: int) -> float:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(k):
            cluster.add_node(num_cpus=cpus + 1)
        cluster.wait_for_nodes()
        return timed([*CLI, src, out, "--no-header", "--overwrite", "--shard-rows", str(shard_rows), "--engine", "ray",
                      "--address", cluster.address, "--actors", str(k), "--cpus-per-actor", str(cpus)])
    finally:
        cluster.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--rows", type=int, default=None, help="Only the first N rows (default: all of AG News dev).")
    p.add_argument("--cpus-per-node", type=int, default=2)
    p.add_argument("--workers", default="0,1,2", help="Comma-separated worker-node counts; 0 is the local engine.")
    p.add_argument("--shard-rows", type=int, default=512)
    p.add_argument("--s3", action="store_true", help="Input and output on a moto S3 server on loopback.")
    p.add_argument("--work", type=Path, default=Path("/tmp/bertkit-cluster"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if args.rows is not None:
        data = Path(tempfile.mkdtemp(dir=args.work)) / "dev.tsv"
        data.write_text("".join(args.data.read_text(encoding="utf-8").splitlines(keepends=True)[:args.rows]))
    rows = sum(1 for _ in data.open(encoding="utf-8"))
    results = []
    with storage(args.s3, data, args.work) as (src, out):
        for k in (int(w) for w in args.workers.split(",")):
            name = "local" if k == 0 else f"ray-{k}"
            if k == 0:
                seconds = timed([*CLI, src, out(name), "--no-header", "--overwrite", "--shard-rows",
                                 str(args.shard_rows)], env={"OMP_NUM_THREADS": str(args.cpus_per_node)})
            else:
                seconds = run_ray(k, args.cpus_per_node, src, out(name), args.shard_rows)
            row = {"engine": name, "worker_nodes": k, "cpus_per_node": args.cpus_per_node, "rows": rows,
                   "storage": "s3 (moto)" if args.s3 else "local disk", "seconds": round(seconds, 1),
                   "rows_per_s": round(rows / seconds, 1)}
            if k and "local" in [r["engine"] for r in results]:
                row.update(compare(out(name), out("local")))
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| engine | worker nodes | CPUs / node | storage | rows | seconds | rows/s | same as local |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        same = "" if "max_abs_diff" not in r else f"{r['same_rows_ids_hashes']}, max diff {r['max_abs_diff']:.1e}"
        print(f"| {r['engine']} | {r['worker_nodes']} | {r['cpus_per_node']} | {r['storage']} | {r['rows']} | "
              f"{r['seconds']} | {r['rows_per_s']} | {same} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
