"""Speed of the packed forward per encoder family, as a ratio to sentence-transformers (issue 31).

    .venv/bin/python bench/families.py                          # bert, roberta, distilbert; STS-B + AG News
    .venv/bin/python bench/families.py --families bert roberta distilbert electra mpnet modernbert --reps 5
    .venv/bin/python bench/families.py --json /tmp/families.json

Each family is built by transformers in all-MiniLM-L6-v2's shape (hidden 384, 6 layers, 12 heads, MLP 1536;
random weights, seed 0) and saved as a sentence-transformers folder (mean pooling) with the default model's
WordPiece tokenizer, so every family reads the same token ids and does the same arithmetic: the only thing that
differs is the family's own forward. For each family and text set, sentence-transformers' `encode` and bertkit's
`Encoder.encode` (exact fp32, the packed path) run on the same texts, batch 32, in turns, --reps times each; the
best run of each counts. The question asked: does bertkit's ratio to sentence-transformers on a RoBERTa- or
DistilBERT-shaped model stay at its ratio on the BERT-shaped one ("vs bert" column, 1.00 = the same).
The vectors are checked too (max 1 - cos between the two systems).

Texts: STS-B dev sentences (short) and AG News dev texts (medium) from ../shared/data; nothing is written but
the temporary model folders (deleted at the end) and --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
# family -> (transformers config class, its keyword arguments beyond SHAPE's, the bare body's class)
FAMILIES = {
    "bert": ("BertConfig", dict(SHAPE, max_position_embeddings=512), "BertModel"),
    "roberta": ("RobertaConfig", dict(SHAPE, max_position_embeddings=514, type_vocab_size=1), "RobertaModel"),
    "distilbert": ("DistilBertConfig", dict(dim=384, n_layers=6, n_heads=12, hidden_dim=1536,
                                            max_position_embeddings=512), "DistilBertModel"),
    "electra": ("ElectraConfig", dict(SHAPE, embedding_size=384, max_position_embeddings=512), "ElectraModel"),
    "mpnet": ("MPNetConfig", dict(SHAPE, max_position_embeddings=514), "MPNetModel"),
    "modernbert": ("ModernBertConfig", dict(SHAPE, max_position_embeddings=512, local_attention=128,
                                            global_attn_every_n_layers=3), "ModernBertModel"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def load_sets(names: list[str], limit: int) -> dict[str, list[str]]:
    from bertkit.data import read_agnews, read_stsb

    if not DATA.is_dir():
        sys.exit(f"dataset folder {DATA} is absent; the benchmark needs ../shared/data beside the repo")
    sets = {}
    if "stsb" in names:
        sets["stsb"] = list(dict.fromkeys(s for p in read_stsb(DATA / "stsb" / "dev.tsv") for s in (p.a, p.b)))
    if "agnews" in names:
        sets["agnews"] = [r.text for r in read_agnews(DATA / "agnews" / "dev.tsv")]
    return {name: texts[:limit] for name, texts in sets.items()}


def build(family: str, folder: Path) -> Path:
    """FAMILIES[family] with random weights, saved as a sentence-transformers folder with the default model's
    tokenizer (its [PAD] is id 0, so the config's pad_token_id is 0 for every family)."""
    import transformers

    from bertkit.model import default_model_dir

    config_class, kwargs, model_class = FAMILIES[family]
    src = default_model_dir()
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    extra = {"cls_token_id": 101, "sep_token_id": 102} if family == "modernbert" else {}
    config = getattr(transformers, config_class)(vocab_size=vocab, pad_token_id=0, **kwargs, **extra)
    model = getattr(transformers, model_class)(config).eval()
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False,
         "pooling_mode_max_tokens": False}))
    return folder


def best_rate(encode, texts: list[str], reps: int) -> tuple[float, np.ndarray]:
    """(texts per second of the fastest of `reps` runs, the vectors)."""
    best, vectors = float("inf"), None
    for _ in range(reps):
        start = time.perf_counter()
        vectors = encode(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best, np.asarray(vectors, dtype=np.float32)


def measure(family: str, folder: Path, sets: dict[str, list[str]], reps: int) -> list[dict]:
    from sentence_transformers import SentenceTransformer

    from bertkit.encoder import Encoder

    st = SentenceTransformer(str(folder), device="cpu")
    enc = Encoder.load(folder, device="cpu")
    systems = {"st": lambda t: st.encode(t, batch_size=32, convert_to_numpy=True),
               "bertkit": lambda t: enc.encode(t, batch_size=32, pooling="mean")}
    rows = []
    for name, texts in sets.items():
        for encode in systems.values():
            encode(texts[:64])  # warm-up: threads, allocator, first-call work
        rates, vectors = {}, {}
        for _ in range(reps):  # in turns, so a slow minute of a shared machine falls on both systems
            for system, encode in systems.items():
                rate, vectors[system] = best_rate(encode, texts, 1)
                rates[system] = max(rates.get(system, 0.0), rate)
        a, b = vectors["st"], vectors["bertkit"]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        rows.append({"family": family, "set": name, "texts": len(texts), "st_texts_per_s": round(rates["st"], 1),
                     "bertkit_texts_per_s": round(rates["bertkit"], 1),
                     "x_st": round(rates["bertkit"] / rates["st"], 3),
                     "max_1_minus_cos": float(1 - cos.min())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    bert = {r["set"]: r["x_st"] for r in rows if r["family"] == "bert"}
    lines = ["| family | set | texts | sentence-transformers texts/s | bertkit texts/s | x st | vs bert | max 1-cos |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = f"{r['x_st'] / bert[r['set']]:.2f}" if r["set"] in bert else "-"
        lines.append(f"| {r['family']} | {r['set']} | {r['texts']} | {r['st_texts_per_s']} | "
                     f"{r['bertkit_texts_per_s']} | {r['x_st']:.2f} | {vs} | {r['max_1_minus_cos']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", nargs="+", default=["bert", "roberta", "distilbert"], choices=list(FAMILIES))
    ap.add_argument("--sets", nargs="+", default=["stsb", "agnews"], choices=["stsb", "agnews"])
    ap.add_argument("--limit", type=int, default=800, help="texts per set")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ["BERTKIT_VERDICTS"] = "off"
    sets = load_sets(args.sets, args.limit)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bertkit-families-") as tmp:
        for family in args.families:
            rows += measure(family, build(family, Path(tmp) / family), sets, args.reps)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads(),
                                         "machine": platform.machine(), "processor": platform.processor()}, indent=2))


if __name__ == "__main__":
    main()
