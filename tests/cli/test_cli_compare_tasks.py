"""`bertkit compare --task` and `bertkit report` (issue 14): JSON lines, charts, the report folder, and one line
with exit status 2 for every input that does not fit."""

from __future__ import annotations

import json

import pytest
from support import assert_user_error
from taskdata import (
    ner_sentences,
    reviews,
    write_conll,
    write_labelled,
    write_labelled_pairs,
    write_sts,
)


@pytest.fixture
def files(tmp_path):
    return {
        "texts": write_labelled(tmp_path / "texts.tsv", reviews()),
        "pairs": write_labelled_pairs(tmp_path / "pairs.tsv"),
        "sts": write_sts(tmp_path / "sts.tsv"),
        "conll": write_conll(tmp_path / "ner.txt", ner_sentences(40)),
    }


def json_lines(result) -> list[dict]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_compare_classify_json_lines_name_task_pooling_layers_metric_score(run, files):
    rows = json_lines(run("compare", files["texts"], "--json", "--max-train", "40"))  # the task is inferred
    assert {r["task"] for r in rows} == {"classify"} and {r["metric"] for r in rows} == {"accuracy"}
    assert {r["pooling"] for r in rows} == {"cls", "pooler", "mean", "max", "mean_sqrt_len", "first_last_avg",
                                           "mask_prompt"}
    assert all({"task", "pooling", "layers", "metric", "score", "model", "n"} <= set(r) for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_compare_pair_ner_retrieval_tables_and_charts(run, files, tmp_path):
    r = run("compare", files["pairs"], "--task", "pair", "--layers", "--plot", tmp_path / "pair.png")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "pair:cls" in out and "pair:pooler" in out and "ranks first" in out and "held-out" in out
    assert (tmp_path / "pair.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "pair.layers.png").read_bytes()[:4] == b"\x89PNG"  # heat map representation x layer
    rows = json_lines(run("compare", files["conll"], "--json", "--plot", tmp_path / "ner.png"))
    assert sorted(r["layers"][0] for r in rows) == list(range(7)) and rows[0]["metric"] == "f1"
    assert (tmp_path / "ner.layers.png").is_file()
    rows = json_lines(run("compare", files["pairs"], "--task", "retrieval", "--json"))
    assert {r["metric"] for r in rows} == {"mrr@10"} and all("recall@10" in r["metrics"] for r in rows)


def test_compare_sts_keeps_its_output_and_takes_several_models(run, files, packaged_dir, tmp_path):
    r = run("compare", files["sts"], "--json", "--plot", tmp_path / "sts.png")  # as before: one JSON document
    assert r.returncode == 0 and json.loads(r.stdout)["poolings"][0]["spearman"] > 0
    rows = json_lines(run("compare", files["sts"], "--task", "sts", "--model", packaged_dir, "--model",
                          packaged_dir, "--json"))
    assert len(rows) == 14 and {r["metric"] for r in rows} == {"spearman"}


def test_report_writes_the_folder(run, files, packaged_dir, tmp_path):
    r = run("report", "--output", tmp_path / "rep", "--sts", files["sts"], "--classify", files["texts"],
            "--pair", files["pairs"], "--retrieval", files["sts"], "--finetuned", f"sts={packaged_dir}")
    assert r.returncode == 0, r.stderr.decode()
    assert "classify" in r.stdout.decode() and "use " in r.stdout.decode()
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "bertkit report --output" in text and "| representation |" in text
    assert f"fine-tuned: {packaged_dir.name}" in text  # a sentence encoder as the fine-tuned sts row
    assert (tmp_path / "rep" / "summary.png").read_bytes()[:4] == b"\x89PNG"


def bad_files(tmp_path) -> dict:
    (tmp_path / "plain.txt").write_text("one sentence\nanother sentence\n", encoding="utf-8")
    write_labelled(tmp_path / "one_class.tsv", [(t, "pos") for t, _ in reviews()])
    write_labelled(tmp_path / "scores.tsv", [(t, f"{i / 7:.3f}") for i, (t, _) in enumerate(reviews())],
                   header=("text", "score"))
    write_labelled(tmp_path / "few.tsv", reviews()[:2] + reviews()[-3:])
    return {k: tmp_path / v for k, v in
            {"plain": "plain.txt", "one": "one_class.tsv", "scores": "scores.tsv", "few": "few.tsv"}.items()}


@pytest.mark.parametrize("case, fragment", [
    ("plain", "class label"),  # a file without labels for classify
    ("one", "single class"),
    ("scores", "are scores"),  # scores for classify
    ("sts", "--task pair"),  # scored pairs for classify: says which task fits
    ("few", "too few rows for cross-validation"),
])
def test_classify_refuses_files_that_do_not_fit(run, files, tmp_path, case, fragment):
    path = files.get(case) or bad_files(tmp_path)[case]
    assert_user_error(run("compare", path, "--task", "classify"), fragment)


@pytest.mark.parametrize("args, fragment", [
    (["texts", "--task", "pair"], "no sentence pairs"),
    (["sts", "--task", "pair"], "no class label"),
    (["texts", "--task", "ner"], "not CoNLL"),
    (["conll", "--task", "retrieval"], "no sentence pairs"),
    (["sts", "--task", "nli"], "unknown task"),
    (["sts", "--task", "sts", "--test", "@sts"], "--test is for tasks"),
])
def test_compare_refuses_a_task_that_does_not_fit(run, files, args, fragment):
    first, *rest = args
    assert_user_error(run("compare", files[first], *[files[a[1:]] if a[0] == "@" else a for a in rest]), fragment)


@pytest.mark.parametrize("option, fragment", [
    ("ner={packaged}", "plain encoder"),  # a sentence encoder where a token tagger is needed
    ("classify={packaged}", "no --classify FILE"),
    ("sts", "TASK=DIR"),
])
def test_report_refuses_a_finetuned_folder_of_the_wrong_kind(run, files, packaged_dir, tmp_path, option, fragment):
    r = run("report", "-o", tmp_path / "rep", "--ner", files["conll"], "--finetuned",
            option.format(packaged=packaged_dir))
    assert_user_error(r, fragment)
    assert not (tmp_path / "rep").exists()  # refused before any work
