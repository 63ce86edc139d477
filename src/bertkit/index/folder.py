"""Vector indexes over embed-corpus output, on disk: build one, load one, search it.

    from bertkit.index.folder import build_index, Index
    build_index("vecs/", "idx/", kind="hnsw")
    hits = Index.load("idx/").search_text(encoder, "oil prices rise", k=10)

The kinds, one class each: `exact` / `hnsw` (bertkit.index.dense), `binary` / `binary-hnsw` / `int8` and any
kind over truncated vectors (bertkit.index.compact), `sparse` (bertkit.index.sparse); the folder layout and
what they share are in bertkit.index.base. `build_index` checks the request and hands it to the kind's class;
`Index.load` opens any folder with the class that stores it.
"""

from __future__ import annotations

from pathlib import Path

from bertkit.errors import VectorIndexError
from bertkit.index.base import INDEX_FORMAT, METRICS, BuildOptions, Hit, Index, recall_at_k  # noqa: F401
from bertkit.index.compact import CompactIndex
from bertkit.index.dense import ExactIndex, HnswIndex
from bertkit.index.sparse import SparseIndex

KINDS = ("exact", "hnsw", "sparse", "binary", "binary-hnsw", "int8")
FLOAT_CLASSES: dict[str, type[Index]] = {"exact": ExactIndex, "hnsw": HnswIndex}


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
    from bertkit.corpus import read_manifest

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
    if kind == "sparse" and (rescore or dimensions is not None or calibration is not None):
        raise VectorIndexError("--rescore, --dimensions and --calibration are for dense indexes, not --kind sparse")
    manifest = read_manifest(embeddings_dir)
    options = BuildOptions(m, ef_construction, ef_search, dimensions, rescore, calibration)
    kind_class = index_class(kind, manifest["embedding"], options)
    kind_class.build(embeddings_dir, out, manifest, kind, metric, options)
    return out


def index_class(kind: str, embedding: dict, options: BuildOptions) -> type[Index]:
    """The class that stores this kind over this corpus: float kinds over a compact corpus, or asked to cut
    dimensions or rescore, are stored compact."""
    if kind == "sparse":
        return SparseIndex
    compact_corpus = embedding.get("dtype", "float32") != "float32" or embedding.get("dimensions") is not None
    if kind not in FLOAT_CLASSES or compact_corpus or options.dimensions is not None or options.rescore:
        return CompactIndex
    return FLOAT_CLASSES[kind]
