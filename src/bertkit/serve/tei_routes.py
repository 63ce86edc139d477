"""The routes only TEI has: POST `/`, `/embed_all`, `/tokenize`, `/decode` (TEI's `/embed` shares bertkit's
route, in routes.py). Thin handlers over `tei.py`'s types and adapters, on an APIRouter whose routes answer
every error, malformed bodies included, in TEI's shape (`TeiRoute`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from starlette.responses import Response

from bertkit.serve import tei
from bertkit.serve.routes import ServiceDep
from bertkit.serve.schemas import JsonBody, json_response, validate_body, vectors_response
from bertkit.serve.tei import (
    TeiDecodeRequest,
    TeiEmbedAllRequest,
    TeiEmbedRequest,
    TeiRoute,
    TeiSimilarityParameters,
    TeiSimilarityRequest,
    TeiTokenizeRequest,
)

if TYPE_CHECKING:
    from bertkit.serve.service import Service

tei_router = APIRouter(route_class=TeiRoute)


@tei_router.post("/")
async def root(body: JsonBody, service: ServiceDep) -> Response:
    """TEI's base URL: an embedding model answers as /embed does; an `inputs` object holding
    `source_sentence` and `sentences` is sentence similarity (what InferenceClient.sentence_similarity
    sends to the base URL)."""
    if isinstance(body.get("inputs"), dict):
        return await similarity(service, validate_body(TeiSimilarityRequest, body))
    return await tei.embed(service, tei.tei_request(TeiEmbedRequest, body))


async def similarity(service: Service, req: TeiSimilarityRequest) -> Response:
    """Cosine similarity of source_sentence with each of sentences, one float each."""
    params = req.parameters or TeiSimilarityParameters()
    truncate = params.truncate is not False
    texts = await tei.prepared_texts(service, [req.inputs.source_sentence, *req.inputs.sentences], params, truncate)
    scores, _, _ = await service.similarity(texts, None, None, [tei.POOLING], None, truncate)
    return json_response(scores[tei.POOLING][0, 1:])


@tei_router.post("/embed_all")
async def embed_all(body: JsonBody, service: ServiceDep) -> Response:
    """Every token's vector (special tokens included) of every input: (inputs, tokens, dimensions)."""
    req = tei.tei_request(TeiEmbedAllRequest, body)
    truncate = req.truncate is not False
    texts = await tei.prepared_texts(service, req.inputs, req, truncate)
    results, _, _ = await service.tokens(texts, None, truncate)
    return await vectors_response([tv.vectors for tv in results], sum(tv.vectors.size for tv in results))


@tei_router.post("/tokenize")
async def tokenize(body: JsonBody, service: ServiceDep) -> Response:
    """Per input, its tokens: id, text, special, start and stop (UTF-8 byte offsets), never truncated."""
    req = tei.tei_request(TeiTokenizeRequest, body)
    texts = await tei.prepared_texts(service, req.inputs, req)
    encodings = await service.tokenize(texts, req.add_special_tokens)
    return json_response([tei.simple_tokens(t, e) for t, e in zip(texts, encodings)])


@tei_router.post("/decode")
async def decode(body: JsonBody, service: ServiceDep) -> Response:
    """Token ids back to text: one string per list of ids."""
    req = tei.tei_request(TeiDecodeRequest, body)
    ids = req.ids if not req.ids or isinstance(req.ids[0], list) else [req.ids]  # [] is an empty batch
    return json_response(await service.decode(ids, req.skip_special_tokens))
