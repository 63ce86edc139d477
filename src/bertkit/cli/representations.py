"""The `bertkit` command line. It parses, validates and calls the library; heavy imports stay inside commands.

Any error the user can cause is printed as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer

from bertkit.errors import OptionError as UsageError  # a bad command-line value is a user error

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Every representation a BERT model has to offer, and which one to use.",
)

ModelOpt = typer.Option(None, "--model", "-m", help="Model folder or hub id (default: packaged all-MiniLM-L6-v2).")
PoolingOpt = typer.Option("mean", "--pooling", "-p", help="cls|pooler|mean|max|mean_sqrt_len|first_last_avg|mask_prompt")
LayersOpt = typer.Option(None, "--layers", "-l", help="Hidden states to average (0 = embeddings, -1 = last); repeat.")

OUTPUT_SUFFIXES = (".npy", ".jsonl", ".parquet")


def load_encoder(model: str | None, precision: str = "fp32", backend: str = "torch"):
    from bertkit.encoder import Encoder

    return Encoder.load(model, precision=precision, backend=backend)


def read_lines(path: str, skip_bad_lines: bool) -> list[str]:
    """One text per line from a file or stdin ('-'). Invalid UTF-8 or blank lines are errors naming the line,
    or, with --skip-bad-lines, skipped with a warning and a count."""
    from bertkit.errors import InputError

    if path == "-":
        raw = sys.stdin.buffer.read()
        name = "stdin"
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"input file {path} does not exist; pass an existing file, or - for stdin")
        raw = p.read_bytes()
        name = path
    texts, skipped = [], []
    for n, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            if not skip_bad_lines:
                raise InputError(
                    f"{name}: line {n} is not valid UTF-8 (byte {e.start}); fix the file or pass --skip-bad-lines"
                ) from None
            skipped.append(n)
            continue
        if n == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            if not skip_bad_lines:
                raise InputError(f"{name}: line {n} is empty; remove blank lines or pass --skip-bad-lines")
            skipped.append(n)
            continue
        texts.append(text)
    if skipped:
        logging.getLogger("bertkit").warning(
            "skipped %d bad line(s) of %s (invalid UTF-8 or blank): %s%s",
            len(skipped), name, ", ".join(map(str, skipped[:10])), " ..." if len(skipped) > 10 else "",
        )
    return texts


def write_vectors(path: Path, texts: list[str], vectors) -> None:
    """Write to a temporary file first, then rename: a failed run never clobbers an existing output."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors)
        elif path.suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": t, "embedding": v.tolist()}) + "\n" for t, v in zip(texts, vectors))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            dim = vectors.shape[1]
            emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
            pq.write_table(pa.table({"text": texts, "embedding": emb}), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@app.command()
def encode(
    texts: list[str] | None = typer.Argument(None, help="Texts to encode (or use --input)."),
    input: str | None = typer.Option(None, "--input", "-i", help="File with one text a line, or - for stdin."),
    output: Path | None = typer.Option(None, "--output", "-o", help="OUT.npy | OUT.jsonl | OUT.parquet"),
    model: str | None = ModelOpt,
    pooling: str = PoolingOpt,
    layers: list[int] | None = LayersOpt,
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise the vectors."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    template: str | None = typer.Option(None, "--template", help='mask_prompt template, with {text} and [MASK].'),
    truncate: bool = typer.Option(True, "--truncate/--no-truncate", help="Cut over-long texts (default) or refuse them."),
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="Skip blank / invalid UTF-8 lines of --input."),
    whiten: Path | None = typer.Option(None, "--whiten", help="Apply a whitening file from `bertkit whiten` (issue 3)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (exact) | bf16 | int8: faster, approximate."),
    backend: str = typer.Option("torch", "--backend", help="torch | onnx (ONNX Runtime, exported and cached once)."),
):
    """Sentence vectors: one JSON array per text on stdout, or a .npy / .jsonl / .parquet file."""
    from bertkit.pooling import DEFAULT_PROMPT, check_pooling

    check_pooling(pooling, layers or None)
    if output is not None and output.suffix not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output {output}: unknown format {output.suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}")
    if output is not None and not output.parent.exists():
        raise UsageError(f"--output {output}: folder {output.parent} does not exist; create it first")
    if texts and input:
        raise UsageError("give texts as arguments or with --input, not both")
    if not texts and input is None:
        if sys.stdin.isatty():
            raise UsageError("no texts: pass them as arguments, with --input FILE, or on stdin (--input -)")
        input = "-"
    items = read_lines(input, skip_bad_lines) if input is not None else list(texts)
    if not items:
        raise UsageError("no texts to encode: the input is empty")
    whitening = load_whitening(whiten, pooling, layers or None) if whiten is not None else None
    enc = load_encoder(model, precision, backend)
    vectors = enc.encode(
        items, pooling=pooling, layers=layers or None, normalize=normalize and whitening is None, batch_size=batch_size,
        progress=len(items) >= 256 and sys.stderr.isatty(), template=template or DEFAULT_PROMPT, truncate=truncate,
    )
    if whitening is not None:  # whiten the raw pooled vectors, then normalise if asked
        vectors = whitening.apply(vectors, normalize=normalize)
    if output is None:
        for v in vectors:
            sys.stdout.write(json.dumps([round(float(x), 7) for x in v]) + "\n")
    else:
        write_vectors(output, items, vectors)
        logging.getLogger("bertkit").info("wrote %d x %d vectors to %s", *vectors.shape, output)


