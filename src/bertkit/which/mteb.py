"""MTEB's encoder protocol over any bertkit model and representation, so `mteb` can score "[CLS] vs mean vs
pooler" (any pooling, layers, precision and backend) of one model on its tasks:

    import mteb
    from bertkit.which.mteb import MtebEncoder

    cls = MtebEncoder.load("all-MiniLM-L6-v2", pooling="cls")
    mean = MtebEncoder.load("all-MiniLM-L6-v2", pooling="mean", precision="int8")
    for model in (cls, mean):
        mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark"]), cache=None)

One MtebEncoder is one representation: its vectors are exactly `Encoder.encode(texts, pooling=..., layers=...,
normalize=True)`, its similarity is cosine (what `bertkit evaluate` scores), and its name in MTEB's results
says which representation it is (`bertkit/<model>-<pooling>[@layers]-<precision>-<backend>`). MTEB is an
extra (`pip install 'bertkit[mteb]'`); this module imports it only when MTEB asks for the model's metadata.
MTEB's own prompts and instructions are not applied: a bertkit representation has none (mask_prompt's
template is the one prompt, and it is the representation's, not the task's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.encoder import Encoder
from bertkit.errors import OptionError
from bertkit.pooling import normalize_rows
from bertkit.vectors.post import VectorSpec


def model_meta_class():
    """mteb's ModelMeta (imported here only: MTEB is an extra)."""
    try:
        from mteb.models import ModelMeta
    except ImportError as e:
        raise OptionError("the MTEB adapter needs mteb: pip install 'bertkit[mteb]'") from e
    return ModelMeta


class MtebEncoder:
    """One representation of one bertkit model, as MTEB's EncoderProtocol (encode, similarity,
    similarity_pairwise, mteb_model_meta)."""

    def __init__(self, encoder: Encoder, pooling: str = "mean", layers: Sequence[int] | None = None, *,
                 template: str | None = None, batch_size: int = 32, name: str | None = None):
        # Refused here, before MTEB loads any data: an unknown pooling, bad layers, a pooler the model lacks.
        self.spec = VectorSpec(pooling, layers, template, normalize=True).check(
            encoder.hidden_size, encoder.tokenizer.mask_token)
        if pooling == "pooler":
            encoder.require("pooler", "pooling='pooler'")
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        self.encoder, self.batch_size = encoder, batch_size
        label = pooling + (f"@{','.join(map(str, layers))}" if layers else "")
        self.name = name or f"bertkit/{Path(encoder.name).name}-{label}-{encoder.precision}-{encoder.backend}"

    @classmethod
    def load(cls, model: str | Path | None = None, pooling: str = "mean", layers: Sequence[int] | None = None, *,
             precision: str = "fp32", backend: str = "torch", device: str | None = None, **kwargs: Any) -> MtebEncoder:
        """Encoder.load(model, device, precision=..., backend=...) as one representation (kwargs: __init__'s)."""
        return cls(Encoder.load(model, device, precision=precision, backend=backend), pooling, layers, **kwargs)

    @property
    def mteb_model_meta(self):
        """What MTEB records of the model in its results (the name says which representation). An error here
        must not be an AttributeError: MTEB asks with hasattr(), which would hide it."""
        return model_meta_class().create_empty({
            "name": self.name, "revision": self.encoder.requested_precision, "embed_dim": self.encoder.hidden_size,
            "max_tokens": self.encoder.max_length, "framework": ["PyTorch"], "similarity_fn_name": "cosine",
            "open_weights": True,
        })

    def encode(self, inputs: Iterable[dict[str, Any]], *, task_metadata: Any = None, hf_split: str | None = None,
               hf_subset: str | None = None, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """(n, hidden) unit vectors of the texts of MTEB's batches (each a dict with a "text" list), in order."""
        texts = [t for batch in inputs for t in batch["text"]]
        s = self.spec
        return self.encoder.encode(texts, pooling=s.pooling, layers=s.layer_list, normalize=True, template=s.prompt,
                                   batch_size=self.batch_size)

    def similarity(self, embeddings1, embeddings2) -> np.ndarray:
        """(n1, n2) cosine similarities."""
        return normalize_rows(np.atleast_2d(embeddings1)) @ normalize_rows(np.atleast_2d(embeddings2)).T

    def similarity_pairwise(self, embeddings1, embeddings2) -> np.ndarray:
        """(n,) cosine similarity of each row with the same row of the other."""
        return (normalize_rows(np.atleast_2d(embeddings1)) * normalize_rows(np.atleast_2d(embeddings2))).sum(1)
