"""R7, secrets never leak: a scan over everything the suite captures.

What is captured (``tap()`` from session start):

* every HTTP response body the tests read through httpx, streamed or not (error
  bodies, SSE streams, ``/metrics``, the in-process apps and the real servers
  alike): ``httpx.Response.iter_raw`` / ``aiter_raw``;
* everything every asyncio subprocess writes on its pipes (``rbot up``,
  ``rbot actors|api``, the fakes, the bench): the stdout/stderr protocol of
  ``asyncio.subprocess``;
* the log of every nats-server the shared fixtures start (``feed``);
* pytest's captured stdout, stderr and log records of each test.

What is secret (``add``), whenever it becomes known:

* every ``SecretStr`` field of every ``Settings`` made in this process (JWT
  signing key, live PIN, broker tokens and keys, NATS password);
* the same settings given to a subprocess through its environment
  (``ARENA_SECRET_KEY``, ``LIVE_PIN``, ``OANDA_*_TOKEN``, ``NATS_PASSWORD`` ...);
* every password and PIN a request sent that the server accepted (a 2xx answer
  to a body with ``password``, ``new_password`` or ``pin``): user passwords;
* the NATS identities' passwords that ``rbot up`` wrote under the test's
  ``tmp_path`` (``nats-identities/*``).

Values shorter than ``MIN_LEN`` are not scanned for (they would match by
chance).  The deliberate reveals, ``rbot up``'s first-start line ``created
admin EMAIL with password PW`` and ``rbot creds NAME``'s ``export ...
NATS_PASSWORD='...'``, are cut out before the scan.

At each test's teardown the text captured during it is scanned for every
secret known by then; a hit fails that test (its report turns failed, naming
the secret's origin and where it leaked, never the value).  Text captured
outside any test is scanned at the session's end, which fails on a hit.
``SCAN.planted()`` lets the scanner's own test plant a secret and see it caught
without failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from rbot.bus.config import Settings

MIN_LEN = 6
CAP = 32 * 1024 * 1024  # characters kept per test before an early scan
SECRET_BODY_KEYS = ("password", "new_password", "pin")
REVEALS = [  # printed on purpose: rbot up's first start, `rbot creds NAME`
    re.compile(r"created admin \S+ with password \S+"),
    re.compile(r"export NATS_URL=\S+ NATS_USER=\S+ NATS_PASSWORD='[^']*'"),
]


def _secret_fields() -> list[str]:
    out = []
    for name, f in Settings.model_fields.items():
        if "SecretStr" in str(f.annotation):
            out.append(name)
    return out


SECRET_FIELDS = _secret_fields()
SECRET_ENV = {n.upper() for n in SECRET_FIELDS}


@dataclass
class Hit:
    origin: str  # where the secret came from (never the value)
    source: str  # where it was seen


@dataclass
class SecretScan:
    secrets: dict[str, str] = field(default_factory=dict)  # value -> origin
    buffer: list[tuple[str, str]] = field(default_factory=list)  # (source, text)
    size: int = 0
    scanned: int = 0  # characters scanned, for the report
    hits: list[Hit] = field(default_factory=list)
    _rx: re.Pattern[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _saved: dict[str, Any] = field(default_factory=dict)

    # -- what is secret -------------------------------------------------------
    def add(self, value: str | SecretStr | None, origin: str) -> None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not value or len(value) < MIN_LEN:
            return
        with self._lock:
            if value not in self.secrets:
                self.secrets[value] = origin
                self._rx = None

    def add_settings(self, s: Settings) -> None:
        for name in SECRET_FIELDS:
            self.add(getattr(s, name, None), f"Settings.{name}")

    def add_env(self, env: Any) -> None:
        if not isinstance(env, dict):
            return
        for key, value in env.items():
            if isinstance(key, str) and key.upper() in SECRET_ENV and isinstance(value, str):
                self.add(value, f"subprocess env {key}")

    def add_request(self, request: httpx.Request, response: httpx.Response) -> None:
        if not 200 <= response.status_code < 300 or not request.content:
            return
        try:
            body = json.loads(request.content)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(body, dict):
            for key in SECRET_BODY_KEYS:
                value = body.get(key)
                if isinstance(value, str):
                    self.add(value, f"{key} accepted by {request.method} {request.url.path}")

    def add_creds_dirs(self, root: Path) -> None:
        for path in root.glob("**/nats-identities/*"):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                self.add(path.read_text().strip(), f"NATS identity {path.name}")

    # -- what was captured ----------------------------------------------------
    def feed(self, source: str, data: str | bytes) -> None:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        if not text:
            return
        with self._lock:
            self.buffer.append((source, text))
            self.size += len(text)
            full = self.size > CAP
        if full:
            self.scan()

    def _pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._rx is None and self.secrets:
                alts = sorted(self.secrets, key=len, reverse=True)
                self._rx = re.compile("|".join(re.escape(v) for v in alts))
            return self._rx

    def scan(self, extra: list[tuple[str, str]] | None = None) -> list[Hit]:
        """Scan (and drop) the buffer and ``extra`` for every secret known now."""
        with self._lock:
            chunks, self.buffer, self.size = self.buffer, [], 0
        chunks += extra or []
        rx = self._pattern()
        found: list[Hit] = []
        if rx is None:
            return found
        by_source: dict[str, list[str]] = {}
        for source, text in chunks:
            by_source.setdefault(source, []).append(text)
        for source, parts in by_source.items():
            text = "".join(parts)  # a secret split across two chunks still matches
            self.scanned += len(text)
            for reveal in REVEALS:
                text = reveal.sub("<reveal>", text)
            for m in rx.finditer(text):
                found.append(Hit(self.secrets[m.group(0)], source))
        self.hits += found
        return found

    # -- the taps ---------------------------------------------------------------
    def tap(self) -> None:
        if self._saved:
            return
        scan = self
        resp, proto = httpx.Response, asyncio.subprocess.SubprocessStreamProtocol
        self._saved = {
            "iter_raw": resp.iter_raw,
            "aiter_raw": resp.aiter_raw,
            "pipe_data_received": proto.pipe_data_received,
            "settings_init": Settings.__init__,
            "model_copy": Settings.model_copy,
            "exec": asyncio.create_subprocess_exec,
            "popen_init": subprocess.Popen.__init__,
            "send": httpx.Client.send,
            "asend": httpx.AsyncClient.send,
        }
        saved = self._saved

        def where(r: httpx.Response) -> str:
            try:
                return f"HTTP {r.request.method} {r.request.url.path} -> {r.status_code}"
            except RuntimeError:
                return f"HTTP response {r.status_code}"

        def iter_raw(self: httpx.Response, chunk_size: int | None = None) -> Iterator[bytes]:
            for chunk in saved["iter_raw"](self, chunk_size):
                scan.feed(where(self), chunk)
                yield chunk

        async def aiter_raw(
            self: httpx.Response, chunk_size: int | None = None
        ) -> AsyncIterator[bytes]:
            async for chunk in saved["aiter_raw"](self, chunk_size):
                scan.feed(where(self), chunk)
                yield chunk

        def pipe_data_received(self: Any, fd: int, data: bytes) -> None:
            scan.feed(f"subprocess fd {fd}", data)
            saved["pipe_data_received"](self, fd, data)

        def settings_init(self: Settings, *a: Any, **kw: Any) -> None:
            saved["settings_init"](self, *a, **kw)
            scan.add_settings(self)

        def model_copy(self: Settings, *a: Any, **kw: Any) -> Settings:
            copy: Settings = saved["model_copy"](self, *a, **kw)
            scan.add_settings(copy)
            return copy

        async def create_subprocess_exec(*a: Any, **kw: Any) -> Any:
            scan.add_env(kw.get("env"))
            return await saved["exec"](*a, **kw)

        def popen_init(self: Any, *a: Any, **kw: Any) -> None:
            scan.add_env(kw.get("env"))
            saved["popen_init"](self, *a, **kw)

        def send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
            response: httpx.Response = saved["send"](self, request, **kw)
            scan.add_request(request, response)
            return response

        async def asend(
            self: httpx.AsyncClient, request: httpx.Request, **kw: Any
        ) -> httpx.Response:
            response: httpx.Response = await saved["asend"](self, request, **kw)
            scan.add_request(request, response)
            return response

        resp.iter_raw = iter_raw  # type: ignore[method-assign]
        resp.aiter_raw = aiter_raw  # type: ignore[method-assign]
        proto.pipe_data_received = pipe_data_received  # type: ignore[method-assign]
        Settings.__init__ = settings_init  # type: ignore[method-assign]
        Settings.model_copy = model_copy  # type: ignore[method-assign]
        asyncio.create_subprocess_exec = create_subprocess_exec  # type: ignore[assignment]
        subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]
        httpx.Client.send = send  # type: ignore[method-assign]
        httpx.AsyncClient.send = asend  # type: ignore[method-assign]

    @contextlib.contextmanager
    def planted(self, value: str) -> Iterator[Callable[[], list[Hit]]]:
        """Plant a secret for the scanner's own test: inside, ``check()`` scans what was
        captured so far; on the way out the secret and its hits are withdrawn."""
        self.add(value, "planted")
        before = len(self.hits)
        try:
            yield lambda: self.scan()
        finally:
            with self._lock:
                self.secrets.pop(value, None)
                self._rx = None
            self.hits = [h for h in self.hits[:before]] + [
                h for h in self.hits[before:] if h.origin != "planted"
            ]


SCAN = SecretScan()


def describe(hits: list[Hit]) -> str:
    return "; ".join(sorted({f"{h.origin} seen in {h.source}" for h in hits}))


# ---------------------------------------------------------------- pytest plugin
# (registered by tests/conftest.py)
@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("RBOT_SECRET_SCAN", "1") != "0":
        SCAN.tap()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "teardown" or not SCAN._saved:
        return
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(tmp, Path):
        SCAN.add_creds_dirs(tmp)
    captured = [(f"pytest {name}", text) for name, text in report.sections]
    hits = SCAN.scan(captured)
    if hits:
        report.outcome = "failed"
        report.longrepr = f"R7: a secret leaked: {describe(hits)}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not SCAN._saved:
        return
    SCAN.scan()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        status = f"{len(SCAN.hits)} hits" if SCAN.hits else "0 hits"
        reporter.write_line(
            f"R7 secret scan: {len(SCAN.secrets)} secrets, {SCAN.scanned:,} characters "
            f"scanned, {status}"
        )
    if SCAN.hits:
        if reporter is not None:
            reporter.write_line(f"R7 FAILED: {describe(SCAN.hits)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
