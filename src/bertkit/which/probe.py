"""Linear probes on frozen representations: how much of a task a vector already holds, without fine-tuning.

A probe is scikit-learn's `LogisticRegression` on standardised features, its C chosen by stratified
cross-validation on the training part (`LogisticRegressionCV`); it is scored by accuracy and macro-F1 on the
test part. `classify_task` probes every sentence representation of labelled texts; `pair_task` probes sentence
pairs, on (u, v, |u-v|, u*v) of each representation and on the pair encoded together.

    from bertkit.which.probe import ProbeSettings, classify_task, split_rows
    train, test, notes = split_rows(items, None, caps=(4000, 2000))
    result = classify_task(reps, train, test, ProbeSettings())
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bertkit.errors import InputError
from bertkit.which.evaluate import Spec
from bertkit.which.represent import Representations, label
from bertkit.which.results import METRIC, Score, TaskResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSettings:
    """The probe: StandardScaler -> LogisticRegressionCV (lbfgs, L2) with C picked from `Cs` by `folds`-fold
    stratified CV (shuffled with `seed`) on the training part."""

    Cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    folds: int = 3
    max_iter: int = 1000
    seed: int = 0

    def describe(self) -> str:
        return (f"probe: StandardScaler + LogisticRegressionCV (L2, lbfgs, max_iter {self.max_iter}), C from "
                f"{{{', '.join(f'{c:g}' for c in self.Cs)}}} by {self.folds}-fold stratified CV on the training part")


def make_probe(settings: ProbeSettings):
    """The unfitted scikit-learn pipeline."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed)
    return make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(settings.Cs), cv=cv, max_iter=settings.max_iter, scoring="accuracy", l1_ratios=(0,),
        use_legacy_attributes=False))


def one_blas_thread():
    """BLAS on one thread while probing: the probes are small, and OpenBLAS's spinning threads made a fit up to
    25x slower on a CPU shared with other busy processes (0.9 s vs 24 s measured, 2 cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def fit_probe(x: np.ndarray, y: Sequence, settings: ProbeSettings):
    """Fit the probe; scikit-learn's convergence warnings are logged once per fit, not printed per fold."""
    from sklearn.exceptions import ConvergenceWarning

    probe = make_probe(settings)
    with warnings.catch_warnings(record=True) as caught, one_blas_thread():
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(x, np.asarray(y))
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.info("a probe fold stopped at max_iter=%d before converging", settings.max_iter)
    return probe


