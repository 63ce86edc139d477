"""Encoding speed, side by side, in one process on the same texts: bertkit vs sentence-transformers vs transformers.

    .venv/bin/python bench/encode.py                       # `make bench`: all text sets, batch 1 / 32 / 128
    .venv/bin/python bench/encode.py --sets stsb --batches 32 --limit 800 --reps 3 --threads 1

For every text set and batch size, each repetition runs every system once, in turn (sentence-transformers,
transformers, bertkit modes, ...), so that load from other jobs on a shared machine hits all systems alike;
the reported time is the median over repetitions, after one warm-up run each. Printed per system:
sentences/s, tokens/s (real tokens), ratio to sentence-transformers, largest deviation 1 - cosine against
sentence-transformers, STS-B dev Spearman (STS-B set only), process RSS, and achieved GFLOP/s as a fraction
of this CPU's matmul peak measured in the same run. Batch size 1 reports the median latency of one text.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SYSTEMS = ("st", "hf", "bertkit", "bertkit-bf16", "bertkit-int8", "bertkit-onnx", "bertkit-onnx-int8",
           "bertkit-onnx-int8-static")
# Every mode runs as asked, even one this CPU's verdict calls slow (bertkit.runtime.verdicts): measuring them
# is the point.
os.environ["BERTKIT_VERDICTS"] = "off"


def load_sets(names: list[str], limit: int | None, tokenizer) -> dict[str, list[str]]:
    """stsb: the unique sentences of STS-B dev (short); agnews: AG News dev texts (medium); long: AG News
    texts joined into documents of 512 wordpieces (counted with the model's tokenizer, [CLS]/[SEP] included)."""
    from bertkit.data import read_agnews, read_stsb

    if not DATA.is_dir():
        sys.exit(f"dataset folder {DATA} is absent; the benchmark needs ../shared/data beside the repo")
    sets: dict[str, list[str]] = {}
    if "stsb" in names:
        sets["stsb"] = list(dict.fromkeys(s for p in read_stsb(DATA / "stsb" / "dev.tsv") for s in (p.a, p.b)))
    news = [r.text for r in read_agnews(DATA / "agnews" / "dev.tsv")]
    if "agnews" in names:
        sets["agnews"] = news[:1000]
    if "long" in names:
        docs, words = [], []
        for text in news:
            words.extend(text.split())
            ids = tokenizer.encode(" ".join(words), add_special_tokens=True).ids
            if len(ids) >= 512:
                docs.append(tokenizer.decode(ids[1:511]))  # exactly 510 wordpieces + [CLS] + [SEP]
                words = []
            if len(docs) >= 128:
                break
        sets["long"] = docs
    return {k: v[:limit] if limit else v for k, v in sets.items()}


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Best-of-reps GFLOP/s of an n x n matmul: the ceiling the model's GEMMs can reach on this CPU."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def model_flops(lengths: list[int], config) -> float:
    """Forward FLOPs on the real tokens: the six GEMMs per layer plus attention scores and context."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = np.asarray(lengths, dtype=np.float64)
    per_layer = n * (2 * 4 * h * h + 2 * 2 * h * i) + 2 * 2 * n * n * h
    return float(layers * per_layer.sum())


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    status = Path("/proc/self/status").read_text()
    cur = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
    return cur / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_systems(wanted: list[str], max_length: int):
    """name -> encode(texts, batch_size) returning (n, H) float32 mean-pooled vectors."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from bertkit.encoder import Encoder
    from bertkit.model import default_model_dir
    from bertkit.tokenizer import BertTokenizer

    root = default_model_dir()
    systems = {}
    if "st" in wanted:
        st = SentenceTransformer(str(root), device="cpu")
        st.max_seq_length = max_length
        systems["st"] = lambda texts, bs: st.encode(texts, batch_size=bs, convert_to_numpy=True)
    if "hf" in wanted:
        tok, hf = AutoTokenizer.from_pretrained(str(root)), AutoModel.from_pretrained(str(root)).eval()

        @torch.inference_mode()
        def hf_encode(texts, bs):  # plain transformers, in input order (unsorted), mean pooling
            out = []
            for s in range(0, len(texts), bs):
                b = tok(texts[s : s + bs], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                h = hf(**b).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                out.append(((h * m).sum(1) / m.sum(1)).numpy())
            return np.concatenate(out)

        systems["hf"] = hf_encode
    modes = {"bertkit": ("fp32", "torch"), "bertkit-bf16": ("bf16", "torch"), "bertkit-int8": ("int8", "torch"),
             "bertkit-onnx": ("fp32", "onnx"), "bertkit-onnx-int8": ("int8", "onnx"),
             "bertkit-onnx-int8-static": ("int8-static", "onnx")}
    base = None
    for name, (precision, backend) in modes.items():
        if name not in wanted:
            continue
        if base is None:
            base = Encoder.load(device="cpu")
            base.tokenizer = BertTokenizer.from_dir(base.path, max_length=max_length, root=base.path)
        if backend == "torch":
            enc = Encoder.from_model(base.model, base.tokenizer, base.path, "cpu", precision=precision)
        else:  # the folder's cached graph (exported on first use)
            enc = Encoder.load(base.path, "cpu", precision=precision, backend=backend)
            enc.tokenizer = base.tokenizer
        systems[name] = lambda texts, bs, enc=enc: enc.encode(texts, batch_size=bs)
    return systems, (base.model.config if base is not None else None)


def stsb_spearman(vectors: dict[str, np.ndarray], texts: list[str]) -> dict[str, float]:
    from scipy.stats import spearmanr

    from bertkit.data import read_stsb

    where = {t: i for i, t in enumerate(texts)}
    pairs = [p for p in read_stsb(DATA / "stsb" / "dev.tsv") if p.a in where and p.b in where]
    out = {}
    for name, v in vectors.items():
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        sims = [float(v[where[p.a]] @ v[where[p.b]]) for p in pairs]
        out[name] = float(spearmanr(sims, [p.score for p in pairs]).statistic)
    return out


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    from bertkit.model import default_model_dir
    from bertkit.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_dir(default_model_dir(), max_length=512)
    sets = load_sets(args.sets, args.limit, tokenizer.tokenizer)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"threads {torch.get_num_threads()}, matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    systems, config = make_systems(args.systems, max_length=512)
    report = {"threads": args.threads, "peak_gflops": {"fp32": peak32, "bf16": peak16}, "rows": []}
    for set_name, texts in sets.items():
        lengths = [len(e.ids) for e in tokenizer.encode(texts)]
        flops = model_flops(lengths, config) if config else 0.0
        print(f"\n== {set_name}: {len(texts)} texts, "
              f"{sum(lengths)} tokens (mean {np.mean(lengths):.1f}, max {max(lengths)})")
        for bs in args.batches:
            # Batch 1 is a latency measurement: one text per call, over a short sample of the set.
            sample = texts[: args.latency_texts] if bs == 1 else texts
            sample_tokens = sum(lengths[: len(sample)])
            sample_flops = model_flops(lengths[: len(sample)], config) if config else 0.0
            vectors, times = {}, {name: [] for name in systems}
            for name, fn in systems.items():  # warm-up; its vectors are the ones compared
                vectors[name] = fn(sample, bs) if bs > 1 else np.concatenate([fn([t], 1) for t in sample])
            for _ in range(args.reps):
                for name, fn in systems.items():
                    t = time.perf_counter()
                    if bs > 1:
                        fn(sample, bs)
                    else:
                        for text in sample:
                            fn([text], 1)
                    times[name].append(time.perf_counter() - t)
            spear = stsb_spearman(vectors, sample) if set_name == "stsb" and bs > 1 else {}
            ref = vectors.get("st")
            med = {name: statistics.median(v) for name, v in times.items()}
            print(f"-- batch {bs}: {'system':<18} {'sent/s':>8} {'tok/s':>8} {'x ST':>6} {'max 1-cos':>10} "
                  f"{'spearman':>8} {'GFLOP/s':>8} {'% peak':>6} {'ms/text':>8}")
            for name, sec in med.items():
                v = vectors[name]
                dev = None
                if ref is not None:
                    a = ref / np.linalg.norm(ref, axis=1, keepdims=True)
                    b = v / np.linalg.norm(v, axis=1, keepdims=True)
                    dev = float(1 - (a * b).sum(1).min())
                gflops = sample_flops / sec / 1e9
                peak = peak16 if ("bf16" in name or "int8" in name) else peak32
                row = dict(set=set_name, batch=bs, system=name, texts=len(sample), sent_s=len(sample) / sec,
                           tok_s=sample_tokens / sec, x_st=med["st"] / sec if "st" in med else None,
                           max_1_minus_cos=dev, spearman=spear.get(name), gflops=gflops, frac_peak=gflops / peak,
                           ms_per_text=1000 * sec / len(sample), runs=[round(x, 4) for x in times[name]])
                report["rows"].append(row)
                x = f"{row['x_st']:.2f}" if row["x_st"] else "-"
                print(f"   {'':8}{name:<18} {row['sent_s']:8.1f} {row['tok_s']:8.0f} {x:>6} "
                      f"{dev if dev is None else f'{dev:.2e}':>10} "
                      f"{spear.get(name, float('nan')):8.4f} {gflops:8.1f} {100 * gflops / peak:5.1f}% "
                      f"{row['ms_per_text']:8.2f}")
        del flops
    cur, peak_rss = rss_mib()
    report["rss_mib"] = {"current": cur, "peak": peak_rss}
    print(f"\nprocess RSS {cur:.0f} MiB, peak {peak_rss:.0f} MiB (all systems share this one process)")
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["stsb", "agnews", "long"], choices=["stsb", "agnews", "long"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32, 128])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--limit", type=int, default=None, help="first N texts of each set (default: all)")
    p.add_argument("--latency-texts", type=int, default=50, help="texts timed one by one at batch size 1")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", type=Path, default=None, help="also write every row as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report = run(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
