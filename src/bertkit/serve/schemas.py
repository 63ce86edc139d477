"""HTTP types: the request bodies the routes accept, and the JSON responses they send.

Request bodies are strict pydantic models: a number is not a string, "true" is not a boolean, and unknown
fields are refused (422). Responses are plain dicts written by orjson rather than pydantic response models:
validating hundreds of thousands of floats per answer would cost more than computing them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import Body
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

# ----------------------------------------------------------------------------------------------------------
# Request bodies


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmbedRequest(Strict):
    texts: str | list[str]
    pooling: str = "mean"
    layers: list[int] | None = None
    normalize: bool = False
    whiten: bool = False
    truncate: bool = True
    template: str | None = None
    dtype: str = "float32"  # compact vectors (serve/compact.py): int8 | uint8 | binary | ubinary
    dimensions: int | None = None  # the first N dimensions, re-normalised


class OpenAIEmbeddingRequest(BaseModel):
    # Extra fields (e.g. "user" and future SDK fields) are accepted and ignored, as OpenAI's API does.
    model_config = ConfigDict(extra="ignore", strict=True)
    input: str | list[str]
    model: str = ""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    dtype: str | None = None  # bertkit's extension (serve/compact.py); OpenAI clients never send it


class TokensRequest(Strict):
    texts: str | list[str]
    layers: list[int] | None = None
    vectors: bool = True
    truncate: bool = True


class SimilarityRequest(Strict):
    texts: list[str] | None = None  # all pairs: an n x n matrix per pooling
    a: str | list[str] | None = None  # or pairwise: a[i] with b[i]
    b: str | list[str] | None = None
    poolings: list[str] = Field(default_factory=lambda: ["mean"])
    layers: list[int] | None = None
    truncate: bool = True


class FillMaskRequest(Strict):
    text: str
    top_k: int = Field(5, ge=1, le=100)


class NSPRequest(Strict):
    a: str | list[str]
    b: str | list[str]


class TextsRequest(Strict):
    texts: str | list[str]


class ClassifyRequest(Strict):
    texts: str | list[str]
    pairs: str | list[str] | None = None  # second texts, for a sentence-pair classifier


class SearchRequest(Strict):
    query: str | list[str]  # one query -> one list of hits; a list -> a list of lists
    k: int = Field(10, ge=1, le=1000)


# A route that reads the body's keys before choosing its type (/embed: bertkit's body or TEI's, see tei.py)
# takes the parsed JSON object, then `validate_body`; malformed JSON is still FastAPI's 422.
JsonBody = Annotated[dict[str, Any], Body()]
M = TypeVar("M", bound=BaseModel)


def validate_body(model: type[M], body: dict[str, Any]) -> M:
    """`model` from a parsed JSON body, refused exactly as FastAPI refuses a typed body (422 naming the field)."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None


# ----------------------------------------------------------------------------------------------------------
# Responses


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson writes numpy arrays directly and is several times faster than json for long float lists.
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


BIG_RESPONSE_FLOATS = 200_000  # above this, serializing takes milliseconds: do it off the event loop


async def vectors_response(content: Any, floats: int) -> Response:
    """json_response for answers carrying `floats` numbers; large ones are serialized in the thread pool."""
    if floats <= BIG_RESPONSE_FLOATS:
        return json_response(content)
    return await run_in_threadpool(json_response, content)
