"""`bertkit serve`: the HTTP server (the `serve` extra) over one loaded encoder."""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from bertkit.cli.common import BackendOpt, ModelOpt, PrecisionOpt, load_cross_encoder, load_encoder, log
from bertkit.errors import OptionError

# The request limits (serve.Limits): past each, a request is refused with the status named.
MaxInputsOpt = typer.Option(256, "--max-inputs", min=1, help="Texts per request; more -> 413.")
MaxCharsOpt = typer.Option(20_000, "--max-chars", min=1, help="Characters per text; more -> 413.")
MaxQueuedTokensOpt = typer.Option(65_536, "--max-queued-tokens", min=1, help="Tokens waiting; more -> 429.")
BatchTokensOpt = typer.Option(8_192, "--batch-tokens", min=1, help="Token budget of a merged model batch.")
MaxWaitMsOpt = typer.Option(5.0, "--max-wait-ms", min=0,
                            help="How long a batch waits for more requests while the model is busy (idle: none).")
SplitTokensOpt = typer.Option(1_024, "--split-tokens", min=1,
                              help="A request over N tokens runs in pieces, others between them.")
MaxBodyBytesOpt = typer.Option(16 * 1024 * 1024, "--max-body-bytes", min=1, help="Request body size; more -> 413.")
BodyTimeoutOpt = typer.Option(30.0, "--body-timeout", min=0.001, help="Seconds to receive a request body; more -> 408.")
MaxPoolingsOpt = typer.Option(7, "--max-poolings", min=1,
                              help="Distinct poolings per /similarity request; more -> 413.")
MaxLayersOpt = typer.Option(13, "--max-layers", min=1, help="Layers averaged per request (each once); more -> 413.")
MaxAnswerValuesOpt = typer.Option(4_000_000, "--max-answer-values", min=1,
                                  help="Values (floats, ids, scores) in one answer, estimated before any work; "
                                  "more -> 413.")
GracefulTimeoutOpt = typer.Option(30.0, "--graceful-timeout", min=0,
                                  help="Seconds to finish in-flight requests on shutdown.")

# Who may call the server: API keys and their quotas, TLS, browser origins, Host names; and request logging.
ApiKeyOpt = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY' (repeatable).")
ApiKeysOpt = typer.Option(None, "--api-keys", help="Keys file, a line per key: KEY NAME rpm=N tpm=N "
                          "(all but KEY optional); re-read on SIGHUP.")
QuotaWindowOpt = typer.Option(60.0, "--quota-window", min=0.001, hidden=True, help="Quota window in seconds (tests).")
SslCertfileOpt = typer.Option(None, "--ssl-certfile", help="Serve https with this PEM certificate (chain).")
SslKeyfileOpt = typer.Option(None, "--ssl-keyfile", help="The certificate's PEM private key.")
CorsOriginOpt = typer.Option(None, "--cors-origin",
                             help="Let pages of this origin (https://app.example) call the server (repeatable).")
AllowHostOpt = typer.Option(None, "--allow-host", help="Answer this Host name too (repeatable; by default a loopback "
                            "server without keys answers only loopback names).")
LogTextsOpt = typer.Option(False, "--log-texts", help="Log request bodies (texts): for debugging only.")
ModelProcessOpt = typer.Option(
    None, "--model-process/--in-process", show_default=False,
    help="Run the vectors' forward pass in a child process (CPU), off the HTTP process's GIL: more texts/s under "
         "many concurrent clients (bertkit.runtime.process). Default: in a child when --threads leaves a core to "
         "the HTTP side on CPU (engine local), else in process.")


