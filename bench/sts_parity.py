"""STS Spearman of sentence-transformers' own encode of a model, to check `bertkit evaluate sts` against it.

    .venv/bin/python bench/sts_parity.py ../shared/data/stsb/dev.tsv [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import time

from bertkit.data import read_scored_pairs
from bertkit.which.evaluate import correlations, cosine, evaluate_sts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--model", default=None, help="model folder (default: the packaged all-MiniLM-L6-v2)")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from bertkit import Encoder
    from bertkit.model import default_model_dir

    pairs = read_scored_pairs(args.data)
    started = time.perf_counter()
    st = SentenceTransformer(str(args.model or default_model_dir()), device="cpu")
    a = st.encode([p.a for p in pairs], batch_size=64, convert_to_numpy=True)
    b = st.encode([p.b for p in pairs], batch_size=64, convert_to_numpy=True)
    st_spearman, st_pearson = correlations(cosine(a, b), [p.score for p in pairs])
    st_seconds = time.perf_counter() - started
    (ours,) = evaluate_sts(Encoder.load(args.model, device="cpu"), pairs, ["mean"], batch_size=64)
    print(json.dumps({
        "data": args.data, "pairs": len(pairs),
        "sentence_transformers": {"spearman": st_spearman, "pearson": st_pearson, "seconds": st_seconds},
        "bertkit_mean": {"spearman": ours.spearman, "pearson": ours.pearson, "seconds": ours.seconds},
        "spearman_difference": abs(ours.spearman - st_spearman),
    }, indent=2))


if __name__ == "__main__":
    main()
