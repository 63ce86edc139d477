"""Compact vectors measured: float32 vs int8 vs binary (+ rescore) vs truncated dimensions, on AG News dev
(10k) and a ~100k-text corpus built at run time from the shared data's texts (never written to the repo).

    .venv/bin/python bench/compact.py --table docs/compact.md --plot docs/compact-recall.png
    .venv/bin/python bench/compact.py --limit 1500 --queries 100     # a quick run while developing

Per corpus, `--queries` texts (seeded) are held out as queries and the rest embedded with `embed-corpus`'s
library (mean pooling, normalised; the packaged model). For each variant an index is built with
`build_index` (build time measured), and the queries are searched in one batch for recall@10 against exact
float32 search (IndexFlat over the full vectors), then one at a time (k=10) for latency (median and p95 of
`--latency-queries` calls, search only, the query vector given). Bytes per vector are the index's codes
(float32 4 x dims, int8 dims, binary dims / 8); rescoring also reads K float rows per query from the
corpus's memory-mapped store, which stays on disk. STS-B dev Spearman (x100) compares the compacted vectors
of each pair: cosine for float32 / truncated (re-normalised) vectors, cosine of the decoded codes for int8
(ranges calibrated on STS-B train sentences, not dev), 1 - 2 * Hamming / dims for binary. The 100k corpus:
AG News dev, then SST-2 train + dev, STS-B train + dev, SICK train + trial, MRPC train and CoNLL-2003
sentences, deduplicated, first 100,000.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.compact")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# name, index kind, build options
VARIANTS = [
    ("float32", "exact", {}),
    ("int8", "int8", {}),
    ("binary", "binary", {}),
    ("binary + rescore 50", "binary", {"rescore": 50}),
    ("binary + rescore 100", "binary", {"rescore": 100}),
    ("binary + rescore 200", "binary", {"rescore": 200}),
    ("dims 256", "exact", {"dimensions": 256}),
    ("dims 128", "exact", {"dimensions": 128}),
    ("dims 64", "exact", {"dimensions": 64}),
]


def agnews_texts(data: Path) -> list[str]:
    from bertkit.data import read_agnews

    return [t.text for t in read_agnews(data / "agnews" / "dev.tsv")]


def big_texts(data: Path, size: int) -> list[str]:
    """AG News first, then the other sets' sentences; deduplicated, the first `size`."""
    from bertkit.data import read_conll, read_mrpc, read_sick, read_sst2, read_stsb

    texts = agnews_texts(data)
    texts += [t.text for f in ("train.tsv", "dev.tsv") for t in read_sst2(data / "sst2" / f)]
    pairs = [*read_stsb(data / "stsb" / "train.tsv"), *read_stsb(data / "stsb" / "dev.tsv"),
             *read_sick(data / "sick" / "train.txt"), *read_sick(data / "sick" / "trial.txt"),
             *read_mrpc(data / "mrpc" / "train.txt")]
    texts += [s for p in pairs for s in (p.a, p.b)]
    texts += [" ".join(s.tokens) for f in ("train.txt", "valid.txt") for s in read_conll(data / "conll2003" / f)]
    seen: dict[str, None] = {}
    for t in texts:
        t = " ".join(t.split())
        if t:
            seen.setdefault(t, None)
    return list(seen)[:size]


