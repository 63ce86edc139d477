"""Commands that train and use trained models: `train sbert|simcse|classify|ner`, `pretrain` and `predict`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from bertkit.cli.common import FormatOpt, ModelOpt, SkipRowsOpt, load_encoder
from bertkit.errors import OptionError

# Options shared by the classifier, NER and pretraining commands.
EpochsOpt = typer.Option(3.0, "--epochs", help="Passes over the training set (fractions allowed).")
MaxStepsOpt = typer.Option(None, "--max-steps", min=1, help="Stop after N optimizer steps (overrides --epochs).")
MinutesOpt = typer.Option(None, "--minutes", min=0.01,
                          help="Stop after M minutes of training (then evaluate and save).")
BatchOpt = typer.Option(32, "--batch-size", "-b", min=1)
LrOpt = typer.Option(5e-5, "--lr", help="Peak learning rate (AdamW, linear warm-up and decay).")
AccumOpt = typer.Option(1, "--grad-accum", min=1, help="Micro-batches per optimizer step.")
SeedOpt = typer.Option(42, "--seed")
EvalEveryOpt = typer.Option(None, "--eval-every", min=1, help="Evaluate every N steps (default: each epoch).")
CkptOpt = typer.Option(200, "--checkpoint-every", min=1, help="Write a resumable checkpoint every N steps.")
MaxLenOpt = typer.Option(128, "--max-length", min=2, help="Cut training inputs to this many tokens.")
FreezeOpt = typer.Option(False, "--freeze-embeddings", help="Keep word embeddings fixed (faster on CPU).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an --output folder that holds other files "
                            "(the model is written to a temporary folder, then renamed into place).")


def check_output(output: Path, overwrite: bool) -> None:
    """Before any work: --output is a new or empty folder, or this run's own unfinished checkpoint (which the
    run resumes), unless --overwrite; and its place takes new files."""
    from bertkit.outputs import check_output_folder
    from bertkit.train.loop import is_own_checkpoint

    check_output_folder(output, overwrite=overwrite, own=is_own_checkpoint)


def check_silver_options(silver_from, silver_k: int | None, silver_random: int = 0) -> None:
    """--silver-k / --silver-random mean nothing without --silver-from: refused, not ignored."""
    if silver_from is None and (silver_k is not None or silver_random):
        given = "--silver-random" if silver_random else "--silver-k"
        raise OptionError(f"{given} is for --silver-from MODEL (the model that scores the extra pairs); "
                          f"add --silver-from or drop {given}")


def sbert_train_config(epochs: float, batch_size: int, lr: float, warmup: float, seed: int, max_steps: int | None,
                       eval_every: int | None):
    """The training loop's settings for Sentence-BERT and SimCSE: the best checkpoint by dev Spearman."""
    from bertkit.train.loop import TrainConfig

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup_ratio=warmup, seed=seed,
                         max_steps=max_steps, eval_every=eval_every, best_metric="spearman")
    config.validate()  # a bad --lr / --epochs / --warmup: one line now, before the data and model are read
    return config


