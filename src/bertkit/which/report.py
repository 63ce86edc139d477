"""`bertkit report`: every representation of one model on every task given, in one folder.

Writes DIR/report.md (the recommendation per task, a summary table representation x task, and per task its
ranked table, the reading, and how the data was split and capped), DIR/summary.png (representation x task,
each task's best marked) and DIR/results.jsonl (one JSON object per row). The model is loaded once and every
distinct text is encoded once for all tasks (`bertkit.which.represent.Representations`). `--finetuned TASK=DIR` adds
a row: the same test part scored by a model `bertkit train classify|ner|sbert` fine-tuned for that task.

    from bertkit.which.report import ReportJob, run_report, write_report
    job = ReportJob(tasks=[("sts", "../shared/data/stsb/dev.tsv"), ("ner", "../shared/data/conll2003/valid.txt")])
    results = run_report(encoder, job)
    write_report(results, job, "out/report")
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertkit.errors import InputError, OptionError
from bertkit.outputs import atomic_folder, writing
from bertkit.which.results import TASKS, TaskResult, reading
from bertkit.which.tasks import TaskOptions, load_task, measure, short_name

log = logging.getLogger(__name__)

REPORT_FILES = ("report.md", "summary.png", "results.jsonl")


@dataclass
class ReportJob:
    tasks: list[tuple[str, str]]  # (task, data file), in report order
    finetuned: dict[str, list[str]] = field(default_factory=dict)  # task -> fine-tuned model folders
    options: TaskOptions = field(default_factory=TaskOptions)
    layers: bool = False
    batch_size: int = 64
    progress: bool = False
    command: str = ""  # the command line, quoted in the report

    def check(self) -> None:
        """Option mistakes and fine-tuned folders of the wrong kind, before any work."""
        from bertkit.which.finetuned import check_kind

        if not self.tasks:
            raise OptionError("give at least one task file: --sts, --classify, --pair, --ner or --retrieval")
        asked = {t for t, _ in self.tasks}
        for task in self.finetuned:
            if task not in TASKS:
                raise OptionError(f"--finetuned {task}=...: unknown task; choose one of {', '.join(TASKS)}")
            if task not in asked:
                raise OptionError(f"--finetuned {task}=... but no --{task} FILE to score it on; add one")
            for folder in self.finetuned[task]:
                check_kind(task, folder)
        for task, _ in self.tasks:
            self.options.check(task)


def parse_finetuned(values: list[str]) -> dict[str, list[str]]:
    """TASK=DIR options -> {task: [dirs]}."""
    out: dict[str, list[str]] = {}
    for v in values:
        task, sep, folder = v.partition("=")
        if not sep or not task or not folder:
            raise OptionError(f"--finetuned {v!r}: write TASK=DIR, e.g. classify=out/sst2")
        out.setdefault(task.strip(), []).append(folder.strip())
    return out


def run_report(encoder, job: ReportJob) -> list[TaskResult]:
    """Every task of the job on one model; fine-tuned rows added on the same test parts."""
    from bertkit.which.represent import Representations, sentence_specs

    job.check()
    reps = Representations(encoder, sentence_specs(encoder, job.layers), job.batch_size, job.progress, job.layers)
    results = []
    for task, path in job.tasks:
        train, test, notes = load_task(task, path, job.options)
        log.info("%s on %s: %d training and %d test items", task, path, len(train), len(test))
        result = measure(task, reps, train, test, notes, short_name(path), job.options.settings)
        for folder in job.finetuned.get(task, []):
            add_finetuned(result, folder, test)
        results.append(result.rank())
    for task, folders in job.finetuned.items():
        for folder in folders:
            if not any(s.model == folder for r in results if r.task == task for s in r.scores):
                raise InputError(f"--finetuned {task}={folder}: its labels fit none of the {task} files; give a "
                                 f"model fine-tuned on the same labels")
    return results


def add_finetuned(result: TaskResult, folder: str, test: list) -> None:
    """Score a fine-tuned model on the result's test part and add it as a row (or skip a label mismatch)."""
    from bertkit.which.finetuned import finetuned_score

    score = finetuned_score(result.task, folder, test, result.data)
    if score is None:
        result.notes.append(f"fine-tuned {folder} skipped here: its labels differ from this file's")
    else:
        result.scores.append(score)


