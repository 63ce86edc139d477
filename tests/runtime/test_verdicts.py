"""CPU verdicts (issue 22): a requested precision that this CPU runs slower than exact fp32 falls back to fp32
with a warning naming the reason; the verdicts show in `bertkit inspect`. The "slow" verdict is forced through
the real verdict file (bertkit.runtime.verdicts.verdict_file), not a mock."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import run_process

from bertkit.runtime import verdicts


def force(tmp_path, monkeypatch, modes: dict[str, bool]) -> None:
    """Write this machine's verdicts ({"int8/torch": False, ...}) into the verdict file of a private XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("BERTKIT_VERDICTS", raising=False)
    for mode, fast in modes.items():
        precision, backend = mode.split("/")
        verdicts.record_verdict(precision, backend, fast, f"forced {'fast' if fast else 'slow'} by the test")


def test_flag_rules_follow_the_instruction_sets():
    zen4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
    amx = zen4 | {"amx_bf16", "amx_int8", "amx_tile"}
    avx2 = frozenset({"avx2", "fma"})
    assert verdicts._by_flags("bf16", zen4).fast is True  # measured 1.5-1.7x fp32 (docs/RESULTS.md, issue 22)
    assert verdicts._by_flags("bf16", amx).fast is True
    assert verdicts._by_flags("bf16", avx2).fast is False and "emulated" in verdicts._by_flags("bf16", avx2).why
    assert verdicts._by_flags("int8", zen4).fast is True and verdicts._by_flags("int8-static", amx).fast is True
    assert verdicts._by_flags("int8", frozenset({"avx2"})).fast is None  # unknown: runs as asked
    # OpenVINO's static int8 without VNNI: 0.75-0.80x of fp32 on an AVX2 EPYC (docs/RESULTS.md, issue 30)
    assert verdicts._by_flags("int8-static", frozenset({"avx2"})).fast is False


def test_slow_verdict_falls_back_to_exact_fp32_with_the_reason(encoder, tmp_path, monkeypatch, caplog):
    from bertkit import Encoder

    force(tmp_path, monkeypatch, {"int8/torch": False})
    with caplog.at_level("WARNING", logger="bertkit"):
        enc = Encoder.from_model(encoder.model, encoder.tokenizer, encoder.path, "cpu", precision="int8")
    assert enc.precision == "fp32" and enc.requested_precision == "int8" and enc.runner._int8 is None
    assert "precision int8 on torch would be slower than exact fp32" in caplog.text
    assert "forced slow by the test" in caplog.text
    texts = ["A man is playing a guitar.", "Hi."]
    assert np.array_equal(enc.encode(texts), encoder.encode(texts))  # exact fp32, unchanged


def test_fast_verdict_keeps_the_requested_mode(encoder, tmp_path, monkeypatch):
    from bertkit import Encoder

    force(tmp_path, monkeypatch, {"bf16/torch": True})
    enc = Encoder.from_model(encoder.model, encoder.tokenizer, encoder.path, "cpu", precision="bf16")
    assert enc.precision == "bf16"


def test_onnx_fallback_and_cli_inspect_show_the_verdicts(tmp_path, monkeypatch, packaged_dir, caplog):
    pytest.importorskip("onnxruntime")
    import torch

    from bertkit import Encoder
    from bertkit.model import Bert, BertConfig, save_model
    from bertkit.tokenizer import BertTokenizer

    torch.manual_seed(0)
    folder = tmp_path / "small"
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    save_model(Bert(config), folder)
    BertTokenizer.from_dir(packaged_dir).save(folder)
    force(tmp_path, monkeypatch, {"int8-static/onnx": False, "int8/onnx": True})
    with caplog.at_level("WARNING", logger="bertkit"):
        enc = Encoder.load(folder, backend="onnx", precision="int8-static")
    assert enc.precision == "fp32" and enc.requested_precision == "int8-static"
    assert enc.runner.graph.path.name.endswith("-fp32.onnx") and not list((folder / "onnx").glob("*int8*"))
    assert "precision int8-static on onnx would be slower than exact fp32" in caplog.text
    texts = ["A man is playing a guitar.", "Hi."]
    assert np.abs(enc.encode(texts) - Encoder.load(folder, device="cpu").encode(texts)).max() < 1e-5

    r = run_process("inspect", "--verdicts")
    assert r.returncode == 0, r.stderr.decode()
    shown = json.loads(r.stdout.decode())
    assert shown["machine"] == verdicts.machine_id()
    assert shown["modes"]["int8-static/onnx"] == {"fast": False, "why": "forced slow by the test",
                                                  "source": str(verdicts.verdict_file())}
    assert shown["modes"]["int8/onnx"]["fast"] is True


def test_bertkit_verdicts_off_runs_the_mode_as_asked(encoder, tmp_path, monkeypatch):
    from bertkit import Encoder

    force(tmp_path, monkeypatch, {"int8/torch": False})
    monkeypatch.setenv("BERTKIT_VERDICTS", "off")
    int8 = Encoder.from_model(encoder.model, encoder.tokenizer, encoder.path, "cpu", precision="int8")
    assert int8.precision == "int8"