def train_sbert(
    train: list[str] = typer.Option(..., "--train", help="Training pairs (STS-B, SICK, MRPC, csv/tsv/jsonl); repeat "
                                    "for several datasets."),
    dev: list[str] | None = typer.Option(None, "--dev",
                                         help="Scored dev pairs; repeat: the mean Spearman picks the best."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the trained model."),
    format: str | None = FormatOpt,
    dev_format: str | None = typer.Option(None, "--dev-format", help="Format of --dev (inferred when omitted)."),
    loss: list[str] | None = typer.Option(None, "--loss", help="cosine (default) | cosent | angle | mnrl | softmax; "
                                          "one for all --train files or one per file."),
    recipe: str | None = typer.Option(None, "--recipe",
                                      help="best: each file's loss from its kind, tuned settings (see README)."),
    sampling: str | None = typer.Option(None, "--sampling", help="Several --train: proportional (default) | "
                                        "round-robin; each batch from one dataset."),
    matryoshka: str | None = typer.Option(None, "--matryoshka",
                                          help="Also train truncated vectors, e.g. 384,256,128,64."),
    minutes: float | None = typer.Option(None, "--minutes",
                                         help="Stop after M minutes of training (then evaluate and save)."),
    epochs: float | None = typer.Option(None, "--epochs",
                                        help="Passes over the training set (default 1; recipe: its own)."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", min=1,
                                          help="Pairs per batch (default 16; recipe: its own)."),
    pooling: str = typer.Option("mean", "--pooling", "-p", help="cls | mean | max | mean_sqrt_len"),
    model: str | None = ModelOpt,
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 2e-5; recipe: its own)."),
    warmup: float | None = typer.Option(None, "--warmup", help="Warm-up fraction of the steps (default 0.1)."),
    seed: int = typer.Option(42, "--seed"),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop after N steps (overrides --epochs)."),
    eval_every: int | None = typer.Option(None, "--eval-every", min=1,
                                          help="Evaluate every N steps (default: each epoch)."),
    normalize: bool = typer.Option(False, "--normalize", help="Add a Normalize module to the saved model."),
    silver_from: Path | None = typer.Option(None, "--silver-from", help="Augmented SBERT: a cross-encoder folder that "
                                            "scores nearest-neighbour re-pairings of the training sentences (one more "
                                            "CoSENT dataset)."),
    silver_k: int | None = typer.Option(None, "--silver-k", min=1,
                                        help="Neighbours per sentence for --silver-from (default 1)."),
    skip_bad_rows: bool = SkipRowsOpt,
    overwrite: bool = OverwriteOpt,
):
    """Fine-tune a siamese bi-encoder (Sentence-BERT) and save a bertkit / sentence-transformers / transformers folder."""  # noqa: E501 (its --help line, kept whole)
    from bertkit.train.sbert import ST_POOLINGS, train_sentence_tasks
    from bertkit.train.sbert_data import SAMPLINGS
    from bertkit.train.sbert_recipe import RECIPES, parse_dims, plan_tasks, read_devs

    if pooling not in ST_POOLINGS:
        raise OptionError(f"--pooling {pooling}: Sentence-BERT training uses one of {', '.join(ST_POOLINGS)}")
    if minutes is not None and minutes <= 0:
        raise OptionError(f"--minutes {minutes:g}: give a training budget above 0 minutes, e.g. --minutes 10")
    if sampling is not None and sampling not in SAMPLINGS:
        raise OptionError(f"--sampling {sampling}: choose one of {', '.join(SAMPLINGS)}")
    check_silver_options(silver_from, silver_k)
    dims = parse_dims(matryoshka)
    tasks = plan_tasks(train, loss, recipe, format, skip_bad_rows)
    devs = read_devs(dev, dev_format, skip_bad_rows) if dev else None
    r = RECIPES[recipe] if recipe else None
    config = sbert_train_config(epochs or (r.epochs if r else 1.0), batch_size or (r.batch_size if r else 16),
                                lr if lr is not None else (r.lr if r else 2e-5),
                                warmup if warmup is not None else (r.warmup if r else 0.1), seed, max_steps,
                                eval_every)
    check_output(output, overwrite)
    enc = load_encoder(model)
    if silver_from is not None:
        from bertkit.train.sbert import TrainTask
        from bertkit.train.sbert_silver import silver_pairs

        every = list({(p.a, p.b): p for t in tasks for p in t.pairs}.values())
        silver = silver_pairs(enc.model, enc.tokenizer, every, silver_from, pooling=pooling, k=silver_k or 1)
        tasks.append(TrainTask(f"silver pairs scored by {silver_from}", silver, "cosent"))
    config.minutes, config.decay_by_time = minutes, minutes is not None  # the schedule fits the budget
    result = train_sentence_tasks(enc.model, enc.tokenizer, tasks, devs, output, pooling=pooling, config=config,
                                  normalize=normalize, matryoshka=dims,
                                  sampling=sampling or (r.sampling if r else "proportional"))
    best = f"; best dev Spearman {result.best['spearman']:.2f}" if result.best else ""
    sys.stderr.write(f"trained {result.steps} steps ({result.epochs:.2f} epochs) in {result.seconds:.0f} s, stopped by "
                     f"{result.stopped_by}{best}; saved to {output}\n")
    if result.best:
        sys.stdout.write(json.dumps({**result.best, "steps": result.steps, "seconds": round(result.seconds, 1),
                                     "stopped_by": result.stopped_by, "output": str(output)}) + "\n")


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
    overwrite: bool = OverwriteOpt,
):
    """Unsupervised SimCSE: contrastive training on unlabelled sentences, dropout as the augmentation."""
    from bertkit.data import read_dataset, read_scored_pairs, sentences_of
    from bertkit.train.simcse import train_simcse

    if not temperature > 0:
        raise OptionError(f"--temperature {temperature:g}: give a temperature above 0, e.g. 0.05")
    config = sbert_train_config(epochs, batch_size, lr, 0.1, seed, max_steps, eval_every)
    check_output(output, overwrite)
    sentences = sentences_of(read_dataset(train, format))
    dev_pairs = read_scored_pairs(dev, dev_format) if dev else None
    enc = load_encoder(model)
    result = train_simcse(enc.model, enc.tokenizer, sentences, dev_pairs, output, pooling=pooling,
                          temperature=temperature, config=config)
    best = f"; best dev Spearman {result.best['spearman']:.2f}" if result.best else ""
    sys.stderr.write(f"SimCSE: {result.steps} steps on {len(sentences)} sentences in {result.seconds:.0f} s{best}; "
                     f"saved to {output}\n")