def load_whitening(path: Path, pooling: str, layers: list[int] | None):
    """A whitening file, checked against the pooling it will be applied to (issue 3)."""
    from bertkit.whitening import Whitening

    w = Whitening.load(path)
    w.check_compatible(pooling, layers)
    return w


@app.command()
def tokens(
    text: str = typer.Argument(..., help="Text to tokenize."),
    model: str | None = ModelOpt,
    vectors: bool = typer.Option(False, "--vectors", help="Also print each token's vector (JSON lines)."),
):
    """The wordpieces of a text with their character offsets (and, with --vectors, their vectors)."""
    enc = load_encoder(model)
    (tv,) = enc.encode_tokens([text])
    if vectors:
        for tok, off, vec in zip(tv.tokens, tv.offsets, tv.vectors):
            sys.stdout.write(json.dumps({"token": tok, "start": off[0], "end": off[1], "vector": vec.round(6).tolist()}) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("#", "token", "start", "end", "text span")
    for i, (tok, (s, e)) in enumerate(zip(tv.tokens, tv.offsets)):
        table.add_row(str(i), tok, str(s), str(e), text[s:e])
    Console().print(table)


@app.command("fill-mask")
def fill_mask(
    text: str = typer.Argument(..., help='Text with [MASK], e.g. "The [MASK] sat on the mat."'),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    model: str | None = ModelOpt,
):
    """Predict the tokens behind each [MASK] with the masked-LM head."""
    enc = load_encoder(model)
    for n, preds in enumerate(enc.fill_mask(text, top_k=top_k), start=1):
        sys.stdout.write(f"[MASK] #{n}:\n")
        for tok, p in preds:
            sys.stdout.write(f"  {tok:<15} {p:.4f}\n")


@app.command()
def nsp(a: str = typer.Argument(...), b: str = typer.Argument(...), model: str | None = ModelOpt):
    """Probability that sentence B follows sentence A (the next-sentence-prediction head)."""
    enc = load_encoder(model)
    sys.stdout.write(f"{enc.next_sentence(a, b):.4f}\n")


@app.command()
def similarity(
    a: str = typer.Argument(...),
    b: str = typer.Argument(...),
    model: str | None = ModelOpt,
    pooling: str = PoolingOpt,
    layers: list[int] | None = LayersOpt,
):
    """Cosine similarity of two texts under a pooling."""
    from bertkit.pooling import check_pooling

    check_pooling(pooling, layers or None)
    enc = load_encoder(model)
    sys.stdout.write(f"{enc.similarity(a, b, pooling=pooling, layers=layers or None):.4f}\n")


@app.command()
def inspect(model: str | None = ModelOpt):
    """The model's module tree with shapes and parameter counts per part, and the totals."""
    from rich.console import Console
    from rich.tree import Tree

    from bertkit.model import describe

    enc = load_encoder(model)
    c = enc.model.config
    title = (
        f"[bold]{enc.name}[/]  BERT: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
        f"{c.num_attention_heads} heads x {c.head_dim}, feed-forward {c.intermediate_size}, "
        f"vocab {c.vocab_size}, {c.max_position_embeddings} positions (tokenizer limit {enc.max_length})"
    )
    tree = Tree(title)
    total = 0
    for part in describe(enc.model):
        total += part.count
        branch = tree.add(f"[bold]{part.name}[/]  {part.count:,} parameters" + (f"  ({part.note})" if part.note else ""))
        for name, shape, count in part.tensors:
            branch.add(f"{name}  {tuple(shape)}  {count:,}")
    console = Console()
    console.print(tree)
    heads = {"pooler": enc.model.has_pooler, "masked-LM head": enc.model.has_mlm, "NSP head": enc.model.has_nsp}
    console.print("heads: " + ", ".join(f"{k} {'present' if v else 'absent'}" for k, v in heads.items()))
    console.print(f"[bold]total parameters: {total:,}[/]")


DEMO_PAIRS = [
    ("A man is playing a guitar.", "Someone is playing an instrument."),
    ("A man is playing a guitar.", "The stock market fell sharply today."),
    ("The cat sat on the mat.", "A cat is sitting on a rug."),
    ("The cat sat on the mat.", "Quantum computers use qubits."),
]


@app.command()
def demo(model: str | None = ModelOpt):
    """A short tour: [CLS] vs pooler vs mean similarity for a few sentence pairs."""
    from rich.console import Console
    from rich.table import Table

    enc = load_encoder(model)
    poolings = ["cls", "pooler", "mean"] if enc.model.has_pooler else ["cls", "mean"]
    a, b = [p[0] for p in DEMO_PAIRS], [p[1] for p in DEMO_PAIRS]
    sims = {p: enc.similarity(a, b, pooling=p) for p in poolings}
    table = Table("sentence A", "sentence B", *poolings, title="cosine similarity by representation")
    for i, (x, y) in enumerate(DEMO_PAIRS):
        table.add_row(x, y, *[f"{sims[p][i]:.3f}" for p in poolings])
    console = Console()
    console.print(table)
    gap = {p: (sims[p][0] + sims[p][2] - sims[p][1] - sims[p][3]) / 2 for p in poolings}
    best = max(gap, key=gap.get)
    console.print(
        "Related pairs should score high and unrelated ones low. Gap between related and unrelated pairs: "
        + ", ".join(f"{p} {g:.3f}" for p, g in gap.items())
        + f". Here [bold]{best}[/] separates them best; raw [CLS] and the pooler were trained for other jobs "
        "(classification handle, next-sentence prediction), not for cosine similarity."
    )


# ---- evaluation, comparison, whitening, Sentence-BERT training (issue 3) ----------------------------------

# Shared command groups: `bertkit train <objective>` and `bertkit evaluate <task>`. Other issues add their
# commands to them with @train_app.command("name") / @evaluate_app.command("name").
train_app = typer.Typer(no_args_is_help=True, help="Train or fine-tune a model (Sentence-BERT, SimCSE, ...).")
evaluate_app = typer.Typer(no_args_is_help=True, help="Measure a model on a labelled set.")
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")

FormatOpt = typer.Option(None, "--format", "-f", help="stsb|sick|mrpc|csv|tsv|jsonl (inferred from the file when omitted).")
SkipRowsOpt = typer.Option(False, "--skip-bad-rows", help="Skip malformed rows (reported with their line numbers).")


def read_similarity_set(path: str, fmt: str | None, skip_bad_rows: bool):
    from bertkit.data import read_scored_pairs

    return read_scored_pairs(path, fmt, skip_bad=skip_bad_rows)


def print_sts_table(title: str, scores) -> None:
    from rich.console import Console
    from rich.table import Table

    models = list(dict.fromkeys(s.model for s in scores))
    many = len(models) > 1  # one model: name it in the title, not on every row
    table = Table(*(["model"] if many else []), "pooling", "Spearman x100", "Pearson x100", "pairs",
                  title=title if many else f"{title}\nmodel: {models[0]}")
    for s in scores:
        table.add_row(*([s.model] if many else []), s.label, f"{s.spearman:.2f}", f"{s.pearson:.2f}", str(s.n))
    Console().print(table)


@evaluate_app.command("sts")
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
        raise UsageError("--whiten-k needs --whiten FILE")
    scores = []
    for name in model or [None]:
        enc = load_encoder(name)
        scores += evaluate_sts(enc, pairs, pooling or None, layers or None, whitening=whitening, batch_size=batch_size,
                               progress=sys.stderr.isatty())
    if as_json:
        sys.stdout.write(json.dumps({"data": data, "scores": [s.to_dict() for s in scores]}, indent=2) + "\n")
    else:
        print_sts_table(f"STS: {data} ({len(pairs)} pairs)", scores)


@app.command()
def compare(
    data: str = typer.Argument(..., help="Similarity set with gold scores (STS-B dev, SICK trial, ...)."),
    model: str | None = ModelOpt,
    layers: bool = typer.Option(False, "--layers", help="Also score cls/mean/max on every hidden state (line chart)."),
    plot: Path | None = typer.Option(None, "--plot", help="Bar chart PNG (default: compare-<data>.png here)."),
    format: str | None = FormatOpt,
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout instead of the table."),
    skip_bad_rows: bool = SkipRowsOpt,
):
    """Every pooling strategy of a model on a similarity set: ranked table, bar chart, and what it means."""
    from bertkit.evaluate import compare as run_compare
    from bertkit.evaluate import layers_path, plot_layers, plot_poolings, reading

    plot = plot or Path(f"compare-{Path(data).stem}.png")
    if plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot}: the chart is a PNG; give a file name ending in .png")
    if not plot.parent.exists():
        raise UsageError(f"--plot {plot}: folder {plot.parent} does not exist; create it first")
    pairs = read_similarity_set(data, format, skip_bad_rows)
    enc = load_encoder(model)
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