# ----------------------------------------------------------------------------------------------------------
# report.md


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def summary_table(results: list[TaskResult]) -> str:
    from bertkit.which.charts import summary_rows

    rows, columns, grid, texts = summary_rows(results)
    best = np.nanmax(grid, axis=0)
    header = ["representation"] + [f"{c.replace(chr(10), ' ')} ({r.metric})" for c, r in zip(columns, results)]
    body = [[name] + [f"**{t}**" if grid[i, j] == best[j] else t for j, t in enumerate(texts[i])]
            for i, name in enumerate(rows)]
    return md_table(header, body)


def task_section(r: TaskResult) -> str:
    extra = [k for k in r.scores[0].metrics if k not in (r.metric, "C") and not k.startswith("f1_")]
    rows = [[str(i + 1), s.representation, s.input, f"{s.score:.2f}", *(f"{s.metrics.get(k, float('nan')):.2f}"
             for k in extra)] for i, s in enumerate(r.scores)]
    out = f"### {r.task}: {r.data}\n\n" + reading(r) + "\n\n"
    out += md_table(["rank", "representation", "input", r.metric, *extra], rows)
    out += "\n" + "".join(f"- {n}\n" for n in r.notes) + f"- time: {r.seconds:.0f} s (encoding + probes)\n"
    return out + "\n"


def write_report(results: list[TaskResult], job: ReportJob, output: str | Path, seconds: float = 0.0) -> Path:
    """DIR/report.md, DIR/summary.png and DIR/results.jsonl, through a temporary folder and a rename; returns
    the report.md path."""
    with atomic_folder(output) as tmp, writing(output):  # the folder is one whole report, old or new
        _write_files(results, job, tmp, seconds)
    return Path(output) / "report.md"


def is_report_folder(folder: Path) -> bool:
    """A folder holding nothing but an earlier report's files: a new report may replace it."""
    return {p.name for p in Path(folder).iterdir()} <= set(REPORT_FILES)


def _write_files(results: list[TaskResult], job: ReportJob, out: Path, seconds: float) -> None:
    from bertkit.which.charts import plot_summary

    model = results[0].model
    plot_summary(results, out / "summary.png", f"Which vector for which task: {model} (x100; ★ = best per task)")
    (out / "results.jsonl").write_text("".join(r.json_lines() for r in results), encoding="utf-8")
    text = f"# Which vector for which task: {model}\n\n"
    if job.command:
        text += f"```\n{job.command}\n```\n\n"
    text += f"Total time {seconds:.0f} s. Every metric is x100.\n\n## Recommendation per task\n\n"
    for r in results:
        frozen = [s for s in r.scores if s.input != "fine-tuned"]
        top, runner = frozen[0], (frozen[1] if len(frozen) > 1 else None)
        margin = f", {top.score - runner.score:.1f} ahead of {runner.representation}" if runner else ""
        text += f"- **{r.task}** ({r.data}): use **{top.representation}** ({r.metric} {top.score:.1f}{margin})\n"
    text += "\n![summary: representation x task](summary.png)\n\n## Summary\n\n" + summary_table(results)
    text += "\n## Tasks\n\n" + "".join(task_section(r) for r in results)
    (out / "report.md").write_text(text, encoding="utf-8")


def report(encoder, job: ReportJob, output: str | Path) -> tuple[Path, list[TaskResult]]:
    """run_report + write_report, timed."""
    started = time.perf_counter()
    results = run_report(encoder, job)
    return write_report(results, job, output, time.perf_counter() - started), results
