"""Compact index kinds: binary (Hamming) and int8 codes, and truncated dimensions, with optional rescoring.

    bertkit index build emb --output idx --kind binary --rescore 100     # 48 bytes a vector (384 dims)
    bertkit index build emb --output idx --kind int8                     # 384 bytes; ranges calibrated on emb
    bertkit index build emb --output idx --kind exact --dimensions 128   # float32, 128 dims re-normalised
    bertkit search idx "a query"                                         # unchanged: any kind

Kinds (FAISS for all of them):
- `binary`: `IndexBinaryFlat`, exact Hamming distance over the packed sign bits (bertkit.vectors.compact's
  `ubinary`); `binary-hnsw`: `IndexBinaryHNSW`, approximate. The score is `1 - 2 * hamming / bits`, the share
  of signs that agree mapped to [-1, 1].
- `int8`: `IndexScalarQuantizer` (8 bits per dimension) whose ranges are the calibration's (bertkit's codes
  and FAISS's are the same bytes); the score is the inner product of the float query with the decoded codes.
- `exact` / `hnsw` with `dimensions` (or over a corpus embedded with --dimensions): `IndexFlatIP` /
  `IndexHNSWFlat` over the truncated, re-normalised vectors.

`--rescore K` (float corpora only) re-ranks each query's top K candidates by the exact inner product (cosine
for metric cosine) with the corpus's float vectors at their full size. Those are exported once from the corpus
shards to `rescore.float32.npy` in the corpus folder (tied to its manifest by digest) and memory-mapped at
search time: only the candidates' rows are read, so the index in memory stays the compact codes. An index
over a corpus embedded with --dtype uses its codes as they are (and, for int8, the corpus's calibration).

Queries are float vectors of the corpus model's size (what `Index.encode_queries` makes), or already truncated
to the index's dimensions; anything else is refused, naming the model and dimension the index was built from.
`Index.load` opens every index whose index.json has a `compact` entry as a `CompactIndex`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import OutputError, VectorIndexError
from bertkit.index.base import BuildOptions, Index, faiss_module, write_index
from bertkit.outputs import atomic_write
from bertkit.pooling import normalize_rows

log = logging.getLogger(__name__)

COMPACT_KINDS = ("binary", "binary-hnsw", "int8")
FLOAT_KINDS = ("exact", "hnsw")
FAISS_FILE = "compact.faiss"
CALIBRATION_FILE = "calibration.npz"
STORE_FILE, STORE_INFO = "rescore.float32.npy", "rescore.float32.json"


@dataclass
class Compact:
    """The search side of a compact index: a FAISS index and, when rescoring, the memory-mapped float
    store."""

    faiss_index: Any
    kind: str
    metric: str
    dims: int  # searched dimensions
    hidden: int  # the model's size: what encode_queries gives
    store_dims: int  # dimensions of the rescoring store (the corpus's float vectors)
    model: str
    rescore: int = 0
    store: np.ndarray | None = None


def _corpus_hidden(embeddings_dir: Path, manifest: dict[str, Any], dim: int) -> int:
    """The model size the corpus vectors came from (shards record it when they hold truncated vectors)."""
    import pyarrow.parquet as pq

    from bertkit.corpus import Shard

    if not manifest["shards"]:
        return dim
    meta = pq.read_metadata(Path(embeddings_dir) / Shard(**manifest["shards"][0]).file).metadata or {}
    return int(meta.get(b"bertkit.hidden_size", dim))


# -- building ------------------------------------------------------------------------------------------------


def _check_corpus(embeddings_dir, dtype: str, kind: str, dimensions: int | None, rescore: int,
                  calibration) -> None:
    """Options that the corpus's dtype rules out, refused before reading it."""
    from bertkit.vectors.compact import PACKED

    if rescore < 0:
        raise VectorIndexError(f"--rescore {rescore}: give 0 (off) or how many candidates to rescore")
    if calibration is not None and kind != "int8":
        raise VectorIndexError(f"--calibration is for --kind int8, not {kind}")
    if rescore and kind in FLOAT_KINDS and dimensions is None:
        raise VectorIndexError(f"--rescore {rescore} means nothing for --kind {kind} over full float vectors (its "
                               "scores already are the float ones); drop --rescore, or use it with --kind "
                               "binary|binary-hnsw|int8 or --dimensions")
    if dtype == "float32":
        return
    want = "binary or binary-hnsw" if dtype in PACKED else "int8"
    if (kind in COMPACT_KINDS[:2]) != (dtype in PACKED) or kind in FLOAT_KINDS:
        raise VectorIndexError(f"{embeddings_dir} holds {dtype} codes: build --kind {want}, or embed the "
                               f"corpus in float32 for --kind {kind}")
    if dimensions is not None or rescore or calibration is not None:
        raise VectorIndexError(f"{embeddings_dir} holds {dtype} codes: --dimensions, --rescore and "
                               "--calibration need a float32 corpus (embed-corpus without --dtype)")


