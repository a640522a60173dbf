"""R7: the suite-wide secret scan (tests/secretscan.py) catches a planted secret
wherever the suite captures text, and knows the configured secrets."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx

from tests.conftest import make_settings
from tests.secretscan import SCAN

PLANTED = "planted-secret-7Qx9wLm2"


async def leaky_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app whose error body and event stream carry the planted secret."""
    assert scope["type"] == "http"
    if scope["path"] == "/error":
        body = b'{"code":"oops","message":"token ' + PLANTED.encode() + b'"}'
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    half = len(PLANTED) // 2  # split across two chunks: still caught
    for part in (b"data: x" + PLANTED[:half].encode(), PLANTED[half:].encode() + b"\n\n"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def test_the_scan_catches_a_planted_secret_in_every_capture() -> None:
    assert SCAN._saved, "the secret scan is not installed (RBOT_SECRET_SCAN=0?)"
    with SCAN.planted(PLANTED) as check:
        assert check() == []  # nothing captured carries it yet
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"print('log line with {PLANTED}')",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await proc.communicate()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=leaky_app), base_url="http://t"
        ) as client:
            assert (await client.get("/error")).status_code == 400
            async with client.stream("GET", "/events") as r:
                async for _ in r.aiter_lines():
                    pass
        hits = check()
    sources = {h.source for h in hits}
    assert {h.origin for h in hits} == {"planted"}
    assert "subprocess fd 1" in sources
    assert "HTTP GET /error -> 400" in sources
    assert "HTTP GET /events -> 200" in sources
    assert PLANTED not in SCAN.secrets and all(h.origin != "planted" for h in SCAN.hits)


def test_configured_secrets_are_known() -> None:
    s = make_settings(
        "nats://127.0.0.1:1", "tscan", live_pin="5550123", oanda_practice_token="tok-scan-42"
    )
    assert s.arena_secret_key is not None
    for value in (s.arena_secret_key.get_secret_value(), "5550123", "tok-scan-42"):
        assert value in SCAN.secrets, value
