"""Numerical parity of the network with transformers, and its one padded layer loop."""

from __future__ import annotations

import torch
from model_parity import PAIRS, TEXTS, assert_close, hf_model

from bertkit.model import Bert, BertConfig, describe, load_model
from bertkit.model.packed import ACCELERATOR_GROUP_COST, GROUP_COST, row_groups
from bertkit.tokenizer import BertTokenizer


def batches(folder):
    tok = BertTokenizer.from_dir(folder)
    yield "single", tok(TEXTS)
    yield "pairs", tok(TEXTS, PAIRS)


def compare_outputs(model: Bert, hf, batch, heads: bool):
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids)
    with torch.no_grad():
        ours = model(**kwargs, output_hidden_states=True, output_attentions=True)
        theirs = hf(**kwargs, output_hidden_states=True, output_attentions=True)
    mask = batch.attention_mask
    body = theirs if not heads else None
    if heads:  # BertForPreTraining exposes the body's outputs under other names; run the body for them
        body = hf.bert(**kwargs, output_hidden_states=True, output_attentions=True)
        assert_close(ours.mlm_logits, theirs.prediction_logits, "mlm_logits", mask)
        assert_close(ours.nsp_logits, theirs.seq_relationship_logits, "nsp_logits")
    assert_close(ours.last_hidden_state, body.last_hidden_state, "last_hidden_state", mask)
    assert_close(ours.pooler_output, body.pooler_output, "pooler_output")
    assert len(ours.hidden_states) == len(body.hidden_states) == model.config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(ours.hidden_states, body.hidden_states)):
        assert_close(a, b, f"hidden_states[{i}]", mask)
    assert len(ours.attentions) == len(body.attentions) == model.config.num_hidden_layers
    for i, (a, b) in enumerate(zip(ours.attentions, body.attentions)):
        assert_close(a, b, f"attentions[{i}]")


def test_packaged_model_matches_transformers(packaged_dir):
    model, folder = load_model(packaged_dir)
    assert model.has_pooler and not model.has_mlm and not model.has_nsp
    hf = hf_model(folder, "BertModel")
    for name, batch in batches(folder):
        assert batch.attention_mask.min() == 0, "the batch must mix lengths so padding is exercised"
        compare_outputs(model, hf, batch, heads=False)


def test_random_pretraining_checkpoints_match_transformers(pretraining_checkpoint):
    model, folder = load_model(pretraining_checkpoint)
    assert model.has_pooler and model.has_mlm and model.has_nsp
    hf = hf_model(folder, "BertForPreTraining")
    for name, batch in batches(folder):
        compare_outputs(model, hf, batch, heads=True)


def test_sdpa_path_equals_explicit_attention_path(pretraining_checkpoint):
    model, folder = load_model(pretraining_checkpoint)
    batch = BertTokenizer.from_dir(folder)(TEXTS, PAIRS)
    with torch.no_grad():
        fast = model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        slow = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, output_attentions=True)
    assert_close(fast.last_hidden_state, slow.last_hidden_state, "sdpa vs explicit", batch.attention_mask)


def test_body_forward_is_the_full_models_forward_without_heads(pretraining_checkpoint):
    """Bert.forward is the body's (BertModel's) forward plus the heads: task heads call the body directly."""
    model, folder = load_model(pretraining_checkpoint)
    batch = BertTokenizer.from_dir(folder)(TEXTS, PAIRS)
    with torch.no_grad():
        full = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, output_hidden_states=True)
        body = model.bert(batch.input_ids, batch.attention_mask, batch.token_type_ids, output_hidden_states=True)
    assert torch.equal(full.last_hidden_state, body.last_hidden_state)
    assert torch.equal(full.pooler_output, body.pooler_output)
    assert all(torch.equal(a, b) for a, b in zip(full.hidden_states, body.hidden_states))
    assert body.mlm_logits is None and body.nsp_logits is None and full.mlm_logits is not None


def test_packed_forward_runs_the_same_blocks_with_gradients():
    """With gradients on, the packed path calls the very blocks the padded forward runs (no scratch kernels):
    its real-token outputs match, and gradients reach the HF-named parameters."""
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16))
    ids = torch.tensor([[2, 5, 7, 9, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    packed = model.forward_packed(ids, mask, output_hidden_states=True)
    padded = model(ids, mask, output_hidden_states=True)
    real = mask.bool()
    for a, b in zip(packed.hidden_states, padded.hidden_states):
        assert (a[real] - b[real]).abs().max().item() < 1e-6
    (packed.last_hidden_state * torch.randn_like(packed.last_hidden_state)).sum().backward()  # not LN's constant sum
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_packed_forward_under_no_grad_after_inference_mode(pretraining_checkpoint):
    """The per-thread scratch buffers made under inference_mode are not reused by a later no_grad call
    (writing an inference tensor outside inference mode is an error)."""
    model, folder = load_model(pretraining_checkpoint)
    batch = BertTokenizer.from_dir(folder)(TEXTS, PAIRS)
    with torch.inference_mode():
        first = model.forward_packed(batch.input_ids, batch.attention_mask, batch.token_type_ids).last_hidden_state
    with torch.no_grad():
        second = model.forward_packed(batch.input_ids, batch.attention_mask, batch.token_type_ids).last_hidden_state
    assert torch.equal(first, second)


def test_describe_counts_every_parameter_once(pretraining_checkpoint):
    model, _ = load_model(pretraining_checkpoint)
    parts = describe(model)
    assert [p.name for p in parts][-2:] == ["cls.predictions", "cls.seq_relationship"]
    assert sum(p.count for p in parts) == sum(p.numel() for p in model.parameters())


def test_packaged_model_parameter_count(packaged_dir):
    model, _ = load_model(packaged_dir)
    # all-MiniLM-L6-v2: 22,713,216 parameters including the pooler (the published 22.7M)
    assert sum(p.count for p in describe(model)) == 22_713_216


def test_row_groups_cut_where_a_narrower_width_saves_more_than_a_call():
    assert (GROUP_COST, ACCELERATOR_GROUP_COST) == (16, 2048)
    # accelerators: 4 rows padded to 40 instead of 12 save 4 * (1600 - 144) = 5824 > 2048: cut; 10 -> 9 saves
    # 3 * 19: no cut
    assert row_groups([40, 38, 12, 10, 9, 8], ACCELERATOR_GROUP_COST) == [(0, 2), (2, 6)]
    assert row_groups([20, 20, 19, 19], ACCELERATOR_GROUP_COST) == [(0, 4)]  # nothing worth a call
    # CPU: a cut wherever it saves more than 16, so here at every change of length (the last: 81 - 64 = 17)
    assert row_groups([40, 38, 12, 10, 9, 8]) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    assert row_groups([20, 20, 19, 19]) == [(0, 2), (2, 4)]  # 2 * (400 - 361) = 78
    assert row_groups([6, 5]) == [(0, 2)]  # 36 - 25 = 11: not worth a call
    assert row_groups([5, 40, 12]) == [(0, 3)]  # not sorted longest first: one group
    assert row_groups([7]) == [(0, 1)]
    assert row_groups([40, 38, 0]) == [(0, 3)]  # an all-padding row (not from a tokenizer): no width-0 call
