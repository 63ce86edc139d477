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

from bertkit.serve.costs import unique_poolings
from bertkit.serve.errors import ServeError
from bertkit.serve.schemas import Strict
from bertkit.which import inside

if TYPE_CHECKING:
    from bertkit.batching import Prepared
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


async def one_input(service: Service, text: str, pair: str | None) -> Prepared:
    """One text (or pair) checked against the request limits and tokenized once."""
    texts = service.texts([text] if pair is None else [text, pair])
    return await service.prepare(texts[:1], texts[1:] or None)


async def attention(service: Service, text: str, pair: str | None) -> tuple[inside.Attention, int]:
    prepared = await one_input(service, text, pair)
    n = prepared.tokens[0]
    if prepared.truncated or n > ATTENTION_MAX_TOKENS:
        more = "more than " if prepared.truncated else ""
        raise ServeError(f"the input has {more}{n} tokens; attention maps are served for at most "
                         f"{ATTENTION_MAX_TOKENS} ([CLS] and [SEP] included): shorten it", 413,
                         "max_attention_tokens", "text")
    config = service.encoder.model.config
    maps = await service.admit(prepared, lambda p, rows: inside.attention_maps(service.encoder, text, pair),
                               answer=config.num_hidden_layers * config.num_attention_heads * n * n,
                               what="attention weights", split=False)
    return maps, n


async def layers(service: Service, texts: list[str], poolings: list[str], truncate: bool):
    """Per pooling, (states, n, n) cosine matrices; tokens; truncated positions; the poolings (each once)."""
    texts = service.texts(texts)
    if len(texts) < 2:
        raise ServeError("send at least two texts to compare", 400, "bad_shape", "texts")
    if len(texts) > LAYERS_MAX_INPUTS:
        raise ServeError(f"{len(texts)} texts; layer-by-layer similarity takes at most {LAYERS_MAX_INPUTS}", 413,
                         "max_inputs", "texts")
    poolings = unique_poolings(poolings, service.limits)  # duplicates merged, at most max_poolings (row 2)
    for p in poolings:
        service.check_pooling(p, [0])
    prepared = await service.prepare(texts, truncate=truncate)
    states = service.encoder.num_hidden_layers + 1
    matrices, truncated = await service.admit(
        prepared, lambda p, rows: inside.layer_similarities(service.encoder, texts, poolings, truncate),
        answer=len(poolings) * states * len(texts) ** 2, what="similarities", split=False)
    return matrices, sum(prepared.tokens), truncated, poolings


async def token_layers(service: Service, text: str):
    """Tokens and each token's similarity to [CLS] per hidden state (states, T); tokens used."""
    prepared = await one_input(service, text, None)
    n = prepared.tokens[0]
    tokens, sims = await service.admit(
        prepared, lambda p, rows: inside.token_similarity_to_cls(service.encoder, text),
        answer=(service.encoder.num_hidden_layers + 2) * n, what="similarities and tokens", split=False)
    return tokens, sims, n, prepared.truncated


async def outputs(service: Service, text: str, pair: str | None) -> dict[str, Any]:
    prepared = await one_input(service, text, pair)
    return await service.admit(prepared, lambda p, rows: inside.output_shapes(service.encoder, text, pair),
                               answer=sum(prepared.tokens), what="output shapes", split=False)


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
