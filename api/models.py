"""HTTP request models (the seed's field names).  Unknown fields are refused (422)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rbot.bus.subjects import TOKEN_PATTERN

Token = Annotated[str, Field(pattern=TOKEN_PATTERN, examples=["EUR_USD"])]
Price = Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=10)]
Qty = Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=10)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("side", mode="before", check_fields=False)
    @classmethod
    def _upper_side(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("order_type", mode="before", check_fields=False)
    @classmethod
    def _upper_type(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class OandaOrderIn(_Strict):
    """``POST /brokers/oanda/orders`` (the seed's Test 2 body works as is)."""

    instrument: Token
    side: Literal["BUY", "SELL"]
    units: Qty
    entry_price: Price | None = None
    stop_loss_price: Price | None = None
    take_profit_price: Price | None = None
    quality_score: Annotated[Decimal, Field(ge=0, le=100)] | None = None
    order_type: Literal["MARKET", "LIMIT"] = "MARKET"
    client_order_id: Token | None = None
    ttl_minutes: Annotated[int, Field(ge=1, le=10080)] | None = None


class CoinbaseOrderIn(_Strict):
    """``POST /brokers/coinbase-adv/orders`` (the seed's Test 3 body works as is)."""

    product_id: Token
    side: Literal["BUY", "SELL"]
    order_type: Literal["MARKET", "LIMIT"] = "MARKET"
    size: Qty
    limit_price: Price | None = None
    stop_loss_price: Price | None = None
    take_profit_price: Price | None = None
    quality_score: Annotated[Decimal, Field(ge=0, le=100)] | None = None
    client_order_id: Token | None = None
    ttl_minutes: Annotated[int, Field(ge=1, le=10080)] | None = None


class OrderAccepted(BaseModel):
    ok: bool = True
    order_id: str
    status: str
    mode: str = "paper"


class TradingStateIn(_Strict):
    state: Literal["ACTIVE", "REDUCING", "HALTED"]
    reason: Annotated[str, Field(max_length=200)] = ""
