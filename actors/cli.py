"""The actor side of the ``rbot`` command (``rbot.cli`` parses and dispatches).

    rbot actors [--only N]  actors alone, against NATS_URL (run it on many machines)
    rbot tap [SUBJECT]      pretty-print bus traffic (default rbot.evt.>)
    rbot creds [IDENTITY]   the NATS identities; ``rbot creds tap``: how to tap with the NATS CLI
    rbot status             trading state, partitions, order counts, actors
    rbot reconcile          ask the live executor to compare with the broker
    rbot cluster-config DIR a 3-node NATS cluster's configs (users, TLS routes)

Also the pieces ``rbot up`` composes (``build_actors``, ``actor_supervisor``,
``run_tree``, ``halt_trading``, ``provision_first``).  Nothing here imports
``rbot.api``: ``rbot actors`` never loads the API (nor argon2).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors

from rbot.bus import codec, eventloop, fence, keys
from rbot.bus.active import order_counts
from rbot.bus.config import DEFAULT_NATS_URL, Settings
from rbot.bus.connection import connect
from rbot.bus.credentials import (
    CredentialsError,
    auth_for,
    local_defaults,
    operator_auth,
)
from rbot.bus.identities import IDENTITIES, OPERATOR, permissions
from rbot.bus.kvscan import scan
from rbot.bus.messages import ActorStatus, TradingState, TradingStateRecord
from rbot.bus.migrate import PartitionsChanged, migrate
from rbot.bus.outage import is_outage
from rbot.bus.provision import provision

from . import clustercli
from .base import Actor, default_instance
from .heartbeat import read_trading_state
from .live.preflight import preflight
from .reporter import Reporter
from .supervisor import Escalation, Supervisor

log = logging.getLogger("rbot")

DEFAULT_URL = DEFAULT_NATS_URL


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
    )
    logging.getLogger("nats").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def build_actors(settings: Settings, url: str | Callable[[], str], only: list[str]) -> list[Actor]:
    from .registry import actor_classes

    classes = actor_classes(settings)
    unknown = set(only) - {c.name for c in classes}
    if unknown:
        raise SystemExit(f"unknown actor(s): {', '.join(sorted(unknown))}")
    instance = settings.rbot_instance or default_instance()
    return [cls(settings, url, instance) for cls in classes if not only or cls.name in only]


async def halt_trading(settings: Settings, url: str, reason: str) -> None:
    """Escalation hook: trading -> HALTED, so nothing new trades without supervision."""
    bus = await connect(
        url,
        settings.subjects(),
        "rbot-escalation",
        first_attempts=3,
        auth=auth_for(settings, "reporter"),
    )
    try:
        kv = await bus.kv("control")
        rec = TradingStateRecord(
            state=TradingState.HALTED,
            reason=f"supervisor escalation: {reason}",
            by="supervisor",
            ts=codec.now_iso(),
        )
        await kv.put("trading", codec.encode(rec))
    finally:
        await bus.close()


def actor_supervisor(
    settings: Settings, url: Callable[[], str], only: list[str], reporter: Reporter
) -> Supervisor:
    actors = build_actors(settings, url, only)
    return Supervisor(
        [a.spec() for a in actors],
        name="actors",
        max_restarts=10,
        max_seconds=30.0,
        report=reporter.report,
        on_escalate=lambda why: halt_trading(settings, url(), why),
        outage=is_outage,  # a lost bus or lease: wait for it, not a fault
    )


async def run_tree(root: Supervisor, reporter: Reporter, banner: Callable[[], None]) -> None:
    async with asyncio.TaskGroup() as tg:
        rep = tg.create_task(reporter.run())
        await root.run(banner)
        rep.cancel()


PROVISION_ATTEMPTS = 10


async def provision_first(settings: Settings, url: str) -> None:
    """Create streams and buckets (they may not exist yet on a fresh server).

    Needs the operator identity when credentials are in use; a process that has
    only its own identity (a remote ``rbot actors``) leaves it to one that has.
    """
    try:
        auth = operator_auth(settings)
    except CredentialsError as exc:
        log.info("not provisioning streams and buckets: %s", exc)
        return
    if auth is not None and auth.user != OPERATOR:
        log.info("not provisioning streams and buckets as NATS user %s", auth.user)
        return
    bus = await connect(url, settings.subjects(), "rbot-provision", auth=auth)
    try:
        for attempt in range(PROVISION_ATTEMPTS):
            try:
                await provision(bus, settings.rbot_replicas)
                break
            except Exception as exc:  # JetStream still electing / recovering: wait it out
                if not is_outage(exc) or attempt == PROVISION_ATTEMPTS - 1:
                    raise
                log.info("provisioning: JetStream not ready (%s), again", type(exc).__name__)
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))  # backoff between attempts
        await migrate(bus, default_instance())
    finally:
        await bus.close()


async def cmd_actors(settings: Settings, only: list[str]) -> None:
    preflight(settings)
    url = settings.nats_url or DEFAULT_URL
    await provision_first(settings, url)
    reporter = Reporter(settings, lambda: url, settings.rbot_instance or default_instance())
    reporter.nats_up.set()
    root = actor_supervisor(settings, lambda: url, only, reporter)
    names = ", ".join(a for a in (only or ["all"]))
    await run_tree(root, reporter, lambda: print(f"actors running ({names}) on {url}", flush=True))


async def cmd_tap(
    settings: Settings, pattern: str, raw: bool, count: int | None, identity: str = "tap"
) -> None:
    subjects = settings.subjects()
    full = subjects.pattern(pattern)
    auth = auth_for(settings, identity)
    bus = await connect(settings.nats_url or DEFAULT_URL, subjects, "rbot-tap", auth=auth)
    seen = 0
    try:
        sub = await bus.nc.subscribe(full)
        print(f"tapping {full} on {settings.nats_url or DEFAULT_URL} (Ctrl-C to stop)", flush=True)
        async for msg in sub.messages:
            print(format_tap(msg.subject, msg.data, raw), flush=True)
            seen += 1
            if count is not None and seen >= count:
                return
    finally:
        await bus.close()


def cmd_creds(settings: Settings, identity: str | None) -> int:
    """List the identities, or show one's credentials: the only command that prints a secret."""
    url = settings.nats_url or f"nats://127.0.0.1:{os.environ.get('RBOT_NATS_PORT', '4222')}"
    folder = settings.nats_creds_dir
    if folder is None:
        print(
            "no NATS credentials here: run `rbot up` first, or set NATS_CREDS_DIR", file=sys.stderr
        )
        return 1
    subjects = settings.subjects()
    if identity is None:
        print(f"NATS identities in {folder} (`rbot creds NAME` shows one's password):")
        for name in IDENTITIES:
            p = permissions(name, subjects)
            print(
                f"  {name:<10} publish {len(p.publish):>3} subjects, subscribe {', '.join(p.subscribe)}"
            )
        return 0
    try:
        auth = auth_for(settings, identity)
    except CredentialsError as exc:
        print(f"rbot creds: {exc}", file=sys.stderr)
        return 1
    assert auth is not None
    p = permissions(identity, subjects)
    what = f"subscribe {', '.join(p.subscribe)}" + ("; publish nothing" if not p.publish else "")
    lines = [
        f"# NATS user {auth.user!r} on {url}: {what}",
        "# a secret: keep it out of shared shells, tickets and chat",
        f"export NATS_URL={url} NATS_USER={auth.user} NATS_PASSWORD='{auth.password.get_secret_value()}'",
    ]
    if identity == "tap":
        lines += [
            f"nats sub '{subjects.all_events}'      # events (orders, actors, the pulse)",
            f"nats sub '{subjects.all_market_data}'       # market data",
            f"rbot tap '{subjects.all_market_data}'       # or ours (uses the tap identity by itself)",
        ]
    print("\n".join(lines))
    return 0


