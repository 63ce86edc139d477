"""Helpers for the sparse / cross-encoder tests: a pair file in STS-B's layout and a tiny trained cross-encoder
(splade-tiny's 2 x 128 body, a few steps: seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

PAIRS = [
    ("A man is playing a guitar.", "Someone is playing an instrument.", 4.4),
    ("A man is playing a guitar.", "The stock market fell sharply today.", 0.2),
    ("The cat sat on the mat.", "A cat is sitting on a rug.", 4.6),
    ("The cat sat on the mat.", "Quantum computers use qubits.", 0.0),
    ("Oil prices rose on Monday.", "Crude oil became more expensive this week.", 3.8),
    ("Oil prices rose on Monday.", "The team won the championship.", 0.4),
    ("A woman is slicing onions.", "Someone is cutting vegetables.", 4.0),
    ("A woman is slicing onions.", "A plane is taking off.", 0.0),
]


def write_pairs(path: Path, pairs=PAIRS, repeat: int = 2) -> Path:
    """An STS-B-style TSV (genre, file, year, id, score, sentence1, sentence2), no header."""
    rows = [f"main-captions\tMSRvid\t2012\t{i:04d}\t{s:.2f}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(pairs * repeat)]
    path.write_text("".join(rows), encoding="utf-8")
    return path


def train_tiny_cross_encoder(root: Path, steps: int = 4) -> Path:
    """A cross-encoder trained by bertkit from splade-tiny for a few steps, saved in root/ce."""
    from bertkit.train.cross_encoder import train_cross_encoder
    from bertkit.train.loop import TrainConfig

    data = write_pairs(root / "pairs.tsv")
    config = TrainConfig(max_steps=steps, batch_size=8, lr=1e-3, checkpoint_every=None, progress=False, device="cpu")
    train_cross_encoder(data, data, root / "ce", model="splade-tiny", freeze_embeddings=True, config=config)
    return root / "ce"


def save_classifier(folder: Path, packaged_dir: Path, num_labels: int, max_positions: int = 512) -> Path:
    """A randomly initialised BertForSequenceClassification saved by transformers (2 x 32): with one label it is
    what a foreign cross-encoder folder looks like."""
    import torch
    import transformers
    from support import RANDOM_SHAPES, copy_tokenizer

    torch.manual_seed(1)
    config = transformers.BertConfig(vocab_size=30522, num_labels=num_labels, max_position_embeddings=max_positions,
                                     **RANDOM_SHAPES["small"])
    transformers.BertForSequenceClassification(config).eval().save_pretrained(folder)
    copy_tokenizer(packaged_dir, folder)
    return folder
