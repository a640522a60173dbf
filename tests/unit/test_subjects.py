"""Subjects, patterns and names (R10: untrusted input never reaches a subject unescaped)."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from collections.abc import Callable

import pytest

from rbot.bus.subjects import (
    BUCKETS,
    DEFAULT_PREFIX,
    STREAMS,
    SubjectError,
    Subjects,
    check_token,
    is_token,
    matches,
    partition_of,
)

S = Subjects()
OK = "EUR_USD"

# every place an outside token goes into a subject (or a name built from it)
BUILDERS: dict[str, Callable[[str], object]] = {
    "check_token": lambda t: check_token(t),
    "prefix": lambda t: Subjects(prefix=t),
    "tick.venue": lambda t: S.tick(t, OK),
    "tick.symbol": lambda t: S.tick("oanda", t),
    "ticks.venue": lambda t: S.ticks(t),
    "candle.venue": lambda t: S.candle(t, OK, "M1"),
    "candle.symbol": lambda t: S.candle("oanda", t, "M1"),
    "candle.granularity": lambda t: S.candle("oanda", OK, t),
    "book.venue": lambda t: S.book(t, OK),
    "book.symbol": lambda t: S.book("coinbase", t),
    "exec.venue": lambda t: S.exec(t, OK),
    "exec.symbol": lambda t: S.exec("oanda", t),
    "order_event.venue": lambda t: S.order_event(t, OK, "order_filled"),
    "order_event.symbol": lambda t: S.order_event("oanda", t, "order_filled"),
    "order_event.type": lambda t: S.order_event("oanda", OK, t),
    "actor_event.actor": lambda t: S.actor_event(t, "started"),
    "actor_event.type": lambda t: S.actor_event("executor", t),
    "heartbeat.actor": lambda t: S.heartbeat(t, "i1"),
    "heartbeat.instance": lambda t: S.heartbeat("executor", t),
    "consumer": lambda t: S.consumer(t),
}

BAD_TOKENS = {
    "empty": "",
    "dot": "EUR.USD",
    "leading dot": ".EUR",
    "trailing dot": "EUR.",
    "star": "*",
    "star inside": "EUR*",
    "gt": ">",
    "gt inside": "EUR>",
    "space": "EUR USD",
    "lone space": " ",
    "leading space": " EUR",
    "tab": "EUR\tUSD",
    "inner newline": "EUR\nUSD",
    "leading newline": "\nEUR",
    "crlf": "EUR\r\nPUB x 1",
    "nul": "EUR\x00",
    "nbsp": "EUR\u00a0USD",
    "too long": "x" * 65,
    "accent": "EURé",
    "euro sign": "EUR€",
    "arabic digit": "EUR\u0661",  # matches \w and \d, not [0-9]
    "fullwidth": "ＥＵＲ",
    "cyrillic a": "EUR_USD".replace("E", "\u0415"),
    "slash": "EUR/USD",
    "dollar": "$SYS",
    "colon": "oanda:EUR",
}

# Python's ``$`` also matches just before a final "\n": TOKEN_RE uses \Z (fixed)
NEWLINE_BUG: list[pytest.MarkDecorator] = []
TRAILING_NEWLINES = {"trailing newline": "EUR_USD\n", "just a newline after one char": "x\n"}


ALLOWED = {("ticks.venue", "star")}  # ticks("*") is the documented any-venue pattern


@pytest.mark.parametrize(
    ("builder", "token"),
    [
        pytest.param(BUILDERS[b], BAD_TOKENS[t], id=f"{b}-{t}")
        for b in BUILDERS
        for t in BAD_TOKENS
        if (b, t) not in ALLOWED
    ],
)
def test_every_builder_refuses_unsafe_tokens(builder: Callable[[str], object], token: str) -> None:
    with pytest.raises(SubjectError):
        builder(token)


@pytest.mark.parametrize(
    "token",
    [pytest.param(t, marks=NEWLINE_BUG) for t in TRAILING_NEWLINES.values()],
    ids=list(TRAILING_NEWLINES),
)
@pytest.mark.parametrize("builder", list(BUILDERS.values()), ids=list(BUILDERS))
def test_every_builder_refuses_a_trailing_newline(
    builder: Callable[[str], object], token: str
) -> None:
    with pytest.raises(SubjectError):
        builder(token)


@pytest.mark.parametrize("token", [None, 5, b"EUR_USD", ["EUR"]], ids=repr)
def test_non_strings_are_refused(token: object) -> None:
    with pytest.raises(SubjectError):
        check_token(token)  # type: ignore[arg-type]
    assert not is_token(token)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "token", ["EUR_USD", "BTC-USD", "a", "Z", "0", "_", "-", "x" * 64, "M1", "order_filled"]
)
def test_plain_tokens_are_accepted(token: str) -> None:
    assert check_token(token) == token
    assert is_token(token)


@pytest.mark.parametrize("token", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
def test_is_token_agrees_with_check_token(token: str) -> None:
    assert not is_token(token)


def test_the_refusal_says_what_was_wrong() -> None:
    with pytest.raises(SubjectError, match=r"invalid symbol 'EUR\.USD'.*no dots, wildcards"):
        S.tick("oanda", "EUR.USD")


def test_a_subject_error_is_a_value_error() -> None:
    """So the API layer can map it to 422 with the other validation errors."""
    assert issubclass(SubjectError, ValueError)


# -- the grammar -------------------------------------------------------------------
def test_concrete_subjects_follow_the_grammar() -> None:
    assert S.tick("oanda", "EUR_USD") == "rbot.md.tick.oanda.EUR_USD"
    assert S.candle("oanda", "EUR_USD", "M1") == "rbot.md.candle.oanda.EUR_USD.M1"
    assert S.book("coinbase", "BTC-USD") == "rbot.md.book.coinbase.BTC-USD"
    assert S.order_place == "rbot.cmd.order.place"
    assert S.exec("oanda", "EUR_USD") == "rbot.exec.0.oanda.EUR_USD"
    assert S.exec("coinbase", "BTC-USD") == "rbot.exec.1.coinbase.BTC-USD"
    assert S.exec_partition(3) == "rbot.exec.3.>"
    assert (
        S.order_event("oanda", "EUR_USD", "order_filled")
        == "rbot.evt.order.oanda.EUR_USD.order_filled"
    )
    assert S.actor_event("executor", "crashed") == "rbot.evt.actor.executor.crashed"
    assert S.heartbeat("executor", "host-1") == "rbot.hb.executor.host-1"
    assert S.heartbeats == "rbot.hb.*.*"
    assert S.pulse == "rbot.evt.heartbeat"
    assert S.all_events == "rbot.evt.>"
    assert S.order_events == "rbot.evt.order.>"
    assert S.actor_events == "rbot.evt.actor.>"
    assert S.ticks() == "rbot.md.tick.*.*"
    assert S.ticks("*") == "rbot.md.tick.*.*"
    assert S.ticks("oanda") == "rbot.md.tick.oanda.*"
    assert S.consumer("executor-0") == "executor-0"


def test_a_custom_prefix_leads_every_subject() -> None:
    s = Subjects(prefix="t1a2b")
    assert s.tick("oanda", "EUR_USD") == "t1a2b.md.tick.oanda.EUR_USD"
    assert s.order_place == "t1a2b.cmd.order.place"
    assert s.all_events == "t1a2b.evt.>"
    assert s.exec_partition(0) == "t1a2b.exec.0.>"


@pytest.mark.parametrize("partition", [-1, 4, 100])
def test_exec_partition_out_of_range(partition: int) -> None:
    with pytest.raises(ValueError):
        S.exec_partition(partition)


@pytest.mark.parametrize("partitions", [0, -1, 257])
def test_partition_count_is_bounded(partitions: int) -> None:
    with pytest.raises(ValueError):
        Subjects(partitions=partitions)


@pytest.mark.parametrize("partitions", [1, 256])
def test_partition_count_bounds_are_inclusive(partitions: int) -> None:
    assert Subjects(partitions=partitions).partitions == partitions


def test_relative_strips_only_the_own_prefix() -> None:
    assert S.relative("rbot.evt.heartbeat") == "evt.heartbeat"
    assert S.relative("other.evt.heartbeat") == "other.evt.heartbeat"
    assert S.relative("rbotx.evt") == "rbotx.evt"
    assert Subjects(prefix="t1").relative("t1.hb.a.b") == "hb.a.b"


# -- partitions ---------------------------------------------------------------------
# Fixed values: a change here re-routes every symbol to another executor partition.
KNOWN_CRC = {
    ("oanda", "EUR_USD"): 19303784,
    ("oanda", "USD_JPY"): 5262286,
    ("oanda", "GBP_USD"): 4071292162,
    ("coinbase", "BTC-USD"): 4118692093,
    ("coinbase", "ETH-USD"): 1191792482,
}
KNOWN_PARTITIONS = {  # (venue, symbol): (of 4, of 16, of 256)
    ("oanda", "EUR_USD"): (0, 8, 104),
    ("oanda", "USD_JPY"): (2, 14, 206),
    ("oanda", "GBP_USD"): (2, 2, 2),
    ("coinbase", "BTC-USD"): (1, 13, 253),
    ("coinbase", "ETH-USD"): (2, 2, 98),
}


@pytest.mark.parametrize(("venue", "symbol"), list(KNOWN_PARTITIONS))
def test_partition_of_has_fixed_known_values(venue: str, symbol: str) -> None:
    got = tuple(partition_of(venue, symbol, n) for n in (4, 16, 256))
    assert got == KNOWN_PARTITIONS[venue, symbol]
    assert partition_of(venue, symbol, 2**32) == KNOWN_CRC[venue, symbol]
    assert KNOWN_CRC[venue, symbol] == zlib.crc32(f"{venue}:{symbol}".encode())


def test_partition_of_does_not_depend_on_pythonhashseed() -> None:
    code = (
        "from rbot.bus.subjects import partition_of as p;"
        "print([p(v, s, 16) for v, s in "
        "[('oanda','EUR_USD'),('oanda','USD_JPY'),('coinbase','BTC-USD')]])"
    )
    outs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outs.add(done.stdout.strip())
    assert outs == {"[8, 14, 13]"}


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 16, 256])
def test_partition_of_is_in_range_and_uses_them_all(partitions: int) -> None:
    symbols = [f"SYM{i}_USD" for i in range(2_000)]
    seen = {partition_of("oanda", s, partitions) for s in symbols}
    assert seen == set(range(partitions))


def test_partition_of_separates_venue_and_symbol() -> None:
    # "venue:symbol" is hashed, so the same symbol on another venue may move
    assert partition_of("oanda", "ETH-USD", 256) != partition_of("coinbase", "ETH-USD", 256)


@pytest.mark.parametrize("partitions", [0, -3])
def test_partition_of_refuses_no_partitions(partitions: int) -> None:
    with pytest.raises(ValueError):
        partition_of("oanda", "EUR_USD", partitions)


def test_exec_subject_lands_in_its_partition() -> None:
    s = Subjects(partitions=16)
    for venue, symbol in KNOWN_PARTITIONS:
        p = KNOWN_PARTITIONS[venue, symbol][1]
        subject = s.exec(venue, symbol)
        assert subject == f"rbot.exec.{p}.{venue}.{symbol}"
        assert matches(s.exec_partition(p), subject)
        others = [q for q in range(16) if q != p]
        assert not any(matches(s.exec_partition(q), subject) for q in others)


# -- user patterns --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "anchored"),
    [
        ("evt.>", "rbot.evt.>"),
        ("rbot.evt.>", "rbot.evt.>"),
        ("evt.order.*.EUR_USD.*", "rbot.evt.order.*.EUR_USD.*"),
        ("rbot.evt.order.*.EUR_USD.*", "rbot.evt.order.*.EUR_USD.*"),
        ("evt.order.oanda.EUR_USD.order_filled", "rbot.evt.order.oanda.EUR_USD.order_filled"),
        ("*", "rbot.*"),
        (">", "rbot.>"),
        ("rbot.>", "rbot.>"),
        ("hb.*.*", "rbot.hb.*.*"),
        ("rbot.rbot.evt", "rbot.rbot.evt"),  # only one leading prefix is taken off
    ],
)
def test_patterns_are_anchored_under_the_prefix(given: str, anchored: str) -> None:
    assert S.pattern(given) == anchored


def test_patterns_under_a_custom_prefix() -> None:
    s = Subjects(prefix="t1a2b")
    assert s.pattern("evt.>") == "t1a2b.evt.>"
    assert s.pattern("t1a2b.evt.>") == "t1a2b.evt.>"
    # someone else's prefix is just a token, kept under ours: no escape
    assert s.pattern("rbot.evt.>") == "t1a2b.rbot.evt.>"


BAD_PATTERNS = {
    "empty": "",
    "only the prefix": "rbot",
    "prefix and dot": "rbot.",
    "gt first": ">.evt",
    "gt in the middle": "evt.>.order",
    "two gts": "evt.>.>",
    "empty token": "evt..order",
    "leading dot": ".evt",
    "trailing dot": "evt.",
    "lone dot": ".",
    "partial star": "evt.ord*",
    "partial gt": "evt.order>",
    "star glued": "evt.*x",
    "space": "evt. order",
    "tab": "evt.\torder",
    "inner newline": "evt.or\nder",
    "non ascii": "evt.ordér",
    "too long token": "evt." + "x" * 65,
    "slash": "evt/order",
}


@pytest.mark.parametrize("pattern", list(BAD_PATTERNS.values()), ids=list(BAD_PATTERNS))
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(SubjectError):
        S.pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    [pytest.param("evt.order\n", marks=NEWLINE_BUG), pytest.param("evt.>\n", marks=NEWLINE_BUG)],
)
def test_patterns_with_a_trailing_newline_are_refused(pattern: str) -> None:
    with pytest.raises(SubjectError):
        S.pattern(pattern)


def test_gt_not_at_the_end_has_its_own_message() -> None:
    with pytest.raises(SubjectError, match="'>' may only end a pattern"):
        S.pattern("evt.>.order")


# -- wildcard matching ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("rbot.evt.heartbeat", "rbot.evt.heartbeat", True),
        ("rbot.evt.heartbeat", "rbot.evt.heartbeats", False),
        ("rbot.evt.heartbeat", "rbot.evt", False),
        ("rbot.evt", "rbot.evt.heartbeat", False),
        ("rbot.*", "rbot.evt", True),
        ("rbot.*", "rbot.evt.order", False),  # * is one token
        ("rbot.*", "rbot", False),  # ... and exactly one
        ("rbot.*.heartbeat", "rbot.evt.heartbeat", True),
        ("*.*", "a.b", True),
        ("*.*", "a.b.c", False),
        ("rbot.evt.>", "rbot.evt.order", True),
        ("rbot.evt.>", "rbot.evt.order.oanda.EUR_USD.order_filled", True),
        ("rbot.evt.>", "rbot.evt", False),  # > needs at least one token
        ("rbot.evt.>", "rbot.md.tick.oanda.EUR_USD", False),
        (">", "anything", True),
        (">", "a.b.c", True),
        ("rbot.evt.order.*.EUR_USD.*", "rbot.evt.order.oanda.EUR_USD.order_filled", True),
        ("rbot.evt.order.*.EUR_USD.*", "rbot.evt.order.oanda.GBP_USD.order_filled", False),
        ("rbot.evt.order.*.EUR_USD.*", "rbot.evt.order.oanda.EUR_USD", False),
        ("rbot.*.>", "rbot.evt.x", True),
        ("rbot.*.>", "rbot.evt", False),
    ],
)
def test_matches_wildcard_semantics(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


def test_the_built_patterns_match_the_built_subjects() -> None:
    filled = S.order_event("oanda", "EUR_USD", "order_filled")
    assert matches(S.all_events, filled)
    assert matches(S.order_events, filled)
    assert not matches(S.actor_events, filled)
    assert matches(S.pattern("evt.order.*.EUR_USD.*"), filled)
    assert not matches(S.pattern("evt.order.*.GBP_USD.*"), filled)
    assert matches(S.actor_events, S.actor_event("executor", "crashed"))
    assert matches(S.all_events, S.pulse)
    assert matches(S.heartbeats, S.heartbeat("executor", "i1"))
    assert matches(S.ticks(), S.tick("coinbase", "BTC-USD"))
    assert matches(S.ticks("coinbase"), S.tick("coinbase", "BTC-USD"))
    assert not matches(S.ticks("oanda"), S.tick("coinbase", "BTC-USD"))
    assert not matches(S.ticks(), S.candle("oanda", "EUR_USD", "M1"))


def test_another_prefix_sees_nothing_of_ours() -> None:
    mine, theirs = Subjects(prefix="t1"), Subjects(prefix="t2")
    assert not matches(theirs.all_events, mine.order_event("oanda", "EUR_USD", "order_filled"))
    assert not matches(theirs.pattern(">"), mine.tick("oanda", "EUR_USD"))


# -- JetStream names -------------------------------------------------------------------
@pytest.mark.parametrize("name", STREAMS)
def test_stream_names(name: str) -> None:
    assert Subjects().stream(name) == name
    assert Subjects(prefix=DEFAULT_PREFIX).stream(name) == name
    assert Subjects(prefix="t1a2b").stream(name) == f"t1a2b_{name}"


@pytest.mark.parametrize("name", BUCKETS)
def test_bucket_names(name: str) -> None:
    assert Subjects().bucket(name) == name
    assert Subjects(prefix="t1a2b").bucket(name) == f"t1a2b_{name}"


@pytest.mark.parametrize("name", ["orders", "ORDER", "", "x.y", "rbot_ORDERS"])
def test_unknown_streams_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        S.stream(name)


@pytest.mark.parametrize("name", ["ORDERS", "order", "", "x.y", "rbot_orders"])
def test_unknown_buckets_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        S.bucket(name)


@pytest.mark.parametrize("prefix", [DEFAULT_PREFIX, "t1a2b"])
def test_each_stream_captures_its_own_subjects(prefix: str) -> None:
    s = Subjects(prefix=prefix)
    assert s.stream_subjects("ORDERS") == [f"{prefix}.evt.order.>"]
    assert s.stream_subjects("EXEC") == [f"{prefix}.exec.>"]
    assert s.stream_subjects("SYSTEM") == [f"{prefix}.evt.actor.>"]
    samples = {
        "ORDERS": s.order_event("oanda", "EUR_USD", "order_filled"),
        "EXEC": s.exec("oanda", "EUR_USD"),
        "SYSTEM": s.actor_event("executor", "crashed"),
    }
    for stream, subject in samples.items():
        owners = [n for n in STREAMS if any(matches(p, subject) for p in s.stream_subjects(n))]
        assert owners == [stream]
    # market data and heartbeats are core NATS only: no stream stores them
    for subject in (s.tick("oanda", "EUR_USD"), s.heartbeat("a", "b"), s.pulse):
        assert not any(matches(p, subject) for n in STREAMS for p in s.stream_subjects(n))


def test_stream_and_bucket_names_are_valid_jetstream_names() -> None:
    """JetStream names may not hold '.', '*', '>' or whitespace either."""
    for s in (Subjects(), Subjects(prefix="t1a2b")):
        for name in [*(s.stream(n) for n in STREAMS), *(s.bucket(b) for b in BUCKETS)]:
            assert is_token(name), name