async def cmd_status(settings: Settings) -> None:
    """Trading state, who owns each executor partition, order counts, actors."""
    subjects = settings.subjects()
    bus = await connect(
        settings.nats_url or DEFAULT_URL, subjects, "rbot-status", auth=operator_auth(settings)
    )
    try:
        print(f"NATS          {settings.nats_url or DEFAULT_URL} (prefix {subjects.prefix})")
        print(f"trading       {await read_trading_state(bus)}")
        orders_kv = await bus.kv("orders")
        held = await fence.holders(orders_kv, subjects.partitions)
        print(f"partitions    {subjects.partitions}")
        for part in range(subjects.partitions):
            owner, epoch = held.get(part, ("-", 0))
            print(f"  {part:>3}  {owner:<40} epoch {epoch}")
        per: dict[str, int] = {}
        for owner, _ in held.values():
            per[owner] = per.get(owner, 0) + 1
        print("executors     " + (", ".join(f"{o}: {n}" for o, n in sorted(per.items())) or "none"))
        all_counts = await order_counts(orders_kv, subjects.partitions)
        counts = {k: v for k, v in all_counts.items() if v}
        print(
            "orders        " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
        )
        actors = [
            codec.decode(e.value, ActorStatus)
            for e in await scan(await bus.kv("actors"), "*.*")
            if e.value and not e.key.startswith(keys.feed("x")[:-1])  # feed link records
        ]  # fmt: skip
        print("actors")
        for st in sorted(actors, key=lambda a: (a.actor, a.instance)):
            flag = "SILENT" if st.silent else st.state
            print(f"  {st.actor:<16} {st.instance:<40} {flag} (restarts {st.restarts})")
    finally:
        await bus.close()


