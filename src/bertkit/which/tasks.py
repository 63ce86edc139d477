"""Which vector for which task: read a file for a task, check that it fits, split and cap it, and run the task
on a model's representations. `bertkit compare --task` and `bertkit report` call `run_task`.

| task      | data                                   | measured per representation                            |
|-----------|----------------------------------------|--------------------------------------------------------|
| sts       | pairs with gold scores                 | Spearman (and Pearson) of cosine similarity, x100      |
| classify  | labelled texts (SST-2, AG News, CSV)   | linear probe: accuracy (and macro-F1) on the test part |
| pair      | labelled pairs (MRPC, SICK entailment) | probe on (u, v, abs(u-v), u*v) and on the joint pair   |
| ner       | CoNLL BIO tags                         | tag probe per hidden state: entity F1                  |
| retrieval | pairs (labels, scores or neither)      | MRR@10, recall@1, recall@10 of positives among all b   |

    from bertkit.which.tasks import TaskOptions, run_task
    result = run_task("classify", reps, "../shared/data/sst2/dev.tsv", TaskOptions())
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.data import LabeledText, SentencePair, TaggedSentence
from bertkit.data.infer import is_number
from bertkit.errors import InputError, OptionError
from bertkit.which.probe import ProbeSettings, classify_task, pair_task, split_rows
from bertkit.which.represent import Representations, label
from bertkit.which.results import TASKS, Score, TaskResult

# (training cap, test cap) per task; None = all. Chosen so that `bertkit report` on the shared data (SST-2,
# MRPC, CoNLL, STS-B dev, SICK) fits in minutes on 2 CPU cores with the packaged model (docs/RESULTS.md).
DEFAULT_CAPS: dict[str, tuple[int | None, int | None]] = {
    "sts": (None, None), "classify": (4000, 1000), "pair": (3000, 1000), "ner": (1500, 500), "retrieval": (None, 2000),
}
WITH_TRAINING = ("classify", "pair", "ner")


@dataclass
class TaskOptions:
    test: str | None = None  # a separate test file (classify, pair, ner); else a held-out share of the data
    fmt: str | None = None
    max_train: int | None = None  # None: the task's default cap; 0: no cap
    max_test: int | None = None
    share: float = 0.2  # held-out test share when there is no test file
    seed: int = 0
    skip_bad: bool = False
    settings: ProbeSettings = field(default_factory=ProbeSettings)

    def caps(self, task: str) -> tuple[int | None, int | None]:
        train, test = DEFAULT_CAPS[task]
        pick = (lambda given, default: default if given is None else (given or None))
        return pick(self.max_train, train), pick(self.max_test, test)

    def check(self, task: str) -> None:
        if task not in TASKS:
            raise OptionError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
        if self.test is not None and task not in WITH_TRAINING:
            raise OptionError(f"--test is for tasks that train a probe ({', '.join(WITH_TRAINING)}); "
                              f"{task} scores the whole file")
        if not 0 < self.share < 1:
            raise OptionError(f"the held-out share must be between 0 and 1, got {self.share}")
        for name, v in (("--max-train", self.max_train), ("--max-test", self.max_test)):
            if v is not None and v < 0:
                raise OptionError(f"{name} must be >= 0 (0 = no cap), got {v}")


def short_name(path: str) -> str:
    """stsb/dev.tsv for ../shared/data/stsb/dev.tsv: the folder tells the dataset."""
    return "/".join(Path(path).parts[-2:])


def read_items(path: str, fmt: str | None = None, skip_bad: bool = False) -> list:
    """Whatever the file holds: SentencePair, LabeledText, TaggedSentence or plain str items."""
    from bertkit.data import has_pair_columns, infer_format, read_dataset, read_labeled_texts

    fmt = fmt or ("csv" if path.startswith("hf:") else infer_format(path))
    if fmt in ("csv", "tsv", "jsonl") and not path.startswith("hf:") and not has_pair_columns(path, fmt):
        items = read_labeled_texts(path, fmt, skip_bad=skip_bad)
    else:
        items = read_dataset(path, fmt, skip_bad=skip_bad)
    if not items:
        raise InputError(f"{path} holds no rows; give a file with at least one")
    return items


def infer_task(items: list) -> str:
    """The task a file fits: CoNLL -> ner, labelled texts -> classify, scored pairs -> sts (as `compare` always
    did), labelled pairs -> pair, other pairs -> retrieval."""
    first = items[0]
    if isinstance(first, TaggedSentence):
        return "ner"
    if isinstance(first, LabeledText):
        return "classify"
    if isinstance(first, SentencePair):
        if all(p.score is not None for p in items) and not scores_are_labels(items):
            return "sts"
        return "pair" if all(p.label is not None for p in items) else "retrieval"
    raise InputError("the file holds plain texts without labels or pairs; give a labelled or paired file")


def scores_are_labels(pairs: list) -> bool:
    """MRPC's reader gives its 0/1 quality as both label and score: that is a class, not a similarity."""
    return all(p.label is not None and is_number(p.label) and float(p.label) == p.score for p in pairs)


