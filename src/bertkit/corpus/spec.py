"""What a corpus job is: its input, its options (everything that decides the vectors), its result."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.errors import CorpusError  # noqa: F401  (defined in bertkit.errors; this path kept)
from bertkit.vectors.post import VectorSpec

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "bertkit-corpus/1"
SUFFIX_FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".text": "text",
}
FORMATS = ("jsonl", "csv", "tsv", "parquet", "text")
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Source:
    """Where the texts come from and how to read them."""

    path: str
    format: str
    text_column: str | None = None  # None for text files; a name, or a 0-based index for headerless CSV/TSV
    id_column: str | None = None
    header: bool = True  # CSV/TSV only


@dataclass(frozen=True)
class Shard:
    index: int
    first_row: int
    rows: int  # input rows, bad ones included
    offset: int  # byte offset of the first row (line formats); 0 for Parquet

    @property
    def file(self) -> str:
        return f"part-{self.index:05d}.parquet"


@dataclass(frozen=True)
class EmbedOptions:
    """Everything that decides the vectors; a resumed run must use the same."""

    model: str | None = None
    pooling: str = "mean"
    normalize: bool = False
    batch_size: int = 32
    chunk_tokens: int | None = None
    chunk_overlap: int = 0
    keep_text: bool = False
    precision: str | None = None  # None: Encoder.load's default (fp32 / torch); kept None in manifests
    backend: str | None = None
    sparse: bool = False  # SPLADE vectors (bertkit.vectors.sparse) in `indices` / `values` columns, not `embedding`
    sparse_top_k: int | None = None  # with sparse: keep each row's k largest weights
    dtype: str = "float32"  # compact vectors (bertkit.vectors.compact): int8 / uint8 codes, binary / ubinary sign bits
    dimensions: int | None = None  # keep the first N dimensions, re-normalised
    calibration: str | None = None  # int8 / uint8: the calibration file, copied to the output as calibration.npz
    calibration_digest: str | None = None  # its ranges' digest, filled in by embed_corpus: part of the job's key

    def vector_spec(self) -> VectorSpec:
        """The steps after pooling these options ask for (bertkit.vectors.post), not yet checked."""
        return VectorSpec(self.pooling, normalize=self.normalize, dimensions=self.dimensions,
                          dtype=self.dtype, calibration=self.calibration)


@dataclass
class CorpusJob:
    """What to embed and where: the input file (or s3:// URI), the output folder, which columns hold the text
    and the id, and how the vectors are made (`options`). `embed_corpus(job)` runs it."""

    input: str | Path
    output_dir: str | Path
    text_column: str | None = None
    id_column: str | None = None
    format: str | None = None  # inferred from the suffix when None
    header: bool = True
    shard_rows: int = 4096
    skip_bad_rows: bool = False
    overwrite: bool = False
    options: EmbedOptions = field(default_factory=EmbedOptions)


@dataclass
class CorpusResult:
    output_dir: Path | str  # an s3:// URI stays a string
    shards: int
    written: int  # shards embedded by this run (the rest were already done)
    rows: int  # output rows (chunks when chunking)
    skipped: int  # bad input rows skipped
