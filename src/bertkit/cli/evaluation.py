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
    data: str = typer.Argument(..., help="Similarity set with gold scores "
                               "(STS-B, SICK, or a pair file with a score column)."),
    model: list[str] | None = typer.Option(None, "--model", "-m",
                                           help="Model folder or hub id; repeat to compare models."),
    pooling: list[str] | None = typer.Option(None, "--pooling", "-p",
                                             help="Repeat for several (default: all of them)."),
    layers: list[int] | None = LayersOpt,
    format: str | None = FormatOpt,
    whiten: Path | None = typer.Option(None, "--whiten",
                                       help="Also score with a whitening file (from `bertkit whiten`)."),
    whiten_k: list[int] | None = typer.Option(None, "--whiten-k", min=1,
                                              help="Also score the whitening cut to k dims; repeat."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout instead of a table."),
    skip_bad_rows: bool = SkipRowsOpt,
    precision: str = PrecisionOpt,
    backend: str = BackendOpt,
):
    """Spearman and Pearson (x100) of cosine similarity against the gold scores, per model and pooling."""
    from bertkit.pooling import check_pooling
    from bertkit.which.evaluate import evaluate_sts

    for p in pooling or []:
        check_pooling(p, layers or None)
    pairs = read_similarity_set(data, format, skip_bad_rows)
    whitening = None
    if whiten is not None:
        from bertkit.vectors.whitening import Whitening

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


TaskOpt = typer.Option(None, "--task", "-t", help="sts|classify|pair|ner|retrieval (default: what DATA fits; sts "
                       "for pairs with scores, as compare always did).")
MaxTrainOpt = typer.Option(None, "--max-train", min=0, help="Cap the training part (seeded sample; 0 = all). "
                           "Default: classify 4000 texts, pair 3000 pairs, ner 1500 sentences.")
MaxTestOpt = typer.Option(None, "--max-test", min=0, help="Cap the test part (seeded sample; 0 = all). Default: "
                          "classify 1000, pair 1000, ner 500 sentences, retrieval 2000 pairs, sts all.")
SeedOpt = typer.Option(0, "--seed", help="Seed of the held-out split and the sample caps.")


def compare(
    data: str = typer.Argument(..., help="Labelled data: scored pairs (STS-B, SICK), labelled texts (SST-2, AG News), "
                               "labelled pairs (MRPC, SICK), CoNLL, or any pair file."),
    task: str | None = TaskOpt,
    test: str | None = typer.Option(None, "--test", help="Test file for classify / pair / ner (default: a seeded "
                                    "20% of DATA held out)."),
    model: list[str] | None = typer.Option(None, "--model", "-m",
                                           help="Model folder or hub id; repeat to compare models."),
    layers: bool = typer.Option(False, "--layers",
                                help="Also cls/mean/max on every hidden state (chart: OUT.layers.png)."),
    plot: Path | None = typer.Option(None, "--plot", help="Chart PNG (sts: default compare-<data>.png here)."),
    format: str | None = FormatOpt,
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per representation and line (sts on one "
                                 "model without --task: compare's one JSON document)."),
    max_train: int | None = MaxTrainOpt,
    max_test: int | None = MaxTestOpt,
    seed: int = SeedOpt,
    skip_bad_rows: bool = SkipRowsOpt,
    precision: str = PrecisionOpt,
    backend: str = BackendOpt,
):
    """Which vector for which task: every representation of a model on DATA, ranked, explained and charted."""
    from bertkit.which.tasks import TaskOptions, task_of

    opts = TaskOptions(test, format, max_train, max_test, seed=seed, skip_bad=skip_bad_rows)
    chosen = task or task_of(data, opts)
    opts.check(chosen)
    models = model or [None]
    if chosen == "sts" and len(models) == 1 and max_test is None and not (as_json and task):
        return compare_sts(data, models[0], layers, plot, format, batch_size, as_json, skip_bad_rows, precision,
                           backend)
    if plot is not None:
        check_plot(plot)
    from bertkit.which.represent import Representations, sentence_specs
    from bertkit.which.tasks import run_task

    results = []
    for name in models:
        enc = load_encoder(name, precision, backend)
        reps = Representations(enc, sentence_specs(enc, layers), batch_size, sys.stderr.isatty(), layers)
        results.append(run_task(chosen, reps, data, opts))
    plots = task_plots(results, plot, layers)
    if as_json:
        sys.stdout.write("".join(r.json_lines() for r in results))
        for note in dict.fromkeys(n for r in results for n in r.notes):
            sys.stderr.write(f"note: {note}\n")
    else:
        print_task_results(results)
    if plots:
        sys.stderr.write("wrote " + ", ".join(map(str, plots)) + "\n")


