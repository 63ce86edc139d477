"""Every model folder written by the previous version (the flat `bertkit/model.py`) still loads and gives the same
outputs (issue 13's acceptance).

The fixture writes those folders by hand, with safetensors and json only, never through bertkit's own save
functions, in exactly the format the previous code wrote (read from its `save_model`, `save_folder` and the
trainers): config.json = the BertConfig fields, the keys copied through from the base model's config.json, then
model_type / position_embedding_type / bertkit_config_version, then the trainer's keys (architectures,
id2label with string keys, label2id, problem_type, bertkit_pooling, bertkit_pairs); model.safetensors with
transformers' names and no tied `cls.predictions.decoder.weight`, metadata {"format": "pt"}. Each folder is
loaded with the current code and compared with transformers (or a reference computed by hand from it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from model_parity import assert_close, hf_model

from bertkit.model import load_model, save_model
from bertkit.tokenizer import BertTokenizer

ATOL = 1e-5
H, LAYERS, HEADS, INTER, VOCAB, POSITIONS = 32, 2, 4, 64, 30522, 512
FIELDS = {  # BertConfig's fields, in their order: the head of every config.json the previous version wrote
    "vocab_size": VOCAB, "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
    "intermediate_size": INTER, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12, "pad_token_id": 0,
}
# Keys of the packaged model's config.json that bertkit does not interpret and copied through on save.
COPIED = {"_name_or_path": "nreimers/MiniLM-L6-H384-uncased", "architectures": ["BertModel"],
          "gradient_checkpointing": False, "initializer_range": 0.02, "transformers_version": "4.8.2",
          "use_cache": True}
TAIL = {"model_type": "bert", "position_embedding_type": "absolute", "bertkit_config_version": 1}
TEXTS = ["A man is playing a guitar.", "Hi.", "The stock market fell sharply today after the bank raised rates."]
PAIRS = ["Someone plays an instrument.", "Hello there, how are you?", "No."]


def body_tensors(gen: torch.Generator, pooler: bool = True) -> dict[str, torch.Tensor]:
    """Random BertModel weights under transformers' names (bert.embeddings..., bert.encoder.layer.N...)."""
    def w(*shape):
        return torch.randn(*shape, generator=gen) * 0.05

    def norm(prefix):
        return {prefix + ".weight": 1 + w(H), prefix + ".bias": w(H)}

    t = {"bert.embeddings.word_embeddings.weight": w(VOCAB, H),
         "bert.embeddings.position_embeddings.weight": w(POSITIONS, H),
         "bert.embeddings.token_type_embeddings.weight": w(2, H), **norm("bert.embeddings.LayerNorm")}
    for i in range(LAYERS):
        p = f"bert.encoder.layer.{i}."
        for name, out, inp in [("attention.self.query", H, H), ("attention.self.key", H, H),
                               ("attention.self.value", H, H), ("attention.output.dense", H, H),
                               ("intermediate.dense", INTER, H), ("output.dense", H, INTER)]:
            t[p + name + ".weight"], t[p + name + ".bias"] = w(out, inp), w(out)
        t.update(norm(p + "attention.output.LayerNorm") | norm(p + "output.LayerNorm"))
    if pooler:
        t["bert.pooler.dense.weight"], t["bert.pooler.dense.bias"] = w(H, H), w(H)
    return t


def pretraining_tensors(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The MLM transform, its output bias and the NSP layer; the decoder weight was never written (tied)."""
    return {"cls.predictions.transform.dense.weight": torch.randn(H, H, generator=gen) * 0.05,
            "cls.predictions.transform.dense.bias": torch.randn(H, generator=gen) * 0.05,
            "cls.predictions.transform.LayerNorm.weight": 1 + torch.randn(H, generator=gen) * 0.05,
            "cls.predictions.transform.LayerNorm.bias": torch.randn(H, generator=gen) * 0.05,
            "cls.predictions.bias": torch.randn(VOCAB, generator=gen) * 0.05,
            "cls.seq_relationship.weight": torch.randn(2, H, generator=gen) * 0.05,
            "cls.seq_relationship.bias": torch.randn(2, generator=gen) * 0.05}


def classifier_tensors(gen: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    return {"classifier.weight": torch.randn(n, H, generator=gen) * 0.5,
            "classifier.bias": torch.randn(n, generator=gen)}


def write_folder(folder: Path, tensors: dict, config: dict, packaged: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(packaged / name, folder / name)
    return folder


def write_sentence_transformers_files(folder: Path) -> None:
    """What the previous `train sbert` added beside the transformers files (mean pooling)."""
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": H, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
               "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"similarity_fn_name": "cosine", "bertkit_pooling": "mean"}))


@pytest.fixture(scope="module")
def legacy(tmp_path_factory, packaged_dir) -> dict[str, Path]:
    """Five folders in the previous version's format: name -> folder."""
    gen = torch.Generator().manual_seed(13)
    root = tmp_path_factory.mktemp("legacy")
    labels, tags = ["negative", "positive"], ["O", "B-PER", "I-PER"]
    folders = {
        # save_model(Bert(BertConfig(...)), folder): a fresh model's config has no copied keys
        "body": write_folder(root / "body", body_tensors(gen), FIELDS | TAIL, packaged_dir),
        # pretrain: save_folder(model, tok, folder, architectures=["BertForPreTraining"])
        "pretraining": write_folder(root / "pretraining", body_tensors(gen) | pretraining_tensors(gen),
                                    FIELDS | COPIED | TAIL | {"architectures": ["BertForPreTraining"]}, packaged_dir),
        # train classify --pooling mean over the packaged model
        "classifier": write_folder(
            root / "classifier", body_tensors(gen) | classifier_tensors(gen, 2),
            FIELDS | COPIED | TAIL | {
                "architectures": ["BertForSequenceClassification"], "id2label": {"0": "negative", "1": "positive"},
                "label2id": {n: i for i, n in enumerate(labels)}, "problem_type": "single_label_classification",
                "bertkit_pooling": "mean", "bertkit_pairs": True}, packaged_dir),
        # train ner
        "tagger": write_folder(
            root / "tagger", body_tensors(gen) | classifier_tensors(gen, 3),
            FIELDS | COPIED | TAIL | {"architectures": ["BertForTokenClassification"],
                                     "id2label": {str(i): t for i, t in enumerate(tags)},
                                     "label2id": {t: i for i, t in enumerate(tags)}}, packaged_dir),
        # train sbert: save_model(..., architectures=["BertModel"]) + the sentence-transformers files
        "sentence": write_folder(root / "sentence", body_tensors(gen), FIELDS | COPIED | TAIL, packaged_dir),
    }
    write_sentence_transformers_files(folders["sentence"])
    return folders


def batch(folder: Path, pairs: bool = False):
    return BertTokenizer.from_dir(folder)(TEXTS, PAIRS if pairs else None)


def test_legacy_body_folder_matches_transformers(legacy):
    model, _ = load_model(legacy["body"])
    hf = hf_model(legacy["body"], "BertModel")
    b = batch(legacy["body"], pairs=True)
    with torch.no_grad():
        ours = model(b.input_ids, b.attention_mask, b.token_type_ids)
        packed = model.forward_packed(b.input_ids, b.attention_mask, b.token_type_ids)
        theirs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids)
    assert_close(ours.last_hidden_state, theirs.last_hidden_state, "last_hidden_state", b.attention_mask, ATOL)
    assert_close(packed.last_hidden_state, theirs.last_hidden_state, "packed", b.attention_mask, ATOL)
    assert_close(ours.pooler_output, theirs.pooler_output, "pooler_output", atol=ATOL)


