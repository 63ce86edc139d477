"""The playground's look inside the model: attention maps, per-layer similarities, the model tree, the output
shapes, the which-vector report. Request types and the work of each route (validation, limits, then one
`bertkit.which.inside` call on the model thread); the handlers are in inside_routes.py.

Limits (stated in /info under "inside"): an attention request is one text (or pair) of at most
ATTENTION_MAX_TOKENS tokens, since its answer grows with layers x heads x tokens^2; a layers request at most
LAYERS_MAX_INPUTS texts. Over either: 413 with the usual error body.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from starlette.concurrency import run_in_threadpool

from bertkit.serve.errors import ServeError
from bertkit.serve.quota import charge_tokens
from bertkit.serve.schemas import Strict
from bertkit.which import inside

if TYPE_CHECKING:
    from bertkit.serve.service import Service

ATTENTION_MAX_TOKENS = 64  # [CLS] and [SEP] included: 6 layers x 12 heads x 64^2 = 295k numbers at most
LAYERS_MAX_INPUTS = 8  # sentences compared layer by layer (28 pairs)


class AttentionRequest(Strict):
    text: str
    pair: str | None = None  # a second text, encoded together with the first ([SEP] between)


class LayersRequest(Strict):
    texts: list[str]
    poolings: list[str] = Field(default_factory=lambda: list(inside.LAYER_POOLINGS))
    truncate: bool = True


class TextRequest(Strict):
    text: str


def info(service: Service) -> dict[str, Any]:
    """The playground's part of /info: its limits, the fill-mask model and note, whether a report is served."""
    mask = mask_encoder(service)
    return {
        "attention": {"max_tokens": ATTENTION_MAX_TOKENS, "heavy_share": inside.HEAVY},
        "layers": {"max_inputs": LAYERS_MAX_INPUTS, "poolings": list(inside.LAYER_POOLINGS),
                   "states": service.encoder.num_hidden_layers + 1},
        "fill_mask": {"model": mask.name if mask is not None else None,
                      "note": inside.mask_model_note(mask) if mask is not None else None},
        "report": service.report_dir is not None,
    }


def mask_encoder(service: Service):
    """The encoder behind /fill-mask: `serve --mask-model`'s, else the served one when it has the head."""
    if service.mask_encoder is not None:
        return service.mask_encoder
    return service.encoder if service.encoder.has_head("mlm") else None


async def one_input(service: Service, text: str, pair: str | None, max_tokens: int | None) -> int:
    """Check one text (or pair) against the request limits and, when given, max_tokens (413); charge its
    tokens to the caller's quota. Returns its token count, [CLS] and [SEP] included."""
    texts = service.texts([text] if pair is None else [text, pair])
    encoding = await run_in_threadpool(service.untruncated.encode, *texts)
    n = len(encoding.ids)
    if max_tokens is not None and n > max_tokens:
        raise ServeError(f"the input has {n} tokens; attention maps are served for at most {max_tokens} "
                         "([CLS] and [SEP] included): shorten it", 413, "max_attention_tokens", "text")
    charge_tokens(n)
    service.metrics.add_tokens(n)
    return n


async def attention(service: Service, text: str, pair: str | None) -> tuple[inside.Attention, int]:
    n = await one_input(service, text, pair, ATTENTION_MAX_TOKENS)
    return await service.batcher.run(inside.attention_maps, service.encoder, text, pair), n


async def layers(service: Service, texts: list[str], poolings: list[str], truncate: bool):
    """Per pooling, (states, n, n) cosine matrices; tokens; truncated positions."""
    texts = service.texts(texts)
    if len(texts) < 2:
        raise ServeError("send at least two texts to compare", 400, "bad_shape", "texts")
    if len(texts) > LAYERS_MAX_INPUTS:
        raise ServeError(f"{len(texts)} texts; layer-by-layer similarity takes at most {LAYERS_MAX_INPUTS}", 413,
                         "max_inputs", "texts")
    if not poolings:
        raise ServeError("poolings is empty; name at least one, e.g. [\"mean\"]", 400, "bad_pooling", "poolings")
    for p in poolings:
        service.check_pooling(p, [0])
    counts, _ = await service.count_tokens(texts, truncate)
    service.metrics.add_tokens(sum(counts))
    matrices, truncated = await service.batcher.run(inside.layer_similarities, service.encoder, texts, poolings,
                                                    truncate)
    return matrices, sum(counts), truncated


async def token_layers(service: Service, text: str):
    """Tokens and each token's similarity to [CLS] per hidden state (states, T); tokens used."""
    counts, truncated = await service.count_tokens(service.texts([text]), True)
    service.metrics.add_tokens(counts[0])
    tokens, sims = await service.batcher.run(inside.token_similarity_to_cls, service.encoder, text)
    return tokens, sims, counts[0], truncated


async def outputs(service: Service, text: str, pair: str | None) -> dict[str, Any]:
    texts = service.texts([text] if pair is None else [text, pair])
    counts, _ = await service.count_tokens(texts, True)
    service.metrics.add_tokens(sum(counts))
    return await service.batcher.run(inside.output_shapes, service.encoder, text, pair)


def report(service: Service) -> dict[str, Any]:
    from bertkit.which.saved import report_summary

    return report_summary(require_report(service))


def require_report(service: Service) -> Path:
    folder = service.report_dir
    if folder is None:
        raise ServeError("this server has no report; start it with `bertkit serve --report DIR` (a folder made by "
                         "`bertkit report`)", 404, "no_report")
    return folder


def report_chart(service: Service) -> Path:
    path = require_report(service) / "summary.png"
    if not path.is_file():
        raise ServeError("the report folder has no summary.png; run `bertkit report` again to draw it", 404,
                         "no_report_chart")
    return path