def _searchable(embeddings_dir, e: dict[str, Any], vectors: np.ndarray, kind: str, metric: str,
                dimensions: int | None, calibration):
    """(what the FAISS index is built from, the int8 calibration or None) for the corpus's vectors or
    codes."""
    from bertkit.corpus.compact import read_calibration
    from bertkit.vectors.compact import PACKED, as_calibration, dequantize, fit, to_ubinary, truncate

    dtype = e.get("dtype", "float32")
    if dtype in PACKED:
        return to_ubinary(vectors), None
    if dtype != "float32":  # int8 / uint8 codes: their bin middles, which FAISS encodes back to the codes
        cal = read_calibration(embeddings_dir, e)
        return dequantize(vectors, dtype, cal), cal
    if dimensions is not None:
        data = truncate(vectors, dimensions)
    else:
        data = normalize_rows(vectors) if metric == "cosine" else vectors
    if kind != "int8":
        return data, None
    unit = True if metric == "cosine" or dimensions is not None else e.get("normalize")
    if calibration is None:
        return data, fit(data, model=e.get("model"), pooling=e["pooling"], unit=unit,
                         source=str(embeddings_dir))
    cal = as_calibration(calibration)
    cal.check(data.shape[1], e["pooling"], unit)
    return data, cal


def _bytes_per_vector(kind: str, dims: int) -> int:
    return (dims + 7) // 8 if kind.startswith("binary") else dims if kind == "int8" else 4 * dims


def _faiss():
    return faiss_module("binary / int8 / truncated indexes")


def _faiss_index(kind: str, data: np.ndarray, dims: int, cal, m: int, ef_construction: int):
    faiss = _faiss()
    if kind.startswith("binary"):
        codes = data if data.dtype == np.uint8 else np.packbits(data > 0, axis=-1)
        bits = codes.shape[1] * 8  # a last byte padded with zero bits on both sides: Hamming unchanged
        index = faiss.IndexBinaryFlat(bits) if kind == "binary" else faiss.IndexBinaryHNSW(bits, m)
        if kind == "binary-hnsw":
            index.hnsw.efConstruction = ef_construction
        index.add(np.ascontiguousarray(codes))
        return index
    data = np.ascontiguousarray(data, dtype=np.float32)
    if kind == "int8":
        index = faiss.IndexScalarQuantizer(dims, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        lo, hi = cal.ranges
        faiss.copy_array_to_vector(np.concatenate([lo, hi - lo]).astype(np.float32), index.sq.trained)
        index.is_trained = True
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dims, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    else:
        index = faiss.IndexFlatIP(dims)
    index.add(data)
    return index


def _manifest_digest(embeddings_dir: Path) -> str:
    return hashlib.sha256((embeddings_dir / "manifest.json").read_bytes()).hexdigest()[:16]


def _write_store(embeddings_dir: Path, vectors: np.ndarray) -> dict[str, Any]:
    """The corpus's float vectors as one .npy in its folder (once per corpus version), for memory-mapping."""
    info = {"manifest": _manifest_digest(embeddings_dir), "count": len(vectors), "dim": int(vectors.shape[1])}
    info_path, path = embeddings_dir / STORE_INFO, embeddings_dir / STORE_FILE
    if path.is_file() and info_path.is_file() and json.loads(info_path.read_text(encoding="utf-8")) == info:
        return {"file": STORE_FILE, **info}
    try:
        atomic_write(path, lambda tmp: np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float32)),
                     suffix=".npy")
        atomic_write(info_path, json.dumps(info) + "\n")
    except OutputError as e:
        raise VectorIndexError(f"--rescore keeps the corpus's float vectors in {path}: {e}; make the corpus "
                               "folder writable, or build without --rescore") from None
    log.info("wrote the rescoring store %s (%d x %d float32)", path, len(vectors), vectors.shape[1])
    return {"file": STORE_FILE, **info}


