"""The pre-training heads over the body's outputs: the masked-LM head (a transform, then a decoder tied to the
word embeddings) and BERT's next-sentence-prediction head. network.py's `Bert` holds them as `cls`.

The masked-LM head is the same in every BERT-shaped family, up to two settings its config gives: the
activation (`mlm_act`: BERT's hidden_act, RoBERTa's exact GELU) and the width it maps back to before the
decoder (`embedding_dim`: ELECTRA's generator maps to its narrower embeddings). Only the checkpoint names
differ (`cls.predictions.*`, `lm_head.*`, `vocab_*`, `generator_*`); each family's key map translates them.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.model.config import BertConfig, activation


class PredictionTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_dim)
        self.act = activation(config.mlm_act)
        self.LayerNorm = nn.LayerNorm(config.embedding_dim, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))  # (..., E)


class MaskedLMHead(nn.Module):
    """transform (dense + GELU + LayerNorm), then a decoder tied to the word embeddings, plus a bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionTransform(config)
        self.decoder = nn.Linear(config.embedding_dim, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one matrix reads and writes the vocabulary
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden)) + self.bias  # (..., V)


class PreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding, mlm: bool, nsp: bool):
        super().__init__()
        self.predictions = MaskedLMHead(config, word_embeddings) if mlm else None
        self.seq_relationship = nn.Linear(config.hidden_size, 2) if nsp else None
