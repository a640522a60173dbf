"""R5: no request makes the server fail.

schemathesis walks the app's own OpenAPI schema and sends what it generates,
valid (positive) and invalid (negative), to the real app in-process
(``schemathesis.openapi.from_asgi``: its lifespan connects to a real
nats-server) while the real order guard, paper executor and heartbeat run on
the same bus (``running_stack``), so order routes really place, fill and cancel.

Five passes over the schema:

1. with a trader's bearer token;
2. with an admin's bearer token;
3. with a viewer's bearer token (every trader and admin route must refuse it);
4. anonymously (no credentials: only the public routes answer 2xx);
5. with a trader's cookie session and a fuzzed ``Origin`` header (which the
   schema does not declare), on the operations that check it (unsafe methods).

Every request carries ``Host: 127.0.0.1``: the app runs in loopback open-registration
mode, which refuses foreign ``Host`` values (DNS rebinding).

Checks: no 5xx and no exception out of the app (``not_a_server_error``), and
every documented response matches its schema and content type
(``response_schema_conformance``, ``content_type_conformance``; every error is
the ``ErrorOut`` envelope, documented as ``default``).  ``status_code_conformance``
is not used: 401/403/404/409 are normal refusals.  ``/ready`` answering 503 is a
report (an actor looked silent under the load), not a failed request.

- the default run is bounded (18 examples per operation, mode and pass; ~3,300
  cases, ~90 s on 2 loaded cores) and asserts at least ``DEFAULT_FLOOR`` (3,000)
  cases were sent;
- ``-m chaos`` (``test_fuzz_api_chaos``, 80 examples; ~14,000 cases, ~7 min)
  asserts at least ``CHAOS_FLOOR`` (10,000).

Both print their figures: cases sent per pass, status codes seen, failures,
seconds.

Some steering keeps the fuzz deep rather than wide:

- the in-process app's rate-limit clock runs fast, so login and register bodies
  reach the handler instead of a 429 after a dozen calls (the limits are R6,
  ``test_auth.py``);
- half the positive order bodies get a known symbol with a fresh price and a
  bracket on the right sides, so the guard accepts some and the executor fills
  them; half the ``{order_id}`` / ``{user_id}`` paths get a real id; half the
  register / login / refresh / logout bodies get a fresh email, real
  credentials or a real refresh token;
- ``POST /admin/trading-state``, ``/auth/refresh`` and ``/auth/logout`` run last
  (they may halt trading or end the caller's session);
- ``/events`` (an endless stream) is read for a fraction of a second per case,
  and half its positive cases send a numeric ``Last-Event-ID`` (a string in
  the schema), edges of int64 / uint64 included.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from rbot.api.app import create_app
from rbot.api.ratelimit import limits_of
from rbot.api.security import REFRESH_COOKIE, SESSION_COOKIE
from rbot.api.users import ensure_admin
from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import TradingState, TradingStateRecord
from rbot.bus.timing import cancel_and_wait, every
from tests.chaos.conftest import figures
from tests.stack import Stack, publish_tick, running_stack

ACTORS = ["order_guard", "paper_executor", "heartbeat"]
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
Case = schemathesis.Case[Any]
HOST = "127.0.0.1"  # the Host header of every in-process request (asgi.HOST is refused)

# a fresh price for one symbol per venue; brackets on the right sides of it
PRICES = {"oanda": ("EUR_USD", "1.0850", "1.0852"), "coinbase": ("BTC-USD", "65000", "65010")}
BRACKETS = {  # venue -> side -> (stop_loss, take_profit)
    "oanda": {"BUY": ("1.07", "1.10"), "SELL": ("1.10", "1.07")},
    "coinbase": {"BUY": ("60000", "70000"), "SELL": ("70000", "60000")},
}
ORDER_ROUTES = {
    "/brokers/oanda/orders": ("oanda", "instrument", "units"),
    "/brokers/coinbase-adv/orders": ("coinbase", "product_id", "size"),
}
# run in this order, after everything else
LAST = ("POST /admin/trading-state", "POST /auth/refresh", "POST /auth/logout")
STREAMS = {"GET /events"}
FIXED_EXAMPLES = 5  # operations without parameters or body
# answers that are reports, not failures: /ready says 503 while an actor is silent
REPORTS_5XX = {("GET /ready", 503)}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
EDGE_IDS = [-1, 0, 2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70]  # around int64 / uint64
VICTIM = ("fuzz-victim@test", "victim-pass-9")  # a user for admin routes and logins

ORIGINS = st.one_of(
    st.none(),
    st.sampled_from([f"http://{HOST}", f"https://{HOST}", "null", "http://[", "http://[::1",
                     "http://evil.example", f"http://{HOST}:99999", "//", "http://:@"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF,
                          exclude_categories=["Cc", "Zs"]), min_size=1, max_size=40),
)  # fmt: skip


@dataclass
class Identity:
    """How a pass authenticates, and which operations it fuzzes."""

    name: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    unsafe_only: bool = False


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    emails: itertools.count[int] = field(default_factory=itertools.count)
    passes: list[str] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)  # setup and teardown steps, timed
    _mark: float = field(default_factory=time.monotonic)

    def phase(self, name: str) -> None:
        """Time the step that just ended (a slow CI run then says where its time went)."""
        now = time.monotonic()
        self.phases.append(f"{name} {now - self._mark:.1f} s")
        self._mark = now

    def record(self, case: Case, response: Any) -> None:
        self.cases += 1
        label, status = case.operation.label, response.status_code
        self.statuses[f"{label} {status}"] += 1
        ctype = response.headers.get("content-type", [""])[0]
        if status not in (200, 201) or not ctype.startswith("application/json"):
            return
        body = response.json()
        if case.operation.path in ORDER_ROUTES:
            self.order_ids.append(body["order_id"])
        elif label == "POST /auth/register":
            self.user_ids.append(body["sub"])
        elif isinstance(body, dict) and body.get("refresh_token"):
            self.refresh_tokens.append(body["refresh_token"])

    def report(self, seconds: float) -> str:
        lines = [f"R5 fuzz: {self.cases} cases in {seconds:.1f} s, {len(self.failures)} failures"]
        lines += [f"  pass {p}" for p in self.passes]
        lines += [f"  steps: {', '.join(self.phases)}"]
        lines += [f"  {k}: {n}" for k, n in sorted(self.statuses.items())]
        lines += [f"  FAILED {f}" for f in self.failures]
        return "\n".join(lines)


def _pick(data: st.DataObject, items: list[str]) -> str | None:
    """One of ``items``, which grow as the run goes: drawn as an index, so a replay
    makes the same draws even when the list has changed (no flaky strategy)."""
    index = data.draw(st.integers(0, 2**16), label="pick")
    return items[index % len(items)] if items else None


def _steer(case: Case, data: st.DataObject, tally: Tally) -> None:
    """Point half of the positive cases at things that exist (see the module docstring)."""
    label, body = case.operation.label, case.body
    params = case.path_parameters or {}
    if not data.draw(st.booleans(), label="steer"):
        return
    if case.operation.path in ORDER_ROUTES and isinstance(body, dict):
        venue, symbol_field, qty_field = ORDER_ROUTES[case.operation.path]
        side = data.draw(st.sampled_from(["BUY", "SELL"]))
        stop, take = BRACKETS[venue][side]
        qty = data.draw(st.integers(1, 1000)) / (1 if venue == "oanda" else 1000)
        body.update({
            symbol_field: PRICES[venue][0], "side": side, "order_type": "MARKET",
            qty_field: str(qty), "stop_loss_price": stop, "take_profit_price": take,
            "quality_score": "80",
        })  # fmt: skip
        for unused in ("entry_price", "limit_price"):
            body.pop(unused, None)
    elif label == "POST /auth/register" and isinstance(body, dict):
        body.update(email=f"fuzz-{next(tally.emails)}@test", password=uuid.uuid4().hex)
    elif label == "POST /auth/login" and isinstance(body, dict):
        body.update(email=VICTIM[0], password=VICTIM[1])
    elif label == "GET /events":  # a string header that holds a number
        last_id = data.draw(st.integers() | st.sampled_from(EDGE_IDS), label="Last-Event-ID")
        case.headers["Last-Event-ID"] = str(last_id)
    elif label in ("POST /auth/refresh", "POST /auth/logout"):
        token = _pick(data, tally.refresh_tokens)
        if token is not None:
            case.body = {**(body if isinstance(body, dict) else {}), "refresh_token": token}
    for name, known in (("order_id", tally.order_ids), ("user_id", tally.user_ids)):
        if name in params:
            value = _pick(data, known)
            if value is not None:
                params[name] = value


def _describe(exc: BaseException) -> str:
    """The failure and every sub-exception, without tracebacks."""
    text = "".join(traceback.format_exception_only(exc)).strip()
    if isinstance(exc, BaseExceptionGroup):
        text += "".join("\n  - " + _describe(e).replace("\n", "\n    ") for e in exc.exceptions)
    return text


def _operations(schema: Any, who: Identity) -> list[Any]:
    ops = [result.ok() for result in schema.get_all_operations()]
    if who.unsafe_only:
        ops = [op for op in ops if op.method.upper() in UNSAFE]
    return sorted(ops, key=lambda op: LAST.index(op.label) + 1 if op.label in LAST else 0)


def fuzz(schema: Any, who: Identity, tally: Tally, examples: int, stream_examples: int) -> None:
    """Every operation, positive then negative; failures are collected, not raised."""
    for op in _operations(schema, who):
        raw = op.definition.raw
        modes = [GenerationMode.POSITIVE]
        if raw.get("parameters") or "requestBody" in raw:
            modes.append(GenerationMode.NEGATIVE)
            count = stream_examples if op.label in STREAMS else examples
        else:  # nothing to vary but the credentials, which are ours
            count = FIXED_EXAMPLES
        for mode in modes:
            try:
                _fuzz_operation(op, mode, who, tally, count)
            except (Exception, BaseExceptionGroup) as exc:  # every failure, then assert
                tally.failures.append(f"{who.name}: {op.label} [{mode.value}]: {_describe(exc)}")


def _fuzz_operation(op: Any, mode: GenerationMode, who: Identity, tally: Tally, n: int) -> None:
    stream = op.label in STREAMS

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=op.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Case, data: st.DataObject) -> None:
        if mode is GenerationMode.POSITIVE:
            _steer(case, data, tally)
        headers = {"Host": HOST, **who.headers}
        if who.cookies:  # a cookie session: no generated Authorization may shadow it
            if case.headers:
                case.headers.pop("Authorization", None)
            origin = data.draw(ORIGINS, label="origin")
            if origin is not None:
                headers["Origin"] = origin
        response = case.call(headers=headers, cookies=who.cookies, timeout=0.3 if stream else 20)
        tally.record(case, response)
        checks = CHECKS
        if (op.label, response.status_code) in REPORTS_5XX:
            checks = [c for c in CHECKS if c is not not_a_server_error]
        case.validate_response(response, checks=checks, headers=headers)

    run()


async def _ticker(bus: Bus) -> None:
    """A feed's steady ticks (a feed is periodic by nature: this is not a wait)."""
    async for seq in every(1.0):
        for venue, (symbol, bid, ask) in PRICES.items():
            await publish_tick(bus, venue, symbol, bid, ask, seq)


