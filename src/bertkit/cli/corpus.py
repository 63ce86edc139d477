"""Commands over a corpus: `embed-corpus` into Parquet shards, `index build` over them, and `search`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from bertkit.cli.common import (
    BACKENDS,
    PRECISIONS,
    ModelOpt,
    PoolingOpt,
    load_cross_encoder,
    load_encoder,
    one_of,
)
from bertkit.errors import OptionError


def embed_corpus(
    input: str = typer.Argument(..., help="Corpus: .jsonl / .csv / .tsv / .parquet / .txt (one text a line); a path "
                                "or s3://bucket/key."),
    output_dir: str = typer.Argument(...,
                                     help="Folder (or s3://bucket/prefix) for the Parquet shards and manifest.json."),
    engine: str = typer.Option("local", "--engine", help="local, or ray (extra 'scale')."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)."),
    text_column: str | None = typer.Option(None, "--text-column", help="Column / key of the text (default 'text'; "
                                              "0-based number with --no-header)."),
    id_column: str | None = typer.Option(None, "--id-column", help="Column / key of the id (default: row number)."),
    format: str | None = typer.Option(None, "--format", help="jsonl|csv|tsv|parquet|text (default: from the suffix)."),
    header: bool = typer.Option(True, "--header/--no-header", help="CSV/TSV: first line names the columns."),
    model: str | None = ModelOpt,
    pooling: str = PoolingOpt,
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise the vectors."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    chunk_tokens: int | None = typer.Option(None, "--chunk-tokens", min=1,
                                            help="Split texts into windows of N wordpieces."),
    chunk_overlap: int = typer.Option(0, "--chunk-overlap", min=0, help="Wordpieces shared by neighbouring windows."),
    keep_text: bool = typer.Option(False, "--keep-text", help="Store the text (or chunk text) beside its vector."),
    shard_rows: int = typer.Option(4096, "--shard-rows", min=1, help="Input rows per output shard."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip rows with no text instead of stopping."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output of a different job in OUTPUT_DIR."),
    actors: int | None = typer.Option(None, "--actors", min=1,
                                      help="Ray: model actors (default: 1 per GPU, else per CPU)."),
    cpus_per_actor: int = typer.Option(1, "--cpus-per-actor", min=1, help="Ray: CPUs (torch threads) per actor."),
    precision: str | None = typer.Option(None, "--precision", metavar="[fp32|bf16|int8|int8-static]",
                                         callback=one_of("precision", PRECISIONS),
                                         help="fp32 (exact, default) | bf16 | int8."),
    backend: str | None = typer.Option(None, "--backend", metavar="[torch|onnx]", callback=one_of("backend", BACKENDS),
                                       help="torch (default) | onnx (ONNX Runtime)."),
    sparse: bool = typer.Option(False, "--sparse",
                                help="SPLADE vectors from the masked-LM head (e.g. --model splade-tiny)."),
    sparse_top_k: int | None = typer.Option(None, "--sparse-top-k", min=1,
                                            help="With --sparse: keep each text's k heaviest terms."),
    dtype: str = typer.Option("float32", "--dtype",
                              help="float32 | int8 | uint8 (need --calibration) | binary | ubinary."),
    dimensions: int | None = typer.Option(None, "--dimensions", help="Keep the first N dimensions, re-normalised."),
    calibration: Path | None = typer.Option(None, "--calibration",
                                            help="int8 / uint8: ranges from `bertkit calibrate`."),
):
    """Embed a corpus into Parquet shards (id, text hash, embedding) with a manifest; rerun to resume."""
    from bertkit.corpus import CorpusJob, EmbedOptions
    from bertkit.corpus import embed_corpus as run
    from bertkit.pooling import check_pooling

    check_pooling(pooling, None)
    options = EmbedOptions(model=model, pooling=pooling, normalize=normalize, batch_size=batch_size,
                           chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, keep_text=keep_text,
                           precision=precision, backend=backend, sparse=sparse, sparse_top_k=sparse_top_k,
                           dtype=dtype, dimensions=dimensions, calibration=str(calibration) if calibration else None)
    job = CorpusJob(input, output_dir, text_column=text_column, id_column=id_column, format=format, header=header,
                    shard_rows=shard_rows, skip_bad_rows=skip_bad_rows, overwrite=overwrite, options=options)
    extra = {"actors": actors, "cpus_per_actor": cpus_per_actor} if engine == "ray" else {}
    result = run(job, engine=engine, address=address, progress=sys.stderr.isatty(), **extra)
    sys.stderr.write(
        f"embed-corpus: {result.rows} vectors in {result.shards} shard(s) in {result.output_dir} "
        f"({result.written} embedded now, {result.shards - result.written} already done, "
        f"{result.skipped} rows skipped)\n"
    )


def index_build(
    embeddings_dir: Path = typer.Argument(..., help="An embed-corpus output folder."),
    output: Path = typer.Option(..., "--output", "-o", help="Index folder to create."),
    kind: str = typer.Option("exact", "--kind", help="exact (brute force), hnsw (FAISS, approximate), sparse (SPLADE), "
                             "binary / binary-hnsw (Hamming) or int8."),
    metric: str | None = typer.Option(None, "--metric", help="cosine or dot (default: cosine; dot for sparse)."),
    m: int = typer.Option(32, "--m", min=2, help="hnsw: links per node."),
    ef_construction: int = typer.Option(200, "--ef-construction", min=1, help="hnsw: build-time beam width."),
    ef_search: int = typer.Option(128, "--ef-search", min=1, help="hnsw: default query-time beam width."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index."),
    dimensions: int | None = typer.Option(None, "--dimensions", help="Index the first N dimensions, re-normalised."),
    rescore: int = typer.Option(0, "--rescore",
                                help="binary / int8: rescore the top K with the corpus's float vectors."),
    calibration: Path | None = typer.Option(None, "--calibration", help="int8: ranges (default: fit on the corpus)."),
):
    """Build an exact, HNSW, sparse, binary or int8 index over embed-corpus output, persisted to a folder."""
    from bertkit.index.folder import build_index

    out = build_index(embeddings_dir, output, kind=kind, metric=metric, m=m, ef_construction=ef_construction,
                      ef_search=ef_search, overwrite=overwrite, dimensions=dimensions, rescore=rescore,
                      calibration=calibration)
    sys.stderr.write(f"index build: {kind} index written to {out}\n")


def search(
    index: Path = typer.Argument(..., help="An index folder from `bertkit index build`."),
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="How many results."),
    model: str | None = typer.Option(None, "--model", "-m", help="Query model (default: the corpus's model)."),
    ef_search: int | None = typer.Option(None, "--ef-search", min=1, help="hnsw: beam width (recall vs speed)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per hit."),
    show_text: bool = typer.Option(True, "--text/--no-text", help="Show texts (stored, or read back from the input)."),
    rerank: Path | None = typer.Option(None, "--rerank", help="Rerank the candidates with this cross-encoder folder."),
    candidates: int | None = typer.Option(None, "--candidates",
                                          help="With --rerank: candidates recalled (default 50)."),
):
    """The K nearest corpus items to QUERY: rank, score, id, chunk offsets and text."""
    from bertkit.index.folder import Index

    if candidates is not None and candidates < 1:
        raise OptionError(f"--candidates {candidates}: give at least 1 (how many hits the cross-encoder reorders)")
    if candidates is not None and rerank is None:
        raise OptionError("--candidates is for --rerank DIR (how many hits the cross-encoder reorders)")
    idx = Index.load(index, ef_search=ef_search)
    e = idx.info["embedding"]  # the query is encoded with the corpus's model, precision and backend
    ce = None
    if rerank is not None:
        ce = load_cross_encoder(rerank)  # before the search: a wrong folder fails fast
    encoder = load_encoder(model or e["model"], e.get("precision"), e.get("backend"))
    (hits,) = idx.search_text(encoder, query, k=k if ce is None else max(k, candidates or 50))
    if ce is not None:
        from bertkit.index.rerank import rerank_hits

        hits = rerank_hits(ce, query, idx.fill_texts(hits), k)
    if show_text:
        idx.fill_texts(hits)
    else:
        for h in hits:
            h.text = None
    labels = [h.id + (f" [{h.start}:{h.end}]" if h.start is not None else "") for h in hits]
    width = max(map(len, labels), default=0)
    for h, label in zip(hits, labels):
        if as_json:
            sys.stdout.write(json.dumps(h.as_dict(), ensure_ascii=False) + "\n")
            continue
        text = f"  {h.text[:100].rstrip()}" if h.text else ""
        sys.stdout.write(f"{h.rank:>3}  {h.score:.4f}  {label:<{width}}{text}\n")
