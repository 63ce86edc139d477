"""The other encoder families (issue 31): RoBERTa, XLM-R, DistilBERT, ELECTRA, MPNet and ModernBERT.

For each, a small random model built by transformers from a config, saved with save_pretrained, with a
tokenizer of its own kind (families_support.py builds both, with the `tokenizers` library (byte-level BPE,
Unigram, WordPiece)): bertkit's load_model and tokenizer must give every hidden state and attention of
transformers within 1e-4 on a padded batch, the masked-LM logits too where the family has the head. No network.
"""

from __future__ import annotations

import json

import pytest
import torch
from families_support import FAMILIES, save_family
from model_parity import TEXTS, assert_close, hf_model

import bertkit.model.packed as packed_module
from bertkit.errors import CheckpointError, MissingHeadError
from bertkit.model import describe, load_model
from bertkit.tokenizer import BertTokenizer

CASES = [(family, i) for family in FAMILIES for i in (0, 1)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{FAMILIES[c[0]][4][c[1]]}")
def saved(request, tmp_path_factory):
    """(family, HF class name, folder) of a saved random model with its tokenizer."""
    family, which = request.param
    folder = save_family(family, which, tmp_path_factory.mktemp(f"{family}-{which}"))
    return family, FAMILIES[family][4][which], folder


def padded_batch(folder):
    tok = BertTokenizer.from_dir(folder)
    batch = tok([t[:120] for t in TEXTS])
    assert batch.attention_mask.min() == 0, "the batch must mix lengths so padding is exercised"
    return tok, batch


def test_every_hidden_state_and_attention_equals_transformers(saved):
    family, hf_class, folder = saved
    model, _ = load_model(folder)
    hf = hf_model(folder, hf_class)
    _tok, batch = padded_batch(folder)
    with torch.no_grad():
        ours = model(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                     output_hidden_states=True, output_attentions=True)
        theirs = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    output_hidden_states=True, output_attentions=True)
    mask = batch.attention_mask
    assert len(ours.hidden_states) == len(theirs.hidden_states) == model.config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
        assert_close(a, b, f"{family} hidden_states[{i}]", mask)
    assert len(ours.attentions) == len(theirs.attentions) == model.config.num_hidden_layers
    for i, (a, b) in enumerate(zip(ours.attentions, theirs.attentions)):
        assert_close(a, b, f"{family} attentions[{i}]")
    if hasattr(theirs, "last_hidden_state"):
        assert_close(ours.last_hidden_state, theirs.last_hidden_state, f"{family} last_hidden_state", mask)
    if getattr(theirs, "pooler_output", None) is not None:
        assert_close(ours.pooler_output, theirs.pooler_output, f"{family} pooler_output")
    if hf_class.endswith("ForMaskedLM"):
        assert model.has_mlm
        assert_close(ours.mlm_logits, theirs.logits, f"{family} mlm_logits", mask)
    if hf_class == "ElectraForPreTraining":
        assert_close(ours.discriminator_logits, theirs.logits, "discriminator_logits", mask)


def test_packed_forward_equals_padded_forward(saved):
    family, _, folder = saved
    model, _ = load_model(folder)
    _, batch = padded_batch(folder)
    with torch.inference_mode():
        padded = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, output_hidden_states=True)
        packed = model.forward_packed(batch.input_ids, batch.attention_mask, batch.token_type_ids, True)
    for i, (a, b) in enumerate(zip(packed.hidden_states, padded.hidden_states)):
        assert_close(a, b, f"{family} packed hidden_states[{i}]", batch.attention_mask)
    if model.has_pooler:
        assert_close(packed.pooler_output, padded.pooler_output, f"{family} packed pooler")


def test_packed_forward_in_length_groups_equals_padded_forward(saved, monkeypatch):
    """Rows sorted longest first (as by_length makes them) run attention in groups of their own width, each
    with the mask the family's stack makes for it (MPNet: its relative position bias): the same outputs."""
    family, _, folder = saved
    if family == "modernbert":
        pytest.skip("ModernBERT has its own packed path (its local-window attention)")
    model, _ = load_model(folder)
    batch = BertTokenizer.from_dir(folder)(["long " * 60, "a b c d e f g h i j", "a b c d e", "a"])
    ids, mask, types = batch.input_ids, batch.attention_mask, batch.token_type_ids
    lengths = mask.sum(1).tolist()  # longest first, the first far longer than the rest
    # a cost that cuts the longest row off alone and leaves the others, of several lengths, padded together
    monkeypatch.setattr(packed_module, "GROUP_COST", (len(lengths) - 1) * (lengths[0] ** 2 - lengths[1] ** 2) - 1)
    groups = packed_module.row_groups(lengths)
    assert groups[:1] == [(0, 1)] and any(len(set(lengths[a:b])) > 1 for a, b in groups), (lengths, groups)
    with torch.inference_mode():
        padded = model(ids, mask, types, output_hidden_states=True)
        packed = model.forward_packed(ids, mask, types, True)
    for i, (a, b) in enumerate(zip(packed.hidden_states, padded.hidden_states)):
        assert_close(a, b, f"{family} grouped hidden_states[{i}]", mask)


