"""Embed a corpus (JSONL / CSV / TSV / Parquet / text) into Parquet shards with a manifest.

    from bertkit.corpus import CorpusJob, embed_corpus
    embed_corpus(CorpusJob("docs.jsonl", "out/", text_column="body", normalize=True))

Layout: `spec` (the job, its options and result), `source` (formats, the shard plan, reading a shard's rows),
`shards` (embedding a shard and writing it whole), `storage` (s3:// URIs: filesystem, credentials, bucket),
`output` (where shards go: a local folder, or an object-store prefix with its commit protocol), `job`
(manifest, resume, the local engine and `embed_corpus`). Input and output may be local paths or s3:// URIs.
The Ray engine is `bertkit.corpus.ray`, imported only when `engine="ray"` is asked for, so Ray stays optional.
See `job` for how shards, resume and the manifest work.
"""

from __future__ import annotations

from bertkit.corpus.job import embed_corpus, read_embeddings, read_manifest
from bertkit.corpus.shards import ShardEmbedder, load_encoder, shard_done, text_hash, write_shard
from bertkit.corpus.source import plan_shards, read_shard
from bertkit.corpus.spec import CorpusError, CorpusJob, CorpusResult, EmbedOptions, Shard, Source

__all__ = [
    "CorpusError", "CorpusJob", "CorpusResult", "EmbedOptions", "Shard", "ShardEmbedder", "Source", "embed_corpus",
    "load_encoder", "plan_shards", "read_embeddings", "read_manifest", "read_shard", "shard_done", "text_hash",
    "write_shard",
]