@app.command()
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
            raise UsageError("--output is needed unless --model is a local folder (the file then goes next to it)")
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


def sbert_train_config(epochs: float, batch_size: int, lr: float, warmup: float, seed: int, max_steps: int | None,
                 eval_every: int | None):
    from bertkit.train.loop import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup_ratio=warmup, seed=seed,
                       max_steps=max_steps, eval_every=eval_every, best_metric="spearman")


@train_app.command("sbert")
def train_sbert(
    train: str = typer.Option(..., "--train", help="Training pairs (STS-B, SICK, MRPC, csv/tsv/jsonl)."),
    dev: str | None = typer.Option(None, "--dev", help="Scored dev pairs; Spearman each epoch picks the best."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the trained model."),
    format: str | None = FormatOpt,
    dev_format: str | None = typer.Option(None, "--dev-format", help="Format of --dev (inferred when omitted)."),
    loss: str = typer.Option("cosine", "--loss", help="cosine | mnrl | softmax"),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the training set."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1),
    pooling: str = typer.Option("mean", "--pooling", "-p", help="cls | mean | max | mean_sqrt_len"),
    model: str | None = ModelOpt,
    lr: float = typer.Option(2e-5, "--lr", help="Peak learning rate (AdamW, linear warm-up then decay)."),
    warmup: float = typer.Option(0.1, "--warmup", help="Warm-up fraction of the steps."),
    seed: int = typer.Option(42, "--seed"),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop after N steps (overrides --epochs)."),
    eval_every: int | None = typer.Option(None, "--eval-every", min=1, help="Evaluate every N steps (default: each epoch)."),
    normalize: bool = typer.Option(False, "--normalize", help="Add a Normalize module to the saved model."),
    skip_bad_rows: bool = SkipRowsOpt,
):
    """Fine-tune a siamese bi-encoder (Sentence-BERT) and save a bertkit / sentence-transformers / transformers folder."""
    from bertkit.data import read_dataset, read_scored_pairs
    from bertkit.train.sbert import LOSSES, ST_POOLINGS, train_sentence_model

    if loss not in LOSSES:
        raise UsageError(f"--loss {loss}: choose one of {', '.join(LOSSES)}")
    if pooling not in ST_POOLINGS:
        raise UsageError(f"--pooling {pooling}: Sentence-BERT training uses one of {', '.join(ST_POOLINGS)}")
    pairs = read_dataset(train, format, skip_bad=skip_bad_rows)
    if not pairs or not hasattr(pairs[0], "b"):
        raise UsageError(f"--train {train} holds no sentence pairs; give STS-B, SICK, MRPC or a pair file")
    dev_pairs = read_scored_pairs(dev, dev_format, skip_bad=skip_bad_rows) if dev else None
    enc = load_encoder(model)
    config = sbert_train_config(epochs, batch_size, lr, warmup, seed, max_steps, eval_every)
    result = train_sentence_model(enc.model, enc.tokenizer, pairs, dev_pairs, output, loss=loss, pooling=pooling,
                                  config=config, normalize=normalize)
    best = f"; best dev Spearman {result.best['spearman']:.2f}" if result.best else ""
    sys.stderr.write(f"trained {result.steps} steps ({result.epochs:.2f} epochs) in {result.seconds:.0f} s{best}; saved to {output}\n")


@train_app.command("simcse")
def train_simcse_cmd(
    train: str = typer.Option(..., "--train", help="Unlabelled sentences: one a line, or any dataset (its sentences)."),
    dev: str | None = typer.Option(None, "--dev", help="Scored dev pairs; Spearman picks the best checkpoint."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the trained model."),
    format: str | None = typer.Option(None, "--format", "-f", help="txt|stsb|sick|... (inferred when omitted)."),
    dev_format: str | None = typer.Option(None, "--dev-format"),
    temperature: float = typer.Option(0.05, "--temperature"),
    epochs: float = typer.Option(1.0, "--epochs"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=2),
    pooling: str = typer.Option("mean", "--pooling", "-p", help="cls | mean | max | mean_sqrt_len"),
    model: str | None = ModelOpt,
    lr: float = typer.Option(3e-5, "--lr"),
    seed: int = typer.Option(42, "--seed"),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1),
    eval_every: int | None = typer.Option(None, "--eval-every", min=1),
):
    """Unsupervised SimCSE: contrastive training on unlabelled sentences, dropout as the augmentation."""
    from bertkit.data import read_dataset, read_scored_pairs, sentences_of
    from bertkit.train.simcse import train_simcse

    sentences = sentences_of(read_dataset(train, format))
    dev_pairs = read_scored_pairs(dev, dev_format) if dev else None
    enc = load_encoder(model)
    config = sbert_train_config(epochs, batch_size, lr, 0.1, seed, max_steps, eval_every)
    result = train_simcse(enc.model, enc.tokenizer, sentences, dev_pairs, output, pooling=pooling,
                          temperature=temperature, config=config)
    best = f"; best dev Spearman {result.best['spearman']:.2f}" if result.best else ""
    sys.stderr.write(f"SimCSE: {result.steps} steps on {len(sentences)} sentences in {result.seconds:.0f} s{best}; saved to {output}\n")

# ---- classification, NER, pretraining (issue 4) ------------------------------------------------------------

EpochsOpt = typer.Option(3.0, "--epochs", help="Passes over the training set (fractions allowed).")
MaxStepsOpt = typer.Option(None, "--max-steps", min=1, help="Stop after N optimizer steps (overrides --epochs).")
MinutesOpt = typer.Option(None, "--minutes", min=0.01, help="Stop after M minutes of training (then evaluate and save).")
BatchOpt = typer.Option(32, "--batch-size", "-b", min=1)
LrOpt = typer.Option(5e-5, "--lr", help="Peak learning rate (AdamW, linear warm-up and decay).")
AccumOpt = typer.Option(1, "--grad-accum", min=1, help="Micro-batches per optimizer step.")
SeedOpt = typer.Option(42, "--seed")
EvalEveryOpt = typer.Option(None, "--eval-every", min=1, help="Evaluate every N steps (default: each epoch).")
CkptOpt = typer.Option(200, "--checkpoint-every", min=1, help="Write a resumable checkpoint every N steps.")
MaxLenOpt = typer.Option(128, "--max-length", min=2, help="Cut training inputs to this many tokens.")


def task_train_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every):
    from bertkit.train.loop import TrainConfig

    return TrainConfig(epochs=epochs, max_steps=max_steps, minutes=minutes, batch_size=batch_size, lr=lr,
                       grad_accum=grad_accum, seed=seed, eval_every=eval_every, checkpoint_every=checkpoint_every)


