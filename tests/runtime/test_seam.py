"""The runtime seam: every backend loads as the one `bertkit.Encoder`, backends agree, a prepared batch is not
tokenized again, and a new backend is one class (a small numpy Runner written here runs the whole pipeline)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from bertkit import Encoder
from bertkit.batching import Prepared
from bertkit.runtime.modes import TOLERANCE
from bertkit.runtime.seam import ArrayOutput, Cpu, Facts, Runner, set_local_threads

TEXTS = ["A man is playing a guitar.", "Hi.", "The quick brown fox jumps over the lazy dog near the river bank.",
         "Paris is the capital of France."]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_every_backend_loads_as_the_one_encoder(backend):
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    enc = Encoder.load(device="cpu", backend=backend)
    assert type(enc) is Encoder and isinstance(enc.runner, Runner)
    assert enc.backend == backend and enc.precision == "fp32" and str(enc.device) == "cpu"
    assert enc.hidden_size == 384 and enc.num_hidden_layers == 6 and not enc.has_head("mlm")


def test_torch_and_onnx_fp32_agree(encoder):
    pytest.importorskip("onnxruntime")
    onnx = Encoder.load(device="cpu", backend="onnx")
    for kw in ({"pooling": "mean"}, {"pooling": "cls", "layers": [1, -1]}, {"pooling": "mask_prompt"}):
        a, b = encoder.encode(TEXTS, normalize=True, **kw), onnx.encode(TEXTS, normalize=True, **kw)
        assert (a * b).sum(1).min() >= TOLERANCE["fp32", "onnx"], kw


def test_onnx_sparse_vectors_match_torch():
    pytest.importorskip("onnxruntime")
    torch_m = Encoder.load("splade-tiny", device="cpu").encode_sparse(TEXTS).toarray()
    onnx_m = Encoder.load("splade-tiny", device="cpu", backend="onnx").encode_sparse(TEXTS).toarray()
    assert np.abs(torch_m - onnx_m).max() < 1e-3


def test_a_prepared_batch_is_tokenized_once(encoder):
    calls = []
    tokenizer = encoder.tokenizer
    real = tokenizer.encode

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    tokenizer.encode = counting
    try:
        prepared = encoder.prepare(TEXTS)
        assert isinstance(prepared, Prepared) and prepared.tokens == [len(e.ids) for e in prepared.encodings]
        assert len(calls) == 1
        got = encoder.encode_poolings(prepared, [("mean", None), ("max", [1, -1])], normalize=True)
        assert len(calls) == 1  # not tokenized again
    finally:
        del tokenizer.encode
    want = encoder.encode_poolings(TEXTS, [("mean", None), ("max", [1, -1])], normalize=True)
    for a, b in zip(got.vectors, want.vectors):
        assert np.array_equal(a, b)


class BagOfEmbeddings:
    """A whole backend in one class: each token's vector is a row of a fixed table, one 'layer' adds 1."""

    backend, arrays, precision, requested_precision = "numpy-bag", "numpy", "fp32", "fp32"
    batch_cost = 4  # it computes on padding: encode() cuts its batches where padding plus 4 tokens per batch is least
    model = None  # no torch model behind it: no heads, no attention probabilities

    def __init__(self, vocab: int, hidden: int = 8):
        self.table = np.random.default_rng(0).standard_normal((vocab, hidden)).astype(np.float32)
        self.device = Cpu()
        self.facts = Facts(hidden, 1, 512, has_pooler=False, has_mlm=False, has_nsp=False)
        self.batches = 0

    def run(self, input_ids, attention_mask, token_type_ids, hidden_states=False):
        self.batches += 1
        first = self.table[input_ids] * attention_mask[..., None]  # (B, T, H)
        last = first + 1
        return ArrayOutput(last, None, (first, last) if hidden_states else None)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("no heads in this backend")

    def inference(self):
        return contextlib.nullcontext()

    def threads(self) -> int:
        return 2

    def set_threads(self, n: int) -> None:
        set_local_threads(n)


def test_a_new_backend_is_one_class(encoder):
    runner = BagOfEmbeddings(encoder.tokenizer.vocab_size)
    assert isinstance(runner, Runner)
    enc = Encoder(runner, encoder.tokenizer, encoder.path)
    texts = TEXTS * 5
    ids = [e.ids for e in encoder.tokenizer.encode(texts)]
    want_mean = np.stack([(runner.table[i] + 1).mean(0) for i in ids])
    assert np.allclose(enc.encode(texts, batch_size=3, workers=2), want_mean, atol=1e-6)
    want_layers = np.stack([(runner.table[i] + 0.5)[0] for i in ids])  # cls of the average of both layers
    assert np.allclose(enc.encode(texts, pooling="cls", layers=[0, 1], batch_size=3), want_layers, atol=1e-6)
    prompt = enc.encode(texts[:2], pooling="mask_prompt")
    assert np.allclose(prompt, runner.table[encoder.tokenizer.mask_id] + 1, atol=1e-6)
    (tv,) = enc.encode_tokens(texts[0])
    assert np.allclose(tv.vectors, runner.table[ids[0]] + 1, atol=1e-6)
    assert runner.batches > 5 and enc.backend == "numpy-bag"