def test_legacy_pretraining_folder_matches_transformers(legacy):
    from bertkit import Encoder

    model, _ = load_model(legacy["pretraining"])
    assert model.has_pooler and model.has_mlm and model.has_nsp
    hf = hf_model(legacy["pretraining"], "BertForPreTraining")
    b = batch(legacy["pretraining"], pairs=True)
    with torch.no_grad():
        ours = model(b.input_ids, b.attention_mask, b.token_type_ids)
        theirs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids)
    assert_close(ours.mlm_logits, theirs.prediction_logits, "mlm_logits", b.attention_mask, ATOL)
    assert_close(ours.nsp_logits, theirs.seq_relationship_logits, "nsp_logits", atol=ATOL)
    probs = Encoder.load(legacy["pretraining"], device="cpu").next_sentence(TEXTS[0], PAIRS[0])
    assert abs(probs - theirs.seq_relationship_logits[0].softmax(-1)[0].item()) < ATOL


def test_legacy_mean_pooled_classifier_gives_the_same_logits(legacy):
    from bertkit.heads.predict import Classifier, load_predictor

    clf = load_predictor(legacy["classifier"], device="cpu")
    assert isinstance(clf, Classifier) and clf.labels == ["negative", "positive"] and clf.model.pooling == "mean"
    hf = hf_model(legacy["classifier"], "BertForSequenceClassification")  # its bert + classifier, pooled by hand
    b = batch(legacy["classifier"], pairs=True)
    with torch.no_grad():
        hidden = hf.bert(input_ids=b.input_ids, attention_mask=b.attention_mask,
                         token_type_ids=b.token_type_ids).last_hidden_state  # (B, T, H)
        m = b.attention_mask.unsqueeze(-1).float()
        ref = hf.classifier((hidden * m).sum(1) / m.sum(1))  # (B, 2)
    assert_close(clf.logits(TEXTS, PAIRS), ref, "classifier logits", atol=ATOL)


def test_legacy_token_classifier_matches_transformers(legacy):
    from bertkit.heads.predict import Tagger, load_predictor

    tagger = load_predictor(legacy["tagger"], device="cpu")
    assert isinstance(tagger, Tagger) and tagger.labels == ["O", "B-PER", "I-PER"]
    hf = hf_model(legacy["tagger"], "BertForTokenClassification")
    b = batch(legacy["tagger"])
    with torch.no_grad():
        ours = tagger.model(b.input_ids, b.attention_mask, b.token_type_ids).logits
        theirs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids).logits
    assert_close(ours, theirs, "token logits", b.attention_mask, ATOL)


def test_legacy_sentence_transformers_folder_gives_the_same_vectors(legacy):
    from sentence_transformers import SentenceTransformer

    from bertkit import Encoder

    ref = SentenceTransformer(str(legacy["sentence"]), device="cpu").encode(TEXTS, convert_to_tensor=True)
    got = torch.from_numpy(Encoder.load(legacy["sentence"], device="cpu").encode(TEXTS, pooling="mean"))
    assert_close(got, ref.cpu(), "sentence vectors", atol=ATOL)


@pytest.mark.parametrize("name", ["body", "pretraining", "classifier", "tagger"])
def test_resaving_a_legacy_folder_writes_the_same_names_and_config(legacy, name, tmp_path):
    """Loaded and saved again by the current code: the same tensor names and values, the same config.json."""
    from safetensors.torch import load_file

    from bertkit.heads.predict import load_predictor

    predictor = load_predictor(legacy[name], device="cpu")
    model = predictor.model if predictor is not None else load_model(legacy[name])[0]
    save_model(model, tmp_path)
    old, new = load_file(legacy[name] / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert sorted(new) == sorted(old)
    assert all(torch.equal(old[k], new[k]) for k in old)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads((legacy[name] / "config.json").read_text())
