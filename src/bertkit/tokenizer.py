"""Tokenization with the `tokenizers` library: single texts and sentence pairs, truncation to the model's
limit (with a count of what was cut), offsets into the original text, and padding to a batch.

Any tokenizer.json runs: WordPiece (BERT, DistilBERT, ELECTRA, MPNet), byte-level BPE (RoBERTa, ModernBERT),
Unigram / SentencePiece (XLM-R). The special tokens (BERT's [CLS] [SEP] [PAD] [MASK], RoBERTa's <s> </s> <pad>
<mask>) are read from tokenizer_config.json / special_tokens_map.json, else found among the tokenizer's own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Encoding, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from bertkit.batching import truncated_positions
from bertkit.errors import InputError, ModelNotFoundError
from bertkit.model.locate import read_json

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


# -- what makes a text embeddable (the CLI's readers and the corpus check rows with these too) --

def is_visible(text: str) -> bool:
    """Whether the text has a character the tokenizer keeps: not whitespace, not a control, format (zero-width),
    private-use or unassigned character (what BERT's normalizer removes), not U+FFFD."""
    return any(c.isprintable() and not c.isspace() and c != "\ufffd" for c in text)


def lone_surrogate(text: str) -> int | None:
    """The position of the first lone surrogate (a str that is not valid Unicode, e.g. from undecodable bytes
    through surrogateescape, or "\\ud800" in JSON), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def embeddable(value: object) -> bool:
    """A string that is valid Unicode and has something to embed."""
    return isinstance(value, str) and lone_surrogate(value) is None and is_visible(value)


def as_text_list(texts: str | Sequence[str], what: str = "text") -> list[str]:
    """Accept one string or a sequence of strings; reject, by position, texts that are not valid Unicode (a
    lone surrogate, e.g. from bytes that were not UTF-8) and texts with nothing to embed: empty, or only
    whitespace, control, zero-width / format characters (the tokenizer drops all of these)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{what} {i} is {type(t).__name__}, not a string")
        at = lone_surrogate(t)
        if at is not None:
            raise InputError(f"{what} {i} is not valid Unicode: a lone surrogate U+{ord(t[at]):04X} at character {at} "
                             "(bytes that were not UTF-8?); send valid UTF-8 text")
        if not is_visible(t):
            raise InputError(f"{what} {i} is empty or whitespace only (or only control / zero-width characters); "
                             "remove it (an empty text has no meaning to embed)")
    return texts


def check_has_tokens(encodings: Sequence[Encoding], what: str = "text") -> None:
    """Refuse a text that the tokenizer turned into no tokens at all (e.g. only combining accents, which an
    uncased model strips), as an empty text is refused: its vector would be that of [CLS] [SEP]."""
    for i, e in enumerate(encodings):
        if all(e.special_tokens_mask):
            raise InputError(f"{what} {i} has no tokens once normalised (only accents or symbols the model drops); "
                             "remove it (an empty text has no meaning to embed)")



@dataclass
class Batch:
    """One padded batch: torch tensors, or numpy int64 arrays for the torch-free ONNX path (`pad(numpy=True)`)."""

    input_ids: torch.Tensor  # (B, T) padded with pad_id
    attention_mask: torch.Tensor  # (B, T) 1 = real token, 0 = padding
    token_type_ids: torch.Tensor  # (B, T) 0 = first text, 1 = second text of a pair
    encodings: list[Encoding]  # per row: tokens, offsets, word ids (unpadded)
    truncated: int  # how many inputs were longer than max_length and were cut

    def to(self, device) -> Batch:
        if isinstance(self.input_ids, np.ndarray):  # numpy batches live on the CPU
            return self
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.token_type_ids.to(device),
            self.encodings,
            self.truncated,
        )