def task_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every):
    """The training loop's settings for the classifier, NER and pretraining commands."""
    from bertkit.train.loop import TrainConfig

    config = TrainConfig(epochs=epochs, max_steps=max_steps, minutes=minutes, batch_size=batch_size, lr=lr,
                         grad_accum=grad_accum, seed=seed, eval_every=eval_every,
                         checkpoint_every=checkpoint_every)
    config.validate()  # a bad --lr / --epochs / --minutes: one line now, before the data and model are read
    return config


def run_facts(r) -> dict:
    """Steps, time, stop reason, truncation counts and output folder of a trainer's result."""
    return {"steps": r.train.steps, "seconds": round(r.train.seconds, 1), "stopped_by": r.train.stopped_by,
            **{f"truncated_{k}": v for k, v in r.truncated.items()}, "output": str(r.output)}


def report(title: str, rows: dict) -> None:
    """Results on stderr (one line each), a JSON summary on stdout for scripts."""
    for k, v in rows.items():
        sys.stderr.write(f"{title}: {k}: {v:.2f}\n" if isinstance(v, float) else f"{title}: {k}: {v}\n")
    sys.stdout.write(json.dumps(rows) + "\n")


def train_classify(
    train: Path = typer.Option(..., "--train", help="Training file (sst2, mrpc, sick, agnews, stsb, tsv, jsonl, csv)."),
    dev: Path | None = typer.Option(None, "--dev", help="Dev file; without it --dev-fraction of --train is held out."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Folder for the best model (BertForSequenceClassification)."),
    format: str | None = typer.Option(None, "--format", "-f", help="Input format (default: inferred)."),
    dev_format: str | None = typer.Option(None, "--dev-format", help="Format of --dev when it differs."),
    pooling: str = typer.Option("pooler", "--pooling", "-p",
                                help="pooler (as transformers) | cls | mean | max | mean_sqrt_len"),
    regression: bool = typer.Option(False, "--regression", help="Predict the pair score (MSE) instead of the label."),
    class_weights: str | None = typer.Option(None, "--class-weights",
                                             help="balanced | none | w1,w2,... (label order)."),
    dev_fraction: float = typer.Option(0.1, "--dev-fraction", help="Held-out share of --train when no --dev."),
    freeze_embeddings: bool = FreezeOpt,
    model: str | None = ModelOpt,
    epochs: float = EpochsOpt, max_steps: int | None = MaxStepsOpt, minutes: float | None = MinutesOpt,
    batch_size: int = BatchOpt, lr: float = LrOpt, grad_accum: int = AccumOpt, seed: int = SeedOpt,
    eval_every: int | None = EvalEveryOpt, checkpoint_every: int = CkptOpt, max_length: int = MaxLenOpt,
    overwrite: bool = OverwriteOpt,
):
    """Fine-tune a [CLS]/pooler (or pooled) classifier on single texts or sentence pairs; keep the best on dev."""
    from bertkit.train.classify import train_classifier

    if dev is None and not 0 < dev_fraction < 1:
        raise OptionError(f"--dev-fraction {dev_fraction:g}: give a share between 0 and 1, e.g. 0.1")
    config = task_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every)
    check_output(output, overwrite)
    r = train_classifier(train, dev, output, fmt=format, dev_format=dev_format, model=model, pooling=pooling,
                         regression=regression, class_weights=class_weights, max_length=max_length,
                         dev_fraction=dev_fraction, freeze_embeddings=freeze_embeddings, config=config)
    report("classify", {**r.dev_metrics, "labels": ",".join(r.labels), "train_examples": r.train_examples,
                        "dev_examples": r.dev_examples, **run_facts(r)})


