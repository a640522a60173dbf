"""The supervisor keeps OTP's promises (R3).

Nothing here sleeps to wait: every test follows the lifecycle reports the supervisor
emits (pushed into a queue by ``Events``) or events the children set.  ``BOUND`` only
limits a failing test; the short start/shutdown/escalation timeouts are the thing under
test and face children that never answer, so no margin matters.  Restart intensity is
tested with a fake clock injected into the supervisor module (exact), and with the
real clock in shapes whose outcome does not depend on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest

import rbot.actors.supervisor as supervisor_module
from rbot.actors.backoff import Backoff
from rbot.actors.supervisor import (
    ChildFn,
    ChildSpec,
    ChildState,
    Escalation,
    Restart,
    Strategy,
    Supervisor,
    SupervisorError,
)

FAST = Backoff(initial=0.001, cap=0.002)
BOUND = 10.0  # seconds: only ever reached by a failing test


# -- observing ---------------------------------------------------------------
class Event(NamedTuple):
    sup: str
    child: str
    type: str
    info: dict[str, str]


class Events:
    """The ``report`` callback: keeps every lifecycle event and lets a test await one."""

    def __init__(self) -> None:
        self.log: list[Event] = []
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._when: list[tuple[str, str, asyncio.Event]] = []

    def __call__(self, child: str, type_: str, info: dict[str, str]) -> None:
        ev = Event(info["supervisor"], child, type_, dict(info))
        self.log.append(ev)
        self._queue.put_nowait(ev)
        for w in [w for w in self._when if w[:2] == (child, type_)]:
            self._when.remove(w)
            w[2].set()

    def when(self, child: str, type_: str) -> asyncio.Event:
        """An event set by the next ``type_`` report of ``child`` (for children to await)."""
        flag = asyncio.Event()
        self._when.append((child, type_, flag))
        return flag

    async def expect(self, child: str, type_: str, *, sup: str | None = None) -> Event:
        """The next ``type_`` event of ``child`` (events in between are skipped)."""
        async with asyncio.timeout(BOUND):
            while True:
                ev = await self._queue.get()
                if ev.child == child and ev.type == type_ and sup in (None, ev.sup):
                    return ev

    def names(self, type_: str, *, sup: str | None = None, since: int = 0) -> list[str]:
        """Children that had a ``type_`` event, in order."""
        return [e.child for e in self.log[since:] if e.type == type_ and sup in (None, e.sup)]

    def of(self, child: str, *, sup: str | None = None) -> list[str]:
        """The event types of one child, in order."""
        return [e.type for e in self.log if e.child == child and sup in (None, e.sup)]


class Clock:
    """A monotonic clock the test moves by hand (injected into the supervisor module)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    # replace the module's ``time`` only: the event loop keeps the real clock
    monkeypatch.setattr(supervisor_module, "time", c)
    return c


@pytest.fixture
def events() -> Events:
    return Events()


# -- children ----------------------------------------------------------------
class Crash(RuntimeError):
    pass


class Outage(ConnectionError):
    """What a lost bus looks like to a child (``is_outage`` says so for the real ones)."""


