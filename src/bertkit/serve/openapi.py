"""The OpenAPI schema says what errors look like: every operation documents its 4xx / 5xx answers with the body
it really sends, not FastAPI's default 422 `{"detail": [...]}` (which this server never sends).

- bertkit's and OpenAI's routes: `{"error": {"message", "type", "code", "param", ...}}` (errors.py);
- TEI's routes (a `JsonRoute` with an `error_body`, e.g. `TeiRoute`): `{"error", "error_type"}` (tei.py);
- `/embed`, which takes either body (its answer follows the body it got): either shape.

The fuzz suite (tests/fuzz) checks every answer against this schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from bertkit.serve.bodylimit import JsonRoute
from bertkit.serve.metrics import flat_routes

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code", "param"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string"},
                "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},  # a stable snake_case code
                "param": {"type": ["string", "null"]},
                "request_id": {"type": "string"},  # on 500s
            },
        }
    },
}
TEI_ERROR = {
    "type": "object",
    "required": ["error", "error_type"],
    "properties": {"error": {"type": "string", "minLength": 1}, "error_type": {"type": "string"}},
}
BOTH_APIS = frozenset({"/embed"})  # routes.embed: bertkit's body or TEI's, answered in the body's own shape


def error_schema(path: str, tei: bool) -> dict[str, Any]:
    if path in BOTH_APIS:
        return {"anyOf": [{"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/TeiError"}]}
    return {"$ref": f"#/components/schemas/{'TeiError' if tei else 'Error'}"}


def document_either_body(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """/embed reads its body as a dict to choose between bertkit's and TEI's: document both types."""
    from bertkit.serve.schemas import EmbedRequest
    from bertkit.serve.tei import TeiEmbedRequest

    refs = []
    for model in (EmbedRequest, TeiEmbedRequest):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
        refs.append({"$ref": f"#/components/schemas/{model.__name__}"})
    for path in BOTH_APIS:
        operation = schema.get("paths", {}).get(path, {}).get("post")
        if operation is not None:
            operation["requestBody"]["content"]["application/json"]["schema"] = {"anyOf": refs}


def document_errors(app: FastAPI) -> None:
    """Replace `app.openapi` with one whose operations document the error bodies above (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        components.update(Error=ERROR, TeiError=TEI_ERROR)
        document_either_body(schema, components)
        tei = {(r.path, m.lower()) for r in flat_routes(app.routes)
               if isinstance(r, JsonRoute) and r.error_body is not None for m in r.methods}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                body = {"application/json": {"schema": error_schema(path, (path, method) in tei)}}
                responses["4XX"] = {"description": "Refused: the body names what and, for a limit, which one",
                                    "content": body}
                responses["5XX"] = {"description": "A bug (500, with a request id) or shutting down (503)",
                                    "content": body}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