def latency_ms(index, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search_vectors(q[None, :], 10)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def embed(enc, texts: list[str], work: Path, name: str) -> Path:
    from bertkit.corpus import CorpusJob, EmbedOptions, embed_corpus

    (work / f"{name}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    job = CorpusJob(work / f"{name}.txt", work / f"{name}-emb", shard_rows=8192, options=EmbedOptions(normalize=True))
    t = time.perf_counter()
    embed_corpus(job, encoder=enc)
    log.info("%s: embedded %d texts in %.0f s", name, len(texts), time.perf_counter() - t)
    return work / f"{name}-emb"


def measure_corpus(enc, name: str, texts: list[str], args, work: Path) -> list[dict]:
    from bertkit.index.folder import Index, build_index, recall_at_k

    rng = np.random.default_rng(0)
    held = set(rng.choice(len(texts), size=min(args.queries, len(texts) // 10), replace=False).tolist())
    queries = enc.encode([texts[i] for i in sorted(held)], normalize=True)
    emb = embed(enc, [t for i, t in enumerate(texts) if i not in held], work, name)
    rows, truth = [], None
    for label, kind, options in VARIANTS:
        t = time.perf_counter()
        path = build_index(emb, work / f"{name}-{label.replace(' ', '_')}", kind=kind, overwrite=True, **options)
        build_s = time.perf_counter() - t
        index = Index.load(path)
        positions = index.search_vectors(queries, 10)[1]
        if truth is None:
            truth = positions  # float32 exact comes first
        med, p95 = latency_ms(index, queries[: args.latency_queries])
        spec = index.info["params"].get("compact", {})
        per_vector = spec.get("bytes_per_vector", 4 * index.info["dim"])
        rows.append({"corpus": name, "n": len(index), "variant": label,
                     "recall@10": round(recall_at_k(positions, truth, 10), 4),
                     "bytes_per_vector": per_vector, "ratio": round(4 * queries.shape[1] / per_vector, 1),
                     "build_s": round(build_s, 2), "median_ms": round(med, 3), "p95_ms": round(p95, 3)})
        log.info("%s", json.dumps(rows[-1]))
    return rows


def sts_scores(enc, data: Path, calibration_texts: int) -> dict[str, float]:
    """STS-B dev Spearman (x100) of each variant's compacted vectors."""
    from scipy.stats import spearmanr

    from bertkit.data import read_stsb
    from bertkit.vectors.compact import calibrate, dequantize, quantize, truncate

    pairs = read_stsb(data / "stsb" / "dev.tsv")
    gold = np.array([p.score for p in pairs])
    a = enc.encode([p.a for p in pairs], normalize=True)
    b = enc.encode([p.b for p in pairs], normalize=True)
    train = [s for p in read_stsb(data / "stsb" / "train.tsv") for s in (p.a, p.b)][:calibration_texts]
    cal = calibrate(enc, train, normalize=True)

    def cos(x, y):
        return (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)

    sims = {"float32": cos(a, b), "int8": cos(dequantize(quantize(a, "int8", cal), "int8", cal),
                                             dequantize(quantize(b, "int8", cal), "int8", cal))}
    bits = [np.unpackbits(quantize(v, "ubinary"), axis=1, count=v.shape[1]) for v in (a, b)]
    sims["binary"] = 1 - 2 * (bits[0] != bits[1]).mean(1)
    for d in (256, 128, 64):
        sims[f"dims {d}"] = cos(truncate(a, d), truncate(b, d))
    return {k: round(100 * float(spearmanr(v, gold).statistic), 2) for k, v in sims.items()}


def sts_of(variant: str, sts: dict[str, float]) -> float:
    return sts["float32" if "rescore" in variant else variant]  # rescoring ranks by the float vectors


def table(rows: list[dict], sts: dict[str, float]) -> str:
    head = ("| corpus | variant | recall@10 | bytes / vector | smaller | build (s) | query median (ms) | "
            "query p95 (ms) | STS-B dev Spearman |\n|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['corpus']} ({r['n']:,}) | {r['variant']} | {r['recall@10']:.3f} | {r['bytes_per_vector']} | "
        f"{r['ratio']}x | {r['build_s']} | {r['median_ms']} | {r['p95_ms']} | {sts_of(r['variant'], sts):.2f} |\n"
        for r in rows)
    return head + body


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    for corpus, marker in zip(dict.fromkeys(r["corpus"] for r in rows), "os^"):
        mine = [r for r in rows if r["corpus"] == corpus]
        ax.scatter([r["bytes_per_vector"] for r in mine], [r["recall@10"] for r in mine], marker=marker,
                   label=f"{corpus} ({mine[0]['n']:,})")
    # One label per variant, beside the mean of its points: the corpora share x, so labels per point collide.
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        y = sum(r["recall@10"] for r in mine) / len(mine)
        ax.annotate(variant, (mine[0]["bytes_per_vector"], y), fontsize=8, xytext=(8, 0), va="center",
                    textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector (index codes, log scale)")
    ax.set_ylabel("recall@10 against exact float32")
    ax.set_title("Compact vectors: recall vs size (all-MiniLM-L6-v2, 384 dims)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--big", type=int, default=100_000, help="size of the second corpus (0: skip it)")
    p.add_argument("--limit", type=int, default=0, help="cap both corpora at N texts (development runs)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--calibration-texts", type=int, default=4000)
    p.add_argument("--table", type=Path, help="write the markdown table here (always printed)")
    p.add_argument("--plot", type=Path, help="recall vs bytes per vector chart (.png)")
    p.add_argument("--replot", type=Path, help="only redraw --plot from the rows of an earlier run's --json")
    p.add_argument("--json", type=Path, help="also write the rows as JSON lines")
    args = p.parse_args()
    if args.replot:
        rows = [json.loads(line) for line in args.replot.read_text().splitlines() if line.strip()]
        return chart(rows, args.plot or args.replot.with_suffix(".png"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from bertkit import Encoder

    enc = Encoder.load(device="cpu")
    corpora = {"AG News dev": agnews_texts(args.data)}
    if args.big:
        corpora[f"mixed {args.big // 1000}k"] = big_texts(args.data, args.big)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, texts in corpora.items():
            texts = texts[: args.limit] if args.limit else texts
            rows += measure_corpus(enc, name.split()[0].lower(), texts, args, Path(tmp))
    for r, name in zip(rows, (n for n, t in corpora.items() for _ in VARIANTS)):
        r["corpus"] = name
    sts = sts_scores(enc, args.data, args.calibration_texts)
    text = table(rows, sts)
    sys.stdout.write(text + "\nSTS-B dev Spearman x100: " + json.dumps(sts) + "\n")
    if args.table:
        args.table.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text("".join(json.dumps({**r, "sts": sts_of(r["variant"], sts)}) + "\n" for r in rows))
    if args.plot:
        chart(rows, args.plot)


if __name__ == "__main__":
    main()
