"""Hugging Face text-embeddings-inference (TEI): its request bodies, its answers and its error body.

TEI's clients (huggingface_hub's InferenceClient, LangChain's HuggingFaceEndpointEmbeddings, LlamaIndex's
TextEmbeddingsInference, Haystack's Hugging Face API embedders) post TEI's bodies to `/`, `/embed`, ... This
module is TEI's side of the HTTP types, for every route that speaks TEI: `tei_routes.py` (`/`, `/embed_all`,
`/tokenize`, `/decode`) and `/embed` in `routes.py`, which takes bertkit's body as well. Its adapters turn a
TEI request into the same `Service` calls bertkit's own routes make (same batcher, same limits), and the
result into TEI's answer: a bare list of vectors, of token lists, of strings. Other TEI routes (`/rerank`,
`/embed_sparse`) reuse `TeiRequest`, `TeiTextOptions` and the error handling below.

Which API a body speaks is decided by its keys: a body with `inputs` is TEI's (no bertkit body has one);
any other is bertkit's. TEI ignores fields it does not know, and so does this module, except bertkit's own
option names next to `inputs` (`pooling`, `layers`, ...): mixing the two APIs is refused rather than half-done.

Errors on TEI routes and TEI-shaped bodies use TEI's body, {"error": message, "error_type": kind}, and TEI's
statuses: 400 `Empty` for an empty batch, 413 `Validation` for every other refused input (too many inputs,
a text too long with `truncate: false`, an empty text, an unknown prompt), 422 `Validation` for a body that is
not JSON or does not fit the schema, 429 `Overloaded` when the queue is full, 5xx `Backend` / `Unhealthy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from bertkit.serve.bodylimit import JsonRoute
from bertkit.serve.compact import request_spec
from bertkit.serve.errors import ServeError
from bertkit.serve.schemas import EmbedRequest, json_response, validate_body, vectors_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from tokenizers import Encoding

    from bertkit.serve.service import Service

POOLING = "mean"  # the sentence vector TEI's routes serve: what /v1/embeddings and Encoder.encode give

# ----------------------------------------------------------------------------------------------------------
# Request bodies (TEI's field names and defaults; types strict, unknown fields ignored as TEI does)


class TeiRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TeiTextOptions(TeiRequest):
    """What every TEI route that reads texts accepts besides them."""

    truncate: bool | None = None  # None: this server's auto_truncate (true), as bertkit truncates by default
    truncation_direction: Literal["right", "left", "Right", "Left"] = "right"
    prompt_name: str | None = None  # a key of the model's sentence-transformers `prompts`


class TeiEmbedRequest(TeiTextOptions):
    inputs: str | list[str]
    normalize: bool = True
    dimensions: int | None = None  # keep the first N (Matryoshka), then normalise; checked by the VectorSpec


# bertkit's own /embed options, which TEI's body lacks (texts, pooling, layers, whiten, template, dtype):
# beside `inputs` they are refused, not dropped (a dropped `dtype` answered float32 to a request for int8).
BERTKIT_ONLY = frozenset(EmbedRequest.model_fields) - frozenset(TeiEmbedRequest.model_fields)


class TeiEmbedAllRequest(TeiTextOptions):
    inputs: str | list[str]


class TeiTokenizeRequest(TeiRequest):
    inputs: str | list[str]
    add_special_tokens: bool = True
    prompt_name: str | None = None


class TeiDecodeRequest(TeiRequest):
    ids: list[int] | list[list[int]]
    skip_special_tokens: bool = True


class TeiSimilarityInput(TeiRequest):
    source_sentence: str
    sentences: list[str]


class TeiSimilarityParameters(TeiTextOptions):
    pass


class TeiSimilarityRequest(TeiRequest):
    """TEI's /similarity body, which huggingface_hub's `sentence_similarity` posts to the base URL."""

    inputs: TeiSimilarityInput
    parameters: TeiSimilarityParameters | None = None


def is_tei_body(body: dict[str, Any]) -> bool:
    return "inputs" in body


def tei_request(model: type[TeiRequest], body: dict[str, Any]) -> Any:
    """`model` from a TEI-shaped body; bertkit's own option names beside `inputs` are refused (422)."""
    mixed = sorted(BERTKIT_ONLY & body.keys())
    if mixed and is_tei_body(body):
        raise ServeError(
            f"the body mixes TEI's `inputs` with bertkit's {', '.join(mixed)}: send TEI's fields (inputs, "
            "normalize, truncate, ...) or bertkit's (texts, pooling, layers, ...), not both", 422, "mixed_body",
        )
    return validate_body(model, body)


