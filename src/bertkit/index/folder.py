"""Vector indexes over embed-corpus output: exact (brute force) or approximate (FAISS HNSW), on disk.

    from bertkit.index.folder import build_index, Index
    build_index("vecs/", "idx/", kind="hnsw")
    hits = Index.load("idx/").search_text(encoder, "oil prices rise", k=10)

An index folder holds `index.json` (kind, metric, sizes, and how the vectors were made, so a query is
encoded the same way), `items.parquet` (row, id, chunk offsets and text when the corpus kept them, in
index order) and either `vectors.npy` (exact) or `hnsw.faiss` (approximate).

Metric: `cosine` (default) L2-normalises the corpus vectors once at build time and every query, then ranks
by inner product; `dot` ranks by the raw inner product.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertkit.errors import BertkitError, OptionError, VectorIndexError
from bertkit.outputs import atomic_folder, writing

log = logging.getLogger(__name__)

INDEX_FORMAT = "bertkit-index/1"
KINDS = ("exact", "hnsw", "sparse", "binary", "binary-hnsw", "int8")  # sparse: bertkit.index.sparse; binary /
# int8 (and exact / hnsw with dimensions): bertkit.index.compact
METRICS = ("cosine", "dot")
EXACT_BLOCK = 65536  # corpus rows scored per matrix product, so exact search memory stays bounded


@dataclass
class Hit:
    rank: int
    score: float
    id: str
    row: int
    chunk: int | None = None
    start: int | None = None
    end: int | None = None
    text: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise VectorIndexError("--kind hnsw needs FAISS: pip install 'bertkit[scale]' (faiss-cpu)") from None
    return faiss


def build_index(
    embeddings_dir: str | Path,
    output: str | Path,
    kind: str = "exact",
    metric: str | None = None,  # None: cosine for exact / hnsw, dot (SPLADE's) for sparse
    m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    overwrite: bool = False,
    dimensions: int | None = None,  # keep the first N dimensions, re-normalised (bertkit.index.compact)
    rescore: int = 0,  # rescore the top K candidates with the corpus's float vectors (compact kinds)
    calibration: str | Path | None = None,  # int8: the ranges (default: calibrated on the corpus)
) -> Path:
    """Build an index from a finished embed-corpus folder; written to a temporary folder, then renamed."""
    from bertkit.corpus import read_embeddings, read_manifest

    if kind not in KINDS:
        raise VectorIndexError(f"--kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    metric = metric or ("dot" if kind == "sparse" else "cosine")
    if metric not in METRICS:
        raise VectorIndexError(f"--metric {metric!r} is unknown; use cosine or dot")
    out = Path(output).expanduser()
    if out.exists() and not (out / "index.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise VectorIndexError(f"{out} exists and is not a bertkit index; choose a new output path")
    if (out / "index.json").is_file() and not overwrite:
        raise VectorIndexError(f"{out} already holds an index; pass --overwrite to replace it")
    manifest = read_manifest(embeddings_dir)
    if kind == "sparse":
        if rescore or dimensions is not None or calibration is not None:
            raise VectorIndexError("--rescore, --dimensions and --calibration are for dense indexes, not --kind sparse")
        from bertkit.index.sparse import save_matrix, sparse_index_data

        items, matrix = sparse_index_data(embeddings_dir, metric)
        _write_index(out, embeddings_dir, manifest, items, kind, metric, matrix.shape, {"nnz": int(matrix.nnz)},
                     lambda folder: save_matrix(folder, matrix))
        return out
    e = manifest["embedding"]
    compact = e.get("dtype", "float32") != "float32" or e.get("dimensions") is not None
    if kind not in ("exact", "hnsw") or compact or dimensions is not None or rescore:
        from bertkit.index.compact import build_compact

        build_compact(embeddings_dir, out, manifest, kind, metric, _write_index, dimensions=dimensions,
                      rescore=rescore, calibration=calibration, m=m, ef_construction=ef_construction,
                      ef_search=ef_search)
        return out
    items, vectors = read_embeddings(embeddings_dir)
    if not len(vectors):
        raise VectorIndexError(f"{embeddings_dir} holds no vectors; nothing to index")
    if metric == "cosine":
        vectors = _normalize(vectors)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    params: dict[str, Any] = {}
    if kind == "hnsw":
        params = {"m": m, "ef_construction": ef_construction, "ef_search": ef_search}

    def write_vectors(folder: Path) -> None:
        if kind == "exact":
            np.save(folder / "vectors.npy", vectors)
            return
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(vectors)
        faiss.write_index(index, str(folder / "hnsw.faiss"))

    _write_index(out, embeddings_dir, manifest, items, kind, metric, vectors.shape, params, write_vectors)
    return out


def _write_index(out: Path, embeddings_dir: str | Path, manifest: dict[str, Any], items: pa.Table, kind: str,
                 metric: str, shape: tuple[int, int], params: dict[str, Any], write_data) -> None:
    """The index folder: `write_data(folder)` writes the vectors, then items and index.json; all of it in a
    temporary folder renamed into place, so a killed build never leaves a half index."""
    with atomic_folder(out) as tmp, writing(out):  # a full disk, /proc, a read-only folder: one line, exit 2
        write_data(tmp)
        pq.write_table(items.drop_columns([c for c in ("text_hash",) if c in items.column_names]),
                       tmp / "items.parquet")
        info = {
            "format": INDEX_FORMAT, "kind": kind, "metric": metric, "count": int(shape[0]), "dim": int(shape[1]),
            "params": params, "embedding": manifest["embedding"], "source": str(Path(embeddings_dir).resolve()),
        }
        (tmp / "index.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    log.info("built a %s index of %d vectors in %s", kind, shape[0], out)


class Index:
    def __init__(self, path: Path, info: dict[str, Any], items: pa.Table, backend: Any):
        self.path, self.info, self.items, self._backend = path, info, items, backend
        self._columns = {name: items.column(name).to_pylist() for name in items.column_names}

    @classmethod
    def load(cls, path: str | Path, ef_search: int | None = None) -> Index:
        path = Path(path).expanduser()
        info_path = path / "index.json"
        if not info_path.is_file():
            raise VectorIndexError(f"{path} is not a bertkit index (no index.json); build one with `bertkit index build`")
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("format") != INDEX_FORMAT:
            raise VectorIndexError(f"{path} has index format {info.get('format')!r}; rebuild it with this bertkit")
        items = pq.read_table(path / "items.parquet")
        if "compact" in info["params"]:
            from bertkit.index.compact import load_compact

            backend = load_compact(path, info, ef_search)
        elif info["kind"] == "exact":
            # Memory-mapped: the OS pages vectors in as they are scored, the process does not copy them.
            backend = np.load(path / "vectors.npy", mmap_mode="r")
        elif info["kind"] == "sparse":
            from bertkit.index.sparse import load_matrix

            backend = load_matrix(path)
        else:
            backend = _faiss().read_index(str(path / "hnsw.faiss"))
            backend.hnsw.efSearch = ef_search or info["params"]["ef_search"]
        return cls(path, info, items, backend)

    @property
    def kind(self) -> str:
        return self.info["kind"]

    def __len__(self) -> int:
        return self.info["count"]

    def search_vectors(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (q, k'), best first; k' = min(k, size of the index)."""
        if k < 1:
            raise OptionError(f"k must be >= 1, got {k}")
        if self.kind == "sparse":  # queries: a (q, vocab) scipy sparse matrix
            from bertkit.index.sparse import search_sparse

            return search_sparse(self, queries, k)
        if "compact" in self.info["params"]:  # binary / int8 / truncated (bertkit.index.compact)
            from bertkit.index.compact import search_compact

            return search_compact(self, queries, k)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.info["dim"]:
            raise VectorIndexError(f"query vectors have dimension {queries.shape[1]}, the index {self.info['dim']}; "
                              "use the model the corpus was embedded with")
        if self.info["metric"] == "cosine":
            queries = _normalize(queries)
        k = min(k, len(self))
        if self.kind == "hnsw":
            scores, positions = self._backend.search(np.ascontiguousarray(queries), k)
            return scores, positions
        return self._exact(queries, k)

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        best_s = np.full((len(queries), 0), -np.inf, np.float32)
        best_i = np.zeros((len(queries), 0), np.int64)
        for start in range(0, len(self), EXACT_BLOCK):
            block = np.asarray(self._backend[start : start + EXACT_BLOCK])
            scores = queries @ block.T
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

    def hits(self, scores: np.ndarray, positions: np.ndarray) -> list[Hit]:
        """One query's results as Hits (faiss marks missing results with position -1)."""
        c = self._columns
        out = []
        for rank, (s, p) in enumerate(((s, int(p)) for s, p in zip(scores, positions) if p >= 0), start=1):
            extra = {name: c[name][p] for name in ("chunk", "start", "end", "text") if name in c}
            out.append(Hit(rank, float(s), c["id"][p], c["row"][p], **extra))
        return out

    def fill_texts(self, hits: list[Hit]) -> list[Hit]:
        """Give hits without a stored text (no --keep-text) their text, read back from the corpus's input file:
        one shard of rows per distinct shard hit. Hits keep text None when the input is gone or changed."""
        from bertkit.corpus import Shard, Source, read_manifest, read_shard

        missing = [h for h in hits if h.text is None]
        if not missing:
            return hits
        try:
            manifest = read_manifest(self.info["source"])
        except BertkitError:
            return hits
        src = manifest["input"]
        try:
            st = os.stat(src["path"])
        except OSError:
            return hits
        if (st.st_size, st.st_mtime_ns) != (src["size"], src["mtime_ns"]):
            log.warning("%s changed since it was embedded; not showing texts", src["path"])
            return hits
        source = Source(src["path"], src["format"], src["text_column"], src["id_column"], src["header"])
        shards = [Shard(**s) for s in manifest["shards"]]
        texts: dict[int, str] = {}
        for index in sorted({h.row // manifest["shard_rows"] for h in missing}):
            rows, _, shard_texts, _ = read_shard(source, shards[index], skip_bad_rows=True)
            texts.update(zip(rows, shard_texts))
        for h in missing:
            text = texts.get(h.row)
            h.text = text[h.start : h.end] if text is not None and h.start is not None else text
        return hits

    def encode_queries(self, encoder, queries: list[str]) -> np.ndarray:
        e = self.info["embedding"]
        if self.kind == "sparse":
            from bertkit.index.sparse import encode_sparse_queries

            return encode_sparse_queries(self, encoder, queries)
        return encoder.encode(queries, pooling=e["pooling"], normalize=e["normalize"])

    def search_text(self, encoder, queries: str | list[str], k: int = 10) -> list[list[Hit]]:
        """Encode the queries as the corpus was encoded, then search; one list of Hits per query."""
        queries = [queries] if isinstance(queries, str) else list(queries)
        scores, positions = self.search_vectors(self.encode_queries(encoder, queries), k)
        return [self.hits(s, p) for s, p in zip(scores, positions)]


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-k positions that the approximate top-k also returns."""
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / len(e[:k]) for a, e in zip(approx, exact)]))
