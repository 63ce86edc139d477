"""Correctness of the fast paths (issue 5): packed == padded, fused QKV, precision tolerances, backends agree.

No timings here; bench/encode.py measures speed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertkit.batching import by_length
from bertkit.runtime.modes import TOLERANCE
from bertkit.runtime.seam import BackendError

# Mixed lengths on purpose: one word to a long sentence, so batches carry a lot of padding.
TEXTS = [
    "Hi.",
    "A man is playing a guitar.",
    "The stock market fell sharply today after the central bank raised interest rates by half a point.",
    "Cats sleep.",
    "A woman is slicing an onion in a small kitchen while the radio plays an old song about the sea.",
    "Quantum computers use qubits.",
    "Someone is playing an instrument on the street corner for coins.",
    "OK",
    (
        "The children ran across the wet grass, laughing, as the storm clouds gathered over the distant hills "
        "and their parents called them home for dinner."
    ),
    "Two dogs fight over a red ball.",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


@pytest.mark.parametrize(
    "texts, pairs", [(TEXTS, TEXTS[::-1]), (TEXTS[:3], None)], ids=["x@W.T-gemms", "small-batch-W@x.T-gemms"]
)
def test_packed_forward_equals_padded_forward_for_mixed_lengths_and_pairs(encoder, texts, pairs):
    from bertkit.model import SMALL_ROWS

    tok, model = encoder.tokenizer, encoder.model
    batch = tok(texts, pairs=pairs)  # pairs: token types 0 and 1, lengths 7..70
    assert (int(batch.attention_mask.sum()) <= SMALL_ROWS) == (pairs is None)  # each case takes its GEMM layout
    assert (batch.attention_mask == 0).sum() > (100 if pairs else 20)  # the batch really is padded
    with torch.inference_mode():
        ref = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, output_hidden_states=True)
        got = model.forward_packed(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                                   output_hidden_states=True)
    real = batch.attention_mask.bool()
    assert len(got.hidden_states) == len(ref.hidden_states) == 7
    for r, g in zip(ref.hidden_states, got.hidden_states):
        assert (r[real] - g[real]).abs().max().item() < 1e-5
    assert (ref.last_hidden_state[real] - got.last_hidden_state[real]).abs().max().item() < 1e-5
    assert got.last_hidden_state[~real].abs().max().item() == 0  # padding stays zero, never computed
    assert (ref.pooler_output - got.pooler_output).abs().max().item() < 1e-5


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "pooler"])
def test_encode_fast_path_equals_one_text_at_a_time(encoder, pooling):
    from bertkit.pooling import pool

    got = encoder.encode(TEXTS, pooling=pooling, batch_size=4)
    with torch.inference_mode():
        ref = []
        for t in TEXTS:
            b = encoder.tokenizer([t])
            o = encoder.model(b.input_ids, b.attention_mask, b.token_type_ids, compute_heads=False)
            ref.append(pool(o, b.attention_mask, pooling).numpy()[0])
    assert np.abs(got - np.stack(ref)).max() < 1e-5


def test_token_budget_changes_batches_not_vectors(encoder):
    lengths = [len(e.ids) for e in encoder.tokenizer.encode(TEXTS)]
    batches = by_length(lengths, batch_size=8, max_tokens=64)  # what encode() batches by
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(TEXTS)))
    for idx in batches:  # every batch within budget, unless it holds a single longer text
        assert len(idx) == 1 or len(idx) * max(lengths[i] for i in idx) <= 64
    assert len(batches) > 2
    a = encoder.encode(TEXTS, batch_size=8, max_tokens=64)
    b = encoder.encode(TEXTS, batch_size=8, max_tokens=None)
    assert np.abs(a - b).max() < 1e-5


@pytest.mark.parametrize("workers", [2, 3])
def test_concurrent_batches_give_the_same_vectors(encoder, workers):
    """Batches run on several threads at once land in their own rows, in input order."""
    one = encoder.encode(TEXTS * 3, batch_size=2, workers=1)
    many = encoder.encode(TEXTS * 3, batch_size=2, workers=workers)
    assert np.abs(one - many).max() < 1e-5
    pool = encoder._pools[workers]
    assert pool._max_workers == workers
    encoder.encode(TEXTS * 3, batch_size=2, workers=workers)
    encoder.encode(TEXTS[:4], batch_size=2, workers=workers)  # fewer batches than workers: same pool
    assert encoder._pools[workers] is pool  # worker threads (and their scratch buffers) are kept between calls
    assert torch.get_num_threads() >= 1  # the caller's thread setting is untouched by the worker threads
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        encoder.encode(TEXTS, workers=0)


def test_encode_calls_from_several_threads_with_different_workers(encoder):
    """Callers on several threads (a server, a user's thread pool) may each ask for their own worker count."""
    from concurrent.futures import ThreadPoolExecutor

    texts = TEXTS * 3
    expected = encoder.encode(texts, batch_size=2, workers=1)
    with ThreadPoolExecutor(4) as callers:
        results = list(callers.map(lambda w: encoder.encode(texts, batch_size=2, workers=w), [2, 3, 4, 2, 3, 4] * 3))
    for got in results:
        assert np.abs(got - expected).max() < 1e-5
    assert {2, 3, 4} <= set(encoder._pools)


def test_concurrent_batch_errors_reach_the_caller(encoder):
    seen = []

    def fn(idx):
        seen.append(int(idx[0]))
        if idx[0] == 3:
            raise RuntimeError("batch 3 failed")

    batches = [np.array([i]) for i in range(6)]
    with pytest.raises(RuntimeError, match="batch 3 failed"):
        encoder.map_batches(fn, batches, workers=2, progress=False, total=6)
    assert 3 in seen


@pytest.mark.parametrize("one, two", [(slice(0, 5), slice(5, 10)), (slice(0, 2), slice(3, 5))], ids=["large", "small"])
def test_packed_outputs_never_alias_scratch_buffers(encoder, one, two):
    """forward_packed reuses per-thread scratch memory; a second call must not change the first's results."""
    tok, model = encoder.tokenizer, encoder.model
    a, b = tok(TEXTS[one]), tok(TEXTS[two])
    with torch.inference_mode():
        first = model.forward_packed(a.input_ids, a.attention_mask, output_hidden_states=True)
        kept = [h.clone() for h in first.hidden_states]
        model.forward_packed(b.input_ids, b.attention_mask, output_hidden_states=True)
    for h, k in zip(first.hidden_states, kept):
        assert torch.equal(h, k)
    assert first.last_hidden_state.abs().sum() > 0


def test_packed_forward_runs_with_gradients_on(encoder):
    """Scratch buffers need out= kernels, which cannot record gradients: with grad on, plain ops are used."""
    batch = encoder.tokenizer(TEXTS[:4])
    with torch.inference_mode():
        ref = encoder.model.forward_packed(batch.input_ids, batch.attention_mask).last_hidden_state
    got = encoder.model.forward_packed(batch.input_ids, batch.attention_mask).last_hidden_state
    assert (ref - got.detach()).abs().max().item() < 1e-5


def test_fused_qkv_follows_in_place_weight_updates(encoder):
    """The fused matrix is derived from query/key/value and rebuilt when they change (e.g. after training)."""
    import copy

    model = copy.deepcopy(encoder.model)
    att = model.bert.encoder.layer[0].attention.self
    w, _ = att.fused_qkv()
    assert torch.equal(w[: att.query.weight.shape[0]], att.query.weight)
    with torch.no_grad():
        att.query.weight.mul_(1.5)
    w2, _ = att.fused_qkv()
    assert torch.equal(w2[: att.query.weight.shape[0]], att.query.weight)
    x = torch.randn(2, 5, model.config.hidden_size)
    with torch.no_grad():
        fused, _ = att(x, None, False)
    with torch.enable_grad():
        separate, _ = att(x, None, False)  # with gradients on, the three HF-named layers run
    assert (fused - separate).abs().max().item() < 1e-5


def test_training_path_keeps_gradients_and_dropout(encoder):
    import copy

    model = copy.deepcopy(encoder.model).train()
    b = encoder.tokenizer(TEXTS[:3])
    out1 = model(b.input_ids, b.attention_mask).last_hidden_state
    out2 = model(b.input_ids, b.attention_mask).last_hidden_state
    assert not torch.allclose(out1, out2)  # dropout is active
    out1.sum().backward()
    grad = model.bert.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_precision_modes_stay_within_their_tolerance(encoder, precision, monkeypatch):
    from bertkit import Encoder

    monkeypatch.setenv("BERTKIT_VERDICTS", "off")  # run the mode even where this CPU's verdict says it is slow

    exact = encoder.encode(TEXTS, normalize=True)
    fast = Encoder.from_model(encoder.model, encoder.tokenizer, encoder.path, "cpu", precision=precision)
    got = fast.encode(TEXTS, normalize=True)
    assert got.dtype == np.float32 and got.shape == exact.shape
    cos = cosines(exact, got)
    assert cos.min() >= TOLERANCE[precision, "torch"], (precision, cos.min())
    assert cos.min() < 1 - 1e-7  # the mode really ran in lower precision
    assert encoder.precision == "fp32" and fast.model is encoder.model  # fp32 weights untouched


def test_fp32_vectors_match_sentence_transformers(encoder, packaged_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(packaged_dir), device="cpu")
    ref = st.encode(TEXTS, batch_size=4, normalize_embeddings=True)
    got = encoder.encode(TEXTS, batch_size=3, normalize=True)
    assert cosines(ref, got).min() >= TOLERANCE["fp32", "torch"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, packaged_dir):
    """A small random BERT (fast to export) with the packaged tokenizer, saved as a model folder."""
    from bertkit.model import Bert, BertConfig, save_model
    from bertkit.tokenizer import BertTokenizer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    save_model(Bert(config, pooler=True), folder)
    BertTokenizer.from_dir(packaged_dir).save(folder)
    return folder


def test_onnx_backend_agrees_with_torch_and_is_cached_next_to_the_model(tiny_model):
    pytest.importorskip("onnxruntime")
    from bertkit import Encoder

    ref = Encoder.load(tiny_model, device="cpu")
    onnx = Encoder.load(tiny_model, device="cpu", backend="onnx")
    cached = sorted(p.name for p in (tiny_model / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].endswith("-fp32.onnx")
    for pooling in ("mean", "cls", "pooler"):
        a, b = ref.encode(TEXTS, pooling=pooling), onnx.encode(TEXTS, pooling=pooling)
        assert np.abs(a - b).max() < 1e-5, pooling
    a = ref.encode(TEXTS, pooling="mean", layers=[1, -1])
    assert np.abs(a - onnx.encode(TEXTS, pooling="mean", layers=[1, -1])).max() < 1e-5
    (ta,), (tb,) = ref.encode_tokens(TEXTS[2]), onnx.encode_tokens(TEXTS[2])
    assert ta.tokens == tb.tokens and np.abs(ta.vectors - tb.vectors).max() < 1e-5

    int8 = Encoder.load(tiny_model, device="cpu", backend="onnx", precision="int8")
    assert cosines(ref.encode(TEXTS), int8.encode(TEXTS)).min() >= TOLERANCE["int8", "onnx"]
    again = Encoder.load(tiny_model, device="cpu", backend="onnx")  # reuses the cached export
    assert again.runner.graph.path.name == cached[0]
    # Concurrent batches each get a one-thread session; a lone batch, one with torch's thread count.
    one, many = onnx.encode(TEXTS * 3, batch_size=2, workers=1), onnx.encode(TEXTS * 3, batch_size=2, workers=2)
    assert np.abs(one - many).max() < 1e-5
    assert 1 in onnx.runner.session._sessions


def test_bad_precision_or_backend_names_the_choices(encoder):
    from bertkit import Encoder

    with pytest.raises(ValueError, match="fp32, bf16, int8"):
        Encoder.from_model(encoder.model, encoder.tokenizer, encoder.path, precision="fp16")
    with pytest.raises(ValueError, match="torch, onnx"):
        Encoder.load(encoder.path, backend="tensorrt")
    with pytest.raises(BackendError, match="--backend torch"):
        Encoder.load(encoder.path, precision="bf16", backend="onnx")
