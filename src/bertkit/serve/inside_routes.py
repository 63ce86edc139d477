"""The playground's routes for looking inside the model (the work is in inside.py):

    POST /attention       {"text", "pair"?}  every layer's and head's attention map, with the tokens
    POST /layers          {"texts", "poolings"?}  per pooling, the cosine matrix at every hidden state
    POST /layers/tokens   {"text"}  each token's cosine to [CLS], per hidden state
    GET  /model           the `bertkit inspect` tree: parts, tensors, shapes, parameter counts, heads
    POST /model/outputs   {"text", "pair"?}  the shapes of the four outputs (and the heads' logits)
    GET  /report          the `serve --report DIR` summary: a recommendation per task and the table
    GET  /report/summary.png  its chart
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from bertkit.serve import inside
from bertkit.serve.bodylimit import JsonRoute
from bertkit.serve.inside import AttentionRequest, LayersRequest, TextRequest
from bertkit.serve.routes import ServiceDep
from bertkit.serve.schemas import json_response, vectors_response
from bertkit.which import inside as library

inside_router = APIRouter(route_class=JsonRoute)  # large JSON bodies parsed off the event loop (bodylimit.py)


@inside_router.post("/attention")
async def attention(req: AttentionRequest, service: ServiceDep) -> Response:
    att, n = await inside.attention(service, req.text, req.pair)
    layers, heads = att.maps.shape[:2]
    return await vectors_response({
        "tokens": att.tokens,
        "segments": att.segments,
        "layers": layers,
        "heads": heads,
        "attentions": att.maps,  # [layer][head][query][key]
        "sep_share": att.sep_share,
        "cls_share": att.cls_share,
        "sep_heavy": att.heavy(att.sep_share),
        "cls_heavy": att.heavy(att.cls_share),
        "heavy_share": library.HEAVY,
        "usage": {"tokens": n},
    }, att.maps.size)


@inside_router.post("/layers")
async def layers(req: LayersRequest, service: ServiceDep) -> Response:
    matrices, tokens, truncated, poolings = await inside.layers(service, req.texts, req.poolings, req.truncate)
    states = next(iter(matrices.values())).shape[0]
    return json_response({"states": states, "poolings": poolings, "matrices": matrices,
                          "truncated": truncated, "usage": {"tokens": tokens}})


@inside_router.post("/layers/tokens")
async def token_layers(req: TextRequest, service: ServiceDep) -> Response:
    tokens, sims, n, truncated = await inside.token_layers(service, req.text)
    return json_response({"tokens": tokens, "states": int(sims.shape[0]), "similarity": sims,
                          "truncated": truncated, "usage": {"tokens": n}})


@inside_router.get("/model")
async def model(service: ServiceDep) -> Response:
    return json_response(library.model_tree(service.encoder))


@inside_router.post("/model/outputs")
async def model_outputs(req: AttentionRequest, service: ServiceDep) -> Response:
    return json_response(await inside.outputs(service, req.text, req.pair))


@inside_router.get("/report")
async def report(service: ServiceDep) -> Response:
    return json_response(await run_in_threadpool(inside.report, service))


@inside_router.get("/report/summary.png")
async def report_chart(service: ServiceDep) -> Response:
    return FileResponse(inside.report_chart(service), media_type="image/png")
