"""SPLADE sparse vectors: the masked-LM head read as a sentence representation.

At every token the MLM head gives a logit per vocabulary entry; log(1 + ReLU(logit)) keeps the positive
evidence, damped, and a max over the text's real tokens (padding excluded) gives one weight per vocabulary
entry. Most weights are 0, so the vector is a sparse, readable bag of "expansion terms": the words the head
reads into the text, including ones the text does not contain.

    from bertkit import Encoder
    enc = Encoder.load("splade-tiny")                   # any checkpoint with the masked-LM head
    m = enc.encode_sparse(["A man plays guitar."])      # scipy.sparse.csr_matrix, (1, vocab)
    expansion_terms(enc, "A man plays guitar.", top_k=5)   # [('guitar', 2.1), ('man', 1.7), ...]

The body runs through the encoder's fast path (packed, or its precision / backend); the head runs on the real
tokens only, a slice at a time, so the (tokens x vocab) logits never exist for a whole batch at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.batching import Prepared
from bertkit.errors import OptionError

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

    from bertkit.encoder import Encoder

log = logging.getLogger(__name__)

HEAD_ROWS = 256  # real tokens per MLM-head slice: 256 x 30,522 float32 logits = 31 MB


@dataclass
class SparseEncoded:
    matrix: csr_matrix  # (n, vocab) float32, one row per text, in input order
    truncated: list[int]  # positions of the texts cut to max_length
    tokens: int  # tokens run through the model


def splade_pool(mlm_logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) mask -> (B, V): max over real tokens of log(1 + ReLU(logit)). The reference
    formula (what sentence-transformers' SpladePooling computes); `encode_sparse` gets the same in slices."""
    weights = torch.log1p(torch.relu(mlm_logits.float())) * attention_mask.unsqueeze(-1).to(torch.float32)
    return weights.amax(1)


def _head_weights(encoder: Encoder, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) last hidden states -> (B, V) SPLADE weights, the head run on real tokens, HEAD_ROWS at a time.

    log(1 + ReLU(x)) never decreases in x, so the max over tokens is taken on the logits (starting from 0,
    which is the ReLU) and the log applied once per text: the same numbers, with no (tokens x V) log1p."""
    transform, weight, bias = encoder.model.mlm_head()  # every family's head in the same three parts
    rows, cols = mask.nonzero(as_tuple=True)
    out = torch.zeros(hidden.shape[0], weight.shape[0], device=hidden.device)
    for start in range(0, len(rows), HEAD_ROWS):
        r, c = rows[start : start + HEAD_ROWS], cols[start : start + HEAD_ROWS]
        # The head's decoder with its bias in one GEMM (addmm): a separate (n, V) add costs a quarter as much again.
        logits = F.linear(transform(hidden[r, c]), weight, bias).float()  # (n, V)
        out.scatter_reduce_(0, r.unsqueeze(1).expand_as(logits), logits, "amax", include_self=True)
    return torch.log1p(out)


def _top(weights: torch.Tensor, top_k: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: (vocabulary ids, weights) of its non-zero entries (the top_k largest when given), by id."""
    out = []
    for row in weights:
        idx = row.nonzero().flatten()
        if top_k is not None and len(idx) > top_k:
            idx = row.topk(top_k).indices
            idx = idx[row[idx] > 0]
        idx = idx.sort().values
        out.append((idx.cpu().numpy().astype(np.int32), row[idx].cpu().numpy().astype(np.float32)))
    return out


def encode_sparse(
    encoder: Encoder,
    texts: str | Sequence[str] | Prepared,
    top_k: int | None = None,
    batch_size: int = 32,
    truncate: bool = True,
    max_tokens: int | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> SparseEncoded:
    """SPLADE vectors of `texts` as a CSR matrix (n, vocab); top_k keeps each row's k largest weights.

    Needs the masked-LM head (MissingHeadError otherwise). Batching and truncation as in `Encoder.encode`; a
    `prepare(...)`d batch is not tokenized again.
    """
    from scipy.sparse import csr_matrix

    from bertkit.batching import DEFAULT_MAX_TOKENS

    encoder.require("mlm", "a sparse (SPLADE) vector")
    if top_k is not None and top_k < 1:
        raise OptionError(f"top_k must be >= 1, got {top_k}")
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")
    prepared = texts if isinstance(texts, Prepared) else encoder.prepare(texts, truncate=truncate)
    encoder.last_truncated = len(prepared.truncated)
    texts = prepared.texts
    rows: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int32), np.zeros(0, np.float32))] * len(texts)

    def embed(idx: np.ndarray, batch) -> None:
        hidden = encoder.run_batch(batch).last_hidden_state  # the fast path: packed / precision / backend
        with torch.inference_mode():
            weights = _head_weights(encoder, torch.as_tensor(hidden), torch.as_tensor(batch.attention_mask))
        for i, row in zip(idx, _top(weights, top_k)):
            rows[i] = row

    encoder.each_batch(prepared, embed, batch_size=batch_size, max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
                       workers=workers, progress=progress)
    indptr = np.zeros(len(texts) + 1, np.int64)
    indptr[1:] = np.cumsum([len(i) for i, _ in rows])
    indices = np.concatenate([i for i, _ in rows]) if rows else np.zeros(0, np.int32)
    values = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, np.float32)
    vocab = encoder.model.config.vocab_size
    matrix = csr_matrix((values, indices, indptr), shape=(len(texts), vocab), dtype=np.float32)
    return SparseEncoded(matrix, prepared.truncated, sum(prepared.tokens))


def row_terms(matrix: csr_matrix, row: int, tokenizer, top_k: int | None = None) -> list[tuple[str, float]]:
    """One row's (token, weight) pairs, heaviest first (ties by vocabulary id); tokens as the tokenizer's
    decoder writes them (RoBERTa's 'Ġguitar' as 'guitar')."""
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    ids, vals = matrix.indices[start:end], matrix.data[start:end]
    order = np.lexsort((ids, -vals))[: top_k if top_k is not None else None]
    return [(tokenizer.token_text(int(ids[i])), float(vals[i])) for i in order]


def expansion_terms(encoder: Encoder, texts: str | Sequence[str], top_k: int = 20) -> list:
    """Per text, its top_k expansion terms with their weights: what the [MASK] head reads into the text."""
    if top_k < 1:
        raise OptionError(f"top_k must be >= 1, got {top_k}")
    single = isinstance(texts, str)
    matrix = encode_sparse(encoder, texts, top_k=top_k).matrix
    out = [row_terms(matrix, i, encoder.tokenizer) for i in range(matrix.shape[0])]
    return out[0] if single else out


def sparse_json(matrix: csr_matrix, row: int) -> list[dict]:
    """One row as text-embeddings-inference's /embed_sparse answers it: [{"index", "value"}], by index."""
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return [{"index": int(i), "value": float(v)} for i, v in zip(matrix.indices[start:end], matrix.data[start:end])]
