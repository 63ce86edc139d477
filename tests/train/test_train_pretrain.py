"""MLM + NSP pretraining: masking statistics, NSP pairs, loss going down from scratch, and a continued
packaged model that fill-mask uses and transformers' BertForPreTraining reproduces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bertkit.errors import InputError
from bertkit.train.loop import TrainConfig
from bertkit.train.pretrain import make_pairs, mask_tokens, pretrain, read_corpus

CORPUS = Path(__file__).parents[1] / "fixtures" / "pretrain_corpus.txt"


def test_read_corpus_and_pairs():
    docs = read_corpus([CORPUS])
    assert len(docs) == 14 and docs[0][0] == "A young girl sat on the garden."
    # NSP pairs on documents of unique sentences "d<doc>s<sentence>"
    docs = [[f"d{i}s{j}" for j in range(n)] for i, n in enumerate([1, 4, 6, 3, 8, 2] * 5)]
    pairs = make_pairs(docs, seed=0)
    assert len(pairs) == sum(max(1, len(d) - 1) for d in docs)
    randoms = [p for p in pairs if p[2] == 1]
    assert 0.4 < len(randoms) / len(pairs) < 0.7  # one-sentence documents can only give random pairs
    for a, b, is_random in pairs:
        da, sa = map(int, a[1:].split("s"))
        db, sb = map(int, b[1:].split("s"))
        assert (db != da) if is_random else (db == da and sb == sa + 1)


def test_masking_proportions():
    from bertkit.model import default_model_dir
    from bertkit.tokenizer import BertTokenizer

    tok = BertTokenizer.from_dir(default_model_dir())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (200, 100), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    masked, labels = mask_tokens(ids, special, tok, torch.Generator().manual_seed(1))
    picked = labels != -100
    assert not picked[special].any()
    assert 0.14 < picked.float().mean() / (~special).float().mean() < 0.16
    assert torch.equal(labels[picked], ids[picked])
    as_mask = (masked[picked] == tok.mask_id).float().mean()
    kept = (masked[picked] == ids[picked]).float().mean()
    assert 0.77 < as_mask < 0.83 and 0.08 < kept < 0.12  # the other ~10% are random tokens
    assert torch.equal(masked[~picked], ids[~picked])


def test_from_scratch_tiny_mlm_loss_goes_down(tmp_path):
    r = pretrain([CORPUS], tmp_path / "tiny", init="none", size="tiny", heldout=0.15,
                 config=TrainConfig(max_steps=30, batch_size=16, lr=5e-3, eval_every=30, progress=False))
    assert r.train.steps == 30
    # random init predicts ~uniformly over 30k wordpieces (loss ~ln 30522 = 10.3); the corpus is tiny and regular
    assert r.before["mlm_loss"] > 9.5
    assert r.after["mlm_loss"] < r.before["mlm_loss"] - 3
    assert r.after["mlm_accuracy"] > r.before["mlm_accuracy"]
    assert r.unigram_token in (".", "the")


def test_continued_packaged_model_loads_in_transformers_and_fills_masks(tmp_path, encoder):
    import transformers

    from bertkit import Encoder
    from bertkit.cli import app  # noqa: F401  (the fill-mask command below runs the real CLI)

    out = tmp_path / "continued"
    r = pretrain([CORPUS], out, init="default", heldout=0.15,
                 config=TrainConfig(max_steps=2, batch_size=8, lr=1e-4, progress=False))
    assert r.after["nsp_accuracy"] >= 0 and (out / "model.safetensors").is_file()
    ours = Encoder.load(out, device="cpu")
    assert ours.model.has_mlm and ours.model.has_nsp
    assert torch.equal(ours.model.cls.predictions.decoder.weight, ours.model.bert.embeddings.word_embeddings.weight)
    (preds,) = ours.fill_mask("The [MASK] sat on the mat.", top_k=3)
    assert len(preds) == 3 and all(isinstance(t, str) and 0 <= p <= 1 for t, p in preds)
    assert 0 <= ours.next_sentence("The cat sat on the mat.", "It was a sunny day.") <= 1

    theirs = transformers.BertForPreTraining.from_pretrained(out).eval()
    texts, pairs = ["The cat sat on the mat.", "A dog"], ["It was a sunny day.", "ran in the long green park."]
    batch = ours.tokenize(texts, pairs)
    mine = ours.forward(texts, pairs)
    with torch.no_grad():
        ref = theirs(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     token_type_ids=batch.token_type_ids)
    real = batch.attention_mask.bool()
    assert torch.allclose(mine.mlm_logits[real], ref.prediction_logits[real], atol=1e-4)
    assert torch.allclose(mine.nsp_logits, ref.seq_relationship_logits, atol=1e-4)


def test_fill_mask_cli_on_pretrained_folder(tmp_path, capsys):
    import sys

    from bertkit.cli import main

    out = tmp_path / "tiny"
    pretrain([CORPUS], out, init="none", size="tiny", config=TrainConfig(max_steps=1, batch_size=8, progress=False))
    sys.argv = ["bertkit", "fill-mask", "The [MASK] sat on the mat.", "--model", str(out), "--top-k", "2"]
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None)
    printed = capsys.readouterr().out
    assert printed.startswith("[MASK] #1:") and len(printed.strip().splitlines()) == 3


def test_bad_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="fewer than two sentences"):
        read_corpus([empty])
    with pytest.raises(ValueError, match="--size"):
        pretrain([CORPUS], tmp_path / "x", init="none", size="huge", config=TrainConfig(max_steps=1, progress=False))
