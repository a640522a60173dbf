"""Encoding and decoding of the envelope; one encoder and one decoder per type."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, TypeVar

import msgspec

from .messages import Envelope

T = TypeVar("T")

_encoder = msgspec.json.Encoder(decimal_format="string")
_env_decoder = msgspec.json.Decoder(Envelope)
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


class DecodeError(ValueError):
    """A message that does not fit its schema."""


def now_iso() -> str:
    """UTC now as RFC 3339 with microseconds and a Z."""
    return utc_iso(dt.datetime.now(dt.UTC))


def utc_iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(s: str) -> dt.datetime:
    """Parse RFC 3339 times, including OANDA's nanoseconds (truncated to µs)."""
    s = s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    if "." in s:
        head, rest = s.split(".", 1)
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        s = f"{head}.{(frac + '000000')[:6]}{rest[i:]}"
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t


def new_id() -> str:
    return uuid.uuid4().hex


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def envelope(type_: str, source: str, payload: Any, *, id: str | None = None) -> Envelope:
    return Envelope(
        id=id or new_id(),
        source=source,
        type=type_,
        payload=msgspec.Raw(_encoder.encode(payload)),
        ts=now_iso(),
    )


def encode_envelope(type_: str, source: str, payload: Any, *, id: str | None = None) -> bytes:
    return _encoder.encode(envelope(type_, source, payload, id=id))


def decode_envelope(data: bytes) -> Envelope:
    try:
        return _env_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


def decode(data: bytes | msgspec.Raw, kind: type[T]) -> T:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return dec.decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


def payload(env: Envelope, kind: type[T]) -> T:
    return decode(env.payload, kind)


def to_builtins(obj: Any) -> Any:
    """Plain JSON-ready values (decimals as strings), e.g. for HTTP responses."""
    return msgspec.json.decode(_encoder.encode(obj))