def check_labels(labels: Sequence[str], settings: ProbeSettings, what: str) -> None:
    """Two classes at least, and enough of each for the cross-validation folds."""
    counts: dict[str, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    if len(counts) < 2:
        raise InputError(f"{what} has a single class ({next(iter(counts), 'none')!r}); a probe needs at least two")
    rare = min(counts, key=counts.get)
    if counts[rare] < settings.folds:
        raise InputError(
            f"too few rows for cross-validation: class {rare!r} has {counts[rare]} training example(s) in {what}, "
            f"and choosing C by {settings.folds}-fold CV needs at least {settings.folds} per class; give more rows")


def split_rows(items: list, test_items: list | None, caps: tuple[int | None, int | None], share: float = 0.2,
               seed: int = 0, what: str = "rows") -> tuple[list, list, list[str]]:
    """(train, test, notes): `test_items` when given, else a seeded held-out share of `items`; then each part
    is cut to its cap by a seeded random sample. The notes state what was done, for the output."""
    rng = random.Random(seed)
    if test_items is None:
        order = list(items)
        rng.shuffle(order)
        n_test = max(1, round(share * len(order)))
        test, train = order[:n_test], order[n_test:]
        notes = [(f"test part: a seeded held-out {share:.0%} of the {len(items)} {what} (seed {seed}; --test FILE to "
                 "give one)")]
    else:
        train, test = list(items), list(test_items)
        notes = []
    if not train or not test:
        raise InputError(f"too few {what} to split into a training and a test part ({len(items)}); give more rows")
    cut = []
    for name, part, cap in (("training", train, caps[0]), ("test", test, caps[1])):
        if cap and len(part) > cap:
            cut.append(f"{name} part capped at {cap} of {len(part)} {what}")
            part[:] = rng.sample(part, cap)
    if cut:
        notes.append("sample caps (seeded; --max-train / --max-test, 0 = all): " + "; ".join(cut))
    return train, test, notes


def probe_score(x_train: np.ndarray, y_train: Sequence[str], x_test: np.ndarray, y_test: Sequence[str],
                settings: ProbeSettings) -> dict[str, float]:
    """Accuracy and macro-F1 (x100) of a probe fit on the training part, on the test part; and its C."""
    from bertkit.data.metrics import accuracy, macro_f1

    probe = fit_probe(x_train, y_train, settings)
    with one_blas_thread():
        pred = [str(p) for p in probe.predict(x_test)]
    gold = list(y_test)
    return {"accuracy": 100 * accuracy(gold, pred), "macro_f1": 100 * macro_f1(gold, pred),
            "C": float(np.ravel(probe[-1].C_)[0])}


def fits(items: Iterable, enabled: bool, total: int, what: str = "probing"):
    """Iterate with a progress bar over probe fits (one per representation), when enabled."""
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(what), BarColumn(), TextColumn("{task.completed}/{task.total} representations"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(what, total=total)
        for item in items:
            yield item
            bar.advance(task)


def spec_score(task: str, spec: Spec, metrics: dict[str, float], n: int, reps: Representations, data: str,
               joint: bool = False) -> Score:
    m = METRIC[task]
    return Score(task, label(spec, joint), spec.pooling, list(spec.layers) if spec.layers else None, m, metrics[m],
                 metrics, "pair" if joint else "text", reps.name, data, n)


def classify_task(reps: Representations, train: list, test: list, settings: ProbeSettings, data: str = "",
                  notes: Sequence[str] = ()) -> TaskResult:
    """A probe per sentence representation of labelled texts (items with .text and .label)."""
    check_labels([str(x.label) for x in train], settings, "the training part")
    started = time.perf_counter()
    vecs = reps.vectors([x.text for x in train] + [x.text for x in test])
    n = len(train)
    y_train, y_test = [str(x.label) for x in train], [str(x.label) for x in test]
    scores = []
    for spec in fits(reps.specs, reps.progress, len(reps.specs)):
        metrics = probe_score(vecs[spec][:n], y_train, vecs[spec][n:], y_test, settings)
        scores.append(spec_score("classify", spec, metrics, len(test), reps, data))
    return TaskResult("classify", data, reps.name, scores, [*notes, settings.describe()], len(train), len(test),
                      time.perf_counter() - started).rank()


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(u, v, |u-v|, u*v): the InferSent / Sentence-BERT features of a pair of sentence vectors."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def pair_task(reps: Representations, train: list, test: list, settings: ProbeSettings, data: str = "",
              notes: Sequence[str] = ()) -> TaskResult:
    """A probe per representation of labelled sentence pairs (items with .a, .b and .label): on pair_features of
    each sentence representation, and on the [CLS] / pooler of the pair encoded together."""
    check_labels([str(p.label) for p in train], settings, "the training part")
    started = time.perf_counter()
    pairs = list(train) + list(test)
    vecs = reps.vectors([p.a for p in pairs] + [p.b for p in pairs])
    joint = reps.pair_vectors([p.a for p in pairs], [p.b for p in pairs])
    n, m = len(train), len(pairs)
    y_train, y_test = [str(p.label) for p in train], [str(p.label) for p in test]
    todo = [(s, False) for s in reps.specs] + [(s, True) for s in reps.pair_specs]
    scores = []
    for spec, together in fits(todo, reps.progress, len(todo)):
        x = joint[spec] if together else pair_features(vecs[spec][:m], vecs[spec][m:])
        metrics = probe_score(x[:n], y_train, x[n:], y_test, settings)
        scores.append(spec_score("pair", spec, metrics, len(test), reps, data, joint=together))
    notes = [*notes, settings.describe() + "; separate sentences: features (u, v, |u-v|, u*v); together: "
             "[CLS] / pooler of \"[CLS] a [SEP] b [SEP]\""]
    return TaskResult("pair", data, reps.name, scores, notes, len(train), len(test),
                      time.perf_counter() - started).rank()
