"""Token classification: word-to-wordpiece alignment, CoNLL entity scoring (checked against seqeval), training
on a small BIO set, entity spans with character offsets, transformers parity, and bad input."""

from __future__ import annotations

import json
import random

import pytest
import torch

from bertkit.data import DataError, TaggedSentence
from bertkit.data.metrics import bio_spans, entity_prf
from bertkit.errors import InputError
from bertkit.heads.predict import Tagger, encode_sentences, word_spans
from bertkit.tokenizer import BertTokenizer
from bertkit.train.common import save_folder
from bertkit.train.loop import TrainConfig
from bertkit.train.ner import align_labels, train_ner
from bertkit.train.pretrain import initial_model

PEOPLE = [["john", "smith"], ["mary"], ["angela", "merkel"], ["peter"]]
PLACES = [["paris"], ["london"], ["new", "york"], ["berlin"]]
VERBS = ["visited", "left", "loves", "saw"]


def conll_text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        who, verb, where = rng.choice(PEOPLE), rng.choice(VERBS), rng.choice(PLACES)
        lines += [f"{w} {'B' if i == 0 else 'I'}-PER 0" for i, w in enumerate(who)]
        lines.append(f"{verb} O 0")
        lines += [f"{w} {'B' if i == 0 else 'I'}-LOC 0" for i, w in enumerate(where)]
        lines.append(". O 0")
        lines.append("")
    return "-DOCSTART- -X- O O\n\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def tokenizer(packaged_dir) -> BertTokenizer:
    return BertTokenizer.from_dir(packaged_dir)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model, tok = initial_model("none", "tiny", None)
    folder = tmp_path_factory.mktemp("tiny-bert")
    save_folder(model, tok, folder, architectures=["BertForPreTraining"])
    return str(folder)


def test_alignment_first_subtoken_labelled(tokenizer):
    s = TaggedSentence(["Schwarzenegger", "visited", "Wolfsburg", "."], ["B-PER", "O", "B-LOC", "O"])
    (enc,), (words,) = encode_sentences(tokenizer, [s])
    labels = align_labels(words, [7, 0, 1, 0])
    pieces = enc.tokens
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and labels[0] == labels[-1] == -100
    first = {w: i for i, w in reversed(list(enumerate(words))) if w is not None}
    for i, (w, lab) in enumerate(zip(words, labels)):
        if w is None:
            continue
        assert lab == ([7, 0, 1, 0][w] if i == first[w] else -100)
    assert sum(1 for lab in labels if lab != -100) == 4  # one label per word, whatever the wordpiece count
    assert len(pieces) > 6  # the long names are split into several wordpieces


def test_truncation_keeps_labels_aligned(tokenizer):
    short = BertTokenizer(tokenizer.tokenizer.__class__.from_str(tokenizer.tokenizer.to_str()), 16)
    tokens = [f"w{i}" if i % 3 else "Wolfsburg" for i in range(40)]
    tags = ["B-LOC" if t == "Wolfsburg" else "O" for t in tokens]
    (enc,), (words,) = encode_sentences(short, [TaggedSentence(tokens, tags)])
    assert enc.overflowing and len(enc.ids) == 16
    labels = align_labels(words, [1 if t == "B-LOC" else 0 for t in tags])
    _, spans = word_spans(tokens)
    for (a, b), w, lab in zip(enc.offsets, words, labels):
        if lab != -100:  # a labelled piece starts the word it is labelled for
            assert spans[w][0] == a and lab == (1 if tokens[w] == "Wolfsburg" else 0)
    assert max(w for w in words if w is not None) < 40


def test_entity_scores_match_seqeval():
    from seqeval.metrics import f1_score, precision_score, recall_score

    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
    ours = entity_prf(gold, pred)
    assert ours["f1"] == pytest.approx(100 * f1_score(gold, pred), abs=1e-6)
    assert ours["precision"] == pytest.approx(100 * precision_score(gold, pred), abs=1e-6)
    assert ours["recall"] == pytest.approx(100 * recall_score(gold, pred), abs=1e-6)
    spans = bio_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"])
    assert spans == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6)]


def test_train_predict_offsets_and_transformers_parity(tmp_path, tiny_model):
    import transformers

    (tmp_path / "train.txt").write_text(conll_text(150, 0))
    (tmp_path / "dev.txt").write_text(conll_text(30, 1))
    out = tmp_path / "ner"
    r = train_ner(tmp_path / "train.txt", tmp_path / "dev.txt", out, model=tiny_model,
                  config=TrainConfig(epochs=3, batch_size=16, lr=3e-3, progress=False))
    assert r.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert r.dev_metrics["f1"] > 90, r.dev_metrics
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["label2id"]["B-PER"] == 3

    tagger = Tagger.load(out, device="cpu")
    text = "Angela Merkel saw  New York."  # original case and spacing come back through the offsets
    ents = tagger.entities(text)
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in ents] == [
        ("PER", "Angela Merkel", 0, 13), ("LOC", "New York", 19, 27)]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in ents)

    theirs = transformers.BertForTokenClassification.from_pretrained(out).eval()
    batch = tagger.tokenizer([text, "mary saw paris ."])
    with torch.no_grad():
        ref = theirs(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     token_type_ids=batch.token_type_ids).logits
        mine = tagger.model(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits
    real = batch.attention_mask.bool()
    assert torch.allclose(mine[real], ref[real], atol=1e-4)
    assert theirs.config.id2label[3] == "B-PER"


def test_bad_inputs(tmp_path, tiny_model):
    (tmp_path / "train.txt").write_text(conll_text(10, 0))
    bad = tmp_path / "bad.txt"
    bad.write_text("john B-PER 0\nvisited O 0\nparis\n. O 0\n")
    with pytest.raises(DataError, match="line 3"):
        train_ner(tmp_path / "train.txt", bad, tmp_path / "o", model=tiny_model,
                  config=TrainConfig(max_steps=1, progress=False))
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("ibm B-ORG 0\nrose O 0\n")
    with pytest.raises(InputError, match="tag 'B-ORG'.*was not seen in training"):
        train_ner(tmp_path / "train.txt", unseen, tmp_path / "o", model=tiny_model,
                  config=TrainConfig(max_steps=1, progress=False))
    empty = tmp_path / "empty.txt"
    empty.write_text("-DOCSTART- -X- O O\n\n")
    with pytest.raises(InputError, match="holds no tagged sentences"):
        train_ner(empty, empty, tmp_path / "o", model=tiny_model, config=TrainConfig(max_steps=1, progress=False))
    # --skip-bad-rows: the malformed line is skipped, training runs
    r = train_ner(tmp_path / "train.txt", bad, tmp_path / "ok", model=tiny_model, skip_bad=True,
                  config=TrainConfig(max_steps=1, batch_size=8, progress=False))
    assert r.dev_sentences == 1 and r.train.steps == 1
