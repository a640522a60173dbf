"""R9, paper never touches a broker: the session guard works, and nothing that
the tests or ``rbot up`` run by default would point at a broker host.

The guard itself (``tests/r9.py``) is installed for the whole session by
``tests/conftest.py`` and fails any test that tries a broker host.
"""

from __future__ import annotations

import socket

import httpx
import pytest
from websockets.asyncio.client import connect

from rbot.actors.feeds.coinbase_client import REST_URL, WS_URL
from rbot.actors.feeds.live import (
    CoinbaseSource,
    OandaSource,
    SimSource,
    coinbase_rest_base,
    make_source,
    oanda_endpoints,
)
from rbot.actors.feeds.oanda_proto import OANDA_GRANULARITIES
from rbot.actors.feeds.output import FeedTuning
from rbot.api.routers import market
from rbot.bus.config import Settings
from tests.r9 import BROKER_HOSTS, GUARD, is_broker_host

BROKER_ENV = (
    "RBOT_SIM", "RBOT_SIM_OANDA", "RBOT_SIM_COINBASE", "OANDA_ENV", "OANDA_PRACTICE_ACCOUNT_ID", "OANDA_PRACTICE_TOKEN",
    "OANDA_LIVE_ACCOUNT_ID", "OANDA_LIVE_TOKEN", "OANDA_REST_URL", "OANDA_STREAM_URL",
    "COINBASE_ADV_BASE", "COINBASE_WS_URL", "COINBASE_API_KEY_ID", "COINBASE_API_KEY_SECRET",
)  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in BROKER_ENV:
        monkeypatch.delenv(var, raising=False)


def test_the_guard_knows_every_broker_host() -> None:
    for host in BROKER_HOSTS:
        assert is_broker_host(host) and is_broker_host(host.upper() + ".")
    assert is_broker_host("advanced-trade-ws-user.coinbase.com")
    assert is_broker_host(b"api.coinbase.com")
    for host in ("127.0.0.1", "localhost", "notcoinbase.com.example", "oanda.com.evil.test"):
        assert not is_broker_host(host)


def test_the_guard_is_active_and_refuses_broker_hosts() -> None:
    assert GUARD._saved, "the R9 guard is not installed for this session"
    with GUARD.probe() as seen:
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("api-fxpractice.oanda.com", 443)
        with pytest.raises(socket.gaierror):
            socket.create_connection(("stream-fxtrade.oanda.com", 443), timeout=1)
    assert seen == ["api-fxpractice.oanda.com", "stream-fxtrade.oanda.com"]
    assert socket.getaddrinfo("127.0.0.1", 80)  # loopback is untouched


async def test_the_guard_catches_async_http_and_websocket_clients() -> None:
    with GUARD.probe() as seen:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{REST_URL}/api/v3/brokerage/market/products")
        with pytest.raises(OSError):
            async with connect(WS_URL, open_timeout=2):
                pass
    assert seen == ["api.coinbase.com", "advanced-trade-ws.coinbase.com"]


def test_default_settings_without_credentials_run_the_sim(clean_env: None) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.rbot_sim == "auto"
    for venue in ("oanda", "coinbase"):
        assert settings.use_sim(venue)
        assert isinstance(make_source(venue, settings, FeedTuning()), SimSource)


def test_only_credentials_or_an_explicit_choice_leave_the_sim(clean_env: None) -> None:
    def source(venue: str, **kw: object) -> type:
        settings = Settings(_env_file=None, **kw)  # type: ignore[call-arg]
        return type(make_source(venue, settings, FeedTuning()))

    assert source("oanda", oanda_practice_token="t") is OandaSource
    assert source("oanda", oanda_practice_token="t", rbot_sim="on") is SimSource
    assert source("oanda", rbot_sim="off") is OandaSource
    assert source("coinbase", coinbase_ws_url="ws://127.0.0.1:9/") is CoinbaseSource
    assert source("coinbase", coinbase_api_key_id="k") is CoinbaseSource
    assert source("coinbase", coinbase_ws_url="ws://127.0.0.1:9/", rbot_sim="on") is SimSource


def test_each_venue_has_its_own_sim_switch_with_rbot_sim_as_default(clean_env: None) -> None:
    def source(venue: str, **kw: object) -> type:
        settings = Settings(_env_file=None, **kw)  # type: ignore[call-arg]
        return type(make_source(venue, settings, FeedTuning()))

    # only a Coinbase key: Coinbase live, OANDA on the sim
    cb_only = {"coinbase_api_key_id": "k", "rbot_sim_oanda": "on", "rbot_sim_coinbase": "off"}
    assert source("oanda", **cb_only) is SimSource
    assert source("coinbase", **cb_only) is CoinbaseSource
    # only OANDA credentials: the reverse, with RBOT_SIM=off as the default for OANDA
    oa_only = {"oanda_practice_token": "t", "rbot_sim": "off", "rbot_sim_coinbase": "on"}
    assert source("oanda", **oa_only) is OandaSource
    assert source("coinbase", **oa_only) is SimSource
    # unset per venue: RBOT_SIM decides, and auto looks at each venue's credentials
    assert source("coinbase", rbot_sim="on", rbot_sim_oanda="off") is SimSource
    assert source("oanda", rbot_sim_oanda="auto", oanda_practice_token="t") is OandaSource


def test_a_bad_per_venue_sim_value_fails_at_start(clean_env: None) -> None:
    with pytest.raises(ValueError, match="rbot_sim_oanda"):
        Settings(_env_file=None, rbot_sim_oanda="maybe")  # type: ignore[call-arg, arg-type]


def test_a_fake_url_never_leaves_the_other_half_on_a_broker_host(clean_env: None) -> None:
    def settings(**kw: object) -> Settings:
        return Settings(_env_file=None, **kw)  # type: ignore[call-arg]

    fake = "http://127.0.0.1:8123"
    assert oanda_endpoints(settings(oanda_stream_url=fake)) == (fake, fake)
    assert oanda_endpoints(settings(oanda_rest_url=fake)) == (fake, fake)
    assert oanda_endpoints(settings()) == (
        "https://stream-fxpractice.oanda.com",
        "https://api-fxpractice.oanda.com",
    )
    assert oanda_endpoints(settings(oanda_env="live"))[1] == "https://api-fxtrade.oanda.com"
    assert coinbase_rest_base(settings(coinbase_ws_url="ws://127.0.0.1:8124/")) == (
        "http://127.0.0.1:8124"
    )
    assert coinbase_rest_base(
        settings(coinbase_ws_url="ws://127.0.0.1:8124/", coinbase_adv_base=fake)
    ) == (fake)
    assert coinbase_rest_base(settings()) == REST_URL


def test_the_api_validates_the_same_oanda_granularities_as_the_client() -> None:
    assert market.OANDA_GRANULARITIES == OANDA_GRANULARITIES
