"""The `bertkit` command tree and its entry point.

Every command lives in the module of its group (representations, evaluation, training, serving, corpus) as a
plain function whose parameters are its options; this module registers them, so the whole tree reads here.
A new command: write the function in its group's module, add one line below.

Error policy of `main()`:
- a `BertkitError` (a user mistake: bad option, missing file, wrong model folder, ...) prints one line,
  "bertkit: error: ...", on stderr and exits 2, like typer's own usage errors (a bad option type);
  with BERTKIT_DEBUG=1 its traceback is printed too;
- Ctrl-C exits 130;
- any other exception is a bug in bertkit: the traceback is printed, then one line saying so, and exit 1.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import typer

from bertkit.cli import corpus, evaluation, exporting, representations, serving, training

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Every representation a BERT model has to offer, and which one to use.",
)
train_app = typer.Typer(no_args_is_help=True, help="Train or fine-tune a model (Sentence-BERT, SimCSE, ...).")
evaluate_app = typer.Typer(no_args_is_help=True, help="Measure a model on a labelled set.")
index_app = typer.Typer(no_args_is_help=True, help="Vector indexes over embed-corpus output.")
app.add_typer(train_app, name="train")  # groups are listed after the commands, in this order
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(index_app, name="index")

# representations: what a model makes of a text
app.command("encode")(representations.encode)
app.command("tokens")(representations.tokens)
app.command("fill-mask")(representations.fill_mask)
app.command("expand")(representations.expand)
app.command("nsp")(representations.nsp)
app.command("similarity")(representations.similarity)
app.command("inspect")(representations.inspect)
app.command("demo")(representations.demo)
# evaluation: which representation to use
evaluate_app.command("sts")(evaluation.evaluate_sts_cmd)
app.command("compare")(evaluation.compare)
app.command("report")(evaluation.report)
app.command("whiten")(evaluation.whiten)
app.command("calibrate")(evaluation.calibrate)
# training
train_app.command("sbert")(training.train_sbert)
train_app.command("simcse")(training.train_simcse_cmd)
train_app.command("classify")(training.train_classify)
train_app.command("ner")(training.train_ner_cmd)
train_app.command("cross-encoder")(training.train_cross_encoder_cmd)
app.command("pretrain")(training.pretrain)
app.command("predict")(training.predict)
app.command("rerank")(training.rerank)
# serving
app.command("serve")(serving.serve)
# export: ONNX graphs ahead of time (then `--backend onnx` runs without torch)
app.command("export")(exporting.export)
# corpus: embed, index, search
app.command("embed-corpus")(corpus.embed_corpus)
index_app.command("build")(corpus.index_build)
app.command("search")(corpus.search)


def main() -> None:
    """The `bertkit` console script: run the command, then apply the error policy above."""
    from bertkit.errors import BertkitError

    logging.basicConfig(
        level=logging.WARNING, format="bertkit: %(levelname)s: %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger("bertkit").setLevel(logging.INFO if os.environ.get("BERTKIT_VERBOSE") else logging.WARNING)
    try:
        app()
    except BertkitError as e:
        if os.environ.get("BERTKIT_DEBUG"):
            traceback.print_exc()
        sys.stderr.write(f"bertkit: error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("bertkit: interrupted\n")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001  (the top level: every other exception is a bug, shown in full)
        if isinstance(e, ModuleNotFoundError) and e.name == "torch":  # an install without torch (`bertkit[onnx]`)
            sys.stderr.write("bertkit: error: this command needs torch, which is not installed: pip install "
                             "'bertkit[torch]' (only encode / serve / embed-corpus --backend onnx run without it)\n")
            sys.exit(2)
        traceback.print_exc()
        sys.stderr.write(f"bertkit: internal error ({type(e).__name__}): this is a bug in bertkit, not a mistake in "
                         "the input; please report it with the traceback above\n")
        sys.exit(1)
