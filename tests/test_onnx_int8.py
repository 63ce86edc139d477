"""Calibrated static int8 (issue 22): `precision="int8-static"` on the onnx backend stays within its stated
tolerance of the exact fp32 vectors, and records its calibration next to the graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import run_process

pytest.importorskip("onnxruntime")

from bertkit.backends import TOLERANCE
from bertkit.onnx_int8 import DEFAULT_SOURCE, default_texts, texts_sha256

# Mixed lengths, one word to a long sentence (as tests/test_speed.py holds the other modes to).
TEXTS = [
    "Hi.", "A man is playing a guitar.", "OK", "Cats sleep.", "Quantum computers use qubits.",
    "The stock market fell sharply today after the central bank raised interest rates by half a point.",
    "A woman is slicing an onion in a small kitchen while the radio plays an old song about the sea.",
    "Someone is playing an instrument on the street corner for coins.", "Two dogs fight over a red ball.",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory, packaged_dir) -> Path:
    """A copy of the packaged all-MiniLM-L6-v2 (its graphs are cached in the copy, not in site-packages)."""
    folder = tmp_path_factory.mktemp("minilm") / "m"
    shutil.copytree(packaged_dir, folder, ignore=shutil.ignore_patterns("onnx"))
    return folder


def test_default_calibration_set_is_a_few_hundred_plain_sentences():
    texts = default_texts()
    assert len(texts) == 300 and len(set(texts)) == 300
    lengths = [len(t.split()) for t in texts]
    assert min(lengths) <= 3 and max(lengths) >= 40  # short and long texts both set the ranges


def test_int8_static_is_within_tolerance_of_exact_and_records_its_calibration(minilm, encoder):
    from bertkit import Encoder

    exact = encoder.encode(TEXTS, normalize=True)
    enc = Encoder.load(minilm, backend="onnx", precision="int8-static")
    assert enc.precision == "int8-static" and enc.graph.path.name.endswith("-int8-static.onnx")
    got = enc.encode(TEXTS, normalize=True)
    cos = cosines(exact, got)
    assert cos.min() >= TOLERANCE["int8-static", "onnx"], cos.min()
    assert cos.min() < 1 - 1e-6  # it really ran quantized
    cal = json.loads(Path(str(enc.graph.path) + ".json").read_text())["calibration"]
    assert cal["texts"] == 300 and cal["source"] == DEFAULT_SOURCE
    assert cal["texts_sha256"] == texts_sha256(default_texts())
    assert "QDQ" in cal["method"] and cal["fp32_matmuls"] == 18  # 6 layers x (2 attention products + FFN down)


def test_export_calibrates_on_the_users_texts(minilm, tmp_path, encoder):
    texts = [f"Sentence number {i} is about {w}." for i, w in enumerate(["cats", "rain", "money", "music"] * 10)]
    file = tmp_path / "cal.txt"
    file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    r = run_process("export", "--model", minilm, "--precision", "int8-static", "--calibration", file)
    assert r.returncode == 0, r.stderr.decode()
    (line,) = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert line["precision"] == "int8-static"
    assert line["calibration"]["texts"] == 40 and line["calibration"]["source"] == str(file)
    assert line["calibration"]["texts_sha256"] == texts_sha256(texts)
    from bertkit import Encoder

    enc = Encoder.load(minilm, backend="onnx", precision="int8-static")  # the recalibrated graph, reused
    assert enc.graph.record["calibration"]["texts_sha256"] == texts_sha256(texts)
    assert cosines(encoder.encode(TEXTS), enc.encode(TEXTS)).min() >= TOLERANCE["int8-static", "onnx"] - 0.05
