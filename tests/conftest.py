"""Shared fixtures: one real nats-server per session, a unique prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rbot.bus.config import Settings
from rbot.bus.connection import Bus, connect
from rbot.bus.provision import provision
from tests.natsd import NatsServer, running_server
from tests.r9 import pytest_sessionfinish, pytest_sessionstart, r9_guard  # noqa: F401 (R9 guard)
from tests.secretscan import SCAN

# no test may reach a real broker or read a developer's .env
os.environ.setdefault("RBOT_SIM", "on")


def pytest_configure(config: pytest.Config) -> None:
    """R7: the suite-wide secret scan (tests/secretscan.py) as a plugin of its own."""
    import tests.secretscan

    config.pluginmanager.register(tests.secretscan, "rbot-secret-scan")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with running_server(tmp_path_factory.mktemp("js")) as srv:
        yield srv
        SCAN.feed("nats-server log (session)", "".join(srv.log))


@pytest.fixture
def own_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of this test's own, for tests that kill or restart it; it runs the
    project's ``nats.conf`` settings (``sync_interval: always``): these are the
    tests of durability."""
    with running_server(tmp_path / "js", production=True) as srv:
        yield srv
        SCAN.feed("nats-server log", "".join(srv.log))


@pytest.fixture(scope="session")
def production_nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A shared server with the project's ``nats.conf`` settings (the pipeline tests)."""
    with running_server(tmp_path_factory.mktemp("jsprod") / "js", production=True) as srv:
        yield srv
        SCAN.feed("nats-server log (production, session)", "".join(srv.log))


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def make_settings(url: str, prefix: str, **over: object) -> Settings:
    base: dict[str, object] = dict(
        nats_url=url,
        rbot_prefix=prefix,
        rbot_partitions=2,
        rbot_beat_interval_s=0.2,
        rbot_pulse_interval_s=0.5,
        arena_secret_key="test-secret-key-0123456789abcdef-0123456789",
        rbot_sim="on",
        rbot_sim_interval_s=0.05,
        rbot_reaper_interval_s=0.2,
    )
    base.update(over)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@pytest.fixture
def settings(nats_server: NatsServer, prefix: str) -> Settings:
    return make_settings(nats_server.url, prefix)


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    assert settings.nats_url
    b = await connect(settings.nats_url, settings.subjects(), "test")
    await provision(b)
    try:
        yield b
    finally:
        await b.close()