def check_plot(plot: Path) -> None:
    if plot.suffix.lower() != ".png":
        raise OptionError(f"--plot {plot}: the chart is a PNG; give a file name ending in .png")
    if not plot.parent.exists():
        raise OptionError(f"--plot {plot}: folder {plot.parent} does not exist; create it first")
    check_output_file(plot, "--plot")


def check_output_file(path: Path, option: str = "--output") -> None:
    """Before any work: an output file's name is not a folder, and its folder takes new files."""
    from bertkit.outputs import probe_writable

    if path.is_dir():
        raise OptionError(f"{option} {path} is a folder; give a file name")
    probe_writable(path.parent, path)


def task_plots(results, plot: Path | None, layers: bool) -> list[Path]:
    """The bar chart at --plot and, with --layers, the heat map representation x hidden state beside it."""
    if plot is None:
        return []
    from bertkit.which.charts import plot_bars, plot_layer_heatmap
    from bertkit.which.evaluate import layers_path

    paths = [plot_bars(results, plot)]
    if layers or any(r.per_layer() for r in results):
        paths.append(plot_layer_heatmap(results, layers_path(plot)))
    return paths


def print_task_results(results) -> None:
    """Per model: the ranked table, per-layer table, how the data was split and capped, and the reading."""
    from rich.console import Console
    from rich.table import Table

    from bertkit.which.results import reading

    console = Console()
    for r in results:
        extra = [k for k in r.scores[0].metrics if k not in (r.metric, "C") and not k.startswith("f1_")]
        table = Table("rank", "representation", "input", r.metric, *extra,
                      title=f"{r.task} on {r.data}, best first\nmodel: {r.model}")
        for i, s in enumerate(r.scores, 1):
            table.add_row(str(i), s.representation, s.input, f"{s.score:.2f}",
                          *(f"{s.metrics.get(k, float('nan')):.2f}" for k in extra))
        console.print(table)
        for fam, values in r.per_layer().items():
            console.print(f"{fam} per hidden state (0 = embeddings): " + "  ".join(f"{v:.1f}" for v in values))
        for note in r.notes:
            console.print(f"[dim]- {note}[/dim]")
        console.print(reading(r) + "\n")


