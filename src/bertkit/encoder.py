"""The user-facing `Encoder`: one model load, every representation BERT has.

    from bertkit import Encoder
    enc = Encoder.load()                       # the packaged all-MiniLM-L6-v2
    vecs = enc.encode(["a sentence", "another"], pooling="mean", normalize=True)   # (2, 384) float32
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertkit.batching import (
    DEFAULT_MAX_TOKENS,
    by_length,
    progress_iter,
    truncated_positions,
    truncation_note,
)
from bertkit.errors import InputError, OptionError
from bertkit.pooling import DEFAULT_PROMPT, check_pooling, check_template, needs_hidden_states, pool
from bertkit.tokenizer import (
    Batch,
    BertTokenizer,
    as_text_list,
    check_has_tokens,
)

if TYPE_CHECKING:
    import torch
    from tokenizers import Encoding

    from bertkit.model import Bert, BertOutput

log = logging.getLogger(__name__)


def _no_grad(method):
    """torch.inference_mode() around a method, through the encoder's `_grad_off` (the torch-free ONNX encoder
    enters nothing), so that this module never imports torch itself."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._grad_off():
            return method(self, *args, **kwargs)

    return wrapper


def _as_numpy(x) -> np.ndarray:
    """float32 numpy rows from a torch tensor (any device, any float dtype) or a numpy array."""
    return x.astype(np.float32, copy=False) if isinstance(x, np.ndarray) else x.float().cpu().numpy()


@dataclass
class Encoded:
    """What one `Encoder.encode_poolings` call returns: its vectors and its own truncation report."""

    vectors: list[np.ndarray]  # one (n, hidden) float32 array per asked pooling, in the order asked
    truncated: list[int]  # positions of this call's texts that were cut to max_length (in any pass)


@dataclass
class TokenVectors:
    tokens: list[str]  # wordpieces including [CLS] and [SEP]
    offsets: list[tuple[int, int]]  # (start, end) character span in the text; (0, 0) for special tokens
    vectors: np.ndarray  # (T, H) float32, one row per token


