"""The server's limits and batching knobs (`bertkit serve --max-inputs ...`), shared by the service and batcher."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    max_inputs: int = 256  # texts in one request -> 413
    max_chars: int = 20_000  # characters in one text -> 413
    max_queued_tokens: int = 65_536  # tokens accepted but not yet answered, all requests together -> 429
    batch_tokens: int = 8_192  # the batcher closes a model batch once this many tokens are in it
    max_wait_ms: float = 5.0  # how long a request waits for company while the model is busy (idle: none)
    # Rows per forward pass inside a merged batch (encode() also caps it at 4,096 padded tokens); None: 256 with
    # the model in its own process, else offline's 32 (serve/batcher.forward_rows says why).
    encode_batch_size: int | None = None
    # What one request may cost (issue 16): bounded by the operator, reported by /info.
    max_poolings: int = 7  # distinct poolings in one /similarity request (duplicates are merged) -> 413
    max_layers: int = 13  # layers averaged in one request, each at most once (duplicates -> 400) -> 413
    max_body_bytes: int = 16 * 1024 * 1024  # request body size -> 413, before it is read
    body_timeout_s: float = 30.0  # time to receive a whole request body -> 408
    split_tokens: int = 1_024  # a request over this many tokens runs in pieces, small requests between them
    # Values in one answer (floats, ids, scores), estimated from the prepared encodings before any work -> 413:
    # 4M float32 is 16 MB of numbers (~50 MB of JSON): /tokens or /embed_all of ~10,400 tokens of a 384-wide model.
    max_answer_values: int = 4_000_000
