"""The sparse (SPLADE) index kind: embed-corpus `--sparse` output searched with CSR matrix products.

    bertkit embed-corpus docs.txt emb --sparse --model splade-tiny
    bertkit index build emb --output idx --kind sparse        # metric dot (SPLADE's), or --metric cosine
    bertkit search idx "a query"              # the query gets a SPLADE vector from the same model

An index folder of this kind holds `index.json` (kind "sparse", dim = the vocabulary size), `items.parquet`
as for the dense kinds, and `sparse.npz`, the (n, vocab) CSR matrix of the corpus (rows L2-normalised for
cosine). A query batch is a (q, vocab) CSR matrix; its scores are one sparse product, `corpus @ query.T`,
which touches only the corpus rows sharing a term with the query (scipy's CSR kernel, no inverted lists of
our own). `SparseIndex` is the kind's `Index`: search, hits, texts and the server's /search are the same
code for every kind.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertkit.errors import CorpusError, VectorIndexError
from bertkit.index.base import BuildOptions, Index, write_index

log = logging.getLogger(__name__)

MATRIX = "sparse.npz"


def read_sparse_embeddings(embeddings_dir: str | Path):
    """All shards of a finished `embed-corpus --sparse` job: (the other columns, the (n, vocab) CSR
    matrix)."""
    from scipy.sparse import csr_matrix

    from bertkit.corpus import Shard, read_manifest

    out = Path(embeddings_dir)
    manifest = read_manifest(out)
    if not manifest.get("complete"):
        raise CorpusError(f"{out} is an unfinished embed-corpus job; run the same embed-corpus command again")
    if not manifest["embedding"].get("sparse"):
        raise VectorIndexError(f"{out} holds dense vectors; build --kind exact or hnsw, or embed the corpus "
                               "with --sparse")
    tables = [pq.read_table(out / Shard(**s).file) for s in manifest["shards"]]
    table = pa.concat_tables(tables)
    indices = table.column("indices").combine_chunks()
    values = table.column("values").combine_chunks()
    indptr = indices.offsets.to_numpy().astype(np.int64) - indices.offsets[0].as_py()
    matrix = csr_matrix(
        (values.flatten().to_numpy(zero_copy_only=False).astype(np.float32),
         indices.flatten().to_numpy(zero_copy_only=False).astype(np.int32), indptr),
        shape=(len(table), int(tables[0].schema.metadata[b"bertkit.vocab_size"])),
    )
    return table.drop_columns(["indices", "values"]), matrix


def normalize_rows(matrix):
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    from scipy.sparse import diags

    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1)).ravel())
    return (diags(1.0 / np.maximum(norms, 1e-12)) @ matrix).tocsr().astype(np.float32)


def sparse_index_data(embeddings_dir: str | Path, metric: str):
    """(items, CSR matrix) of a finished `embed-corpus --sparse` folder, rows unit-normed for cosine."""
    items, matrix = read_sparse_embeddings(embeddings_dir)
    if not matrix.shape[0]:
        raise VectorIndexError(f"{embeddings_dir} holds no vectors; nothing to index")
    if metric == "cosine":
        matrix = normalize_rows(matrix)
    return items, matrix.tocsr()


class SparseIndex(Index):
    """Kind "sparse": the corpus as one (n, vocab) CSR matrix in sparse.npz; queries are SPLADE vectors."""

    stored_as = "sparse"

    @classmethod
    def build(cls, embeddings_dir: str | Path, out: Path, manifest: dict[str, Any], kind: str, metric: str,
              options: BuildOptions) -> None:
        from scipy.sparse import save_npz

        items, matrix = sparse_index_data(embeddings_dir, metric)
        def write_data(folder: Path) -> None:
            save_npz(folder / MATRIX, matrix, compressed=False)

        write_index(out, embeddings_dir, manifest, items, kind, metric, matrix.shape,
                    {"nnz": int(matrix.nnz)}, write_data)

    @classmethod
    def open(cls, path: Path, info: dict[str, Any], ef_search: int | None) -> Any:
        from scipy.sparse import load_npz

        return load_npz(path / MATRIX).tocsr()

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (q, k), best first (ties by position): one CSR product for the batch."""
        from scipy.sparse import csr_matrix, issparse

        dim = self.info["dim"]
        if issparse(queries):
            queries = queries.tocsr()
        else:
            queries = csr_matrix(np.atleast_2d(np.asarray(queries, np.float32)))  # (q, vocab)
        if queries.shape[1] != dim:
            raise VectorIndexError(f"query vectors have dimension {queries.shape[1]}, the sparse index "
                                   f"{dim} (its vocabulary); search it with SPLADE vectors of the model the "
                                   "corpus was embedded with")
        if self.info["metric"] == "cosine":
            queries = normalize_rows(queries)
        scores = np.asarray((queries @ self._backend.T).todense(), dtype=np.float32)  # (q, n)
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(scores, top, 1)
        order = np.lexsort((top, -top_s), axis=1)
        return np.take_along_axis(top_s, order, 1), np.take_along_axis(top, order, 1)

    def encode_queries(self, encoder, queries: list[str]):
        """The queries' SPLADE vectors, from a model with the masked-LM head and the index's vocabulary."""
        from bertkit.vectors.sparse import encode_sparse

        e = self.info["embedding"]
        built = e.get("model") or "(the packaged default)"
        if not encoder.model.has_mlm:
            raise VectorIndexError(f"{self.path} is a sparse index: queries need SPLADE vectors from a model "
                                   f"with the masked-LM head, and {encoder.name} has none; search with the "
                                   f"corpus's model ({built})")
        if encoder.model.config.vocab_size != self.info["dim"]:
            raise VectorIndexError(f"{self.path} has a vocabulary of {self.info['dim']}, the query model "
                                   f"{encoder.model.config.vocab_size}; search with the corpus's model "
                                   f"({built})")
        return encode_sparse(encoder, queries, top_k=e.get("sparse_top_k")).matrix
