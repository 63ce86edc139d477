"""The other encoder families through the whole product (issue 31): every representation through Encoder,
their sentence-transformers folders, the fast modes, `bertkit compare`, and the MTEB adapter.

The models are families_support.py's tiny random ones (built by transformers, with their own tokenizer kinds);
references come from transformers and sentence-transformers on the same folders. No network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from families_support import FAMILIES, SHAPE, save_family
from model_parity import TEXTS, hf_model

from bertkit import Encoder
from bertkit.errors import CheckpointError, MissingHeadError
from bertkit.runtime.modes import TOLERANCE
from bertkit.vectors.sparse import splade_pool

NO_POOLER = ("distilbert", "electra", "modernbert")  # families that never have one
SENTENCES = [t[:200] for t in TEXTS] + ["Paris is the capital of France.", "naïve café, 日本語"]


@pytest.fixture(scope="module", params=list(FAMILIES))
def mlm(request, tmp_path_factory):
    """(family, folder) of the family's checkpoint with its masked-LM head (transformers' *ForMaskedLM)."""
    family = request.param
    return family, save_family(family, 0, tmp_path_factory.mktemp(f"{family}-mlm"))


def reference(folder, hf_class: str, texts: list[str]):
    """transformers' last hidden state, masked-LM logits (or None) and the padded batch bertkit makes."""
    enc = Encoder.load(folder)
    batch = enc.tokenize(texts)
    with torch.no_grad():
        out = hf_model(folder, hf_class)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                         output_hidden_states=True)
    return out.hidden_states[-1], getattr(out, "logits", None), batch


def close(a, b, atol: float = 1e-4) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape and np.abs(a - b).max() < atol, np.abs(a - b).max()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    return (a * b).sum(1)


# ---- 1. every representation through Encoder ---------------------------------------------------------------


def test_poolings_and_token_vectors_equal_transformers(mlm):
    family, folder = mlm
    hidden, _, batch = reference(folder, FAMILIES[family][4][0], SENTENCES)
    m = batch.attention_mask[..., None].float()  # (B, T, 1)
    enc = Encoder.load(folder)
    close(enc.encode(SENTENCES, pooling="cls"), hidden[:, 0])
    close(enc.encode(SENTENCES, pooling="mean"), (hidden * m).sum(1) / m.sum(1))
    close(enc.encode(SENTENCES, pooling="max"), hidden.masked_fill(m == 0, -1e9).amax(1))
    tokens = enc.encode_tokens(SENTENCES)
    for row, (text, t) in enumerate(zip(SENTENCES, tokens)):
        n = int(batch.attention_mask[row].sum())
        close(t.vectors, hidden[row, :n])
        assert len(t.tokens) == len(t.offsets) == n
        spans = [text[s:e] for s, e in t.offsets if e > s]
        assert spans and all(s.strip() == "" or s.strip() in text for s in spans)


def test_mask_prompt_takes_the_familys_mask_token(mlm):
    _, folder = mlm
    enc = Encoder.load(folder)
    mask = enc.tokenizer.mask_token
    own = enc.encode(SENTENCES, pooling="mask_prompt", template=f'This sentence : "{{text}}" means {mask} .')
    default = enc.encode(SENTENCES, pooling="mask_prompt")  # the default template says [MASK]: same vectors
    close(own, default, 1e-6)
    assert np.isfinite(own).all() and np.abs(own).sum() > 0


def test_fill_mask_decodes_tokens_and_equals_transformers(mlm):
    family, folder = mlm
    enc = Encoder.load(folder)
    text = f"Paris is the {enc.tokenizer.mask_token} of France."
    _, logits, batch = reference(folder, FAMILIES[family][4][0], [text])
    at = int((batch.input_ids[0] == enc.tokenizer.mask_id).nonzero()[0, 0])
    top = logits[0, at].softmax(-1).topk(5)
    (ours,) = enc.fill_mask(text, top_k=5)
    tok = enc.tokenizer.tokenizer
    assert [t for t, _ in ours] == [(tok.decode([int(i)], skip_special_tokens=False).strip() or tok.id_to_token(int(i)))
                                    for i in top.indices]
    close([p for _, p in ours], top.values.numpy(), 1e-5)
    assert not any(t.startswith(("Ġ", "▁")) for t, _ in ours), ours  # byte-level BPE / SentencePiece decoded


def test_sparse_vectors_equal_splade_over_transformers_logits(mlm):
    family, folder = mlm
    _, logits, batch = reference(folder, FAMILIES[family][4][0], SENTENCES)
    ours = Encoder.load(folder).encode_sparse(SENTENCES).toarray()
    close(ours, splade_pool(logits, batch.attention_mask).numpy())


def test_pooler_where_the_family_has_one_and_a_one_line_error_where_not(tmp_path):
    for family in FAMILIES:
        folder = save_family(family, 1, tmp_path / family)  # the bare body: with its pooler where it has one
        enc = Encoder.load(folder)
        if family in NO_POOLER:
            with pytest.raises(MissingHeadError) as caught:
                enc.encode(["a text"], pooling="pooler")
            assert "\n" not in str(caught.value) and "has no pooler; use cls or mean" in str(caught.value)
            continue
        with torch.no_grad():
            batch = enc.tokenize(SENTENCES)
            theirs = hf_model(folder, FAMILIES[family][4][1])(input_ids=batch.input_ids,
                                                              attention_mask=batch.attention_mask).pooler_output
        close(enc.encode(SENTENCES, pooling="pooler"), theirs)


