"""Per-key quotas (requests and tokens per minute, token buckets): 429 with Retry-After after the stated count,
recovery after the window, counters in /metrics by key name. The window is a few seconds here (the keys
store's `window`, `bertkit serve --quota-window` for tests) so the tests do not sleep for minutes."""

from __future__ import annotations

import re
import time

import pytest
from support import error_of, thread_server

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

WINDOW = 4.0
RPM, TPM = 3, 40
KEYS = {"alice": "sk-alice-q-81c2d9", "bob": "sk-bob-q-47e0a1", "carol": "sk-carol-q-6b3f55"}
KEYS_FILE = f"""\
{KEYS['alice']} alice rpm={RPM}
{KEYS['bob']} bob tpm={TPM}
{KEYS['carol']} carol role=operator
"""
TEXT = "A man is playing a guitar."


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def keyed_server(encoder, folder, window: float):
    from bertkit.serve import create_app
    from bertkit.serve.auth import AccessPolicy, KeyStore

    (folder / "keys.txt").write_text(KEYS_FILE)
    return thread_server(create_app(encoder, access=AccessPolicy(KeyStore(path=folder / "keys.txt", window=window))))


@pytest.fixture(scope="module")
def server(encoder, tmp_path_factory):
    """Quotas per WINDOW seconds: the requests test waits for the window."""
    with keyed_server(encoder, tmp_path_factory.mktemp("quota"), WINDOW) as srv:
        yield srv


@pytest.fixture(scope="module")
def minute_server(encoder, tmp_path_factory):
    """Quotas per minute, as served: 40 tokens a minute come back too slowly to blur the token counts."""
    with keyed_server(encoder, tmp_path_factory.mktemp("quota-minute"), 60.0) as srv:
        yield srv


def metric(server, name: str, **labels: str) -> float:
    text = server.get("/metrics", headers=auth("carol")).text
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:{{(.*)}})? (\S+)", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or "")) == labels:
            return float(m.group(2))
    return 0.0


def test_requests_quota_gives_429_after_the_count_and_recovers(server):
    def models():
        return server.get("/v1/models", headers=auth("alice"))

    assert [models().status_code for _ in range(RPM)] == [200] * RPM
    r = models()
    message = error_of(r, 429, "requests_per_minute")
    assert "'alice' has used its 3 requests per 4 s" in message
    assert r.json()["error"]["type"] == "rate_limit_exceeded" and r.headers["x-request-id"]
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= WINDOW / RPM + 1
    assert server.get("/v1/models", headers=auth("carol")).status_code == 200  # other keys are not affected

    time.sleep(wait)  # Retry-After is honest: one request is back
    assert models().status_code == 200
    error_of(models(), 429, "requests_per_minute")
    time.sleep(WINDOW)  # a window of rest refills the whole quota
    assert [models().status_code for _ in range(RPM)] == [200] * RPM
    error_of(models(), 429, "requests_per_minute")

    assert metric(server, "bertkit_key_requests_total", key="alice", status="200") == 2 * RPM + 1
    assert metric(server, "bertkit_key_requests_total", key="alice", status="429") == 3
    assert metric(server, "bertkit_key_quota_refusals_total", key="alice", quota="requests") == 3


def test_tokens_quota_counts_the_tokens_of_each_request(minute_server, encoder):
    server = minute_server
    n = len(encoder.tokenizer.encode([TEXT])[0].ids)  # 9 with [CLS] and [SEP]
    fits = TPM // n
    before = metric(server, "bertkit_tokens_total")
    for _ in range(fits):
        r = server.post("/embed", {"texts": [TEXT]}, headers=auth("bob"))
        assert r.status_code == 200 and r.json()["usage"]["tokens"] == n
    r = server.post("/embed", {"texts": [TEXT]}, headers=auth("bob"))
    assert f"has used its {TPM} tokens per minute (this request needs {n})" in error_of(r, 429, "tokens_per_minute")
    assert int(r.headers["retry-after"]) >= 1
    assert metric(server, "bertkit_tokens_total") == before + fits * n  # refused before the model ran

    # One request bigger than the whole quota can never pass: 413, not 429.
    big = server.post("/v1/embeddings", {"input": [TEXT] * (TPM // n + 1), "model": "m"}, headers=auth("bob"))
    assert "may use 40 tokens per minute: split the request" in error_of(big, 413, "tokens_per_minute")

    openai = pytest.importorskip("openai", reason="the test extra is not installed (openai)")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS["bob"], max_retries=0)
    with pytest.raises(openai.RateLimitError, match="tokens per minute") as e:
        client.embeddings.create(input=TEXT, model="m")
    assert int(e.value.response.headers["retry-after"]) > 1  # 9 tokens at 40 a minute: about 13 s
    assert metric(server, "bertkit_key_tokens_total", key="bob") == fits * n
    assert metric(server, "bertkit_key_quota_refusals_total", key="bob", quota="tokens") == 2
    # carol has no quota: her tokens are counted, never refused.
    for _ in range(fits + 2):
        assert server.post("/embed", {"texts": [TEXT]}, headers=auth("carol")).status_code == 200
    assert metric(server, "bertkit_key_tokens_total", key="carol") == (fits + 2) * n


def test_metrics_name_keys_never_show_them(server):
    server.get("/info", headers=auth("alice"))
    text = server.get("/metrics", headers=auth("carol")).text
    assert 'key="carol"' in text and 'key="alice"' in text
    for key in KEYS.values():
        assert key not in text
    server.get("/info", headers={"Authorization": "Bearer sk-nope"})
    server.get("/info")
    assert metric(server, "bertkit_auth_failures_total", reason="invalid") >= 1
    assert metric(server, "bertkit_auth_failures_total", reason="missing") >= 1
    assert metric(server, "bertkit_errors_total", route="/info", code="invalid_api_key") >= 1


# ----------------------------------------------------------------------------------------------------------
# The bucket itself, on a clock the test moves


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_the_stated_rate():
    from bertkit.serve.quota import TokenBucket, retry_after

    clock = Clock()
    bucket = TokenBucket(60, 60.0, clock)  # 60 per minute: one per second
    assert [bucket.take(20) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(5) == pytest.approx(5.0) and retry_after(bucket.take(5)) == 5  # nothing spent on a refusal
    clock.now += 2.5
    assert bucket.take(3) == pytest.approx(0.5) and bucket.take(2) == 0.0
    clock.now += 1000
    assert bucket.level <= 60 and bucket.take(60) == 0.0 and bucket.take(1) == pytest.approx(1.0)
    bucket.configure(10, 60.0)  # a reload with a lower limit: spent stays spent, the level is capped
    clock.now += 30  # at the new rate, 10 a minute: 5 back
    assert bucket.take(6) == pytest.approx(6.0) and bucket.take(5) == 0.0 and bucket.take(1) == pytest.approx(6.0)
    assert retry_after(0.01) == 1


def test_reload_keeps_what_a_key_has_spent(tmp_path):
    from bertkit.serve.auth import KeyStore

    path = tmp_path / "keys.txt"
    path.write_text("sk-one one rpm=2\n")
    store = KeyStore(path=path, window=60)
    caller = store.lookup("sk-one")
    caller.take_request()
    caller.take_request()
    path.write_text("sk-one renamed rpm=5\nsk-two two\n")
    assert store.reload()
    again = store.lookup("sk-one")
    assert again is caller and again.name == "renamed" and again.requests.limit == 5
    assert again.requests.level < 1  # the two requests it made stay spent
    assert store.lookup("sk-two").requests is None
