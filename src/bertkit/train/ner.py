"""Token classification (NER) on CoNLL-style BIO data.

Words are joined with single spaces into one text; each wordpiece belongs to the word whose character span
holds its start. The first wordpiece of a word carries the word's tag, the others (and [CLS]/[SEP]) get -100,
which the loss ignores. A sentence longer than the token limit is cut: the words that lost all their
wordpieces are predicted "O" and counted (so evaluation still covers every gold entity).

    from bertkit.train.ner import train_ner, Tagger
    train_ner("../shared/data/conll2003/train.txt", "../shared/data/conll2003/valid.txt", "out/ner")
    Tagger.load("out/ner").entities("Angela Merkel visited Paris.")
    # [{"entity": "PER", "text": "Angela Merkel", "start": 0, "end": 13, "score": 0.99}, ...]
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Encoding

from bertkit.data import TaggedSentence, read_conll
from bertkit.errors import InputError
from bertkit.model import BertTokenClassifier, load_task_head
from bertkit.tokenizer import BertTokenizer
from bertkit.train.common import (
    batched_logits,
    freeze_word_embeddings,
    load_base,
    require_examples,
    save_folder,
    task_model,
    truncation_note,
)
from bertkit.train.loop import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

IGNORE = -100


def word_spans(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words joined by spaces, and each word's (start, end) character span in that text."""
    spans, pos = [], 0
    for t in tokens:
        spans.append((pos, pos + len(t)))
        pos += len(t) + 1
    return " ".join(tokens), spans


def wordpiece_words(enc: Encoding, spans: list[tuple[int, int]]) -> list[int | None]:
    """Per wordpiece, the index of the word it belongs to (None for special tokens)."""
    starts = [s for s, _ in spans]
    out: list[int | None] = []
    for (a, b), special in zip(enc.offsets, enc.special_tokens_mask):
        out.append(None if special or a == b else bisect.bisect_right(starts, a) - 1)
    return out


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


def word_predictions(logits: torch.Tensor, words: list[int | None], n_words: int, labels: list[str]) -> tuple[list[str], list[float], int]:
    """Tag and probability per word from its first wordpiece; words cut by truncation get "O" (counted)."""
    probs = logits.softmax(-1)
    tags, scores = ["O"] * n_words, [0.0] * n_words
    seen: set[int] = set()
    for row, w in enumerate(words):
        if w is None or w in seen:
            continue
        seen.add(w)
        p, i = probs[row].max(-1)
        tags[w], scores[w] = labels[int(i)], float(p)
    return tags, scores, n_words - len(seen)


@dataclass
class NerResult:
    output: Path
    labels: list[str]
    train_sentences: int
    dev_sentences: int
    truncated: dict[str, int]  # sentences cut to max_length, per split
    dev_metrics: dict[str, float]  # entity precision / recall / F1 of the kept model
    train: TrainResult = field(repr=False)


def encode_sentences(tok: BertTokenizer, sentences: list[TaggedSentence]) -> tuple[list[Encoding], list[list[int | None]]]:
    texts, all_spans = zip(*(word_spans(s.tokens) for s in sentences))
    encodings = tok.encode(list(texts))
    return encodings, [wordpiece_words(e, sp) for e, sp in zip(encodings, all_spans)]


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
    from bertkit.evaluate import entity_prf

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

    head_config = dict(architectures=["BertForTokenClassification"], id2label=dict(enumerate(labels)), label2id=label2id)
    result = train(tagger, data, collate, lambda m, b: m(*b[:3], labels=b[3]).loss, config, eval_fn=evaluate,
                   save_fn=lambda m, folder: save_folder(m, full_tok, folder, **head_config),
                   lengths=[len(e.ids) for e in enc_train])
    return NerResult(Path(output), labels, len(train_s), len(dev_s), cut, result.best or {}, result)


class Tagger:
    """A saved token classifier: entity spans with character offsets, or tags for pre-split words."""

    def __init__(self, model: BertTokenClassifier, tokenizer: BertTokenizer, labels: list[str]):
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.truncated = 0

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> Tagger:
        base, tok, _ = load_base(folder)
        id2label = {int(k): v for k, v in (base.config.extra.get("id2label") or {}).items()}
        if not id2label or "classifier.weight" not in (base.leftover_state or {}):
            raise InputError(f"{folder} is not a token classifier (no id2label / classifier weights); train one with `bertkit train ner`")
        labels = [id2label[i] for i in range(len(id2label))]
        model = load_task_head(base, BertTokenClassifier, len(labels))
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model, tok, labels)

    def tag_sentences(self, sentences: list[list[str]]) -> list[list[str]]:
        """BIO tag per word of already-split sentences (CoNLL tokens)."""
        encodings, words = encode_sentences(self.tokenizer, [TaggedSentence(s, ["O"] * len(s)) for s in sentences])
        self.truncated = truncation_note(encodings, self.tokenizer.max_length, "sentences")
        logits = batched_logits(self.model, self.tokenizer, encodings)
        return [word_predictions(lg, w, len(s), self.labels)[0] for lg, w, s in zip(logits, words, sentences)]

    def entities(self, texts: str | list[str]) -> list[dict] | list[list[dict]]:
        """Entities per text: type, surface text, start / end character offsets in the original text, score
        (mean probability of the entity's words). Words are the tokenizer's (split at spaces and punctuation)."""
        from bertkit.encoder import as_text_list
        from bertkit.evaluate import bio_spans

        single = isinstance(texts, str)
        texts = as_text_list(texts)
        encodings = self.tokenizer.encode(texts)
        self.truncated = truncation_note(encodings, self.tokenizer.max_length, "texts")
        out = []
        for text, enc, logits in zip(texts, encodings, batched_logits(self.model, self.tokenizer, encodings)):
            word_ids = [None if s else w for w, s in zip(enc.word_ids, enc.special_tokens_mask)]
            n_words = 1 + max((w for w in word_ids if w is not None), default=-1)
            spans: list[list[int]] = [[len(text), 0] for _ in range(n_words)]
            for w, (a, b) in zip(word_ids, enc.offsets):
                if w is not None:
                    spans[w] = [min(spans[w][0], a), max(spans[w][1], b)]
            tags, scores, _ = word_predictions(logits, word_ids, n_words, self.labels)
            ents = []
            for kind, s, e in bio_spans(tags):
                start, end = spans[s][0], spans[e - 1][1]
                ents.append({"entity": kind, "text": text[start:end], "start": start, "end": end,
                             "score": round(sum(scores[s:e]) / (e - s), 4)})
            out.append(ents)
        return out[0] if single else out


def predict_command(folder: str | Path, data: str, is_file: bool) -> tuple[list[dict], dict]:
    """`bertkit predict` for a token classifier: entities of one text, or tags (and entity F1) of a CoNLL file."""
    from bertkit.evaluate import entity_prf

    tagger = Tagger.load(folder)
    if not is_file:
        rows = tagger.entities(data)
        return rows, {"entities": len(rows), "truncated": tagger.truncated}
    sentences = require_examples(read_conll(data), data, "tagged sentences")
    pred = tagger.tag_sentences([s.tokens for s in sentences])
    rows = [{"tokens": s.tokens, "tags": p} for s, p in zip(sentences, pred)]
    metrics = {"sentences": len(rows), "truncated": tagger.truncated}
    metrics.update(entity_prf([s.tags for s in sentences], pred))
    return rows, metrics
