"""Prediction with fine-tuned task heads: a sequence `Classifier`, a token `Tagger`, and `load_predictor`,
which picks the right one for a saved folder from its config.json `architectures`. `bertkit predict` and the
server's /classify and /ner use these.

    from bertkit.heads.predict import Classifier, Tagger
    Classifier.load("out/sst2").predict(["a gorgeous film"])     # [("1", 0.98)]
    Tagger.load("out/ner").entities("Angela Merkel visited Paris.")
    # [{"entity": "PER", "text": "Angela Merkel", "start": 0, "end": 13, "score": 0.99}, ...]
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path

import torch
from tokenizers import Encoding

from bertkit.batching import run_batches, truncation_note
from bertkit.data import TaggedSentence, read_conll
from bertkit.errors import InputError
from bertkit.heads.folder import require_examples
from bertkit.heads.task import BertSequenceClassifier, BertTokenClassifier, load_task_head
from bertkit.model import Bert, architecture
from bertkit.runtime.folder import load_body, open_folder
from bertkit.tokenizer import BertTokenizer

log = logging.getLogger(__name__)

CLASSIFIER, TAGGER = "BertForSequenceClassification", "BertForTokenClassification"


def load_predictor(folder: str | Path, device: str | None = None) -> Classifier | Tagger | None:
    """The predictor for a fine-tuned folder (by config.json `architectures`), or None for a plain encoder."""
    arch = architecture(folder)
    if arch == CLASSIFIER:
        return Classifier.load(folder, device=device)
    if arch == TAGGER:
        return Tagger.load(folder, device=device)
    return None


# ----------------------------------------------------------------------------------------------------------
# Batched inference over encodings


@torch.inference_mode()
def batched_logits(model: Bert, tokenizer: BertTokenizer, encodings: list[Encoding],
                   batch_size: int = 64) -> list[torch.Tensor]:
    """Per encoding, its logits as float32 on CPU (unpadded rows for token heads), in input order."""
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(encodings)

    def predict(idx, batch) -> None:
        logits = model(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits.float().cpu()
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(encodings[i].ids)] if logits.ndim == 3 else logits[row]

    # The one batch loop (longest first: little padding), with the task model as the per-batch call.
    run_batches(encodings, predict, lambda encs: tokenizer.pad(encs).to(device), batch_size=batch_size)
    return out


# ----------------------------------------------------------------------------------------------------------
# Sequence classification


class Classifier:
    """A saved sequence classifier, for prediction."""

    def __init__(self, model: BertSequenceClassifier, tokenizer, labels: list[str], regression: bool):
        self.model, self.tokenizer, self.labels, self.regression = model, tokenizer, labels, regression

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> Classifier:
        opened = open_folder(folder)
        base, tok = load_body(opened), opened.tokenizer
        extra = base.config.extra
        id2label = {int(k): v for k, v in (extra.get("id2label") or {}).items()}
        if not id2label:
            raise InputError(f"{folder} has no id2label in config.json; "
                             "is it a classifier made by `bertkit train classify`?")
        labels = [id2label[i] for i in range(len(id2label))]
        model = load_task_head(base, BertSequenceClassifier, len(labels),
                               pooling=extra.get("bertkit_pooling", "pooler"))
        if "classifier.weight" not in (base.leftover_state or {}):
            raise InputError(f"{folder} has no classifier weights (classifier.weight); "
                             "train one with `bertkit train classify`")
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # One output is a score (a regression head, or a cross-encoder's logit), not a one-class softmax.
        return cls(model, tok, labels, extra.get("problem_type") == "regression" or len(labels) == 1)

    def logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64,
               encodings: list[Encoding] | None = None) -> torch.Tensor:
        """encodings: the texts (and pairs) already tokenized by this classifier's tokenizer (the server's)."""
        from bertkit.tokenizer import as_text_list

        if encodings is None:
            texts = as_text_list(texts)
            pairs = as_text_list(pairs, "second text") if pairs is not None else None
            encodings = self.tokenizer.encode(texts, pairs)
        self.truncated = truncation_note(encodings, self.tokenizer.max_length, "texts")
        return torch.stack(batched_logits(self.model, self.tokenizer, encodings, batch_size))

    def predict(self, texts: list[str], pairs: list[str] | None = None,
                encodings: list[Encoding] | None = None) -> list[tuple[str, float]]:
        """(label, probability) per text; for a regression model ("score", predicted value)."""
        logits = self.logits(texts, pairs, encodings=encodings)
        if self.regression:
            return [("score", float(v)) for v in logits[:, 0]]
        probs = logits.softmax(-1)
        top = probs.max(-1)
        return [(self.labels[int(i)], float(p)) for p, i in zip(top.values, top.indices)]


def predict_classifier(folder: str | Path, data: str, is_file: bool, fmt: str | None = None,
                    pair: str | None = None) -> tuple[list[dict], dict]:
    """`bertkit predict` for a classifier: rows to print, and metrics when the file carries labels."""
    from bertkit.data import Example, read_examples
    from bertkit.data.metrics import accuracy, macro_f1, score_metrics

    clf = Classifier.load(folder)
    examples = read_examples(data, fmt, clf.regression) if is_file else [Example(data, pair)]
    pairs = [e.pair for e in examples] if all(e.pair is not None for e in examples) else None
    preds = clf.predict([e.text for e in examples], pairs)
    rows = [{"text": e.text, **({"pair": e.pair} if e.pair is not None else {}), "label": lab, "probability": p}
            if not clf.regression else {"text": e.text, "pair": e.pair, "score": p}
            for e, (lab, p) in zip(examples, preds)]
    metrics: dict = {"examples": len(rows), "truncated": clf.truncated}
    if is_file and all(e.label is not None for e in examples):
        if clf.regression:
            metrics.update(score_metrics([float(e.label) for e in examples], [p for _, p in preds]))
        else:
            gold, pred = [str(e.label) for e in examples], [lab for lab, _ in preds]
            metrics.update(accuracy=100 * accuracy(gold, pred), macro_f1=100 * macro_f1(gold, pred))
    return rows, metrics


# ----------------------------------------------------------------------------------------------------------
# Token classification (NER)


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


def word_predictions(logits: torch.Tensor, words: list[int | None], n_words: int,
                     labels: list[str]) -> tuple[list[str], list[float], int]:
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


def encode_sentences(tok: BertTokenizer,
                     sentences: list[TaggedSentence]) -> tuple[list[Encoding], list[list[int | None]]]:
    texts, all_spans = zip(*(word_spans(s.tokens) for s in sentences))
    encodings = tok.encode(list(texts))
    return encodings, [wordpiece_words(e, sp) for e, sp in zip(encodings, all_spans)]


class Tagger:
    """A saved token classifier: entity spans with character offsets, or tags for pre-split words."""

    def __init__(self, model: BertTokenClassifier, tokenizer: BertTokenizer, labels: list[str]):
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.truncated = 0

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> Tagger:
        opened = open_folder(folder)
        base, tok = load_body(opened), opened.tokenizer
        id2label = {int(k): v for k, v in (base.config.extra.get("id2label") or {}).items()}
        if not id2label or "classifier.weight" not in (base.leftover_state or {}):
            raise InputError(f"{folder} is not a token classifier (no id2label / classifier weights); "
                             "train one with `bertkit train ner`")
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

    def entities(self, texts: str | list[str],
                 encodings: list[Encoding] | None = None) -> list[dict] | list[list[dict]]:
        """Entities per text: type, surface text, start / end character offsets in the original text, score
        (mean probability of the entity's words). Words are the tokenizer's (split at spaces and punctuation).
        encodings: the texts already tokenized by this tagger's tokenizer (the server's)."""
        from bertkit.data.metrics import bio_spans
        from bertkit.tokenizer import as_text_list

        single = isinstance(texts, str)
        texts = as_text_list(texts)
        encodings = self.tokenizer.encode(texts) if encodings is None else encodings
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


def predict_tagger(folder: str | Path, data: str, is_file: bool) -> tuple[list[dict], dict]:
    """`bertkit predict` for a token classifier: entities of one text, or tags (and entity F1) of a CoNLL file."""
    from bertkit.data.metrics import entity_prf

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
