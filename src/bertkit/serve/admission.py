"""The one admission path: how every route that runs the model gets its work onto the model thread.

A route checks its body, then `prepare`s its texts ONCE (off the event loop: validated, tokenized, truncation
and tokens per text recorded) and hands the `Prepared` to `admit` with the model work to run on it and the
size of its answer. `admit` is the same for every route, so every route is bounded the same way:

1. the answer: its values (floats, ids, scores), estimated from the prepared encodings BEFORE any model work,
   at most `Limits.max_answer_values` (413 `max_answer_values`);
2. the request: at most `Limits.max_queued_tokens` tokens (413), charged to the caller's API key (429 when its
   quota is spent; serve/quota.py);
3. the queue: the tokens accepted and not yet answered, all routes together, at most max_queued_tokens (429);
4. the model thread: a request over `Limits.split_tokens` runs in pieces of consecutive texts, each its own
   job, other requests' batches between them; sentence vectors pooled the same way are merged across
   requests (serve/batcher.py). The encodings are queued, never the texts: nothing is tokenized twice.

The tokenizer-only routes (TEI's /tokenize, /decode) do no model work: `bound` and `charge` only.
`Service` (service.py) inherits this class.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from bertkit.batching import Prepared, truncated_positions
from bertkit.errors import InputError
from bertkit.serve.errors import ServeError
from bertkit.serve.quota import charge_tokens
from bertkit.tokenizer import as_text_list

if TYPE_CHECKING:
    from bertkit.encoder import Encoder
    from bertkit.serve.batcher import Batcher, Run
    from bertkit.serve.limits import Limits
    from bertkit.serve.metrics import Metrics
    from bertkit.tokenizer import BertTokenizer

TEXT_PARAMS = {"text": "texts", "input": "input", "query": "query", "second text": "b"}  # what -> body field


class Admission:
    """Validation, preparation and admission of a request's model work (mixed into `Service`)."""

    encoder: Encoder
    limits: Limits
    batcher: Batcher
    metrics: Metrics

    def texts(self, texts: str | list[str], what: str = "text") -> list[str]:
        """The request's texts, refused (400 / 413, naming the field) when empty, too many or too long."""
        param = TEXT_PARAMS.get(what, "texts")
        try:  # refuses empty / invisible texts and lone surrogates by position
            texts = as_text_list(texts, what)
        except InputError as e:
            raise ServeError(str(e), 400, "invalid_input", param) from None
        if not texts:
            raise ServeError(f"no {what}s given; send at least one", 400, "empty_input", param)
        if len(texts) > self.limits.max_inputs:
            raise ServeError(
                f"{len(texts)} inputs in one request; max_inputs is {self.limits.max_inputs}: split the request",
                413, "max_inputs", param,
            )
        for i, t in enumerate(texts):
            if len(t) > self.limits.max_chars:
                raise ServeError(
                    f"{what} {i} has {len(t)} characters; max_chars is {self.limits.max_chars}: shorten it",
                    413, "max_chars", param,
                )
        return texts

    async def prepare(self, texts: list[str], pairs: list[str] | None = None, *, truncate: bool = True,
                      template: str | None = None, tokenizer: BertTokenizer | None = None) -> Prepared:
        """Checked texts tokenized once, off the event loop: by the encoder (`Encoder.prepare`), or by a task
        head's own `tokenizer` (its length limit). truncate=False refuses an over-long text (413 max_length)."""

        def tokenize() -> Prepared:
            try:
                if tokenizer is None:
                    prepared = self.encoder.prepare(texts, pairs, template=template)
                else:
                    encodings = tokenizer.encode(texts, pairs)
                    prepared = Prepared(texts, encodings, truncated_positions(encodings),
                                        [len(e.ids) for e in encodings])
            except InputError as e:  # only accents an uncased model strips: as empty as ""
                raise ServeError(str(e), 400, "invalid_input", "texts") from None
            if prepared.truncated and not truncate:
                limit = (tokenizer or self.encoder.tokenizer).max_length
                raise ServeError(over_limit(prepared, limit, pairs is not None), 413, "max_length", "truncate")
            return replace(prepared, truncate=truncate)

        return await run_in_threadpool(tokenize)

    def bound(self, values: int, what: str) -> None:
        """Refuse (413) an answer estimated at more than max_answer_values values, before any work."""
        limit = self.limits.max_answer_values
        if values > limit:
            raise ServeError(f"the answer would hold about {values:,} values ({what}); max_answer_values is "
                             f"{limit:,}: send fewer or shorter texts", 413, "max_answer_values")

    def charge(self, tokens: int) -> None:
        """The request's tokens: at most max_queued_tokens (413), charged to the caller's key (429 when spent)."""
        if tokens > self.limits.max_queued_tokens:
            raise ServeError(
                f"request has {tokens} tokens; max_queued_tokens is {self.limits.max_queued_tokens}: split it",
                413, "max_queued_tokens",
            )
        charge_tokens(tokens)

    async def admit(self, prepared: Prepared, run: Run, *, answer: int, what: str, key: Any = None,
                    split: bool = True) -> Any:
        """THE way onto the model thread: `run(prepared, rows)` once the answer (`answer` values, `what` they
        are), the tokens and the queue allow it; in pieces over split_tokens when `split` (then `run` returns a
        row per text), merged with other requests of the same `key`. The result, pieces joined."""
        self.bound(answer, what)
        self.charge(sum(prepared.tokens))
        return await self.batcher.submit(key, prepared, run, split=split)


def over_limit(prepared: Prepared, limit: int, pairs: bool) -> str:
    """The refusal of the first over-long input (truncate: false), in the library's words."""
    i = prepared.truncated[0]
    if pairs:  # as CrossEncoder.logits says it
        return (f"query + document {i} is longer than the model's limit of {limit} tokens; shorten it or allow "
                "truncation")
    e = prepared.encodings[i]
    full = len(e.ids) + sum(len(o.ids) for o in e.overflowing[:1])
    return f"text {i} has more than {limit} tokens (at least {full}); shorten it or allow truncation"
