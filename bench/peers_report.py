"""bench/peers.py's markdown: the CPU (lscpu flags), each family's best mode per workload, every row, the servers."""

from __future__ import annotations

import os
import platform
import subprocess

REFERENCE = "st6-torch-fp32"
FLAGS = ("amx_tile", "amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
STS_POINTS = 0.3  # equal accuracy: at most this far below exact, in STS points (Spearman x 100)
SAME_WORK = 0.95  # a row whose mean cosine to exact is lower did other work (e.g. truncated shorter): not compared
# workload -> (the row's measure, unit, True when higher is better)
MEASURES = {"stsb": ("sent_s", "sent/s", True), "agnews": ("sent_s", "sent/s", True),
            "long": ("sent_s", "sent/s", True), "batch-1": ("p99_ms", "ms p99", False),
            "cold-start": ("seconds", "s", False), "peak-rss": ("mib", "MiB", False)}
NAMES = {"stsb": "short (STS-B)", "agnews": "medium (AG News)", "long": "512-token documents",
         "batch-1": "batch-1 latency", "cold-start": "cold start", "peak-rss": "peak memory"}


def cpu_info() -> dict:
    """Model name and the flags that decide which mode wins (AMX, AVX512-BF16, VNNI), from lscpu."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return {"model": fields.get("Model name", platform.processor()).strip(), "cpus": os.cpu_count(),
            "flags": {f: f in flags for f in FLAGS}}


def family(system: str) -> str:
    head = system.split("-", 1)[0]
    return {"st6": "sentence-transformers", "st3": "sentence-transformers"}.get(head, head)


def accurate(report: dict) -> tuple[set[str] | None, dict[str, float]]:
    """Systems within STS_POINTS of exact on STS-B dev (None: no STS-B row to judge by), and every Spearman."""
    spear = {r["system"]: r["spearman"] for r in report["rows"] if r["workload"] == "stsb" and r.get("spearman")}
    if REFERENCE not in spear:
        return None, spear
    floor = spear[REFERENCE] - STS_POINTS / 100
    return {s for s, v in spear.items() if v >= floor}, spear


def best_table(report: dict) -> list[str]:
    ok, _ = accurate(report)
    families = ["bertkit", "sentence-transformers", "fastembed", "infinity"]
    out = ["| workload | " + " | ".join(families) + " | bertkit / best peer |", "|---" * (len(families) + 2) + "|"]
    for workload, (key, unit, higher) in MEASURES.items():
        rows = [r for r in report["rows"] if r["workload"] == workload and (ok is None or r["system"] in ok)
                and (r.get("cos_mean") is None or r["cos_mean"] >= SAME_WORK)]
        if not rows:
            continue
        best = {}
        for fam in families:
            mine = [r for r in rows if family(r["system"]) == fam]
            if mine:
                best[fam] = (max if higher else min)(mine, key=lambda r: r[key])
        cells = [f"{best[f]['system'].split('-', 1)[1]}: {best[f][key]:.1f}" if f in best else "-" for f in families]
        peers = [best[f][key] for f in families[1:] if f in best]
        ratio = "-"
        if "bertkit" in best and peers:
            top = max(peers) if higher else min(peers)
            ratio = f"{best['bertkit'][key] / top:.2f}×"
        out.append(f"| {NAMES[workload]} ({unit}) | " + " | ".join(cells) + f" | {ratio} |")
    return out


def all_rows(report: dict) -> list[str]:
    _, spear = accurate(report)
    out = ["| workload | system | value | STS-B Spearman | cos min / mean vs exact |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        key, unit, _ = MEASURES[r["workload"]]
        extra = f", p50 {r['p50_ms']:.1f} ms" if r["workload"] == "batch-1" else ""
        cos = f"{r['cos_min']:.4f} / {r['cos_mean']:.5f}" if r.get("cos_min") is not None else ""
        sp = f"{100 * spear[r['system']]:.2f}" if r["system"] in spear else ""
        out.append(f"| {NAMES[r['workload']]} | {r['system']} | {r[key]:.1f} {unit}{extra} | {sp} | {cos} |")
    return out


# Servers set side by side (bench/peers_serve.py): exact fp32 on torch on both sides, then dynamic int8 on ONNX
# Runtime on both sides (the fastest server mode of each within 0.3 STS points of exact).
PAIRS = (("bertkit-serve", "infinity-v2"), ("bertkit-serve-int8", "infinity-v2-int8"))


def server_table(servers: dict) -> list[str]:
    out = ["| clients | server | requests/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    rows = sorted(servers["rows"], key=lambda r: (r["clients"], r["server"]))
    for r in rows:
        out.append(f"| {r['clients']} | {r['server']} | {r['requests_s']:.1f} "
                   f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    by = {(r["server"], r["clients"]): r for r in rows}
    for ours, theirs in PAIRS:
        for c in sorted({r["clients"] for r in rows}):
            if (ours, c) in by and (theirs, c) in by:
                b, i = by[(ours, c)], by[(theirs, c)]
                out.append(f"\n{c} clients: {ours} / {theirs} requests/s {b['requests_s'] / i['requests_s']:.2f}×, "
                           f"p99 {b['p99_ms'] / i['p99_ms']:.2f}×")
    mem = ", ".join(f"{k} {v:.0f} MiB" for k, v in servers["peak_rss_mib"].items())
    return [*out, f"\nServers' peak RSS: {mem}."]


def markdown(report: dict) -> str:
    cpu = report["cpu"]
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu["flags"].items())
    lines = [f"CPU: {cpu['model']}, {cpu['cpus']} CPUs, {report['threads']} threads; lscpu flags: {flags}.", ""]
    ok, spear = accurate(report)
    gate = (f"within {STS_POINTS} STS points of exact ({REFERENCE}, {100 * spear[REFERENCE]:.2f})"
            if ok is not None else "no STS-B row: not gated by accuracy")
    lines += [f"Each family's best mode {gate} (and mean cosine to exact >= {SAME_WORK} on that workload):", "",
              *best_table(report), "", "Every row:", "", *all_rows(report)]
    if report.get("servers"):
        lines += ["", "Servers (same model, same threads, loopback):", "", *server_table(report["servers"])]
    problems = {**{f"export {k}": v for k, v in report["exports_failed"].items()}, **report["errors"],
                **(report.get("servers") or {}).get("errors", {})}
    if problems:
        lines += ["", "Did not run:", ""] + [f"- {k}: {v.splitlines()[-1] if v else ''}" for k, v in problems.items()]
    return "\n".join(lines) + "\n"
