"""The HTTP handlers: one module-level function per route, on an `APIRouter`.

A handler turns its request body into one `Service` call and the result into the documented response body;
the work itself is in `service.py`. The service comes from the `get_service` dependency, so a test can mount
`router` on a bare FastAPI and provide its own (`app.dependency_overrides[get_service] = ...`).
A new route goes here: its request type in `schemas.py`, its work as a `Service` method.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import FileResponse, Response

from bertkit.serve import inside, tei
from bertkit.serve.bodylimit import JsonRoute
from bertkit.serve.compact import request_spec
from bertkit.serve.schemas import (
    ClassifyRequest,
    EmbedRequest,
    FillMaskRequest,
    JsonBody,
    NSPRequest,
    OpenAIEmbeddingRequest,
    SearchRequest,
    SimilarityRequest,
    TextsRequest,
    TokensRequest,
    json_response,
    validate_body,
    vectors_response,
)
from bertkit.serve.service import Service

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(route_class=JsonRoute)  # large JSON bodies are parsed off the event loop (bodylimit.py)


async def get_service(request: Request) -> Service:
    """The app's Service (set by create_app on app.state). Async so FastAPI does not run it in a thread."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


# -- embeddings ----------------------------------------------------------------------------------------------


@router.post("/v1/embeddings")
async def openai_embeddings(req: OpenAIEmbeddingRequest, service: ServiceDep) -> Response:
    vectors, tokens, truncated = await service.openai_embed(req.input, req.dimensions, req.dtype)
    if req.encoding_format == "base64":  # float32 little-endian; compact codes (req.dtype) as their bytes
        vectors = np.ascontiguousarray(vectors, dtype="<f4" if vectors.dtype.kind == "f" else vectors.dtype)
        data = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(v.tobytes()).decode("ascii")}
            for i, v in enumerate(vectors)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    # `truncated` (positions of inputs cut to the model's limit) is ours; OpenAI clients ignore extra fields.
    out = {"object": "list", "data": data, "model": service.model_id, "usage": usage, "truncated": truncated}
    if req.dtype is not None:  # bertkit's extension (serve/compact.py); absent for OpenAI clients
        out["dtype"] = req.dtype
    return await vectors_response(out, vectors.size)


@router.get("/v1/models")
async def openai_models(service: ServiceDep) -> Response:
    model = {"id": service.model_id, "object": "model", "created": 0, "owned_by": "bertkit"}
    return json_response({"object": "list", "data": [model]})


@router.post("/embed")
async def embed(body: JsonBody, request: Request, service: ServiceDep) -> Response:
    """bertkit's body, or TEI's: a body with `inputs` is TEI's, answered and refused in TEI's shape (tei.py)."""
    if tei.is_tei_body(body):
        tei.speak_tei(request.scope)
        return await tei.embed(service, tei.tei_request(tei.TeiEmbedRequest, body))
    req = validate_body(EmbedRequest, body)
    spec = request_spec(service, req.pooling, req.layers, req.normalize, req.whiten, req.template, req.dtype,
                        req.dimensions)
    vectors, tokens, truncated = await service.embed(req.texts, spec, req.truncate)
    return await vectors_response({
        "embeddings": vectors,
        "dimensions": int(vectors.shape[1]),
        "pooling": req.pooling,
        "normalized": req.normalize,
        "whitened": req.whiten,
        "dtype": req.dtype,
        "truncated": truncated,
        "usage": {"tokens": tokens},
    }, vectors.size)


@router.post("/similarity")
async def similarity(req: SimilarityRequest, service: ServiceDep) -> Response:
    scores, tokens, truncated = await service.similarity(req.texts, req.a, req.b, req.poolings, req.layers,
                                                         req.truncate)
    kind = "matrices" if req.texts is not None else "scores"
    return json_response({"truncated": truncated, "usage": {"tokens": tokens}, kind: scores})


@router.post("/search")
async def search(req: SearchRequest, service: ServiceDep) -> Response:
    results, tokens, truncated = await service.search(req.query, req.k)
    index = service.index
    return json_response({
        "results": results[0] if isinstance(req.query, str) else results,
        "index": {"kind": index.kind, "metric": index.info["metric"], "size": len(index)},
        "truncated": truncated,
        "usage": {"tokens": tokens},
    })


# -- other outputs -------------------------------------------------------------------------------------------


@router.post("/tokens")
async def tokens(req: TokensRequest, service: ServiceDep) -> Response:
    results, n_tokens, truncated = await service.tokens(req.texts, req.layers, req.truncate, req.vectors)
    items = []
    for tv in results:
        item: dict[str, Any] = {"tokens": tv.tokens, "offsets": [list(o) for o in tv.offsets]}
        if req.vectors:
            item["vectors"] = tv.vectors
        items.append(item)
    floats = sum(tv.vectors.size for tv in results) if req.vectors else 0
    return await vectors_response({"results": items, "truncated": truncated, "usage": {"tokens": n_tokens}}, floats)


@router.post("/fill-mask")
async def fill_mask(req: FillMaskRequest, service: ServiceDep) -> Response:
    preds = await service.fill_mask(req.text, req.top_k)
    return json_response({"masks": [[{"token": t, "score": p} for t, p in per_mask] for per_mask in preds]})


@router.post("/nsp")
async def nsp(req: NSPRequest, service: ServiceDep) -> Response:
    return json_response({"probabilities": await service.nsp(req.a, req.b)})


@router.post("/classify")
async def classify(req: ClassifyRequest, service: ServiceDep) -> Response:
    preds = await service.classify(req.texts, req.pairs)
    if service.classifier.regression:
        return json_response({"predictions": [{"score": p} for _, p in preds]})
    return json_response({"predictions": [{"label": lab, "probability": p} for lab, p in preds]})


@router.post("/ner")
async def ner(req: TextsRequest, service: ServiceDep) -> Response:
    return json_response({"entities": await service.ner(req.texts)})


# -- operations ----------------------------------------------------------------------------------------------


@router.api_route("/health", methods=["HEAD"], include_in_schema=False)  # probes that only want the status
@router.get("/health")
async def health(service: ServiceDep) -> Response:
    return json_response({"status": "ok", "model": service.model_id})


@router.get("/info")
async def info(service: ServiceDep) -> Response:
    # TEI clients read TEI's field names; "inside" is the playground's (limits of /attention, /layers; fill-mask)
    return json_response({**service.info(), **tei.info(service), "inside": inside.info(service)})


@router.get("/metrics")
async def metrics(service: ServiceDep) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.api_route("/", methods=["HEAD"], include_in_schema=False)
@router.get("/")
async def playground() -> Response:
    return FileResponse(STATIC_DIR / "index.html")
