"""Commands that measure representations on labelled pairs: `evaluate sts`, `compare` and `whiten`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from bertkit.cli.common import (
    BackendOpt,
    FormatOpt,
    LayersOpt,
    ModelOpt,
    PoolingOpt,
    PrecisionOpt,
    SkipRowsOpt,
    load_encoder,
)
from bertkit.errors import OptionError


def read_similarity_set(path: str, fmt: str | None, skip_bad_rows: bool):
    """Sentence pairs with gold scores, in any format `bertkit.data` reads."""
    from bertkit.data import read_scored_pairs

    return read_scored_pairs(path, fmt, skip_bad=skip_bad_rows)


def print_sts_table(title: str, scores) -> None:
    """A table of Spearman / Pearson per pooling (and per model when there are several)."""
    from rich.console import Console
    from rich.table import Table

    models = list(dict.fromkeys(s.model for s in scores))
    many = len(models) > 1  # one model: name it in the title, not on every row
    table = Table(*(["model"] if many else []), "pooling", "Spearman x100", "Pearson x100", "pairs",
                  title=title if many else f"{title}\nmodel: {models[0]}")
    for s in scores:
        table.add_row(*([s.model] if many else []), s.label, f"{s.spearman:.2f}", f"{s.pearson:.2f}", str(s.n))
    Console().print(table)


def evaluate_sts_cmd(
    data: str = typer.Argument(..., help="Similarity set with gold scores (STS-B, SICK, or a pair file with a score column)."),
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Model folder or hub id; repeat to compare models."),
    pooling: list[str] | None = typer.Option(None, "--pooling", "-p", help="Repeat for several (default: all of them)."),
    layers: list[int] | None = LayersOpt,
    format: str | None = FormatOpt,
    whiten: Path | None = typer.Option(None, "--whiten", help="Also score with a whitening file (from `bertkit whiten`)."),
    whiten_k: list[int] | None = typer.Option(None, "--whiten-k", min=1, help="Also score the whitening cut to k dims; repeat."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout instead of a table."),
    skip_bad_rows: bool = SkipRowsOpt,
    precision: str = PrecisionOpt,
    backend: str = BackendOpt,
):
    """Spearman and Pearson (x100) of cosine similarity against the gold scores, per model and pooling."""
    from bertkit.evaluate import evaluate_sts
    from bertkit.pooling import check_pooling

    for p in pooling or []:
        check_pooling(p, layers or None)
    pairs = read_similarity_set(data, format, skip_bad_rows)
    whitening = None
    if whiten is not None:
        from bertkit.whitening import Whitening

        full = Whitening.load(whiten)
        pooling = pooling or [full.pooling]
        whitening = [full] + [full.reduce(k) for k in whiten_k or []]  # raw rows too, from one encoding pass
    elif whiten_k:
        raise OptionError("--whiten-k needs --whiten FILE")
    scores = []
    for name in model or [None]:
        enc = load_encoder(name, precision, backend)
        scores += evaluate_sts(enc, pairs, pooling or None, layers or None, whitening=whitening, batch_size=batch_size,
                               progress=sys.stderr.isatty())
    if as_json:
        sys.stdout.write(json.dumps({"data": data, "scores": [s.to_dict() for s in scores]}, indent=2) + "\n")
    else:
        print_sts_table(f"STS: {data} ({len(pairs)} pairs)", scores)


def compare(
    data: str = typer.Argument(..., help="Similarity set with gold scores (STS-B dev, SICK trial, ...)."),
    model: str | None = ModelOpt,
    layers: bool = typer.Option(False, "--layers", help="Also score cls/mean/max on every hidden state (line chart)."),
    plot: Path | None = typer.Option(None, "--plot", help="Bar chart PNG (default: compare-<data>.png here)."),
    format: str | None = FormatOpt,
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout instead of the table."),
    skip_bad_rows: bool = SkipRowsOpt,
    precision: str = PrecisionOpt,
    backend: str = BackendOpt,
):
    """Every pooling strategy of a model on a similarity set: ranked table, bar chart, and what it means."""
    from bertkit.evaluate import compare as run_compare
    from bertkit.evaluate import layers_path, plot_layers, plot_poolings, reading

    plot = plot or Path(f"compare-{Path(data).stem}.png")
    if plot.suffix.lower() != ".png":
        raise OptionError(f"--plot {plot}: the chart is a PNG; give a file name ending in .png")
    if not plot.parent.exists():
        raise OptionError(f"--plot {plot}: folder {plot.parent} does not exist; create it first")
    pairs = read_similarity_set(data, format, skip_bad_rows)
    enc = load_encoder(model, precision, backend)
    name = "/".join(Path(data).parts[-2:])  # e.g. stsb/dev.tsv: the folder tells the dataset
    result = run_compare(enc, pairs, name, per_layer=layers, batch_size=batch_size, progress=sys.stderr.isatty())
    plots = [plot_poolings(result, plot)] + ([plot_layers(result, layers_path(plot))] if layers else [])
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict() | {"plots": [str(p) for p in plots]}, indent=2) + "\n")
        return
    from rich.console import Console

    print_sts_table(f"poolings on {data}, best first", result.poolings)
    if result.per_layer:
        from rich.table import Table

        n = len(next(iter(result.per_layer.values())))
        table = Table("pooling", *[str(i) for i in range(n)], title="Spearman x100 per hidden state (0 = embeddings)")
        for p, values in result.per_layer.items():
            table.add_row(p, *[f"{v:.1f}" for v in values])
        Console().print(table)
    Console().print(reading(result))
    sys.stderr.write("wrote " + ", ".join(map(str, plots)) + "\n")


def whiten(
    texts: str = typer.Argument(..., help="Unlabelled texts: one a line, or any dataset file (all its sentences are used)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Whitening .npz (default: next to a --model folder)."),
    model: str | None = ModelOpt,
    pooling: str = PoolingOpt,
    layers: list[int] | None = LayersOpt,
    k: int | None = typer.Option(None, "--k", min=1, help="Keep the k leading dimensions (default: all)."),
    format: str | None = typer.Option(None, "--format", "-f", help="txt|stsb|sick|... (inferred when omitted)."),
    max_texts: int | None = typer.Option(None, "--max-texts", min=2, help="Fit on a seeded random sample of N texts."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
):
    """Fit BERT-whitening (mean + whitening matrix) on unlabelled texts; apply it with `encode --whiten`."""
    from bertkit.data import read_dataset, sentences_of
    from bertkit.pooling import check_pooling
    from bertkit.whitening import default_path, fit_texts

    check_pooling(pooling, layers or None)
    if output is None:
        if model is None or not Path(model).is_dir():
            raise OptionError("--output is needed unless --model is a local folder (the file then goes next to it)")
        output = default_path(model, pooling, k)
    sentences = sentences_of(read_dataset(texts, format))
    if max_texts is not None and len(sentences) > max_texts:
        import random

        sentences = random.Random(0).sample(sentences, max_texts)
    enc = load_encoder(model)
    w = fit_texts(enc, sentences, pooling=pooling, layers=layers or None, k=k, batch_size=batch_size,
                  progress=sys.stderr.isatty())
    path = w.save(output)
    sys.stderr.write(f"whitening fit on {len(sentences)} texts ({enc.hidden_size} -> {w.k} dims) written to {path}\n")