def run_facts(r) -> dict:
    """Steps, time, stop reason, truncation counts and output folder of a trainer's result."""
    return {"steps": r.train.steps, "seconds": round(r.train.seconds, 1), "stopped_by": r.train.stopped_by,
            **{f"truncated_{k}": v for k, v in r.truncated.items()}, "output": str(r.output)}


def report(title: str, rows: dict) -> None:
    """Results on stderr (one line each), a JSON summary on stdout for scripts."""
    for k, v in rows.items():
        sys.stderr.write(f"{title}: {k}: {v:.2f}\n" if isinstance(v, float) else f"{title}: {k}: {v}\n")
    sys.stdout.write(json.dumps(rows) + "\n")


@train_app.command("classify")
def train_classify(
    train: Path = typer.Option(..., "--train", help="Training file (sst2, mrpc, sick, agnews, stsb, tsv, jsonl, csv)."),
    dev: Path | None = typer.Option(None, "--dev", help="Dev file; without it --dev-fraction of --train is held out."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the best model (BertForSequenceClassification)."),
    format: str | None = typer.Option(None, "--format", "-f", help="Input format (default: inferred)."),
    dev_format: str | None = typer.Option(None, "--dev-format", help="Format of --dev when it differs."),
    pooling: str = typer.Option("pooler", "--pooling", "-p", help="pooler (as transformers) | cls | mean | max | mean_sqrt_len"),
    regression: bool = typer.Option(False, "--regression", help="Predict the pair score (MSE) instead of the label."),
    class_weights: str | None = typer.Option(None, "--class-weights", help="balanced | none | w1,w2,... (label order)."),
    dev_fraction: float = typer.Option(0.1, "--dev-fraction", help="Held-out share of --train when no --dev."),
    freeze_embeddings: bool = typer.Option(False, "--freeze-embeddings", help="Keep word embeddings fixed (faster on CPU)."),
    model: str | None = ModelOpt,
    epochs: float = EpochsOpt, max_steps: int | None = MaxStepsOpt, minutes: float | None = MinutesOpt,
    batch_size: int = BatchOpt, lr: float = LrOpt, grad_accum: int = AccumOpt, seed: int = SeedOpt,
    eval_every: int | None = EvalEveryOpt, checkpoint_every: int = CkptOpt, max_length: int = MaxLenOpt,
):
    """Fine-tune a [CLS]/pooler (or pooled) classifier on single texts or sentence pairs; keep the best on dev."""
    from bertkit.train.classify import train_classifier

    config = task_train_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every)
    r = train_classifier(train, dev, output, fmt=format, dev_format=dev_format, model=model, pooling=pooling,
                         regression=regression, class_weights=class_weights, max_length=max_length,
                         dev_fraction=dev_fraction, freeze_embeddings=freeze_embeddings, config=config)
    report("classify", {**r.dev_metrics, "labels": ",".join(r.labels), "train_examples": r.train_examples,
                        "dev_examples": r.dev_examples, **run_facts(r)})


