"""The order side of the fake OANDA v20 server: accounts, orders, trades.

Built from ../shared/docs/PROTOCOLS.md.  Answers are ``(status, body)`` pairs;
``tests.fakes.oanda`` turns them into HTTP.  ``Account``'s docstring lists what
is modelled.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from rbot.bus.codec import parse_iso
from tests.fakes._serve import ns_time


def precision(instrument: str) -> int:
    return 3 if "JPY" in instrument else 5


def fmt(d: Decimal, places: int) -> str:
    return str(d.quantize(Decimal(1).scaleb(-places)))


@dataclass
class Quote:
    bid: Decimal
    ask: Decimal
    tradeable: bool = True
    empty: str = ""  # "", "bids", "asks" or "both"

    @property
    def has_bids(self) -> bool:
        return self.empty not in ("bids", "both")

    @property
    def has_asks(self) -> bool:
        return self.empty not in ("asks", "both")


class Reject(Exception):
    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(reason)
        self.reason, self.message = reason, message or reason.replace("_", " ").capitalize()


MARKET_TIF = ("FOK", "IOC")
LIMIT_TIF = ("GTC", "GTD", "GFD")
DEPENDENT_TIF = ("GTC", "GTD", "GFD")
POSITION_FILL = ("DEFAULT", "OPEN_ONLY", "REDUCE_FIRST", "REDUCE_ONLY")


class Account:
    """Orders and trades of the one fake account.

    Modelled: MARKET fills at the ask (buy) or bid (sell), or is cancelled with
    MARKET_HALTED when there is no tradeable price, STOP_LOSS_ON_FILL_LOSS /
    TAKE_PROFIT_ON_FILL_LOSS when a dependent order is on the wrong side; a
    LIMIT fills at once if marketable and otherwise stays PENDING for ever;
    takeProfitOnFill / stopLossOnFill become separate ON_FILL orders; closing a
    trade realises P/L into the balance (converted to USD for USD_xxx pairs)
    and cancels its dependents with LINKED_TRADE_CLOSED.  Margin is
    ``|units| * price(USD) * margin_rate`` against the balance minus the margin
    of open trades.
    """

    def __init__(
        self, quotes: dict[str, Quote], account_id: str, balance: Decimal, margin_rate: Decimal
    ) -> None:
        self.quotes = quotes  # shared with the server: prices set there are filled here
        self.account_id = account_id
        self.balance = balance
        self.margin_rate = margin_rate
        self.last_txn = 1
        self.orders: dict[str, dict[str, Any]] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        self._client_ids: dict[str, str] = {}
        self._trade_client_ids: dict[str, str] = {}
        self.log: list[dict[str, Any]] = []  # every transaction, for the stream and /changes
        self.listeners: list[Any] = []  # callables fed each new transaction

    # -- transactions

    def _txn(self, kind: str, rid: str, batch: str | None = None, **fields: Any) -> dict[str, Any]:
        self.last_txn += 1
        tid = str(self.last_txn)
        txn = {
            "id": tid,
            "time": ns_time(),
            "userID": 1234567,
            "accountID": self.account_id,
            "batchID": batch or tid,
            "requestID": rid,
            "type": kind,
            **fields,
        }
        self.log.append(txn)
        for listener in self.listeners:
            listener(txn)
        return txn

    def changes(self, since: str | None) -> tuple[int, dict[str, Any]]:
        """``GET .../changes?sinceTransactionID=N``: the transactions after N (and only
        the ``transactions`` list of the real AccountChanges; the rest is not modelled)."""
        try:
            n = int(since or "")
        except ValueError:
            return 400, {"errorMessage": "Invalid value specified for 'sinceTransactionID'"}
        txns = [t for t in self.log if int(t["id"]) > n]
        return 200, {
            "changes": {"transactions": txns},
            "state": {},
            "lastTransactionID": str(self.last_txn),
        }

    def get_trade(self, spec: str) -> tuple[int, dict[str, Any]]:
        tid = self._trade_client_ids.get(spec[1:]) if spec.startswith("@") else spec
        tr = self.trades.get(tid or "")
        if tr is None:
            return 404, {
                "errorCode": "TRADE_DOESNT_EXIST",
                "errorMessage": "The Trade specified does not exist",
            }
        return 200, {"trade": tr, "lastTransactionID": str(self.last_txn)}

    def on_price(self, instrument: str, now: dt.datetime | None = None) -> None:
        """A new quote: expire GTD entries past their time, fill marketable resting LIMIT
        entries, and trigger take-profits (at their price) and stop-losses (at the market,
        so a gap fills worse) of open trades."""
        q = self.quotes[instrument]
        now = now or dt.datetime.now(dt.UTC)
        for rec in list(self.orders.values()):
            if rec["state"] != "PENDING" or rec.get("instrument") != instrument:
                continue
            if rec.get("timeInForce") == "GTD" and parse_iso(rec["gtdTime"]) <= now:
                self._cancel_rec(rec, "", "TIME_IN_FORCE_EXPIRED")
            elif rec["type"] == "LIMIT" and q.tradeable:
                buy = Decimal(rec["units"]) > 0
                price = Decimal(rec["price"])
                if (buy and q.ask <= price) or (not buy and q.bid >= price):
                    self._fill(rec, {"batchID": None}, "", "LIMIT_ORDER")
        if not q.tradeable:
            return
        for rec in list(self.orders.values()):
            if rec["state"] != "PENDING" or rec["type"] not in ("TAKE_PROFIT", "STOP_LOSS"):
                continue
            tr = self.trades.get(rec["tradeID"])
            if tr is None or tr["instrument"] != instrument or tr["state"] != "OPEN":
                continue
            long = Decimal(tr["currentUnits"]) > 0
            market = q.bid if long else q.ask
            level = Decimal(rec["price"])
            if rec["type"] == "TAKE_PROFIT":
                hit = market >= level if long else market <= level
                fill_at = level
            else:
                hit = market <= level if long else market >= level
                fill_at = market
            if hit:
                self._close_at(tr, rec, fill_at, f"{rec['type']}_ORDER")

    def expire(self, client_id: str) -> bool:
        """The broker's clock reached a resting entry's ``gtdTime`` (scripted)."""
        rec = self._find_order("@" + client_id)
        if rec is None or rec["state"] != "PENDING":
            return False
        self._cancel_rec(rec, "", "TIME_IN_FORCE_EXPIRED")
        return True

    def _close_at(
        self, tr: dict[str, Any], rec: dict[str, Any], price: Decimal, reason: str
    ) -> None:
        inst, current = tr["instrument"], Decimal(tr["currentUnits"])
        places = precision(inst)
        pl_quote = (price - Decimal(tr["price"])) * current
        pl = pl_quote / price if inst.startswith("USD_") else pl_quote
        self.balance += pl
        closed = {
            "tradeID": tr["id"], "units": str(-current), "price": fmt(price, places),
            "realizedPL": fmt(pl, 4), "financing": "0.0000",
        }  # fmt: skip
        fill = self._txn(
            "ORDER_FILL", "", orderID=rec["id"], instrument=inst, units=str(-current),
            price=fmt(price, places), reason=reason, pl=fmt(pl, 4),
            accountBalance=fmt(self.balance, 4), tradesClosed=[closed],
        )  # fmt: skip
        rec |= {"state": "FILLED", "fillingTransactionID": fill["id"], "filledTime": fill["time"]}
        tr |= {"state": "CLOSED", "closeTime": fill["time"], "averageClosePrice": closed["price"],
               "currentUnits": "0", "realizedPL": fmt(pl, 4)}  # fmt: skip
        for key in ("takeProfitOrder", "stopLossOrder"):
            dep = tr.get(key)
            if dep is not None and dep["state"] == "PENDING":
                self._cancel_rec(dep, "", "LINKED_TRADE_CLOSED", fill)

    def _answer(self, **parts: Any) -> dict[str, Any]:
        ids = [t["id"] for t in parts.values() if isinstance(t, dict)]
        ids += [t["id"] for v in parts.values() if isinstance(v, list) for t in v]
        out = {k: v for k, v in parts.items() if not isinstance(v, list)}
        return {
            **out,
            "relatedTransactionIDs": sorted(ids, key=int),
            "lastTransactionID": str(self.last_txn),
        }

    # -- create

    def create(self, body: dict[str, Any] | None, rid: str) -> tuple[int, dict[str, Any]]:
        order = (body or {}).get("order")
        if not isinstance(order, dict):
            return 400, {"errorMessage": "Invalid value specified for 'order'"}
        kind = order.get("type")
        if kind not in ("MARKET", "LIMIT"):
            return 400, {"errorMessage": "Invalid value specified for 'order.type'"}
        try:
            spec = self._validate(order, kind)
        except Reject as r:
            txn = self._txn(f"{kind}_ORDER_REJECT", rid, **_echo(order), rejectReason=r.reason)
            answer = self._answer(orderRejectTransaction=txn)
            return 400, {**answer, "errorCode": r.reason, "errorMessage": r.message}
        fields = {k: v for k, v in spec.items() if k != "type"}
        create = self._txn(f"{kind}_ORDER", rid, **fields, reason="CLIENT_ORDER")
        rec: dict[str, Any] = {
            "id": create["id"],
            "createTime": create["time"],
            "type": kind,
            "state": "PENDING",
            **fields,
        }
        self.orders[rec["id"]] = rec
        if cid := spec.get("clientExtensions", {}).get("id"):
            self._client_ids[cid] = rec["id"]
        quote = self.quotes[spec["instrument"]]
        buy = Decimal(spec["units"]) > 0
        if kind == "LIMIT":
            market = quote.ask if buy else quote.bid
            marketable = quote.tradeable and (
                (buy and quote.has_asks and market <= Decimal(spec["price"]))
                or (not buy and quote.has_bids and market >= Decimal(spec["price"]))
            )
            if not marketable:
                return 201, self._answer(orderCreateTransaction=create)
        parts = self._fill(rec, create, rid, "MARKET_ORDER" if kind == "MARKET" else "LIMIT_ORDER")
        return 201, self._answer(orderCreateTransaction=create, **parts)

    def _validate(self, order: dict[str, Any], kind: str) -> dict[str, Any]:
        inst = order.get("instrument")
        if not inst:
            raise Reject("INSTRUMENT_MISSING")
        if inst not in self.quotes:
            raise Reject("INSTRUMENT_UNKNOWN", "The instrument specified is unknown")
        if "units" not in order:
            raise Reject("UNITS_MISSING")
        units = _decimal(order["units"])
        if units is None or units == 0:
            raise Reject("UNITS_INVALID", "The units specified is invalid")
        if units != units.to_integral_value():
            raise Reject("UNITS_PRECISION_EXCEEDED")
        tif = order.get("timeInForce", "FOK" if kind == "MARKET" else "GTC")
        if tif not in (MARKET_TIF if kind == "MARKET" else LIMIT_TIF):
            raise Reject("TIME_IN_FORCE_INVALID")
        spec: dict[str, Any] = {"type": kind, "instrument": inst, "units": str(units)}
        spec["timeInForce"] = tif
        if tif == "GTD":
            spec["gtdTime"] = _gtd(order.get("gtdTime"), "TIME_IN_FORCE_GTD_TIMESTAMP")
        if kind == "LIMIT":
            if "price" not in order:
                raise Reject("PRICE_MISSING")
            price = _decimal(order["price"])
            if price is None or price <= 0:
                raise Reject("PRICE_INVALID")
            if -price.as_tuple().exponent > precision(inst):  # type: ignore[operator]
                raise Reject("PRICE_PRECISION_EXCEEDED")
            spec["price"] = str(price)
        fill = order.get("positionFill", "DEFAULT")
        if fill not in POSITION_FILL:
            raise Reject("ORDER_FILL_POSITION_ACTION_INVALID")
        spec["positionFill"] = fill
        ext = order.get("clientExtensions")
        if ext is not None:
            if not isinstance(ext, dict):
                raise Reject("CLIENT_ORDER_ID_INVALID")
            if ext.get("id") in self._client_ids:
                raise Reject(
                    "CLIENT_ORDER_ID_ALREADY_EXISTS",
                    "The client Order ID specified is already assigned to another pending Order",
                )
            spec["clientExtensions"] = ext
        if isinstance(order.get("tradeClientExtensions"), dict):
            spec["tradeClientExtensions"] = order["tradeClientExtensions"]
        if (tp := order.get("takeProfitOnFill")) is not None:
            spec["takeProfitOnFill"] = _dependent(tp, "TAKE_PROFIT_ON_FILL", distance_ok=False)
        if (sl := order.get("stopLossOnFill")) is not None:
            spec["stopLossOnFill"] = _dependent(sl, "STOP_LOSS_ON_FILL", distance_ok=True)
        q = self.quotes[inst]
        if (
            abs(units) * _usd_price(inst, (q.bid + q.ask) / 2) * self.margin_rate
            > self._free_margin()
        ):
            raise Reject("INSUFFICIENT_MARGIN", "Insufficient margin to open the position")
        return spec

    def _free_margin(self) -> Decimal:
        used = sum(
            (abs(Decimal(t["currentUnits"])) * _usd_price(t["instrument"], Decimal(t["price"])))
            * self.margin_rate
            for t in self.trades.values()
            if t["state"] == "OPEN"
        )
        return self.balance - used

    def _fill(
        self, rec: dict[str, Any], create: dict[str, Any], rid: str, reason: str
    ) -> dict[str, Any]:
        inst, units = rec["instrument"], Decimal(rec["units"])
        buy = units > 0
        q = self.quotes[inst]
        places = precision(inst)
        if not q.tradeable or not (q.has_asks if buy else q.has_bids):
            return {"orderCancelTransaction": self._cancel_rec(rec, rid, "MARKET_HALTED", create)}
        price = q.ask if buy else q.bid
        sl = rec.get("stopLossOnFill")
        sl_price = None
        if sl is not None:
            dist = Decimal(sl["distance"]) if "distance" in sl else None
            sl_price = (
                Decimal(sl["price"]) if dist is None else price - dist if buy else price + dist
            )
            if (buy and sl_price >= price) or (not buy and sl_price <= price):
                return {
                    "orderCancelTransaction": self._cancel_rec(
                        rec, rid, "STOP_LOSS_ON_FILL_LOSS", create
                    )
                }
        tp = rec.get("takeProfitOnFill")
        if tp is not None:
            tp_price = Decimal(tp["price"])
            if (buy and tp_price <= price) or (not buy and tp_price >= price):
                return {
                    "orderCancelTransaction": self._cancel_rec(
                        rec, rid, "TAKE_PROFIT_ON_FILL_LOSS", create
                    )
                }
        half_spread = fmt((q.ask - q.bid) / 2 * abs(units), 4)
        margin = abs(units) * _usd_price(inst, price) * self.margin_rate
        fill_id = str(self.last_txn + 1)
        trade = {"tradeID": fill_id, "units": str(units), "price": fmt(price, places)}
        trade |= {"guaranteedExecutionFee": "0.0000", "halfSpreadCost": half_spread}
        trade["initialMarginRequired"] = fmt(margin, 4)
        if "tradeClientExtensions" in rec:
            trade["clientExtensions"] = rec["tradeClientExtensions"]
        fill = self._txn(
            "ORDER_FILL",
            rid,
            create.get("batchID"),
            orderID=rec["id"],
            **({"clientOrderID": c} if (c := rec.get("clientExtensions", {}).get("id")) else {}),
            instrument=inst,
            units=str(units),
            price=fmt(price, places),
            fullVWAP=fmt(price, places),
            fullPrice={
                "type": "PRICE",
                "bids": [{"price": fmt(q.bid, places), "liquidity": "1000000"}],
                "asks": [{"price": fmt(q.ask, places), "liquidity": "1000000"}],
                "closeoutBid": fmt(q.bid, places),
                "closeoutAsk": fmt(q.ask, places),
            },
            reason=reason,
            pl="0.0000",
            quotePL="0",
            financing="0.0000",
            commission="0.0000",
            guaranteedExecutionFee="0.0000",
            accountBalance=fmt(self.balance, 4),
            tradeOpened=trade,
            halfSpreadCost=half_spread,
        )
        assert fill["id"] == fill_id
        rec |= {"state": "FILLED", "fillingTransactionID": fill_id, "filledTime": fill["time"]}
        rec["tradeOpenedID"] = fill_id
        tr: dict[str, Any] = {
            "id": fill_id,
            "instrument": inst,
            "price": fmt(price, places),
            "openTime": fill["time"],
            "initialUnits": str(units),
            "currentUnits": str(units),
            "state": "OPEN",
            "realizedPL": "0.0000",
            "unrealizedPL": "0.0000",
            "financing": "0.0000",
        }
        if "tradeClientExtensions" in rec:
            tr["clientExtensions"] = rec["tradeClientExtensions"]
            if tcid := rec["tradeClientExtensions"].get("id"):
                self._trade_client_ids[tcid] = fill_id
        self.trades[fill_id] = tr
        parts: dict[str, Any] = {"orderFillTransaction": fill}
        dependents = []
        if tp is not None:
            dependents.append(
                self._dependent("TAKE_PROFIT", tr, tp, Decimal(tp["price"]), fill, rid)
            )
        if sl is not None and sl_price is not None:
            dependents.append(self._dependent("STOP_LOSS", tr, sl, sl_price, fill, rid))
        parts["dependents"] = dependents
        return parts

    def _dependent(
        self,
        kind: str,
        trade: dict[str, Any],
        spec: dict[str, Any],
        price: Decimal,
        fill: dict[str, Any],
        rid: str,
    ) -> dict[str, Any]:
        places = precision(trade["instrument"])
        fields = {
            "tradeID": trade["id"],
            "price": fmt(price, places),
            "timeInForce": spec.get("timeInForce", "GTC"),
            "triggerCondition": "DEFAULT",
        }
        if "gtdTime" in spec:
            fields["gtdTime"] = spec["gtdTime"]
        if "distance" in spec:
            fields["distance"] = spec["distance"]
        txn = self._txn(
            f"{kind}_ORDER",
            rid,
            fill["batchID"],
            **fields,
            reason="ON_FILL",
            orderFillTransactionID=fill["id"],
        )
        self.orders[txn["id"]] = {
            "id": txn["id"],
            "createTime": txn["time"],
            "type": kind,
            "state": "PENDING",
            **fields,
        }
        trade[f"{'takeProfit' if kind == 'TAKE_PROFIT' else 'stopLoss'}Order"] = self.orders[
            txn["id"]
        ]
        return txn

    def _cancel_rec(
        self, rec: dict[str, Any], rid: str, reason: str, batch_of: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"orderID": rec["id"], "reason": reason}
        if cid := rec.get("clientExtensions", {}).get("id"):
            fields["clientOrderID"] = cid
        txn = self._txn("ORDER_CANCEL", rid, batch_of["batchID"] if batch_of else None, **fields)
        rec |= {"state": "CANCELLED", "cancellingTransactionID": txn["id"]}
        rec["cancelledTime"] = txn["time"]
        return txn

    # -- read, cancel, close

    def _find_order(self, spec: str) -> dict[str, Any] | None:
        oid = self._client_ids.get(spec[1:]) if spec.startswith("@") else spec
        return self.orders.get(oid or "")

    def get_order(self, spec: str) -> tuple[int, dict[str, Any]]:
        rec = self._find_order(spec)
        if rec is None:
            return 404, {
                "errorCode": "ORDER_DOESNT_EXIST",
                "errorMessage": "The Order specified does not exist",
            }
        return 200, {"order": rec, "lastTransactionID": str(self.last_txn)}

    def cancel(self, spec: str, rid: str) -> tuple[int, dict[str, Any]]:
        rec = self._find_order(spec)
        if rec is None or rec["state"] != "PENDING":
            txn = self._txn(
                "ORDER_CANCEL_REJECT",
                rid,
                **({"orderID": rec["id"]} if rec else {}),
                rejectReason="ORDER_DOESNT_EXIST",
            )
            answer = self._answer(orderCancelRejectTransaction=txn)
            return 404, {
                **answer,
                "errorCode": "ORDER_DOESNT_EXIST",
                "errorMessage": "The Order specified does not exist",
            }
        return 200, self._answer(
            orderCancelTransaction=self._cancel_rec(rec, rid, "CLIENT_REQUEST")
        )

    def close_trade(self, spec: str, body: dict[str, Any], rid: str) -> tuple[int, dict[str, Any]]:
        tid = self._trade_client_ids.get(spec[1:]) if spec.startswith("@") else spec
        tr = self.trades.get(tid or "")
        if tr is None or tr["state"] != "OPEN":
            txn = self._txn("MARKET_ORDER_REJECT", rid, rejectReason="TRADE_DOESNT_EXIST")
            answer = self._answer(orderRejectTransaction=txn)
            return 404, {
                **answer,
                "errorCode": "TRADE_DOESNT_EXIST",
                "errorMessage": "The Trade specified does not exist",
            }
        current = Decimal(tr["currentUnits"])
        raw_units = body.get("units", "ALL")
        closing = abs(current) if raw_units == "ALL" else _decimal(raw_units)
        if closing is None or closing <= 0 or closing > abs(current):
            txn = self._txn(
                "MARKET_ORDER_REJECT", rid, rejectReason="CLOSE_TRADE_UNITS_EXCEED_TRADE_SIZE"
            )
            answer = self._answer(orderRejectTransaction=txn)
            return 400, {
                **answer,
                "errorCode": "CLOSE_TRADE_UNITS_EXCEED_TRADE_SIZE",
                "errorMessage": "The units to close exceed the trade's size",
            }
        inst, long = tr["instrument"], current > 0
        q, places = self.quotes[inst], precision(inst)
        units = -closing if long else closing
        close = {"tradeID": tr["id"], "units": "ALL" if raw_units == "ALL" else str(closing)}
        create = self._txn(
            "MARKET_ORDER",
            rid,
            instrument=inst,
            units=str(units),
            timeInForce="FOK",
            positionFill="REDUCE_ONLY",
            reason="TRADE_CLOSE",
            tradeClose=close,
        )
        rec = {
            "id": create["id"],
            "createTime": create["time"],
            "type": "MARKET",
            "state": "PENDING",
        }
        rec |= {"instrument": inst, "units": str(units), "tradeClose": close}
        self.orders[rec["id"]] = rec
        if not q.tradeable or not (q.has_bids if long else q.has_asks):
            cancel = self._cancel_rec(rec, rid, "MARKET_HALTED", create)
            return 200, self._answer(orderCreateTransaction=create, orderCancelTransaction=cancel)
        price = q.bid if long else q.ask
        pl_quote = (price - Decimal(tr["price"])) * (closing if long else -closing)
        pl = pl_quote / price if inst.startswith("USD_") else pl_quote
        self.balance += pl
        closed = {
            "tradeID": tr["id"],
            "units": str(units),
            "price": fmt(price, places),
            "realizedPL": fmt(pl, 4),
            "financing": "0.0000",
            "guaranteedExecutionFee": "0.0000",
            "halfSpreadCost": fmt((q.ask - q.bid) / 2 * closing, 4),
        }
        full = closing == abs(current)
        fill = self._txn(
            "ORDER_FILL",
            rid,
            create["batchID"],
            orderID=rec["id"],
            instrument=inst,
            units=str(units),
            price=fmt(price, places),
            fullVWAP=fmt(price, places),
            reason="MARKET_ORDER_TRADE_CLOSE",
            pl=fmt(pl, 4),
            financing="0.0000",
            commission="0.0000",
            accountBalance=fmt(self.balance, 4),
            **({"tradesClosed": [closed]} if full else {"tradeReduced": closed}),
        )
        rec |= {"state": "FILLED", "fillingTransactionID": fill["id"], "filledTime": fill["time"]}
        realized = Decimal(tr["realizedPL"]) + pl
        tr |= {"currentUnits": str(current + units), "realizedPL": fmt(realized, 4)}
        cancels = []
        if full:
            tr |= {
                "state": "CLOSED",
                "closeTime": fill["time"],
                "averageClosePrice": closed["price"],
            }
            for key in ("takeProfitOrder", "stopLossOrder"):
                dep = tr.get(key)
                if dep is not None and dep["state"] == "PENDING":
                    cancels.append(self._cancel_rec(dep, rid, "LINKED_TRADE_CLOSED", create))
        return 200, self._answer(
            orderCreateTransaction=create, orderFillTransaction=fill, dependents=cancels
        )


def _decimal(value: Any) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _gtd(value: Any, prefix: str) -> str:
    if value is None:
        raise Reject(f"{prefix}_MISSING")
    try:
        t = parse_iso(str(value))
    except ValueError:
        raise Reject(f"{prefix}_MISSING") from None
    if t <= dt.datetime.now(dt.UTC):
        raise Reject(f"{prefix}_IN_PAST")
    return str(value)


def _dependent(spec: Any, prefix: str, *, distance_ok: bool) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise Reject(f"{prefix}_PRICE_MISSING")
    has_price, has_distance = "price" in spec, distance_ok and "distance" in spec
    if has_price and has_distance:
        raise Reject(f"{prefix}_PRICE_AND_DISTANCE_BOTH_SPECIFIED")
    if not has_price and not has_distance:
        raise Reject(
            f"{prefix}_PRICE_AND_DISTANCE_BOTH_MISSING"
            if distance_ok
            else f"{prefix}_PRICE_MISSING"
        )
    key = "price" if has_price else "distance"
    value = _decimal(spec[key])
    if value is None or value <= 0:
        raise Reject(f"{prefix}_{key.upper()}_INVALID")
    out: dict[str, Any] = {key: str(value)}
    tif = spec.get("timeInForce", "GTC")
    if tif not in DEPENDENT_TIF:
        raise Reject(f"{prefix}_TIME_IN_FORCE_INVALID")
    out["timeInForce"] = tif
    if tif == "GTD":
        out["gtdTime"] = _gtd(spec.get("gtdTime"), f"{prefix}_GTD_TIMESTAMP")
    return out


def _echo(order: dict[str, Any]) -> dict[str, Any]:
    keys = ("instrument", "units", "price", "timeInForce", "positionFill", "clientExtensions")
    return {k: order[k] for k in keys if k in order}


def _usd_price(instrument: str, price: Decimal) -> Decimal:
    """Value of one base unit in USD, roughly (no cross rates)."""
    return Decimal(1) if instrument.startswith("USD_") else price
