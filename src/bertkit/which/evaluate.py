"""Measure sentence vectors on similarity sets, compare poolings and layers, and draw the answer.

    from bertkit import Encoder
    from bertkit.data import read_scored_pairs
    from bertkit.which.evaluate import evaluate_sts
    scores = evaluate_sts(Encoder.load(), read_scored_pairs("../shared/data/stsb/dev.tsv"), ["cls", "mean"])

STS metric: Spearman and Pearson correlation (x100) between the cosine similarity of the two sentences'
vectors and the gold score, as in SentEval / sentence-transformers' EmbeddingSimilarityEvaluator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertkit.data import SentencePair
from bertkit.errors import InputError, OptionError
from bertkit.outputs import atomic_write, writing
from bertkit.pooling import DEFAULT_PROMPT, POOLING_MODES, normalize_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    """One way to turn a model's output into a sentence vector."""

    pooling: str
    layers: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        return self.pooling if self.layers is None else f"{self.pooling}@{','.join(map(str, self.layers))}"


@dataclass
class StsScore:
    model: str
    pooling: str
    layers: list[int] | None
    spearman: float  # x100
    pearson: float  # x100
    n: int  # pairs
    seconds: float  # encoding time of this model's sentences, shared by the specs of one pass
    whitening: str | None = None

    @property
    def label(self) -> str:
        return Spec(self.pooling, tuple(self.layers) if self.layers else None).label + (
            f" +whiten {self.whitening}" if self.whitening else "")

    def to_dict(self) -> dict:
        return asdict(self) | {"label": self.label}


def correlations(predicted: Sequence[float], gold: Sequence[float]) -> tuple[float, float]:
    """(Spearman, Pearson) x100. Constant predictions have no correlation: reported as 0, with a warning."""
    from scipy.stats import pearsonr, spearmanr

    p, g = np.asarray(predicted, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 1 or len(p) < 2:
        raise InputError(f"need two equal-length score lists of at least 2 items; got {p.shape} and {g.shape}")
    if not np.isfinite(g).all():
        raise InputError(f"gold score {g[~np.isfinite(g)][0]} (item {int(np.flatnonzero(~np.isfinite(g))[0])}) is "
                         "not a finite number; fix the labels (NaN / inf have no rank or mean)")
    if np.ptp(g) == 0:
        raise InputError(f"every gold score is {g[0]:g}: a correlation with constant labels is undefined; evaluate on "
                         "pairs whose scores differ")
    if np.ptp(p) == 0:
        log.warning("constant similarities (e.g. [CLS] of the embedding layer): correlation undefined, reported as 0")
        return 0.0, 0.0
    return float(spearmanr(p, g).statistic) * 100, float(pearsonr(p, g).statistic) * 100


def cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, H) arrays."""
    return (normalize_rows(u) * normalize_rows(v)).sum(1)


# ----------------------------------------------------------------------------------------------------------
# Encoding many poolings in one pass


def encode_specs(encoder, texts: list[str], specs: Sequence[Spec], batch_size: int = 32,
                 template: str = DEFAULT_PROMPT, progress: bool = False) -> dict[Spec, np.ndarray]:
    """Vectors of `texts` for every spec, through the encoder's own precision and backend (what `encode` gives,
    so a fast mode's STS cost is measured, not the exact model's). All specs but mask_prompt share one forward
    pass per batch, so comparing seven poolings on every layer costs about two passes, not dozens."""
    encoded = encoder.encode_poolings(texts, [(s.pooling, s.layers or None) for s in specs], batch_size=batch_size,
                                      template=template, progress=progress)
    return dict(zip(specs, encoded.vectors))


def unique_texts(pairs: Sequence[SentencePair]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Distinct sentences and, per pair, the row of its first and second sentence: each is encoded once."""
    index: dict[str, int] = {}
    for p in pairs:
        index.setdefault(p.a, len(index))
        index.setdefault(p.b, len(index))
    ia = np.array([index[p.a] for p in pairs])
    ib = np.array([index[p.b] for p in pairs])
    return list(index), ia, ib


