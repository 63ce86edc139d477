"""Cross-encoders: the [CLS] / pooler of a (query, passage) pair encoded together, through a one-output head,
scores how well the passage answers the query. Slower than comparing two vectors (every pair is one forward
pass), so it reranks a short list that a vector index recalled.

    from bertkit.heads.rerank import CrossEncoder
    ce = CrossEncoder.load("out/ce")                  # a folder from `bertkit train cross-encoder`, or any
    ce.predict([("a query", "a passage")])            # sentence-transformers / transformers cross-encoder
    ce.rank("a query", ["passage 1", "passage 2"])    # [{"index": 1, "score": 0.93}, {"index": 0, ...}]

A cross-encoder folder is a transformers BertForSequenceClassification with one label. Scores are the logit
through the activation sentence-transformers would apply (its config.json `sentence_transformers.
activation_fn`; Sigmoid when absent), so they equal `sentence_transformers.CrossEncoder(DIR).predict`;
`raw=True` gives the logit itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertkit.errors import CheckpointError, InputError, NotACrossEncoderError, OptionError

if TYPE_CHECKING:
    from bertkit.heads.task import BertSequenceClassifier
    from bertkit.tokenizer import BertTokenizer

log = logging.getLogger(__name__)

ARCHITECTURE = "BertForSequenceClassification"
ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": None, "Tanh": "tanh"}  # torch functions, looked up when used
ST_SIGMOID = "torch.nn.modules.activation.Sigmoid"  # how sentence-transformers names its default activation


def activation_name(extra: dict) -> str:
    """The activation sentence-transformers applies to this folder's logit: its saved one, else Sigmoid."""
    path = (extra.get("sentence_transformers") or {}).get("activation_fn") or ST_SIGMOID
    name = str(path).rsplit(".", 1)[-1]
    if name not in ACTIVATIONS:
        raise CheckpointError(f"config.json names activation {path!r}; bertkit applies only "
                              f"{', '.join(ACTIVATIONS)}")
    return name


class CrossEncoder:
    """A saved one-output pair model, for scoring and ranking (query, passage) pairs."""

    def __init__(self, model: BertSequenceClassifier, tokenizer: BertTokenizer, activation: str = "Sigmoid",
                 name: str = ""):
        self.model, self.tokenizer, self.activation, self.name = model, tokenizer, activation, name
        self.truncated: list[int] = []  # positions cut to max_length in the last call

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> CrossEncoder:
        """A cross-encoder from a folder of `bertkit train cross-encoder` or sentence-transformers. Raises
        NotACrossEncoderError for a folder that is not a one-output pair model."""
        from bertkit.heads.task import BertSequenceClassifier, load_task_head
        from bertkit.model import architecture
        from bertkit.runtime.folder import load_body, open_folder

        arch = architecture(folder)
        hint = "give a folder made by `bertkit train cross-encoder` (or a sentence-transformers CrossEncoder)"
        if arch != ARCHITECTURE:
            raise NotACrossEncoderError(f"{folder} is not a cross-encoder (architectures={arch or 'none'}); {hint}")
        opened = open_folder(folder)
        base, tok = load_body(opened), opened.tokenizer
        extra = base.config.extra
        labels = extra.get("id2label") or {0: "LABEL_0"}
        weight = (base.leftover_state or {}).get("classifier.weight")
        if len(labels) != 1 or weight is None or weight.shape[0] != 1:
            n = weight.shape[0] if weight is not None else 0
            raise NotACrossEncoderError(f"{folder} is a classifier with {len(labels)} label(s) and {n} output(s), "
                                        f"not a one-output pair model; {hint}")
        model = load_task_head(base, BertSequenceClassifier, 1, pooling=extra.get("bertkit_pooling", "pooler"))
        import torch

        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model, tok, activation_name(extra), str(folder))

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    def logits(self, queries: Sequence[str], docs: Sequence[str], batch_size: int = 32,
               truncate: bool = True) -> np.ndarray:
        """One raw logit per (queries[i], docs[i]) pair, float32. An over-long pair is cut (the longer text
        first) and its position kept in `self.truncated`; with truncate=False it is refused instead."""
        from bertkit.batching import truncated_positions, truncation_note
        from bertkit.heads.predict import batched_logits
        from bertkit.tokenizer import as_text_list

        queries, docs = as_text_list(list(queries), "query"), as_text_list(list(docs), "document")
        if len(queries) != len(docs):
            raise InputError(f"got {len(queries)} queries but {len(docs)} documents; pairs must match")
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        encodings = self.tokenizer.encode(queries, docs)
        cut = truncated_positions(encodings)
        if cut and not truncate:
            raise InputError(f"query + document {cut[0]} is longer than the model's limit of {self.max_length} "
                             "tokens; shorten it or allow truncation")
        truncation_note(encodings, self.max_length, "query-document pairs")
        self.truncated = cut
        if not encodings:
            return np.zeros(0, np.float32)
        import torch

        out = batched_logits(self.model, self.tokenizer, encodings, batch_size)
        return torch.stack(out)[:, 0].numpy().astype(np.float32)

    def activate(self, logits: np.ndarray) -> np.ndarray:
        import torch

        fn = ACTIVATIONS[self.activation]
        return logits if fn is None else getattr(torch, fn)(torch.from_numpy(logits)).numpy()

    def predict(self, pairs: Sequence[tuple[str, str]], raw: bool = False, batch_size: int = 32,
                truncate: bool = True) -> np.ndarray:
        """Scores of (query, passage) pairs: the activation of the logit (raw=True: the logit)."""
        if not pairs:
            return np.zeros(0, np.float32)
        if any(not isinstance(p, (tuple, list)) or len(p) != 2 for p in pairs):
            raise InputError("each pair must be a (query, passage) tuple of two texts")
        logits = self.logits([p[0] for p in pairs], [p[1] for p in pairs], batch_size, truncate)
        return logits if raw else self.activate(logits)

    def rank(self, query: str, docs: Sequence[str], top_k: int | None = None, raw: bool = False,
             return_text: bool = False, truncate: bool = True, batch_size: int = 32) -> list[dict]:
        """The documents best first: [{"index", "score"(, "text")}]; top_k keeps the first k. Ties keep input
        order. No documents is an error (there is nothing to rank)."""
        docs = list(docs)
        if not docs:
            raise InputError("no documents to rank; give at least one")
        if top_k is not None and top_k < 1:
            raise OptionError(f"top_k must be >= 1, got {top_k}")
        logits = self.logits([query] * len(docs), docs, batch_size, truncate)
        scores = logits if raw else self.activate(logits)
        order = np.argsort(-logits, kind="stable")[:top_k]
        return [{"index": int(i), "score": float(scores[i]), **({"text": docs[i]} if return_text else {})}
                for i in order]


def reranker_of(classifier) -> CrossEncoder | None:
    """The served folder as a cross-encoder, when it is one: a bertkit.heads.predict.Classifier with one output
    (the server loads it for /classify already; /rerank shares its weights). None otherwise."""
    if classifier is None or len(classifier.labels) != 1:
        return None
    return CrossEncoder(classifier.model, classifier.tokenizer, activation_name(classifier.model.config.extra))