def check_fit(task: str, items: list, path: str) -> None:
    """Refuse a file that does not fit the task, saying which task it does fit."""
    first = items[0]
    kind = ("tagged sentences (CoNLL)" if isinstance(first, TaggedSentence) else "labelled single texts"
            if isinstance(first, LabeledText) else "sentence pairs" if isinstance(first, SentencePair) else
            "plain texts without labels")
    if task == "ner" and not isinstance(first, TaggedSentence):
        raise InputError(f"{path} holds {kind}, not CoNLL tagged tokens; --task ner needs a `token TAG` file")
    if task == "classify":
        if not isinstance(first, LabeledText):
            is_pair = isinstance(first, SentencePair)
            hint = " (use --task pair for labelled pairs, sts for scored ones)" if is_pair else ""
            raise InputError(f"{path} holds {kind}: --task classify needs one text and a class label per row{hint}")
        if all(is_number(x.label) for x in items) and any(not float(x.label).is_integer() for x in items):
            raise InputError(f"{path}: the labels are scores (e.g. {items[0].label}), not classes; "
                             "--task classify needs class labels")
    if task in ("pair", "sts", "retrieval") and not isinstance(first, SentencePair):
        raise InputError(f"{path} holds {kind}, no sentence pairs: --task {task} needs pairs (a, b)")
    if task == "pair" and any(p.label is None for p in items):
        line = next(p.line for p in items if p.label is None)
        raise InputError(f"{path}: line {line} has no class label (the pairs carry scores); --task pair needs "
                         "labels such as MRPC quality or SICK entailment; use --task sts for scores")
    if task == "sts" and any(p.score is None for p in items):
        line = next(p.line for p in items if p.score is None)
        raise InputError(f"{path}: line {line} has no similarity score; --task sts needs one per pair "
                         "(use --task pair or retrieval)")
    if task in ("classify", "pair"):
        classes = {str(x.label) for x in items}
        if len(classes) < 2:
            raise InputError(f"{path} has a single class ({classes.pop()!r}); a probe needs at least two classes")


def load_task(task: str, path: str, opts: TaskOptions) -> tuple[list, list, list[str]]:
    """(train, test, notes) for a task: the file checked against the task, split and capped."""
    opts.check(task)
    items = read_items(path, opts.fmt, opts.skip_bad)
    check_fit(task, items, path)
    what = {"ner": "sentences", "classify": "texts"}.get(task, "pairs")
    if task not in WITH_TRAINING:  # sts / retrieval: the whole file, optionally capped
        cap = opts.caps(task)[1]
        notes = []
        if cap and len(items) > cap:
            notes.append(f"sample cap (seeded; --max-test, 0 = all): {cap} of {len(items)} {what}")
            items = random.Random(opts.seed).sample(items, cap)
        return [], items, notes
    test_items = None
    if opts.test is not None:
        test_items = read_items(opts.test, opts.fmt, opts.skip_bad)
        if task == "ner":
            check_fit(task, test_items, opts.test)
        else:
            check_kind(task, test_items, opts.test)
    return split_rows(items, test_items, opts.caps(task), opts.share, opts.seed, what)


def check_kind(task: str, items: list, path: str) -> None:
    """A test file holds the same kind of rows as the training file (it may hold a single class)."""
    want = LabeledText if task == "classify" else SentencePair
    if not isinstance(items[0], want) or any(getattr(x, "label", None) is None for x in items):
        raise InputError(f"--test {path} does not hold labelled {'texts' if task == 'classify' else 'pairs'} "
                         f"like the training file; give a test file of the same kind")


def run_task(task: str, reps: Representations, path: str, opts: TaskOptions) -> TaskResult:
    """Load the data for the task and measure every representation of `reps` on it."""
    train, test, notes = load_task(task, path, opts)
    return measure(task, reps, train, test, notes, short_name(path), opts.settings)


def measure(task: str, reps: Representations, train: list, test: list, notes: list[str], name: str,
            settings: ProbeSettings) -> TaskResult:
    """Every representation of `reps` on a loaded, split task."""
    from bertkit.which.probe_ner import ner_task
    from bertkit.which.retrieval import retrieval_task

    if task == "classify":
        return classify_task(reps, train, test, settings, name, notes)
    if task == "pair":
        return pair_task(reps, train, test, settings, name, notes)
    if task == "ner":
        return ner_task(reps.encoder, train, test, settings, name, notes, reps.progress)
    if task == "retrieval":
        return retrieval_task(reps, test, name, notes)
    return sts_task(reps, test, name, notes)


def sts_task(reps: Representations, pairs: list, data: str = "", notes: list[str] | None = None) -> TaskResult:
    """Spearman (x100) of cosine similarity against the gold scores, per representation (as evaluate_sts)."""
    from bertkit.which.evaluate import correlations, cosine, unique_texts

    started = time.perf_counter()
    texts, ia, ib = unique_texts(pairs)
    vecs = reps.vectors(texts)
    gold = [p.score for p in pairs]
    scores = []
    for s in reps.specs:
        spearman, pearson = correlations(cosine(vecs[s][ia], vecs[s][ib]), gold)
        scores.append(Score("sts", label(s), s.pooling, list(s.layers) if s.layers else None, "spearman", spearman,
                            {"spearman": spearman, "pearson": pearson}, "text", reps.name, data, len(pairs)))
    return TaskResult("sts", data, reps.name, scores, list(notes or []), 0, len(pairs),
                      time.perf_counter() - started).rank()


def task_of(path: str, opts: TaskOptions) -> str:
    """The task a file fits (for `compare` without --task)."""
    return infer_task(read_items(path, opts.fmt, opts.skip_bad))