@train_app.command("ner")
def train_ner_cmd(
    train: Path = typer.Option(..., "--train", help="CoNLL file: `token ... TAG` a line, blank line between sentences."),
    dev: Path = typer.Option(..., "--dev", help="CoNLL dev file (entity F1 picks the kept model)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the best model (BertForTokenClassification)."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip malformed lines (with a warning) instead of failing."),
    freeze_embeddings: bool = typer.Option(False, "--freeze-embeddings", help="Keep word embeddings fixed (faster on CPU)."),
    model: str | None = ModelOpt,
    epochs: float = EpochsOpt, max_steps: int | None = MaxStepsOpt, minutes: float | None = MinutesOpt,
    batch_size: int = BatchOpt, lr: float = LrOpt, grad_accum: int = AccumOpt, seed: int = SeedOpt,
    eval_every: int | None = EvalEveryOpt, checkpoint_every: int = CkptOpt, max_length: int = MaxLenOpt,
):
    """Fine-tune a token classifier (NER) on BIO-tagged CoNLL data; keep the best by dev entity F1."""
    from bertkit.train.ner import train_ner

    config = task_train_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every)
    r = train_ner(train, dev, output, model=model, max_length=max_length, freeze_embeddings=freeze_embeddings,
                  skip_bad=skip_bad_rows, config=config)
    report("ner", {**r.dev_metrics, "labels": ",".join(r.labels), "train_sentences": r.train_sentences,
                   "dev_sentences": r.dev_sentences, **run_facts(r)})


