"""Reading a `bertkit report` folder back: its results.jsonl as TaskResults, and the summary (recommendation
per task, representation x task table) as plain data, for `bertkit serve --report DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import InputError
from bertkit.which.results import Score, TaskResult


def check_report_dir(folder: str | Path) -> Path:
    """The folder, when it holds a report's results.jsonl; else an InputError saying what is expected."""
    folder = Path(folder)
    if not (folder / "results.jsonl").is_file():
        raise InputError(f"{folder} is not a `bertkit report` folder: it has no results.jsonl "
                         "(make one with `bertkit report --output DIR ...`)")
    return folder


def load_results(folder: str | Path) -> list[TaskResult]:
    """The report's TaskResults, one per (task, data set), in the report's order, each ranked best first."""
    path = check_report_dir(folder) / "results.jsonl"
    results: dict[tuple[str, str], TaskResult] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            score = Score(**json.loads(line))
        except (ValueError, TypeError) as e:
            raise InputError(f"{path} line {n} is not a report result ({e})") from None
        key = (score.task, score.data)
        if key not in results:
            results[key] = TaskResult(score.task, score.data, score.model, [])
        results[key].scores.append(score)
    if not results:
        raise InputError(f"{path} holds no results")
    return [r.rank() for r in results.values()]


def recommendation(r: TaskResult) -> dict[str, Any]:
    """The best frozen representation for a task (as report.md states it), with its margin."""
    frozen = [s for s in r.scores if s.input != "fine-tuned"] or r.scores
    top, runner = frozen[0], (frozen[1] if len(frozen) > 1 else None)
    return {"task": r.task, "data": r.data, "metric": r.metric, "representation": top.representation,
            "score": top.score, "runner_up": runner.representation if runner else None,
            "margin": top.score - runner.score if runner else None}


def report_summary(folder: str | Path) -> dict[str, Any]:
    """What the playground's which-vector panel shows: the model, a recommendation per task, and the summary
    table (rows = representations, columns = tasks; each task's best marked), as report.md has them."""
    from bertkit.which.charts import summary_rows

    folder = check_report_dir(folder)
    results = load_results(folder)
    rows, columns, grid, texts = summary_rows(results)
    best = np.nanmax(grid, axis=0)
    return {
        "model": results[0].model,
        "recommendations": [recommendation(r) for r in results],
        "columns": [{"task": r.task, "data": r.data, "metric": r.metric} for r in results],
        "rows": [
            {"representation": name,
             "cells": [{"score": None if np.isnan(grid[i, j]) else float(grid[i, j]), "text": texts[i][j],
                        "best": bool(grid[i, j] == best[j])} for j in range(len(columns))]}
            for i, name in enumerate(rows)
        ],
        "chart": (folder / "summary.png").is_file(),
    }
