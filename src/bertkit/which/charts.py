"""Charts for "which vector for which task" (matplotlib, headless): ranked bars per task, a heat map
representation x hidden state, and the report's summary heat map representation x task with each task's best
marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bertkit.which.evaluate import save_fig, short
from bertkit.which.results import TaskResult

COLORS = {"text": "#2b6cb0", "pair": "#dd6b20", "tokens": "#2f855a", "fine-tuned": "#805ad5"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(results: Sequence[TaskResult], path: str | Path) -> Path:
    """Every representation's score, best on top; one colour per input kind; several models side by side."""
    plt = _plt()
    many = len({r.model for r in results}) > 1
    rows = []
    for r in results:
        layered = all(s.layers is not None and len(s.layers) == 1 for s in r.scores)
        for s in r.scores:
            if layered or s.layers is None or s.input == "pair":  # single-layer rows go to the heat map
                if s.input == "pair" and s.layers is not None:
                    continue
                rows.append(((short(r.model) + " · " if many else "") + s.representation, s.score, s.input))
    rows.sort(key=lambda x: x[1])  # barh draws bottom-up: best ends on top
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.8), dpi=120)
    bars = ax.barh(range(len(rows)), [x[1] for x in rows], color=[COLORS.get(x[2], "#718096") for x in rows])
    ax.bar_label(bars, fmt="%.1f", padding=3, fontsize=8)
    ax.set_yticks(range(len(rows)), [x[0] for x in rows], fontsize=8)
    first = results[0]
    ax.set_xlim(min(0.0, min(x[1] for x in rows) - 5), 105)
    ax.set_xlabel(f"{first.metric} x100 ({first.task})")
    who = "several models" if many else short(first.model)
    ax.set_title(f"Which vector for {first.task}? {who} on {first.data}", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[k]) for k in COLORS if any(x[2] == k for x in rows)]
    names = {"text": "each text alone", "pair": "pair encoded together", "tokens": "token vectors",
             "fine-tuned": "fine-tuned model"}
    ax.legend(handles, [names[k] for k in COLORS if any(x[2] == k for x in rows)], loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_fig(fig, path)


def plot_layer_heatmap(results: Sequence[TaskResult], path: str | Path) -> Path:
    """Representation x hidden state (0 = embeddings), the score in every cell, one panel per model."""
    plt = _plt()
    panels = [(r, r.per_layer()) for r in results if r.per_layer()]
    if not panels:
        raise ValueError("no per-layer scores to draw; run the task with layers")
    height = sum(0.5 * len(m) + 1.2 for _, m in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height + 0.6), dpi=120, squeeze=False)
    for ax, (r, matrix) in zip(axes[:, 0], panels):
        fams = list(matrix)
        width = max(len(v) for v in matrix.values())
        grid = np.full((len(fams), width), np.nan)
        for i, f in enumerate(fams):
            grid[i, : len(matrix[f])] = matrix[f]
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                dark = v < np.nanmin(grid) + 0.6 * (np.nanmax(grid) - np.nanmin(grid))
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_yticks(range(len(fams)), fams, fontsize=8)
        ax.set_xticks(range(width))
        ax.set_title(f"{r.task}: {r.metric} x100 per hidden state, {short(r.model)} on {r.data}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03)
    axes[-1, 0].set_xlabel("hidden state (0 = embedding output, last = final layer)")
    fig.tight_layout()
    return save_fig(fig, path)


def summary_rows(results: Sequence[TaskResult]) -> tuple[list[str], list[str], np.ndarray, list[list[str]]]:
    """(representations, task columns, scores, cell texts) for the summary: whole-model representations, the
    pair encoded together, token vectors at their best layer (named in the cell), fine-tuned models."""
    columns = [f"{r.task}\n{r.data}" for r in results]
    rows: list[str] = []
    cells: dict[tuple[str, int], tuple[float, str]] = {}
    for j, r in enumerate(results):
        for s in r.scores:
            if s.input == "tokens":
                key = "token (best layer)"
                if (key, j) in cells:
                    continue  # scores are ranked: the first token row is the best layer
                text = f"{s.score:.1f} @{s.layers[0]}"
            elif s.layers is None:
                key = s.representation if s.input != "fine-tuned" else f"fine-tuned: {Path(s.model).name}"
                text = f"{s.score:.1f}"
            else:
                continue
            if key not in rows:
                rows.append(key)
            cells[key, j] = (s.score, text)
    grid = np.full((len(rows), len(results)), np.nan)
    texts = [["–"] * len(results) for _ in rows]
    for (key, j), (v, t) in cells.items():
        grid[rows.index(key), j] = v
        texts[rows.index(key)][j] = t
    return rows, columns, grid, texts


def plot_summary(results: Sequence[TaskResult], path: str | Path, title: str = "") -> Path:
    """Representation x task; colour = points behind the task's best (metrics differ by task), each cell
    holds the score, each task's best is boxed."""
    plt = _plt()
    rows, columns, grid, texts = summary_rows(results)
    best = np.nanmax(grid, axis=0)
    gap = np.clip(grid - best, -20, 0)
    fig, ax = plt.subplots(figsize=(1.9 * len(columns) + 3, 0.45 * len(rows) + 2), dpi=120)
    im = ax.imshow(gap, aspect="auto", cmap="RdYlGn", vmin=-20, vmax=0)
    for i in range(len(rows)):
        for j in range(len(columns)):
            top = not np.isnan(grid[i, j]) and grid[i, j] == best[j]
            ax.text(j, i, ("★ " if top else "") + texts[i][j], ha="center", va="center", fontsize=8,
                    fontweight="bold" if top else "normal")
            if top:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    metrics = [r.metric for r in results]
    ax.set_xticks(range(len(columns)), [f"{c}\n({m})" for c, m in zip(columns, metrics)], fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.xaxis.tick_top()
    fig.colorbar(im, ax=ax, fraction=0.03, label="points behind the task's best (clipped at -20)")
    ax.set_title(title or "Which vector for which task (x100; ★ = best per task)", fontsize=10, pad=40)
    fig.tight_layout()
    return save_fig(fig, path)
