"""Static (calibrated) int8: `precision="int8-static"` on the onnx backend, run by OpenVINO.

The fp32 model, converted to an OpenVINO model from torch (bertkit.runtime.export.openvino_model: attention
stays one fused op), is quantized by NNCF's post-training quantization (`nncf.quantize`, model type
TRANSFORMER, preset MIXED: int8 weights with a scale per output channel, activations with ranges fixed once
from the fp32 model run over calibration texts, asymmetric where their values are). The quantized model is
cached as OpenVINO IR (`.xml` + `.bin`) beside the fp32 graph, with the same record, checks and user-cache
fallback as every graph (bertkit.runtime.cache). Inference: OpenVINO's CPU plugin, streams of the caller's
thread count (one stream per concurrent caller that the CPUs allow: the encoder's workers call from several OS
threads at once, and requests on one stream would wait for each other), the parts left in float (attention,
LayerNorm) in bf16 on a CPU with AMX-BF16 or AVX512-BF16 and in f32 elsewhere (INFERENCE_PRECISION_HINT,
`float_precision`). No torch: openvino + numpy only; nncf is needed only to quantize (at export).

Why OpenVINO and not ONNX Runtime's `quantize_static`: its QDQ graph ran as QLinearMatMul with a quantize /
dequantize pass around each, and was slower than ONNX Runtime's dynamic int8 (docs/RESULTS.md, issue 22).

Calibration texts: the user's (`bertkit export --calibration FILE`, or `export_graph(..., calibration=[...])`),
else the default set shipped with bertkit (calibration_texts.txt: 300 plain English sentences written for
this purpose, 2 to 60 words). What was used is recorded next to the model: count, sha256 of the texts, source,
method.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import InputError, OptionError
from bertkit.runtime.seam import ArrayOutput, BackendError, cpu_budget, graph_feed, local_threads

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "bertkit default (calibration_texts.txt)"
METHOD = ("nncf.quantize (OpenVINO post-training quantization), model type TRANSFORMER, preset MIXED: int8 "
          "per-channel weights, activation ranges fixed from the calibration texts (one text per sample); the fp32 "
          "model converted from torch.export, attention one ScaledDotProductAttention op left in float")


def default_texts() -> list[str]:
    text = resources.files("bertkit").joinpath("calibration_texts.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def texts_sha256(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def require_openvino():
    try:
        import openvino
    except ImportError as e:
        raise OptionError("precision int8-static needs OpenVINO: pip install 'bertkit[openvino]' "
                          "(or use --precision int8)") from e
    return openvino


# ---- quantizing (at export) -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stdout_to_stderr():
    """NNCF logs and draws its progress bars on stdout, which is for results (`bertkit export` prints JSON lines
    there): send both to stderr while it runs."""
    from nncf.common.logging.logger import nncf_logger

    handlers = [h for h in nncf_logger.handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout]
    for h in handlers:
        h.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h in handlers:
            h.setStream(sys.stdout)


def quantize_static_graph(convert, out: Path, tokenizer, texts: list[str] | None, source: str | None) -> dict:
    """Write the int8 OpenVINO IR of `convert()` (the fp32 openvino.Model, converted once the texts are checked)
    to `out` (.xml, its .bin beside); returns the calibration record."""
    ov = require_openvino()
    try:
        import nncf
    except ImportError as e:
        raise OptionError("quantizing int8-static needs NNCF: pip install 'bertkit[openvino]'") from e
    if texts is None:
        texts, source = default_texts(), DEFAULT_SOURCE
    texts = [t for t in texts if t.strip()]
    if len(texts) < 10:
        raise InputError(f"int8-static calibration needs at least 10 non-empty texts, got {len(texts)}; "
                         "pass a file with a few hundred typical texts (one a line)")
    log.info("calibrating int8-static on %d texts (%s)", len(texts), source or "user texts")
    model = convert()
    inputs = [p.get_any_name() for p in model.inputs]
    samples = []
    for encoding in tokenizer.encode(texts):
        b = tokenizer.pad([encoding], numpy=True)
        samples.append(graph_feed(inputs, b.input_ids, b.attention_mask, b.token_type_ids))
    with _stdout_to_stderr():
        quantized = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                  preset=nncf.QuantizationPreset.MIXED, subset_size=len(samples))
    ov.save_model(quantized, str(out), compress_to_fp16=False)  # float parts stay f32
    return {"texts": len(texts), "texts_sha256": texts_sha256(texts), "source": source or "user texts",
            "method": METHOD, "nncf": nncf.__version__, "openvino": ov.get_version()}


# ---- running (no torch, no nncf) -------------------------------------------------------------------------------

_core = None
_core_lock = threading.Lock()


def _ov_core():
    global _core
    with _core_lock:
        if _core is None:
            ov = require_openvino()
            _core = ov.Core()
            # OpenVINO's binding sets up its numpy bridge (pybind11's once-only lookup) at the first array it hands
            # over, and threads that get there at the same moment can deadlock against the GIL: the encoder's two
            # workers hung forever on their first batches (bench/peers.py, 2026-12-07); plain OpenVINO, two
            # threads' first inferences at once, hung in 2 of 20 fresh processes, eight threads in 10 of 20. So
            # it is done here, once, while any other thread waits on this lock.
            ov.Tensor(np.zeros(1, np.float32)).data  # noqa: B018
        return _core


CACHE_VARIABLE = "BERTKIT_OPENVINO_CACHE"


def runtime_cache_capacity() -> int | None:
    """How many prepared kernels OpenVINO's CPU plugin keeps per compiled model (its CPU_RUNTIME_CACHE_CAPACITY),
    from $BERTKIT_OPENVINO_CACHE; None when unset: OpenVINO's default (5,000).

    Why a bound can matter: the model's shapes are dynamic, and OpenVINO prepares kernels and buffers for each
    (rows, tokens) shape it meets and keeps them until that cache is full. A server meets many shapes: measured
    2026-12-07 (2-core AMD EPYC, docs/RESULTS.md), an int8-static `bertkit serve` reached 2.5 GiB peak RSS under
    bench/peers_serve.py's load by default, 1.4 GiB at 1,000 and 0.9 GiB at 256, for 1-6 % fewer requests/s at
    64 clients and 10-25 % fewer at 1 and 8: a working set of shapes larger than the cache is prepared again on
    every call (+70 % per batch of 1-32 rows x 8-128 tokens), so the default stays OpenVINO's."""
    value = os.environ.get(CACHE_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise OptionError(f"{CACHE_VARIABLE}={value!r} is not a whole number of 0 or more: set it to how many "
                          "prepared kernels OpenVINO may keep per compiled model (for example 256), or unset it "
                          "for OpenVINO's default")
    return int(value)


def float_precision() -> str:
    """What OpenVINO runs the unquantized parts in: "bf16" on a CPU with AMX-BF16, whose tiles make attention's
    bf16 matmuls far faster (2-core Xeon with AMX, 2026-12-06: 256-token documents 93.7 vs 69.7 texts/s, STS-B
    sentences 2,028 vs 2,117 (noise), STS-B dev Spearman 86.81 vs 86.82, min cosine to exact 0.932 vs 0.928), or
    with AVX512-BF16's dot-product instructions (2-core AMD EPYC, 2026-12-06, attention fused: 512-token
    documents 34.6 vs 31.0 texts/s, AG News 484 vs 476, mean cosine to exact unchanged); else "f32" (bf16 would be
    emulated, and the exact parts stay exact)."""
    from bertkit.runtime.verdicts import cpu_info

    flags = cpu_info()[1]
    return "bf16" if "amx_bf16" in flags or "avx512_bf16" in flags else "f32"


class OpenVinoSession:
    """A cached int8 OpenVINO model that answers like bertkit.runtime.onnxrt.OrtSession (numpy in, ArrayOutput
    out); bertkit.runtime.onnxrt.GraphRunner makes it a Runner.

    One compiled model per thread count (local_threads(), as for ONNX Runtime sessions) and per output set (the
    stacked hidden states are computed only when asked for); one infer request per compiled model and OS thread.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.model = _ov_core().read_model(str(self.path))
        except RuntimeError as e:
            raise BackendError(f"OpenVINO cannot read {self.path} ({e.__class__.__name__}); delete it and run "
                               "`bertkit export --precision int8-static` again") from e
        self.outputs = [o.get_any_name() for o in self.model.outputs]
        self.inputs = [i.get_any_name() for i in self.model.inputs]
        self.cache_capacity = runtime_cache_capacity()  # checked at load, before any work
        self._compiled: dict[tuple[int, bool], Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def compiled(self, threads: int, hidden: bool):
        key = (threads, hidden and "hidden_states" in self.outputs)
        with self._lock:
            if key not in self._compiled:
                ov = require_openvino()
                model = self.model
                if not key[1]:  # drop the stacked hidden states: not computed when not returned
                    keep = [r for r in model.get_results() if r.output(0).get_any_name() != "hidden_states"]
                    model = ov.Model(keep, model.get_parameters(), "bertkit-int8-static")
                # Requests on one stream run one after another, so the encoder's workers (each a 1-thread
                # caller) would share a single stream: give each possible caller a stream of `threads` threads.
                streams = max(1, cpu_budget() // threads)
                config = {"INFERENCE_NUM_THREADS": streams * threads, "NUM_STREAMS": streams,
                          "INFERENCE_PRECISION_HINT": float_precision(), "ENABLE_CPU_PINNING": False}
                if self.cache_capacity is not None:
                    config["CPU_RUNTIME_CACHE_CAPACITY"] = self.cache_capacity
                self._compiled[key] = _ov_core().compile_model(model, "CPU", config)
            return self._compiled[key]

    def request(self, threads: int, hidden: bool):
        """This OS thread's infer request on the compiled model for (threads, hidden), made on first use."""
        compiled = self.compiled(threads, hidden)
        requests = self._local.__dict__.setdefault("requests", {})
        if id(compiled) not in requests:
            requests[id(compiled)] = compiled.create_infer_request()
        return requests[id(compiled)]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray,
            output_hidden_states: bool = False) -> ArrayOutput:
        request = self.request(local_threads(), output_hidden_states)
        feed = graph_feed(self.inputs, input_ids, attention_mask, token_type_ids)
        got = {k.get_any_name(): v for k, v in request.infer(feed).items()}
        hidden = got.get("hidden_states") if output_hidden_states else None
        return ArrayOutput(got["last_hidden_state"], got.get("pooler_output"),
                           tuple(hidden) if hidden is not None else None)

