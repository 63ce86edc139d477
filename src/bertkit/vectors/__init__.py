"""What is done to vectors after pooling: whitening, compact (fewer dimensions, int8 / binary) and SPLADE."""