@app.command()
def pretrain(
    corpus: list[str] = typer.Option(..., "--corpus", help="Text (one sentence a line, blank line between documents) or any dataset file; repeat."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the model with its MLM + NSP heads (BertForPreTraining)."),
    init: str = typer.Option("default", "--init", help="default (packaged model) | PATH or hub id | none (from scratch)."),
    size: str = typer.Option("tiny", "--size", help="From scratch: tiny (2x128) | mini (4x256) | small (4x512) | base (12x768)."),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="From scratch: whose vocabulary to use (default: packaged)."),
    heldout: float = typer.Option(0.05, "--heldout", help="Share of documents held out for MLM / NSP accuracy."),
    freeze_embeddings: bool = typer.Option(False, "--freeze-embeddings", help="Keep word embeddings (= MLM decoder) fixed."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the corpus."),
    max_steps: int | None = MaxStepsOpt, minutes: float | None = MinutesOpt,
    batch_size: int = BatchOpt, lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate."),
    grad_accum: int = AccumOpt, seed: int = SeedOpt, eval_every: int | None = EvalEveryOpt,
    checkpoint_every: int = CkptOpt, max_length: int = MaxLenOpt,
):
    """Masked-LM + next-sentence pretraining, from scratch or continuing a checkpoint; reports held-out accuracy."""
    from bertkit.train.pretrain import pretrain as run_pretrain

    if not 0 < heldout < 1:
        raise UsageError(f"--heldout {heldout}: give a share between 0 and 1, e.g. 0.05")
    config = task_train_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every)
    r = run_pretrain(corpus, output, init=init, size=size, tokenizer=tokenizer, max_length=max_length, heldout=heldout,
                     freeze_embeddings=freeze_embeddings, config=config)
    report("pretrain", {**{f"before_{k}": v for k, v in r.before.items()}, **r.after,
                        "unigram_baseline_accuracy": r.unigram_baseline, "unigram_token": r.unigram_token,
                        "train_pairs": r.train_pairs, "heldout_pairs": r.heldout_pairs, "steps": r.train.steps,
                        "seconds": round(r.train.seconds, 1), "stopped_by": r.train.stopped_by, "output": str(output)})


