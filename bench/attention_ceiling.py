"""Where the packed forward spends its time on 512-token documents, and what a better attention kernel could buy.

    .venv/bin/python bench/attention_ceiling.py                  # 8 x 512 tokens, 1 thread (one encode worker)
    .venv/bin/python bench/attention_ceiling.py --flex           # also torch.compile'd flex_attention (~20 s)
    .venv/bin/python bench/attention_ceiling.py --c-kernel       # also bench/attention_kernel.c (gcc, AVX-512)

`encode` runs one batch per worker thread, each with one intra-op thread, so this measures one thread.
1. A torch.profiler run of `forward_packed` on random 512-token documents: the share of time in the GEMMs
   (aten::addmm), in the flash SDPA kernel and in everything else, and the GFLOP/s each part achieves.
2. The attention alternatives on the model's own fused-QKV layout, same inputs: the flash SDPA kernel (what
   the model uses), explicit baddbmm + softmax + bmm into reused buffers, ONNX Runtime's MultiHeadAttention
   operator (com.microsoft, its own CPU kernel; the q/k/v copies it needs are timed with it), and optionally
   flex_attention compiled by inductor and the hand-written AVX-512 prototype in bench/attention_kernel.c
   (compiled here with gcc). Max difference against flash and the median time of each.
3. The ceiling: the forward's speed-up if attention ran as fast, per FLOP, as the model's own GEMMs.
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F
from gemm_layout import median_ms


def profile_forward(model, batch: int, seq: int, reps: int) -> dict[str, float]:
    """Self CPU time (ms per forward) by part: GEMMs, flash attention, everything else."""
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(1000, 20000, (batch, seq))
    mask = torch.ones_like(ids)
    for _ in range(2):
        model.forward_packed(ids, mask)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            model.forward_packed(ids, mask)
    parts = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        part = "gemm" if event.key == "aten::addmm" else "attention" if "flash_attention" in event.key else "other"
        parts[part] += event.self_cpu_time_total / 1000 / reps  # us -> ms per forward
    return parts


def c_kernel(heads: int, head_dim: int, seq: int):
    """bench/attention_kernel.c compiled with gcc and loaded with ctypes: fn(qkv, out) for equal-length sequences."""
    import ctypes
    import subprocess
    import tempfile
    from pathlib import Path

    if head_dim != 32 or "avx512f" not in Path("/proc/cpuinfo").read_text():
        print("   (C kernel skipped: it needs head_dim 32 and an AVX-512 CPU)")
        return None
    source = Path(__file__).with_name("attention_kernel.c")
    flags = ["-O3", "-mavx512f", "-mavx512dq", "-mfma", "-fPIC", "-shared"]
    with tempfile.TemporaryDirectory() as tmp:  # the loaded library outlives its file
        lib_path = Path(tmp) / "attention_kernel.so"
        subprocess.run(["gcc", *flags, "-o", str(lib_path), str(source)], check=True)
        lib = ctypes.CDLL(str(lib_path))
    pointers = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_float]
    lib.varlen_attention.argtypes = [*pointers, ctypes.c_void_p, ctypes.c_void_p]
    lib.attention_work_floats.argtypes, lib.attention_work_floats.restype = [ctypes.c_long], ctypes.c_long
    work = torch.empty(lib.attention_work_floats(seq))

    def run(qkv: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        starts = torch.arange(0, qkv.shape[0] + 1, seq, dtype=torch.int64)
        scale = 1 / math.sqrt(head_dim)
        lib.varlen_attention(qkv.data_ptr(), starts.data_ptr(), starts.numel() - 1, heads, scale, out.data_ptr(),
                             work.data_ptr())
        return out

    return run


def attention_variants(heads: int, head_dim: int, batch: int, seq: int, reps: int, flex: bool,
                       c: bool = False) -> dict[str, float]:
    hidden, n = heads * head_dim, batch * seq
    qkv = torch.randn(batch * seq, 3 * hidden)  # the model's fused-QKV GEMM output, (N, 3H)
    q, k, v = qkv.view(batch, seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, d) views

    def flash():
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch * seq, hidden)

    scores = torch.empty(heads, seq, seq)
    context = torch.empty(batch * seq, hidden)
    scale = 1 / math.sqrt(head_dim)

    def explicit():  # one sequence at a time: (nh, T, T) scores in a reused buffer, softmax in place
        for b in range(batch):
            torch.baddbmm(scores, q[b], k[b].transpose(1, 2), beta=0, alpha=scale, out=scores)
            torch.softmax(scores, -1, out=scores)
            torch.bmm(scores, v[b], out=context.view(batch, seq, heads, head_dim)[b].transpose(0, 1))
        return context

    variants = {"flash SDPA (model)": flash, "baddbmm + softmax + bmm": explicit}
    session = ort_attention(heads)
    if session is not None:
        def onnx_mha():
            q_, k_, v_ = (qkv[:, i * hidden : (i + 1) * hidden].contiguous().numpy() for i in range(3))
            feeds = {name: a.reshape(batch, seq, hidden) for name, a in zip("qkv", (q_, k_, v_))}
            return torch.from_numpy(session.run(None, feeds)[0]).view(batch * seq, hidden)

        variants["ONNX Runtime MultiHeadAttention"] = onnx_mha
    if flex:
        from torch.nn.attention.flex_attention import flex_attention

        compiled = torch.compile(flex_attention, dynamic=False)
        qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
        variants["flex_attention, compiled"] = lambda: compiled(qc, kc, vc).transpose(1, 2).reshape(n, hidden)
    kernel = c_kernel(heads, head_dim, seq) if c else None
    if kernel is not None:
        variants["AVX-512 C prototype"] = lambda: kernel(qkv, context)
    ref = flash().clone()
    out = {}
    for name, fn in variants.items():
        diff = (fn() - ref).abs().max().item()
        out[name] = median_ms(fn, reps)
        # the machine's speed drifts: also time flash and this kernel alternately, as a paired ratio
        pairs = [median_ms(fn, 3) / median_ms(flash, 3) for _ in range(reps)] if fn is not flash else [1.0]
        print(f"   {name:<32} {out[name]:8.1f} ms   paired time / flash {statistics.median(pairs):5.2f}"
              f"   max |diff| vs flash {diff:.1e}")
    return out


def ort_attention(heads: int):
    """A one-node ONNX Runtime session: com.microsoft MultiHeadAttention on (B, T, H) q, k, v; None without ORT."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, None, None]) for n in "qkv"]
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["o"], domain="com.microsoft", num_heads=heads)
    output = helper.make_tensor_value_info("o", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "attention", inputs, [output])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, ir_version=9, opset_imports=opsets)  # IR 9: what this ORT reads
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8, help="documents per forward (encode's 4,096-token budget: 8)")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--flex", action="store_true", help="also time flex_attention compiled by inductor")
    p.add_argument("--c-kernel", action="store_true", help="also time bench/attention_kernel.c (needs gcc)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from bertkit.model import load_model

    model, _ = load_model(None)
    model.eval()
    c = model.config
    h, n, t, layers = c.hidden_size, args.batch * args.seq, args.seq, c.num_hidden_layers
    gemm_flops = layers * n * (2 * 4 * h * h + 2 * 2 * h * c.intermediate_size)
    att_flops = layers * args.batch * 2 * 2 * t * t * h
    with torch.inference_mode():
        parts = profile_forward(model, args.batch, args.seq, args.reps)
        total = sum(parts.values())
        print(f"forward_packed, {args.batch} x {args.seq} tokens, {torch.get_num_threads()} thread(s): {total:.0f} ms")
        for name, ms in parts.items():
            flops = {"gemm": gemm_flops, "attention": att_flops}.get(name)
            rate = f"{flops / ms / 1e6:6.1f} GFLOP/s" if flops else ""
            print(f"   {name:<10} {ms:8.1f} ms  {100 * ms / total:5.1f}%  {rate}")
        print(f"attention alone, {args.batch} x {c.num_attention_heads} heads x {t} tokens, head_dim {c.head_dim}:")
        attention_variants(c.num_attention_heads, c.head_dim, args.batch, args.seq, args.reps, args.flex,
                           args.c_kernel)
    ideal_att = att_flops / (gemm_flops / parts["gemm"])  # attention at the GEMMs' GFLOP/s
    ceiling = total / (total - parts["attention"] + ideal_att)
    print(f"ceiling: attention at the GEMMs' rate would take {ideal_att:.0f} ms instead of {parts['attention']:.0f};"
          f" the forward would run {ceiling:.2f}x faster")


if __name__ == "__main__":
    main()
