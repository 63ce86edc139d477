"""A linear NER probe per hidden state: how much of the entity tagging each layer's token vectors already hold.

Sentences are tokenized as `bertkit train ner` does (words joined by spaces; the first wordpiece of each word
stands for the word: `bertkit.heads.predict.encode_sentences`). One forward pass per sentence, with every hidden
state, streams batch by batch; only the first-wordpiece rows are kept, in float16, so memory is
words x states x hidden x 2 bytes (stated in the notes) plus one batch. Per hidden state, the probe of
`bertkit.which.probe` is fit on the training words' vectors and tags; the test sentences' predicted tags are scored
with `bertkit.data.metrics.entity_prf`, the entity-level counting of the CoNLL script that `bertkit train ner` uses.
Words cut off by truncation have no vector: they are predicted "O" (so every gold entity still counts), as in
`train ner`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from bertkit.which.probe import ProbeSettings, check_labels, fit_probe, fits, one_blas_thread
from bertkit.which.represent import n_states, token_states
from bertkit.which.results import Score, TaskResult


def first_pieces(words: list[int | None]) -> tuple[np.ndarray, np.ndarray]:
    """(token positions, word indices) of the first wordpiece of each word that kept one."""
    pos, idx, seen = [], [], set()
    for t, w in enumerate(words):
        if w is not None and w not in seen:
            seen.add(w)
            pos.append(t)
            idx.append(w)
    return np.array(pos, dtype=np.int64), np.array(idx, dtype=np.int64)


def word_states(encoder, sentences: Sequence, progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every hidden state at the first wordpiece of each word: (words, states, H) float16, and per sentence the
    indices of its words that have a row (in row order)."""
    from bertkit.heads.predict import encode_sentences

    encodings, words = encode_sentences(encoder.tokenizer, list(sentences))
    picked = [first_pieces(w) for w in words]
    states = token_states(encoder, encodings, [p for p, _ in picked], progress=progress)
    return states, [i for _, i in picked]


def tags_of(sentences: Sequence, word_idx: list[np.ndarray]) -> list[str]:
    return [s.tags[int(w)] for s, idx in zip(sentences, word_idx) for w in idx]


def sentence_tags(sentences: Sequence, word_idx: list[np.ndarray], flat: Sequence[str]) -> list[list[str]]:
    """Predicted tags per sentence: the probe's for words with a vector, "O" for words cut by truncation."""
    out, k = [], 0
    for s, idx in zip(sentences, word_idx):
        tags = ["O"] * len(s.tokens)
        for w in idx:
            tags[int(w)] = str(flat[k])
            k += 1
        out.append(tags)
    return out


def ner_task(encoder, train: Sequence, test: Sequence, settings: ProbeSettings, data: str = "",
             notes: Sequence[str] = (), progress: bool = False,
             predictions: dict[int, list[list[str]]] | None = None) -> TaskResult:
    """Entity F1 (x100) of a tag probe on each hidden state's token vectors. `predictions`, when given, receives
    the test sentences' predicted tags per hidden state."""
    from bertkit.data.metrics import entity_prf

    started = time.perf_counter()
    states, word_idx = word_states(encoder, list(train) + list(test), progress)
    n_train_words = sum(len(i) for i in word_idx[: len(train)])
    y_train = tags_of(train, word_idx[: len(train)])
    check_labels(y_train, settings, "the training words")
    test_idx = word_idx[len(train):]
    gold = [list(s.tags) for s in test]
    scores = []
    for layer in fits(range(n_states(encoder)), progress, n_states(encoder)):
        x = states[:, layer].astype(np.float32)
        probe = fit_probe(x[:n_train_words], y_train, settings)
        with one_blas_thread():
            flat = probe.predict(x[n_train_words:]) if len(x) > n_train_words else []
        pred = sentence_tags(test, test_idx, flat)
        if predictions is not None:
            predictions[layer] = pred
        metrics = entity_prf(gold, pred) | {"C": float(np.ravel(probe[-1].C_)[0])}
        scores.append(Score("ner", f"token@{layer}", "token", [layer], "f1", metrics["f1"], metrics, "tokens",
                            encoder.name, data, len(test)))
    mb = states.nbytes / 2**20
    notes = [*notes, settings.describe(), (f"token vectors: first wordpiece of each word, every hidden state, kept in "
             f"float16 ({states.shape[0]} words x {states.shape[1]} states x {states.shape[2]} = {mb:.0f} MB); "
             "entity-level F1 as the CoNLL script counts (bertkit.data.metrics.entity_prf, as `bertkit train ner`)")]
    return TaskResult("ner", data, encoder.name, scores, notes, len(train), len(test),
                      time.perf_counter() - started).rank()