@app.command()
def predict(
    folder: Path = typer.Argument(..., help="A model folder saved by `bertkit train classify` or `train ner`."),
    data: str = typer.Argument(..., help="A data file (labels, if present, are scored) or one text."),
    pair: str | None = typer.Option(None, "--pair", help="Second text, when DATA is one text of a pair."),
    format: str | None = typer.Option(None, "--format", "-f", help="Format of DATA when it is a file."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write predictions as JSON lines here."),
):
    """Predict with a fine-tuned classifier or token classifier (NER: entities with character offsets)."""
    from bertkit.model import architecture
    from bertkit.predict import CLASSIFIER, TAGGER, predict_classifier, predict_tagger

    arch = architecture(folder)
    is_file = Path(data).is_file()
    if arch == TAGGER:
        rows, metrics = predict_tagger(folder, data, is_file)
    elif arch == CLASSIFIER:
        rows, metrics = predict_classifier(folder, data, is_file, format, pair)
    else:
        raise UsageError(f"{folder} is not a fine-tuned classifier (architectures={arch or 'none'}); "
                         "make one with `bertkit train classify` or `bertkit train ner`")
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    if output is not None:
        output.write_text("".join(lines), encoding="utf-8")
    else:
        sys.stdout.write("".join(lines))
    for k, v in metrics.items():
        sys.stderr.write(f"predict: {k}: {v:.2f}\n" if isinstance(v, float) else f"predict: {k}: {v}\n")


# ---- speed: precision / backend options live on the commands above (issue 5) -------------------------------

# ---- serve (issue 6) ---------------------------------------------------------------------------------------


@app.command()
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
    precision: str | None = typer.Option(None, "--precision", help="Passed to Encoder.load (issue 5)."),
    backend: str | None = typer.Option(None, "--backend", help="Passed to Encoder.load (issue 5)."),
):
    """Serve embeddings (OpenAI-compatible /v1/embeddings) and every BERT output over HTTP, with a playground at /."""
    try:
        from bertkit.serve import Limits, create_app, run_server, set_threads
    except ImportError as e:
        raise UsageError(f"serving needs the 'serve' extra ({e.name} is missing): pip install 'bertkit[serve]'") from None

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
    app_ = create_app(load_encoder_for_serving(model, precision, backend), limits, index=search_index, whitening=white)
    run_server(app_, host=host, port=port, graceful_timeout=graceful_timeout, log_level=log_level)


def load_encoder_for_serving(model: str | None, precision: str | None, backend: str | None):
    """Encoder.load with --precision/--backend passed through where this Encoder.load takes them (issue 5)."""
    import inspect

    from bertkit.encoder import Encoder

    extra = {k: v for k, v in {"precision": precision, "backend": backend}.items() if v is not None}
    accepted = inspect.signature(Encoder.load).parameters
    for name in extra:
        if name not in accepted:
            raise UsageError(f"--{name} is not supported by this bertkit's Encoder.load; drop the option")
    return Encoder.load(model, **extra)


# ---- corpus embedding, index, search (issue 7) -------------------------------------------------------------


index_app = typer.Typer(no_args_is_help=True, help="Vector indexes over embed-corpus output.")
app.add_typer(index_app, name="index")


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
        raise UsageError(f"--index {path} was embedded with --model {built_with or '(the packaged default)'}; "
                         "serve it with that --model")
    return idx


