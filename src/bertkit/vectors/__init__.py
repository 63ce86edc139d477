"""What is done to vectors after pooling: whitening, compact (fewer dimensions, int8 / binary) and SPLADE;
`VectorSpec` (post.py) puts the steps after pooling together, in one order, with one check."""

from bertkit.vectors.post import VectorSpec

__all__ = ["VectorSpec"]