def default_specs(encoder, poolings: Sequence[str] | None = None, layers: Sequence[int] | None = None) -> list[Spec]:
    """The asked poolings, or every pooling this model supports (pooler only when it has one)."""
    if poolings:
        names = list(poolings)
    else:
        names = [p for p in POOLING_MODES if p != "pooler" or encoder.has_head("pooler")]
    lay = tuple(layers) if layers else None
    return [Spec(p, lay if p not in ("pooler", "first_last_avg") else None) for p in names]


def evaluate_sts(encoder, pairs: Sequence[SentencePair], poolings: Sequence[str] | Sequence[Spec] | None = None,
                 layers: Sequence[int] | None = None, whitening=None, batch_size: int = 32,
                 progress: bool = False) -> list[StsScore]:
    """Spearman / Pearson x100 of cosine similarity against gold scores, one StsScore per pooling spec.

    `whitening` (a bertkit.vectors.whitening.Whitening, or several) is applied to every spec's vectors when given; with
    a list, each spec gets a raw row and one row per whitening, all from one encoding pass."""
    if not pairs:
        raise InputError("no sentence pairs to evaluate")
    if any(p.score is None for p in pairs):
        raise InputError("every pair needs a gold score for STS evaluation")
    if poolings and isinstance(next(iter(poolings)), Spec):
        specs = list(poolings)
    else:
        specs = default_specs(encoder, poolings, layers)
    texts, ia, ib = unique_texts(pairs)
    gold = [p.score for p in pairs]
    started = time.perf_counter()
    vectors = encode_specs(encoder, texts, specs, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - started
    variants = [whitening] if whitening is None or not isinstance(whitening, (list, tuple)) else [None, *whitening]
    scores = []
    for s in specs:
        for w in variants:
            vecs = vectors[s]
            if w is not None:
                w.check_compatible(s.pooling, list(s.layers) if s.layers else None)
                vecs = w.apply(vecs)
            spearman, pearson = correlations(cosine(vecs[ia], vecs[ib]), gold)
            scores.append(StsScore(encoder.name, s.pooling, list(s.layers) if s.layers else None, spearman, pearson,
                                   len(pairs), seconds, whitening_name(w)))
    return scores


def whitening_name(w) -> str | None:
    if w is None:
        return None
    return f"{Path(w.meta.get('path', 'fitted')).name} k={w.k}"


# ----------------------------------------------------------------------------------------------------------
# Comparison: every pooling, optionally every layer


@dataclass
class Comparison:
    model: str
    data: str
    poolings: list[StsScore]  # ranked, best first
    per_layer: dict[str, list[float]] | None = None  # pooling -> Spearman at hidden state 0..L

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "poolings": [s.to_dict() for s in self.poolings],
                "per_layer": self.per_layer, "reading": reading(self)}


LAYER_POOLINGS = ("cls", "mean", "max")


def compare(encoder, pairs: Sequence[SentencePair], data_name: str = "", per_layer: bool = False,
            batch_size: int = 32, progress: bool = False) -> Comparison:
    """Every pooling of the model ranked by Spearman; with per_layer, cls/mean/max on each hidden state too."""
    specs = default_specs(encoder)
    n_states = encoder.num_hidden_layers + 1
    layer_specs = [Spec(p, (i,)) for p in LAYER_POOLINGS for i in range(n_states)] if per_layer else []
    scores = evaluate_sts(encoder, pairs, specs + layer_specs, batch_size=batch_size, progress=progress)
    main = sorted(scores[: len(specs)], key=lambda s: -s.spearman)
    layers = None
    if per_layer:
        rest = scores[len(specs) :]
        layers = {p: [s.spearman for s in rest if s.pooling == p] for p in LAYER_POOLINGS}
    return Comparison(encoder.name, data_name, main, layers)


WHY = {
    "cls": "the raw [CLS] vector is a handle for a classifier fine-tuned on top, not a similarity space",
    "pooler": "the pooler was trained for next-sentence prediction, so it encodes 'do these go together', not meaning",
    "mean": "mean pooling is what Sentence-BERT models are trained with, and averaging keeps every token's content",
    "max": "max pooling keeps the strongest feature per dimension, which is noisier than the average",
    "mean_sqrt_len": "sum/sqrt(length) is mean pooling scaled by length, so cosine barely changes from mean",
    "first_last_avg": "averaging the first and last layers mixes lexical and contextual information",
    "mask_prompt": "the [MASK] vector of a prompt needs an MLM-trained model to carry sentence meaning",
}


