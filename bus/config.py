"""Settings: one object, read from the environment (and ``.env``).

Names follow the seed (``ARENA_SECRET_KEY``, ``EXECUTION_ENABLED``, ``LIVE_PIN``,
``OANDA_PRACTICE_TOKEN`` ...).  Secrets are ``SecretStr``: their repr is masked
and they are never logged.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .subjects import Subjects

# where a process looks for NATS when NATS_URL is not set (rbot up's embedded server)
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_OANDA_SYMBOLS = "EUR_USD,GBP_USD,USD_JPY,AUD_USD"
DEFAULT_COINBASE_SYMBOLS = "BTC-USD,ETH-USD,SOL-USD"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    # bus
    nats_url: str | None = None
    rbot_data_dir: Path = Path("var")
    rbot_prefix: str = "rbot"
    rbot_partitions: int = 4
    rbot_replicas: int = 1  # JetStream replicas for streams and buckets (3 in a cluster)
    rbot_instance: str | None = None
    # NATS credentials (bus/credentials.py): a folder with one password file per
    # identity (rbot up sets it to <RBOT_DATA_DIR>/nats-identities), or one
    # user for every connection of this process; neither: an open server
    nats_creds_dir: Path | None = None
    nats_user: str | None = None
    nats_password: SecretStr | None = None

    # api
    rbot_api_host: str = "127.0.0.1"
    rbot_api_port: int = 8787
    arena_secret_key: SecretStr | None = None
    rbot_dev: bool = False
    rbot_open_registration: str = "viewer"
    rbot_cors_origins: str = ""
    rbot_max_body_bytes: int = 16384
    rbot_cookie_secure: bool = False
    rbot_sse_keepalive_s: float = 15.0

    # trading
    paper_mode: bool = True
    execution_enabled: bool = False
    live_pin: SecretStr | None = None
    max_hold_min: int = 360
    quality_threshold: Decimal = Decimal(70)
    rbot_order_ttl_min: int = 360
    rbot_price_max_age_s: float = 30.0
    rbot_orders_per_minute: int = 120
    rbot_slippage_bps: Decimal = Decimal(0)
    rbot_account_currency: str = "USD"
    rbot_starting_balance: Decimal = Decimal(100000)
    rbot_reaper_interval_s: float = 5.0

    # heartbeats
    rbot_beat_interval_s: float = 1.0
    rbot_pulse_interval_s: float = 5.0

    # market data
    rbot_sim: str = "auto"  # auto|on|off, for both venues unless set per venue:
    rbot_sim_oanda: Literal["auto", "on", "off"] | None = None
    rbot_sim_coinbase: Literal["auto", "on", "off"] | None = None
    rbot_sim_seed: int = 42
    rbot_sim_interval_s: float = 0.5
    rbot_oanda_symbols: str = DEFAULT_OANDA_SYMBOLS
    rbot_coinbase_symbols: str = DEFAULT_COINBASE_SYMBOLS

    # brokers (secrets)
    oanda_env: str = "practice"
    oanda_practice_account_id: str | None = None
    oanda_practice_token: SecretStr | None = None
    oanda_live_account_id: str | None = None
    oanda_live_token: SecretStr | None = None
    oanda_rest_url: str | None = None
    oanda_stream_url: str | None = None
    coinbase_adv_base: str = "https://api.coinbase.com"
    coinbase_ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    coinbase_api_key_id: str | None = None
    coinbase_api_key_secret: SecretStr | None = None
    coinbase_api_algo: str | None = None

    # live execution (actors/live): per-venue notional caps (quote currency), send timeouts
    rbot_live_max_notional_oanda: Decimal = Decimal(100000)
    rbot_live_max_notional_coinbase: Decimal = Decimal(10000)
    rbot_live_timeout_s: float = 5.0
    rbot_live_max_retries: int = 5

    def subjects(self) -> Subjects:
        return Subjects(prefix=self.rbot_prefix, partitions=self.rbot_partitions)

    def live_cap(self, venue: str) -> Decimal:
        if venue == "oanda":
            return self.rbot_live_max_notional_oanda
        return self.rbot_live_max_notional_coinbase

    def live_venues(self) -> list[str]:
        """Venues whose live routing exists and is configured (OANDA: account and
        token; Coinbase: a CDP key, ``COINBASE_API_KEY_ID`` and ``_SECRET``)."""
        if self.oanda_env == "live":
            ok = bool(self.oanda_live_account_id) and self.oanda_live_token is not None
        else:
            ok = bool(self.oanda_practice_account_id) and self.oanda_practice_token is not None
        cdp = bool(self.coinbase_api_key_id) and self.coinbase_api_key_secret is not None
        return [v for v, on in (("oanda", ok), ("coinbase", cdp)) if on]

    def symbols(self, venue: str) -> list[str]:
        raw = self.rbot_oanda_symbols if venue == "oanda" else self.rbot_coinbase_symbols
        return [s.strip() for s in raw.split(",") if s.strip()]

    def sim_mode(self, venue: str) -> str:
        """``RBOT_SIM_<VENUE>`` if set, else ``RBOT_SIM``: auto, on or off."""
        own = self.rbot_sim_oanda if venue == "oanda" else self.rbot_sim_coinbase
        return own or self.rbot_sim

    def use_sim(self, venue: str) -> bool:
        mode = self.sim_mode(venue)
        if mode == "on":
            return True
        if mode == "off":
            return False
        if venue == "oanda":
            return self.oanda_practice_token is None and self.oanda_live_token is None
        return (
            self.coinbase_api_key_id is None
            and self.coinbase_ws_url == "wss://advanced-trade-ws.coinbase.com"
        )
