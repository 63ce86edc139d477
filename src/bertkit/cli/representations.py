"""Commands that show what a model represents: `encode`, `tokens`, `fill-mask`, `nsp`, `similarity`,
`inspect` and `demo`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

from bertkit.cli.common import (
    MAX_LINE_BYTES,
    OUTPUT_SUFFIXES,
    BackendOpt,
    LayersOpt,
    ModelOpt,
    PoolingOpt,
    PrecisionOpt,
    load_encoder,
    read_lines,
    write_vectors,
)
from bertkit.errors import OptionError

log = logging.getLogger("bertkit")


def encode(
    texts: list[str] | None = typer.Argument(None, help="Texts to encode (or use --input)."),
    input: str | None = typer.Option(None, "--input", "-i", help="File with one text a line, or - for stdin."),
    output: Path | None = typer.Option(None, "--output", "-o", help="OUT.npy | OUT.jsonl | OUT.parquet"),
    model: str | None = ModelOpt,
    pooling: str = PoolingOpt,
    layers: list[int] | None = LayersOpt,
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise the vectors."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    template: str | None = typer.Option(None, "--template", help='mask_prompt template, with {text} and [MASK].'),
    truncate: bool = typer.Option(True, "--truncate/--no-truncate",
                                  help="Cut over-long texts (default) or refuse them."),
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="Skip blank / invalid UTF-8 lines of --input."),
    max_line_bytes: int = typer.Option(MAX_LINE_BYTES, "--max-line-bytes", min=1,
                                       help="Longer --input lines are refused unread."),
    whiten: Path | None = typer.Option(None, "--whiten", help="Apply a whitening file from `bertkit whiten` "
                                       "(fit with the same pooling)."),
    precision: str = PrecisionOpt,
    backend: str = BackendOpt,
    sparse: bool = typer.Option(False, "--sparse",
                                help="SPLADE vectors from the masked-LM head (.npz / .jsonl output)."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="With --sparse: keep each text's k heaviest terms."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | int8 | uint8 (need --calibration) | binary | "
                              "ubinary (packed sign bits): compact vectors, see `bertkit calibrate`."),
    dimensions: int | None = typer.Option(None, "--dimensions", help="Keep the first N dimensions, re-normalised."),
    calibration: Path | None = typer.Option(None, "--calibration",
                                            help="int8 / uint8: ranges from `bertkit calibrate`."),
):
    """Sentence vectors: one JSON array per text on stdout, or a .npy / .jsonl / .parquet file.

    With --sparse: SPLADE vectors, one {"indices", "values"} object per text, or a .npz (scipy CSR) / .jsonl file."""
    from bertkit.vectors.compact import save_vectors
    from bertkit.vectors.post import VectorSpec

    suffixes = SPARSE_SUFFIXES if sparse else OUTPUT_SUFFIXES
    if sparse and (whiten is not None or layers):
        raise OptionError("--sparse vectors come from the masked-LM head over the last layer; drop --whiten / --layers")
    spec = VectorSpec(pooling, layers or None, template, whiten, normalize, dimensions, dtype=dtype,
                      calibration=calibration).check(None)  # what needs no model, before it loads
    if sparse and (spec.dtype != "float32" or spec.dimensions is not None):
        raise OptionError("--dtype / --dimensions are for dense vectors, not --sparse")
    if top_k is not None and not sparse:
        raise OptionError("--top-k is for --sparse vectors (their k heaviest terms)")
    if output is not None and output.suffix not in suffixes:
        raise OptionError(f"--output {output}: unknown format {output.suffix!r}; use one of {', '.join(suffixes)}")
    if output is not None and not output.parent.exists():
        raise OptionError(f"--output {output}: folder {output.parent} does not exist; create it first")
    if texts and input:
        raise OptionError("give texts as arguments or with --input, not both")
    if not texts and input is None:
        if sys.stdin.isatty():
            raise OptionError("no texts: pass them as arguments, with --input FILE, or on stdin (--input -)")
        input = "-"
    items = read_lines(input, skip_bad_lines, max_line_bytes) if input is not None else list(texts)
    if not items:
        raise OptionError("no texts to encode: the input is empty")
    enc = load_encoder(model, precision, backend)
    if sparse:
        return write_sparse(enc, items, output, top_k, batch_size, truncate)
    spec = spec.check(enc.hidden_size, enc.tokenizer.mask_token)  # and what needs the model's size
    pooled = enc.encode(
        items, pooling=spec.pooling, layers=spec.layers, normalize=spec.pool_normalize, batch_size=batch_size,
        progress=len(items) >= 256 and sys.stderr.isatty(), template=spec.prompt, truncate=truncate,
    )
    vectors = spec.apply(pooled)
    if output is None:
        for v in vectors:
            sys.stdout.write(json.dumps([round(float(x), 7) for x in v] if v.dtype.kind == "f" else v.tolist()) + "\n")
    elif spec.dtype != "float32" or spec.dimensions is not None:
        save_vectors(output, items, vectors, dtype, spec.calibration)  # the dtype recorded, the ranges beside
    else:
        write_vectors(output, items, vectors)
        log.info("wrote %d x %d vectors to %s", *vectors.shape, output)


SPARSE_SUFFIXES = (".npz", ".jsonl")


def write_sparse(enc, items: list[str], output: Path | None, top_k: int | None, batch_size: int,
                 truncate: bool) -> None:
    """`encode --sparse`: SPLADE rows as JSON on stdout, or a scipy .npz / a .jsonl file (temporary file, rename)."""
    import os

    from scipy.sparse import save_npz

    m = enc.encode_sparse(items, top_k=top_k, batch_size=batch_size, truncate=truncate)
    rows = ({"indices": m.indices[m.indptr[i] : m.indptr[i + 1]].tolist(),
             "values": [round(float(v), 6) for v in m.data[m.indptr[i] : m.indptr[i + 1]]]} for i in range(m.shape[0]))
    if output is None:
        sys.stdout.writelines(json.dumps(r) + "\n" for r in rows)
        return
    from bertkit.outputs import writing

    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}{output.suffix}")
    try:
        with writing(output):  # a full disk or a read-only folder: one line, exit 2
            if output.suffix == ".npz":
                save_npz(tmp, m)
            else:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps({"text": t, **r}, ensure_ascii=False) + "\n" for t, r in zip(items, rows))
            os.replace(tmp, output)
    finally:
        if tmp.parent.is_dir() and os.access(tmp.parent, os.W_OK):
            tmp.unlink(missing_ok=True)
    log.info("wrote %d sparse vectors (%d non-zeros) to %s", m.shape[0], m.nnz, output)


def expand(
    text: str = typer.Argument(..., help="The text to expand."),
    top_k: int = typer.Option(20, "--top-k", "-k", min=1, help="How many terms."),
    model: str | None = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per term."),
):
    """What the [MASK] head reads into a text: its top SPLADE expansion terms with weights (needs the head)."""
    from bertkit.vectors.sparse import expansion_terms

    enc = load_encoder(model)
    terms = expansion_terms(enc, text, top_k=top_k)
    if as_json:
        sys.stdout.writelines(json.dumps({"term": t, "weight": round(w, 4)}) + "\n" for t, w in terms)
        return
    sys.stdout.write(f"expansion terms of {text!r} "
                     f"({enc.name}, SPLADE: max over tokens of log(1 + ReLU(MLM logit))):\n")
    sys.stdout.write("  " + "  ".join(f"{t} {w:.2f}" for t, w in terms) + "\n")


def tokens(
    text: str = typer.Argument(..., help="Text to tokenize."),
    model: str | None = ModelOpt,
    vectors: bool = typer.Option(False, "--vectors", help="Also print each token's vector (JSON lines)."),
):
    """The wordpieces of a text with their character offsets (and, with --vectors, their vectors)."""
    enc = load_encoder(model)
    (tv,) = enc.encode_tokens([text])
    if vectors:
        for tok, off, vec in zip(tv.tokens, tv.offsets, tv.vectors):
            sys.stdout.write(json.dumps({"token": tok, "start": off[0], "end": off[1],
                                         "vector": vec.round(6).tolist()}) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("#", "token", "start", "end", "text span")
    for i, (tok, (s, e)) in enumerate(zip(tv.tokens, tv.offsets)):
        table.add_row(str(i), tok, str(s), str(e), text[s:e])
    Console().print(table)


def fill_mask(
    text: str = typer.Argument(..., help='Text with [MASK], e.g. "The [MASK] sat on the mat."'),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    model: str | None = ModelOpt,
):
    """Predict the tokens behind each [MASK] with the masked-LM head."""
    enc = load_encoder(model)
    for n, preds in enumerate(enc.fill_mask(text, top_k=top_k), start=1):
        sys.stdout.write(f"[MASK] #{n}:\n")
        for tok, p in preds:
            sys.stdout.write(f"  {tok:<15} {p:.4f}\n")


def nsp(a: str = typer.Argument(...), b: str = typer.Argument(...), model: str | None = ModelOpt):
    """Probability that sentence B follows sentence A (the next-sentence-prediction head)."""
    enc = load_encoder(model)
    sys.stdout.write(f"{enc.next_sentence(a, b):.4f}\n")


def similarity(
    a: str = typer.Argument(...),
    b: str = typer.Argument(...),
    model: str | None = ModelOpt,
    pooling: str = PoolingOpt,
    layers: list[int] | None = LayersOpt,
):
    """Cosine similarity of two texts under a pooling."""
    from bertkit.pooling import check_pooling

    check_pooling(pooling, layers or None)
    enc = load_encoder(model)
    sys.stdout.write(f"{enc.similarity(a, b, pooling=pooling, layers=layers or None):.4f}\n")


def inspect(model: str | None = ModelOpt,
            verdicts: bool = typer.Option(False, "--verdicts", help="Only this CPU's precision verdicts, as JSON.")):
    """The model's module tree with shapes and parameter counts per part, the totals, and which precision modes
    are faster than fp32 on this CPU (a slower one falls back to fp32)."""
    from rich.console import Console
    from rich.tree import Tree

    from bertkit.model import describe
    from bertkit.runtime.verdicts import all_verdicts

    if verdicts:
        sys.stdout.write(json.dumps(all_verdicts(), indent=2) + "\n")
        return

    enc = load_encoder(model)
    c = enc.model.config
    title = (
        f"[bold]{enc.name}[/]  {c.family}: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
        f"{c.num_attention_heads} heads x {c.head_dim}, feed-forward {c.intermediate_size}, "
        f"vocab {c.vocab_size}, {c.max_position_embeddings} positions (tokenizer limit {enc.max_length})"
    )
    tree = Tree(title)
    total = 0
    for part in describe(enc.model):
        total += part.count
        note = f"  ({part.note})" if part.note else ""
        branch = tree.add(f"[bold]{part.name}[/]  {part.count:,} parameters{note}")
        for name, shape, count in part.tensors:
            branch.add(f"{name}  {tuple(shape)}  {count:,}")
    console = Console()
    console.print(tree)
    heads = {"pooler": enc.model.has_pooler, "masked-LM head": enc.model.has_mlm, "NSP head": enc.model.has_nsp}
    console.print("heads: " + ", ".join(f"{k} {'present' if v else 'absent'}" for k, v in heads.items()))
    console.print(f"[bold]total parameters: {total:,}[/]")
    v = all_verdicts()
    console.print(f"precision verdicts on this CPU ({v['cpu']}; {', '.join(v['flags']) or 'no VNNI/BF16/AMX flags'}): "
                  + "; ".join(f"{mode} {speed(m['fast'])} ({m['why']})" for mode, m in v["modes"].items()),
                  soft_wrap=True)


def speed(fast: bool | None) -> str:
    """A precision verdict in words: fast, slow (with its fallback) or not yet measured."""
    return "fast" if fast else "slow, falls back to fp32" if fast is False else "unknown"


DEMO_PAIRS = [
    ("A man is playing a guitar.", "Someone is playing an instrument."),
    ("A man is playing a guitar.", "The stock market fell sharply today."),
    ("The cat sat on the mat.", "A cat is sitting on a rug."),
    ("The cat sat on the mat.", "Quantum computers use qubits."),
]


def demo(model: str | None = ModelOpt):
    """A short tour: [CLS] vs pooler vs mean similarity for a few sentence pairs."""
    from rich.console import Console
    from rich.table import Table

    enc = load_encoder(model)
    poolings = ["cls", "pooler", "mean"] if enc.model.has_pooler else ["cls", "mean"]
    a, b = [p[0] for p in DEMO_PAIRS], [p[1] for p in DEMO_PAIRS]
    sims = {p: enc.similarity(a, b, pooling=p) for p in poolings}
    table = Table("sentence A", "sentence B", *poolings, title="cosine similarity by representation")
    for i, (x, y) in enumerate(DEMO_PAIRS):
        table.add_row(x, y, *[f"{sims[p][i]:.3f}" for p in poolings])
    console = Console()
    console.print(table)
    gap = {p: (sims[p][0] + sims[p][2] - sims[p][1] - sims[p][3]) / 2 for p in poolings}
    best = max(gap, key=gap.get)
    console.print(
        "Related pairs should score high and unrelated ones low. Gap between related and unrelated pairs: "
        + ", ".join(f"{p} {g:.3f}" for p, g in gap.items())
        + f". Here [bold]{best}[/] separates them best; raw [CLS] and the pooler were trained for other jobs "
        "(classification handle, next-sentence prediction), not for cosine similarity."
    )
