"""Property-based fuzzing of `bertkit serve` from its own OpenAPI schema (schemathesis): every route, bodies
that fit the schema and bodies that do not, against a real uvicorn server running the packaged model.

Checks on every answer: no 5xx; the answer matches the schema (which documents the error bodies the server
really sends: serve/openapi.py); every 4xx carries a documented error body with a snake_case code, a message,
and, on bertkit's / OpenAI's body, a `param`. The number of generated cases per route and mode is
BERTKIT_FUZZ_EXAMPLES (a few in `make test`; `make fuzz` runs thousands and prints the count).
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from support import thread_server

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
schemathesis = pytest.importorskip("schemathesis", reason="the test extra is not installed: pip install -e '.[test]'")
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

EXAMPLES = int(os.environ.get("BERTKIT_FUZZ_EXAMPLES", "4"))
COUNTS: Counter = Counter()  # (status class) -> answers, reported at the end of the module


@pytest.fixture(scope="module")
def server(encoder):
    from bertkit.serve import Limits, create_app

    # Small request limits keep generated lists cheap; the limits are part of what is fuzzed.
    limits = Limits(max_inputs=16, max_chars=2_000, max_queued_tokens=8_192, max_body_bytes=256 * 1024,
                    body_timeout_s=5.0)
    with thread_server(create_app(encoder, limits)) as srv:
        yield srv
    total = sum(COUNTS.values())
    print(f"\nfuzz (server): {total} generated requests, by status: {dict(sorted(COUNTS.items()))}")


@pytest.fixture(scope="module")
def operations(server):
    """Every operation of the server's OpenAPI schema."""
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [result.ok() for result in api.get_all_operations()]


def documented_error_body(ctx, response, case) -> bool | None:
    """A 4xx answer is JSON with a message and a stable code (bertkit's / OpenAI's body) or an error_type
    (TEI's body), never a bare string or FastAPI's {"detail": ...}."""
    if not 400 <= response.status_code < 500:
        return None
    body = response.json()
    error = body.get("error")
    if isinstance(error, dict):
        assert error.get("message") and error.get("param") is not None, body
        assert error.get("code", "").replace("_", "").isalnum() and error["code"].islower(), body
    else:
        assert isinstance(error, str) and error and body.get("error_type"), body
    return True


CHECKS = [not_a_server_error, response_schema_conformance, documented_error_body]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_every_route(mode, operations, server):
    """Bodies (and parameters) that fit the schema, then ones that do not, for every route."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    assert len(operations) >= 20, [op.label for op in operations]
    for op in operations:

        @given(op.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=EXAMPLES < 10, database=None, print_blob=True)
        def fuzz(case):
            response = case.call(base_url=server.url, timeout=60)
            COUNTS[f"{response.status_code // 100}xx" if response.status_code != 200 else "200"] += 1
            case.validate_response(response, checks=CHECKS)

        try:
            fuzz()
        except Unsatisfiable:  # negative mode on a route with no body and no parameters: nothing to break
            continue
        except Exception as e:
            raise AssertionError(f"{op.label} ({mode}): {e}") from e
