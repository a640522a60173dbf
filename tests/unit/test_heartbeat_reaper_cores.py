"""Pure cores of two actors: the heartbeat's ``Registry`` (who beats, who went
silent) and the reaper's ``Deadlines`` (which expire commands are due)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from rbot.actors.heartbeat import FORGET_AFTER_S, Registry
from rbot.actors.reaper import Deadlines
from rbot.bus.lifecycle import GONE
from rbot.bus.messages import ActiveMark, ActorEvent, Beat


def beat(actor: str = "guard", instance: str = "i1", interval: float = 1.0) -> Beat:
    return Beat(actor=actor, instance=instance, interval=interval, ts=f"ts-{actor}")


# -- heartbeat.Registry ----------------------------------------------------------
def test_an_instance_is_silent_after_two_intervals_once() -> None:
    reg = Registry()
    assert reg.beat(beat(interval=1.0), now=100.0) is False
    assert reg.sweep(102.0) == []  # exactly two intervals: not yet
    [silent] = reg.sweep(102.1)
    assert (silent.actor, silent.instance, silent.silent) == ("guard", "i1", True)
    assert reg.sweep(103.0) == []  # flagged once per silence
    [st] = reg.statuses()
    assert (st.state, st.silent, st.last_beat) == ("silent", True, "ts-guard")


def test_a_beat_after_a_silence_says_it_came_back() -> None:
    reg = Registry()
    reg.beat(beat(), now=0.0)
    reg.sweep(5.0)
    assert reg.beat(beat(), now=5.5) is True
    assert reg.beat(beat(), now=6.0) is False
    assert [s.state for s in reg.statuses()] == ["running"]


def test_long_silent_instances_are_forgotten() -> None:
    reg = Registry()
    reg.beat(beat(), now=0.0)
    reg.sweep(FORGET_AFTER_S)
    assert len(reg.statuses()) == 1
    reg.sweep(FORGET_AFTER_S + 0.1)
    assert reg.statuses() == []


def test_lifecycle_keeps_restart_counts_and_forgets_stopped_actors() -> None:
    reg = Registry()
    reg.beat(beat("guard", "i1"), now=0.0)
    reg.beat(beat("guard", "i2"), now=0.0)
    reg.beat(beat("reaper", "i1"), now=0.0)
    reg.lifecycle(ActorEvent(actor="guard", instance="i1", state="restarting", restarts=3))
    assert {(s.actor, s.instance): s.restarts for s in reg.statuses()} == {
        ("guard", "i1"): 3, ("guard", "i2"): 0, ("reaper", "i1"): 0,
    }  # fmt: skip
    # one instance stopping does not hide the others
    reg.lifecycle(ActorEvent(actor="guard", instance="i2", state="stopped"))
    assert {(s.actor, s.instance) for s in reg.statuses()} == {("guard", "i1"), ("reaper", "i1")}
    # a report from an instance that never beat applies to the actor's instances
    reg.lifecycle(ActorEvent(actor="guard", instance="elsewhere", state="restarting", restarts=5))
    assert {(s.actor, s.instance): s.restarts for s in reg.statuses()}[("guard", "i1")] == 5
    for gone in GONE:
        reg.beat(beat("feed", "i1"), now=0.0)
        reg.lifecycle(ActorEvent(actor="feed", instance="i1", state=gone))
        assert "feed" not in {s.actor for s in reg.statuses()}
    assert {s.actor for s in reg.statuses()} == {"guard", "reaper"}


def test_forgive_after_our_own_outage() -> None:
    reg = Registry()
    reg.beat(beat(), now=0.0)
    reg.forgive(50.0)  # we heard nothing for 50 s: our outage, not theirs
    assert reg.sweep(51.0) == []
    assert len(reg.sweep(52.5)) == 1


def test_statuses_are_sorted() -> None:
    reg = Registry()
    for actor, inst in (("z", "b"), ("a", "c"), ("z", "a")):
        reg.beat(beat(actor, inst), now=0.0)
    assert [(s.actor, s.instance) for s in reg.statuses()] == [("a", "c"), ("z", "a"), ("z", "b")]


# -- reaper.Deadlines ---------------------------------------------------------------
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def mark(status: str = "PENDING", deadline: str | None = "2026-01-01T00:10:00Z") -> ActiveMark:
    return ActiveMark(
        status=status, venue="oanda", symbol="EUR_USD", side="BUY", qty=D(1), deadline=deadline
    )


def test_due_orders_get_a_command_with_a_stable_id() -> None:
    d = Deadlines()
    d.on_mark("o1", mark(), "exec.0.oanda.EUR_USD")
    d.on_mark("o2", mark(deadline="2026-01-01T01:00:00Z"), "exec.1.oanda.EUR_USD")
    assert d.due(T0 + dt.timedelta(minutes=9)) == []
    due = [("o1", "exec.0.oanda.EUR_USD", "expire.o1.PENDING")]
    assert d.due(T0 + dt.timedelta(minutes=10)) == due
    assert d.due(T0 + dt.timedelta(minutes=11)) == due  # again until its marker moves


def test_a_new_status_is_a_new_command_and_an_end_removes_it() -> None:
    d = Deadlines()
    d.on_mark("o1", mark(), "s")
    d.on_mark("o1", mark("OPEN", "2026-01-01T00:20:00Z"), "s")
    assert d.due(T0 + dt.timedelta(minutes=15)) == []
    assert d.due(T0 + dt.timedelta(minutes=20)) == [("o1", "s", "expire.o1.OPEN")]
    d.on_mark("o1", None, "")  # marker deleted: the order ended
    assert d.due(T0 + dt.timedelta(days=1)) == []
    d.on_mark("o2", mark(deadline=None), "s")  # no deadline: nothing to reap
    d.on_mark("o3", mark(), "s")
    d.clear()
    assert d.due(T0 + dt.timedelta(days=1)) == []
