"""Every representation of a text from one forward pass, kept for all the tasks that ask for it.

`Representations` holds one model's vectors for a fixed list of specs (every pooling, and with `layers` cls /
mean / max of every hidden state). A text is encoded the first time a task asks for it, through
`Encoder.encode_poolings` (one pass for all specs but mask_prompt, whose input is the prompt around the text,
and one pass over those prompts); later asks, from the same task or another one (STS and retrieval on one file),
are served from the cache. Pairs encoded together ("[CLS] a [SEP] b [SEP]") are a third kind of input, encoded
once each, for [CLS] and pooler. So every distinct model input goes through the model exactly once.

    from bertkit.which.represent import Representations, sentence_specs
    reps = Representations(enc, sentence_specs(enc, layers=True))
    vecs = reps.vectors(["a text", "another"])          # {Spec: (2, H) array}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from bertkit.pooling import pool
from bertkit.which.evaluate import LAYER_POOLINGS, Spec, default_specs

log = logging.getLogger(__name__)

JOINT = "pair:"  # label prefix of a representation of the pair encoded together


def n_states(encoder) -> int:
    """Hidden states of the model: the embedding output and one per layer."""
    return encoder.model.config.num_hidden_layers + 1


def sentence_specs(encoder, layers: bool = False) -> list[Spec]:
    """Every pooling the model supports; with layers, cls / mean / max of every hidden state too."""
    specs = default_specs(encoder)
    if layers:
        specs += [Spec(p, (i,)) for p in LAYER_POOLINGS for i in range(n_states(encoder))]
    return specs


def joint_specs(encoder, layers: bool = False) -> list[Spec]:
    """What a pair encoded together gives: its [CLS] and pooler output (and [CLS] of every hidden state)."""
    specs = [Spec("cls")] + ([Spec("pooler")] if encoder.model.has_pooler else [])
    if layers:
        specs += [Spec("cls", (i,)) for i in range(n_states(encoder))]
    return specs


def label(spec: Spec, joint: bool = False) -> str:
    return (JOINT if joint else "") + spec.label


class Representations:
    """One model's sentence vectors for `specs`, computed once per distinct text (see the module doc)."""

    def __init__(self, encoder, specs: Sequence[Spec], batch_size: int = 64, progress: bool = False,
                 layers: bool = False):
        self.encoder, self.specs = encoder, list(specs)
        self.batch_size, self.progress, self.layers = batch_size, progress, layers
        self._rows: dict[str, int] = {}
        self._store: dict[Spec, np.ndarray] = {s: np.zeros((0, encoder.hidden_size), np.float32) for s in self.specs}
        self._pair_rows: dict[tuple[str, str], int] = {}
        self.pair_specs = joint_specs(encoder, layers)
        self._pair_store: dict[Spec, np.ndarray] = {
            s: np.zeros((0, encoder.hidden_size), np.float32) for s in self.pair_specs}
        self.encoded_texts = 0  # distinct texts encoded so far (each once)
        self.encoded_pairs = 0

    @property
    def name(self) -> str:
        return self.encoder.name

    def vectors(self, texts: Sequence[str]) -> dict[Spec, np.ndarray]:
        """(len(texts), H) per spec, in the order of `texts`; only texts not seen before are encoded."""
        new = list(dict.fromkeys(t for t in texts if t not in self._rows))
        if new:
            log.info("encoding %d new texts (%d specs) with %s", len(new), len(self.specs), self.name)
            encoded = self.encoder.encode_poolings(new, [(s.pooling, s.layers) for s in self.specs],
                                                   batch_size=self.batch_size, progress=self.progress)
            start = len(self._rows)
            for i, t in enumerate(new):
                self._rows[t] = start + i
            for s, v in zip(self.specs, encoded.vectors):
                self._store[s] = np.concatenate([self._store[s], v])
            self.encoded_texts += len(new)
        rows = np.array([self._rows[t] for t in texts], dtype=np.int64)
        return {s: self._store[s][rows] for s in self.specs}

    def pair_vectors(self, a: Sequence[str], b: Sequence[str]) -> dict[Spec, np.ndarray]:
        """Per joint spec, (n, H) vectors of the pairs (a[i], b[i]) encoded together, each pair once."""
        keys = list(zip(a, b))
        new = list(dict.fromkeys(k for k in keys if k not in self._pair_rows))
        if new:
            log.info("encoding %d new sentence pairs together with %s", len(new), self.name)
            out = encode_joint(self.encoder, [x for x, _ in new], [y for _, y in new], self.pair_specs,
                               self.batch_size, self.progress)
            start = len(self._pair_rows)
            for i, k in enumerate(new):
                self._pair_rows[k] = start + i
            for s, v in zip(self.pair_specs, out):
                self._pair_store[s] = np.concatenate([self._pair_store[s], v])
            self.encoded_pairs += len(new)
        rows = np.array([self._pair_rows[k] for k in keys], dtype=np.int64)
        return {s: self._pair_store[s][rows] for s in self.pair_specs}


def encode_joint(encoder, a: list[str], b: list[str], specs: Sequence[Spec], batch_size: int = 64,
                 progress: bool = False) -> list[np.ndarray]:
    """Vectors of "[CLS] a [SEP] b [SEP]" (token types 0 / 1, as BERT's NSP pretraining saw pairs) for each
    spec (cls / pooler, optionally per layer), from one pass through the encoder's fast path."""
    prepared = encoder.prepare(a, b)  # truncation counted (and logged) there
    with_hidden = any(s.layers for s in specs)
    outs = [np.zeros((len(prepared), encoder.hidden_size), np.float32) for _ in specs]

    def embed(idx: np.ndarray, batch) -> None:
        output = encoder.run_batch(batch, hidden_states=with_hidden)  # the fast path: packed / precision / backend
        for s, out in zip(specs, outs):
            vecs = pool(output, batch.attention_mask, s.pooling, list(s.layers) if s.layers else None)
            out[idx] = vecs if isinstance(vecs, np.ndarray) else vecs.float().cpu().numpy()

    encoder.each_batch(prepared, embed, batch_size=batch_size, progress=progress)
    return outs


def token_states(encoder, encodings: list, select: list[np.ndarray], batch_size: int = 64,
                 progress: bool = False, dtype=np.float16) -> np.ndarray:
    """Hidden states of every layer at chosen tokens: (sum of len(select[i]), states, H) in `dtype`.

    `select[i]` are token positions of encodings[i] (e.g. the first wordpiece of each word). Batches stream
    through the fast path with every hidden state and only the selected rows are kept, so memory is the
    output array (float16 by default) plus one batch, whatever the number of texts."""
    offsets = np.zeros(len(select) + 1, np.int64)
    offsets[1:] = np.cumsum([len(s) for s in select])
    out = np.zeros((int(offsets[-1]), n_states(encoder), encoder.hidden_size), dtype)

    def embed(idx: np.ndarray, batch) -> None:
        hidden = encoder.run_batch(batch, hidden_states=True).hidden_states
        states = torch.stack([torch.as_tensor(h) for h in hidden], 2)  # (B, T, S, H)
        for row, i in enumerate(idx):
            if len(select[i]):
                pick = states[row, torch.as_tensor(select[i], device=states.device)]
                out[offsets[i] : offsets[i + 1]] = pick.float().cpu().numpy().astype(dtype)

    encoder.each_batch(encodings, embed, batch_size=batch_size, progress=progress)
    return out
