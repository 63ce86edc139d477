"""The user-facing `Encoder`: one model load, every representation BERT has, over any backend.

    from bertkit import Encoder
    enc = Encoder.load()                       # the packaged all-MiniLM-L6-v2
    vecs = enc.encode(["a sentence", "another"], pooling="mean", normalize=True)   # (2, 384) float32

`Encoder(runner, tokenizer, path)` is the only encoder class: what runs the model is a Runner
(bertkit.runtime.seam: torch, ONNX Runtime, OpenVINO), opened by `Encoder.load`. Every call goes through one
pipeline: `prepare` validates and tokenizes once (a `Prepared`), `each_batch` runs the length-sorted batches
(bertkit.batching.run_batches, on worker threads), and the caller pools / reads each batch's output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.batching import (
    DEFAULT_MAX_TOKENS,
    Prepared,
    WorkerPools,
    prompt_texts,
    run_batches,
    truncated_positions,
    truncation_note,
)
from bertkit.errors import InputError, MissingHeadError, OptionError
from bertkit.pooling import (
    DEFAULT_PROMPT,
    check_pooling,
    check_template,
    mask_positions,
    needs_hidden_states,
    pool,
    prompt_for,
)
from bertkit.runtime.folder import Folder, open_folder
from bertkit.runtime.open import open_runner, process_runner, torch_runner
from bertkit.runtime.seam import Runner
from bertkit.tokenizer import Batch, BertTokenizer, as_text_list, check_has_tokens
from bertkit.vectors.results import Encoded, TokenVectors, as_float32

if TYPE_CHECKING:
    from tokenizers import Encoding

    from bertkit.model import Bert, BertOutput

log = logging.getLogger(__name__)


class Encoder:
    """One loaded model and every representation it has: sentence vectors (`encode`, any pooling, layer mixes,
    compact dtypes), token vectors (`encode_tokens`), SPLADE vectors (`encode_sparse`), the masked-LM and NSP
    heads (`fill_mask`, `next_sentence`), the raw output (`forward`) and cosine `similarity`.

    Read through the runner: `device`, `precision` (the one running), `requested_precision` (the one asked
    for; they differ when this CPU's verdict fell back to fp32), `backend` ("torch" / "onnx"), `hidden_size`,
    `num_hidden_layers`; `max_length` is the tokenizer's limit. User errors raise bertkit.errors types.
    """

    def __init__(self, runner: Runner, tokenizer: BertTokenizer, path: str | Path):
        self.runner = runner
        self.tokenizer = tokenizer
        self.path = Path(path)
        self.name = str(path)  # shown by `bertkit inspect` and the server's /info
        # How many inputs of the last finished call were cut to max_length. Calls from several threads at once
        # each get their own count from encode_poolings(...).truncated.
        self.last_truncated = 0
        self._pools = WorkerPools()  # encode()'s CPU worker threads, kept between calls

    @classmethod
    def load(cls, name_or_path: str | Path | None = None, device: str | None = None, *, precision: str = "fp32",
             backend: str = "torch", process: bool = False) -> Encoder:
        """None = the packaged default model; else a local folder, a packaged alias or a Hugging Face hub id.

        precision: "fp32" (exact, default), "bf16" (autocast), "int8" (dynamic quantization) or "int8-static"
        (onnx, calibrated by NNCF, run by OpenVINO: the `openvino` extra); one slower than fp32 on this CPU runs
        as fp32 (bertkit.runtime.verdicts). backend: "torch" (default) or "onnx" (ONNX Runtime, exported and
        cached next to the model; once cached, loaded and run without importing torch). process: run the vectors'
        forward pass in a child process (CPU; `bertkit serve --model-process`, bertkit.runtime.process); heads
        and attention load the model here on first use. See bertkit.runtime.
        """
        folder = open_folder(name_or_path)
        runner = (process_runner if process else open_runner)(folder, backend, precision, device)
        encoder = cls(runner, folder.tokenizer, folder.root)
        encoder.name = folder.name
        return encoder

    @classmethod
    def from_model(cls, model: Bert, tokenizer: BertTokenizer, path: str | Path = ".", device: str = "cpu",
                   precision: str = "fp32") -> Encoder:
        """An encoder over a torch model held in memory (training, tests), on the torch backend."""
        return cls(torch_runner(model, device, precision, Path(path)), tokenizer, path)

    def set_mode(self, precision: str = "fp32", backend: str = "torch") -> None:
        """Switch precision / backend on a loaded encoder (the fp32 torch model, once loaded, stays loaded)."""
        runner = self.runner
        model = runner.model if "torch" in (runner.backend, backend) else None
        folder = Folder(self.path, self.path, self.name, self.tokenizer)
        device = str(runner.device) if backend == runner.backend or backend == "onnx" else None
        self.runner = open_runner(folder, backend, precision, device, model=model)
        self._pools = WorkerPools()  # threads set up by the new runner

    # -- what the runner knows --------------------------------------------------------------------------------

    @property
    def model(self) -> Bert:
        """The fp32 torch model (a graph runner loads it on first use, logged)."""
        return self.runner.model

    @property
    def device(self):
        return self.runner.device

    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def requested_precision(self) -> str:
        return self.runner.requested_precision

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def hidden_size(self) -> int:
        return self.runner.facts.hidden_size

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    @property
    def num_hidden_layers(self) -> int:
        return self.runner.facts.num_hidden_layers

    def has_head(self, head: str) -> bool:
        """Whether the model has `head`: 'pooler', 'mlm' or 'nsp'."""
        return bool(getattr(self.runner.facts, f"has_{head}"))

    def require(self, head: str, purpose: str) -> None:
        """A clear MissingHeadError when the model lacks `head` ('pooler', 'mlm', 'nsp')."""
        if self.has_head(head):
            return
        if head == "pooler":
            # A family that never has one (DistilBERT, ELECTRA, ModernBERT) says so; a graph runner does not
            # load the torch model just to word the message.
            lacks = self.model.config.lacks.get("pooler") if self.runner.backend == "torch" else None
            if lacks:
                raise MissingHeadError(f"{purpose}: {lacks}")
            raise MissingHeadError(f"{purpose} needs the pooler (bert.pooler.dense.*), which this checkpoint does "
                                   "not have; use cls or mean pooling")
        self.model.require(head, purpose)

    # -- running batches: the one pipeline ------------------------------------------------------------------

    def _pad(self, encodings: list[Encoding]) -> Batch:
        numpy = self.runner.arrays == "numpy"
        batch = self.tokenizer.pad(encodings, numpy=numpy)
        return batch if numpy else batch.to(self.device)

    def _inputs(self, batch: Batch) -> tuple:
        tensors = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
        if self.runner.arrays == "numpy":
            return tuple(t if isinstance(t, np.ndarray) else t.cpu().numpy() for t in tensors)
        return tuple(t.to(self.device) for t in tensors)

    def run_batch(self, batch: Batch, hidden_states: bool = False, attentions: bool = False,
                  heads: bool | tuple[str, ...] = False) -> BertOutput:
        """One batch through the runner. Vectors only (no heads, no attention probabilities) take its fast path
        (packed forward, ONNX Runtime, ...); everything else the torch model's padded reference forward.
        heads: True for every head, or the ones wanted, e.g. ("nsp",) (skips the (B, T, V) MLM logits)."""
        ids, mask, types = self._inputs(batch)
        if not heads and not attentions:
            return self.runner.run(ids, mask, types, hidden_states)
        return self.runner.forward(ids, mask, types, hidden_states=hidden_states, attentions=attentions, heads=heads)

    def prepare(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None, *,
                truncate: bool = True, template: str | None = None) -> Prepared:
        """Validate and tokenize once: the texts (with `pairs`, as second segments), or each text wrapped in a
        mask_prompt `template`. Truncation is recorded (and logged) here, token counts too."""
        texts = as_text_list(texts)
        second = as_text_list(pairs, "second text") if pairs is not None else None
        if template is not None:
            template = prompt_for(template, self.tokenizer.mask_token)
            check_template(template, self.tokenizer.mask_token)
            wrapped, uncut = prompt_texts(self.tokenizer, texts, template)
            encodings = self.tokenizer.encode(wrapped, truncate=truncate) if texts else []
        else:
            encodings = uncut = self.tokenizer.encode(texts, second, truncate=truncate) if texts else []
            if second is None:
                check_has_tokens(encodings)
        truncation_note(uncut, self.max_length)
        return Prepared(texts, encodings, truncated_positions(uncut), [len(e.ids) for e in encodings], template,
                        truncate)

    def each_batch(self, prepared: Prepared | Sequence[Encoding], step: Callable[[np.ndarray, Batch], None], *,
                   batch_size: int = 32, max_tokens: int | None = DEFAULT_MAX_TOKENS, workers: int | None = None,
                   progress: bool = False) -> None:
        """The batch loop: `step(idx, batch)` per padded batch (rows `idx`), by length, on CPU workers (run_batches)."""
        enc = prepared.encodings if isinstance(prepared, Prepared) else prepared
        run_batches(enc, step, self._pad, batch_size=batch_size, max_tokens=max_tokens,
                    batch_cost=self.runner.batch_cost,  # padded tokens one more batch costs the runner (or None)
                    mapper=lambda fn, batches: self.map_batches(fn, batches, workers, progress, len(enc)))

    def map_batches(self, fn, batches: list[np.ndarray], workers: int | None, progress: bool, total: int) -> None:
        """Call fn on every batch (longest first); on CPU several at once, each on one worker thread
        (bertkit.batching.WorkerPools says why). workers=None: the runner's thread count."""
        if workers is not None and workers < 1:
            raise OptionError(f"workers must be >= 1, got {workers}")
        if workers is None:
            workers = 1 if self.device.type != "cpu" else self.runner.threads()  # a GPU runs one batch at a time
        self._pools.map(self.runner, fn, batches, workers, progress, total)

    # -- the public API ------------------------------------------------------------------------------------

    def tokenize(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None,
                 truncate: bool = True) -> Batch:
        """One padded Batch (torch tensors, in input order) of the texts (and pairs); raises InputError for an
        empty text, or an over-long one with truncate=False."""
        texts = as_text_list(texts)
        pairs = as_text_list(pairs, "second text") if pairs is not None else None
        encodings = self.tokenizer.encode(texts, pairs, truncate=truncate)
        self.last_truncated = truncation_note(encodings, self.max_length)
        return self.tokenizer.pad(encodings)

    def forward(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                truncate: bool = True) -> BertOutput:
        """The raw model output for one padded batch (in input order); padding rows are in `tokenize(...)`."""
        batch = self.tokenize(texts, pairs, truncate=truncate)
        with self.runner.inference():
            return self.run_batch(batch, output_hidden_states, output_attentions, heads=True)

    def encode(self, texts: str | Sequence[str] | Prepared, pooling: str = "mean", layers: Sequence[int] | None = None,
               normalize: bool = False, batch_size: int = 32, progress: bool = False, template: str = DEFAULT_PROMPT,
               truncate: bool = True, max_tokens: int | None = DEFAULT_MAX_TOKENS, workers: int | None = None,
               dtype: str = "float32", dimensions: int | None = None, calibration=None) -> np.ndarray:
        """(n, hidden) float32 sentence vectors, in input order. A single string gives shape (1, hidden).

        Texts (or a `prepare(...)`d batch of them) are sorted by length and batched by batch_size texts and
        max_tokens padded tokens (None: no token cap); neither changes the vectors beyond float rounding.
        workers: how many batches run at once on CPU, each on one thread (None: the runner's thread count; 1:
        one batch at a time on all threads). Compact vectors (bertkit.vectors.compact): dimensions=N keeps the
        first N and re-normalises; dtype int8 / uint8 (needs calibration=, a Calibration or its file) or
        binary / ubinary (packed sign bits).
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

    def encode_poolings(self, texts: str | Sequence[str] | Prepared,
                        poolings: Sequence[tuple[str, Sequence[int] | None]], normalize: bool = False,
                        batch_size: int = 32, progress: bool = False,
                        template: str = DEFAULT_PROMPT, truncate: bool = True,
                        max_tokens: int | None = DEFAULT_MAX_TOKENS, workers: int | None = None) -> Encoded:
        """Several (pooling, layers) vectors of the same texts, through the encoder's runner.

        All poolings but mask_prompt share one forward pass per batch (with hidden states when any of them
        needs them); the mask_prompt ones, whose input is the template around the text, share a second. So
        comparing seven poolings on every layer costs two passes, not dozens. A `Prepared` is not tokenized
        again (its template, if any, serves the mask_prompt pass). Options as in `encode`.
        """
        wanted = self._check_poolings(poolings)
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        given = texts if isinstance(texts, Prepared) else None
        plain = given.texts if given is not None else as_text_list(texts)
        if given is not None and given.template is not None:
            template = given.template
        vectors = [np.zeros((len(plain), self.hidden_size), dtype=np.float32) for _ in wanted]
        cut: set[int] = set()  # this call's own truncation report, never kept on the encoder
        for prompt in (False, True):
            group = [i for i, (p, _) in enumerate(wanted) if (p == "mask_prompt") == prompt]
            if plain and group:
                tmpl = template if prompt else None
                prepared = given if given is not None and given.template == tmpl else \
                    self.prepare(plain, truncate=given.truncate if given else truncate, template=tmpl)
                cut.update(prepared.truncated)
                self._pool_pass(prepared, [wanted[i] for i in group], [vectors[i] for i in group],
                                normalize=normalize, batch_size=batch_size, max_tokens=max_tokens, workers=workers,
                                progress=progress)
        self.last_truncated = len(cut)
        return Encoded(vectors, sorted(cut))

    def _check_poolings(self, poolings) -> list[tuple[str, list[int] | None]]:
        wanted = [(p, list(lay) if lay is not None else None) for p, lay in poolings]
        if not wanted:
            raise OptionError("no pooling asked for; give at least one (pooling, layers) pair")
        for p, lay in wanted:
            check_pooling(p, lay)
            if p == "pooler":
                self.require("pooler", "pooling='pooler'")
        return wanted

    def _pool_pass(self, prepared: Prepared, specs: list[tuple[str, list[int] | None]], outs: list[np.ndarray],
                   *, normalize: bool, **loop: Any) -> None:
        """One forward pass over `prepared`, pooled every way in `specs` into the matching rows of `outs`."""
        with_hidden = any(needs_hidden_states(p, lay) for p, lay in specs)
        template, tok = prepared.template, self.tokenizer

        def embed(idx: np.ndarray, batch: Batch) -> None:
            output = self.run_batch(batch, hidden_states=with_hidden)
            positions = mask_positions(batch.input_ids, tok.mask_id, template, tok.mask_token) if template else None
            for (p, lay), out in zip(specs, outs):
                vecs = pool(output, batch.attention_mask, p, lay, positions, normalize=normalize, check=False)
                out[idx] = as_float32(vecs)  # rows of different batches never overlap

        self.each_batch(prepared, embed, **loop)

    def encode_tokens(
        self, texts: str | Sequence[str] | Prepared, layers: Sequence[int] | None = None, batch_size: int = 32,
        truncate: bool = True,
    ) -> list[TokenVectors]:
        """Per text: its wordpieces, their character offsets and their vectors (last layer or a layer average).
        A `prepare(...)`d batch is not tokenized again."""
        from bertkit.pooling import layer_average

        layers = list(layers) if layers is not None else None
        prepared = texts if isinstance(texts, Prepared) else self.prepare(texts, truncate=truncate)
        self.last_truncated = len(prepared.truncated)
        results: list[TokenVectors | None] = [None] * len(prepared)

        def read(idx: np.ndarray, batch: Batch) -> None:
            hidden = as_float32(layer_average(self.run_batch(batch, hidden_states=layers is not None), layers))
            for row, i in enumerate(idx):
                e = prepared.encodings[i]
                results[i] = TokenVectors(list(e.tokens), [tuple(o) for o in e.offsets],
                                          hidden[row, : len(e.ids)].copy())

        self.each_batch(prepared, read, batch_size=batch_size, max_tokens=None, workers=1)
        return results

    def encode_sparse(self, texts: str | Sequence[str], top_k: int | None = None, batch_size: int = 32,
                      truncate: bool = True, workers: int | None = None):
        """SPLADE vectors from the masked-LM head: a scipy.sparse.csr_matrix (n, vocab) of max over tokens of
        log(1 + ReLU(logit)); top_k keeps each row's k largest weights. See bertkit.vectors.sparse."""
        from bertkit.vectors.sparse import encode_sparse

        return encode_sparse(self, texts, top_k, batch_size=batch_size, truncate=truncate, workers=workers).matrix

    def fill_mask(self, text: str, top_k: int = 5, prepared: Prepared | None = None) -> list[list[tuple[str, float]]]:
        """Per [MASK] in the text (left to right): the top_k (token, probability) predictions. prepared: the
        text already tokenized (the server's), not tokenized again."""
        self.require("mlm", "fill-mask")
        if top_k < 1:
            raise OptionError(f"top_k must be >= 1, got {top_k}")
        (text,) = as_text_list(text)
        batch = self.tokenizer.pad(prepared.encodings) if prepared is not None else self.tokenize([text])
        positions = (batch.input_ids[0] == self.tokenizer.mask_id).nonzero().flatten().tolist()
        if not positions:
            mask = self.tokenizer.mask_token
            raise InputError(f"the text has no {mask} token to fill in; add one, e.g. 'Paris is the {mask} of France.'")
        with self.runner.inference():
            logits = self.run_batch(batch, heads=True).mlm_logits[0]  # (T, V)
            results = []
            for p in positions:
                probs = logits[p].float().softmax(-1)
                top = probs.topk(min(top_k, probs.numel()))
                results.append([(self.tokenizer.token_text(i), float(v)) for v, i in zip(top.values, top.indices)])
        return results

    def next_sentence(self, a: str | Sequence[str], b: str | Sequence[str]) -> float | np.ndarray:
        """Probability that b follows a (the NSP head). Strings give a float; lists give an array."""
        self.require("nsp", "next-sentence prediction")  # before any tokenizing, as before
        probs = self.nsp_probabilities(self.prepare(a, b))
        return float(probs[0]) if isinstance(a, str) else probs

    def nsp_probabilities(self, prepared: Prepared) -> np.ndarray:
        """(n,) probability that each prepared pair's second text follows its first: the NSP head only."""
        self.require("nsp", "next-sentence prediction")
        with self.runner.inference():
            logits = self.run_batch(self.tokenizer.pad(prepared.encodings), heads=("nsp",)).nsp_logits
        return logits.float().softmax(-1)[:, 0].cpu().numpy()

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