def serve(
    model: str | None = ModelOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    max_inputs: int = MaxInputsOpt,
    max_chars: int = MaxCharsOpt,
    max_queued_tokens: int = MaxQueuedTokensOpt,
    batch_tokens: int = BatchTokensOpt,
    max_wait_ms: float = MaxWaitMsOpt,
    split_tokens: int = SplitTokensOpt,
    max_body_bytes: int = MaxBodyBytesOpt,
    body_timeout: float = BodyTimeoutOpt,
    max_poolings: int = MaxPoolingsOpt,
    max_layers: int = MaxLayersOpt,
    max_answer_values: int = MaxAnswerValuesOpt,
    graceful_timeout: float = GracefulTimeoutOpt,
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical|error|warning|info|debug"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice)."),
    index: Path | None = typer.Option(None, "--index",
                                      help="Serve POST /search over this `bertkit index build` folder."),
    whitening: Path | None = typer.Option(None, "--whitening",
                                          help='Whitening .npz (`bertkit whiten`) for /embed {"whiten": true}.'),
    calibration: Path | None = typer.Option(None, "--calibration",
                                            help='int8 / uint8 ranges (`bertkit calibrate`) for {"dtype": "int8"}.'),
    precision: str = PrecisionOpt,
    backend: str = BackendOpt,
    api_key: list[str] | None = ApiKeyOpt,
    api_keys: Path | None = ApiKeysOpt,
    quota_window: float = QuotaWindowOpt,
    ssl_certfile: Path | None = SslCertfileOpt,
    ssl_keyfile: Path | None = SslKeyfileOpt,
    cors_origin: list[str] | None = CorsOriginOpt,
    allow_host: list[str] | None = AllowHostOpt,
    log_texts: bool = LogTextsOpt,
    model_process: bool | None = ModelProcessOpt,
    reranker: Path | None = typer.Option(None, "--reranker", help="Serve POST /rerank with this cross-encoder folder."),
    report: Path | None = typer.Option(None, "--report",
                                       help="Show this `bertkit report` folder in the playground (GET /report)."),
    mask_model: str | None = typer.Option(None, "--mask-model",
                                          help="A masked-LM model for /fill-mask (e.g. splade-tiny)."),
    engine: str = typer.Option("local", "--engine",
                               help="local (uvicorn, one model copy), or ray (Ray Serve, extra 'scale')."),
    address: str | None = typer.Option(None, "--address", help="Ray: the cluster to deploy on (default: a local Ray)."),
    replicas: int = typer.Option(1, "--replicas", help="Ray: replicas, each with its own model copy and batcher."),
):
    """Serve embeddings (OpenAI-compatible /v1/embeddings) and every BERT output over HTTP, with a playground at /."""
    try:
        from bertkit.serve import Limits, run_server
        from bertkit.serve.listen import bind_port
        from bertkit.serve.tls import check_tls
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] == "bertkit":
            raise  # a module of bertkit itself is missing: a bug, not a missing extra
        raise OptionError(f"serving needs the 'serve' extra ({e.name} is missing): "
                          "pip install 'bertkit[serve]'") from None

    # Keys and certificates are checked before anything slow loads: a bad file is one line and exit 2.
    access = access_policy(api_key, api_keys, quota_window, cors_origin, log_texts, host, allow_host)
    check_tls(ssl_certfile, ssl_keyfile)
    limits = Limits(
        max_inputs=max_inputs, max_chars=max_chars, max_queued_tokens=max_queued_tokens, batch_tokens=batch_tokens,
        max_wait_ms=max_wait_ms, split_tokens=split_tokens, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout,
        max_poolings=max_poolings, max_layers=max_layers, max_answer_values=max_answer_values)
    build = functools.partial(
        build_app, model=model, precision=precision, backend=backend, limits=limits, index=index, whitening=whitening,
        calibration=calibration, access=(api_key, api_keys, quota_window, cors_origin, log_texts, host, allow_host),
        reranker=reranker, report=report, mask_model=mask_model, threads=threads,
        model_process=model_process if engine == "local" else bool(model_process))  # ray: in process unless asked
    if engine != "local":
        from bertkit.serve.ray_engine import serve_on_ray

        serve_on_ray(build, engine=engine, address=address, replicas=replicas, host=host, port=port,
                     tls=ssl_certfile is not None)
        return
    if address is not None or replicas != 1:
        raise OptionError("--address and --replicas are for --engine ray")
    sock = bind_port(host, port)  # a busy port fails here, before the model loads
    run_server(build(access=access), host=host, port=port, graceful_timeout=graceful_timeout, log_level=log_level,
               ssl_certfile=ssl_certfile and str(ssl_certfile), ssl_keyfile=ssl_keyfile and str(ssl_keyfile), sock=sock)


