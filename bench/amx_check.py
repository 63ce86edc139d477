"""Which CPU kernels bertkit's reduced-precision modes really run: AMX, AVX-512 VNNI / BF16, or plain AVX.

    .venv/bin/python bench/amx_check.py                # prints a markdown table; --json FILE writes it too

Issue 30 asks that the AMX claim be checked, not assumed. Per mode, on this CPU:
- torch bf16 (`--precision bf16`): one encode in a fresh process with ONEDNN_VERBOSE=1; oneDNN names the ISA of
  every matmul it runs ("brg_matmul:avx512_core_amx", ...). The packed forward's matmuls under autocast go there.
- torch int8 (dynamic quantization): quantized Linear runs on FBGEMM, whose kernels are AVX2 / AVX-512 VNNI, never
  AMX; oneDNN then reports no GEMM at all (its element-wise kernels are not counted: their ISA label is the CPU's
  highest, AMX or not).
- int8-static (OpenVINO): the compiled model's runtime graph names each node's primitive ("brgemm_avx512_amx",
  "jit_avx512_amx_I8", ...): counted per kind.
- onnx int8 (ONNX Runtime's dynamic quantization): MLAS picks its U8S8 GEMM kernel at start; not reported by
  ONNX Runtime, so not claimed here.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["A man is playing a guitar on the stage tonight.", "Two dogs run across a green field."] * 16
ONEDNN_SNIPPET = """
import sys
from bertkit import Encoder
enc = Encoder.load(device="cpu", precision=sys.argv[1])
enc.encode({texts!r}, batch_size=32)
print("precision", enc.precision)
"""


def cpu_flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.MULTILINE).group(1).split()) if "flags" in text else set()
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512_vnni", "avx_vnni")))


def onednn_kernels(precision: str) -> dict:
    """oneDNN's executed primitives and their ISA in a fresh process encoding TEXTS at `precision`."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", ONEDNN_SNIPPET.format(texts=TEXTS), precision], env=env,
                       capture_output=True, text=True, timeout=600, check=True)
    kinds = collections.Counter()
    for line in r.stdout.splitlines():
        parts = line.split(",")
        if line.startswith("onednn_verbose") and "exec" in parts[:4]:
            i = parts.index("exec")
            if parts[i + 2] in ("matmul", "inner_product", "convolution"):  # the GEMMs, not element-wise ops
                kinds[f"{parts[i + 2]} {parts[i + 3]}"] += 1  # primitive kind, implementation (names the ISA)
    ran = next((ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("precision ")), "?")
    return {"precision_run": ran, "kernels": dict(kinds.most_common())}


def openvino_kernels() -> dict:
    """The primitives OpenVINO chose for bertkit's int8-static graph (compiled as bertkit compiles it)."""
    from bertkit import Encoder

    enc = Encoder.load(device="cpu", backend="onnx", precision="int8-static")
    if enc.precision != "int8-static":
        return {"precision_run": enc.precision, "kernels": {}}
    enc.encode(TEXTS, batch_size=32)  # with dynamic shapes the primitives are chosen at the first run
    kinds = collections.Counter()
    for compiled in enc.runner.session._compiled.values():
        for op in compiled.get_runtime_model().get_ops():
            info = {k: v.astype(str) for k, v in op.get_rt_info().items() if k in ("layerType", "primitiveType")}
            if info.get("layerType") in ("FullyConnected", "MatMul"):
                kinds[f"{info['layerType']} {info['primitiveType']}"] += 1
    return {"precision_run": enc.precision, "kernels": dict(kinds.most_common())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = {"torch bf16": onednn_kernels("bf16"), "torch int8": onednn_kernels("int8")}
    try:
        rows["onnx int8-static (OpenVINO)"] = openvino_kernels()
    except Exception as e:  # noqa: BLE001 - the openvino extra may be missing: say so, keep the other rows
        rows["onnx int8-static (OpenVINO)"] = {"precision_run": "-", "kernels": {"unavailable": str(e)[:200]}}
    print(f"CPU flags: {' '.join(cpu_flags()) or '(no AMX / AVX-512 BF16 / VNNI)'}\n")
    print("| mode | ran as | matmul kernels (count) | AMX |\n|---|---|---|---|")
    for mode, row in rows.items():
        kernels = ", ".join(f"`{k}` ({n})" for k, n in row["kernels"].items()) or "(none reported)"
        amx = "yes" if any("amx" in k for k in row["kernels"]) else "no"
        print(f"| {mode} | {row['precision_run']} | {kernels} | {amx} |")
    if args.json:
        args.json.write_text(json.dumps({"flags": cpu_flags(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
