"""One embedding system in one process, driven by bench/peers.py over stdin/stdout (JSON lines).

    python bench/peers_worker.py --system st6-openvino-int8-static --model DIR --work DIR --threads 2
    python bench/peers_worker.py --system ... --cold "hello world"     # load, print one vector, exit
    python bench/peers_worker.py --prepare st3 --model DIR --work DIR  # the untimed exports, once

It runs in whichever virtual environment the system needs (bertkit's .venv, .venv-bench for
sentence-transformers 6 and fastembed, .venv-infinity for infinity-emb and sentence-transformers 3's ONNX
backend), so it imports numpy and the standard library only, and each system's library inside its loader.
Commands, one JSON object a line: {"op": "encode", "texts": FILE, "batch": 32, "save": FILE|null} answers
{"seconds": s}; {"op": "latency", "texts": FILE, "warm": bool} answers {"seconds": [one per text]} (warm: one
untimed call first); {"op": "rss"} answers {"peak_mib": m}. Everything the libraries print goes to stderr:
stdout carries the protocol alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Encode = Callable[[list[str], int], np.ndarray]  # (texts, batch size) -> (n, H) vectors
CLEANUP: list[Callable[[], None]] = []  # run before the worker exits


def cpu_flags() -> set[str]:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.split(":", 1)[1].split())


# -- the untimed exports every system loads from (in --work; made once, reused by later runs) --------------

def prepare_st3(model: Path, work: Path) -> None:
    """sentence-transformers 3 (the line infinity-emb pins; its ONNX backend needs optimum-onnx, which
    sentence-transformers 6's transformers 5 cannot import): model.onnx, the O3-optimised graph and the dynamic
    int8 graph, in work/st_onnx/onnx/."""
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    out = work / "st_onnx"
    if (out / "onnx" / "model_qint8.onnx").is_file():
        return
    SentenceTransformer(str(model), backend="onnx", device="cpu").save_pretrained(str(out))
    st = SentenceTransformer(str(out), backend="onnx", device="cpu")
    export_optimized_onnx_model(st, "O3", str(out))
    # The int8 config that matches this CPU's instructions, as sentence-transformers' docs advise.
    config = "avx512_vnni" if "avx512_vnni" in cpu_flags() else "avx2"
    export_dynamic_quantized_onnx_model(st, config, str(out))
    # named model_qint8_avx512_vnni.onnx, or model_quint8_avx2.onnx (unsigned activations on AVX2)
    next((out / "onnx").glob(f"model_*int8_{config}.onnx")).rename(out / "onnx" / "model_qint8.onnx")


def prepare_st6(model: Path, work: Path) -> None:
    """sentence-transformers 6's OpenVINO IR, and its static int8 IR the way export_static_quantized_openvino_model
    makes it (OVQuantizer, inputs padded to 384) but calibrated on bertkit's local calibration_texts.txt
    instead of its default hub dataset (GLUE SST-2)."""
    from datasets import Dataset
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import SentenceTransformer

    out = work / "st_ov"
    final = out / "openvino" / "openvino_model_qint8_quantized.xml"
    if final.is_file():
        return
    SentenceTransformer(str(model), backend="openvino", device="cpu").save_pretrained(str(out))
    st = SentenceTransformer(str(out), backend="openvino", device="cpu")
    texts = [t.strip() for t in (work / "calibration_texts.txt").read_text().splitlines() if t.strip()]
    config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(texts)))
    quantizer = OVQuantizer.from_pretrained(st[0].auto_model)
    data = Dataset.from_dict(dict(st.tokenizer(texts, padding="max_length", max_length=384, truncation=True)))
    tmp = out / "qint8_tmp"
    quantizer.quantize(data, save_directory=str(tmp), ov_config=config)
    for suffix in ("xml", "bin"):
        (tmp / "openvino" / f"openvino_model.{suffix}").rename(final.with_suffix(f".{suffix}"))
    shutil.rmtree(tmp)


# -- loaders: system name -> encode function ------------------------------------------------------------------

def load_bertkit(mode: str, model: Path, threads: int) -> Encode:
    from bertkit.encoder import Encoder
    from bertkit.runtime.seam import set_default_threads
    from bertkit.tokenizer import BertTokenizer

    os.environ["BERTKIT_VERDICTS"] = "off"  # every mode runs as asked: measuring them is the point
    backend, precision = mode.split("-", 1)
    set_default_threads(threads)  # torch too, should it load; the onnx modes do not import it (cold start)
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    enc = Encoder.load(str(model), device="cpu", precision=precision, backend=backend)
    # 512 tokens, as every peer here is set to (the model's own limit is 256): the long set is 512 long
    enc.tokenizer = BertTokenizer.from_dir(enc.path, max_length=512, root=enc.path)
    return lambda texts, bs: enc.encode(texts, batch_size=bs)


def load_st(mode: str, model: Path, work: Path, threads: int) -> Encode:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    if mode in ("torch-fp32", "torch-bf16"):
        kwargs = {"torch_dtype": torch.bfloat16} if mode == "torch-bf16" else {}
        st = SentenceTransformer(str(model), device="cpu", model_kwargs=kwargs)
    elif mode.startswith("onnx-"):  # sentence-transformers 3 (see prepare_st3)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        name = {"onnx-fp32": "model.onnx", "onnx-O3": "model_O3.onnx", "onnx-int8": "model_qint8.onnx"}[mode]
        st = SentenceTransformer(str(work / "st_onnx"), backend="onnx", device="cpu",
                                 model_kwargs={"file_name": name, "session_options": options})
    else:
        name = {"openvino-fp32": "openvino_model.xml",
                "openvino-int8-static": "openvino_model_qint8_quantized.xml"}[mode]
        st = SentenceTransformer(str(work / "st_ov"), backend="openvino", device="cpu",
                                 model_kwargs={"file_name": f"openvino/{name}",
                                               "ov_config": {"INFERENCE_NUM_THREADS": threads}})
    st.max_seq_length = 512
    return lambda texts, bs: st.encode(texts, batch_size=bs, convert_to_numpy=True).astype(np.float32)


def load_st_pool(model: Path, threads: int) -> Encode:
    """sentence-transformers' multi-process pool: one process per thread, each with one torch thread."""
    from sentence_transformers import SentenceTransformer

    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the pool's processes
    st = SentenceTransformer(str(model), device="cpu")
    st.max_seq_length = 512
    pool = st.start_multi_process_pool(["cpu"] * threads)
    CLEANUP.append(lambda: st.stop_multi_process_pool(pool))
    return lambda texts, bs: st.encode(texts, batch_size=bs, pool=pool, convert_to_numpy=True)


def load_fastembed(mode: str, work: Path, threads: int) -> Encode:
    """fastembed on the packaged model's ONNX export (specific_model_path: no download). int8 runs
    sentence-transformers' dynamic int8 graph, registered as a custom model (fastembed ships none for it)."""
    from fastembed import TextEmbedding

    folder = work / "fastembed"
    if mode == "int8":
        from fastembed.common.model_description import ModelSource, PoolingType

        TextEmbedding.add_custom_model(model="local/minilm-qint8", pooling=PoolingType.MEAN, normalization=True,
                                       sources=ModelSource(hf="local/minilm-qint8"), dim=384,
                                       model_file="model_qint8.onnx")
        fe = TextEmbedding("local/minilm-qint8", specific_model_path=str(folder), threads=threads)
    else:
        fe = TextEmbedding("sentence-transformers/all-MiniLM-L6-v2", specific_model_path=str(folder), threads=threads)
    return lambda texts, bs: np.asarray(list(fe.embed(texts, batch_size=bs)), dtype=np.float32)


def load_infinity(mode: str, model: Path, work: Path, threads: int) -> Encode:
    """infinity-emb's async engine, offline. Its optimum engine finds ONNX files under a local folder only
    by paths relative to the working directory, so it runs from inside the folder (model path ".")."""
    import asyncio

    # Its optimum engine caches the graph it optimises under the hub cache, by model path ("." for both
    # graphs): one cache per mode, inside --work, set before huggingface_hub reads it.
    os.environ["HF_HUB_CACHE"] = str(work / f"infinity-{mode}-cache")
    import torch
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    torch.set_num_threads(threads)
    if mode == "torch-fp32":
        path, engine = str(work / "infinity-torch"), "torch"  # the model, set to 512 tokens
    else:
        os.chdir(work / f"infinity-{mode}")
        path, engine = ".", "optimum"
    loop = asyncio.new_event_loop()
    holder: dict[str, object] = {}

    def encode(texts: list[str], bs: int) -> np.ndarray:
        async def run() -> list:
            if "engine" not in holder:  # the engine is made and started once, on this loop
                # pooling "auto" is CLS for its optimum engine; this model is mean-pooled
                args = EngineArgs(model_name_or_path=path, engine=engine, device="cpu", batch_size=bs,
                                  bettertransformer=False, model_warmup=False, pooling_method="mean")
                holder["engine"] = AsyncEmbeddingEngine.from_args(args)
                await holder["engine"].astart()
            return (await holder["engine"].embed(sentences=texts))[0]

        return np.asarray(loop.run_until_complete(run()), dtype=np.float32)

    return encode


def load(system: str, model: Path, work: Path, threads: int) -> Encode:
    family, mode = system.split("-", 1)
    if family == "bertkit":
        return load_bertkit(mode, model, threads)
    if family in ("st6", "st3"):
        return load_st_pool(model, threads) if mode == "torch-pool" else load_st(mode, model, work, threads)
    if family == "fastembed":
        return load_fastembed(mode, work, threads)
    if family == "infinity":
        return load_infinity(mode, model, work, threads)
    raise SystemExit(f"unknown system {system}")


# -- the protocol ------------------------------------------------------------------------------------------------

def serve_commands(encode: Encode, out) -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "rss":
            reply = {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        else:
            texts = json.loads(Path(cmd["texts"]).read_text())
            if cmd["op"] == "latency":
                if cmd.get("warm"):  # one untimed call first: the CPU was another process's a moment ago
                    encode(texts[:1], 1)
                seconds = []
                for text in texts:
                    t = time.perf_counter()
                    encode([text], 1)
                    seconds.append(time.perf_counter() - t)
                reply = {"seconds": seconds}
            else:
                t = time.perf_counter()
                vectors = encode(texts, cmd["batch"])
                reply = {"seconds": time.perf_counter() - t}
                if cmd.get("save"):
                    np.save(cmd["save"], np.asarray(vectors, dtype=np.float32))
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", default=None)
    p.add_argument("--prepare", choices=["st3", "st6"], default=None)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--cold", default=None, help="load, print this text's vector as one JSON line, exit")
    args = p.parse_args()
    out = os.fdopen(os.dup(1), "w")  # the protocol's own stdout ...
    os.dup2(2, 1)  # ... and every library's prints to stderr
    if args.prepare:
        {"st3": prepare_st3, "st6": prepare_st6}[args.prepare](args.model, args.work)
        return
    encode = load(args.system, args.model.resolve(), args.work.resolve(), args.threads)
    if args.cold is not None:
        out.write(json.dumps(np.asarray(encode([args.cold], 1))[0].tolist()) + "\n")
    else:
        out.write(json.dumps({"ready": True}) + "\n")
        out.flush()
        serve_commands(encode, out)
    out.flush()
    for step in CLEANUP:
        step()
    os._exit(0)  # some engines (infinity's batch thread, the pool's processes) would keep the process alive


if __name__ == "__main__":
    main()