# ----------------------------------------------------------------------------------------------------------
# Errors: TEI's body and statuses for the requests that speak TEI


ERROR_TYPES = {400: "Empty", 413: "Validation", 422: "Validation", 429: "Overloaded", 503: "Unhealthy"}


def tei_error(status: int, message: str, code: str, param: str | None = None, **extra: Any) -> Response:
    """The error answer in TEI's shape. TEI answers every refused input 413 `Validation` except an empty
    batch (400 `Empty`), so bertkit's other 400s become 413 here."""
    if status == 400 and code != "empty_input":
        status = 413
    kind = ERROR_TYPES.get(status) or ("Backend" if status >= 500 else "Validation")
    headers = {"Retry-After": "1"} if status == 429 else None
    return json_response({"error": message, "error_type": kind}, status, headers)


def speak_tei(scope: dict) -> None:
    """From here on, errors on this request are answered in TEI's shape (`errors.fail` reads the state)."""
    scope.setdefault("state", {})["error_body"] = tei_error


class TeiRoute(JsonRoute):
    """A route of TEI's API: it says so before the body is read, so even a body that is not JSON (or one over
    the body limits) gets TEI's error answer."""

    error_body = staticmethod(tei_error)

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def tei_handler(request: Request) -> Response:
            speak_tei(request.scope)
            return await handler(request)

        return tei_handler


# ----------------------------------------------------------------------------------------------------------
# Adapters: a TEI request -> the Service calls bertkit's routes make -> TEI's answer


async def prepared_texts(service: Service, inputs: str | list[str], options: TeiTextOptions | TeiTokenizeRequest,
                         truncate: bool = True) -> list[str]:
    """The texts, checked against the limits, with the prompt put in front and, for truncation_direction
    left, over-long ones cut at their start."""
    texts = service.texts(inputs, "input")
    if options.prompt_name is not None:
        texts = service.prompt(texts, options.prompt_name)
    if truncate and getattr(options, "truncation_direction", "right").lower() == "left":
        texts = await service.cut_left(texts)
    return texts


async def embed(service: Service, req: TeiEmbedRequest) -> Response:
    """TEI's /embed (and POST /): one pooled vector per input, a bare list of lists. `dimensions` is checked
    as on bertkit's routes (the same message; TEI's status, 413); `normalize: false` keeps the raw first N."""
    truncate = req.truncate is not False
    spec = request_spec(service, POOLING, normalize=req.normalize, dimensions=req.dimensions,
                        renormalize=req.normalize)
    texts = await prepared_texts(service, req.inputs, req, truncate)
    vectors = (await service.embed(texts, spec, truncate, "input")).vectors
    return await vectors_response(vectors, vectors.size)


def utf8_offsets(text: str) -> list[int]:
    """Byte offset of each character (and of the end): TEI reports token spans in UTF-8 bytes."""
    out = [0]
    for ch in text:
        out.append(out[-1] + len(ch.encode("utf-8")))
    return out


def simple_tokens(text: str, encoding: Encoding) -> list[dict[str, Any]]:
    """TEI's SimpleToken list for one text: id, text (the input's span; the token for a special one),
    special, start and stop (byte offsets; null for special tokens)."""
    at = utf8_offsets(text)
    out = []
    for i, token, (start, stop), special in zip(encoding.ids, encoding.tokens, encoding.offsets,
                                                 encoding.special_tokens_mask):
        if special:
            out.append({"id": i, "text": token, "special": True, "start": None, "stop": None})
        else:
            out.append({"id": i, "text": text[start:stop], "special": False, "start": at[start], "stop": at[stop]})
    return out


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}


def info(service: Service) -> dict[str, Any]:
    """The fields of TEI's GET /info (served beside bertkit's own, whose names differ)."""
    from bertkit import __version__

    limits = service.limits
    return {
        "model_id": service.model_id,
        "model_sha": None,
        "model_dtype": DTYPES.get(service.encoder.precision, service.encoder.precision),
        "model_type": {"embedding": {"pooling": POOLING}},
        "max_concurrent_requests": None,  # no such limit: the queue is bounded in tokens (limits)
        "max_input_length": service.encoder.max_length,
        "max_batch_tokens": limits.batch_tokens,
        "max_batch_requests": None,
        "max_client_batch_size": limits.max_inputs,
        "auto_truncate": True,
        "tokenization_workers": None,
        "version": __version__,
        "sha": None,
        "docker_label": None,
    }
