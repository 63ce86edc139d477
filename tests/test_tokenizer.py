"""Tokenization: tokenizer.json and vocab.txt agree with transformers, pairs, truncation, offsets, padding."""

from __future__ import annotations

import json
import shutil

import pytest

from bertkit.errors import InputError, ModelNotFoundError
from bertkit.tokenizer import BertTokenizer

TEXTS = ["Hello, World!", "Ünïcödé áccents and CAPITALS", "tokenization of unbelievably long words", "日本語 text"]


@pytest.fixture(scope="module")
def tok(packaged_dir):
    return BertTokenizer.from_dir(packaged_dir)


def vocab_only_folder(packaged_dir, tmp_path, lowercase: bool):
    for name in ("config.json", "vocab.txt"):
        shutil.copy(packaged_dir / name, tmp_path / name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))
    return tmp_path


def test_matches_transformers_tokenizer_on_singles_and_pairs(tok, packaged_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(packaged_dir)
    ours = tok(TEXTS, TEXTS[::-1])
    theirs = hf(TEXTS, TEXTS[::-1], padding=True, return_tensors="pt")
    assert ours.input_ids.tolist() == theirs["input_ids"].tolist()
    assert ours.token_type_ids.tolist() == theirs["token_type_ids"].tolist()
    assert ours.attention_mask.tolist() == theirs["attention_mask"].tolist()


@pytest.mark.parametrize("lowercase", [True, False])
def test_vocab_txt_only_equals_transformers_bert_tokenizer(packaged_dir, tmp_path, lowercase):
    from transformers import BertTokenizer as HFBertTokenizer

    folder = vocab_only_folder(packaged_dir, tmp_path, lowercase)
    ours = BertTokenizer.from_dir(folder)
    hf = HFBertTokenizer(str(folder / "vocab.txt"), do_lower_case=lowercase)
    for text in TEXTS:
        assert ours.encode([text])[0].ids == hf(text)["input_ids"], text


def test_vocab_txt_equals_tokenizer_json(tok, packaged_dir, tmp_path):
    vocab_tok = BertTokenizer.from_dir(vocab_only_folder(packaged_dir, tmp_path, True))
    assert [e.ids for e in vocab_tok.encode(TEXTS, TEXTS)] == [e.ids for e in tok.encode(TEXTS, TEXTS)]


def test_pair_segments_and_special_tokens(tok):
    (e,) = tok.encode(["a b"], ["c"])
    assert e.tokens == ["[CLS]", "a", "b", "[SEP]", "c", "[SEP]"]
    assert e.type_ids == [0, 0, 0, 0, 1, 1]


def test_offsets_point_into_the_original_text(tok):
    text = "Angela Merkel visited Paris."
    (e,) = tok.encode([text])
    spans = [text[s:t] for s, t in e.offsets[1:-1]]
    assert spans == ["Angela", "Mer", "kel", "visited", "Paris", "."]
    assert e.offsets[0] == e.offsets[-1] == (0, 0)


def test_truncation_to_max_length_is_counted(tok):
    assert tok.max_length == 256  # from the packaged model's sentence_bert_config.json
    batch = tok(["word " * 10_000, "short", "word " * 300])
    assert batch.input_ids.shape == (3, 256)
    assert batch.truncated == 2
    assert batch.input_ids[0, -1].item() == tok.sep_id  # [SEP] kept at the end


def test_pair_truncation_trims_the_longer_text_first(tok):
    (e,) = tok.encode(["short first"], ["long " * 400])
    assert len(e.ids) == 256 and e.type_ids.count(0) == 4  # [CLS] short first [SEP] untouched


def test_no_truncate_refuses_over_long_text_by_position(tok):
    with pytest.raises(InputError, match="text 1 has more than 256 tokens"):
        tok.encode(["fine", "word " * 400], truncate=False)


def test_padding_uses_pad_id_and_zero_mask(tok):
    batch = tok(["a", "a b c d"])
    assert batch.input_ids[0, 3:].tolist() == [tok.pad_id] * 3
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]


def test_position_limit_caps_max_length_without_sentence_bert_config(packaged_dir, tmp_path):
    folder = vocab_only_folder(packaged_dir, tmp_path, True)
    assert BertTokenizer.from_dir(folder).max_length == 512


def test_save_round_trip(tok, tmp_path):
    tok.save(tmp_path)
    again = BertTokenizer.from_dir(tmp_path)
    assert [e.ids for e in again.encode(TEXTS)] == [e.ids for e in tok.encode(TEXTS)]
    assert again.max_length == 256


def test_folder_without_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="tokenizer.json or vocab.txt"):
        BertTokenizer.from_dir(tmp_path)