async def _trading_active(bus: Bus) -> None:
    """Undo a halt from the admin pass, so the next pass's orders get to the guard's rules."""
    rec = TradingStateRecord(
        state=TradingState.ACTIVE, reason="fuzz", by="test", ts=codec.now_iso()
    )
    await (await bus.kv("control")).put(keys.TRADING, codec.encode(rec))


def _on_loopback(app: Any) -> Any:
    """The app as a client of 127.0.0.1 reaches it: schemathesis' in-process requests
    say ``Host: testserver``, which loopback open mode refuses (cases send ``HOST``)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
            given_host = dict(scope["headers"]).get(b"host", b"")
            host = HOST.encode() if given_host == asgi.HOST.encode() else given_host
            scope = {**scope, "headers": [(b"host", host), *headers]}
        await app(scope, receive, send)

    return wrapped


@contextlib.asynccontextmanager
async def fuzz_target(
    settings: Settings, bus: Bus, tally: Tally
) -> AsyncIterator[tuple[Stack, Any]]:
    settings = settings.model_copy(
        update={"rbot_open_registration": "trader", "rbot_orders_per_minute": 1_000_000}
    )
    async with running_stack(settings, only=ACTORS) as stack:
        tally.phase("stack up")
        ticker = asyncio.create_task(_ticker(bus))
        app = create_app(settings, instance="fuzz")
        try:
            # loading the schema starts the app's lifespan in schemathesis' own loop thread
            schema = await asyncio.to_thread(
                schemathesis.openapi.from_asgi, "/openapi.json", _on_loopback(app)
            )
            fast = itertools.count(step=3600)
            limits_of(app.state.ctx).clock = lambda: float(next(fast))
            tally.phase("schema")
            yield stack, schema
        finally:
            await cancel_and_wait(ticker)
            tally.phase("after the passes")
            await asyncio.to_thread(asgi.shutdown_lifespans)
            tally.phase("app down")


async def _identities(stack: Stack, bus: Bus, tally: Tally) -> list[Identity]:
    trader = await stack.user("fuzz-trader@test")
    viewer_pw = "viewer-pass-9"
    created = await ensure_admin(bus)
    assert created is not None
    email, password = created
    async with stack.client() as c:
        r = await c.post("/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        admin = r.json()["access_token"]
        r = await c.post("/auth/register", json={"email": VICTIM[0], "password": VICTIM[1]})
        assert r.status_code == 201, r.text
        tally.user_ids.append(r.json()["sub"])
        r = await c.post(
            "/auth/login",
            json={"email": "fuzz-trader@test", "password": "correct-horse-9", "cookie": True},
        )
        assert r.status_code == 200, r.text
        cookies = {name: c.cookies[name] for name in (SESSION_COOKIE, REFRESH_COOKIE)}
        r = await c.post(
            "/auth/register",
            json={"email": "fuzz-viewer@test", "password": viewer_pw, "role": "viewer"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 201, r.text
        r = await c.post("/auth/login", json={"email": "fuzz-viewer@test", "password": viewer_pw})
        assert r.status_code == 200, r.text
        viewer = r.json()["access_token"]
    return [
        Identity("trader", headers={"Authorization": f"Bearer {trader}"}),
        Identity("admin", headers={"Authorization": f"Bearer {admin}"}),
        Identity("viewer", headers={"Authorization": f"Bearer {viewer}"}),
        Identity("anonymous"),
        Identity("trader-cookie", cookies=cookies, unsafe_only=True),
    ]


async def _run(settings: Settings, bus: Bus, examples: int, streams: int) -> tuple[Tally, float]:
    tally = Tally()
    started = time.monotonic()
    async with fuzz_target(settings, bus, tally) as (stack, schema):
        identities = await _identities(stack, bus, tally)
        tally.phase("identities")
        for who in identities:
            t0, n0 = time.monotonic(), tally.cases
            await asyncio.to_thread(fuzz, schema, who, tally, examples, streams)
            tally.passes.append(
                f"{who.name}: {tally.cases - n0} cases in {time.monotonic() - t0:.1f} s"
            )
            await _trading_active(bus)
        tally.phase("passes")
        async with stack.client() as c:  # the stack is still up after all that
            assert (await c.get("/health")).status_code == 200
    tally.phase("stack down")
    return tally, time.monotonic() - started


DEFAULT_FLOOR = 3_000
CHAOS_FLOOR = 10_000
PASSES = {"trader", "admin", "viewer", "anonymous", "trader-cookie"}


def _assert_run(tally: Tally, seconds: float, floor: int) -> None:
    report = tally.report(seconds)
    assert not tally.failures, report
    assert {p.split(":")[0] for p in tally.passes} == PASSES, report
    assert tally.cases >= floor, f"only {tally.cases} cases (floor {floor})\n{report}"
    assert tally.order_ids, "no order was ever accepted: the order routes did no real work"
    fivexx = {k: n for k, n in tally.statuses.items() if k.rsplit(" ", 1)[1].startswith("5")}
    assert set(fivexx) <= {f"{op} {code}" for op, code in REPORTS_5XX}, fivexx


async def test_fuzz_api(settings: Settings, bus: Bus) -> None:
    tally, seconds = await _run(settings, bus, examples=18, streams=6)
    print(tally.report(seconds))
    _assert_run(tally, seconds, DEFAULT_FLOOR)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
async def test_fuzz_api_chaos(settings: Settings, bus: Bus) -> None:
    tally, seconds = await _run(settings, bus, examples=80, streams=10)
    print(tally.report(seconds))
    codes = Counter(k.rsplit(" ", 1)[1] for k in tally.statuses.elements())
    figures(
        "R5 fuzz at chaos size (schemathesis, 5 identities)",
        {
            "cases": f"{tally.cases:,} (floor {CHAOS_FLOOR:,})",
            "seconds": f"{seconds:.0f}",
            "failures": len(tally.failures),
            "passes": "; ".join(tally.passes),
            "statuses": ", ".join(f"{c}: {n:,}" for c, n in sorted(codes.items())),
            "orders accepted": len(tally.order_ids),
        },
    )
    _assert_run(tally, seconds, CHAOS_FLOOR)
