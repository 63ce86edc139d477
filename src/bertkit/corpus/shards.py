"""Embedding one shard into its output table, and writing it so that a shard file that exists is complete."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertkit.corpus.compact import compact_columns, shard_spec
from bertkit.corpus.spec import CorpusError, EmbedOptions, Shard
from bertkit.outputs import writing

log = logging.getLogger(__name__)


def load_encoder(options: EmbedOptions, device: str | None = None):
    """The encoder the options name, in their precision / backend (None: Encoder.load's fp32 / torch)."""
    from bertkit.encoder import Encoder

    return Encoder.load(options.model, device, precision=options.precision or "fp32",
                        backend=options.backend or "torch")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_chunking(options: EmbedOptions, max_length: int) -> None:
    if options.chunk_tokens is None:
        return
    limit = max_length - 2  # [CLS] and [SEP]
    if not 1 <= options.chunk_tokens <= limit:
        raise CorpusError(f"--chunk-tokens {options.chunk_tokens}: must be between 1 and {limit} for this model")
    if not 0 <= options.chunk_overlap < options.chunk_tokens:
        raise CorpusError(f"--chunk-overlap {options.chunk_overlap}: must be >= 0 and below --chunk-tokens")


class ShardEmbedder:
    """Turns the rows of a shard into the output table. Used by both engines, so they agree exactly."""

    def __init__(self, encoder, options: EmbedOptions):
        self.encoder = encoder
        self.options = options
        check_chunking(options, encoder.max_length)
        if options.sparse:
            encoder.model.require("mlm", "embed-corpus --sparse (SPLADE vectors)")
        self.spec = shard_spec(options, encoder)  # pooling, normalize, compact codes (corpus/compact.py)
        self._chunker = None
        if options.chunk_tokens is not None:
            from tokenizers import Tokenizer

            # A truncation-free copy: the windows must cover the whole text.
            self._chunker = Tokenizer.from_str(encoder.tokenizer.tokenizer.to_str())
            self._chunker.no_truncation()

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of overlapping windows of chunk_tokens wordpieces; one span for a short text."""
        size, overlap = self.options.chunk_tokens, self.options.chunk_overlap
        offsets = self._chunker.encode(text, add_special_tokens=False).offsets
        if len(offsets) <= size:
            return [(0, len(text))]
        spans = []
        for start in range(0, len(offsets), size - overlap):
            end = min(start + size, len(offsets))
            spans.append((offsets[start][0], offsets[end - 1][1]))
            if end == len(offsets):
                break
        return spans

    def embed(self, rows: list[int], ids: list[str], texts: list[str]) -> pa.Table:
        o = self.options
        columns: dict[str, Any] = {"row": pa.array(rows, pa.int64()), "id": pa.array(ids, pa.string())}
        if self._chunker is not None:
            expanded = [(i, s, e) for i, t in enumerate(texts) for s, e in self.spans(t)]
            src = [i for i, _, _ in expanded]
            chunk_texts = [texts[i][s:e] for i, s, e in expanded]
            chunk_no = [0] * len(expanded)
            for k in range(1, len(expanded)):
                chunk_no[k] = chunk_no[k - 1] + 1 if src[k] == src[k - 1] else 0
            columns = {"row": pa.array([rows[i] for i in src], pa.int64()), "id": pa.array([ids[i] for i in src])}
            columns["chunk"] = pa.array(chunk_no, pa.int32())
            columns["start"] = pa.array([s for _, s, _ in expanded], pa.int32())
            columns["end"] = pa.array([e for _, _, e in expanded], pa.int32())
            hashes = [text_hash(t) for t in texts]
            columns["text_hash"] = pa.array([hashes[i] for i in src], pa.string())
            to_embed = chunk_texts
        else:
            columns["text_hash"] = pa.array([text_hash(t) for t in texts], pa.string())
            to_embed = texts
        if o.keep_text:
            columns["text"] = pa.array(to_embed, pa.string())
        if o.sparse:
            return sparse_columns(self.encoder, o, columns, to_embed)
        spec = self.spec
        pooled = self.encoder.encode(to_embed, pooling=spec.pooling, normalize=spec.pool_normalize,
                                     batch_size=o.batch_size) if to_embed else None
        vectors = spec.apply(pooled) if pooled is not None else None
        if not spec.is_float:
            return compact_columns(self.encoder, o, columns, vectors)
        dim = self.encoder.hidden_size
        if vectors is None:
            vectors = np.zeros((0, dim), np.float32)
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        return pa.table(columns)


def sparse_columns(encoder, o: EmbedOptions, columns: dict[str, Any], texts: list[str]) -> pa.Table:
    """The shard table of `embed-corpus --sparse`: SPLADE vectors as `indices` / `values` list columns, the
    vocabulary size in the schema metadata (bertkit.index.sparse reads them back)."""
    from bertkit.vectors.sparse import encode_sparse

    m = encode_sparse(encoder, texts, top_k=o.sparse_top_k, batch_size=o.batch_size).matrix if texts else None
    offsets = pa.array(m.indptr if m is not None else [0], pa.int32())
    columns["indices"] = pa.ListArray.from_arrays(offsets, pa.array(m.indices if m is not None else [], pa.int32()))
    columns["values"] = pa.ListArray.from_arrays(offsets, pa.array(m.data if m is not None else [], pa.float32()))
    vocab = str(encoder.model.config.vocab_size).encode()
    return pa.table(columns).replace_schema_metadata({b"bertkit.vocab_size": vocab})


def shard_table(shard: Shard, table: pa.Table, skipped: int) -> pa.Table:
    """The table with the shard's own metadata (its index, rows skipped, input rows) in its schema."""
    meta = {b"bertkit.shard": str(shard.index).encode(), b"bertkit.skipped": str(skipped).encode(),
            b"bertkit.source_rows": str(shard.rows).encode()}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})


def write_shard(output_dir: Path, shard: Shard, table: pa.Table, skipped: int) -> None:
    """Write through a temporary file and a rename: a part file that exists is whole."""
    table = shard_table(shard, table, skipped)
    final = Path(output_dir) / shard.file
    tmp = final.with_name(f".{shard.file}.tmp-{os.getpid()}")
    try:
        with writing(final):  # a full disk: one line naming the cause; the shard files written so far stay
            pq.write_table(table, tmp)
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def shard_done(output_dir: Path, shard: Shard) -> bool:
    path = Path(output_dir) / shard.file
    if not path.is_file():
        return False
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (pa.ArrowInvalid, OSError):
        log.warning("%s is unreadable; embedding that shard again", path)
        return False
    return meta.get(b"bertkit.shard") == str(shard.index).encode()
