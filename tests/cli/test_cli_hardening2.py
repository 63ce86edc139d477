"""Issue 29 (hardening, second round), the command line's rows: each test sends exactly the input that broke it.
1 a training --output that holds another model (refused unless --overwrite; the model is written through a
temporary folder and a rename; an unfinished run of the same command still resumes); 11 an unreadable verdicts
file; 14 bad numbers; 15 --output naming a file; 16 outputs that cannot be written, refused before the work;
17 a broken ONNX cache; 20 messages that named the wrong cause; 22 options that meant nothing.
A user error is one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from ce_support import write_pairs
from support import assert_user_error

SENTIMENT = [("a wonderful film", "positive"), ("an awful film", "negative"), ("truly great acting", "positive"),
             ("boring and dreadful", "negative")] * 4


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2 x 128 BERT with the packaged vocabulary: a training run of a few steps takes seconds."""
    import torch

    from bertkit.train.common import save_folder
    from bertkit.train.pretrain import initial_model

    torch.manual_seed(0)
    model, tok = initial_model("none", "tiny", None)
    folder = tmp_path_factory.mktemp("tiny-bert")
    save_folder(model, tok, folder, architectures=["BertForPreTraining"])
    return folder


@pytest.fixture
def texts(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in SENTIMENT), encoding="utf-8")
    return path