@app.command("embed-corpus")
def embed_corpus(
    input: Path = typer.Argument(..., help="Corpus: .jsonl / .csv / .tsv / .parquet / .txt (one text a line)."),
    output_dir: Path = typer.Argument(..., help="Folder for the Parquet shards and manifest.json."),
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
    chunk_tokens: int | None = typer.Option(None, "--chunk-tokens", min=1, help="Split texts into windows of N wordpieces."),
    chunk_overlap: int = typer.Option(0, "--chunk-overlap", min=0, help="Wordpieces shared by neighbouring windows."),
    keep_text: bool = typer.Option(False, "--keep-text", help="Store the text (or chunk text) beside its vector."),
    shard_rows: int = typer.Option(4096, "--shard-rows", min=1, help="Input rows per output shard."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip rows with no text instead of stopping."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output of a different job in OUTPUT_DIR."),
    actors: int | None = typer.Option(None, "--actors", min=1, help="Ray: model actors (default: 1 per GPU, else per CPU)."),
    cpus_per_actor: int = typer.Option(1, "--cpus-per-actor", min=1, help="Ray: CPUs (torch threads) per actor."),
    precision: str | None = typer.Option(None, "--precision", help="fp32 (exact, default) | bf16 | int8."),
    backend: str | None = typer.Option(None, "--backend", help="torch (default) | onnx (ONNX Runtime)."),
):
    """Embed a corpus into Parquet shards (id, text hash, embedding) with a manifest; rerun to resume."""
    from bertkit.corpus import CorpusJob, EmbedOptions
    from bertkit.corpus import embed_corpus as run
    from bertkit.pooling import check_pooling

    check_pooling(pooling, None)
    options = EmbedOptions(model=model, pooling=pooling, normalize=normalize, batch_size=batch_size,
                           chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, keep_text=keep_text,
                           precision=precision, backend=backend)
    job = CorpusJob(input, output_dir, text_column=text_column, id_column=id_column, format=format, header=header,
                    shard_rows=shard_rows, skip_bad_rows=skip_bad_rows, overwrite=overwrite, options=options)
    extra = {"actors": actors, "cpus_per_actor": cpus_per_actor} if engine == "ray" else {}
    result = run(job, engine=engine, address=address, progress=sys.stderr.isatty(), **extra)
    sys.stderr.write(
        f"embed-corpus: {result.rows} vectors in {result.shards} shard(s) in {result.output_dir} "
        f"({result.written} embedded now, {result.shards - result.written} already done, {result.skipped} rows skipped)\n"
    )


@index_app.command("build")
def index_build(
    embeddings_dir: Path = typer.Argument(..., help="An embed-corpus output folder."),
    output: Path = typer.Option(..., "--output", "-o", help="Index folder to create."),
    kind: str = typer.Option("exact", "--kind", help="exact (brute force) or hnsw (FAISS, approximate)."),
    metric: str = typer.Option("cosine", "--metric", help="cosine or dot."),
    m: int = typer.Option(32, "--m", min=2, help="hnsw: links per node."),
    ef_construction: int = typer.Option(200, "--ef-construction", min=1, help="hnsw: build-time beam width."),
    ef_search: int = typer.Option(128, "--ef-search", min=1, help="hnsw: default query-time beam width."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index."),
):
    """Build an exact or HNSW index over embed-corpus output, persisted to a folder."""
    from bertkit.index import build_index

    out = build_index(embeddings_dir, output, kind=kind, metric=metric, m=m, ef_construction=ef_construction,
                      ef_search=ef_search, overwrite=overwrite)
    sys.stderr.write(f"index build: {kind} index written to {out}\n")


@app.command()
def search(
    index: Path = typer.Argument(..., help="An index folder from `bertkit index build`."),
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="How many results."),
    model: str | None = typer.Option(None, "--model", "-m", help="Query model (default: the corpus's model)."),
    ef_search: int | None = typer.Option(None, "--ef-search", min=1, help="hnsw: beam width (recall vs speed)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per hit."),
    show_text: bool = typer.Option(True, "--text/--no-text", help="Show texts (stored, or read back from the input)."),
):
    """The K nearest corpus items to QUERY: rank, score, id, chunk offsets and text."""
    from bertkit.corpus import EmbedOptions
    from bertkit.corpus import load_encoder as load_corpus_encoder
    from bertkit.index import Index

    idx = Index.load(index, ef_search=ef_search)
    e = idx.info["embedding"]  # the query is encoded with the corpus's model, precision and backend
    options = EmbedOptions(model=model or e["model"], precision=e.get("precision"), backend=e.get("backend"))
    (hits,) = idx.search_text(load_corpus_encoder(options), query, k=k)
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


def main() -> None:
    from bertkit.errors import BertkitError

    logging.basicConfig(
        level=logging.WARNING, format="bertkit: %(levelname)s: %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger("bertkit").setLevel(logging.INFO if os.environ.get("BERTKIT_VERBOSE") else logging.WARNING)
    try:
        app()
    except (BertkitError, UsageError, ValueError) as e:
        sys.stderr.write(f"bertkit: error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("bertkit: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
