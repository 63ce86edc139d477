"""What every index kind shares: the folder (index.json, items.parquet, the kind's data), hits, texts and
queries.

An index folder holds `index.json` (format, kind, metric, sizes, build parameters, and how the vectors were
made, so a query is encoded the same way), `items.parquet` (row, id, chunk offsets and text when the corpus
kept them, in index order) and the kind's own files. One subclass of `Index` per way of storing and searching
(bertkit.index.dense, .compact, .sparse); each says which folders it reads (`stored_as`) and gives three
things: `build` (write its data), `open` (read it back) and `search` (score a batch of queries).
`Index.load` reads index.json and hands the folder to the class that stores it that way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertkit.errors import BertkitError, OptionError, VectorIndexError
from bertkit.outputs import atomic_folder, writing

log = logging.getLogger(__name__)

INDEX_FORMAT = "bertkit-index/1"
METRICS = ("cosine", "dot")


@dataclass
class Hit:
    """One search result: its 1-based rank, score (cosine, dot or binary similarity), the corpus id and input
    row, the chunk and its character span when the corpus was chunked, and the text when it is known."""

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


@dataclass(frozen=True)
class BuildOptions:
    """What `bertkit index build` may set besides kind and metric; each kind reads the ones it uses."""

    m: int = 32  # HNSW graph degree
    ef_construction: int = 200
    ef_search: int = 128
    dimensions: int | None = None  # keep the first N dimensions, re-normalised (compact)
    rescore: int = 0  # rescore the top K candidates with the corpus's float vectors (compact)
    calibration: str | Path | None = None  # int8: the ranges (default: calibrated on the corpus)

    def hnsw_params(self) -> dict[str, int]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}


def faiss_module(what: str):
    try:
        import faiss
    except ImportError:
        raise VectorIndexError(f"{what} needs FAISS: pip install 'bertkit[scale]' (faiss-cpu)") from None
    return faiss


def write_index(out: Path, embeddings_dir: str | Path, manifest: dict[str, Any], items: pa.Table, kind: str,
                metric: str, shape: tuple[int, int], params: dict[str, Any],
                write_data: Callable[[Path], None]) -> None:
    """The index folder: `write_data(folder)` writes the kind's data, then items and index.json; all of it in
    a temporary folder renamed into place, so a killed build never leaves a half index."""
    with atomic_folder(out) as tmp, writing(out):  # a full disk, /proc, a read-only folder: one line, exit 2
        write_data(tmp)
        pq.write_table(items.drop_columns([c for c in ("text_hash",) if c in items.column_names]),
                       tmp / "items.parquet")
        info = {
            "format": INDEX_FORMAT, "kind": kind, "metric": metric, "count": int(shape[0]),
            "dim": int(shape[1]), "params": params, "embedding": manifest["embedding"],
            "source": str(Path(embeddings_dir).resolve()),
        }
        (tmp / "index.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    log.info("built a %s index of %d vectors in %s", kind, shape[0], out)


def stored_as(info: dict[str, Any]) -> str:
    """How a folder's data is stored: "compact" for every index whose params have a compact entry (binary,
    int8, truncated), else its kind."""
    return "compact" if "compact" in info["params"] else info["kind"]


class Index:
    """A loaded index folder. Subclasses set `stored_as` and implement `build`, `open` and `search`."""

    stored_as: ClassVar[str] = ""
    _classes: ClassVar[dict[str, type[Index]]] = {}  # stored_as -> class, filled as the kinds are defined

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.stored_as:
            Index._classes[cls.stored_as] = cls

    def __init__(self, path: Path, info: dict[str, Any], items: pa.Table, backend: Any):
        self.path, self.info, self.items, self._backend = path, info, items, backend
        self._columns = {name: items.column(name).to_pylist() for name in items.column_names}

    # -- the contract each kind fills in ----------------------------------------------------------------

    @classmethod
    def build(cls, embeddings_dir: str | Path, out: Path, manifest: dict[str, Any], kind: str, metric: str,
              options: BuildOptions) -> None:
        """Read the finished corpus folder and write the index folder through `write_index`."""
        raise NotImplementedError

    @classmethod
    def open(cls, path: Path, info: dict[str, Any], ef_search: int | None) -> Any:
        """The kind's search structure, read from the folder."""
        raise NotImplementedError

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (q, k'), best first, for k >= 1."""
        raise NotImplementedError

    # -- shared by every kind ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, ef_search: int | None = None) -> Index:
        """Open an index folder of any kind (index.json names it). Raises VectorIndexError when `path` is
        not a bertkit index or was written by another format version."""
        path = Path(path).expanduser()
        info_path = path / "index.json"
        if not info_path.is_file():
            raise VectorIndexError(f"{path} is not a bertkit index (no index.json); build one with "
                                   "`bertkit index build`")
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("format") != INDEX_FORMAT:
            raise VectorIndexError(f"{path} has index format {info.get('format')!r}; rebuild it with this "
                                   "bertkit")
        kind_class = Index._classes.get(stored_as(info))
        if kind_class is None:
            raise VectorIndexError(f"{path} is a {info.get('kind')!r} index, which this bertkit cannot read; "
                                   "rebuild it with this bertkit")
        items = pq.read_table(path / "items.parquet")
        return kind_class(path, info, items, kind_class.open(path, info, ef_search))

    @property
    def kind(self) -> str:
        return self.info["kind"]

    def __len__(self) -> int:
        return self.info["count"]

    def search_vectors(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (q, k'), best first; k' = min(k, size of the index)."""
        if k < 1:
            raise OptionError(f"k must be >= 1, got {k}")
        return self.search(queries, k)

    def hits(self, scores: np.ndarray, positions: np.ndarray) -> list[Hit]:
        """One query's results as Hits (faiss marks missing results with position -1)."""
        c = self._columns
        out = []
        for rank, (s, p) in enumerate(((s, int(p)) for s, p in zip(scores, positions) if p >= 0), start=1):
            extra = {name: c[name][p] for name in ("chunk", "start", "end", "text") if name in c}
            out.append(Hit(rank, float(s), c["id"][p], c["row"][p], **extra))
        return out

    def fill_texts(self, hits: list[Hit]) -> list[Hit]:
        """Give hits without a stored text (no --keep-text) their text, read back from the corpus's input
        file: one shard of rows per distinct shard hit. Hits keep text None when the input is gone or
        changed."""
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

    def encode_queries(self, encoder, queries: list[str]) -> Any:
        """The queries as the corpus was encoded (dense kinds: pooled vectors; the sparse kind overrides)."""
        e = self.info["embedding"]
        return encoder.encode(queries, pooling=e["pooling"], normalize=e["normalize"])

    def search_text(self, encoder, queries: str | list[str], k: int = 10) -> list[list[Hit]]:
        """Encode the queries as the corpus was encoded, then search; one list of Hits per query."""
        queries = [queries] if isinstance(queries, str) else list(queries)
        scores, positions = self.search_vectors(self.encode_queries(encoder, queries), k)
        return [self.hits(s, p) for s, p in zip(scores, positions)]


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the exact top-k positions that the approximate top-k also returns."""
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / len(e[:k]) for a, e in zip(approx, exact)]))
