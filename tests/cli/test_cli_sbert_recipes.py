"""`bertkit train sbert` with several datasets, per-file losses and --recipe: bad input is one line and exit 2;
a short multi-dataset recipe run saves a model that sentence-transformers loads with the same vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import assert_user_error

STSB_ROWS = [
    (4.0, "A man is playing a guitar.", "Someone plays an instrument."),
    (0.2, "A cat sits on a mat.", "The stock market fell."),
    (4.8, "A woman slices an onion.", "A woman cuts an onion."),
    (1.5, "Two dogs play in snow.", "No dogs are playing."),
    (4.5, "A plane takes off.", "An aircraft is departing."),
    (0.0, "A child rides a horse.", "A man eats soup."),
]
SICK_ROWS = [
    ("A man plays a guitar", "A man plays an instrument", 4.5, "ENTAILMENT"),
    ("A man plays a guitar", "Nobody plays a guitar", 2.5, "CONTRADICTION"),
    ("A dog runs in a park", "A dog is running outside", 4.7, "ENTAILMENT"),
    ("A woman cooks food", "A person is swimming", 1.2, "NEUTRAL"),
    ("Kids play football", "Children are playing a game", 4.1, "ENTAILMENT"),
    ("Kids play football", "No kids are playing", 2.0, "CONTRADICTION"),
]


@pytest.fixture()
def files(tmp_path):
    stsb = tmp_path / "stsb.tsv"
    stsb.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(STSB_ROWS)),
                    encoding="utf-8")
    sick = tmp_path / "sick.txt"
    sick.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                    + "".join(f"{i}\t{a}\t{b}\t{s}\t{lab}\n" for i, (a, b, s, lab) in enumerate(SICK_ROWS)),
                    encoding="utf-8")
    nli = tmp_path / "nli.jsonl"  # class labels, no scores
    nli.write_text("".join(json.dumps({"premise": a, "hypothesis": b, "label": lab.lower()}) + "\n"
                           for a, b, _, lab in SICK_ROWS), encoding="utf-8")
    negatives_only = tmp_path / "neg.jsonl"  # no entailed pair at all: nothing left for mnrl
    negatives_only.write_text("".join(json.dumps({"premise": a, "hypothesis": b, "label": "contradiction"}) + "\n"
                                      for _, a, b in STSB_ROWS), encoding="utf-8")
    unknown = tmp_path / "notes.dat"  # one text a line: no pairs in any format
    unknown.write_text("just some words\nand more words\n", encoding="utf-8")
    return {"stsb": stsb, "sick": sick, "nli": nli, "neg": negatives_only, "unknown": unknown}


def test_bad_inputs_one_line_exit_2(run, files, tmp_path):
    out = ["--output", str(tmp_path / "out")]
    assert_user_error(run("train", "sbert", "--train", files["unknown"], *out), "--train", "notes.dat",
                      "not sentence pairs", "--format")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--train", files["nli"],
                          "--loss", "cosent", *out),
                      "nli.jsonl", "--loss cosent needs a score")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--loss", "softmax", *out),
                      "stsb.tsv", "--loss softmax needs a class label")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--train", files["neg"], "--loss", "cosent",
                          "--loss", "mnrl", "--max-steps", "1", *out), "neg.jsonl", "at least 2 positive pairs")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--minutes", "0", *out), "--minutes 0")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--recipe", "best", "--loss", "cosent", *out),
                      "drop --loss")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--recipe", "fastest", *out), "--recipe fastest")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--train", files["sick"], "--loss", "cosent",
                          "--loss", "mnrl", "--loss", "angle", *out), "3 --loss for 2 --train")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--sampling", "random", *out),
                      "--sampling random")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--matryoshka", "384,x", *out), "--matryoshka")
    assert_user_error(run("train", "sbert", "--train", files["stsb"], "--matryoshka", "999", "--max-steps", "1", *out),
                      "Matryoshka dims [999]")


def test_recipe_best_two_files_two_devs_silver_matryoshka_loads_in_sentence_transformers(run, files, tmp_path):
    from ce_support import train_tiny_cross_encoder
    from sentence_transformers import SentenceTransformer

    from bertkit.encoder import Encoder

    ce = train_tiny_cross_encoder(tmp_path)  # Augmented SBERT: silver pairs scored by a (tiny) cross-encoder
    out = tmp_path / "best"
    r = run("train", "sbert", "--recipe", "best", "--train", files["stsb"], "--train", files["sick"],
            "--dev", files["stsb"], "--dev", files["sick"], "--max-steps", "3", "--batch-size", "4",
            "--matryoshka", "384,128", "--silver-from", ce, "--output", out)
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout.decode().splitlines()[-1])
    per_dev = [v for k, v in summary.items() if k.startswith("spearman:")]
    assert len(per_dev) == 2 and summary["spearman"] == pytest.approx(sum(per_dev) / 2)
    texts = [a for _, a, _ in STSB_ROWS] + ["Hi"]
    ours = Encoder.load(out).encode(texts, pooling="mean")
    assert np.abs(ours - Encoder.load().encode(texts, pooling="mean")).max() > 1e-5  # trained
    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode(texts, convert_to_numpy=True), ours, atol=1e-5)
    short = SentenceTransformer(str(out), device="cpu", truncate_dim=128).encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(short, ours[:, :128], atol=1e-5)
