"""The sparse and cross-encoder commands as a user runs them: `encode --sparse`, `expand`, `train
cross-encoder`, `rerank`, `embed-corpus --sparse` -> `index build --kind sparse` -> `search --rerank`, and
each refusal as one line with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ce_support import write_pairs
from support import assert_user_error

from bertkit import Encoder

DOCS = [
    "OPEC agreed to cut oil production to lift crude prices.",
    "The cat sat on the mat in the sun.",
    "A man is playing a guitar on the stage.",
    "Stock markets fell sharply after the bank raised interest rates.",
]


def test_encode_sparse_and_expand(run, tmp_path):
    r = run("encode", "--sparse", "--top-k", "4", "A man is playing a guitar.", "Oil prices rose.", "-m", "splade-tiny")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    splade = Encoder.load("splade-tiny", device="cpu")
    expected = splade.encode_sparse(["A man is playing a guitar.", "Oil prices rose."], top_k=4)
    assert [row["indices"] for row in rows] == [expected.indices[:4].tolist(), expected.indices[4:].tolist()]
    np.testing.assert_allclose(rows[0]["values"], expected.data[:4], atol=1e-5)

    from scipy.sparse import load_npz

    r = run("encode", "--sparse", "A cat.", "-m", "splade-tiny", "-o", tmp_path / "v.npz")
    assert r.returncode == 0, r.stderr
    assert load_npz(tmp_path / "v.npz").shape == (1, 30522)

    r = run("expand", "A man is playing a guitar.", "-m", "splade-tiny", "-k", "5", "--json")
    terms = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert r.returncode == 0 and len(terms) == 5 and terms[0]["term"] == "guitar"


def test_train_rerank_and_search_with_rerank(run, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.tsv")
    r = run("train", "cross-encoder", "--train", pairs, "--dev", pairs, "--output", tmp_path / "ce",
            "-m", "splade-tiny",
            "--max-steps", "2", "--batch-size", "8", "--freeze-embeddings", "--checkpoint-every", "1000")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.decode().splitlines()[-1])
    assert summary["steps"] == 2 and summary["score_range"] == "0,4.6" and "spearman" in summary

    r = run("rerank", tmp_path / "ce", "cats", *DOCS, "--json", "--top-k", "2")
    assert r.returncode == 0, r.stderr
    ranked = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [x["rank"] for x in ranked] == [1, 2] and ranked[0]["text"] == DOCS[ranked[0]["index"]]
    assert ranked[0]["score"] >= ranked[1]["score"]

    (tmp_path / "docs.txt").write_text("\n".join(DOCS) + "\n")
    assert run("embed-corpus", tmp_path / "docs.txt", tmp_path / "emb", "--sparse", "-m", "splade-tiny").returncode == 0
    r = run("index", "build", tmp_path / "emb", "-o", tmp_path / "idx", "--kind", "sparse")
    assert r.returncode == 0, r.stderr
    r = run("search", tmp_path / "idx", "oil prices", "-k", "2", "--json")
    hits = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert r.returncode == 0 and hits[0]["id"] == "0" and hits[0]["text"] == DOCS[0]
    r = run("search", tmp_path / "idx", "oil prices", "-k", "2", "--json", "--rerank", tmp_path / "ce",
            "--candidates", "4")
    reranked = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert r.returncode == 0 and [h["rank"] for h in reranked] == [1, 2], r.stderr
    ce = run("rerank", tmp_path / "ce", "oil prices", *DOCS, "--json")
    assert [h["text"] for h in reranked] == [x["text"] for x in map(json.loads, ce.stdout.decode().splitlines())][:2]

    # The refusals that need these folders.
    assert_user_error(run("rerank", tmp_path / "ce", "a query"), "no documents to rank")
    assert_user_error(run("rerank", tmp_path / "ce", "q", "word " * 600, "--no-truncate"),
                      "query + document 0 is longer than the model's limit of 512 tokens")
    assert_user_error(run("search", tmp_path / "idx", "q", "--rerank", tmp_path / "ce", "--candidates", "0"),
                      "--candidates 0: give at least 1")
    assert_user_error(run("search", tmp_path / "idx", "q", "--candidates", "5"), "--candidates is for --rerank DIR")
    assert_user_error(run("search", tmp_path / "idx", "q", "--rerank", "splade-tiny"), "not a cross-encoder")
    packaged = Encoder.load(device="cpu").path
    assert_user_error(run("search", tmp_path / "idx", "q", "--model", packaged),
                      "is a sparse index", "masked-LM head", "splade-tiny")
    assert_user_error(run("index", "build", tmp_path / "emb", "-o", tmp_path / "dense"), "--kind sparse")


def test_train_cross_encoder_with_silver_pairs_in_both_orders(run, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.tsv")  # 16 gold pairs, 12 distinct sentences
    packaged = Encoder.load(device="cpu").path
    r = run("train", "cross-encoder", "--train", pairs, "--dev", pairs, "--output", tmp_path / "ce",
            "-m", "splade-tiny",
            "--max-steps", "1", "--batch-size", "8", "--checkpoint-every", "1000", "--symmetric",
            "--silver-from", packaged, "--silver-k", "1", "--silver-random", "3")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.decode().splitlines()[-1])
    assert summary["train_examples"] == 16 and 3 < summary["silver_examples"] <= 12 + 3
    assert (tmp_path / "ce" / "config.json").is_file()
    assert_user_error(run("train", "cross-encoder", "--train", pairs, "-o", tmp_path / "ce2", "-m", "splade-tiny",
                          "--silver-from", tmp_path / "no-such-model"), "no-such-model")
    assert not (tmp_path / "ce2").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["encode", "--sparse", "A text."], ["a sparse (SPLADE) vector needs the masked-LM head"]),
        (["expand", "A text."], ["masked-LM head"]),
        (["encode", "--sparse", "x", "-m", "splade-tiny", "-o", "v.npy"], ["unknown format '.npy'", ".npz"]),
        (["encode", "x", "--top-k", "3"], ["--top-k is for --sparse"]),
        (["rerank", "splade-tiny", "q", "d"], ["is not a cross-encoder (architectures=BertForMaskedLM)"]),
        (["rerank", "splade-tiny", "q"], ["no documents to rank"]),
        (["train", "cross-encoder", "--train", "t.tsv", "-o", "out", "--score-range", "5"], ["--score-range '5'"]),
        (["train", "cross-encoder", "--train", "t.tsv", "-o", "out", "--silver-from", "x", "--silver-k", "0"],
         ["--silver-k 0 --silver-random 0: give"]),
    ],
)
def test_user_errors_exit_2_with_one_line(run, args, fragments, tmp_path):
    assert_user_error(run(*args, cwd=tmp_path), *fragments)