def train_ner_cmd(
    train: Path = typer.Option(..., "--train",
                               help="CoNLL file: `token ... TAG` a line, blank line between sentences."),
    dev: Path = typer.Option(..., "--dev", help="CoNLL dev file (entity F1 picks the kept model)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the best model (BertForTokenClassification)."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows",
                                       help="Skip malformed lines (with a warning) instead of failing."),
    freeze_embeddings: bool = FreezeOpt,
    model: str | None = ModelOpt,
    epochs: float = EpochsOpt, max_steps: int | None = MaxStepsOpt, minutes: float | None = MinutesOpt,
    batch_size: int = BatchOpt, lr: float = LrOpt, grad_accum: int = AccumOpt, seed: int = SeedOpt,
    eval_every: int | None = EvalEveryOpt, checkpoint_every: int = CkptOpt, max_length: int = MaxLenOpt,
    overwrite: bool = OverwriteOpt,
):
    """Fine-tune a token classifier (NER) on BIO-tagged CoNLL data; keep the best by dev entity F1."""
    from bertkit.train.ner import train_ner

    config = task_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every)
    check_output(output, overwrite)
    r = train_ner(train, dev, output, model=model, max_length=max_length, freeze_embeddings=freeze_embeddings,
                  skip_bad=skip_bad_rows, config=config)
    report("ner", {**r.dev_metrics, "labels": ",".join(r.labels), "train_sentences": r.train_sentences,
                   "dev_sentences": r.dev_sentences, **run_facts(r)})