# -- loading and searching -----------------------------------------------------------------------------------


def open_store(corpus: Path, store: dict[str, Any]) -> np.ndarray:
    """The memory-mapped float vectors for rescoring; refused when gone or when the corpus changed since."""
    path, info_path = corpus / store["file"], corpus / STORE_INFO
    if not path.is_file() or not info_path.is_file():
        raise VectorIndexError(f"rescoring needs {path} (written by `bertkit index build --rescore`); "
                               "rebuild the index, or build it without --rescore")
    if (corpus / "manifest.json").is_file() and _manifest_digest(corpus) != store["manifest"]:
        raise VectorIndexError(f"the corpus {corpus} changed since this index was built; rebuild the index")
    return np.load(path, mmap_mode="r")


def _queries(c: Compact, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(what the index searches, what rescoring compares) from float queries of the model's size."""
    from bertkit.vectors.compact import truncate

    queries = np.asarray(queries)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.dtype.kind != "f" or queries.shape[1] not in (c.hidden, c.dims):
        what = f"{queries.dtype} codes" if queries.dtype.kind != "f" else f"dimension {queries.shape[1]}"
        raise VectorIndexError(f"query vectors have {what}; this {c.kind} index was built from "
                               f"{c.hidden}-dimensional float vectors of model {c.model} (searched at "
                               f"{c.dims}): encode the queries with that model (`bertkit search` and /search "
                               "do)")
    queries = queries.astype(np.float32)
    cosine = c.metric == "cosine"
    full = queries.shape[1] == c.hidden
    if c.dims < c.hidden and full:
        searched = truncate(queries, c.dims)
    else:
        searched = normalize_rows(queries) if cosine else queries
    stored = None
    if c.rescore:
        if not full and c.dims != c.store_dims:
            raise VectorIndexError(f"rescoring compares {c.store_dims}-dimensional vectors; give "
                                   f"{c.hidden}-dimensional queries")
        stored = truncate(queries, c.store_dims) if queries.shape[1] > c.store_dims else queries
        stored = normalize_rows(stored) if cosine else stored
    return np.ascontiguousarray(searched), stored


def _rescore(c: Compact, queries: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Exact inner products of each query with its candidates' float vectors (read from the memory map)."""
    scores = np.full(pos.shape, -np.inf, np.float32)
    for i, (q, p) in enumerate(zip(queries, pos)):
        ok = p >= 0
        rows = np.asarray(c.store[np.sort(p[ok])], dtype=np.float32)
        rows = rows[np.argsort(np.argsort(p[ok]))]  # back to the candidates' order
        if c.metric == "cosine":
            rows = normalize_rows(rows)
        scores[i, ok] = rows @ q
    return scores


# -- the kind ------------------------------------------------------------------------------------------------


class CompactIndex(Index):
    """binary / binary-hnsw / int8, and exact / hnsw over truncated vectors: FAISS codes, optional
    rescoring."""

    stored_as = "compact"

    @classmethod
    def build(cls, embeddings_dir: str | Path, out: Path, manifest: dict[str, Any], kind: str, metric: str,
              options: BuildOptions) -> None:
        """Read the corpus, make the codes and write the index folder."""
        from bertkit.corpus import read_embeddings
        from bertkit.vectors.compact import PACKED, check_dimensions

        dimensions, rescore, calibration = options.dimensions, options.rescore, options.calibration
        e = manifest["embedding"]
        dtype = e.get("dtype", "float32")
        _check_corpus(embeddings_dir, dtype, kind, dimensions, rescore, calibration)
        items, vectors = read_embeddings(embeddings_dir)
        if not len(vectors):
            raise VectorIndexError(f"{embeddings_dir} holds no vectors; nothing to index")
        bits = vectors.shape[1] * 8 if dtype in PACKED else vectors.shape[1]
        corpus_dims = e.get("dimensions") or bits
        check_dimensions(dimensions, corpus_dims)
        dims = dimensions or corpus_dims
        data, cal = _searchable(embeddings_dir, e, vectors, kind, metric, dimensions, calibration)
        index = _faiss_index(kind, data, dims, cal, options.m, options.ef_construction)
        params: dict[str, Any] = options.hnsw_params() if kind.endswith("hnsw") else {}
        codes = {"binary-hnsw": "ubinary", "binary": "ubinary", "int8": "uint8"}.get(kind, "float32")
        spec = {"dtype": codes,
                "dimensions": dims, "hidden": _corpus_hidden(Path(embeddings_dir), manifest, corpus_dims),
                "store_dims": corpus_dims, "rescore": int(rescore),
                "bytes_per_vector": _bytes_per_vector(kind, dims),
                "calibration": cal.digest if cal else None}
        if rescore:
            spec["store"] = _write_store(Path(embeddings_dir), vectors)

        def write_data(folder: Path) -> None:
            faiss = _faiss()
            if kind.startswith("binary"):
                faiss.write_index_binary(index, str(folder / FAISS_FILE))
            else:
                faiss.write_index(index, str(folder / FAISS_FILE))
            if cal is not None:
                cal.save(folder / CALIBRATION_FILE)

        write_index(out, embeddings_dir, manifest, items, kind, metric, (len(data), dims),
                    {**params, "compact": spec}, write_data)

    @classmethod
    def open(cls, path: Path, info: dict[str, Any], ef_search: int | None) -> Compact:
        faiss = _faiss()
        spec, kind = info["params"]["compact"], info["kind"]
        if kind.startswith("binary"):
            index = faiss.read_index_binary(str(path / FAISS_FILE))
        else:
            index = faiss.read_index(str(path / FAISS_FILE))
        if kind.endswith("hnsw"):
            index.hnsw.efSearch = ef_search or info["params"]["ef_search"]
        backend = Compact(index, kind, info["metric"], spec["dimensions"], spec["hidden"], spec["store_dims"],
                          info["embedding"].get("model") or "(the packaged default)", spec["rescore"])
        if spec["rescore"]:
            backend.store = open_store(Path(info["source"]), spec["store"])
        return backend

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (q, k'), best first; ties by position."""
        c: Compact = self._backend
        searched, stored = _queries(c, queries)
        n = len(self)
        k = min(k, n)
        fetch = min(max(k, c.rescore), n)
        if c.kind.startswith("binary"):
            codes = np.packbits(searched > 0, axis=-1)
            dist, pos = c.faiss_index.search(codes, fetch)
            scores = 1 - 2 * dist.astype(np.float32) / c.dims
        else:
            scores, pos = c.faiss_index.search(searched, fetch)
        if stored is not None:
            scores = _rescore(c, stored, pos)
        order = np.lexsort((np.where(pos < 0, n, pos), -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, 1).astype(np.float32), np.take_along_axis(pos, order, 1)

    def set_rescore(self, k: int) -> None:
        """Change how many candidates this index rescores (0: off); the store must exist (built with
        --rescore)."""
        c: Compact = self._backend
        if k and c.store is None:
            raise VectorIndexError(f"{self.path} was built without --rescore: it has no float vectors to "
                                   "rescore with")
        c.rescore = int(k)


def set_rescore(index: CompactIndex, k: int) -> None:
    """Change how many candidates a loaded index rescores (0: off); the store must exist (built with
    --rescore)."""
    index.set_rescore(k)
