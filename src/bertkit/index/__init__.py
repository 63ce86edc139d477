"""Vector indexes over an embedded corpus: exact dense, compact (int8 / binary with rescoring) and sparse."""

from bertkit.index.folder import Hit, Index, build_index  # noqa: F401