def pretrain(
    corpus: list[str] = typer.Option(..., "--corpus", help="Text (one sentence a line, blank line between documents) "
                                     "or any dataset file; repeat."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Folder for the model with its MLM + NSP heads (BertForPreTraining)."),
    init: str = typer.Option("default", "--init",
                             help="default (packaged model) | PATH or hub id | none (from scratch)."),
    size: str = typer.Option("tiny", "--size",
                             help="From scratch: tiny (2x128) | mini (4x256) | small (4x512) | base (12x768)."),
    tokenizer: str | None = typer.Option(None, "--tokenizer",
                                         help="From scratch: whose vocabulary to use (default: packaged)."),
    heldout: float = typer.Option(0.05, "--heldout", help="Share of documents held out for MLM / NSP accuracy."),
    freeze_embeddings: bool = typer.Option(False, "--freeze-embeddings",
                                           help="Keep word embeddings (= MLM decoder) fixed."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the corpus."),
    max_steps: int | None = MaxStepsOpt, minutes: float | None = MinutesOpt,
    batch_size: int = BatchOpt, lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate."),
    grad_accum: int = AccumOpt, seed: int = SeedOpt, eval_every: int | None = EvalEveryOpt,
    checkpoint_every: int = CkptOpt, max_length: int = MaxLenOpt, overwrite: bool = OverwriteOpt,
):
    """Masked-LM + next-sentence pretraining, from scratch or continuing a checkpoint; reports held-out accuracy."""
    from bertkit.train.pretrain import pretrain as run_pretrain

    if not 0 < heldout < 1:
        raise OptionError(f"--heldout {heldout}: give a share between 0 and 1, e.g. 0.05")
    config = task_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every)
    check_output(output, overwrite)
    r = run_pretrain(corpus, output, init=init, size=size, tokenizer=tokenizer, max_length=max_length, heldout=heldout,
                     freeze_embeddings=freeze_embeddings, config=config)
    report("pretrain", {**{f"before_{k}": v for k, v in r.before.items()}, **r.after,
                        "unigram_baseline_accuracy": r.unigram_baseline, "unigram_token": r.unigram_token,
                        "train_pairs": r.train_pairs, "heldout_pairs": r.heldout_pairs, "steps": r.train.steps,
                        "seconds": round(r.train.seconds, 1), "stopped_by": r.train.stopped_by, "output": str(output)})


def predict(
    folder: Path = typer.Argument(..., help="A model folder saved by `bertkit train classify` or `train ner`."),
    data: str = typer.Argument(..., help="A data file (labels, if present, are scored) or one text."),
    pair: str | None = typer.Option(None, "--pair", help="Second text, when DATA is one text of a pair."),
    format: str | None = typer.Option(None, "--format", "-f", help="Format of DATA when it is a file."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write predictions as JSON lines here."),
):
    """Predict with a fine-tuned classifier or token classifier (NER: entities with character offsets)."""
    from bertkit.heads.predict import CLASSIFIER, TAGGER, predict_classifier, predict_tagger
    from bertkit.model import architecture

    arch = architecture(folder)
    is_file = Path(data).is_file()
    if arch == TAGGER:
        rows, metrics = predict_tagger(folder, data, is_file)
    elif arch == CLASSIFIER:
        rows, metrics = predict_classifier(folder, data, is_file, format, pair)
    else:
        raise OptionError(f"{folder} is not a fine-tuned classifier (architectures={arch or 'none'}); "
                         "make one with `bertkit train classify` or `bertkit train ner`")
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    if output is not None:
        output.write_text("".join(lines), encoding="utf-8")
    else:
        sys.stdout.write("".join(lines))
    for k, v in metrics.items():
        sys.stderr.write(f"predict: {k}: {v:.2f}\n" if isinstance(v, float) else f"predict: {k}: {v}\n")


def train_cross_encoder_cmd(
    train: Path = typer.Option(..., "--train", help="Scored or 0/1-labelled pairs (STS-B, SICK, MRPC, csv/tsv/jsonl)."),
    dev: Path | None = typer.Option(None, "--dev", help="Scored dev pairs: Spearman picks the kept model."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Folder for the cross-encoder (BertForSequenceClassification)."),
    format: str | None = typer.Option(None, "--format", "-f", help="Input format (default: inferred)."),
    dev_format: str | None = typer.Option(None, "--dev-format", help="Format of --dev when it differs."),
    score_range: str | None = typer.Option(None, "--score-range",
                                           help="LO,HI mapped to [0, 1] (default: 0,1 or the training range)."),
    freeze_embeddings: bool = FreezeOpt,
    model: str | None = ModelOpt,
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the training set."),
    max_steps: int | None = MaxStepsOpt, minutes: float | None = MinutesOpt,
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1), lr: float = typer.Option(2e-5, "--lr"),
    grad_accum: int = AccumOpt, seed: int = SeedOpt, eval_every: int | None = EvalEveryOpt,
    checkpoint_every: int = CkptOpt, max_length: int = MaxLenOpt,
    symmetric: bool = typer.Option(False, "--symmetric",
                                   help="Train on each pair in both orders (for symmetric scores such as STS)."),
    silver_from: str | None = typer.Option(None, "--silver-from",
                                           help="A bi-encoder (e.g. `bertkit train sbert` output) that scores "
                                                "re-pairings of the training sentences: more pairs to learn from."),
    silver_k: int | None = typer.Option(None, "--silver-k",
                                        help="With --silver-from: nearest neighbours per sentence (default 2)."),
    silver_random: int = typer.Option(0, "--silver-random",
                                      help="With --silver-from: random pairs added (unrelated texts)."),
    overwrite: bool = OverwriteOpt,
):
    """Fine-tune a cross-encoder: each pair encoded together, [CLS]/pooler -> one logit, binary cross-entropy."""
    from bertkit.train.cross_encoder import train_cross_encoder

    check_silver_options(silver_from, silver_k, silver_random)
    bounds = None
    if score_range is not None:
        try:
            lo, hi = (float(x) for x in score_range.split(","))
        except ValueError:
            raise OptionError(f"--score-range {score_range!r}: give LO,HI, e.g. 0,5") from None
        bounds = (lo, hi)
    config = task_config(epochs, max_steps, minutes, batch_size, lr, grad_accum, seed, eval_every, checkpoint_every)
    config.decay_by_time = minutes is not None  # as for sbert: warm-up and decay fit the budget when it binds
    check_output(output, overwrite)
    r = train_cross_encoder(train, dev, output, fmt=format, dev_format=dev_format, model=model, score_range=bounds,
                            max_length=max_length, freeze_embeddings=freeze_embeddings, config=config,
                            symmetric=symmetric, silver_from=silver_from, silver_k=2 if silver_k is None else silver_k,
                            silver_random=silver_random)
    report("cross-encoder", {**r.dev_metrics, "score_range": f"{r.score_range[0]:g},{r.score_range[1]:g}",
                             "train_examples": r.train_examples, "silver_examples": r.silver_examples,
                             "dev_examples": r.dev_examples, **run_facts(r)})


def rerank(
    folder: Path = typer.Argument(..., help="A cross-encoder folder "
                                  "(`bertkit train cross-encoder`, sentence-transformers)."),
    query: str = typer.Argument(..., help="The query."),
    docs: list[str] | None = typer.Argument(None, help="Documents to rank (or --input)."),
    input: str | None = typer.Option(None, "--input", "-i", help="File with one document a line, or - for stdin."),
    top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, help="Show the best K."),
    raw_scores: bool = typer.Option(False, "--raw-scores", help="The logit instead of the probability."),
    truncate: bool = typer.Option(True, "--truncate/--no-truncate",
                                  help="Cut over-long pairs (default) or refuse them."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per document."),
):
    """Rank documents for a query with a cross-encoder: rank, score, position and text, best first."""
    from bertkit.cli.common import load_cross_encoder, read_lines

    if docs and input:
        raise OptionError("give documents as arguments or with --input, not both")
    items = read_lines(input, False, can_skip=False) if input is not None else list(docs or [])
    if not items:
        raise OptionError("no documents to rank: pass them after the query, or with --input FILE")
    ce = load_cross_encoder(folder)
    ranked = ce.rank(query, items, top_k=top_k, raw=raw_scores, truncate=truncate)
    for n, r in enumerate(ranked, start=1):
        if as_json:
            sys.stdout.write(json.dumps({"rank": n, **r, "text": items[r["index"]]}, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(f"{n:>3}  {r['score']:.4f}  {r['index']:>4}  {items[r['index']][:100]}\n")
    if ce.truncated:
        sys.stderr.write(f"rerank: {len(ce.truncated)} pair(s) over {ce.max_length} tokens were truncated\n")