def compare_sts(data: str, model: str | None, layers: bool, plot: Path | None, format: str | None, batch_size: int,
                as_json: bool, skip_bad_rows: bool, precision: str, backend: str) -> None:
    """`compare` on a similarity set, one model: its table, reading, bar and line charts, JSON document."""
    from bertkit.which.evaluate import compare as run_compare
    from bertkit.which.evaluate import layers_path, plot_layers, plot_poolings, reading

    plot = plot or Path(f"compare-{Path(data).stem}.png")
    check_plot(plot)
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
    texts: str = typer.Argument(...,
                                help="Unlabelled texts: one a line, or any dataset file (all its sentences are used)."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Whitening .npz (default: next to a --model folder)."),
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
    from bertkit.vectors.whitening import default_path, fit_texts

    check_pooling(pooling, layers or None)
    if output is None:
        if model is None or not Path(model).is_dir():
            raise OptionError("--output is needed unless --model is a local folder (the file then goes next to it)")
        output = default_path(model, pooling, k)
    check_output_file(output)
    sentences = sentences_of(read_dataset(texts, format))
    if max_texts is not None and len(sentences) > max_texts:
        import random

        sentences = random.Random(0).sample(sentences, max_texts)
    enc = load_encoder(model)
    w = fit_texts(enc, sentences, pooling=pooling, layers=layers or None, k=k, batch_size=batch_size,
                  progress=sys.stderr.isatty())
    path = w.save(output)
    sys.stderr.write(f"whitening fit on {len(sentences)} texts ({enc.hidden_size} -> {w.k} dims) written to {path}\n")


def calibrate(
    texts: str = typer.Argument(...,
                                help="Unlabelled texts: one a line, or any dataset file (all its sentences are used)."),
    output: Path = typer.Option(..., "--output", "-o", help="Calibration .npz to write (per-dimension ranges)."),
    model: str | None = ModelOpt,
    pooling: str = PoolingOpt,
    layers: list[int] | None = LayersOpt,
    normalize: bool = typer.Option(False, "--normalize", help="Calibrate L2-normalised vectors (as encoded with it)."),
    dimensions: int | None = typer.Option(None, "--dimensions",
                                          help="Calibrate the first N dimensions, re-normalised."),
    format: str | None = typer.Option(None, "--format", "-f", help="txt|stsb|sick|... (inferred when omitted)."),
    max_texts: int | None = typer.Option(None, "--max-texts", min=2, help="Use a seeded random sample of N texts."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
):
    """Fit int8 / uint8 ranges (min and max per dimension) on texts; use them with `--dtype int8 --calibration`."""
    from bertkit.data import read_dataset, sentences_of
    from bertkit.pooling import check_pooling
    from bertkit.vectors.compact import calibrate as fit_ranges

    check_pooling(pooling, layers or None)
    if not output.parent.exists():
        raise OptionError(f"--output {output}: folder {output.parent} does not exist; create it first")
    check_output_file(output)
    sentences = sentences_of(read_dataset(texts, format))
    if max_texts is not None and len(sentences) > max_texts:
        import random

        sentences = random.Random(0).sample(sentences, max_texts)
    enc = load_encoder(model)
    cal = fit_ranges(enc, sentences, pooling=pooling, layers=layers or None, normalize=normalize,
                     dimensions=dimensions, batch_size=batch_size, progress=sys.stderr.isatty())
    path = cal.save(output)
    sys.stderr.write(f"calibration ({cal.dim} dims) fit on {len(sentences)} texts written to {path}\n")


def report(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for report.md, summary.png and results.jsonl."),
    model: str | None = ModelOpt,
    sts: list[str] | None = typer.Option(None, "--sts", help="Pairs with gold scores (STS-B dev, SICK); repeat."),
    classify: list[str] | None = typer.Option(None, "--classify", help="Labelled texts (SST-2, AG News); repeat."),
    pair: list[str] | None = typer.Option(None, "--pair", help="Labelled pairs (MRPC, SICK entailment); repeat."),
    ner: list[str] | None = typer.Option(None, "--ner", help="CoNLL BIO file; repeat."),
    retrieval: list[str] | None = typer.Option(None, "--retrieval", help="Any pair file; repeat."),
    finetuned: list[str] | None = typer.Option(None, "--finetuned", help="TASK=DIR: a model fine-tuned for TASK "
                                               "(train classify|ner|sbert), added as a row; repeat."),
    layers: bool = typer.Option(False, "--layers", help="Also cls/mean/max of every hidden state."),
    max_train: int | None = MaxTrainOpt,
    max_test: int | None = MaxTestOpt,
    seed: int = SeedOpt,
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    precision: str = PrecisionOpt,
    backend: str = BackendOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --output folder that holds other files."),
):
    """Every representation of one model on every task given: DIR/report.md with the recommendation per task,
    and DIR/summary.png (representation x task, each task's best marked)."""
    import shlex

    from bertkit.outputs import check_output_folder
    from bertkit.which.report import ReportJob, is_report_folder, parse_finetuned
    from bertkit.which.report import report as run_report
    from bertkit.which.tasks import TaskOptions

    given = {"sts": sts, "classify": classify, "pair": pair, "ner": ner, "retrieval": retrieval}
    job = ReportJob(
        tasks=[(task, path) for task, paths in given.items() for path in paths or []],
        finetuned=parse_finetuned(finetuned or []),
        options=TaskOptions(None, None, max_train, max_test, seed=seed),
        layers=layers, batch_size=batch_size, progress=sys.stderr.isatty(),
        command="bertkit report " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["report"] else sys.argv[1:]),
    )
    job.check()  # before the model loads: option mistakes answer at once
    check_output_folder(output, overwrite=overwrite, own=is_report_folder)  # an earlier report: replaced
    enc = load_encoder(model, precision, backend)
    path, results = run_report(enc, job, output)
    from rich.console import Console

    for r in results:
        top = next(s for s in r.scores if s.input != "fine-tuned")
        Console().print(f"{r.task} ({r.data}): use {top.representation} ({r.metric} {top.score:.1f})")
    sys.stderr.write(f"wrote {path}, {path.parent / 'summary.png'}, {path.parent / 'results.jsonl'}\n")
