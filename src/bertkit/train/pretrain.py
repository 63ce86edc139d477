"""BERT pretraining: masked-LM + next-sentence prediction, from scratch or continuing from a checkpoint.

Corpus: plain text, one sentence a line, a blank line between documents; or any dataset file bertkit reads
(CoNLL documents split at -DOCSTART-; other sets give one document per text, cut into sentences).
Instances are consecutive sentence pairs (A, B) of a document; B is replaced, with probability 0.5, by a
random sentence of another document (NSP label 1 = "random", as in transformers). Masking is dynamic (drawn
per batch): 15% of the wordpieces (at least one per row) are picked; of those 80% become [MASK], 10% a
random token, 10% stay. A held-out share of the documents, masked once with a fixed seed, measures
masked-token top-1 accuracy and NSP accuracy; a unigram baseline (always the most frequent training token)
is reported beside it. The MLM head only scores the masked positions (never a (B, T, vocab) tensor).
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from bertkit.data import infer_format, read_conll_documents, read_dataset, read_texts, sentences_of
from bertkit.errors import InputError, OptionError
from bertkit.model import Bert, BertConfig
from bertkit.runtime.folder import load_body, open_folder
from bertkit.tokenizer import BertTokenizer
from bertkit.train.common import freeze_word_embeddings, save_folder
from bertkit.train.loop import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

# Google's BERT miniatures (Turc et al. 2019): layers, hidden, heads; feed-forward = 4 x hidden.
SIZES = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "base": (12, 768, 12)}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
IGNORE = -100


def read_corpus(paths: list[str | Path], fmt: str | None = None) -> list[list[str]]:
    """Documents, each a list of sentences, from one or more corpus files."""
    docs: list[list[str]] = []
    for path in paths:
        f = fmt or infer_format(path)
        if f == "txt":
            doc: list[str] = []
            for line in Path(path).read_text(encoding="utf-8").removeprefix("\ufeff").split("\n"):
                if line.strip():
                    doc.append(line.strip())
                elif doc:
                    docs.append(doc)
                    doc = []
            if doc:
                docs.append(doc)
        elif f == "conll":
            docs += read_conll_documents(path)
        else:
            texts = read_texts(path) if f == "txt" else sentences_of(read_dataset(path, f))
            docs += [[s for s in SENTENCE_END.split(t) if s.strip()] for t in texts]
    docs = [d for d in docs if d]
    if sum(len(d) for d in docs) < 2:
        raise InputError(f"the corpus {', '.join(map(str, paths))} holds fewer than two sentences; "
                         "pretraining needs text")
    return docs


def make_pairs(docs: list[list[str]], seed: int) -> list[tuple[str, str, int]]:
    """(A, B, is_random) for each consecutive sentence pair; B is a random other-document sentence half the time.
    A single-sentence document contributes one pair with a random B."""
    rng = random.Random(seed)
    pairs = []
    for d, doc in enumerate(docs):
        for i in range(max(1, len(doc) - 1)):
            if len(doc) > 1 and rng.random() < 0.5:
                pairs.append((doc[i], doc[i + 1], 0))
                continue
            other = rng.randrange(len(docs) - 1) if len(docs) > 1 else 0
            other += other >= d and len(docs) > 1  # any document but this one
            pairs.append((doc[i], rng.choice(docs[other]), 1))
    return pairs


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, tok: BertTokenizer, generator: torch.Generator | None = None,
                prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: returns (masked input ids, labels with -100 where nothing is predicted)."""
    pick = (torch.rand(ids.shape, generator=generator) < prob) & ~special
    # at least one prediction per row, so every row teaches something
    none = ~pick.any(1)
    if none.any():
        scores = torch.rand(ids.shape, generator=generator).masked_fill(special, -1.0)
        first = scores.argmax(1)
        pick[none, first[none]] = True
    labels = torch.where(pick, ids, torch.full_like(ids, IGNORE))
    r = torch.rand(ids.shape, generator=generator)
    masked = ids.clone()
    masked[pick & (r < 0.8)] = tok.mask_id
    random_pos = pick & (r >= 0.8) & (r < 0.9)
    masked[random_pos] = torch.randint(tok.vocab_size, ids.shape, generator=generator)[random_pos]
    return masked, labels


def pretrain_loss(model: Bert, input_ids, attention_mask, token_type_ids, labels,
                  nsp_labels) -> tuple[torch.Tensor, dict]:
    out = model(input_ids, attention_mask, token_type_ids, compute_heads=False)
    picked = labels != IGNORE
    mlm_logits = model.cls.predictions(out.last_hidden_state[picked])  # (n_masked, V)
    nsp_logits = model.cls.seq_relationship(out.pooler_output)  # (B, 2)
    mlm = F.cross_entropy(mlm_logits.float(), labels[picked])
    nsp = F.cross_entropy(nsp_logits.float(), nsp_labels)
    stats = {"mlm_correct": (mlm_logits.argmax(-1) == labels[picked]).sum().item(), "mlm_n": int(picked.sum()),
             "nsp_correct": (nsp_logits.argmax(-1) == nsp_labels).sum().item(), "nsp_n": len(nsp_labels),
             "mlm_loss": mlm.item() * int(picked.sum())}
    return mlm + nsp, stats


