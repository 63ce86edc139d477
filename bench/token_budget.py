"""Token budget (`encode(max_tokens=...)`) against sentence-transformers, interleaved, on STS-B and 512-token docs.

    .venv/bin/python bench/token_budget.py

Each repetition runs sentence-transformers and bertkit at each budget in turn (batch size 32, default workers);
prints the median throughput of each as a ratio to sentence-transformers'. Used to pick DEFAULT_MAX_TOKENS.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encode import load_sets


def main() -> None:
    from sentence_transformers import SentenceTransformer

    from bertkit import Encoder
    from bertkit.model import default_model_dir
    from bertkit.tokenizer import BertTokenizer

    enc = Encoder.load(device="cpu")
    enc.tokenizer = BertTokenizer.from_dir(default_model_dir(), max_length=512, root=enc.path)
    st = SentenceTransformer(str(default_model_dir()), device="cpu")
    st.max_seq_length = 512  # the long documents need 512 for every system
    sets = load_sets(["long", "stsb"], None, enc.tokenizer.tokenizer)
    for name, texts in sets.items():
        systems = {"st": lambda texts=texts: st.encode(texts, batch_size=32)}
        for budget in (2048, 3072, 4096):
            systems[f"bertkit max_tokens={budget}"] = lambda texts=texts, b=budget: enc.encode(
                texts, batch_size=32, max_tokens=b
            )
        for run in systems.values():  # warm-up
            run()
        times: dict[str, list[float]] = {k: [] for k in systems}
        for _ in range(3):
            for k, run in systems.items():
                t = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t)
        base = statistics.median(times["st"])
        print(name, {k: round(base / statistics.median(v), 3) for k, v in times.items()}, flush=True)


if __name__ == "__main__":
    main()
