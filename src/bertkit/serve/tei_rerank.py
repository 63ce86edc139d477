"""text-embeddings-inference's retrieval routes: POST /embed_sparse (SPLADE vectors from the masked-LM head)
and POST /rerank (a cross-encoder ranks texts for a query), with TEI's bodies, answers and error shape.

    curl -s localhost:8000/embed_sparse -d '{"inputs": ["A man plays guitar."]}'
    # [[{"index": 2158, "value": 1.53}, {"index": 3016, "value": 2.59}, ...]]
    curl -s localhost:8000/rerank -d '{"query": "What is Deep Learning?", "texts": ["Deep Learning is ...", "..."]}'
    # [{"index": 0, "score": 0.93}, {"index": 1, "score": 0.12}]     (best first; "text" with return_text)

/embed_sparse needs a served model with the masked-LM head (e.g. `bertkit serve --model splade-tiny`); /rerank
needs a cross-encoder: the served folder itself when it is one, or `bertkit serve --reranker DIR`. Without it
/rerank answers 424, as TEI does for a model that is not a reranker. Inputs cut to the model's limit are
listed, comma-separated, in the `X-Truncated` answer header (TEI's bodies have no place for them);
`truncate: false` refuses them with 413.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from fastapi import APIRouter
from starlette.responses import Response

from bertkit.serve.errors import ServeError
from bertkit.serve.routes import ServiceDep
from bertkit.serve.schemas import JsonBody, json_response, validate_body, vectors_response
from bertkit.serve.tei import TeiRequest, TeiRoute, TeiTextOptions, prepared_texts, tei_request

if TYPE_CHECKING:
    from bertkit.batching import Prepared
    from bertkit.serve.service import Service

retrieval_router = APIRouter(route_class=TeiRoute)

SPARSE_TERMS = 1_024  # the answer bound's estimate of a SPLADE vector's non-zero terms (at most the vocabulary)


class TeiEmbedSparseRequest(TeiTextOptions):
    inputs: str | list[str]


class TeiRerankRequest(TeiRequest):
    query: str
    texts: list[str]
    truncate: bool | None = None  # None: this server's auto_truncate (true)
    truncation_direction: Literal["right", "left", "Right", "Left"] = "right"
    raw_scores: bool = False  # the logit instead of the activated score
    return_text: bool = False


def truncated_header(positions: list[int]) -> dict[str, str] | None:
    return {"X-Truncated": ",".join(map(str, positions))} if positions else None


@retrieval_router.post("/embed_sparse")
async def embed_sparse(body: JsonBody, service: ServiceDep) -> Response:
    """Per input, its non-zero SPLADE weights: [{"index": vocabulary id, "value": weight}], by index."""
    from bertkit.vectors.sparse import encode_sparse, sparse_json

    req = tei_request(TeiEmbedSparseRequest, body)
    if not service.encoder.model.has_mlm:  # 424, as TEI answers for a model that is not a SPLADE model
        raise ServeError(f"POST /embed_sparse needs the masked-LM head (cls.predictions.*), which {service.model_id} "
                         "does not have; serve a model with it (e.g. --model splade-tiny)", 424, "missing_head")
    truncate = req.truncate is not False
    texts = await prepared_texts(service, req.inputs, req, truncate)
    prepared = await service.prepare(texts, truncate=truncate)  # 413 with truncate: false
    terms = min(service.encoder.model.config.vocab_size, SPARSE_TERMS)  # index and value per term
    out = await service.admit(prepared, lambda p, rows: encode_sparse(service.encoder, p).matrix,
                              answer=2 * terms * len(texts), what="sparse weights")
    truncated = prepared.truncated
    rows = [sparse_json(out, i) for i in range(len(texts))]
    response = await vectors_response(rows, 2 * out.nnz)
    response.headers.update(truncated_header(truncated) or {})
    return response


async def ranked(service: Service, req: TeiRerankRequest) -> tuple[list[dict], list[int]]:
    """The texts ranked by the served cross-encoder, and the positions of the pairs cut to its limit."""
    import torch

    from bertkit.heads.predict import batched_logits

    ce = service.reranker
    if ce is None:
        raise ServeError("this server has no cross-encoder, so it cannot rerank; serve one (`bertkit serve "
                         "--model CE_DIR`, or --reranker CE_DIR beside an embedding model)", 424, "no_reranker")
    if req.truncation_direction.lower() == "left":
        raise ServeError("truncation_direction left is not supported for query-text pairs; use right", 413,
                         "truncation_direction", "truncation_direction")
    (query,) = service.texts([req.query], "query")
    texts = service.texts(req.texts, "text")
    prepared = await service.prepare([query] * len(texts), texts, truncate=req.truncate is not False,
                                     tokenizer=ce.tokenizer)  # the cross-encoder's pairs, tokenized once

    def run(pairs: Prepared, rows: slice) -> np.ndarray:  # on the model thread, a piece of the documents
        return torch.stack(batched_logits(ce.model, ce.tokenizer, pairs.encodings))[:, 0].numpy()

    logits = await service.admit(prepared, run, answer=3 * len(texts), what="scores")
    scores = logits if req.raw_scores else ce.activate(logits)
    order = np.argsort(-logits, kind="stable")
    results = [{"index": int(i), "score": float(scores[i]), **({"text": texts[i]} if req.return_text else {})}
               for i in order]
    return results, prepared.truncated


@retrieval_router.post("/rerank")
async def rerank(body: JsonBody, service: ServiceDep) -> Response:
    """TEI's /rerank: [{"index", "score"(, "text")}], best first."""
    req = validate_body(TeiRerankRequest, body)
    results, truncated = await ranked(service, req)
    return json_response(results, headers=truncated_header(truncated))
