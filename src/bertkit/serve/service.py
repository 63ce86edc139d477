"""The service: what each route does with the encoder, its heads, whitening and index. No HTTP here.

Each route's work is one method, taking plain values and returning results (arrays, lists); `routes.py`
turns requests into calls and results into response bodies. Refusals raise `ServeError` (a limit or rule,
with its status) or the library's own `BertkitError`s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from starlette.concurrency import run_in_threadpool

from bertkit.batching import Prepared
from bertkit.heads.rerank import reranker_of
from bertkit.pooling import DEFAULT_PROMPT, POOLING_MODES
from bertkit.runtime.process import ProcessRunner
from bertkit.serve.admission import Admission
from bertkit.serve.batcher import Batcher, forward_rows
from bertkit.serve.compact import checked_spec, request_spec
from bertkit.serve.costs import check_layers, unique_poolings
from bertkit.serve.errors import ServeError
from bertkit.serve.limits import Limits
from bertkit.serve.metrics import Metrics
from bertkit.tokenizer import as_text_list
from bertkit.vectors.post import VectorSpec

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

    from bertkit.encoder import Encoder, TokenVectors

HITS_VALUES = 4  # a search hit: score, position, id, text
TOKEN_VALUES = 5  # a /tokenize token: id, text, special, start, stop


class Embedded(NamedTuple):
    vectors: np.ndarray  # (texts, dims), or (texts, poolings, dims) from `vectors`
    tokens: int  # tokens run through the model, after truncation
    truncated: list[int]  # positions of the texts cut to the model's limit


class Service(Admission):
    """What the routes share: the encoder, limits, batcher, metrics and optional extras (whitening, index).
    Every route that runs the model goes through `admit` (serve/admission.py)."""

    calibration: Any = None  # bertkit.vectors.compact.Calibration for dtype int8 / uint8 (`serve --calibration`)

    def __init__(self, encoder: Encoder, limits: Limits | None = None, index: Any = None, whitening: Any = None,
                 heads: tuple[Any, Any] = (None, None)):
        limits = limits or Limits()
        limits = replace(limits, encode_batch_size=forward_rows(encoder, limits))  # the value /info reports
        self.encoder, self.limits, self.index, self.whitening = encoder, limits, index, whitening
        # bertkit.heads.predict's Classifier / Tagger when the folder is fine-tuned
        self.classifier, self.tagger = heads
        self.reranker = reranker_of(self.classifier)  # POST /rerank; `serve --reranker DIR` may set another
        self.metrics = Metrics()
        self.batcher = Batcher(encoder, self.limits, self.metrics)
        self.model_id = short_model_id(encoder)
        self.mask_encoder: Encoder | None = None  # `serve --mask-model`: a masked-LM model behind /fill-mask
        self.report_dir: Path | None = None  # `serve --report DIR`: a `bertkit report` folder (GET /report)

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    # -- validation ---------------------------------------------------------------------------------------

    def check_layers(self, layers: list[int] | None) -> None:
        """Each layer once, one the model has, at most max_layers of them (serve/costs.py)."""
        check_layers(layers, self.encoder.num_hidden_layers + 1, self.limits)

    def spec(self, spec: VectorSpec) -> VectorSpec:
        """A request's VectorSpec checked against the served model, its whitening and calibration
        (serve/compact.py), its heads and the layer limits: refusals name the field."""
        spec = checked_spec(self, spec)
        if spec.pooling == "pooler":
            self.encoder.require("pooler", "pooling='pooler'")
        self.check_layers(spec.layer_list)
        return spec

    def check_pooling(self, pooling: str, layers: list[int] | None) -> None:
        self.spec(VectorSpec(pooling, layers))

    # -- sentence vectors (merged across requests) ------------------------------------------------------------

    async def vectors(self, texts: list[str], specs: list[VectorSpec], truncate: bool, answer: int,
                      what: str = "vectors") -> Embedded:
        """Pooled vectors, (texts, len(specs), hidden), of checked specs that share layers and normalisation: one
        forward pass for all, merged with other requests that pool the same way. The texts are tokenized here,
        once (with mask_prompt's template when it is the only pooling); the steps after pooling are the
        caller's (`spec.apply`)."""
        first = specs[0]
        template = first.prompt if [s.pooling for s in specs] == ["mask_prompt"] else None
        prepared = await self.prepare(texts, truncate=truncate, template=template)
        poolings = [(s.pooling, s.layer_list) for s in specs]
        key = ("vectors", repr(poolings), first.pool_normalize, first.prompt, truncate, template)

        def run(batch: Prepared, rows: slice) -> np.ndarray:
            encoded = self.encoder.encode_poolings(batch, poolings, normalize=first.pool_normalize,
                                                   batch_size=self.limits.encode_batch_size, template=first.prompt,
                                                   truncate=batch.truncate)
            return np.stack(encoded.vectors, axis=1)  # (n, poolings, hidden)

        out = await self.admit(prepared, run, answer=answer, what=what, key=key)
        return Embedded(out, sum(prepared.tokens), prepared.truncated)

    async def embed(self, texts: str | list[str], spec: VectorSpec, truncate: bool = True,
                    what: str = "text") -> Embedded:
        """POST /embed (bertkit's body and TEI's) and /v1/embeddings: the texts' vectors made as `spec` says
        (built by serve/compact.request_spec; checked here, once, before any work)."""
        texts = self.texts(texts, what)
        spec = self.spec(spec)
        out = await self.vectors(texts, [spec], truncate, len(texts) * self.encoder.hidden_size)
        return out._replace(vectors=spec.apply(out.vectors[:, 0]))

    async def openai_embed(self, texts: str | list[str], dimensions: int | None = None,
                           dtype: str | None = None) -> Embedded:
        """POST /v1/embeddings: mean-pooled, L2-normalised; `dimensions` keeps the first N and re-normalises
        (Matryoshka truncation, as OpenAI does); `dtype` (bertkit's extension, serve/compact.py) quantises."""
        spec = request_spec(self, "mean", normalize=True, dtype=dtype or "float32", dimensions=dimensions)
        return await self.embed(texts, spec, True, "input")

    async def similarity(self, texts: list[str] | None, a: str | list[str] | None, b: str | list[str] | None,
                         poolings: list[str], layers: list[int] | None = None,
                         truncate: bool = True) -> tuple[dict[str, np.ndarray], int, list[int]]:
        """POST /similarity: per pooling, the n x n cosine matrix of `texts`, or the pairwise cosines of a and b;
        with the tokens used and the truncated positions."""
        if (texts is None) == (a is None and b is None):
            raise ServeError("send either texts (all pairs) or a and b (pairwise), not both or neither", 400,
                             "bad_shape")
        if texts is not None:
            texts = self.texts(texts)
        else:
            if a is None or b is None:
                raise ServeError("pairwise similarity needs both a and b", 400, "bad_shape")
            a, b = as_text_list(a), as_text_list(b, "second text")
            if len(a) != len(b):
                raise ServeError(f"got {len(a)} texts in a but {len(b)} in b; pairs must match", 400, "bad_shape")
            texts = self.texts(a + b)
        poolings = unique_poolings(poolings, self.limits)  # each once, at most max_poolings
        specs = [self.spec(VectorSpec(p, layers, normalize=True)) for p in poolings]
        n = len(texts) // 2
        scores = len(poolings) * (len(texts) ** 2 if a is None else n)
        out = await self.vectors(texts, specs, truncate, scores, "similarity scores")
        matrices = {}
        for i, p in enumerate(poolings):
            v = out.vectors[:, i]
            matrices[p] = (v @ v.T if a is None else (v[:n] * v[n:]).sum(1)).clip(-1, 1)
        return matrices, out.tokens, out.truncated

    async def search(self, queries: str | list[str], k: int) -> tuple[list[list[dict]], int, list[int]]:
        """POST /search: per query, its k nearest hits in the index (as dicts); tokens; truncated positions."""
        index = self.index
        if index is None:
            raise ServeError("this server has no index; start it with `bertkit serve --index INDEX`", 404, "no_index")
        queries = self.texts(queries, "query")
        e = index.info["embedding"]  # queries are encoded exactly as the corpus was
        answer = len(queries) * k * HITS_VALUES
        if index.kind == "sparse":  # SPLADE queries, through the same admission (never merged)
            prepared = await self.prepare(queries)
            found = await self.admit(prepared, lambda p, rows: index.encode_queries(self.encoder, p), answer=answer,
                                     what="search hits")
            out = Embedded(found, sum(prepared.tokens), prepared.truncated)
        else:
            spec = self.spec(VectorSpec(e["pooling"], normalize=e["normalize"]))
            out = await self.vectors(queries, [spec], True, answer, "search hits")
            out = out._replace(vectors=out.vectors[:, 0])
        scores, positions = await run_in_threadpool(index.search_vectors, out.vectors, k)

        def hits() -> list[list[dict]]:
            found = [index.hits(s, p) for s, p in zip(scores, positions)]
            # Texts not stored in the index are read back from the corpus input, every query's hits at once:
            # each shard is read once per request, not once per query (118 queries cost 1.1 s of held GIL).
            index.fill_texts([h for per_query in found for h in per_query])
            return [[h.as_dict() for h in per_query] for per_query in found]

        return await run_in_threadpool(hits), out.tokens, out.truncated

    # -- other outputs (each request its own jobs; split over split_tokens where a row is a text) ---------------

    async def tokens(self, texts: str | list[str], layers: list[int] | None = None, truncate: bool = True,
                     vectors: bool = True) -> tuple[list[TokenVectors], int, list[int]]:
        """POST /tokens (and TEI's /embed_all): per text its tokens, character offsets and contextual vectors."""
        texts = self.texts(texts)
        self.check_layers(layers)
        prepared = await self.prepare(texts, truncate=truncate)
        n = sum(prepared.tokens)
        answer = n * (self.encoder.hidden_size if vectors else 3)  # a vector, or a token and its offsets
        results = await self.admit(prepared, lambda p, rows: self.encoder.encode_tokens(p, layers=layers),
                                   answer=answer, what="token vectors" if vectors else "tokens")
        return results, n, prepared.truncated

    async def fill_mask(self, text: str, top_k: int) -> list[list[tuple[str, float]]]:
        encoder = self.mask_encoder or self.encoder
        encoder.model.require("mlm", "fill-mask")
        (text,) = self.texts([text])
        prepared = await self.prepare([text], tokenizer=encoder.tokenizer)
        masks = prepared.encodings[0].ids.count(encoder.tokenizer.mask_id)
        return await self.admit(prepared, lambda p, rows: encoder.fill_mask(text, top_k=top_k, prepared=p),
                                answer=2 * top_k * max(1, masks), what="predictions", split=False)

    async def nsp(self, a: str | list[str], b: str | list[str]) -> np.ndarray:
        self.encoder.model.require("nsp", "next-sentence prediction")
        a, b = self.texts(a), self.texts(b, "second text")
        if len(a) != len(b):
            raise ServeError(f"got {len(a)} texts in a but {len(b)} in b; pairs must match", 400, "bad_shape")
        prepared = await self.prepare(a, b)
        out = await self.admit(prepared, lambda p, rows: self.encoder.nsp_probabilities(p),
                               answer=len(a), what="probabilities")
        return np.asarray(out, dtype=np.float64)

    async def classify(self, texts: str | list[str], pairs: str | list[str] | None = None) -> list[tuple[str, float]]:
        """(label, probability) per text, or (label, score) for a regression head."""
        texts = self.texts(texts)
        pairs = self.texts(pairs, "second text") if pairs is not None else None
        if pairs is not None and len(pairs) != len(texts):
            raise ServeError(f"got {len(texts)} texts but {len(pairs)} pairs; they must match", 400, "bad_shape")
        clf = self.classifier
        if clf is None:
            raise ServeError("model has no classification head; serve a folder made by `bertkit train classify`",
                             400, "no_classification_head")
        prepared = await self.prepare(texts, pairs, tokenizer=clf.tokenizer)
        return await self.admit(prepared, lambda p, rows: clf.predict(p.texts, encodings=p.encodings),
                                answer=2 * len(texts), what="predictions")

    async def ner(self, texts: str | list[str]) -> list[list[dict]]:
        texts = self.texts(texts)
        tagger = self.tagger
        if tagger is None:
            raise ServeError("model has no token-classification (NER) head; serve a folder made by `bertkit train ner`",
                             400, "no_ner_head")
        prepared = await self.prepare(texts, tokenizer=tagger.tokenizer)
        return await self.admit(prepared, lambda p, rows: tagger.entities(p.texts, encodings=p.encodings),
                                answer=4 * sum(prepared.tokens), what="entities")  # at most one per token

    # -- the tokenizer alone (TEI's /tokenize, /decode, prompt_name and truncation_direction; see tei.py) ------

    @cached_property
    def untruncated(self) -> Tokenizer:
        """A copy of the tokenizer that never truncates (the encoder's own one always does)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.encoder.tokenizer.tokenizer.to_str())
        tokenizer.no_truncation()
        return tokenizer

    @cached_property
    def prompts(self) -> dict[str, str]:
        """The model's named prompts: `prompts` of its config_sentence_transformers.json (often none)."""
        path = self.encoder.path / "config_sentence_transformers.json"
        prompts = json.loads(path.read_text(encoding="utf-8")).get("prompts") if path.is_file() else None
        return {str(k): str(v) for k, v in (prompts or {}).items()}

    def prompt(self, texts: list[str], name: str) -> list[str]:
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none: its config_sentence_transformers.json has no prompts"
            raise ServeError(f"prompt_name {name!r} is not one of this model's prompts ({known})", 400,
                             "unknown_prompt", "prompt_name")
        return [self.prompts[name] + t for t in texts]

    async def cut_left(self, texts: list[str]) -> list[str]:
        """Over-long texts cut at their start instead of their end: each keeps the characters of its last
        tokens that fit the model's limit (then the usual truncation has nothing, or a token, left to cut)."""
        tokenizer = self.untruncated

        def cut() -> list[str]:
            room = self.encoder.max_length - len(tokenizer.encode("").ids)  # less [CLS] and [SEP]
            out = []
            for text, e in zip(texts, tokenizer.encode_batch(texts)):
                spans = [span for span, special in zip(e.offsets, e.special_tokens_mask) if not special]
                out.append(text[spans[-room][0]:] if len(spans) > room else text)
            return out

        return await run_in_threadpool(cut)

    async def tokenize(self, texts: str | list[str], add_special_tokens: bool = True) -> list[Encoding]:
        """The tokenizer's encodings of the texts, not truncated: bounded (TOKEN_VALUES per token in the answer)
        and charged to the caller's key as any other request's tokens."""
        texts = self.texts(texts, "input")
        encodings = await run_in_threadpool(self.untruncated.encode_batch, texts, add_special_tokens=add_special_tokens)
        tokens = sum(len(e.ids) for e in encodings)
        self.bound(TOKEN_VALUES * tokens, "tokens: id, text, special, start, stop")
        self.charge(tokens)
        return encodings

    async def decode(self, ids: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        """Token ids back to text, one string per list: bounded by the ids given, which are charged."""
        if not ids:
            raise ServeError("no ids given; send at least one list of token ids", 400, "empty_input", "ids")
        if len(ids) > self.limits.max_inputs:
            raise ServeError(f"{len(ids)} id lists in one request; max_inputs is {self.limits.max_inputs}: split the "
                             "request", 413, "max_inputs")
        vocab = self.encoder.tokenizer.vocab_size
        for i, row in enumerate(ids):
            if not row or not all(0 <= t < vocab for t in row):
                raise ServeError(f"ids {i} must be a non-empty list of token ids in 0..{vocab - 1}", 400, "bad_ids",
                                 "ids")
        tokens = sum(len(row) for row in ids)
        self.bound(tokens, "token ids")
        self.charge(tokens)
        return await run_in_threadpool(self.untruncated.decode_batch, ids, skip_special_tokens=skip_special_tokens)

    def info(self) -> dict:
        from bertkit.runtime.verdicts import all_verdicts

        enc = self.encoder
        return {
            "model": enc.name,
            "id": self.model_id,
            "dimensions": enc.hidden_size,
            "max_length": enc.max_length,
            "layers": enc.num_hidden_layers,
            # The precision asked for, the one running (fp32 when this CPU's verdict said the other is slower),
            # and every mode's verdict here (bertkit.runtime.verdicts).
            "precision": {"backend": enc.backend, "requested": getattr(enc, "requested_precision", enc.precision),
                          "running": enc.precision, "verdicts": all_verdicts()},
            # Whether the vectors' forward pass runs in a child process (`bertkit serve --model-process`).
            "model_process": isinstance(enc.runner, ProcessRunner),
            "heads": {
                "pooler": enc.has_head("pooler"),
                "mlm": enc.has_head("mlm"),
                "nsp": enc.has_head("nsp"),
                "classification": self.classifier is not None,
                "ner": self.tagger is not None,
                "rerank": self.reranker is not None,
            },
            "labels": {
                "classification": self.classifier.labels if self.classifier is not None else None,
                "ner": self.tagger.labels if self.tagger is not None else None,
            },
            "whitening": None if self.whitening is None else {
                "path": self.whitening.meta.get("path"), "k": self.whitening.k, "pooling": self.whitening.pooling,
                "layers": self.whitening.layers,
            },
            "poolings": [p for p in POOLING_MODES if p != "pooler" or enc.has_head("pooler")],
            "default_prompt": DEFAULT_PROMPT,
            "limits": asdict(self.limits),
            # How a request's cost is bounded besides the limits (serve/costs.py, serve/bodylimit.py).
            "costs": {"duplicate_poolings": "merged", "duplicate_layers": "refused", "split_tokens": "a request over "
                      "split_tokens tokens runs in pieces; other requests run between them", "admission": "every "
                      "route that runs the model: the same token budget (max_queued_tokens, 429), splitting "
                      "(split_tokens) and answer bound (max_answer_values, 413, checked before any work)"},
            "search": self.index is not None,
        }


def short_model_id(encoder: Encoder) -> str:
    """The name reported as `model` to OpenAI clients: the folder / hub id's last part."""
    if encoder.name.startswith("all-MiniLM-L6-v2"):
        return "all-MiniLM-L6-v2"
    return Path(encoder.name).name or encoder.name


def load_task_heads(encoder: Encoder) -> tuple[Any, Any]:
    """(classifier, tagger): the predictors when the served folder is a fine-tuned classifier or token
    classifier (config.json `architectures`), else None. They hold their own copy of the weights."""
    from bertkit.model.locate import architecture

    if architecture(encoder.path) not in ("BertForSequenceClassification", "BertForTokenClassification"):
        return None, None  # a plain encoder: bertkit.heads.predict (and torch) stay unloaded
    from bertkit.heads.predict import Classifier, Tagger, load_predictor

    predictor = load_predictor(encoder.path, device=str(encoder.device))
    return (predictor if isinstance(predictor, Classifier) else None,
            predictor if isinstance(predictor, Tagger) else None)
