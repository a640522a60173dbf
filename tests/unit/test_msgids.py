"""The ``Nats-Msg-Id`` shapes are a wire fact: a retry must rebuild the same id
(JetStream drops the duplicate), and ids already in a stream's window must keep
matching after an upgrade."""

from __future__ import annotations

from rbot.bus import msgids


def test_the_shapes_stay_put() -> None:
    assert msgids.place("paper-7") == "place.paper-7"
    assert msgids.cancel("paper-7", "ab12") == "cancel.paper-7.ab12"
    assert msgids.expire("paper-7", "OPEN") == "expire.paper-7.OPEN"
    assert msgids.event("paper-7", 3) == "paper-7.3"
    assert msgids.headers("x") == {"Nats-Msg-Id": "x"}


def test_kinds_never_collide() -> None:
    ids = {msgids.place("a"), msgids.cancel("a", "1"), msgids.expire("a", "PENDING"),
           msgids.event("a", 1)}  # fmt: skip
    assert len(ids) == 4
