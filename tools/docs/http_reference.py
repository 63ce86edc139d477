"""The HTTP reference page, generated from the server's own OpenAPI schema (what `GET /openapi.json` answers):
every route, its body's fields with their types, defaults and whether they are required, and its answers.

The schema comes from `create_app` over the packaged model (loaded, not served: a few seconds), so the page is
the running server's, error bodies included (serve/openapi.py)."""

from __future__ import annotations

import json
from typing import Any

HEADER = """# HTTP API

Generated from the OpenAPI schema of `bertkit serve` (`GET /openapi.json` on a running server, or
`/docs` for the interactive page) when the site is built: every route, its body and its answers. What the
fields mean, with examples: [Serving](../how-to/serving.md), [OpenAI and TEI clients](../how-to/clients.md),
[The playground](../how-to/playground.md). Every POST body is read as JSON whatever its Content-Type.
"""


def openapi_schema() -> dict[str, Any]:
    from bertkit import Encoder
    from bertkit.serve.app import create_app

    return create_app(Encoder.load()).openapi()


def http_markdown(schema: dict[str, Any] | None = None) -> str:
    schema = schema or openapi_schema()
    components = schema.get("components", {}).get("schemas", {})
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    parts = [HEADER, "| route | summary |", "|---|---|"]
    parts += [f"| [`{m.upper()} {p}`](#{anchor(m, p)}) | {op.get('summary', '')} |"
              for p, m, op in operations]
    parts.append("")
    for path, method, op in operations:
        parts.append(operation_markdown(path, method, op, components))
    parts.append(error_bodies(components))
    return "\n".join(parts)


def operation_markdown(path: str, method: str, op: dict[str, Any], components: dict[str, Any]) -> str:
    lines = [f"## `{method.upper()} {path}` {{#{anchor(method, path)}}}", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        alternatives = body.get("anyOf", [body])
        for i, alternative in enumerate(alternatives):
            name = alternative.get("$ref", "").rsplit("/", 1)[-1]
            if len(alternatives) > 1:
                lines += [f"Body, form {i + 1} of {len(alternatives)} (`{name}`):", ""]
            lines += fields_table(resolve(alternative, components), components)
    lines += ["| status | answer |", "|---|---|"]
    for status, answer in op.get("responses", {}).items():
        lines.append(f"| {status} | {answer.get('description', '')}{answer_type(answer)} |")
    return "\n".join(lines) + "\n"


def fields_table(model: dict[str, Any], components: dict[str, Any]) -> list[str]:
    properties = model.get("properties", {})
    if not properties:
        return []
    required = set(model.get("required", []))
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, prop in properties.items():
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        default = "required" if name in required else default
        rows.append(f"| `{name}` | {cell(type_text(prop, components))} | {cell(default)} | "
                    f"{cell(prop.get('description', ''))} |")
    return [*rows, ""]


def type_text(prop: dict[str, Any], components: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " or ".join(type_text(p, components) for p in prop["anyOf"])
    if "enum" in prop:
        return " | ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {type_text(prop.get('items', {}), components)}"
    if kind == "object" and "additionalProperties" in prop:
        return f"object of {type_text(prop['additionalProperties'], components)}"
    return str(kind)


def answer_type(answer: dict[str, Any]) -> str:
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    refs = [s["$ref"].rsplit("/", 1)[-1] for s in schema.get("anyOf", [schema]) if "$ref" in s]
    return f" ({', '.join(f'[{r}](#error-bodies)' for r in refs)})" if refs else ""


def error_bodies(components: dict[str, Any]) -> str:
    lines = ["## Error bodies {#error-bodies}", "",
             ("bertkit's and OpenAI's routes answer errors with `Error`, TEI's with `TeiError`; `/embed` "
              "with the shape of the body it was sent."), ""]
    for name in ("Error", "TeiError"):
        if name in components:
            lines += [f"`{name}`:", "", "```json", json.dumps(components[name], indent=2), "```", ""]
    return "\n".join(lines)


def resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def anchor(method: str, path: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in path.strip("/")) or "root"
    return f"{method}-{slug}"