def build_app(model: str | None, precision: str, backend: str, limits, index: Path | None, whitening: Path | None,
              calibration: Path | None, access, reranker: Path | None, report: Path | None,
              mask_model: str | None, threads: int | None, model_process: bool | None = False):
    """The app of `bertkit serve`, every option applied; with --engine ray each replica builds its own.
    model_process None: in a child process where --threads leaves the HTTP side a core (runtime.process.child_pays).
    `access`: an AccessPolicy, or access_policy's arguments (a replica makes its own)."""
    from bertkit.serve import create_app, set_threads
    from bertkit.serve.heap import bound_heap

    bound_heap()  # the serving process (or Ray replica), before the model loads: its threads share two arenas
    set_threads(threads)
    access_ = access_policy(*access) if isinstance(access, tuple) else access
    search_index = open_search_index(index, model) if index is not None else None
    white = None
    if whitening is not None:
        from bertkit.vectors.whitening import Whitening

        white = Whitening.load(whitening)
    ce = load_cross_encoder(reranker) if reranker is not None else None  # a wrong folder fails before the model
    if report is not None:
        from bertkit.which.saved import load_results

        load_results(report)  # a folder that is not a report fails before the model too
    from bertkit.vectors.compact import as_calibration

    cal = as_calibration(calibration)  # a bad file fails before the model loads
    if model_process is None:
        from bertkit.runtime.process import child_pays

        model_process = child_pays(threads, backend)
    encoder = load_encoder(model, precision, backend, process=model_process)
    app = create_app(encoder, limits, index=search_index, whitening=white, access=access_)
    app.state.service.calibration = cal
    if ce is not None:
        app.state.service.reranker = ce
    add_playground_extras(app.state.service, report, mask_model)
    return app


def access_policy(keys: list[str] | None, keys_file: Path | None, window: float, origins: list[str] | None,
                  log_texts: bool, host: str, allow_hosts: list[str] | None = None):
    """API keys (checked here, before the model loads), CORS origins, Host names and text logging.
    Without keys on loopback, or with --allow-host, only loopback Host names and --allow-host ones are answered:
    a DNS-rebinding page cannot read the server. (With keys such a page has no key; on another interface
    without --allow-host, any name the machine is reached by is answered.)"""
    from bertkit.serve.auth import AccessPolicy, KeyStore
    from bertkit.serve.origin import LOOPBACK_HOSTS, check_origins

    check_origins(origins or ())
    store = KeyStore(keys or [], keys_file, window) if keys or keys_file is not None else None
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if store is None and not loopback:
        log.warning("serving on %s without API keys: anyone who reaches the port may call every route "
                    "(see --api-key / --api-keys)", host)
    guarded = bool(allow_hosts) or (store is None and loopback)
    hosts = (*LOOPBACK_HOSTS, *(h.lower() for h in allow_hosts or ())) if guarded else None
    return AccessPolicy(store, tuple(origins or ()), log_texts, hosts)


def open_search_index(path: Path, model: str | None):
    """The index behind `serve --index`: its corpus must have been embedded with the model being served."""
    from bertkit.index.folder import Index

    idx = Index.load(path)
    built_with = idx.info["embedding"]["model"]

    def same(a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return a == b
        return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())

    if not same(built_with, model):
        raise OptionError(f"--index {path} was embedded with --model {built_with or '(the packaged default)'}; "
                          "serve it with that --model")
    return idx


def add_playground_extras(service, report: Path | None, mask_model: str | None) -> None:
    """`--report DIR` (checked already) and `--mask-model NAME` (loaded here: it must have the masked-LM head)."""
    service.report_dir = report
    if mask_model is not None:
        mask = load_encoder(mask_model)
        mask.model.require("mlm", f"--mask-model {mask_model}")
        service.mask_encoder = mask
