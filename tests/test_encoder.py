"""The Encoder API: parity with sentence-transformers and transformers, order, token vectors, heads, bad input."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from bertkit import Encoder
from bertkit.errors import InputError, MissingHeadError, ModelNotFoundError

TEXTS = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog finally gets up and leaves.",
    "Hi",
    "Stock markets fell sharply on Tuesday.",
    "A woman is slicing an onion in the kitchen.",
]


def test_mean_normalized_equals_sentence_transformers(encoder, packaged_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(packaged_dir), device="cpu")
    ours = encoder.encode(TEXTS, pooling="mean", normalize=True, batch_size=2)
    theirs = st.encode(TEXTS, batch_size=2)
    assert ours.dtype == np.float32 and ours.shape == (5, 384)
    assert np.abs(ours - theirs).max() < 1e-5


def test_results_come_back_in_input_order(encoder):
    together = encoder.encode(TEXTS, batch_size=2)  # batches are length-sorted internally
    one_by_one = np.stack([encoder.encode(t)[0] for t in TEXTS])
    assert np.abs(together - one_by_one).max() < 1e-5


def test_empty_list_gives_an_empty_array(encoder):
    assert encoder.encode([]).shape == (0, 384)


def test_encode_tokens_gives_tokens_offsets_and_vectors(encoder):
    text = "Angela Merkel visited Paris."
    (tv,) = encoder.encode_tokens([text])
    assert tv.tokens == ["[CLS]", "angela", "mer", "##kel", "visited", "paris", ".", "[SEP]"]
    assert [text[s:e] for s, e in tv.offsets[1:-1]] == ["Angela", "Mer", "kel", "visited", "Paris", "."]
    out = encoder.forward([text])
    assert np.abs(tv.vectors - out.last_hidden_state[0].numpy()).max() < 1e-5
    (layer2,) = encoder.encode_tokens([text], layers=[2])
    hidden = encoder.forward([text], output_hidden_states=True).hidden_states[2][0].numpy()
    assert np.abs(layer2.vectors - hidden).max() < 1e-5


def test_similarity_orders_related_above_unrelated(encoder):
    related = encoder.similarity("A man is playing a guitar.", "Someone plays an instrument.")
    unrelated = encoder.similarity("A man is playing a guitar.", "Stock markets fell sharply on Tuesday.")
    assert related > 0.4 and unrelated < 0.1
    sims = encoder.similarity(TEXTS[:2], TEXTS[:2])
    assert np.allclose(sims, 1.0, atol=1e-5)


def test_forward_pairs_set_token_types(encoder):
    out = encoder.forward(["first"], ["second"], output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 7 and len(out.attentions) == 6
    assert out.attentions[0].shape == (1, 12, 5, 5)


def test_packaged_model_has_no_mlm_or_nsp_head_and_says_how_to_get_them(encoder):
    with pytest.raises(MissingHeadError, match=r"masked-LM head.*bertkit pretrain"):
        encoder.fill_mask("The [MASK] sat on the mat.")
    with pytest.raises(MissingHeadError, match=r"next-sentence-prediction head.*bert-base-uncased"):
        encoder.next_sentence("He went home.", "He slept.")


@pytest.fixture(scope="module")
def with_heads(pretraining_checkpoint):
    import transformers

    hf = transformers.BertForPreTraining.from_pretrained(pretraining_checkpoint).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(pretraining_checkpoint)
    return Encoder.load(pretraining_checkpoint, device="cpu"), hf, hf_tok


def test_fill_mask_matches_transformers_ranking_and_probabilities(with_heads):
    enc, hf, hf_tok = with_heads
    text = "The [MASK] sat on the [MASK]."
    ours = enc.fill_mask(text, top_k=5)
    inputs = hf_tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = hf(**inputs).prediction_logits[0]
    positions = (inputs["input_ids"][0] == hf_tok.mask_token_id).nonzero().flatten()
    assert len(ours) == len(positions) == 2
    for preds, pos in zip(ours, positions):
        probs = logits[pos].softmax(-1)
        top = probs.topk(5)
        assert [t for t, _ in preds] == hf_tok.convert_ids_to_tokens(top.indices.tolist())
        assert np.allclose([p for _, p in preds], top.values.numpy(), atol=1e-5)


def test_next_sentence_matches_transformers(with_heads):
    enc, hf, hf_tok = with_heads
    a, b = ["He went to the store.", "The sky is blue."], ["He bought milk.", "Penguins cannot fly at all."]
    ours = enc.next_sentence(a, b)
    inputs = hf_tok(a, b, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**inputs).seq_relationship_logits.softmax(-1)[:, 0].numpy()
    assert np.allclose(ours, theirs, atol=1e-5)
    assert isinstance(enc.next_sentence(a[0], b[0]), float)


def test_fill_mask_without_a_mask_token_is_an_input_error(with_heads):
    with pytest.raises(InputError, match=r"no \[MASK\] token"):
        with_heads[0].fill_mask("Nothing to fill here.")


@pytest.mark.parametrize("bad", ["", "   \t\n "])
def test_empty_and_whitespace_texts_are_refused_by_position(encoder, bad):
    with pytest.raises(InputError, match="text 1 is empty or whitespace only"):
        encoder.encode(["fine", bad])


def test_ten_thousand_word_text_is_truncated_and_reported(encoder, caplog):
    long_text = " ".join(["word"] * 10_000)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        vecs = encoder.encode(["short", long_text])
    assert encoder.last_truncated == 1
    assert "1 of 2 inputs were longer than 256 tokens and were truncated" in caplog.text
    cut = " ".join(["word"] * 254)  # 254 words + [CLS] + [SEP] = the 256 tokens the model saw
    assert np.abs(vecs[1] - encoder.encode([cut])[0]).max() < 1e-5
    with pytest.raises(InputError, match="more than 256 tokens"):
        encoder.encode([long_text], truncate=False)


def test_unknown_pooling_is_a_value_error(encoder):
    with pytest.raises(ValueError, match="unknown pooling 'avg'"):
        encoder.encode(["x"], pooling="avg")


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Encoder.load(tmp_path / "no-such-model")
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        Encoder.load(tmp_path)


def test_hub_id_offline_names_the_id(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"could not get model 'bert-base-uncased'.*offline"):
        Encoder.load("bert-base-uncased")


def test_sentence_transformers_folder_with_a_transformer_subfolder(packaged_dir, tmp_path, encoder):
    sub = tmp_path / "0_Transformer"
    shutil.copytree(packaged_dir, sub, ignore=shutil.ignore_patterns("1_Pooling", "modules.json"))
    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "0_Transformer",
                     "type": "sentence_transformers.models.Transformer"}])
    )
    enc = Encoder.load(tmp_path, device="cpu")
    assert np.abs(enc.encode(TEXTS) - encoder.encode(TEXTS)).max() < 1e-6


def test_concurrent_mask_prompt_calls_each_report_their_own_truncation(encoder, caplog):
    """Two threads encode with mask_prompt at once, one with an over-long text and one without: each call
    reports its own truncation (the count was once kept on the encoder between two steps of a call)."""
    import copy
    import threading
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = copy.copy(encoder.tokenizer)  # the real tokenizer, with a hook that only orders the calls
    barrier = threading.Barrier(2, timeout=5)
    tokenize = tokenizer.encode

    def in_step(*args, **kwargs):
        # Both calls tokenize in lockstep, so each has prepared its prompts before either goes on to pool:
        # the interleaving in which state shared between calls is overwritten.
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # calls made a different number of times: no lockstep, no hang
            pass
        return tokenize(*args, **kwargs)

    tokenizer.encode = in_step
    enc = Encoder.from_model(encoder.model, tokenizer, encoder.path, "cpu")
    jobs = {"long": ["short text", " ".join(["word"] * 2000)], "short": ["short text", "another short text"]}

    with caplog.at_level(logging.WARNING, logger="bertkit"), ThreadPoolExecutor(2) as callers:
        futures = {k: callers.submit(enc.encode, texts, pooling="mask_prompt", workers=1) for k, texts in jobs.items()}
        vectors = {k: f.result() for k, f in futures.items()}
    notes = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert notes == ["1 of 2 inputs were longer than 256 tokens and were truncated"]
    for k, texts in jobs.items():
        assert np.abs(vectors[k] - encoder.encode(texts, pooling="mask_prompt")).max() < 1e-5

    with ThreadPoolExecutor(2) as callers:  # the per-call report, for callers on several threads
        futures = {k: callers.submit(enc.encode_poolings, texts, [("mask_prompt", None), ("mean", None)])
                   for k, texts in jobs.items()}
        reports = {k: f.result().truncated for k, f in futures.items()}
    assert reports == {"long": [1], "short": []}


def test_encode_poolings_gives_every_pooling_from_one_call(encoder):
    specs = [("mean", None), ("cls", [2]), ("pooler", None), ("mask_prompt", None), ("max", [-1])]
    got = encoder.encode_poolings(TEXTS, specs, normalize=True, batch_size=2)
    assert len(got.vectors) == len(specs) and got.truncated == []
    for (pooling, layers), vecs in zip(specs, got.vectors):
        want = encoder.encode(TEXTS, pooling=pooling, layers=layers, normalize=True, batch_size=2)
        assert np.abs(vecs - want).max() < 1e-5, pooling
    with pytest.raises(ValueError, match="no pooling asked for"):
        encoder.encode_poolings(TEXTS, [])