def wordpiece_from_vocab(vocab_file: Path, lowercase: bool) -> Tokenizer:
    """Build BERT's tokenizer from a bare vocab.txt, as transformers' BertTokenizer does."""
    vocab = {}
    with open(vocab_file, encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return tok


# Each special token's role, with the names the families give it: BERT's first, then RoBERTa's.
SPECIAL_ROLES = {"cls": ("[CLS]", "<s>"), "sep": ("[SEP]", "</s>"), "pad": ("[PAD]", "<pad>"),
                 "mask": ("[MASK]", "<mask>"), "unk": ("[UNK]", "<unk>")}


def special_tokens(folder: Path, tokenizer: Tokenizer) -> dict[str, str]:
    """role -> token: tokenizer_config.json's or special_tokens_map.json's `cls_token` etc. where they name
    one the tokenizer has, else the first of the role's usual names the tokenizer has (as a BERT folder with
    a bare vocab.txt has them)."""
    configured = read_json(folder / "special_tokens_map.json") | read_json(folder / "tokenizer_config.json")
    out = {}
    for role, usual in SPECIAL_ROLES.items():
        token = configured.get(f"{role}_token")
        if isinstance(token, dict):  # saved as an AddedToken
            token = token.get("content")
        names = ([token] if isinstance(token, str) else []) + list(usual)
        out[role] = next((t for t in names if tokenizer.token_to_id(t) is not None), names[0])
    return out


class BertTokenizer:
    """Thin, fast wrapper: the Rust tokenizer does the work, this class pads and reports truncation.

    `segments=False` for a family with one token type (RoBERTa, DistilBERT, ...): a pair's second text then
    gets token type 0 too, whatever the tokenizer's post-processor says."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, mask_token: str = "[MASK]", pad_token: str = "[PAD]",
                 cls_token: str = "[CLS]", sep_token: str = "[SEP]", segments: bool = True):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.mask_token, self.pad_token, self.cls_token, self.sep_token = mask_token, pad_token, cls_token, sep_token
        self.segments = segments
        tokenizer.no_padding()
        # longest_first trims the longer text of a pair first, as transformers does.
        tokenizer.enable_truncation(max_length, strategy="longest_first")
        self.pad_id = self._special_id(pad_token)
        self.cls_id = self._special_id(cls_token)
        self.sep_id = self._special_id(sep_token)
        self.mask_id = self._special_id(mask_token)

    def _special_id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise ModelNotFoundError(f"the tokenizer has no {token} token; name its special tokens in "
                                     "tokenizer_config.json (cls_token, sep_token, pad_token, mask_token)")
        return i

    def with_max_length(self, max_length: int) -> BertTokenizer:
        """A copy with another length limit and the same special tokens (the Rust tokenizer is copied too:
        truncation is its state)."""
        return BertTokenizer(Tokenizer.from_str(self.tokenizer.to_str()), max_length, self.mask_token,
                             self.pad_token, self.cls_token, self.sep_token, self.segments)

    @classmethod
    def from_dir(cls, folder: Path, max_length: int | None = None, root: Path | None = None) -> BertTokenizer:
        """tokenizer.json when present, else vocab.txt with lower-casing taken from the configs.

        `root` is the sentence-transformers folder (if any), whose sentence_bert_config.json may set a
        shorter max_seq_length than the model's position limit.
        """
        folder = Path(folder)
        config = read_json(folder / "config.json")
        tok_config = read_json(folder / "tokenizer_config.json")
        if (folder / "tokenizer.json").is_file():
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        elif (folder / "vocab.txt").is_file():
            lowercase = tok_config.get("do_lower_case", config.get("do_lower_case", True))
            tokenizer = wordpiece_from_vocab(folder / "vocab.txt", lowercase=bool(lowercase))
        else:
            raise ModelNotFoundError(f"no tokenizer in {folder}: expected tokenizer.json or vocab.txt")
        if max_length is None:
            limits = [config.get("max_position_embeddings", 512)]
            st_config = read_json(Path(root or folder) / "sentence_bert_config.json")
            if "max_seq_length" in st_config:
                limits.append(int(st_config["max_seq_length"]))
            elif isinstance(tok_config.get("model_max_length"), int) and tok_config["model_max_length"] < 100_000:
                limits.append(tok_config["model_max_length"])
            max_length = min(limits)
        special = special_tokens(folder, tokenizer)
        # Segment B exists where the config has two token types; a family whose config has no such key
        # (DistilBERT, MPNet, ModernBERT) has none, while a BERT config without it means BERT's two.
        model_type = config.get("model_type", "bert")
        segments = config.get("type_vocab_size", 2 if model_type == "bert" else 1) > 1
        return cls(tokenizer, max_length, mask_token=special["mask"], pad_token=special["pad"],
                   cls_token=special["cls"], sep_token=special["sep"], segments=segments)

    def save(self, folder: Path) -> None:
        """Write tokenizer.json, vocab.txt and tokenizer_config.json (what transformers' loaders read)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        wordpiece = isinstance(self.tokenizer.model, models.WordPiece)
        if wordpiece:  # a vocab.txt means WordPiece to transformers' loaders
            vocab = sorted(self.tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
            (folder / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
        norm = self.tokenizer.normalizer
        lowercase = bool(norm is not None and getattr(norm, "lowercase", True))
        unk = next((t for t in SPECIAL_ROLES["unk"] if self.tokenizer.token_to_id(t) is not None), "[UNK]")
        tok_config = {
            "tokenizer_class": "BertTokenizer" if wordpiece else "PreTrainedTokenizerFast",
            "do_lower_case": lowercase,
            "model_max_length": self.max_length,
            "cls_token": self.cls_token,
            "sep_token": self.sep_token,
            "pad_token": self.pad_token,
            "unk_token": unk,
            "mask_token": self.mask_token,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")

    # -- encoding ------------------------------------------------------------------------------------------

    def encode(self, texts: list[str], pairs: list[str] | None = None, truncate: bool = True) -> list[Encoding]:
        """Unpadded encodings. With truncate=False an over-long input is an error naming its position."""
        if pairs is not None:
            if len(pairs) != len(texts):
                raise InputError(f"got {len(texts)} first texts but {len(pairs)} second texts; pairs must match")
            encodings = self.tokenizer.encode_batch(list(zip(texts, pairs)))
        else:
            encodings = self.tokenizer.encode_batch(texts)
        if not truncate:
            for i, e in enumerate(encodings):
                if e.overflowing:
                    full = len(e.ids) + sum(len(o.ids) for o in e.overflowing[:1])
                    raise InputError(
                        f"text {i} has more than {self.max_length} tokens (at least {full}); shorten it or "
                        "allow truncation"
                    )
        return encodings

    def pad(self, encodings: list[Encoding], numpy: bool = False) -> Batch:
        """A padded Batch of torch tensors, or of numpy int64 arrays with numpy=True (no torch import)."""
        T = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), T), self.pad_id, dtype=np.int64)
        types = np.zeros((len(encodings), T), dtype=np.int64)
        mask = np.zeros((len(encodings), T), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            if self.segments:  # else all zero: the family has one token type
                types[row, :n] = e.type_ids
            mask[row, :n] = 1
        truncated = len(truncated_positions(encodings))
        if numpy:
            return Batch(ids, mask, types, encodings, truncated)
        import torch

        return Batch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types), encodings, truncated)

    def __call__(self, texts: list[str], pairs: list[str] | None = None, truncate: bool = True) -> Batch:
        return self.pad(self.encode(texts, pairs, truncate=truncate))

    def id_to_token(self, i: int) -> str:
        return self.tokenizer.id_to_token(int(i))

    def token_text(self, i: int) -> str:
        """One id as a reader sees it, through the tokenizer's decoder: byte-level BPE's 'Ġcapital' and
        SentencePiece's '▁long' become 'capital' and 'long'; WordPiece keeps '##ing' (a word's continuation)
        as it is; the raw token where the decoder makes nothing of it alone."""
        text = self.tokenizer.decode([int(i)], skip_special_tokens=False).strip()
        return text or self.id_to_token(i)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)
