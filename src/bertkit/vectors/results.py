"""What the Encoder's vector calls return, beside plain arrays: several poolings with their truncation report,
and each text's token vectors with their wordpieces and character offsets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def as_float32(x) -> np.ndarray:
    """float32 numpy rows from a torch tensor (any device, any float dtype) or a numpy array."""
    return x.astype(np.float32, copy=False) if isinstance(x, np.ndarray) else x.float().cpu().numpy()


@dataclass
class Encoded:
    """What one `Encoder.encode_poolings` call returns: its vectors and its own truncation report."""

    vectors: list[np.ndarray]  # one (n, hidden) float32 array per asked pooling, in the order asked
    truncated: list[int]  # positions of this call's texts that were cut to max_length (in any pass)


@dataclass
class TokenVectors:
    """One text's token vectors (`Encoder.encode_tokens`): its wordpieces, their character offsets in the text
    and one (hidden,) float32 vector each, of the last layer or of the asked layers' average."""

    tokens: list[str]  # wordpieces including [CLS] and [SEP]
    offsets: list[tuple[int, int]]  # (start, end) character span in the text; (0, 0) for special tokens
    vectors: np.ndarray  # (T, H) float32, one row per token
