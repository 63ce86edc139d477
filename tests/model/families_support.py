"""Tiny random models of every encoder family, built by transformers and saved with save_pretrained, each
with a tokenizer of its own kind built with the `tokenizers` library (byte-level BPE, Unigram, WordPiece).

Shared by tests/model/test_families.py (parity with transformers) and test_families_product.py (the
families through Encoder, the CLI, the fast modes and sentence-transformers). No network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from model_parity import TEXTS
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CORPUS = TEXTS + ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
                  "Numbers 0123456789 and punctuation: ,.;!?", "naïve café résumé", "日本語のテキスト"] * 3
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, RoBERTa's order: <pad> = 1
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SHAPE = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def roberta_template(tok: Tokenizer, cls: str = "<s>", sep: str = "</s>") -> None:
    ids = {t: tok.token_to_id(t) for t in (cls, sep)}
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} {sep} $B:1 {sep}:1", special_tokens=list(ids.items()))


def byte_bpe(specials: list[str], template: tuple[str, str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    roberta_template(tok, *template)
    return tok


def unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=200, special_tokens=ROBERTA_SPECIALS,
                                                            unk_token="<unk>"))
    roberta_template(tok)
    return tok


def wordpiece(specials: list[str], template: tuple[str, str]) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token=specials[[s.strip("[]<>").lower() for s in specials].index("unk")]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls, sep = template
    if cls == "[CLS]":  # BERT's template
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[(t, tok.token_to_id(t)) for t in (cls, sep)])
    else:
        roberta_template(tok, cls, sep)
    return tok


# family -> (tokenizer builder, its (cls, sep, pad, mask), HF config class, its kwargs, HF model classes).
# The first model class carries the masked-LM head where the family has one; the second is the bare body
# (with its pooler where the family has one).
FAMILIES = {
    "roberta": (lambda: byte_bpe(ROBERTA_SPECIALS, ("<s>", "</s>")), ("<s>", "</s>", "<pad>", "<mask>"),
                "RobertaConfig", dict(SHAPE, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1),
                ("RobertaForMaskedLM", "RobertaModel")),
    "xlm-roberta": (unigram, ("<s>", "</s>", "<pad>", "<mask>"),
                    "XLMRobertaConfig", dict(SHAPE, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1),
                    ("XLMRobertaForMaskedLM", "XLMRobertaModel")),
    "distilbert": (lambda: wordpiece(BERT_SPECIALS, ("[CLS]", "[SEP]")), ("[CLS]", "[SEP]", "[PAD]", "[MASK]"),
                   "DistilBertConfig", dict(dim=32, n_layers=3, n_heads=4, hidden_dim=64, max_position_embeddings=64),
                   ("DistilBertForMaskedLM", "DistilBertModel")),
    "electra": (lambda: wordpiece(BERT_SPECIALS, ("[CLS]", "[SEP]")), ("[CLS]", "[SEP]", "[PAD]", "[MASK]"),
                "ElectraConfig", dict(SHAPE, embedding_size=16, max_position_embeddings=64),
                ("ElectraForMaskedLM", "ElectraForPreTraining")),
    "mpnet": (lambda: wordpiece(ROBERTA_SPECIALS, ("<s>", "</s>")), ("<s>", "</s>", "<pad>", "<mask>"),
              "MPNetConfig", dict(SHAPE, max_position_embeddings=66, pad_token_id=1),
              ("MPNetForMaskedLM", "MPNetModel")),
    "modernbert": (lambda: byte_bpe(BERT_SPECIALS, ("[CLS]", "[SEP]")), ("[CLS]", "[SEP]", "[PAD]", "[MASK]"),
                   "ModernBertConfig", dict(SHAPE, num_hidden_layers=4, max_position_embeddings=128, local_attention=8,
                                            global_attn_every_n_layers=2),
                   ("ModernBertForMaskedLM", "ModernBertModel")),
}


def save_family(family: str, which: int, folder: Path) -> Path:
    """Build FAMILIES[family]'s model class `which` (0: with the masked-LM head, 1: the bare body) with
    random weights (seed 0), save it with its tokenizer into `folder` and return the folder."""
    import transformers

    build, (cls, sep, pad, mask), config_class, kwargs, classes = FAMILIES[family]
    tok = build()
    ids = {t: tok.token_to_id(t) for t in (cls, sep, pad)}
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(
        vocab_size=tok.get_vocab_size(), **{"pad_token_id": ids[pad], **kwargs},
        **({"cls_token_id": ids[cls], "sep_token_id": ids[sep]} if family == "modernbert" else {}))
    model = getattr(transformers, classes[which])(config).eval()
    with torch.no_grad():  # transformers initialises some parts at zero or one; make every tensor count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"cls_token": cls, "sep_token": sep, "pad_token": pad, "mask_token": mask, "model_max_length": 64,
         "tokenizer_class": "PreTrainedTokenizerFast"}))
    return folder