def test_tokenizer_reads_the_familys_special_tokens(saved):
    family, _, folder = saved
    _, (cls, sep, pad, mask), *_ = FAMILIES[family]
    tok, batch = padded_batch(folder)
    assert (tok.cls_token, tok.sep_token, tok.pad_token, tok.mask_token) == (cls, sep, pad, mask)
    assert batch.input_ids[0, 0] == tok.cls_id and batch.input_ids[0, -1] == tok.pad_id
    pairs = tok(["A first text.", "short"], ["and its second", "a somewhat longer second text"])
    if family == "electra":  # ELECTRA keeps BERT's two token types
        assert pairs.token_type_ids.max() == 1
    else:
        assert pairs.token_type_ids.abs().sum() == 0, "a family with one token type gets all zeros"
    enc = tok.encode(["Paris is the capital"])[0]
    assert next(("Paris is the capital"[s:e]) for s, e in enc.offsets if e > s).strip().startswith("P")


def test_describe_names_each_part_and_missing_heads_are_one_line(saved):
    family, _hf_class, folder = saved
    model, _ = load_model(folder)
    parts = describe(model)
    assert sum(p.count for p in parts) == sum(p.numel() for p in model.parameters())
    names = [p.name for p in parts]
    assert names[0] == "embeddings" and len(names) >= model.config.num_hidden_layers + 1
    if model.has_pooler:
        note = next(p.note for p in parts if p.name == "pooler")
        assert "never trained" in note  # RoBERTa, XLM-R, MPNet: pre-trained without NSP
    else:
        with pytest.raises(MissingHeadError) as caught:
            model.require("pooler", "pooling='pooler'")
        assert "\n" not in str(caught.value)
        if family in ("distilbert", "modernbert", "electra"):
            assert "has no pooler; use cls or mean" in str(caught.value)
    with pytest.raises(MissingHeadError, match="next-sentence"):
        model.require("nsp", "next-sentence prediction")


def test_unsupported_model_type_is_one_line_naming_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError) as caught:
        load_model(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "model_type='gpt2'" in message
    for name in ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "modernbert"):
        assert f"'{name}'" in message


def test_modernbert_packed_forward_runs_on_real_tokens_and_equals_padded(tmp_path):
    """ModernBERT's own packed path: its GEMMs see the N real tokens only, and local windows (±4 tokens here)
    stay inside each sequence; every hidden state equals the padded forward's within 1e-5, padding zero."""
    folder = save_family("modernbert", 0, tmp_path / "modernbert")
    model, _ = load_model(folder)
    tok = BertTokenizer.from_dir(folder)
    texts = ["short", TEXTS[0][:200], "Paris is the capital of France.", TEXTS[1][:90]]
    batch = tok(texts)
    lengths = batch.attention_mask.sum(1)
    assert lengths.max() > 3 * model.config.local_attention and len(set(lengths.tolist())) == len(texts)
    rows = []
    hook = model.bert.layers[0].attn.Wqkv.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[0]))
    with torch.inference_mode():
        padded = model(batch.input_ids, batch.attention_mask, output_hidden_states=True)
        rows.clear()
        packed = model.forward_packed(batch.input_ids, batch.attention_mask, None, True)
    hook.remove()
    assert rows == [int(lengths.sum())], "the packed path must not compute on padding"
    for i, (a, b) in enumerate(zip(packed.hidden_states, padded.hidden_states)):
        assert_close(a, b, f"packed hidden_states[{i}]", batch.attention_mask, atol=1e-5)
        assert a[~batch.attention_mask.bool()].abs().max() == 0
    assert_close(packed.last_hidden_state, padded.last_hidden_state, "packed last", batch.attention_mask, atol=1e-5)
    unpadded = tok([texts[1]])  # one sequence, no padding at all
    with torch.inference_mode():
        one = model.forward_packed(unpadded.input_ids, unpadded.attention_mask).last_hidden_state
        assert_close(one, model(unpadded.input_ids, unpadded.attention_mask).last_hidden_state, "unpadded", atol=1e-5)