def reading(c: Comparison) -> str:
    """One paragraph that says what the table means."""
    best, worst = c.poolings[0], c.poolings[-1]
    by = {s.pooling: s.spearman for s in c.poolings}
    text = (
        f"On {c.data or 'this set'} ({best.n} pairs), {best.pooling} pooling ranks first with Spearman "
        f"{best.spearman:.1f} and {worst.pooling} last with {worst.spearman:.1f}; a gap of "
        f"{best.spearman - worst.spearman:.1f} points between choices on the same model. "
    )
    if "cls" in by and "mean" in by:
        diff = by["mean"] - by["cls"]
        winner = "mean" if diff > 0 else "[CLS]"
        text += f"Answering \"[CLS] or mean?\": {winner}, by {abs(diff):.1f} points. "
    text += f"Why {best.pooling} wins here: {WHY.get(best.pooling, '')}. "
    if "cls" in by and by["cls"] < best.spearman:
        text += f"And {WHY['cls']}. "
    if c.per_layer:
        peak = {p: int(np.argmax(v)) for p, v in c.per_layer.items()}
        last = len(next(iter(c.per_layer.values()))) - 1
        text += "Per layer, the best hidden state is " + ", ".join(
            f"{p} at {i} ({c.per_layer[p][i]:.1f})" for p, i in peak.items()
        ) + f" (0 = embeddings, {last} = last layer). "
    text += "Use the top pooling for similarity and search with this model; a fine-tuned Sentence-BERT model "
    text += "(bertkit train sbert) raises the ceiling for raw BERT checkpoints."
    return text


# ----------------------------------------------------------------------------------------------------------
# Plots (matplotlib, headless)


def plot_poolings(c: Comparison, path: str | Path) -> Path:
    """Horizontal bars, best on top, Spearman and Pearson side by side, values printed on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = list(reversed(c.poolings))  # barh draws bottom-up: best ends on top
    y = np.arange(len(ranked))
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(ranked) + 1.8), dpi=120)
    sp = ax.barh(y + 0.2, [s.spearman for s in ranked], 0.4, label="Spearman x100", color="#2b6cb0")
    pe = ax.barh(y - 0.2, [s.pearson for s in ranked], 0.4, label="Pearson x100", color="#a0aec0")
    for bars in (sp, pe):
        ax.bar_label(bars, fmt="%.1f", padding=3, fontsize=8)
    ax.set_yticks(y, [s.pooling for s in ranked])
    lo = min(0.0, min(min(s.spearman, s.pearson) for s in ranked) - 5)
    ax.set_xlim(lo, 105)
    ax.set_xlabel("correlation of cosine similarity with gold scores (x100)")
    ax.set_title(f"Which vector? {short(c.model)} on {c.data or 'STS'} ({c.poolings[0].n} pairs)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_fig(fig, path)


def plot_layers(c: Comparison, path: str | Path) -> Path:
    """Spearman per hidden state (0 = embeddings) for cls / mean / max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not c.per_layer:
        raise OptionError("no per-layer scores; run compare with per_layer=True (--layers)")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for p, values in c.per_layer.items():
        ax.plot(range(len(values)), values, marker="o", label=p)
    ax.set_xticks(range(len(next(iter(c.per_layer.values())))))
    ax.set_xlabel("hidden state (0 = embedding output, last = final layer)")
    ax.set_ylabel("Spearman x100")
    ax.set_title(f"Per-layer pooling: {short(c.model)} on {c.data or 'STS'}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_fig(fig, path)


def short(name: str) -> str:
    return name.split(" (")[0] if len(name) < 60 else "…" + name[-50:]


def save_fig(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix[1:].lower() or "png"))
    finally:
        plt.close(fig)


def layers_path(plot: str | Path) -> Path:
    """Where the per-layer chart goes, beside the pooling chart: OUT.png -> OUT.layers.png."""
    p = Path(plot)
    return p.with_name(p.stem + ".layers" + p.suffix)