def outage(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(outage(e) for e in exc.exceptions)
    return isinstance(exc, Outage)


@dataclass
class Worker:
    """A child driven by the test: each incarnation says ready, then obeys one order.

    Orders: ``"crash"`` raises, ``"exit"`` returns normally.  Orders queue up, so
    several crashes can be ordered at once: each incarnation takes the next one.
    """

    name: str
    trace: list[tuple[str, str]]

    def __post_init__(self) -> None:
        self.orders: asyncio.Queue[str] = asyncio.Queue()
        self.incarnations = 0

    async def __call__(self, ready: Callable[[], None]) -> None:
        self.incarnations += 1
        self.trace.append(("up", self.name))
        ready()
        try:
            order = await self.orders.get()
        except asyncio.CancelledError:
            self.trace.append(("cancelled", self.name))
            raise
        if order == "crash":
            raise Crash(f"{self.name} boom")
        if order == "outage":
            raise Outage(f"{self.name} lost the bus")
        assert order == "exit", order

    def spec(self, restart: Restart = Restart.PERMANENT, **kw: Any) -> ChildSpec:
        return ChildSpec(self.name, self, restart=restart, **kw)


def workers(trace: list[tuple[str, str]], *names: str) -> list[Worker]:
    return [Worker(n, trace) for n in names]


@contextlib.asynccontextmanager
async def running(sup: Supervisor) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``sup`` until it says ready; cancel it (if still running) on the way out."""
    ready = asyncio.Event()
    task = asyncio.create_task(sup.run(ready.set), name=f"test:{sup.name}")
    waiter = asyncio.create_task(ready.wait())
    try:
        async with asyncio.timeout(BOUND):
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            task.result()  # raises what the supervisor died of
            raise AssertionError("supervisor returned before it was ready")
        yield task
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    async with asyncio.timeout(BOUND):
        with pytest.raises(asyncio.CancelledError):
            await task


async def bounded(aw: Awaitable[Any]) -> Any:
    async with asyncio.timeout(BOUND):
        return await aw


# -- construction and introspection ------------------------------------------
def test_duplicate_child_names_are_refused() -> None:
    async def child(ready: Callable[[], None]) -> None:
        ready()

    with pytest.raises(ValueError, match="duplicate"):
        Supervisor([ChildSpec("a", child), ChildSpec("a", child)])


def test_introspection_of_an_unknown_child_raises_key_error() -> None:
    sup = Supervisor([])
    with pytest.raises(KeyError):
        sup.state("nope")
    with pytest.raises(KeyError):
        sup.restarts("nope")
    with pytest.raises(KeyError):
        sup.task("nope")


def test_children_are_idle_before_run() -> None:
    trace: list[tuple[str, str]] = []
    (a,) = workers(trace, "a")
    sup = Supervisor([a.spec()])
    assert sup.state("a") is ChildState.IDLE
    assert sup.restarts("a") == 0
    assert sup.task("a") is None
    assert sup.abandoned == []


async def test_an_empty_supervisor_is_ready_and_returns() -> None:
    said: list[str] = []
    await bounded(Supervisor([]).run(lambda: said.append("ready")))
    assert said == ["ready"]


# -- start order and readiness ------------------------------------------------
async def test_children_start_in_order_each_after_the_previous_is_ready(events: Events) -> None:
    trace: list[str] = []
    gates = {n: asyncio.Event() for n in "abc"}

    def child(name: str) -> ChildFn:
        async def run(ready: Callable[[], None]) -> None:
            trace.append(f"{name} up")
            await gates[name].wait()  # not ready until the test says so
            trace.append(f"{name} ready")
            ready()
            await asyncio.Event().wait()

        return run

    sup_ready = asyncio.Event()

    def said_ready() -> None:
        trace.append("supervisor ready")
        sup_ready.set()

    sup = Supervisor([ChildSpec(n, child(n)) for n in "abc"], report=events, backoff=FAST)
    task = asyncio.create_task(sup.run(said_ready))
    try:
        for n in "abc":
            await events.expect(n, "starting")
            assert sup.state(n) is ChildState.STARTING
            later = [m for m in "abc" if m > n]
            assert all(sup.state(m) is ChildState.IDLE for m in later)
            assert not sup_ready.is_set()
            gates[n].set()
            await events.expect(n, "started")
            assert sup.state(n) is ChildState.RUNNING
        await bounded(sup_ready.wait())
        assert trace == [
            "a up", "a ready", "b up", "b ready", "c up", "c ready", "supervisor ready",
        ]  # fmt: skip
        assert events.names("starting") == ["a", "b", "c"]
        assert events.names("started") == ["a", "b", "c"]
    finally:
        await cancel_and_wait(task)


async def test_ready_is_only_said_once_every_child_is_running(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    kids = workers(trace, "a", "b", "c")
    sup = Supervisor([k.spec() for k in kids], report=events, backoff=FAST)
    async with running(sup):
        assert [sup.state(k.name) for k in kids] == [ChildState.RUNNING] * 3
        assert trace == [("up", "a"), ("up", "b"), ("up", "c")]


# -- shutdown -----------------------------------------------------------------
async def test_cancelling_run_stops_children_in_reverse_order(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    kids = workers(trace, "a", "b", "c", "d")
    sup = Supervisor([k.spec() for k in kids], report=events, backoff=FAST)
    async with running(sup) as task:
        await cancel_and_wait(task)
    assert events.names("stopping") == ["d", "c", "b", "a"]
    assert events.names("stopped") == ["d", "c", "b", "a"]
    assert [n for what, n in trace if what == "cancelled"] == ["d", "c", "b", "a"]
    for k in kids:
        assert sup.state(k.name) is ChildState.STOPPED
        t = sup.task(k.name)
        assert t is not None and t.cancelled()
    assert sup.abandoned == []


async def test_each_child_is_stopped_before_the_next_one_is_cancelled(events: Events) -> None:
    """Reverse order means sequential: ``a`` is not touched until ``b`` has finished."""
    trace: list[str] = []
    b_cleaning = asyncio.Event()
    b_may_finish = asyncio.Event()

    async def a(ready: Callable[[], None]) -> None:
        ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            trace.append("a cancelled")
            raise

    async def b(ready: Callable[[], None]) -> None:
        ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            b_cleaning.set()
            await b_may_finish.wait()  # slow, but well-behaved, cleanup
            trace.append("b cleaned up")
            raise

    sup = Supervisor([ChildSpec("a", a), ChildSpec("b", b)], report=events, backoff=FAST)
    async with running(sup) as task:
        task.cancel()
        await bounded(b_cleaning.wait())
        assert sup.state("a") is ChildState.RUNNING
        assert trace == []
        b_may_finish.set()
        with pytest.raises(asyncio.CancelledError):
            await bounded(task)
    assert trace == ["b cleaned up", "a cancelled"]


async def test_a_child_that_ignores_cancellation_is_abandoned_and_the_rest_still_stop(
    events: Events,
) -> None:
    trace: list[tuple[str, str]] = []
    a, c = workers(trace, "a", "c")
    release = asyncio.Event()
    ignored = asyncio.Event()

    async def stubborn(ready: Callable[[], None]) -> None:
        ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ignored.set()
            await release.wait()  # swallows the cancellation and keeps going

    sup = Supervisor(
        [a.spec(), ChildSpec("b", stubborn, shutdown_timeout=0.05), c.spec()],
        report=events,
        backoff=FAST,
    )
    async with running(sup) as task:
        b_task = sup.task("b")
        assert b_task is not None
        await cancel_and_wait(task)
    try:
        assert ignored.is_set()
        assert not b_task.done()  # still running, but no longer the supervisor's business
        assert sup.abandoned == [b_task]
        assert sup.state("b") is ChildState.ABANDONED
        assert sup.state("a") is ChildState.STOPPED
        assert sup.state("c") is ChildState.STOPPED
        assert events.names("stopping") == ["c", "b", "a"]
        assert events.names("stopped") == ["c", "a"]
        assert events.names("abandoned") == ["b"]
        (ab,) = [e for e in events.log if e.type == "abandoned"]
        assert "0.05" in ab.info["reason"]
        # the order of the reports: c is done before b is tried, a only after b gave up
        order = [(e.child, e.type) for e in events.log if e.type in ("stopped", "abandoned")]
        assert order == [("c", "stopped"), ("b", "abandoned"), ("a", "stopped")]
    finally:
        release.set()
        await bounded(b_task)


# -- restart types x exit reasons ---------------------------------------------
@pytest.mark.parametrize(
    ("restart", "order", "restarted"),
    [
        (Restart.PERMANENT, "exit", True),
        (Restart.PERMANENT, "crash", True),
        (Restart.TRANSIENT, "exit", False),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TEMPORARY, "exit", False),
        (Restart.TEMPORARY, "crash", False),
    ],
)
async def test_restart_type_and_exit_reason(
    events: Events, restart: Restart, order: str, restarted: bool
) -> None:
    trace: list[tuple[str, str]] = []
    keeper, kid = workers(trace, "keeper", "kid")  # keeper keeps the supervisor alive
    sup = Supervisor([keeper.spec(), kid.spec(restart)], report=events, backoff=FAST)
    async with running(sup) as task:
        first = sup.task("kid")
        kid.orders.put_nowait(order)
        ended = await events.expect("kid", "crashed" if order == "crash" else "exited")
        if order == "crash":
            assert ended.info["reason"] == "Crash: kid boom"
        else:
            assert ended.info["reason"] == "normal"
        if restarted:
            await events.expect("kid", "started")
            assert sup.state("kid") is ChildState.RUNNING
            assert sup.restarts("kid") == 1
            assert sup.task("kid") is not first
            assert kid.incarnations == 2
            assert events.of("kid")[-4:] == [ended.type, "restarting", "starting", "started"]
        else:
            stopped = await events.expect("kid", "stopped")
            assert stopped.info["reason"] == "not restarted"
            assert sup.state("kid") is ChildState.STOPPED
        await cancel_and_wait(task)
    if not restarted:
        assert kid.incarnations == 1
        assert sup.restarts("kid") == 0
    assert keeper.incarnations == 1  # one_for_one: the sibling never noticed


async def test_run_returns_once_no_child_is_left(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    temp, trans = workers(trace, "temp", "trans")
    sup = Supervisor([temp.spec(Restart.TEMPORARY), trans.spec(Restart.TRANSIENT)], report=events)
    async with running(sup) as task:
        temp.orders.put_nowait("crash")
        trans.orders.put_nowait("exit")
        await bounded(task)  # returns normally: nothing is left to supervise
    assert sup.state("temp") is ChildState.STOPPED
    assert sup.state("trans") is ChildState.STOPPED
    assert events.names("restarting") == []


async def test_a_broken_reporter_does_not_take_the_tree_down() -> None:
    def report(child: str, type_: str, info: dict[str, str]) -> None:
        raise RuntimeError("reporter down")

    attempts = 0

    async def flaky(ready: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Crash("first start fails")
        ready()
        await asyncio.Event().wait()

    sup = Supervisor([ChildSpec("a", flaky)], report=report, backoff=FAST)
    async with running(sup):  # ready despite every report raising
        assert sup.state("a") is ChildState.RUNNING
        assert sup.restarts("a") == 1


# -- strategies -----------------------------------------------------------------
async def test_one_for_one_restarts_only_the_crashed_child(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    kids = workers(trace, "a", "b", "c")
    sup = Supervisor([k.spec() for k in kids], report=events, backoff=FAST)
    async with running(sup):
        before = {k.name: sup.task(k.name) for k in kids}
        kids[1].orders.put_nowait("crash")
        await events.expect("b", "crashed")
        await events.expect("b", "started")
        assert [k.incarnations for k in kids] == [1, 2, 1]
        assert sup.task("a") is before["a"] and sup.task("c") is before["c"]
        assert sup.task("b") is not before["b"]
        assert [sup.restarts(k.name) for k in kids] == [0, 1, 0]
        assert events.names("stopping") == []


async def test_one_for_all_stops_siblings_in_reverse_and_restarts_all_in_order(
    events: Events,
) -> None:
    trace: list[tuple[str, str]] = []
    kids = workers(trace, "a", "b", "c", "d")
    sup = Supervisor(
        [k.spec() for k in kids], strategy=Strategy.ONE_FOR_ALL, report=events, backoff=FAST
    )
    async with running(sup):
        mark = len(events.log)
        kids[2].orders.put_nowait("crash")
        await events.expect("c", "crashed")
        await events.expect("d", "started")  # the last one to come back
        assert events.names("stopping", since=mark) == ["d", "b", "a"]
        assert events.names("stopped", since=mark) == ["d", "b", "a"]
        assert events.names("restarting", since=mark) == ["c"]
        assert events.names("starting", since=mark) == ["a", "b", "c", "d"]
        assert events.names("started", since=mark) == ["a", "b", "c", "d"]
        # every sibling was down before the first one came back
        types = [e.type for e in events.log[mark:]]
        assert types.index("starting") > max(i for i, t in enumerate(types) if t == "stopped")
        assert [k.incarnations for k in kids] == [2, 2, 2, 2]
        assert [sup.restarts(k.name) for k in kids] == [0, 0, 1, 0]
        assert all(sup.state(k.name) is ChildState.RUNNING for k in kids)


async def test_one_for_all_does_not_restart_a_temporary_sibling(events: Events) -> None:
    """OTP: a temporary child is never restarted, not even when a sibling's death
    under one_for_all takes it down.  Transient siblings do come back."""
    trace: list[tuple[str, str]] = []
    temp, trans, perm = workers(trace, "temp", "trans", "perm")
    sup = Supervisor(
        [temp.spec(Restart.TEMPORARY), trans.spec(Restart.TRANSIENT), perm.spec()],
        strategy=Strategy.ONE_FOR_ALL,
        report=events,
        backoff=FAST,
    )
    async with running(sup):
        perm.orders.put_nowait("crash")
        await events.expect("perm", "crashed")
        await events.expect("perm", "started")
        assert events.names("stopping") == ["trans", "temp"]
        assert sup.state("temp") is ChildState.STOPPED
        assert temp.incarnations == 1
        assert sup.state("trans") is ChildState.RUNNING
        assert trans.incarnations == 2
        assert perm.incarnations == 2


async def test_one_for_all_with_siblings_crashing_together_restarts_once(
    events: Events,
) -> None:
    """Two children die in the same loop iteration: one group restart, no confusion."""
    doom = asyncio.Event()
    incarnations = {"a": 0, "b": 0, "c": 0}

    def child(name: str, *, doomed: bool) -> ChildFn:
        async def run(ready: Callable[[], None]) -> None:
            incarnations[name] += 1
            ready()
            if doomed and incarnations[name] == 1:
                await doom.wait()
                raise Crash(name)
            await asyncio.Event().wait()

        return run

    sup = Supervisor(
        [
            ChildSpec("a", child("a", doomed=True)),
            ChildSpec("b", child("b", doomed=True)),
            ChildSpec("c", child("c", doomed=False)),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        report=events,
        backoff=FAST,
    )
    async with running(sup) as task:
        doom.set()
        await events.expect("a", "crashed")
        await events.expect("c", "started")
        assert not task.done()
        assert incarnations == {"a": 2, "b": 2, "c": 2}
        assert all(sup.state(n) is ChildState.RUNNING for n in "abc")
        assert sup.restarts("a") + sup.restarts("b") == 1


# -- crashes during start ------------------------------------------------------
async def test_a_child_that_crashes_before_ready_counts_as_a_crash(events: Events) -> None:
    attempts = 0

    async def flaky(ready: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Crash("no config yet")
        ready()
        await asyncio.Event().wait()

    trace: list[tuple[str, str]] = []
    (after,) = workers(trace, "after")
    sup = Supervisor([ChildSpec("flaky", flaky), after.spec()], report=events, backoff=FAST)
    async with running(sup):
        assert events.of("flaky") == [
            "starting", "crashed", "restarting", "starting", "started",
        ]  # fmt: skip
        (crashed,) = [e for e in events.log if e.type == "crashed"]
        assert crashed.info["reason"] == "Crash: no config yet"
        assert sup.restarts("flaky") == 1
        assert attempts == 2
        # the next child only started once flaky was really up
        assert events.names("starting") == ["flaky", "flaky", "after"]


async def test_a_crash_before_ready_counts_towards_the_intensity(events: Events) -> None:
    async def broken(ready: Callable[[], None]) -> None:
        raise Crash("never starts")

    halted: list[str] = []

    async def halt(reason: str) -> None:
        halted.append(reason)

    sup = Supervisor(
        [ChildSpec("broken", broken)],
        max_restarts=0,
        max_seconds=60,
        report=events,
        on_escalate=halt,
        backoff=FAST,
    )
    with pytest.raises(Escalation):
        await bounded(sup.run())
    assert events.of("broken") == ["starting", "crashed", "escalated"]
    assert len(halted) == 1


async def test_a_temporary_child_that_dies_before_ready_does_not_stop_the_start(
    events: Events,
) -> None:
    async def once(ready: Callable[[], None]) -> None:
        raise Crash("gone")

    trace: list[tuple[str, str]] = []
    (after,) = workers(trace, "after")
    sup = Supervisor(
        [ChildSpec("once", once, restart=Restart.TEMPORARY), after.spec()],
        report=events,
        backoff=FAST,
    )
    async with running(sup):
        assert events.of("once") == ["starting", "crashed", "stopped"]
        assert sup.state("once") is ChildState.STOPPED
        assert sup.state("after") is ChildState.RUNNING


async def test_a_child_not_ready_within_its_start_timeout_is_cancelled_and_restarted(
    events: Events,
) -> None:
    attempts = 0
    first_cancelled = asyncio.Event()

    async def slow(ready: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            try:
                await asyncio.Event().wait()  # never ready
            except asyncio.CancelledError:
                first_cancelled.set()
                raise
        ready()
        await asyncio.Event().wait()

    sup = Supervisor([ChildSpec("slow", slow, start_timeout=0.01)], report=events, backoff=FAST)
    async with running(sup):
        assert first_cancelled.is_set()
        assert events.of("slow") == ["starting", "crashed", "restarting", "starting", "started"]
        (crashed,) = [e for e in events.log if e.type == "crashed"]
        assert crashed.info["reason"] == "not ready within 0.01s"
        assert sup.restarts("slow") == 1


async def test_a_child_not_ready_in_time_that_ignores_cancellation_is_reported_abandoned(
    events: Events,
) -> None:
    attempts = 0
    release = asyncio.Event()

    async def hung(ready: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()
                return
        ready()
        await asyncio.Event().wait()

    sup = Supervisor(
        [ChildSpec("hung", hung, start_timeout=0.01, shutdown_timeout=0.01)],
        report=events,
        backoff=FAST,
    )
    try:
        async with running(sup):
            assert len(sup.abandoned) == 1
            assert not sup.abandoned[0].done()
            assert events.of("hung")[:3] == ["starting", "abandoned", "crashed"]
            assert sup.state("hung") is ChildState.RUNNING
    finally:
        release.set()
        await bounded(asyncio.gather(*sup.abandoned))


# -- restart intensity -----------------------------------------------------------
def crash_loop(
    events: Events, name: str, clock: Clock | None = None, advance: float = 0.0
) -> ChildSpec:
    """A child that crashes as soon as it is running, ``advance`` seconds later on ``clock``."""

    async def run(ready: Callable[[], None]) -> None:
        started = events.when(name, "started")
        ready()
        await started.wait()  # really running: not a crash during start
        if clock is not None:
            clock.advance(advance)
        raise Crash("again")

    return ChildSpec(name, run)


async def test_intensity_breach_stops_all_in_reverse_halts_and_raises(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    a, b, c, d = workers(trace, "a", "b", "c", "d")
    seen_by_hook: list[tuple[str, dict[str, ChildState]]] = []

    async def halt(reason: str) -> None:
        seen_by_hook.append((reason, {n: sup.state(n) for n in "abcd"}))

    sup = Supervisor(
        [a.spec(), b.spec(), c.spec(), d.spec()],
        name="root",
        max_restarts=3,
        max_seconds=60,  # every restart below is well inside the window
        report=events,
        on_escalate=halt,
        backoff=FAST,
    )
    async with running(sup) as task:
        for _ in range(4):
            c.orders.put_nowait("crash")
        with pytest.raises(Escalation, match="4 restarts within 60"):
            await bounded(task)
    assert sup.restarts("c") == 3
    assert c.incarnations == 4
    assert events.names("crashed") == ["c"] * 4
    (esc,) = [e for e in events.log if e.type == "escalated"]
    assert esc.child == "c" and esc.sup == "root"
    assert "last: c" in esc.info["reason"]
    # after the escalation: the hook (halt) while the others still run, then
    # everyone else down, in reverse order
    after = events.log[events.log.index(esc) :]
    assert [e.child for e in after if e.type == "stopping"] == ["d", "b", "a"]
    assert [e.child for e in after if e.type == "stopped"] == ["d", "b", "a"]
    assert [n for what, n in trace if what == "cancelled"] == ["d", "b", "a"]
    assert len(seen_by_hook) == 1
    reason, states = seen_by_hook[0]
    assert reason == esc.info["reason"]
    assert states == {
        "a": ChildState.RUNNING,
        "b": ChildState.RUNNING,
        "c": ChildState.CRASHED,
        "d": ChildState.RUNNING,
    }
    assert [a.incarnations, b.incarnations, d.incarnations] == [1, 1, 1]


async def test_intensity_breach_under_one_for_all(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    a, b, c = workers(trace, "a", "b", "c")
    sup = Supervisor(
        [a.spec(), b.spec(), c.spec()],
        strategy=Strategy.ONE_FOR_ALL,
        max_restarts=1,
        max_seconds=60,
        report=events,
        backoff=FAST,
    )
    async with running(sup) as task:
        a.orders.put_nowait("crash")
        await events.expect("a", "crashed")
        await events.expect("c", "started")
        a.orders.put_nowait("crash")
        with pytest.raises(Escalation):
            await bounded(task)
    assert all(sup.state(n) is not ChildState.RUNNING for n in "abc")
    assert [n for what, n in trace if what == "cancelled"] == ["c", "b", "c", "b"]


async def test_escalation_still_raises_when_the_hook_fails(events: Events) -> None:
    async def hook(reason: str) -> None:
        raise RuntimeError("KV down")

    sup = Supervisor(
        [crash_loop(events, "x")],
        max_restarts=0,
        max_seconds=60,
        report=events,
        on_escalate=hook,
        backoff=FAST,
    )
    with pytest.raises(Escalation):
        await bounded(sup.run())


async def test_escalation_does_not_wait_forever_for_the_hook(events: Events) -> None:
    hook_cancelled = asyncio.Event()

    async def hook(reason: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            hook_cancelled.set()
            raise

    sup = Supervisor(
        [crash_loop(events, "x")],
        max_restarts=0,
        max_seconds=60,
        report=events,
        on_escalate=hook,
        escalate_timeout=0.01,
        backoff=FAST,
    )
    with pytest.raises(Escalation):
        await bounded(sup.run())
    assert hook_cancelled.is_set()


async def test_escalation_abandons_a_stubborn_child_and_goes_on(events: Events) -> None:
    release = asyncio.Event()
    halted: list[str] = []

    async def stubborn(ready: Callable[[], None]) -> None:
        ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()

    async def halt(reason: str) -> None:
        halted.append(reason)

    trace: list[tuple[str, str]] = []
    (a,) = workers(trace, "a")
    sup = Supervisor(
        [a.spec(), ChildSpec("stubborn", stubborn, shutdown_timeout=0.01),
         crash_loop(events, "x")],
        max_restarts=0,
        max_seconds=60,
        report=events,
        on_escalate=halt,
        backoff=FAST,
    )  # fmt: skip
    try:
        with pytest.raises(Escalation):
            await bounded(sup.run())
        assert events.names("abandoned") == ["stubborn"]
        assert events.names("stopped") == ["a"]
        assert len(halted) == 1
    finally:
        release.set()
        await bounded(asyncio.gather(*sup.abandoned))


async def test_fake_clock_breach_on_the_first_restart_too_many(
    clock: Clock, events: Events
) -> None:
    sup = Supervisor(
        [crash_loop(events, "x")],
        max_restarts=3,
        max_seconds=1.0,
        report=events,
        backoff=FAST,
    )
    with pytest.raises(Escalation, match="4 restarts within 1.0s"):
        await bounded(sup.run())
    assert sup.restarts("x") == 3
    assert events.names("crashed") == ["x"] * 4


async def test_fake_clock_paced_restarts_never_trip_the_limit(clock: Clock, events: Events) -> None:
    """Slower than max_restarts per max_seconds: restarts go on for ever."""
    trace: list[tuple[str, str]] = []
    (keeper,) = workers(trace, "keeper")
    sup = Supervisor(
        [keeper.spec(), crash_loop(events, "x", clock, advance=0.34)],
        max_restarts=3,
        max_seconds=1.0,  # 4 restarts 0.34 s apart span 1.02 s: never 4 in the window
        report=events,
        backoff=FAST,
    )
    async with running(sup):
        for n in range(1, 31):
            await events.expect("x", "crashed")
            await events.expect("x", "started")
            assert sup.restarts("x") == n
    assert events.names("escalated") == []


async def test_fake_clock_window_boundary(clock: Clock, events: Events) -> None:
    """4 restarts 0.33 s apart span 0.99 s: one too many for 3 per second."""
    sup = Supervisor(
        [crash_loop(events, "x", clock, advance=0.33)],
        max_restarts=3,
        max_seconds=1.0,
        report=events,
        backoff=FAST,
    )
    with pytest.raises(Escalation, match="4 restarts within 1.0s"):
        await bounded(sup.run())
    assert sup.restarts("x") == 3


async def test_real_clock_paced_restarts_never_trip_the_limit(events: Events) -> None:
    """Each incarnation runs >= 2 ms before it crashes, the window is 0.1 ms: never two in it."""
    trace: list[tuple[str, str]] = []
    (keeper,) = workers(trace, "keeper")

    async def slow_crash(ready: Callable[[], None]) -> None:
        ready()
        await asyncio.sleep(0.002)  # the child's run time, the pacing under test
        raise Crash("again")

    sup = Supervisor(
        [keeper.spec(), ChildSpec("x", slow_crash)],
        max_restarts=1,
        max_seconds=0.0001,
        backoff=Backoff(initial=0.001, cap=0.001, jitter=0),
        report=events,
    )
    async with running(sup) as task:
        for _ in range(20):
            await events.expect("x", "crashed")
            await events.expect("x", "started")
        assert not task.done()
        assert sup.restarts("x") >= 20
    assert events.names("escalated") == []


async def test_backoff_time_is_off_the_intensity_clock(events: Events) -> None:
    """A child that crashes at once after each start escalates even though the backoff
    (0.3 s) spaces its restarts wider than the window (0.25 s): on wall time the
    window would never hold two of them, and a crash loop would go on for ever."""
    sup = Supervisor(
        [crash_loop(events, "x")],
        max_restarts=3,
        max_seconds=0.25,
        backoff=Backoff(initial=0.3, cap=0.3, jitter=0),
        report=events,
    )
    with pytest.raises(Escalation, match="4 restarts within 0.25s"):
        await bounded(sup.run())
    assert sup.restarts("x") == 3
    delays = [float(e.info["delay"]) for e in events.log if e.type == "restarting"]
    assert delays == [0.3, 0.3, 0.3]


async def test_paced_failures_to_start_go_on_without_growing_the_stack(
    clock: Clock, events: Events
) -> None:
    """A child that keeps dying before ready(), slowly enough never to trip the
    intensity, is retried for ever (it used to die of RecursionError after ~490)."""
    attempts = 0
    wanted = 1000

    async def child(ready: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        clock.advance(2.0)
        if attempts < wanted:
            raise Crash("cannot connect")
        ready()
        await asyncio.Event().wait()

    sup = Supervisor(
        [ChildSpec("x", child)],
        max_restarts=1,
        max_seconds=1.0,
        backoff=Backoff(initial=0, cap=0),
        report=events,
    )
    async with running(sup):
        assert attempts == wanted
        assert sup.restarts("x") == wanted - 1
        assert sup.state("x") is ChildState.RUNNING
    assert events.names("escalated") == []


# -- backoff between restarts -------------------------------------------------------
async def test_backoff_grows_then_resets_after_healthy_after(clock: Clock, events: Events) -> None:
    healthy = asyncio.Event()
    attempts = 0

    async def child(ready: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        started = events.when("x", "started")
        ready()
        await started.wait()
        if attempts == 4:
            clock.advance(10.0)  # this incarnation ran for healthy_after seconds
        if attempts == 7:
            healthy.set()
            await asyncio.Event().wait()
        raise Crash(f"attempt {attempts}")

    sup = Supervisor(
        [ChildSpec("x", child)],
        max_restarts=100,
        max_seconds=60,
        backoff=Backoff(initial=0.001, factor=2, cap=1.0, jitter=0),
        healthy_after=10.0,
        report=events,
    )
    async with running(sup):
        await bounded(healthy.wait())
        delays = [e.info["delay"] for e in events.log if e.type == "restarting"]
        assert delays == ["0.001", "0.002", "0.004", "0.001", "0.002", "0.004"]


async def test_restart_delays_follow_the_backoff_with_the_given_rng(
    clock: Clock, events: Events
) -> None:
    done = asyncio.Event()
    attempts = 0

    async def child(ready: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        ready()
        if attempts == 5:
            done.set()
            await asyncio.Event().wait()
        raise Crash("again")

    backoff = Backoff(initial=0.001, factor=2, cap=0.004, jitter=0.5)
    sup = Supervisor(
        [ChildSpec("x", child)],
        max_restarts=100,
        max_seconds=60,
        backoff=backoff,
        rng=random.Random(1234),
        report=events,
    )
    async with running(sup):
        await bounded(done.wait())
    rng = random.Random(1234)
    expected = [f"{backoff.delay(n, rng):.3f}" for n in range(4)]
    assert [e.info["delay"] for e in events.log if e.type == "restarting"] == expected


# -- shutdown in the middle of things -------------------------------------------------
async def test_cancel_while_a_sibling_is_being_stopped_still_waits_for_it(
    events: Events,
) -> None:
    """one_for_all is stopping ``a`` when the supervisor itself is cancelled:
    ``a`` must still be waited for and reported, not left behind half-stopped."""
    cleanup = asyncio.Event()
    a_finished = asyncio.Event()

    async def a(ready: Callable[[], None]) -> None:
        ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await cleanup.wait()
            a_finished.set()
            raise

    trace: list[tuple[str, str]] = []
    (b,) = workers(trace, "b")
    sup = Supervisor(
        [ChildSpec("a", a, shutdown_timeout=BOUND), b.spec()],
        strategy=Strategy.ONE_FOR_ALL,
        report=events,
        backoff=FAST,
    )
    async with running(sup) as task:
        b.orders.put_nowait("crash")
        await events.expect("a", "stopping")
        task.cancel()
        cleanup.set()
        with pytest.raises(asyncio.CancelledError):
            await bounded(task)
    assert a_finished.is_set()
    assert sup.state("a") is ChildState.STOPPED
    assert events.of("a")[-2:] == ["stopping", "stopped"]
    assert b.incarnations == 1


async def test_a_crash_not_yet_handled_at_shutdown_is_still_logged(
    events: Events, caplog: pytest.LogCaptureFixture
) -> None:
    """The child died in the same loop turn the supervisor was cancelled: its
    exception is retrieved and logged, not left to "never retrieved" at GC time."""
    doom = asyncio.Event()

    async def doomed(ready: Callable[[], None]) -> None:
        ready()
        await doom.wait()
        raise Crash("died at shutdown")

    sup = Supervisor([ChildSpec("a", doomed)], report=events, backoff=FAST)
    async with running(sup) as task:
        doom.set()  # wakes the child first ...
        task.cancel()  # ... then the supervisor, which finds it already dead
        with pytest.raises(asyncio.CancelledError):
            await bounded(task)
    assert events.of("a") == ["starting", "started", "stopping", "stopped"]
    assert "a raised while stopping: Crash: died at shutdown" in caplog.messages


async def test_cancel_during_the_restart_backoff(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    a, b = workers(trace, "a", "b")
    sup = Supervisor(
        [a.spec(), b.spec()],
        report=events,
        backoff=Backoff(initial=BOUND * 10, cap=BOUND * 10, jitter=0),
    )
    async with running(sup) as task:
        b.orders.put_nowait("crash")
        await events.expect("b", "restarting")
        await cancel_and_wait(task)
    assert sup.state("a") is ChildState.STOPPED
    assert b.incarnations == 1
    assert events.names("stopped") == ["a"]


# -- trees --------------------------------------------------------------------------
def tree(
    events: Events, trace: list[tuple[str, str]], **inner_kw: Any
) -> tuple[Supervisor, Supervisor, dict[str, Worker]]:
    kids = {n: Worker(n, trace) for n in ("a", "x", "y", "b")}
    inner = Supervisor(
        [kids["x"].spec(), kids["y"].spec()], name="inner", report=events, backoff=FAST,
        **inner_kw,
    )  # fmt: skip
    outer = Supervisor(
        [kids["a"].spec(), ChildSpec("inner", inner.run), kids["b"].spec()],
        name="outer",
        report=events,
        backoff=FAST,
    )
    return outer, inner, kids


async def test_nested_supervisors_start_depth_first_and_stop_in_reverse(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    outer, inner, kids = tree(events, trace)
    async with running(outer) as task:
        assert [n for what, n in trace if what == "up"] == ["a", "x", "y", "b"]
        started = [(e.sup, e.child) for e in events.log if e.type == "started"]
        assert started == [
            ("outer", "a"), ("inner", "x"), ("inner", "y"), ("outer", "inner"), ("outer", "b"),
        ]  # fmt: skip
        await cancel_and_wait(task)
    assert [n for what, n in trace if what == "cancelled"] == ["b", "y", "x", "a"]
    stopped = [(e.sup, e.child) for e in events.log if e.type == "stopped"]
    assert stopped == [
        ("outer", "b"), ("inner", "y"), ("inner", "x"), ("outer", "inner"), ("outer", "a"),
    ]  # fmt: skip


async def test_a_crash_inside_a_subtree_stays_inside_it(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    outer, inner, kids = tree(events, trace)
    async with running(outer):
        kids["x"].orders.put_nowait("crash")
        await events.expect("x", "crashed", sup="inner")
        await events.expect("x", "started", sup="inner")
        assert inner.restarts("x") == 1
        assert outer.restarts("inner") == 0
        assert [k.incarnations for k in kids.values()] == [1, 2, 1, 1]
        assert events.of("inner", sup="outer") == ["starting", "started"]


async def test_an_escalating_subtree_is_restarted_by_its_parent(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    outer, inner, kids = tree(events, trace, max_restarts=0, max_seconds=60)
    async with running(outer):
        kids["x"].orders.put_nowait("crash")
        await events.expect("x", "escalated", sup="inner")
        crashed = await events.expect("inner", "crashed", sup="outer")
        assert crashed.info["reason"].startswith("Escalation: 1 restarts within 60")
        await events.expect("inner", "started", sup="outer")
        assert outer.restarts("inner") == 1
        assert inner.state("x") is ChildState.RUNNING
        assert inner.state("y") is ChildState.RUNNING
        assert [k.incarnations for k in kids.values()] == [1, 2, 2, 1]
        # the restarted subtree has a fresh intensity window: one more crash escalates
        # again (max_restarts=0) instead of failing on stale state
        kids["y"].orders.put_nowait("crash")
        await events.expect("inner", "crashed", sup="outer")
        await events.expect("inner", "started", sup="outer")
        assert outer.restarts("inner") == 2


async def test_a_supervisor_can_run_again_after_it_escalated(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    a, b = workers(trace, "a", "b")
    sup = Supervisor(
        [a.spec(), b.spec()], max_restarts=0, max_seconds=60, report=events, backoff=FAST
    )
    async with running(sup) as task:
        b.orders.put_nowait("crash")
        with pytest.raises(Escalation):
            await bounded(task)
    async with running(sup):
        assert sup.state("a") is ChildState.RUNNING
        assert sup.state("b") is ChildState.RUNNING
        assert (a.incarnations, b.incarnations) == (2, 2)


def test_transition_table_is_closed() -> None:
    """Every state named as a target has its own row (no dead ends by typo)."""
    for targets in supervisor_module.TRANSITIONS.values():
        assert targets <= set(supervisor_module.TRANSITIONS)
    assert set(supervisor_module.TRANSITIONS) == set(ChildState)


def test_an_illegal_transition_raises() -> None:
    child = supervisor_module._Child(crash_loop(Events(), "a"))
    with pytest.raises(SupervisorError, match="idle -> running"):
        child.move(ChildState.RUNNING)


# -- outages: a state change, not a crash (issue 17) --------------------------
async def test_outages_never_count_toward_the_intensity_nor_the_restarts(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    a, b = workers(trace, "a", "b")
    sup = Supervisor(
        [a.spec(), b.spec()], report=events, backoff=FAST, max_restarts=2, outage=outage
    )
    async with running(sup) as task:
        for n in range(1, 11):  # five times the limit
            b.orders.put_nowait("outage")
            ev = await events.expect("b", "waiting_for_bus")
            assert "lost the bus" in ev.info["reason"] and ev.info["outages"] == str(n)
            await events.expect("b", "started")
        assert not task.done()
        assert sup.restarts("b") == 0 and sup.outages("b") == 10
        assert sup.state("b") is ChildState.RUNNING and b.incarnations == 11
        assert events.names("crashed") == [] and events.names("restarting") == []
        assert events.names("escalated") == []
        assert a.incarnations == 1
        # a real fault still counts, and still escalates past the limit
        for _ in range(3):
            b.orders.put_nowait("crash")
        with pytest.raises(Escalation, match="3 restarts within"):
            await bounded(task)
    assert sup.restarts("b") == 2 and events.names("crashed") == ["b"] * 3


async def test_an_outage_under_one_for_all_takes_no_sibling_down(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    a, b, c = workers(trace, "a", "b", "c")
    sup = Supervisor(
        [a.spec(), b.spec(), c.spec()],
        strategy=Strategy.ONE_FOR_ALL,
        report=events,
        backoff=FAST,
        outage=outage,
    )
    async with running(sup):
        b.orders.put_nowait("outage")
        await events.expect("b", "waiting_for_bus")
        await events.expect("b", "started")
        assert [k.incarnations for k in (a, b, c)] == [1, 2, 1]
        assert events.names("stopping") == []


async def test_without_a_classifier_an_outage_is_a_crash(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    (a,) = workers(trace, "a")
    sup = Supervisor([a.spec()], report=events, backoff=FAST)
    async with running(sup):
        a.orders.put_nowait("outage")
        await events.expect("a", "crashed")
        await events.expect("a", "started")
        assert sup.restarts("a") == 1 and sup.outages("a") == 0


async def test_an_outage_before_ready_waits_and_starts_again(events: Events) -> None:
    attempts = 0

    async def flaky(ready: Callable[[], None]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise BaseExceptionGroup("connect", [Outage("no server yet")])
        ready()
        await asyncio.Event().wait()

    sup = Supervisor(
        [ChildSpec("a", flaky)], report=events, backoff=FAST, max_restarts=1, outage=outage
    )
    async with running(sup):
        assert attempts == 4 and sup.outages("a") == 3 and sup.restarts("a") == 0
        assert events.of("a")[:3] == ["starting", "waiting_for_bus", "starting"]
        assert sup.state("a") is ChildState.RUNNING


async def test_a_group_mixing_an_outage_and_a_fault_is_a_crash(events: Events) -> None:
    go = asyncio.Event()

    async def both(ready: Callable[[], None]) -> None:
        ready()
        await go.wait()
        go.clear()
        raise BaseExceptionGroup("both", [Outage("bus"), Crash("bug")])

    sup = Supervisor([ChildSpec("a", both)], report=events, backoff=FAST, outage=outage)
    async with running(sup):
        go.set()
        await events.expect("a", "crashed")
        await events.expect("a", "started")
        assert sup.restarts("a") == 1 and events.names("waiting_for_bus") == []


async def test_a_temporary_child_is_not_restarted_after_an_outage(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    a, b = workers(trace, "a", "b")
    sup = Supervisor(
        [a.spec(), b.spec(Restart.TEMPORARY)], report=events, backoff=FAST, outage=outage
    )
    async with running(sup):
        b.orders.put_nowait("outage")
        await events.expect("b", "stopped")
        assert sup.state("b") is ChildState.STOPPED and b.incarnations == 1


async def test_cancel_while_waiting_out_an_outage(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    a, b = workers(trace, "a", "b")
    slow = Backoff(initial=BOUND * 10, cap=BOUND * 10, jitter=0)
    sup = Supervisor([a.spec(), b.spec()], report=events, backoff=slow, outage=outage)
    async with running(sup) as task:
        b.orders.put_nowait("outage")
        await events.expect("b", "waiting_for_bus")
        assert sup.state("b") is ChildState.WAITING
        await cancel_and_wait(task)
    assert events.names("stopped") == ["a"]


def test_bus_errors_are_outages_and_our_bugs_are_not() -> None:
    import nats.errors
    import nats.js.errors

    from rbot.bus.connection import BusClosed
    from rbot.bus.outage import LeaseLost, is_outage

    for exc in (
        BusClosed("closed"),
        LeaseLost("gone"),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.errors.ConnectionClosedError(),
        nats.errors.ConnectionReconnectingError(),
        nats.js.errors.ServiceUnavailableError(),
        ConnectionResetError(),
        BaseExceptionGroup("g", [nats.errors.TimeoutError(), ExceptionGroup("h", [BusClosed()])]),
    ):
        assert is_outage(exc), exc
    for exc in (
        KeyError("x"),
        ValueError(),
        TimeoutError(),  # our own deadline, not the bus's
        nats.js.errors.KeyWrongLastSequenceError(),
        ExceptionGroup("g", [nats.errors.TimeoutError(), ZeroDivisionError()]),
    ):
        assert not is_outage(exc), exc


# -- the watchdog: a hung child is restarted (R4) ------------------------------
class Ticker:
    """A child with a heartbeat: ``alive()`` is the loop time of its last tick.

    Incarnations listed in ``hang`` say ready and never tick again (a hung child:
    the task alive, the beat stopped); ``stubborn`` ones also ignore cancellation
    until ``release`` is set.  The others tick every ``every`` seconds and set
    ``ticked`` after ``ticks`` ticks.
    """

    def __init__(
        self, hang: set[int], every: float = 0.005, ticks: int = 40, stubborn: bool = False
    ) -> None:
        self.hang, self.every, self.ticks, self.stubborn = hang, every, ticks, stubborn
        self.last = 0.0
        self.incarnations = 0
        self.ticked = asyncio.Event()
        self.release = asyncio.Event()

    def alive(self) -> float:
        return self.last

    async def __call__(self, ready: Callable[[], None]) -> None:
        self.incarnations += 1
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        ready()
        if self.incarnations in self.hang:
            if self.stubborn:
                while not self.release.is_set():
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.release.wait()
                return
            await asyncio.Event().wait()  # an await that never returns
        for n in itertools.count(1):
            await asyncio.sleep(self.every)  # the child's own beat interval
            self.last = loop.time()
            if n == self.ticks:
                self.ticked.set()

    def spec(self, hang_after: float, **kw: Any) -> ChildSpec:
        return ChildSpec("t", self, alive=self.alive, hang_after=hang_after, **kw)


async def test_a_hung_child_is_cancelled_and_restarted(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    (keeper,) = workers(trace, "keeper")
    t = Ticker(hang={1})
    sup = Supervisor([keeper.spec(), t.spec(0.05)], report=events, backoff=FAST)
    async with running(sup):
        started = asyncio.get_running_loop().time()
        hung = await events.expect("t", "hung")
        noticed = asyncio.get_running_loop().time() - started
        crashed = await events.expect("t", "crashed")
        await events.expect("t", "started")
        await bounded(t.ticked.wait())  # the new incarnation beats: 40 ticks, no alarm
        assert hung.info["reason"].startswith("hung: no sign of life for 0.05")
        assert crashed.info["reason"] == hung.info["reason"]
        assert events.of("t").count("hung") == 1
        assert sup.restarts("t") == 1 and t.incarnations == 2
        assert keeper.incarnations == 1  # one_for_one: nobody else was touched
        assert 0.05 <= noticed < 0.05 + BOUND
    assert sup._child("t").watchdog is None  # stopped with its child


async def test_a_hung_child_counts_toward_the_intensity(events: Events) -> None:
    t = Ticker(hang={1, 2, 3})
    halted: list[str] = []

    async def halt(reason: str) -> None:
        halted.append(reason)

    sup = Supervisor(
        [t.spec(0.02)], max_restarts=2, max_seconds=60, report=events, backoff=FAST,
        on_escalate=halt,
    )  # fmt: skip
    with pytest.raises(Escalation, match="3 restarts within 60"):
        await bounded(sup.run())
    assert events.names("hung") == ["t"] * 3 and len(halted) == 1


async def test_a_hung_child_that_ignores_cancellation_is_abandoned_and_restarted(
    events: Events,
) -> None:
    t = Ticker(hang={1}, stubborn=True)
    sup = Supervisor([t.spec(0.03, shutdown_timeout=0.05)], report=events, backoff=FAST)
    try:
        async with running(sup):
            await events.expect("t", "hung")
            await events.expect("t", "abandoned")
            await events.expect("t", "crashed")
            await events.expect("t", "started")
            await bounded(t.ticked.wait())
            assert len(sup.abandoned) == 1 and not sup.abandoned[0].done()
    finally:
        t.release.set()
        await bounded(asyncio.gather(*sup.abandoned))


async def test_a_stalled_event_loop_is_not_mistaken_for_a_hung_child(events: Events) -> None:
    """The whole loop blocks for 4x ``hang_after``: the child's timer is due first and
    ticks before the watchdog looks, so nobody is restarted."""
    t = Ticker(hang=set(), every=0.01, ticks=30)
    sup = Supervisor([t.spec(0.05)], report=events, backoff=FAST)
    async with running(sup):
        await asyncio.sleep(0.02)  # let the child tick and the watchdog arm
        time.sleep(0.2)  # noqa: ASYNC251 -- the stall under test
        await bounded(t.ticked.wait())
        assert events.names("hung") == [] and t.incarnations == 1


async def test_a_child_without_alive_has_no_watchdog(events: Events) -> None:
    trace: list[tuple[str, str]] = []
    (a,) = workers(trace, "a")
    sup = Supervisor([a.spec(hang_after=0.01)], report=events, backoff=FAST)
    async with running(sup):
        assert sup._child("a").watchdog is None
