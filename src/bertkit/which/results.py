"""What a "which vector for which task" measurement returns, and how it is told: ranked rows, one JSON object
per row, and a paragraph that names the winner and its margin. Shared by `bertkit compare --task` and
`bertkit report`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

TASKS = ("sts", "classify", "pair", "ner", "retrieval")
METRIC = {"sts": "spearman", "classify": "accuracy", "pair": "accuracy", "ner": "f1", "retrieval": "mrr@10"}


@dataclass
class Score:
    """One representation's result on one task (every metric x100)."""

    task: str
    representation: str  # label: "mean", "cls@3", "pair:cls", "token@4", "fine-tuned"
    pooling: str  # a pooling name, "token" (first wordpiece of each word) or "fine-tuned"
    layers: list[int] | None
    metric: str  # the task's main metric
    score: float
    metrics: dict[str, float] = field(default_factory=dict)  # every metric, the main one included
    input: str = "text"  # text (each sentence alone) | pair (the pair encoded together) | tokens | fine-tuned
    model: str = ""
    data: str = ""
    n: int = 0  # items scored (test texts, pairs, sentences, queries)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TaskResult:
    task: str
    data: str
    model: str
    scores: list[Score]  # best first
    notes: list[str] = field(default_factory=list)  # how the split, caps and probe were set: stated in output
    n_train: int = 0
    n_test: int = 0
    seconds: float = 0.0

    @property
    def metric(self) -> str:
        return METRIC[self.task]

    @property
    def best(self) -> Score:
        return self.scores[0]

    def rank(self) -> TaskResult:
        self.scores.sort(key=lambda s: -s.score)
        return self

    def per_layer(self) -> dict[str, list[float]]:
        """Scores of single-layer representations, by representation family (cls, mean, pair:cls, token ...)."""
        out: dict[str, dict[int, float]] = {}
        for s in self.scores:
            if s.layers is not None and len(s.layers) == 1:
                fam = s.representation.split("@")[0]
                out.setdefault(fam, {})[s.layers[0]] = s.score
        return {k: [v[i] for i in sorted(v)] for k, v in out.items() if len(v) > 1}

    def json_lines(self) -> str:
        """One JSON object per representation: task, pooling, layers, metric, score, and the rest."""
        return "".join(json.dumps(s.to_dict()) + "\n" for s in self.scores)


def by_label(result: TaskResult) -> dict[str, float]:
    return {s.representation: s.score for s in result.scores}


def reading(r: TaskResult) -> str:
    """One paragraph: the winner, its margin over the runner-up, the folklore answer checked, the advice."""
    best, m = r.best, r.metric
    text = f"On {r.data or 'this set'} ({task_size(r)}), {best.representation} ranks first with {m} {best.score:.1f}"
    frozen = [s for s in r.scores if s.input != "fine-tuned"]
    if len(r.scores) > 1:
        second = r.scores[1]
        text += (f", {best.score - second.score:.1f} points ahead of {second.representation} ({second.score:.1f}); "
                 f"{r.scores[-1].representation} is last ({r.scores[-1].score:.1f}). ")
    else:
        text += ". "
    text += FOLKLORE.get(r.task, lambda _r: "")(r)
    layers = r.per_layer()
    if layers:
        peaks = (f"{fam} peaks at {max(range(len(v)), key=v.__getitem__)} ({max(v):.1f})" for fam, v in layers.items())
        text += "Per hidden state (0 = embeddings): " + ", ".join(peaks) + ". "
    top = frozen[0] if frozen else best
    text += f"Recommendation for {r.task} with this model: {top.representation}"
    tuned = [s for s in r.scores if s.input == "fine-tuned"]
    if tuned:
        text += (f"; fine-tuning ({tuned[0].model}) scores {tuned[0].score:.1f}, "
                 f"{tuned[0].score - top.score:+.1f} points over the best frozen vector")
    return text + "."


def task_size(r: TaskResult) -> str:
    unit = {"sts": "pairs", "classify": "test texts", "pair": "test pairs", "ner": "test sentences",
            "retrieval": "queries"}[r.task]
    size = f"{r.n_test} {unit}"
    return size + (f", probe trained on {r.n_train}" if r.n_train else "")


def _gap(r: TaskResult, a: str, b: str) -> float | None:
    by = by_label(r)
    return by[a] - by[b] if a in by and b in by else None


def _classify_note(r: TaskResult) -> str:
    d = _gap(r, "cls", "mean")
    if d is None:
        return ""
    return (f"Folklore says [CLS] (or the pooler) for classification; on frozen vectors [CLS] is {d:+.1f} points "
            "against mean pooling. ")


def _pair_note(r: TaskResult) -> str:
    joint = [s for s in r.scores if s.input == "pair"]
    alone = [s for s in r.scores if s.input == "text"]
    if not joint or not alone:
        return ""
    return (f"Encoding the pair together ({joint[0].representation}, as BERT's next-sentence pretraining saw "
            f"pairs) scores {joint[0].score:.1f} against {alone[0].score:.1f} for the best vectors of each sentence "
            f"alone ({alone[0].representation}, probe on u, v, |u-v|, u*v). ")


def _ner_note(r: TaskResult) -> str:
    layers = r.per_layer().get("token")
    if not layers:
        return ""
    return (f"Token vectors of the last layer score {layers[-1]:.1f}; the best layer is "
            f"{max(range(len(layers)), key=layers.__getitem__)} ({max(layers):.1f}). ")


def _similarity_note(r: TaskResult) -> str:
    d = _gap(r, "mean", "cls")
    if d is None:
        return ""
    return f"[CLS] or mean? mean, by {d:.1f} points. " if d > 0 else f"[CLS] or mean? [CLS], by {-d:.1f} points. "


FOLKLORE = {"classify": _classify_note, "pair": _pair_note, "ner": _ner_note, "sts": _similarity_note,
            "retrieval": _similarity_note}
