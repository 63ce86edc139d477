"""Which loss each Sentence-BERT training file gets, and the named recipes (`bertkit train sbert --recipe best`).

A file's kind decides its loss under a recipe:

| kind            | example                      | loss (recipe `best`)                                              |
|-----------------|------------------------------|-------------------------------------------------------------------|
| scores          | STS-B                        | cosine (MSE on the scaled score)                                   |
| scores + labels | SICK (relatedness + NLI tag) | cosine on the scores (each file's scale mapped to [0, 1] alone)  |
| labels          | NLI, MRPC                    | MNRL on the positive pairs (+ contradiction hard negatives)        |
| pairs           | (anchor, positive) files     | MNRL, in-batch negatives                                           |

Why these (docs/RESULTS.md, issue 20): cosine-MSE moved STS-B dev fastest; SICK's scores under CoSENT lifted
SICK trial most (85.5) but held STS-B dev at 88.3 even after 4 epochs, while cosine on both (each file's scores
scaled to [0, 1] on their own) kept STS-B at the single-dataset level (89.2 after 1 epoch) with SICK at 83.3;
MNRL with contradiction hard negatives on SICK's labels lowered SICK relatedness (SICK rates a sentence and its
negation as related, so pushing them apart fights the relatedness scale).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bertkit.data import SentencePair, read_dataset, read_scored_pairs
from bertkit.data.infer import PAIR_FORMATS, infer_format
from bertkit.errors import InputError, OptionError
from bertkit.train.losses import LOSSES, SCORED_LOSSES
from bertkit.train.sbert import TrainTask
from bertkit.train.sbert_data import POSITIVE_LABELS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    scored_loss: str = "cosine"  # moved STS-B fastest (e8, e12); the acceptance's binding number
    labelled_loss: str = "mnrl"
    pairs_loss: str = "mnrl"
    scored_labelled: tuple[str, ...] = ("cosine",)  # SICK: a task per loss; CoSENT cost STS-B 1 point, MNRL hurt SICK
    batch_size: int = 16  # the settings of the measured runs (docs/RESULTS.md, issue 20)
    lr: float = 2e-5
    warmup: float = 0.1
    epochs: float = 4.0  # the most; --minutes usually stops the run first (learning rate decays to the budget)
    sampling: str = "proportional"


RECIPES = {"best": Recipe()}


def read_train_pairs(path: str, fmt: str | None, skip_bad: bool) -> list[SentencePair]:
    """A training file's sentence pairs, or one clear line on why it has none."""
    if not str(path).startswith("hf:") and not Path(path).is_file():
        raise InputError(f"--train {path}: no such file")
    fmt = fmt or ("csv" if str(path).startswith("hf:") else infer_format(path))
    if fmt not in PAIR_FORMATS:
        raise InputError(f"--train {path}: its format is read as {fmt!r}, not sentence pairs; pass --format "
                         f"({', '.join(PAIR_FORMATS)}) or give STS-B, SICK, MRPC or a csv/tsv/jsonl pair file")
    pairs = read_dataset(path, fmt, skip_bad=skip_bad)
    if not pairs or not isinstance(pairs[0], SentencePair):
        raise InputError(f"--train {path} holds no sentence pairs; give STS-B, SICK, MRPC or a pair file")
    return pairs


def kind_of(pairs: Sequence[SentencePair]) -> tuple[bool, bool]:
    """(every pair scored on a graded scale, every pair labelled with some positive label). A 0/1 "score"
    (MRPC's quality) is a label, not a grade."""
    scored = all(p.score is not None for p in pairs) and len({p.score for p in pairs}) > 2
    labelled = all(p.label is not None for p in pairs) and any(p.label.lower() in POSITIVE_LABELS for p in pairs)
    return scored, labelled


def recipe_tasks(name: str, pairs: Sequence[SentencePair], recipe: Recipe) -> list[TrainTask]:
    """The tasks a recipe makes of one file, from its kind."""
    scored, labelled = kind_of(pairs)
    if scored and labelled:
        return [TrainTask(f"{name} ({loss})", pairs, loss) for loss in recipe.scored_labelled]
    if scored:
        return [TrainTask(name, pairs, recipe.scored_loss)]
    return [TrainTask(name, pairs, recipe.labelled_loss if labelled else recipe.pairs_loss)]


def plan_tasks(train: Sequence[str], losses: Sequence[str] | None, recipe: str | None, fmt: str | None = None,
               skip_bad: bool = False) -> list[TrainTask]:
    """The training tasks of `bertkit train sbert`: one per --train file with its --loss (one for all, or one
    per file), or the recipe's choice per file kind."""
    if recipe is not None and recipe not in RECIPES:
        raise OptionError(f"--recipe {recipe}: choose one of {', '.join(RECIPES)}")
    if recipe is not None and losses:
        raise OptionError(f"--recipe {recipe} picks each file's loss from its kind; drop --loss (or drop --recipe)")
    losses = list(losses or ["cosine"])
    for loss in losses:
        if loss not in LOSSES:
            raise OptionError(f"--loss {loss}: choose one of {', '.join(LOSSES)}")
    if len(losses) not in (1, len(train)):
        raise OptionError(f"{len(losses)} --loss for {len(train)} --train files: give one (for all) or one per file")
    tasks: list[TrainTask] = []
    for k, path in enumerate(train):
        pairs = read_train_pairs(path, fmt, skip_bad)
        if recipe is not None:
            tasks += recipe_tasks(str(path), pairs, RECIPES[recipe])
            continue
        loss = losses[k] if len(losses) > 1 else losses[0]
        if loss in SCORED_LOSSES and any(p.score is None for p in pairs):
            raise InputError(f"--train {path}: --loss {loss} needs a score on every pair, this file has labels or "
                             "bare pairs; use --loss mnrl (or softmax for class labels)")
        if loss == "softmax" and any(p.label is None for p in pairs):
            raise InputError(f"--train {path}: --loss softmax needs a class label on every pair, this file has "
                             "scores or bare pairs; use --loss cosent, angle or cosine")
        tasks.append(TrainTask(str(path), pairs, loss))
    for t in tasks:
        log.info("train %s with the %s loss (%d pairs)", t.name, t.loss, len(t.pairs))
    return tasks


def read_devs(paths: Sequence[str], fmt: str | None = None, skip_bad: bool = False) -> dict[str, list[SentencePair]]:
    """Scored dev sets by name (the path as given)."""
    return {str(p): read_scored_pairs(p, fmt, skip_bad=skip_bad) for p in paths}


def parse_dims(text: str | None, hidden: int | None = None) -> list[int] | None:
    """--matryoshka 384,256,128,64 -> [384, 256, 128, 64]."""
    if not text:
        return None
    try:
        dims = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OptionError(f"--matryoshka {text!r}: give widths separated by commas, e.g. 384,256,128,64") from None
    if not dims or any(d < 1 for d in dims) or (hidden is not None and any(d > hidden for d in dims)):
        raise OptionError(f"--matryoshka {text!r}: widths must lie in 1..{hidden or 'the model width'}")
    return dims
