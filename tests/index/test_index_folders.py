"""Index folders in the on-disk format "bertkit-index/1", written here file by file as bertkit 0.1's builder
wrote them (before index/ became one class per kind), still load and search.

The writer below is frozen: it is the format, not a call into today's code, so a change to the builder or the
loader that stops reading yesterday's folders fails here. (The same test passes on the code before the
change: `from bertkit.index import Index` is the import path both have.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertkit.index import Index

VECTORS = np.eye(6, 8, dtype=np.float32) + 0.01  # (6, 8): row i points (mostly) along dimension i
EMBEDDING = {"model": None, "pooling": "mean", "normalize": True, "max_length": None}


def write_folder(path: Path, kind: str, dim: int, params: dict, metric: str = "cosine", **embedding) -> Path:
    """index.json and items.parquet exactly as bertkit-index/1 has them; the kind's data is the caller's."""
    path.mkdir(parents=True)
    pq.write_table(pa.table({"row": list(range(6)), "id": [f"d{i}" for i in range(6)],
                             "text": [f"text {i}" for i in range(6)]}), path / "items.parquet")
    info = {"format": "bertkit-index/1", "kind": kind, "metric": metric, "count": 6, "dim": dim,
            "params": params, "embedding": EMBEDDING | embedding, "source": str(path.parent / "no-corpus")}
    (path / "index.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return path


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_an_exact_folder_loads_and_searches(tmp_path):
    folder = write_folder(tmp_path / "exact", "exact", 8, {})
    np.save(folder / "vectors.npy", unit(VECTORS))
    idx = Index.load(folder)
    scores, positions = idx.search_vectors(VECTORS[[3, 1]], k=2)
    assert positions[:, 0].tolist() == [3, 1] and np.allclose(scores[:, 0], 1, atol=1e-6)
    (hit, _), = [idx.hits(s, p) for s, p in zip(*idx.search_vectors(VECTORS[4:5], k=2))]
    assert (hit.id, hit.row, hit.text, hit.rank) == ("d4", 4, "text 4", 1)


def test_a_sparse_folder_loads_and_searches(tmp_path):
    from scipy.sparse import csr_matrix, save_npz

    folder = write_folder(tmp_path / "sparse", "sparse", 8, {"nnz": 48}, metric="dot", sparse=True)
    save_npz(folder / "sparse.npz", csr_matrix(VECTORS), compressed=False)
    positions = Index.load(folder).search_vectors(csr_matrix(VECTORS[[2, 5]]), k=1)[1]
    assert positions[:, 0].tolist() == [2, 5]


def test_an_hnsw_folder_loads_and_searches(tmp_path):
    faiss = pytest.importorskip("faiss", reason="hnsw folders need FAISS (the scale extra)")
    params = {"m": 8, "ef_construction": 40, "ef_search": 16}
    folder = write_folder(tmp_path / "hnsw", "hnsw", 8, params)
    index = faiss.IndexHNSWFlat(8, 8, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(unit(VECTORS)))
    faiss.write_index(index, str(folder / "hnsw.faiss"))
    idx = Index.load(folder, ef_search=4)
    assert idx.kind == "hnsw" and idx.search_vectors(VECTORS[[0, 5]], k=1)[1][:, 0].tolist() == [0, 5]


def test_a_binary_folder_loads_and_searches(tmp_path):
    faiss = pytest.importorskip("faiss", reason="compact folders need FAISS (the scale extra)")
    signs = np.where(VECTORS > 0.5, 1.0, -1.0).astype(np.float32)  # (6, 8): one positive sign per row
    compact = {"dtype": "ubinary", "dimensions": 8, "hidden": 8, "store_dims": 8, "rescore": 0,
               "bytes_per_vector": 1, "calibration": None}
    folder = write_folder(tmp_path / "binary", "binary", 8, {"compact": compact})
    index = faiss.IndexBinaryFlat(8)
    index.add(np.packbits(signs > 0, axis=-1))
    faiss.write_index_binary(index, str(folder / "compact.faiss"))
    scores, positions = Index.load(folder).search_vectors(signs[[1, 4]], k=1)
    assert positions[:, 0].tolist() == [1, 4] and np.allclose(scores[:, 0], 1)


def test_a_folder_of_an_unknown_kind_is_refused_in_one_line(tmp_path):
    from bertkit.errors import VectorIndexError

    folder = write_folder(tmp_path / "odd", "ivf-pq", 8, {})
    with pytest.raises(VectorIndexError, match="ivf-pq"):
        Index.load(folder)