async def cmd_reconcile(settings: Settings, wait_s: float) -> None:
    """Ask the live executor to compare its live orders with the broker, now."""
    subjects = settings.subjects()
    bus = await connect(
        settings.nats_url or DEFAULT_URL, subjects, "rbot-reconcile", auth=operator_auth(settings)
    )
    try:
        try:
            reply = await bus.nc.request(subjects.live_reconcile, b"", timeout=wait_s)
        except nats.errors.NoRespondersError:
            raise SystemExit("no live_executor is running") from None
        print(reply.data.decode())
    finally:
        await bus.close()


def format_tap(subject: str, data: bytes, raw: bool = False) -> str:
    if raw:
        return f"{subject} {data.decode(errors='replace')}"
    try:
        env = codec.decode_envelope(data)
    except codec.DecodeError:
        return f"{subject} {data[:300].decode(errors='replace')}"
    body = bytes(env.payload).decode(errors="replace")
    if len(body) > 400:
        body = body[:400] + "…"
    return f"{env.ts[11:23]} {subject:<44} {env.type:<16} {env.source:<14} {body}"


def add_parsers(sub: Any) -> None:
    """Register the actor-side commands on the ``rbot`` sub-parsers (``rbot.cli``)."""
    a = sub.add_parser("actors", help="run actors against NATS_URL")
    a.add_argument("--only", nargs="+", default=[], metavar="NAME")
    t = sub.add_parser("tap", help="print bus traffic")
    t.add_argument("subject", nargs="?", default="rbot.evt.>")
    t.add_argument("--raw", action="store_true", help="print the JSON as it is on the wire")
    t.add_argument("--count", type=int, default=None, help="stop after N messages")
    t.add_argument(
        "--as", dest="identity", default="tap", choices=IDENTITIES, help="NATS identity (tap)"
    )
    c = sub.add_parser("creds", help="NATS identities; `rbot creds tap` shows how to tap")
    c.add_argument("identity", nargs="?", choices=IDENTITIES, help="show this one's password")
    sub.add_parser("status", help="trading state, executor partitions, order counts, actors")
    r = sub.add_parser("reconcile", help="compare live orders with the broker now")
    r.add_argument("--timeout", type=float, default=60.0)
    clustercli.add_parser(sub)


def run_main(coro: Coroutine[Any, Any, Any]) -> int:
    """Run with SIGINT/SIGTERM cancelling the main task: clean, reverse-order stop."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            return 0

    try:
        result = eventloop.run(main())  # uvloop with RBOT_EVENT_LOOP=uvloop
    except PartitionsChanged as exc:
        print(f"rbot: {exc}", file=sys.stderr)
        return 2
    except (Escalation, BaseExceptionGroup) as exc:
        esc = _find(exc, Escalation)
        if esc is None:
            raise
        print(f"rbot: supervisor gave up: {esc}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def setup(log_level: str) -> Settings:
    """Logging and the settings every command starts from."""
    _setup_logging(log_level)
    return local_defaults(Settings())


def run_command(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run an actor-side command (``add_parsers``); None if ``args.cmd`` is not one."""
    if args.cmd == "actors":
        return run_main(cmd_actors(settings, args.only))
    if args.cmd == "tap":
        if args.subject == "rbot.evt.>" and settings.rbot_prefix != "rbot":
            args.subject = "evt.>"
        return run_main(cmd_tap(settings, args.subject, args.raw, args.count, args.identity))
    if args.cmd == "creds":
        return cmd_creds(settings, args.identity)
    if args.cmd == "status":
        return run_main(cmd_status(settings))
    if args.cmd == "reconcile":
        return run_main(cmd_reconcile(settings, args.timeout))
    if args.cmd == "cluster-config":
        return clustercli.run(args, settings)
    return None
