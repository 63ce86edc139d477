"""`bertkit serve`: the HTTP server (the `serve` extra) over one loaded encoder."""

from __future__ import annotations

from pathlib import Path

import typer

from bertkit.cli.common import BackendOpt, ModelOpt, PrecisionOpt, load_encoder
from bertkit.errors import OptionError


def serve(
    model: str | None = ModelOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    max_inputs: int = typer.Option(256, "--max-inputs", min=1, help="Texts per request; more -> 413."),
    max_chars: int = typer.Option(20_000, "--max-chars", min=1, help="Characters per text; more -> 413."),
    max_queued_tokens: int = typer.Option(65_536, "--max-queued-tokens", min=1, help="Tokens waiting; more -> 429."),
    batch_tokens: int = typer.Option(8_192, "--batch-tokens", min=1, help="Token budget of a merged model batch."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0, help="How long a batch waits for more requests."),
    graceful_timeout: float = typer.Option(30.0, "--graceful-timeout", min=0, help="Seconds to finish in-flight requests on shutdown."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical|error|warning|info|debug"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice)."),
    index: Path | None = typer.Option(None, "--index", help="Serve POST /search over this `bertkit index build` folder."),
    whitening: Path | None = typer.Option(None, "--whitening", help='Whitening .npz (`bertkit whiten`) for /embed {"whiten": true}.'),
    precision: str = PrecisionOpt,
    backend: str = BackendOpt,
):
    """Serve embeddings (OpenAI-compatible /v1/embeddings) and every BERT output over HTTP, with a playground at /."""
    try:
        from bertkit.serve import Limits, create_app, run_server, set_threads
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] == "bertkit":
            raise  # a module of bertkit itself is missing: a bug, not a missing extra
        raise OptionError(f"serving needs the 'serve' extra ({e.name} is missing): pip install 'bertkit[serve]'") from None

    set_threads(threads)
    limits = Limits(
        max_inputs=max_inputs, max_chars=max_chars, max_queued_tokens=max_queued_tokens,
        batch_tokens=batch_tokens, max_wait_ms=max_wait_ms,
    )
    search_index = open_search_index(index, model) if index is not None else None
    white = None
    if whitening is not None:
        from bertkit.whitening import Whitening

        white = Whitening.load(whitening)
    app = create_app(load_encoder(model, precision, backend), limits, index=search_index, whitening=white)
    run_server(app, host=host, port=port, graceful_timeout=graceful_timeout, log_level=log_level)


def open_search_index(path: Path, model: str | None):
    """The index behind `serve --index`: its corpus must have been embedded with the model being served."""
    from bertkit.index import Index

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