class Encoder:
    def __init__(
        self,
        model: Bert,
        tokenizer: BertTokenizer,
        path: Path,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        backend: str = "torch",
    ):
        import torch

        self.device = torch.device(device)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.path = Path(path)
        self.name = str(path)  # shown by `bertkit inspect` and the server's /info
        # How many inputs of the last finished call were cut to max_length. Calls from several threads at once
        # each get their own count from encode_poolings(...).truncated.
        self.last_truncated = 0
        self.precision, self.backend = precision, backend
        self._int8: Bert | None = None  # quantized copy (precision="int8", torch backend)
        self._onnx = None  # OnnxRunner (backend="onnx")
        self._pools: dict = {}  # workers -> ThreadPoolExecutor: encode()'s CPU worker threads, see _pool
        self._pools_lock = threading.Lock()
        self.set_mode(precision, backend)

    def set_mode(self, precision: str = "fp32", backend: str = "torch") -> None:
        """Switch precision / backend on a loaded encoder (the fp32 torch model always stays loaded)."""
        from bertkit.runtime import export as backends
        from bertkit.runtime import verdicts

        backends.check_options(precision, backend, self.device)
        self.requested_precision = precision  # differs when this CPU's verdict made it fall back to fp32
        precision = verdicts.choose(precision, backend, self.path, self.device.type)
        self.precision, self.backend = precision, backend
        self._int8 = backends.quantize_int8(self.model) if precision == "int8" and backend == "torch" else None
        self._onnx = None
        if backend == "onnx":
            path = backends.onnx_model_path(self.model, self.path, precision, self.tokenizer)
            self._onnx = backends.OnnxRunner(path)

    @classmethod
    def load(
        cls,
        name_or_path: str | Path | None = None,
        device: str | None = None,
        *,
        precision: str = "fp32",
        backend: str = "torch",
    ) -> Encoder:
        """None = the packaged default model; else a local folder or a Hugging Face hub id.

        precision: "fp32" (exact, default), "bf16" (autocast), "int8" (dynamic quantization) or "int8-static"
        (onnx, calibrated by NNCF, run by OpenVINO: the `openvino` extra); one slower than fp32 on this CPU runs as fp32 (bertkit.runtime.verdicts). backend: "torch"
        (default) or "onnx" (ONNX Runtime, exported and cached next to the model; once cached, loaded and run
        without importing torch: bertkit.runtime.onnx_encoder). See backends.py.
        """
        if backend == "onnx":
            from bertkit.runtime.onnx_encoder import OnnxEncoder

            return OnnxEncoder.load_graph(name_or_path, device, precision=precision)
        import torch

        from bertkit.model import display_name, load_model, resolve_model_dir

        root = resolve_model_dir(name_or_path)  # a sentence-transformers folder keeps BERT in a subfolder
        model, folder = load_model(root)
        tokenizer = BertTokenizer.from_dir(folder, root=root)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        encoder = cls(model, tokenizer, root, device, precision=precision, backend=backend)
        encoder.name = display_name(name_or_path) or encoder.name
        return encoder

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    @property
    def num_hidden_layers(self) -> int:
        return self.model.config.num_hidden_layers

    def has_head(self, head: str) -> bool:
        """Whether the model has `head`: 'pooler', 'mlm' or 'nsp'."""
        return {"pooler": self.model.has_pooler, "mlm": self.model.has_mlm, "nsp": self.model.has_nsp}[head]

    def require(self, head: str, purpose: str) -> None:
        """A clear MissingHeadError when the model lacks `head` ('pooler', 'mlm', 'nsp')."""
        self.model.require(head, purpose)

    def _grad_off(self):
        import torch

        return torch.inference_mode()

    def _pad(self, encodings: list[Encoding]) -> Batch:
        return self.tokenizer.pad(encodings)

    def _default_workers(self) -> int:
        import torch

        return torch.get_num_threads()

    @staticmethod
    def _worker_init() -> None:
        import torch

        torch.set_num_threads(1)

    # -- running batches: the fast path that encode() and the task modules (sparse, represent) share --------

    def run_batch(self, batch: Batch, hidden_states: bool = False, attentions: bool = False, heads: bool = False) -> BertOutput:
        """One batch through the model in the encoder's precision / backend.

        Vectors only (no heads, no attention probabilities) take the fast path: ONNX Runtime, or the packed
        forward that computes nothing on padding. Everything else runs the padded reference forward.
        """
        from bertkit.runtime.export import autocast

        batch = batch.to(self.device)
        fast = not heads and not attentions
        if fast and self._onnx is not None:
            return self._onnx(batch.input_ids, batch.attention_mask, batch.token_type_ids, hidden_states)
        model = self._int8 if self._int8 is not None else self.model
        with autocast(self.precision, self.device):
            if fast:
                return model.forward_packed(batch.input_ids, batch.attention_mask, batch.token_type_ids, hidden_states)
            return model(
                batch.input_ids,
                batch.attention_mask,
                batch.token_type_ids,
                output_hidden_states=hidden_states,
                output_attentions=attentions,
                compute_heads=heads,
            )

    def _workers(self, workers: int | None) -> int:
        if workers is not None:
            if workers < 1:
                raise OptionError(f"workers must be >= 1, got {workers}")
            return workers
        if self.device.type != "cpu":
            return 1  # a GPU runs one batch at a time
        return self._default_workers()

    def map_batches(self, fn, batches: list[np.ndarray], workers: int | None, progress: bool, total: int) -> None:
        """Call fn on every batch (longest first). On CPU, several batches run at once, each on one thread.

        Why: BERT-base-sized GEMMs on a few hundred rows, and the many small ops between them, scale poorly
        across intra-op threads (every op ends in a barrier). One batch per thread keeps each core busy on
        its own work: on 2 cores, forward_packed ran +19% faster on 16-token and +25% on 512-token batches.
        torch's thread count is per OS thread, so the caller's setting is left as it was; the ONNX backend
        follows it (a one-thread session per worker).
        """
        workers = self._workers(workers)
        if min(workers, len(batches)) <= 1:
            for idx in progress_iter(batches, progress, total_items=total):
                fn(idx)
            return

        def run(idx: np.ndarray) -> np.ndarray:
            with self._grad_off():  # grad mode is per thread too
                fn(idx)
            return idx

        for _ in progress_iter(self._pool(workers).map(run, batches), progress, total_items=total):
            pass

    def _pool(self, workers: int):
        """The encoder's worker threads, kept between calls so that their scratch buffers are reused too.

        One pool per worker count, never shut down while the encoder lives: calls from several threads at once,
        with different counts, each keep their own pool (replacing a pool could refuse another call's batches).
        """
        from concurrent.futures import ThreadPoolExecutor

        with self._pools_lock:
            pool = self._pools.get(workers)
            if pool is None:
                pool = self._pools[workers] = ThreadPoolExecutor(
                    workers, thread_name_prefix="bertkit-encode", initializer=self._worker_init
                )
            return pool

    def _prompt(self, texts: list[str], template: str) -> tuple[list[str], list[Encoding]]:
        """Wrap each text in the template, shortening the text (never the template) to fit max_length.

        Also returns the encodings of the uncut prompts: they say which prompts were too long. Returned, not
        kept on the encoder, because concurrent encode calls must each report their own truncation.
        """
        check_template(template, self.tokenizer.mask_token)
        prefix, suffix = template.split("{text}")
        wrapped = [prefix + t + suffix for t in texts]
        encodings = self.tokenizer.encode(wrapped)
        overhead = len(self.tokenizer.encode([prefix + suffix])[0].ids)
        budget = self.max_length - overhead
        for i in truncated_positions(encodings):
            # Cut the text itself at the character where its `budget`-th wordpiece ends.
            text_enc = self.tokenizer.tokenizer.encode(texts[i], add_special_tokens=False)
            end = text_enc.offsets[max(budget, 1) - 1][1]
            wrapped[i] = prefix + texts[i][:end] + suffix
        return wrapped, encodings

    def _mask_positions(self, input_ids: torch.Tensor, template: str) -> torch.Tensor:
        """Row-wise index of the template's [MASK]: the last one if the template puts it after the text."""
        import torch

        is_mask = input_ids == self.tokenizer.mask_id  # (B, T)
        if not bool(is_mask.any(1).all()):
            raise InputError("a prompt lost its [MASK] token; use a shorter template")
        after_text = template.index(self.tokenizer.mask_token) > template.index("{text}")
        T = input_ids.shape[1]
        pos = torch.arange(T, device=input_ids.device).expand_as(input_ids)
        if after_text:
            return torch.where(is_mask, pos, -1).max(1).values
        return torch.where(is_mask, pos, T).min(1).values

    # -- the public API ------------------------------------------------------------------------------------

    def tokenize(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None, truncate: bool = True) -> Batch:
        texts = as_text_list(texts)
        pairs = as_text_list(pairs, "second text") if pairs is not None else None
        encodings = self.tokenizer.encode(texts, pairs, truncate=truncate)
        self.last_truncated = truncation_note(encodings, self.max_length)
        return self.tokenizer.pad(encodings)

    @_no_grad
    def forward(
        self,
        texts: str | Sequence[str],
        pairs: str | Sequence[str] | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        truncate: bool = True,
    ) -> BertOutput:
        """The raw model output for one padded batch (in input order); padding rows are in `tokenize(...)`."""
        batch = self.tokenize(texts, pairs, truncate=truncate)
        return self.run_batch(batch, output_hidden_states, output_attentions, heads=True)

    def encode(
        self,
        texts: str | Sequence[str],
        pooling: str = "mean",
        layers: Sequence[int] | None = None,
        normalize: bool = False,
        batch_size: int = 32,
        progress: bool = False,
        template: str = DEFAULT_PROMPT,
        truncate: bool = True,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        workers: int | None = None,
        dtype: str = "float32",
        dimensions: int | None = None,
        calibration=None,
    ) -> np.ndarray:
        """(n, hidden) float32 sentence vectors, in input order. A single string gives shape (1, hidden).

        Texts are sorted by length and batched by batch_size texts and max_tokens padded tokens (None: no
        token cap); neither changes the vectors beyond float rounding. workers: how many batches run at once
        on CPU, each on one thread (None: torch.get_num_threads(); 1: one batch at a time on all threads).
        Compact vectors (bertkit.vectors.compact): dimensions=N keeps the first N and re-normalises; dtype
        int8 / uint8 (needs calibration=, a Calibration or its file) or binary / ubinary (packed sign bits).
        The options are one bertkit.vectors.VectorSpec: checked before any work, applied to the pooled.
        """
        from bertkit.vectors.post import VectorSpec

        spec = VectorSpec(pooling, layers, template, normalize=normalize, dimensions=dimensions, dtype=dtype,
                          calibration=calibration).check(self.hidden_size, self.tokenizer.mask_token)
        encoded = self.encode_poolings(
            texts, [(spec.pooling, spec.layers)], normalize=spec.pool_normalize, batch_size=batch_size,
            progress=progress, template=spec.prompt, truncate=truncate, max_tokens=max_tokens,
            workers=workers,
        )
        return spec.apply(encoded.vectors[0])

    @_no_grad
    def encode_poolings(
        self,
        texts: str | Sequence[str],
        poolings: Sequence[tuple[str, Sequence[int] | None]],
        normalize: bool = False,
        batch_size: int = 32,
        progress: bool = False,
        template: str = DEFAULT_PROMPT,
        truncate: bool = True,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        workers: int | None = None,
    ) -> Encoded:
        """Several (pooling, layers) vectors of the same texts, through the encoder's precision and backend.

        All poolings but mask_prompt share one forward pass per batch (with hidden states when any of them
        needs them); the mask_prompt ones, whose input is the template around the text, share a second. So
        comparing seven poolings on every layer costs two passes, not dozens. Options as in `encode`.
        """
        wanted = [(p, list(lay) if lay is not None else None) for p, lay in poolings]
        if not wanted:
            raise OptionError("no pooling asked for; give at least one (pooling, layers) pair")
        for p, lay in wanted:
            check_pooling(p, lay)
            if p == "pooler":
                self.require("pooler", "pooling='pooler'")
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        texts = as_text_list(texts)
        vectors = [np.zeros((len(texts), self.hidden_size), dtype=np.float32) for _ in wanted]
        cut: set[int] = set()  # this call's own truncation report, never kept on the encoder
        for prompt in (False, True):
            group = [i for i, (p, _) in enumerate(wanted) if (p == "mask_prompt") == prompt]
            if texts and group:
                cut.update(self._encode_pass(
                    texts, [wanted[i] for i in group], [vectors[i] for i in group], template if prompt else None,
                    normalize=normalize, batch_size=batch_size, progress=progress, truncate=truncate,
                    max_tokens=max_tokens, workers=workers,
                ))
        self.last_truncated = len(cut)
        return Encoded(vectors, sorted(cut))

    def _encode_pass(
        self, texts: list[str], specs: list[tuple[str, list[int] | None]], outs: list[np.ndarray],
        template: str | None, *, normalize: bool, batch_size: int, progress: bool, truncate: bool,
        max_tokens: int | None, workers: int | None,
    ) -> list[int]:
        """One forward pass over `texts` (wrapped in `template` when given), pooled every way in `specs` into
        the matching rows of `outs`. Returns the positions of the texts that were truncated."""
        if template is not None:
            texts, uncut = self._prompt(texts, template)
        encodings = self.tokenizer.encode(texts, truncate=truncate)
        if template is None:
            check_has_tokens(encodings)
            uncut = encodings
        truncation_note(uncut, self.max_length)
        with_hidden = any(needs_hidden_states(p, lay) for p, lay in specs)
        batches = by_length([len(e.ids) for e in encodings], batch_size, max_tokens)

        def embed(idx: np.ndarray) -> None:
            batch = self._pad([encodings[i] for i in idx]).to(self.device)
            output = self.run_batch(batch, hidden_states=with_hidden)
            positions = self._mask_positions(batch.input_ids, template) if template is not None else None
            for (p, lay), out in zip(specs, outs):
                vecs = pool(output, batch.attention_mask, p, lay, positions, normalize=normalize)
                out[idx] = _as_numpy(vecs)  # rows of different batches never overlap

        self.map_batches(embed, batches, workers, progress, len(texts))
        return truncated_positions(uncut)

    @_no_grad
    def encode_tokens(
        self, texts: str | Sequence[str], layers: Sequence[int] | None = None, batch_size: int = 32, truncate: bool = True
    ) -> list[TokenVectors]:
        """Per text: its wordpieces, their character offsets and their vectors (last layer or a layer average)."""
        from bertkit.pooling import layer_average

        texts = as_text_list(texts)
        layers = list(layers) if layers is not None else None
        encodings = self.tokenizer.encode(texts, truncate=truncate)
        check_has_tokens(encodings)
        self.last_truncated = truncation_note(encodings, self.max_length)
        results: list[TokenVectors | None] = [None] * len(texts)
        for idx in by_length([len(e.ids) for e in encodings], batch_size):
            batch = self._pad([encodings[i] for i in idx])
            hidden = _as_numpy(layer_average(self.run_batch(batch, hidden_states=layers is not None), layers))
            for row, i in enumerate(idx):
                e = encodings[i]
                results[i] = TokenVectors(list(e.tokens), [tuple(o) for o in e.offsets], hidden[row, : len(e.ids)].copy())
        return results

    def encode_sparse(self, texts: str | Sequence[str], top_k: int | None = None, batch_size: int = 32,
                      truncate: bool = True, workers: int | None = None):
        """SPLADE vectors from the masked-LM head: a scipy.sparse.csr_matrix (n, vocab) of max over tokens of
        log(1 + ReLU(logit)); top_k keeps each row's k largest weights. See bertkit.vectors.sparse."""
        from bertkit.vectors.sparse import encode_sparse

        return encode_sparse(self, texts, top_k, batch_size=batch_size, truncate=truncate, workers=workers).matrix

    @_no_grad
    def fill_mask(self, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Per [MASK] in the text (left to right): the top_k (token, probability) predictions."""
        self.model.require("mlm", "fill-mask")
        if top_k < 1:
            raise OptionError(f"top_k must be >= 1, got {top_k}")
        (text,) = as_text_list(text)
        batch = self.tokenize([text])
        positions = (batch.input_ids[0] == self.tokenizer.mask_id).nonzero().flatten().tolist()
        if not positions:
            raise InputError(f"the text has no {self.tokenizer.mask_token} token to fill in; add one, e.g. 'Paris is the [MASK] of France.'")
        logits = self.run_batch(batch, heads=True).mlm_logits[0]  # (T, V)
        results = []
        for p in positions:
            probs = logits[p].float().softmax(-1)
            top = probs.topk(min(top_k, probs.numel()))
            results.append([(self.tokenizer.id_to_token(i), float(v)) for v, i in zip(top.values, top.indices)])
        return results

    @_no_grad
    def next_sentence(self, a: str | Sequence[str], b: str | Sequence[str]) -> float | np.ndarray:
        """Probability that b follows a (the NSP head). Strings give a float; lists give an array."""
        self.model.require("nsp", "next-sentence prediction")
        single = isinstance(a, str)
        batch = self.tokenize(a, b)
        probs = self.run_batch(batch, heads=True).nsp_logits.float().softmax(-1)[:, 0].cpu().numpy()
        return float(probs[0]) if single else probs

    def similarity(
        self, a: str | Sequence[str], b: str | Sequence[str], pooling: str = "mean", layers: Sequence[int] | None = None
    ) -> float | np.ndarray:
        """Cosine similarity of a and b under a pooling. Strings give a float; equal-length lists, pairwise."""
        single = isinstance(a, str)
        a, b = as_text_list(a), as_text_list(b, "second text")
        if len(a) != len(b):
            raise InputError(f"got {len(a)} first texts but {len(b)} second texts; pairs must match")
        vecs = self.encode(a + b, pooling=pooling, layers=layers, normalize=True)
        sims = (vecs[: len(a)] * vecs[len(a) :]).sum(1)
        return float(sims[0]) if single else sims
