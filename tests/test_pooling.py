"""Pooling: known answers on a hand-made output, padding ignored, batch-invariance on the real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertkit.model import BertOutput
from bertkit.pooling import POOLING_MODES, check_pooling, check_template, pool

SHORT = "A cat."
LONG = ["An extremely long sentence " * 20, "Another long, winding text about many different things " * 8]


def toy_output():
    # two rows: the first has 2 real tokens then padding (filled with huge values that must not leak in)
    h = torch.tensor(
        [
            [[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]],
            [[0.0, 1.0], [2.0, 2.0], [4.0, -3.0]],
        ]
    )
    first = torch.full_like(h, 10.0)
    out = BertOutput(last_hidden_state=h, pooler_output=torch.tensor([[0.5, 0.5], [0.1, 0.2]]),
                     hidden_states=(torch.zeros_like(h), first, h))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return out, mask


@pytest.mark.parametrize(
    "mode, expected_row0",
    [
        ("cls", [1.0, 2.0]),
        ("pooler", [0.5, 0.5]),
        ("mean", [2.0, -1.0]),
        ("max", [3.0, 2.0]),
        ("mean_sqrt_len", [4.0 / np.sqrt(2), -2.0 / np.sqrt(2)]),
        ("first_last_avg", [6.0, 4.5]),  # mean of ((10,10)+(1,2))/2 and ((10,10)+(3,-4))/2
    ],
)
def test_known_answers_ignore_padding(mode, expected_row0):
    out, mask = toy_output()
    vec = pool(out, mask, mode)
    assert torch.allclose(vec[0], torch.tensor(expected_row0, dtype=torch.float32)), vec[0]


def test_layers_average_and_mask_positions():
    out, mask = toy_output()
    assert torch.allclose(pool(out, mask, "mean", layers=[1, 2])[0], torch.tensor([6.0, 4.5]))
    assert torch.allclose(pool(out, mask, "cls", layers=[0])[1], torch.tensor([0.0, 0.0]))
    vec = pool(out, mask, "mask_prompt", mask_positions=torch.tensor([1, 2]))
    assert vec.tolist() == [[3.0, -4.0], [4.0, -3.0]]
    assert torch.allclose(pool(out, mask, "max", normalize=True).norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("bad", ["CLS", "average", ""])
def test_unknown_pooling_names_the_allowed_ones(bad):
    with pytest.raises(ValueError, match=f"unknown pooling '{bad}'; choose one of: cls, pooler, mean"):
        check_pooling(bad)


def test_bad_layer_and_template_options():
    out, mask = toy_output()
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        pool(out, mask, "mean", layers=[5])
    with pytest.raises(ValueError, match="fixes its own layers"):
        check_pooling("pooler", [1])
    with pytest.raises(ValueError, match="must contain {text} once"):
        check_template("no placeholder [MASK]")


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_vector_is_the_same_alone_and_in_a_batch_with_longer_texts(encoder, mode):
    alone = encoder.encode([SHORT], pooling=mode)
    batched = encoder.encode([LONG[0], SHORT, LONG[1]], pooling=mode, batch_size=8)
    assert np.abs(alone[0] - batched[1]).max() < 1e-5


@pytest.mark.parametrize("mode", ["cls", "mean", "max", "mask_prompt"])
def test_layer_mix_is_batch_invariant(encoder, mode):
    alone = encoder.encode([SHORT], pooling=mode, layers=[2, -1])
    batched = encoder.encode([LONG[0], SHORT], pooling=mode, layers=[2, -1])
    assert np.abs(alone[0] - batched[1]).max() < 1e-5


def test_cls_equals_first_token_of_last_hidden_state(encoder):
    texts = [SHORT, LONG[1]]
    out = encoder.forward(texts)
    cls = encoder.encode(texts, pooling="cls")
    assert np.abs(out.last_hidden_state[:, 0].numpy() - cls).max() < 1e-5
    assert np.abs(out.pooler_output.numpy() - encoder.encode(texts, pooling="pooler")).max() < 1e-5


def test_mean_and_max_match_a_manual_computation_over_real_tokens(encoder):
    texts = [SHORT, LONG[0]]
    out, batch = encoder.forward(texts), encoder.tokenize(texts)
    n = int(batch.attention_mask[0].sum())
    real = out.last_hidden_state[0, :n].numpy()
    assert np.abs(encoder.encode(texts, pooling="mean")[0] - real.mean(0)).max() < 1e-5
    assert np.abs(encoder.encode(texts, pooling="max")[0] - real.max(0)).max() < 1e-5


def test_mask_prompt_keeps_the_mask_when_the_text_is_too_long(encoder):
    vec = encoder.encode(["word " * 2000], pooling="mask_prompt")
    assert encoder.last_truncated == 1 and np.isfinite(vec).all()