@dataclass
class PretrainResult:
    output: Path
    train_pairs: int
    heldout_pairs: int
    before: dict[str, float]  # held-out metrics of the starting model (fresh heads: near zero)
    after: dict[str, float]  # held-out metrics of the kept model
    unigram_baseline: float  # masked-token accuracy of always predicting the most frequent training token
    unigram_token: str
    train: TrainResult = field(repr=False)


def initial_model(init: str | None, size: str, tok_source: str | Path | None) -> tuple[Bert, BertTokenizer]:
    """init: 'default' (packaged model), a folder / hub id, or 'none' (random weights of `size`)."""
    if init in (None, "none"):
        if size not in SIZES:
            raise OptionError(f"--size {size!r}: choose one of {', '.join(SIZES)}")
        tok = open_folder(tok_source).tokenizer
        layers, hidden, heads = SIZES[size]
        config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=4 * hidden)
        model = Bert(config, pooler=True, mlm=True, nsp=True)
        return model, tok
    opened = open_folder(None if init == "default" else init)
    model = load_body(opened)
    model.add_heads(mlm=True, nsp=True)  # keeps heads the checkpoint has, adds fresh ones it lacks
    return model, opened.tokenizer


def pretrain(
    corpus: list[str | Path],
    output: str | Path,
    init: str | None = "default",
    size: str = "tiny",
    tokenizer: str | Path | None = None,
    fmt: str | None = None,
    max_length: int = 128,
    heldout: float = 0.05,
    freeze_embeddings: bool = False,
    config: TrainConfig | None = None,
) -> PretrainResult:
    config = config or TrainConfig(epochs=1, lr=1e-4)
    config.output_dir = Path(output)
    config.best_metric = "mlm_accuracy"
    docs = read_corpus(corpus, fmt)
    random.Random(config.seed).shuffle(docs)
    n_held = max(1, int(len(docs) * heldout)) if len(docs) > 1 else 0
    held_docs, train_docs = docs[:n_held], docs[n_held:]
    if n_held == 0:  # a single document: hold out its tail instead
        cut = max(1, int(len(docs[0]) * (1 - heldout)))
        held_docs, train_docs = [docs[0][cut - 1:]], [docs[0][:cut]]
    train_pairs, held_pairs = make_pairs(train_docs, config.seed), make_pairs(held_docs or train_docs, config.seed + 1)

    model, full_tok = initial_model(init, size, tokenizer)
    freeze_word_embeddings(model, freeze_embeddings)  # also the tied MLM decoder: only its bias and transform learn
    # A separate Rust tokenizer cut at max_length for training; the saved one keeps the model's own limit.
    tok = full_tok.with_max_length(min(max_length, full_tok.max_length))

    def encode(pairs):
        encs = tok.encode([a for a, _, _ in pairs], [b for _, b, _ in pairs])
        return [(e, lab) for e, (_, _, lab) in zip(encs, pairs)]

    train_data, held_data = encode(train_pairs), encode(held_pairs)
    counts = Counter(i for e, _ in train_data for i, s in zip(e.ids, e.special_tokens_mask) if not s)
    top_id, _ = counts.most_common(1)[0]

    def collate(items, generator=None):
        batch = tok.pad([e for e, _ in items])
        special = torch.zeros_like(batch.input_ids, dtype=torch.bool)
        for row, (e, _) in enumerate(items):
            special[row, : len(e.ids)] = torch.tensor(e.special_tokens_mask, dtype=torch.bool)
        special |= batch.attention_mask == 0
        ids, labels = mask_tokens(batch.input_ids, special, tok, generator)
        return ids, batch.attention_mask, batch.token_type_ids, labels, torch.tensor([lab for _, lab in items])

    g = torch.Generator().manual_seed(1234)  # the held-out set is masked once, identically for every evaluation
    held_batches = [collate(held_data[i : i + 64], g) for i in range(0, len(held_data), 64)]
    held_labels = torch.cat([b[3][b[3] != IGNORE] for b in held_batches])
    baseline = float((held_labels == top_id).float().mean())

    def evaluate(m) -> dict[str, float]:
        device = next(m.parameters()).device
        total: Counter = Counter()
        for b in held_batches:
            _, stats = pretrain_loss(m, *(t.to(device) for t in b))
            total.update(stats)
        return {"mlm_accuracy": 100 * total["mlm_correct"] / total["mlm_n"],
                "nsp_accuracy": 100 * total["nsp_correct"] / total["nsp_n"],
                "mlm_loss": total["mlm_loss"] / total["mlm_n"]}

    model.eval()
    with torch.no_grad():
        before = evaluate(model)
    log.info("before training: %s (unigram baseline %.2f%%)", before, 100 * baseline)

    def save(m, folder: Path) -> None:
        save_folder(m, full_tok, folder, architectures=["BertForPreTraining"])

    result = train(model, train_data, collate, lambda m, b: pretrain_loss(m, *b)[0], config,
                   eval_fn=evaluate, save_fn=save, lengths=[len(e.ids) for e, _ in train_data])
    return PretrainResult(Path(output), len(train_data), len(held_data), before, result.best or {}, 100 * baseline,
                          tok.id_to_token(top_id), result)
