"""The playground's look-inside routes (serve/inside_routes.py) against the library: /attention equals
Encoder.forward(..., output_attentions=True), /layers equals encode(..., layers=[k]), the limits answer 413 with
the error body, /model is the `inspect` tree, /report reads a `bertkit report` folder; `serve --report` and
`serve --mask-model` from the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support import assert_user_error, error_of, run_process, serve_process, thread_server, wait_ready

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

REPORT = Path(__file__).resolve().parents[2] / "docs" / "report"
TEXTS = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def splade():
    from bertkit import Encoder

    return Encoder.load("splade-tiny", device="cpu")


@pytest.fixture(scope="module")
def server(encoder, splade):
    """The packaged model, with a report folder and splade-tiny behind /fill-mask."""
    from bertkit.serve import create_app

    app = create_app(encoder)
    app.state.service.report_dir = REPORT
    app.state.service.mask_encoder = splade
    with thread_server(app) as s:
        yield s


@pytest.fixture(scope="module")
def bare(encoder):
    """No report, no masked-LM model."""
    from bertkit.serve import create_app

    with thread_server(create_app(encoder)) as s:
        yield s


@pytest.mark.parametrize("pair", [None, "It was soft."])
def test_attention_equals_forward(server, encoder, pair):
    text = "The cat sat on the mat."
    body = {"text": text} if pair is None else {"text": text, "pair": pair}
    r = server.post("/attention", body)
    assert r.status_code == 200, r.text
    data = r.json()
    out = encoder.forward(text, pair, output_attentions=True)
    expected = torch.stack([a[0] for a in out.attentions]).numpy()
    got = np.asarray(data["attentions"])
    assert got.shape == expected.shape == (6, 12, len(data["tokens"]), len(data["tokens"]))
    assert np.abs(got - expected).max() <= 1e-6
    (e,) = encoder.tokenizer.encode([text], [pair] if pair else None)
    assert data["tokens"] == e.tokens and data["segments"] == e.type_ids
    assert (data["layers"], data["heads"]) == (6, 12)
    sep = [i for i, t in enumerate(data["tokens"]) if t == "[SEP]"]
    assert np.allclose(data["sep_share"], expected[..., sep].sum(-1).mean(-1), atol=1e-6)
    assert np.allclose(data["cls_share"], expected[..., 0].mean(-1), atol=1e-6)
    heavy = np.asarray(data["cls_share"]) >= data["heavy_share"]
    assert sorted(map(tuple, data["cls_heavy"])) == sorted(zip(*map(list, np.nonzero(heavy))))
    assert data["usage"]["tokens"] == len(data["tokens"])


def test_attention_limits(server):
    info = server.get("/info").json()["inside"]
    limit = info["attention"]["max_tokens"]
    assert limit == 64
    r = server.post("/attention", {"text": " ".join(["word"] * (limit - 1))})  # limit + 1 with [CLS], [SEP]
    message = error_of(r, 413, "max_attention_tokens")
    assert f"{limit + 1} tokens" in message and f"at most {limit}" in message
    assert r.json()["error"]["type"] == "limit_exceeded"
    assert server.post("/attention", {"text": " ".join(["word"] * (limit - 2))}).status_code == 200
    # the pair counts too
    error_of(server.post("/attention", {"text": "a " * 40, "pair": "b " * 40}), 413, "max_attention_tokens")
    error_of(server.post("/attention", {"text": "   "}), 400)
    error_of(server.post("/attention", {"text": "a", "layers": [1]}), 422)


def test_layers_equal_encode_per_hidden_state(server, encoder):
    r = server.post("/layers", {"texts": TEXTS})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["states"] == 7 and data["poolings"] == ["cls", "mean", "max"]
    for p in data["poolings"]:
        got = np.asarray(data["matrices"][p])
        assert got.shape == (7, 3, 3)
        for k in (0, 3, 6):
            v = encoder.encode(TEXTS, pooling=p, layers=[k], normalize=True)
            assert np.abs(got[k] - v @ v.T).max() < 1e-5, (p, k)
    # the last hidden state is what /similarity gives
    last = server.post("/similarity", {"texts": TEXTS, "poolings": ["mean"]}).json()["matrices"]["mean"]
    assert np.abs(np.asarray(data["matrices"]["mean"][-1]) - np.asarray(last)).max() < 1e-5


def test_layers_limits(server):
    error_of(server.post("/layers", {"texts": ["only one"]}), 400, "bad_shape")
    error_of(server.post("/layers", {"texts": [f"text {i}" for i in range(9)]}), 413, "max_inputs")
    error_of(server.post("/layers", {"texts": TEXTS, "poolings": ["nope"]}), 400)
    error_of(server.post("/layers", {"texts": TEXTS, "poolings": []}), 400, "bad_pooling")


def test_token_similarity_to_cls(server, encoder):
    text = "Angela Merkel visited Paris."
    data = server.post("/layers/tokens", {"text": text}).json()
    hidden = encoder.forward(text, output_hidden_states=True).hidden_states
    h = torch.nn.functional.normalize(torch.stack([x[0] for x in hidden]), dim=-1)
    expected = (h @ h[:, 0, :, None])[..., 0].numpy()
    assert data["tokens"][0] == "[CLS]" and data["states"] == 7
    assert np.abs(np.asarray(data["similarity"]) - expected).max() < 1e-5


def test_model_tree_and_output_shapes(server, encoder):
    from bertkit.model import describe

    tree = server.get("/model").json()
    parts = describe(encoder.model)
    assert [p["name"] for p in tree["parts"]] == [p.name for p in parts]
    assert tree["total"] == sum(p.count for p in parts) == 22_713_216  # as `bertkit inspect` prints
    word = tree["parts"][0]["tensors"][0]
    assert word == {"name": "word_embeddings.weight", "shape": [30522, 384], "count": 11_720_448}
    assert tree["heads"] == {"pooler": True, "mlm": False, "nsp": False}
    out = server.post("/model/outputs", {"text": "The cat sat on the mat."}).json()
    T = len(out["tokens"])
    o = out["outputs"]
    assert o["last_hidden_state"]["shape"] == [1, T, 384] and o["pooler_output"]["shape"] == [1, 384]
    assert o["hidden_states"] == {"count": 7, "shape": [1, T, 384]}
    assert o["attentions"] == {"count": 6, "shape": [1, 12, T, T]}
    assert o["mlm_logits"]["shape"] is None


def test_report_summary_and_chart(server):
    from bertkit.which.saved import load_results

    data = server.get("/report").json()
    text = (REPORT / "report.md").read_text(encoding="utf-8")
    for rec in data["recommendations"]:  # the same advice as report.md
        assert f"- **{rec['task']}** ({rec['data']}): use **{rec['representation']}**" in text
    assert len(data["columns"]) == len(load_results(REPORT)) == 7
    mean = next(r for r in data["rows"] if r["representation"] == "mean")
    assert mean["cells"][0]["text"] == "86.7" and mean["cells"][0]["best"]
    png = server.get("/report/summary.png")
    assert png.headers["content-type"] == "image/png" and png.content == (REPORT / "summary.png").read_bytes()


def test_no_report_and_no_mask_model(bare):
    info = bare.get("/info").json()["inside"]
    assert info["report"] is False and info["fill_mask"] == {"model": None, "note": None}
    assert "--report DIR" in error_of(bare.get("/report"), 404, "no_report")
    error_of(bare.get("/report/summary.png"), 404, "no_report")
    error_of(bare.post("/fill-mask", {"text": "a [MASK] b"}), 400, "missing_head")


def test_fill_mask_with_a_second_model(server, splade):
    info = server.get("/info").json()["inside"]["fill_mask"]
    assert info["model"] == "splade-tiny" and "retrieval" in info["note"]
    text = "Paris is the [MASK] of France."
    got = server.post("/fill-mask", {"text": text, "top_k": 3}).json()["masks"][0]
    assert [(p["token"], pytest.approx(p["score"], abs=1e-6)) for p in got] == splade.fill_mask(text, top_k=3)[0]


def test_report_folder_errors(tmp_path):
    from bertkit.errors import InputError
    from bertkit.which.saved import load_results

    with pytest.raises(InputError, match="no results.jsonl"):
        load_results(tmp_path)
    (tmp_path / "results.jsonl").write_text('{"task": "sts"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 1 is not a report result"):
        load_results(tmp_path)
    # The command line refuses it before loading a model: one line, exit 2.
    assert_user_error(run_process("serve", "--report", tmp_path, "--port", "1"), "line 1 is not a report result")


def test_serve_command_with_report_and_mask_model(tmp_path):
    with serve_process(tmp_path, "--report", str(REPORT), "--mask-model", "splade-tiny", "--log-level", "warning") as s:
        wait_ready(s.url, s.proc)
        info = s.get("/info").json()["inside"]
        assert info["report"] is True and info["fill_mask"]["model"] == "splade-tiny"
        assert s.get("/report").json()["recommendations"][0]["representation"] == "mean"
        assert s.post("/fill-mask", {"text": "Paris is the [MASK] of France."}).status_code == 200
