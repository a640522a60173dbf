"""The fake API of the fast browser tests, held to the real app's OpenAPI.

``build_app`` (test_dashboard_static.py) fakes the routes the page calls.  A fake
that drifts from the real API hides bugs (the page once offered H4 candles the
real ``/candles`` refused with 422, and no test saw it).  Two checks:

* ``route_problems``: every route the fake serves exists in the real app with the
  same method, and every query parameter the fake declares is one the real
  route declares (a required one in the fake is required or defaulted there);
* ``request_problems``: every request the page sends to the fake during the
  browser tests (method, path, query values) is checked against the real
  operation's parameters: name, ``pattern``, ``enum`` (also through ``$ref``),
  integer ``minimum``/``maximum``.  The fake's middleware collects the
  problems; an autouse fixture fails the test that caused one.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from fastapi import FastAPI

from rbot.api.app import create_app
from rbot.bus.config import Settings

# served by the dashboard router itself (the same router in both apps)
STATIC = re.compile(r"^/(static/.*)?$")


@functools.cache
def real_openapi() -> dict[str, Any]:
    settings = Settings(
        _env_file=None, arena_secret_key="contract-check-key-0123456789abcdefghij", rbot_sim="on"
    )  # type: ignore[call-arg]
    return create_app(settings).openapi()


def _template_rx(path: str) -> re.Pattern[str]:
    segs = ("[^/]+" if seg.startswith("{") else re.escape(seg) for seg in path.split("/"))
    return re.compile("^" + "/".join(segs) + "$")


def real_operation(method: str, path: str) -> dict[str, Any] | None:
    for template, ops in real_openapi()["paths"].items():
        if _template_rx(template).match(path) and method.lower() in ops:
            op: dict[str, Any] = ops[method.lower()]
            return op
    return None


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[1]
        resolved: dict[str, Any] = real_openapi()["components"]["schemas"][name]
        return resolved
    return schema


def value_ok(schema: dict[str, Any], value: str) -> bool:
    schema = _resolve(schema)
    if "anyOf" in schema:
        return any(value_ok(s, value) for s in schema["anyOf"] if s.get("type") != "null")
    if "enum" in schema and value not in [str(v) for v in schema["enum"]]:
        return False
    if schema.get("type") == "integer":
        if not re.fullmatch(r"-?\d+", value):
            return False
        n = int(value)
        if "minimum" in schema and n < schema["minimum"]:
            return False
        if "maximum" in schema and n > schema["maximum"]:
            return False
    pattern = schema.get("pattern")
    return not (pattern and not re.search(pattern, value))


def request_problems(method: str, path: str, query: list[tuple[str, str]]) -> list[str]:
    if STATIC.match(path) or method == "HEAD":
        return []
    op = real_operation(method, path)
    if op is None:
        return [f"{method} {path}: no such route in the real API"]
    params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
    out = []
    for name, value in query:
        p = params.get(name)
        if p is None:
            out.append(f"{method} {path}: query parameter {name!r} unknown to the real API")
        elif not value_ok(p["schema"], value):
            out.append(f"{method} {path}: {name}={value!r} is refused by the real API (422)")
    return out


def route_problems(fake: FastAPI) -> list[str]:
    out = []
    for template, ops in fake.openapi()["paths"].items():
        if STATIC.match(template):
            continue
        real_ops = real_openapi()["paths"].get(template)
        for method, op in ops.items():
            if real_ops is None or method not in real_ops:
                out.append(
                    f"{method.upper()} {template}: the fake serves it, the real API does not"
                )
                continue
            real_params = {p["name"]: p for p in real_ops[method].get("parameters", [])}
            for p in op.get("parameters", []):
                rp = real_params.get(p["name"])
                if rp is None or rp["in"] != p["in"]:
                    out.append(
                        f"{method.upper()} {template}: {p['in']} {p['name']!r} not in the real API"
                    )
    return out
