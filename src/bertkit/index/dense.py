"""The float32 dense kinds: `exact` (brute force over memory-mapped vectors.npy) and `hnsw` (FAISS HNSW).

    build_index("vecs/", "idx/", kind="hnsw")
    hits = Index.load("idx/").search_text(encoder, "oil prices rise", k=10)

Metric: `cosine` (default) L2-normalises the corpus vectors once at build time and every query, then ranks
by inner product; `dot` ranks by the raw inner product. Truncated or quantized corpora, and these kinds built
with --dimensions or --rescore, are stored compact (bertkit.index.compact).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import VectorIndexError
from bertkit.index.base import BuildOptions, Index, faiss_module, write_index
from bertkit.pooling import normalize_rows

EXACT_BLOCK = 65536  # corpus rows scored per matrix product, so exact search memory stays bounded


class DenseIndex(Index):
    """What the two float kinds share: the corpus read as float32 rows, queries checked and normalised."""

    @classmethod
    def build(cls, embeddings_dir: str | Path, out: Path, manifest: dict[str, Any], kind: str, metric: str,
              options: BuildOptions) -> None:
        from bertkit.corpus import read_embeddings

        items, vectors = read_embeddings(embeddings_dir)
        if not len(vectors):
            raise VectorIndexError(f"{embeddings_dir} holds no vectors; nothing to index")
        if metric == "cosine":
            vectors = normalize_rows(vectors)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, H)
        write_index(out, embeddings_dir, manifest, items, kind, metric, vectors.shape, cls.params(options),
                    lambda folder: cls.write_data(folder, vectors, options))

    @classmethod
    def params(cls, options: BuildOptions) -> dict[str, Any]:
        return {}

    @classmethod
    def write_data(cls, folder: Path, vectors: np.ndarray, options: BuildOptions) -> None:
        raise NotImplementedError

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))  # (q, H)
        if queries.shape[1] != self.info["dim"]:
            raise VectorIndexError(f"query vectors have dimension {queries.shape[1]}, the index "
                                   f"{self.info['dim']}; use the model the corpus was embedded with")
        if self.info["metric"] == "cosine":
            queries = normalize_rows(queries)
        return self.search_dense(queries, min(k, len(self)))

    def search_dense(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ExactIndex(DenseIndex):
    stored_as = "exact"

    @classmethod
    def write_data(cls, folder: Path, vectors: np.ndarray, options: BuildOptions) -> None:
        np.save(folder / "vectors.npy", vectors)

    @classmethod
    def open(cls, path: Path, info: dict[str, Any], ef_search: int | None) -> np.ndarray:
        # Memory-mapped: the OS pages vectors in as they are scored, the process does not copy them.
        return np.load(path / "vectors.npy", mmap_mode="r")

    def search_dense(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        best_s = np.full((len(queries), 0), -np.inf, np.float32)
        best_i = np.zeros((len(queries), 0), np.int64)
        for start in range(0, len(self), EXACT_BLOCK):
            block = np.asarray(self._backend[start : start + EXACT_BLOCK])
            scores = queries @ block.T  # (q, block)
            kk = min(k, scores.shape[1])
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            best_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], 1)
            best_i = np.concatenate([best_i, top + start], 1)
            if best_s.shape[1] > k:
                keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
                best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
        # Best first; ties by position, so results are deterministic.
        order = np.lexsort((best_i, -best_s), axis=1)
        return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


class HnswIndex(DenseIndex):
    stored_as = "hnsw"

    @classmethod
    def params(cls, options: BuildOptions) -> dict[str, Any]:
        return options.hnsw_params()

    @classmethod
    def write_data(cls, folder: Path, vectors: np.ndarray, options: BuildOptions) -> None:
        faiss = faiss_module("--kind hnsw")
        index = faiss.IndexHNSWFlat(vectors.shape[1], options.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = options.ef_construction
        index.add(vectors)
        faiss.write_index(index, str(folder / "hnsw.faiss"))

    @classmethod
    def open(cls, path: Path, info: dict[str, Any], ef_search: int | None) -> Any:
        index = faiss_module("--kind hnsw").read_index(str(path / "hnsw.faiss"))
        index.hnsw.efSearch = ef_search or info["params"]["ef_search"]
        return index

    def search_dense(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._backend.search(np.ascontiguousarray(queries), k)