def another_model(folder: Path) -> dict[str, bytes]:
    """What a folder holding someone else's sentence-transformers model looks like; its bytes, to compare."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"config.json": b'{"architectures": ["BertModel"]}', "model.safetensors": b"weights",
             "modules.json": b"[]", "notes.txt": b"my own notes"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def train_args(command: str, tiny_model: Path, texts: Path, tmp_path: Path) -> list:
    pairs = write_pairs(tmp_path / "pairs.tsv")
    common = ["--model", tiny_model, "--max-steps", "1", "--batch-size", "8"]
    return {"classify": ["train", "classify", "--train", texts, "--dev", texts, *common],
            "cross-encoder": ["train", "cross-encoder", "--train", pairs, "--dev", pairs, *common],
            "sbert": ["train", "sbert", "--train", pairs, "--dev", pairs, *common]}[command]


# -- row 1 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["classify", "cross-encoder", "sbert"])
def test_row1_training_into_a_folder_holding_another_model_is_refused(run, tiny_model, texts, tmp_path, command):
    out = tmp_path / "theirs"
    files = another_model(out)
    r = run(*train_args(command, tiny_model, texts, tmp_path), "--output", out)
    assert_user_error(r, f"--output {out}", "already holds files", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # not a byte changed


def test_row1_overwrite_replaces_the_whole_folder_through_a_rename(run, tiny_model, texts, tmp_path):
    out = tmp_path / "theirs"
    another_model(out)
    r = run(*train_args("classify", tiny_model, texts, tmp_path), "--output", out, "--overwrite")
    assert r.returncode == 0, r.stderr.decode()
    names = {p.name for p in out.iterdir()}
    assert "modules.json" not in names and "notes.txt" not in names  # no mix of the old model and the new one
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".theirs")] == []  # no temporary folder left


def test_row1_a_folder_holding_this_runs_checkpoint_is_resumed_not_refused(run, tiny_model, texts, tmp_path):
    from bertkit.train.classify import train_classifier
    from bertkit.train.loop import TrainConfig

    out = tmp_path / "model"
    config = TrainConfig(max_steps=2, batch_size=8, checkpoint_every=1, keep_checkpoint=True, progress=False)
    train_classifier(texts, texts, out, model=str(tiny_model), config=config)  # as if killed after step 2
    assert (out / "checkpoint" / "state.pt").is_file()
    r = run("train", "classify", "--train", texts, "--dev", texts, "--model", tiny_model, "--max-steps", "2",
            "--batch-size", "8", "--checkpoint-every", "1", "--output", out)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout.decode().splitlines()[-1])["steps"] == 2
    assert not (out / "checkpoint").exists() and (out / "model.safetensors").is_file()


def test_row1_report_refuses_a_folder_of_other_files(run, tmp_path):
    out = tmp_path / "mine"
    files = another_model(out)
    pairs = write_pairs(tmp_path / "pairs.tsv")
    assert_user_error(run("report", "--output", out, "--sts", pairs), "already holds files", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


# -- row 11 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b'{"a": ' + b"7" * 5000 + b"}", b"[" * 100_000, b"\xff\xfe{ not json"])
def test_row11_an_unreadable_verdicts_file_is_a_warning_and_ignored(content, tmp_path, monkeypatch, caplog):
    from bertkit.runtime import verdicts

    path = tmp_path / "verdicts.json"
    path.write_bytes(content)
    monkeypatch.setenv("BERTKIT_VERDICTS", str(path))
    with caplog.at_level(logging.WARNING):
        shown = verdicts.all_verdicts()  # what /info and `bertkit inspect` show
        assert verdicts.choose("bf16", "torch") in ("bf16", "fp32")  # what `serve --precision bf16` asks
    assert set(shown["modes"]) == {"bf16/torch", "int8/torch", "int8/onnx", "int8-static/onnx"}
    assert "ignoring the verdict file" in caplog.text


def test_row11_inspect_with_a_deeply_nested_verdicts_file_is_no_traceback(run, tmp_path, monkeypatch):
    path = tmp_path / "verdicts.json"
    path.write_text("[" * 100_000, encoding="utf-8")
    monkeypatch.setenv("BERTKIT_VERDICTS", str(path))
    r = run("inspect")
    assert r.returncode == 0 and "Traceback" not in r.stderr.decode(), r.stderr.decode()


# -- row 14 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command, option, value, fragment", [
    ("classify", "--lr", "-1", "--lr -1: give a learning rate above 0"),
    ("classify", "--lr", "nan", "--lr nan"),
    ("cross-encoder", "--lr", "0", "--lr 0: give a learning rate above 0"),
    ("sbert", "--lr", "-1", "--lr -1"),
    ("classify", "--epochs", "nan", "--epochs nan"),
])
def test_row14_bad_numbers_are_one_line(run, tiny_model, texts, tmp_path, command, option, value, fragment):
    r = run(*train_args(command, tiny_model, texts, tmp_path), "--output", tmp_path / "out", option, value)
    assert_user_error(r, fragment)
    assert not (tmp_path / "out").exists()


# -- row 15 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["classify", "cross-encoder"])
def test_row15_output_naming_an_existing_file_is_refused_before_training(run, tiny_model, texts, tmp_path, command):
    out = tmp_path / "model.bin"
    out.write_bytes(b"keep me")
    r = run(*train_args(command, tiny_model, texts, tmp_path), "--output", out)
    assert_user_error(r, f"--output {out} is a file, not a folder")
    assert out.read_bytes() == b"keep me"


# -- row 16 --------------------------------------------------------------------------------------------------
# /sys refuses new files even to root (EACCES): a read-only place that any test user can name.


def test_row16_training_into_a_read_only_place_is_refused_before_the_work(run, tiny_model, texts, tmp_path, caplog):
    r = run(*train_args("classify", tiny_model, texts, tmp_path), "--output", "/sys/bertkit-model")
    assert_user_error(r, "cannot write /sys/bertkit-model")
    assert "step 1" not in caplog.text


def test_row16_report_into_a_read_only_place_is_refused_before_the_work(run, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.tsv")
    assert_user_error(run("report", "--output", "/sys/bertkit-report", "--sts", pairs),
                      "cannot write /sys/bertkit-report")


def test_row16_compare_plot_into_a_read_only_place_is_refused_before_the_work(run, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.tsv")
    assert_user_error(run("compare", pairs, "--plot", "/sys/bertkit.png"), "cannot write /sys/bertkit.png")


def test_row16_calibrate_output_naming_a_folder_is_refused_before_the_work(run, tmp_path):
    (tmp_path / "texts.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    assert_user_error(run("calibrate", tmp_path / "texts.txt", "--output", tmp_path),
                      f"--output {tmp_path} is a folder")


# -- row 17 --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory, packaged_dir) -> Path:
    """A small random BERT with its fp32 ONNX graph cached beside it."""
    import torch
    from support import run_process

    from bertkit.model import Bert, BertConfig, save_model
    from bertkit.tokenizer import BertTokenizer

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("small-bert")
    save_model(Bert(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
                    pooler=True), folder)
    BertTokenizer.from_dir(packaged_dir).save(folder)
    r = run_process("export", "--model", folder, "--precision", "fp32")
    assert r.returncode == 0, r.stderr.decode()
    return folder


def copy_with_graph(exported: Path, dst: Path) -> tuple[Path, Path]:
    import shutil

    shutil.copytree(exported, dst)
    (graph,) = (dst / "onnx").glob("*-fp32.onnx")
    return dst, graph


def test_row17_a_folder_where_the_graph_should_be_is_one_line(run, exported, tmp_path):
    folder, graph = copy_with_graph(exported, tmp_path / "m")
    graph.unlink()
    graph.mkdir()
    assert_user_error(run("encode", "hi", "--backend", "onnx", "--model", folder),
                      f"cannot write {graph}: it is a folder", "delete it")


def test_row17_a_record_whose_sizes_disagree_is_exported_again(run, exported, tmp_path):
    from bertkit import Encoder

    folder, graph = copy_with_graph(exported, tmp_path / "m")
    record = graph.with_name(graph.name + ".json")
    record.write_text(json.dumps(json.loads(record.read_text()) | {"hidden_size": 32, "num_hidden_layers": 5}))
    r = run("encode", "hi", "--backend", "onnx", "--model", folder, "--pooling", "mean")
    assert r.returncode == 0, r.stderr.decode()
    assert "exporting again" in r.stderr.decode()
    got = json.loads(r.stdout.decode().splitlines()[0])
    want = Encoder.load(folder, device="cpu").encode("hi", pooling="mean")[0]
    assert len(got) == 64 and max(abs(a - b) for a, b in zip(got, want)) < 1e-5


# -- row 20 --------------------------------------------------------------------------------------------------


def test_row20_a_folder_given_as_a_data_file_says_folder(run, tmp_path):
    r = run("train", "classify", "--train", tmp_path, "--output", tmp_path / "out")
    assert_user_error(r, f"data file {tmp_path} is a folder")


def test_row20_rerank_input_errors_do_not_suggest_an_option_it_lacks(run, tmp_path):
    (tmp_path / "docs.txt").write_text("one\n\nthree\n", encoding="utf-8")
    r = run("rerank", tmp_path, "query", "--input", tmp_path / "docs.txt")
    assert_user_error(r, "line 2 is empty")
    assert "--skip-bad-lines" not in r.stderr.decode()


def test_row20_a_tsv_given_as_a_calibration_is_not_called_pickled(run, tmp_path):
    from bertkit.errors import BertkitError
    from bertkit.vectors.compact import Calibration

    path = write_pairs(tmp_path / "pairs.tsv")
    with pytest.raises(BertkitError) as e:
        Calibration.load(path)
    assert "pickled" not in str(e.value) and "not an .npz file" in str(e.value)
    r = run("encode", "hi", "--dtype", "int8", "--calibration", path)
    assert_user_error(r, "not an .npz file")
    assert "pickled" not in r.stderr.decode()


def test_row20_plain_sentences_for_a_cross_encoder_do_not_say_line_0(run, tiny_model, tmp_path):
    (tmp_path / "s.txt").write_text("one sentence\nanother one\n", encoding="utf-8")
    r = run("train", "cross-encoder", "--train", tmp_path / "s.txt", "--model", tiny_model, "--output",
            tmp_path / "out")
    assert_user_error(r, "holds single texts", "pairs")
    assert "line 0" not in r.stderr.decode()


def test_row20_a_file_as_a_model_folder_does_not_name_model_when_none_was_given(run, tmp_path):
    path = tmp_path / "not-a-folder"
    path.write_text("x", encoding="utf-8")
    r = run("rerank", path, "query", "a doc")
    assert_user_error(r, f"{path} is a file, not a model folder")
    assert "--model" not in r.stderr.decode()


def test_row20_a_certificate_without_keyfile_does_not_say_keyfile_none(run, tmp_path):
    from bertkit.errors import OptionError
    from bertkit.serve.tls import check_tls

    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", encoding="utf-8")
    with pytest.raises(OptionError) as e:
        check_tls(cert, None)
    assert "None" not in str(e.value) and f"--ssl-certfile {cert}" in str(e.value)


# -- row 22 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, fragment", [(["--silver-random", "100"], "--silver-random is for --silver-from"),
                                             (["--silver-k", "3"], "--silver-k is for --silver-from")])
def test_row22_silver_options_without_silver_from_are_refused(run, tiny_model, texts, tmp_path, extra, fragment):
    r = run(*train_args("cross-encoder", tiny_model, texts, tmp_path), "--output", tmp_path / "out", *extra)
    assert_user_error(r, fragment)


def test_row22_rescore_on_an_exact_index_is_refused(run, tmp_path, encoder):
    from bertkit.corpus import CorpusJob, embed_corpus

    (tmp_path / "docs.txt").write_text("one doc\nanother doc\na third\n", encoding="utf-8")
    embed_corpus(CorpusJob(tmp_path / "docs.txt", tmp_path / "emb"), encoder=encoder)
    r = run("index", "build", tmp_path / "emb", "--output", tmp_path / "idx", "--rescore", "10")
    assert_user_error(r, "--rescore 10 means nothing for --kind exact")
    assert not (tmp_path / "idx").exists()
