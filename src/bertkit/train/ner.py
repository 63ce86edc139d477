"""Token classification (NER) on CoNLL-style BIO data.

Words are joined with single spaces into one text; each wordpiece belongs to the word whose character span
holds its start. The first wordpiece of a word carries the word's tag, the others (and [CLS]/[SEP]) get -100,
which the loss ignores. A sentence longer than the token limit is cut: the words that lost all their
wordpieces are predicted "O" and counted (so evaluation still covers every gold entity).

    from bertkit.train.ner import train_ner
    train_ner("../shared/data/conll2003/train.txt", "../shared/data/conll2003/valid.txt", "out/ner")

Prediction with the saved folder is `bertkit.heads.predict.Tagger`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bertkit.batching import truncation_note
from bertkit.data import TaggedSentence, read_conll
from bertkit.errors import InputError
from bertkit.heads.predict import batched_logits, encode_sentences, word_predictions
from bertkit.heads.task import BertTokenClassifier
from bertkit.train.common import (
    freeze_word_embeddings,
    load_base,
    require_examples,
    save_folder,
    task_model,
)
from bertkit.train.loop import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

IGNORE = -100


def align_labels(words: list[int | None], tag_ids: list[int]) -> list[int]:
    """First wordpiece of each word gets the word's tag id; continuation pieces and specials get -100."""
    labels, seen = [], set()
    for w in words:
        if w is None or w in seen:
            labels.append(IGNORE)
        else:
            seen.add(w)
            labels.append(tag_ids[w])
    return labels


@dataclass
class NerResult:
    output: Path
    labels: list[str]
    train_sentences: int
    dev_sentences: int
    truncated: dict[str, int]  # sentences cut to max_length, per split
    dev_metrics: dict[str, float]  # entity precision / recall / F1 of the kept model
    train: TrainResult = field(repr=False)


def tag_ids(sentences: list[TaggedSentence], label2id: dict[str, int], path: str | Path) -> list[list[int]]:
    for s in sentences:
        for i, t in enumerate(s.tags):
            if t not in label2id:
                raise InputError(
                    f"{path}: tag {t!r} (sentence at line {s.line}, token {s.tokens[i]!r}) was not seen in training; "
                    f"the model knows {', '.join(label2id)}. Fix the file or train on data that has it"
                )
    return [[label2id[t] for t in s.tags] for s in sentences]


def train_ner(
    train_path: str | Path,
    dev_path: str | Path,
    output: str | Path,
    model: str | Path | None = None,
    max_length: int = 128,
    freeze_embeddings: bool = False,
    skip_bad: bool = False,
    config: TrainConfig | None = None,
) -> NerResult:
    """Fine-tune a token classifier and keep the best model by dev entity F1."""
    from bertkit.data.metrics import entity_prf

    config = config or TrainConfig(epochs=3, lr=5e-5)
    config.output_dir = Path(output)
    config.best_metric = "f1"
    train_s = require_examples(read_conll(train_path, skip_bad=skip_bad), train_path, "tagged sentences")
    dev_s = require_examples(read_conll(dev_path, skip_bad=skip_bad), dev_path, "tagged sentences")
    # O first, then entity tags grouped by type: a stable, readable id2label
    labels = sorted({t for s in train_s for t in s.tags}, key=lambda t: (t != "O", t[2:], t))
    label2id = {t: i for i, t in enumerate(labels)}
    ids_train, _ = tag_ids(train_s, label2id, train_path), tag_ids(dev_s, label2id, dev_path)

    base, tok, full_tok = load_base(model, max_length)
    tagger = task_model(base, BertTokenClassifier, labels)
    freeze_word_embeddings(tagger, freeze_embeddings)
    enc_train, words_train = encode_sentences(tok, train_s)
    enc_dev, words_dev = encode_sentences(tok, dev_s)
    cut = {"train": truncation_note(enc_train, tok.max_length, "training sentences"),
           "dev": truncation_note(enc_dev, tok.max_length, "dev sentences")}
    data = [(e, align_labels(w, t)) for e, w, t in zip(enc_train, words_train, ids_train)]

    def collate(items):
        batch = tok.pad([e for e, _ in items])
        labels_t = torch.full(batch.input_ids.shape, IGNORE, dtype=torch.long)
        for row, (_, lab) in enumerate(items):
            labels_t[row, : len(lab)] = torch.tensor(lab)
        return batch.input_ids, batch.attention_mask, batch.token_type_ids, labels_t

    def evaluate(m) -> dict[str, float]:
        logits = batched_logits(m, tok, enc_dev)
        pred = [word_predictions(lg, w, len(s.tokens), labels)[0] for lg, w, s in zip(logits, words_dev, dev_s)]
        return entity_prf([s.tags for s in dev_s], pred)

    head_config = dict(architectures=["BertForTokenClassification"], id2label=dict(enumerate(labels)),
                       label2id=label2id)
    result = train(tagger, data, collate, lambda m, b: m(*b[:3], labels=b[3]).loss, config, eval_fn=evaluate,
                   save_fn=lambda m, folder: save_folder(m, full_tok, folder, **head_config),
                   lengths=[len(e.ids) for e in enc_train])
    return NerResult(Path(output), labels, len(train_s), len(dev_s), cut, result.best or {}, result)


