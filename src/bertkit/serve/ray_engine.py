"""`bertkit serve --engine ray`: the same app on Ray Serve (extra `scale`), N replicas behind Ray's HTTP proxy.

    bertkit serve --engine ray --address HEAD:6379 --replicas 4 --host 0.0.0.0 --port 8000

Each replica builds the very app `bertkit serve` serves (`bertkit.cli.serving.build_app`, hence
`bertkit.serve.create_app`): every route, limit, key check and error body, its own model copy and its own
dynamic batcher. Ray Serve's proxy, on the head node (`--host`/`--port`), spreads requests over the
replicas; a replica that dies is replaced by Ray Serve's controller while the others keep answering.
Replicas are allowed many requests in flight (`MAX_ONGOING`), so each batcher can merge them as it does
behind uvicorn; the app's own --max-queued-tokens still answers 429 when one is full.

The command blocks while the application runs and deletes it on Ctrl-C / SIGTERM. Every node needs bertkit
with the `serve` and `scale` extras, and the model (and any --index / --whitening / ... file) at the same path.
TLS is not terminated by Ray's proxy: put a load balancer or ingress in front of it.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from bertkit.errors import OptionError

log = logging.getLogger(__name__)

try:
    import ray
    from ray import serve
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise OptionError("--engine ray needs Ray Serve: pip install 'bertkit[scale]'") from e

APP_NAME = "bertkit"
MAX_ONGOING = 256  # requests in flight per replica: its batcher merges them (Ray Serve's default is 5)
HEALTH_PERIOD_S = 2.0  # how soon the controller notices a dead replica


@serve.ingress()  # late-bound: each replica builds its own app in __serve_build_asgi_app__
class BertkitReplica:
    """One replica: the `bertkit serve` app, built on the replica from the command's options."""

    def __init__(self, build: functools.partial):
        self.build = build

    def __serve_build_asgi_app__(self):
        return self.build()


def _absolute(build: functools.partial) -> functools.partial:
    """The options with relative paths made absolute: replicas do not run in this folder."""
    kw: dict[str, Any] = {}
    for k, v in build.keywords.items():
        if isinstance(v, Path):
            v = v.expanduser().resolve()
        elif k == "model" and v is not None and Path(v).expanduser().exists():
            v = str(Path(v).expanduser().resolve())
        kw[k] = v
    return functools.partial(build.func, **kw)


def check_files(build: functools.partial) -> None:
    """What the replicas will load, checked here first so that a mistake is one line and exit 2, not a deployment
    that fails on every replica: the model resolves, the small files load, the folders exist."""
    from bertkit.model.locate import resolve_model_dir

    kw = build.keywords
    resolve_model_dir(kw.get("model"))
    if kw.get("whitening") is not None:
        from bertkit.vectors.whitening import Whitening

        Whitening.load(kw["whitening"])
    if kw.get("report") is not None:
        from bertkit.which.saved import load_results

        load_results(kw["report"])
    from bertkit.vectors.compact import as_calibration

    as_calibration(kw.get("calibration"))
    for option in ("index", "reranker"):
        if kw.get(option) is not None and not Path(kw[option]).is_dir():
            raise OptionError(f"--{option} {kw[option]}: no such folder")


def check_options(engine: str, replicas: int, tls: bool) -> None:
    if engine != "ray":
        raise OptionError(f"--engine {engine!r} is unknown; use local or ray")
    if replicas < 1:
        raise OptionError(f"--replicas {replicas}: give at least 1 (each replica holds its own model copy)")
    if tls:
        raise OptionError("--ssl-certfile is for --engine local; with --engine ray terminate TLS in front of Ray "
                          "Serve's proxy (a load balancer or ingress)")


def serve_on_ray(build: functools.partial, engine: str, address: str | None, replicas: int, host: str, port: int,
                 tls: bool = False, cpus_per_replica: float | None = None) -> None:
    """Deploy `build`'s app with `replicas` replicas on the cluster at `address` (None: a local Ray) and serve
    it on host:port until SIGINT / SIGTERM; then delete the application (and stop the local Ray it started)."""
    check_options(engine, replicas, tls)
    from bertkit.corpus.cluster import check_address

    if address:
        check_address(address)
    build = _absolute(build)
    check_files(build)
    threads = build.keywords.get("threads")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=True)
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
        deployment = serve.deployment(
            BertkitReplica, name="BertkitReplica", num_replicas=replicas, max_ongoing_requests=MAX_ONGOING,
            health_check_period_s=HEALTH_PERIOD_S, ray_actor_options={"num_cpus": cpus_per_replica or threads or 1})
        serve.run(deployment.bind(build), name=APP_NAME, route_prefix="/")
        log.info("serving on http://%s:%d with %d Ray Serve replica(s)", host, port, replicas)
        _block_until_signal()
    finally:
        _stop(local=started and not address, started=started)


def _block_until_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _stop(local: bool, started: bool) -> None:
    """On a cluster, delete the application (Serve keeps running: it may serve other applications); on the local
    Ray this command started, stopping Ray stops everything (Ctrl-C has reached its processes too)."""
    try:
        if not local:
            serve.delete(APP_NAME)
    finally:
        if started:
            ray.shutdown()
