"""runtime/onnx_attention.py: each layer's spelled-out attention in the exported graph becomes one
com.microsoft.MultiHeadAttention, with the same outputs; a fusion that would change them is not kept."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="exporting graphs needs onnx: pip install 'bertkit[fast]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx backend is not installed: pip install 'bertkit[fast]'")


@pytest.fixture(scope="module")
def spelled_out(tmp_path_factory):
    """The packaged model exported as torch spells it (the fusion turned off), and the padded batch it checks on."""
    from bertkit.runtime import export
    from bertkit.runtime.folder import load_body, open_folder

    folder = open_folder(None)
    model = load_body(folder)
    path = tmp_path_factory.mktemp("graph") / "spelled.onnx"
    mp = pytest.MonkeyPatch()
    mp.setattr(export, "fuse_file", lambda *a, **k: 0)
    try:
        export.export_onnx(model, path, folder.tokenizer)
    finally:
        mp.undo()
    batch = folder.tokenizer.pad(folder.tokenizer.encode(["A man is playing a large flute.", "Hi", "Stocks fell."]))
    feed = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy(),
            "token_type_ids": batch.token_type_ids.numpy()}
    return path, model.config, feed


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def run(path, feed) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_every_layer_is_fused_and_the_outputs_stay(spelled_out, tmp_path):
    from bertkit.runtime.onnx_attention import fuse_file

    path, config, feed = spelled_out
    assert ops(path).count("Softmax") == config.num_hidden_layers and "MultiHeadAttention" not in ops(path)
    fused = tmp_path / "fused.onnx"
    fused.write_bytes(path.read_bytes())
    assert fuse_file(fused, config.num_attention_heads, config.hidden_size, feed) == config.num_hidden_layers
    kinds = ops(fused)
    assert kinds.count("MultiHeadAttention") == config.num_hidden_layers and "Softmax" not in kinds
    assert len(kinds) < len(ops(path)) / 2  # the shape arithmetic around attention is gone too
    real = feed["attention_mask"].astype(bool)
    want, got = run(path, feed), run(fused, feed)
    assert np.abs(want[0] - got[0])[real].max() < 5e-6  # last_hidden_state on real tokens
    assert np.abs(want[1] - got[1])[:, real].max() < 5e-6  # every hidden state
    assert np.abs(want[2] - got[2]).max() < 5e-6  # pooler_output
    assert fuse_file(fused, config.num_attention_heads, config.hidden_size, feed) == 0  # nothing left to fuse


def test_a_fusion_that_changes_the_outputs_is_not_kept(spelled_out, tmp_path):
    from bertkit.runtime.onnx_attention import fuse_file

    path, config, feed = spelled_out
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(path.read_bytes())
    wrong_heads = config.num_attention_heads // 2  # heads of twice the width: other attention, other outputs
    assert fuse_file(copy, wrong_heads, config.hidden_size, feed) == 0
    assert copy.read_bytes() == path.read_bytes()


def test_a_graph_with_external_weights_is_left_as_exported(spelled_out, tmp_path):
    # what torch writes for models over 2 GB: the check from memory could not hold it
    from bertkit.runtime.onnx_attention import fuse_file

    path, config, feed = spelled_out
    big = tmp_path / "big.onnx"
    onnx.save(onnx.load(str(path)), str(big), save_as_external_data=True, location="big.data", size_threshold=0)
    before = big.read_bytes()
    assert fuse_file(big, config.num_attention_heads, config.hidden_size, feed) == 0
    assert big.read_bytes() == before and "MultiHeadAttention" not in ops(big)


@pytest.mark.parametrize("typed", [True, False])
def test_the_int8_graph_quantizes_the_fused_one(spelled_out, tmp_path, typed):
    from bertkit.runtime.export import quantize_int8
    from bertkit.runtime.onnx_attention import fuse_file

    path, config, feed = spelled_out
    fused = tmp_path / "fused.onnx"
    fused.write_bytes(path.read_bytes())
    fuse_file(fused, config.num_attention_heads, config.hidden_size, feed)
    if not typed:  # a graph fused before its attention outputs were typed: quantized all the same
        model = onnx.load(str(fused))
        del model.graph.value_info[:]
        onnx.save(model, str(fused))
    int8 = tmp_path / "int8.onnx"
    quantize_int8(fused, int8)
    kinds = ops(int8)
    # every linear layer quantized (q|k|v, output, two feed-forward per layer, the pooler); attention in float
    assert kinds.count("MatMulInteger") == 4 * config.num_hidden_layers + 1
    assert kinds.count("MultiHeadAttention") == config.num_hidden_layers


def test_the_int8_session_leaves_residual_and_layernorm_apart(monkeypatch, tmp_path):
    # SkipLayerNormFusion measured slower on the int8 graph (runtime/onnxrt.py UNFUSED); fp32 keeps every fusion
    from bertkit import Encoder

    monkeypatch.setenv("BERTKIT_VERDICTS", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    int8 = Encoder.load(precision="int8", backend="onnx")
    fp32 = Encoder.load(backend="onnx")
    assert int8.runner.session.disabled_optimizers == ["SkipLayerNormFusion"]
    assert fp32.runner.session.disabled_optimizers == []
    texts = ["A man is playing a large flute.", "Hi"]
    a, b = int8.encode(texts), fp32.encode(texts)
    assert (a * b).sum(1).min() > 0.98  # vectors near exact (runtime.modes allows int8 0.94)