def test_task_heads_of_other_families_are_refused_not_dropped(tmp_path):
    import transformers

    from bertkit.heads.task import BertSequenceClassifier, load_task_head
    from bertkit.model import load_model

    folder = save_family("roberta", 1, tmp_path / "body")
    config = transformers.AutoConfig.from_pretrained(folder, num_labels=3)
    transformers.RobertaForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    model, _ = load_model(tmp_path / "clf")
    with pytest.raises(CheckpointError, match="classifier.out_proj") as caught:
        load_task_head(model, BertSequenceClassifier, 3, pooling="cls")
    assert "\n" not in str(caught.value)


# ---- 2. sentence-transformers folders ------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_sentence_transformers_folder_gives_its_vectors(mlm, pooling, tmp_path):
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer

    from bertkit.heads.folder import st_pooling

    _, folder = mlm
    modules = [Transformer(str(folder), max_seq_length=64), Pooling(SHAPE["hidden_size"], pooling)]
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(str(tmp_path / "st"))
    theirs = st.encode(SENTENCES, convert_to_numpy=True)
    enc = Encoder.load(tmp_path / "st")
    assert st_pooling(str(tmp_path / "st")) == pooling
    close(enc.encode(SENTENCES, pooling=pooling), theirs)


# ---- 3. the fast modes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "backend"), [("fp32", "onnx"), ("int8", "torch"), ("int8", "onnx")])
def test_fast_modes_stay_within_their_tolerance(mlm, precision, backend, monkeypatch, tmp_path):
    family, folder = mlm
    monkeypatch.setenv("BERTKIT_VERDICTS", "off")  # run the mode even where this CPU's verdict says it is slow
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # graphs of read-only folders would go here
    exact = Encoder.load(folder)
    fast = Encoder.load(folder, precision=precision, backend=backend)
    assert fast.backend == backend and fast.precision == precision
    for pooling, layers in (("mean", None), ("cls", None), ("mean", [1, -1])):
        got = fast.encode(SENTENCES, pooling=pooling, layers=layers)
        want = exact.encode(SENTENCES, pooling=pooling, layers=layers)
        assert cosines(got, want).min() >= TOLERANCE[precision, backend], (family, pooling, layers)
    if backend == "onnx":
        session = fast.runner.session
        has_types = family in ("roberta", "xlm-roberta", "electra")  # type_vocab_size >= 1
        assert ("token_type_ids" in session.inputs) == has_types, session.inputs
        # attention fused into one op (runtime/onnx_attention.py) where it is plain key-masked attention; MPNet's
        # relative position bias and ModernBERT's rotary / local attention stay as exported
        onnx = pytest.importorskip("onnx")
        kinds = [n.op_type for n in onnx.load(str(session.path)).graph.node]
        fused = 0 if family in ("mpnet", "modernbert") else fast.num_hidden_layers
        assert kinds.count("MultiHeadAttention") == fused, (family, kinds.count("Softmax"))
        if precision == "fp32":  # the graph's own heads-free forward, and the head on the torch model
            close(fast.encode_sparse(SENTENCES).toarray(), exact.encode_sparse(SENTENCES).toarray(), 1e-4)


@pytest.mark.parametrize("family", ["distilbert", "mpnet", "modernbert"])
def test_int8_static_graph_of_every_attention_kind_runs(family, tmp_path, monkeypatch):
    # converted from torch.export (runtime/export.openvino_model): a family without token types, MPNet's
    # relative-position bias as an additive mask, ModernBERT's rotary local / global attention
    pytest.importorskip("nncf")
    monkeypatch.setenv("BERTKIT_VERDICTS", "off")
    folder = save_family(family, 1, tmp_path / family)
    exact = Encoder.load(folder)
    fast = Encoder.load(folder, precision="int8-static", backend="onnx")
    assert cosines(fast.encode(SENTENCES), exact.encode(SENTENCES)).min() >= TOLERANCE["int8-static", "onnx"]


# ---- 4. bertkit compare on a family folder ---------------------------------------------------------------


@pytest.mark.parametrize("family", ["roberta", "modernbert"])
def test_compare_runs_on_a_family_folder(family, tmp_path):
    folder = save_family(family, 1, tmp_path / family)
    rows = [("A man is playing a guitar.", "A man plays the guitar.", 4.8), ("A dog runs.", "A cat sleeps.", 0.5),
            ("Kids play outside.", "Children are playing outdoors.", 4.2), ("It rains.", "The stock fell.", 0.0),
            ("A woman cooks.", "A woman is cooking food.", 4.5), ("He reads.", "She sings loudly.", 1.0)]
    sts = tmp_path / "sts.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "bertkit.cli", "compare", str(sts), "--model", str(folder), "--json",
                           "--plot", str(tmp_path / "chart.png")], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    poolings = {p["pooling"] for p in json.loads(done.stdout)["poolings"]}
    assert {"cls", "mean", "max", "mask_prompt"} <= poolings
    assert ("pooler" in poolings) == (family not in NO_POOLER)


def test_report_runs_on_a_family_folder(tmp_path):
    """`bertkit report` asks the which-vector question of a DistilBERT folder: STS and classification rows for
    its representations, no pooler row (DistilBERT has none), the report folder written."""
    from taskdata import reviews, write_labelled, write_sts

    folder = save_family("distilbert", 1, tmp_path / "distilbert")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "bertkit.cli", "report", "--output", str(tmp_path / "rep"), "--model",
                           str(folder), "--sts", str(write_sts(tmp_path / "sts.tsv")), "--classify",
                           str(write_labelled(tmp_path / "texts.tsv", reviews()))],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "rep" / "results.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"sts", "classify"}
    poolings = {r["pooling"] for r in rows}
    assert {"cls", "mean", "max"} <= poolings and "pooler" not in poolings
    assert "| representation |" in (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "summary.png").read_bytes()[:4] == b"\x89PNG"
