"""bertkit: every representation a BERT model has to offer, and which one to use."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["POOLING_MODES", "BertConfig", "BertOutput", "BertkitError", "Encoder"]


def __getattr__(name: str):
    # Lazy re-exports: `import bertkit` (and the CLI's start-up) must not pay for importing torch.
    if name == "Encoder":
        from bertkit.encoder import Encoder

        return Encoder
    if name in ("BertConfig", "BertOutput"):
        from bertkit import model

        return getattr(model, name)
    if name == "POOLING_MODES":
        from bertkit.pooling import POOLING_MODES

        return POOLING_MODES
    if name == "BertkitError":
        from bertkit.errors import BertkitError

        return BertkitError
    raise AttributeError(f"module 'bertkit' has no attribute {name!r}")
