"""R9, paper never touches a broker: a guard for the whole test session.

From session start, every name lookup and every ``socket.create_connection``
of this process goes through ``Guard``: a broker host (OANDA's and Coinbase's
API and streaming hosts, and anything else under ``oanda.com`` or
``coinbase.com``) is recorded and refused with ``socket.gaierror``, as an
offline machine would.  A test during which an attempt happened fails at
teardown, and the session fails at its end if anything was recorded outside
a test.  ``GUARD.probe()`` lets the guard's own test make an attempt on
purpose without failing the session.

Subprocesses (``rbot up``, fakes run as processes) are not patched: they get
``RBOT_SIM=on`` from ``tests/conftest.py`` and no broker credentials, and
``test_no_broker_hosts.py`` shows that such settings run the sim.
Hooked into pytest by ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

BROKER_HOSTS = (
    "api-fxpractice.oanda.com",
    "api-fxtrade.oanda.com",
    "stream-fxpractice.oanda.com",
    "stream-fxtrade.oanda.com",
    "api.coinbase.com",
    "advanced-trade-ws.coinbase.com",
    "advanced-trade-ws-user.coinbase.com",
)
BROKER_DOMAINS = ("oanda.com", "coinbase.com")


def is_broker_host(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    name = host.strip().rstrip(".").lower()
    return name in BROKER_HOSTS or any(name == d or name.endswith("." + d) for d in BROKER_DOMAINS)


@dataclass
class Guard:
    attempts: list[tuple[str, str]] = field(default_factory=list)  # (host, where)
    where: str = "outside any test"
    _probes: list[list[str]] = field(default_factory=list)
    _saved: dict[str, Callable[..., Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _refuse(self, host: object, how: str) -> None:
        name = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
        with self._lock:
            if self._probes:
                self._probes[-1].append(name)
            else:
                self.attempts.append((name, f"{how} in {self.where}"))
        raise socket.gaierror(socket.EAI_NONAME, f"R9: {name} is a broker host, refused in tests")

    def install(self) -> None:
        if self._saved:
            return
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
            self._saved[name] = getattr(socket, name)
        orig = self._saved

        def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
            if is_broker_host(host):
                self._refuse(host, "getaddrinfo")
            return orig["getaddrinfo"](host, *args, **kw)

        def gethostbyname(host: Any) -> Any:
            if is_broker_host(host):
                self._refuse(host, "gethostbyname")
            return orig["gethostbyname"](host)

        def gethostbyname_ex(host: Any) -> Any:
            if is_broker_host(host):
                self._refuse(host, "gethostbyname_ex")
            return orig["gethostbyname_ex"](host)

        def create_connection(address: Any, *args: Any, **kw: Any) -> Any:
            if isinstance(address, tuple) and address and is_broker_host(address[0]):
                self._refuse(address[0], "create_connection")
            return orig["create_connection"](address, *args, **kw)

        socket.getaddrinfo = getaddrinfo
        socket.gethostbyname = gethostbyname
        socket.gethostbyname_ex = gethostbyname_ex
        socket.create_connection = create_connection

    def uninstall(self) -> None:
        for name, fn in self._saved.items():
            setattr(socket, name, fn)
        self._saved.clear()

    @contextlib.contextmanager
    def probe(self) -> Iterator[list[str]]:
        """Attempts inside go to the yielded list (still refused), not to the record."""
        seen: list[str] = []
        self._probes.append(seen)
        try:
            yield seen
        finally:
            self._probes.remove(seen)


GUARD = Guard()


# ---------------------------------------------------------------------- pytest hooks
# (imported by tests/conftest.py)


def pytest_sessionstart(session: pytest.Session) -> None:
    GUARD.install()


@pytest.fixture(autouse=True)
def r9_guard(request: pytest.FixtureRequest) -> Iterator[Guard]:
    GUARD.install()  # no-op once pytest_sessionstart did it
    before = len(GUARD.attempts)
    GUARD.where = request.node.nodeid
    yield GUARD
    GUARD.where = "outside any test"
    new = GUARD.attempts[before:]
    if new:
        pytest.fail(f"R9: connection to a broker host attempted: {new}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    GUARD.uninstall()
    if GUARD.attempts:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"R9 FAILED: broker hosts were contacted: {GUARD.attempts}", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
