"""An Erlang/OTP-style supervisor for asyncio children.

Vocabulary (from the OTP supervisor guide)::

    strategy   one_for_one   a crashed child is restarted alone
               one_for_all   a crashed child takes its siblings down; all restart
                             (temporary siblings stay down, as in OTP)
    restart    permanent     always restarted
               transient     restarted only after an abnormal exit (an exception)
               temporary     never restarted
    intensity  more than ``max_restarts`` restarts within ``max_seconds`` of time
               spent outside restart backoff (so the backoff slows a crash loop
               down but never hides it from the intensity): report ``escalated``, run the escalation hook (trading -> HALTED)
               while the bus is still up, stop every child in reverse order and raise ``Escalation`` so the
               process exits non-zero and systemd/Kubernetes takes over.
    watchdog   a child whose spec has ``alive`` (the loop time of its last sign
               of life, e.g. its heartbeat loop's last tick) and shows none for
               ``hang_after`` seconds while running is hung: reported ``hung``,
               cancelled (abandoned past its shutdown timeout) and handled as a
               crash, so it is restarted and counts toward the intensity (R4).
    outage     ``outage(exc)`` classifies an exit as "the world is down, not us"
               (a lost bus): the child waits and starts again, never escalates.

Lifecycle of one child::

    starting --ready()--> running --return--> exited  --(permanent)------> restarting
        |                    |                                              |
        |                    +--raise | hung (watchdog)--> crashed --(permanent|transient)--+
        +--exit before ready-> crashed                                       |
    restarting --backoff delay--> starting                                   |
    running|starting --raise an outage--> waiting_for_bus --backoff--> starting
        (``outage(exc)`` true, e.g. the bus is down: not counted as a restart nor
        toward the intensity; no sibling is taken down; ``outages`` counts them)
    stop: stopping --> stopped | abandoned (ignored cancellation past its shutdown timeout)

Children start in order, each after the previous one said ``ready()``, and stop
in reverse order.  Restarts wait a jittered exponential backoff that resets once
a child has run for ``healthy_after`` seconds.  Every change goes to ``report``
(the CLI publishes it on ``rbot.evt.actor.<actor>.<type>`` and in KV ``actors``).

A supervisor is itself a child: ``Supervisor.run`` has the child signature, so
trees nest.  Child tasks are owned by the supervisor; a child that ignores
cancellation past its timeout is abandoned (reported, never awaited again).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from .backoff import Backoff
from .stuck import stuck_tasks

log = logging.getLogger("rbot.supervisor")

Ready = Callable[[], None]
ChildFn = Callable[[Ready], Coroutine[Any, Any, None]]
Report = Callable[[str, str, dict[str, str]], None]


class Restart(enum.StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.StrEnum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"


class ChildState(enum.StrEnum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    CRASHED = "crashed"
    WAITING = "waiting_for_bus"  # ended on an outage (``outage(exc)``): no fault of its own
    ABANDONED = "abandoned"


# which state a child may move to from each state
TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    ChildState.IDLE: frozenset({ChildState.STARTING}),
    ChildState.STARTING: frozenset(
        {
            ChildState.RUNNING,
            ChildState.CRASHED,
            ChildState.WAITING,
            ChildState.EXITED,
            ChildState.STOPPING,
        }
    ),
    ChildState.RUNNING: frozenset(
        {ChildState.EXITED, ChildState.CRASHED, ChildState.WAITING, ChildState.STOPPING}
    ),
    ChildState.WAITING: frozenset({ChildState.STARTING, ChildState.STOPPED}),
    ChildState.EXITED: frozenset({ChildState.RESTARTING, ChildState.STOPPED}),
    ChildState.CRASHED: frozenset({ChildState.RESTARTING, ChildState.STOPPED}),
    ChildState.RESTARTING: frozenset({ChildState.STARTING, ChildState.STOPPED}),
    ChildState.STOPPING: frozenset({ChildState.STOPPED, ChildState.ABANDONED}),
    ChildState.STOPPED: frozenset({ChildState.RESTARTING, ChildState.STARTING}),
    ChildState.ABANDONED: frozenset({ChildState.RESTARTING, ChildState.STARTING}),
}


class SupervisorError(Exception):
    """Base error of the supervisor."""


class Escalation(SupervisorError):
    """Restart intensity exceeded: the supervisor gave up."""


@dataclass(frozen=True)
class ChildSpec:
    name: str
    fn: ChildFn
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    start_timeout: float = 30.0
    # the watchdog (R4): the event-loop time of the child's last sign of life;
    # none for ``hang_after`` seconds while running -> hung, restarted as a crash
    alive: Callable[[], float] | None = None
    hang_after: float = 0.0


@dataclass
class _Child:
    spec: ChildSpec
    state: ChildState = ChildState.IDLE
    task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    restarts: int = 0
    outages: int = 0
    attempt: int = 0
    watchdog: asyncio.Task[str] | None = None

    def move(self, to: ChildState) -> None:
        if to not in TRANSITIONS[self.state]:
            raise SupervisorError(f"{self.spec.name}: illegal transition {self.state} -> {to}")
        self.state = to


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"


class Supervisor:
    def __init__(
        self,
        children: list[ChildSpec],
        *,
        name: str = "supervisor",
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 5,
        max_seconds: float = 10.0,
        backoff: Backoff | None = None,
        healthy_after: float = 10.0,
        report: Report | None = None,
        on_escalate: Callable[[str], Awaitable[None]] | None = None,
        escalate_timeout: float = 5.0,
        rng: random.Random | None = None,
        outage: Callable[[BaseException], bool] | None = None,
    ) -> None:
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names in {names}")
        self.name = name
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff or Backoff()
        self.healthy_after = healthy_after
        self._report = report
        self._on_escalate = on_escalate
        self._escalate_timeout = escalate_timeout
        self._rng = rng or random.Random()
        self._is_outage = outage or (lambda exc: False)
        self._children = [_Child(c) for c in children]
        self._restart_times: deque[float] = deque()
        self._paused = 0.0  # seconds spent in restart backoff: not on the intensity's clock
        self.abandoned: list[asyncio.Task[None]] = []

    # -- introspection ---------------------------------------------------
    def state(self, name: str) -> ChildState:
        return self._child(name).state

    def restarts(self, name: str) -> int:
        return self._child(name).restarts

    def outages(self, name: str) -> int:
        """Restarts after an outage: not faults, not in ``restarts`` nor the intensity."""
        return self._child(name).outages

    def task(self, name: str) -> asyncio.Task[None] | None:
        return self._child(name).task

    def _child(self, name: str) -> _Child:
        for c in self._children:
            if c.spec.name == name:
                return c
        raise KeyError(name)

    def _emit(self, child: _Child, type_: str, **info: str) -> None:
        info.setdefault("restarts", str(child.restarts))
        if child.outages:
            info.setdefault("outages", str(child.outages))
        info.setdefault("supervisor", self.name)
        log.info("%s %s %s", child.spec.name, type_, info.get("reason", ""))
        if self._report is not None:
            try:
                self._report(child.spec.name, type_, info)
            except Exception:  # a broken reporter must not take the tree down
                log.exception("lifecycle report for %s failed", child.spec.name)

    # -- running ---------------------------------------------------------
    async def run(self, ready: Ready | None = None) -> None:
        self._fresh()
        try:
            await self._start_in_order(self._children)
            if ready is not None:
                ready()
            await self._loop()
        finally:
            await self._stop_all(reversed(self._children))

    def _fresh(self) -> None:
        """A new incarnation (a parent may run us again after an ``Escalation``):
        every child idle, an empty intensity window, backoff from the start."""
        self._restart_times.clear()
        self._paused = 0.0
        for c in self._children:
            c.state = ChildState.IDLE
            c.task = None
            c.attempt = 0

    async def _loop(self) -> None:
        while True:
            # one at a time: handling an exit may restart (one_for_all) its siblings,
            # so a list of ended children taken before it would be stale
            ended = next(
                (
                    c
                    for c in self._children
                    if c.state is ChildState.RUNNING and c.task is not None and c.task.done()
                ),
                None,
            )
            if ended is not None:
                await self._start_in_order(await self._handle_exit(ended, *self._outcome(ended)))
                continue
            hung = next(
                (
                    c
                    for c in self._children
                    if c.state is ChildState.RUNNING
                    and c.watchdog is not None
                    and c.watchdog.done()
                ),
                None,
            )
            if hung is not None:
                await self._start_in_order(await self._handle_exit(hung, *await self._hung(hung)))
                continue
            live: list[asyncio.Task[Any]] = [
                c.task for c in self._children if c.task is not None and not c.task.done()
            ]
            if not live:
                return  # every child ended for good (temporary / transient)
            live += [
                c.watchdog
                for c in self._children
                if c.state is ChildState.RUNNING and c.watchdog is not None
            ]
            await asyncio.wait(live, return_when=asyncio.FIRST_COMPLETED)

    async def _watch(self, child: _Child) -> str:
        """Return (why) once a running child showed no sign of life for ``hang_after``.

        A deadline re-armed by every sign of life, not a poll: it sleeps until the
        moment the child would be overdue and looks again.  A stalled event loop
        delays the child's timer and this one alike, and the child's (due earlier)
        runs first, so a slow machine is not mistaken for a hung child.
        """
        spec = child.spec
        assert spec.alive is not None
        loop = asyncio.get_running_loop()
        while True:
            idle = loop.time() - spec.alive()
            if idle > spec.hang_after:
                return f"hung: no sign of life for {idle:.2f}s (limit {spec.hang_after:g}s)"
            await asyncio.sleep(spec.hang_after - idle + 0.001)  # the watchdog's deadline

    async def _hung(self, child: _Child) -> tuple[bool, str]:
        """The watchdog fired: report it, cancel the child; it ends as a crash."""
        assert child.watchdog is not None
        why = child.watchdog.result()
        child.watchdog = None
        self._emit(child, "hung", reason=why)
        log.error("%s %s: cancelling it; our pending tasks:\n  %s", child.spec.name, why,
                  "\n  ".join(stuck_tasks()))  # fmt: skip
        if not await self._cancel(child):
            self._emit_abandoned(child)
        return True, why

    async def _unwatch(self, child: _Child) -> None:
        """Stop a child's watchdog (it ended, or is being stopped)."""
        dog, child.watchdog = child.watchdog, None
        if dog is not None and not dog.done():
            dog.cancel()
            await asyncio.wait([dog])  # our own cancellation still propagates

    def _outcome(self, child: _Child) -> tuple[bool, str]:
        """(abnormal, description) of a finished child task."""
        assert child.task is not None
        if child.task.cancelled():
            return True, "cancelled"
        exc = child.task.exception()
        if exc is None:
            return False, "normal"
        return True, _describe(exc)

    def _exception(self, child: _Child) -> BaseException | None:
        task = child.task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def _handle_exit(self, child: _Child, abnormal: bool, why: str) -> list[_Child]:
        """Record how a child ended; return whom to start again, in start order."""
        await self._unwatch(child)
        exc = self._exception(child)
        if exc is not None and self._is_outage(exc):
            return await self._wait_out(child, why)
        if abnormal:
            child.move(ChildState.CRASHED)
            self._emit(child, "crashed", reason=why)
            if exc is not None:
                log.error("%s crashed", child.spec.name, exc_info=exc)
        else:
            child.move(ChildState.EXITED)
            self._emit(child, "exited", reason=why)
        restart = child.spec.restart is Restart.PERMANENT or (
            child.spec.restart is Restart.TRANSIENT and abnormal
        )
        if not restart:
            child.move(ChildState.STOPPED)
            self._emit(child, "stopped", reason="not restarted")
            return []
        await self._check_intensity(child)
        group = [child]
        if self.strategy is Strategy.ONE_FOR_ALL:
            others = [c for c in self._children if c is not child and c.state is ChildState.RUNNING]
            await self._stop_all(reversed(others))
            # OTP: a temporary child is never restarted, not even when a sibling's
            # death takes it down under one_for_all
            group = [
                c
                for c in self._children
                if c is child or (c in others and c.spec.restart is not Restart.TEMPORARY)
            ]
        for c in group:
            c.move(ChildState.RESTARTING)
        await self._pause(child)
        child.restarts += 1
        return group

    async def _wait_out(self, child: _Child, why: str) -> list[_Child]:
        """An outage is a state, not a fault: no intensity, no restart counted,
        no sibling taken down; start it again after the backoff (it reconnects)."""
        child.move(ChildState.WAITING)
        if child.spec.restart is Restart.TEMPORARY:
            child.move(ChildState.STOPPED)
            self._emit(child, "stopped", reason=f"not restarted after: {why}")
            return []
        child.outages += 1
        if child.started_at and time.monotonic() - child.started_at >= self.healthy_after:
            child.attempt = 0
        delay = self.backoff.delay(child.attempt, self._rng)
        child.attempt += 1
        self._emit(child, "waiting_for_bus", reason=why, delay=f"{delay:.3f}")
        log.warning(
            "%s waits for the bus (%s); starting again in %.2fs", child.spec.name, why, delay
        )
        await self._backoff(delay)
        return [child]

    async def _pause(self, child: _Child) -> None:
        if child.started_at and time.monotonic() - child.started_at >= self.healthy_after:
            child.attempt = 0
        delay = self.backoff.delay(child.attempt, self._rng)
        child.attempt += 1
        self._emit(child, "restarting", delay=f"{delay:.3f}")
        await self._backoff(delay)

    async def _backoff(self, delay: float) -> None:
        """The restart backoff itself; its time is kept off the intensity's clock."""
        start = time.monotonic()
        try:
            await asyncio.sleep(delay)
        finally:
            self._paused += time.monotonic() - start

    def _clock(self) -> float:
        """The intensity's clock: monotonic time minus the time spent in backoff.
        A child that crashes at once after every start escalates whatever the
        backoff (10 restarts in 30 s of wall time could never happen once the
        backoff grows past 3 s: a crash loop would go on for ever)."""
        return time.monotonic() - self._paused

    async def _check_intensity(self, child: _Child) -> None:
        now = self._clock()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.max_seconds:
            self._restart_times.popleft()
        if len(self._restart_times) <= self.max_restarts:
            return
        reason = (
            f"{len(self._restart_times)} restarts within {self.max_seconds}s "
            f"(max {self.max_restarts}); last: {child.spec.name}"
        )
        self._emit(child, "escalated", reason=reason)
        log.critical("supervisor %s escalates: %s", self.name, reason)
        # the hook first (trading -> HALTED), while the bus it needs is still up:
        # under `rbot up` the embedded nats-server is one of the children
        if self._on_escalate is not None:
            try:
                async with asyncio.timeout(self._escalate_timeout):
                    await self._on_escalate(reason)
            except Exception:  # boundary: the escalation itself must go on
                log.exception("escalation hook failed")
        await self._stop_all(reversed(self._children))
        raise Escalation(reason)

    async def _start_in_order(self, children: Iterable[_Child]) -> None:
        """Start children in order, each once the previous one said ready.

        A child that ends before it is ready is handled like any other exit, and
        whatever that restarts goes to the front of the line.  A loop, not recursion:
        a child that keeps failing to start, slowly enough never to trip the
        intensity, must not grow the stack until ``RecursionError``.
        """
        pending = deque(children)
        while pending:
            child = pending.popleft()
            ended = await self._launch(child)
            if ended is not None:
                again = await self._handle_exit(child, *ended)
                pending = deque([*again, *(c for c in pending if c not in again)])

    async def _launch(self, child: _Child) -> tuple[bool, str] | None:
        """Start one child and wait for its ready(): None, or how it ended before that."""
        child.move(ChildState.STARTING)
        ev = child.ready = asyncio.Event()
        self._emit(child, "starting")
        child.task = asyncio.create_task(child.spec.fn(ev.set), name=f"actor:{child.spec.name}")
        child.started_at = time.monotonic()
        readiness = asyncio.ensure_future(ev.wait())
        try:
            await asyncio.wait(
                [child.task, readiness],
                timeout=child.spec.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            readiness.cancel()
        if child.task.done():  # ended before (or just as) it said ready
            return self._outcome(child)
        if ev.is_set():
            child.move(ChildState.RUNNING)
            self._emit(child, "started")
            if child.spec.alive is not None and child.spec.hang_after > 0:
                child.watchdog = asyncio.create_task(
                    self._watch(child), name=f"watchdog:{child.spec.name}"
                )
            return None
        if not await self._cancel(child):
            self._emit_abandoned(child)
        return True, f"not ready within {child.spec.start_timeout}s"

    async def _cancel(self, child: _Child, *, request: bool = True) -> bool:
        """Cancel a child and wait up to its shutdown timeout. False: abandoned.

        ``request=False`` only waits: the child was told already and may be cleaning up.
        """
        task = child.task
        if task is None:
            return True
        if not task.done():
            if request:
                task.cancel()
            done, _ = await asyncio.wait([task], timeout=child.spec.shutdown_timeout)
            if not done:
                self.abandoned.append(task)
                return False
        if not task.cancelled():  # it may have crashed before we could handle it
            exc = task.exception()
            if exc is not None:
                log.warning("%s raised while stopping: %s", child.spec.name, _describe(exc))
        return True

    async def _stop_all(self, children: Iterable[_Child]) -> None:
        for child in list(children):
            await self._stop(child)

    async def _stop(self, child: _Child) -> None:
        await self._unwatch(child)
        if child.state in (ChildState.RUNNING, ChildState.STARTING):
            child.move(ChildState.STOPPING)
            self._emit(child, "stopping")
            ok = await self._cancel(child)
        elif child.state is ChildState.STOPPING:
            # a stop cut short (the supervisor itself was cancelled while waiting):
            # the child was told already; wait for it rather than leave it behind
            ok = await self._cancel(child, request=False)
        else:
            return
        if ok:
            child.move(ChildState.STOPPED)
            self._emit(child, "stopped")
        else:
            child.move(ChildState.ABANDONED)
            self._emit_abandoned(child)

    def _emit_abandoned(self, child: _Child) -> None:
        why = f"ignored cancellation for {child.spec.shutdown_timeout}s"
        self._emit(child, "abandoned", reason=why)
        # where it (or anything of ours) waits: the only clue to why it ignored us
        log.warning("%s abandoned; our pending tasks:\n  %s", child.spec.name,
                    "\n  ".join(stuck_tasks()))  # fmt: skip
