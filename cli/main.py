"""The ``rbot`` command: the composition root, the one module that imports both
``rbot.actors`` and ``rbot.api`` (neither imports the other).

    rbot up                 embedded nats-server + every actor + the API (127.0.0.1:8787)
    rbot api                the API alone, against NATS_URL
    rbot user ...           manage users without HTTP (``rbot.api.usercli``)
    rbot actors | tap | creds | status | reconcile | cluster-config
                            the actor side (``rbot.actors.cli``)

The API's modules (and argon2) are imported only by the commands that need them,
so ``rbot actors`` loads none of them.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from rbot.actors.base import default_instance
from rbot.actors.cli import (
    DEFAULT_URL,
    actor_supervisor,
    add_parsers,
    halt_trading,
    provision_first,
    run_command,
    run_main,
    run_tree,
    setup,
)
from rbot.actors.natsd import EmbeddedNats
from rbot.actors.reporter import Reporter
from rbot.actors.supervisor import ChildSpec, Restart, Supervisor
from rbot.bus.config import Settings
from rbot.bus.connection import connect
from rbot.bus.credentials import creds_dir, ensure_credentials, operator_auth
from rbot.bus.outage import is_outage


def embedded_defaults(settings: Settings) -> Settings:
    """What the one-command local run needs and a fresh clone lacks.

    * no ARENA_SECRET_KEY: a random key is made once and kept in
      ``<RBOT_DATA_DIR>/secret.key`` (mode 0600), so tokens survive restarts;
    * on loopback, self-registration opens as trader unless RBOT_OPEN_REGISTRATION
      says otherwise (the seed's quick start registers, then trades);
    * the embedded server (no NATS_URL): one NATS password per identity in
      ``<RBOT_DATA_DIR>/nats-identities`` (0700 folder, 0600 files), made once.
    """
    update: dict[str, object] = {}
    if not settings.nats_url and settings.nats_creds_dir is None and settings.nats_user is None:
        folder = creds_dir(settings.rbot_data_dir)
        ensure_credentials(folder)
        update["nats_creds_dir"] = folder
    if settings.arena_secret_key is None:
        data = Path(settings.rbot_data_dir)
        data.mkdir(parents=True, exist_ok=True)
        key_file = data / "secret.key"
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        update["arena_secret_key"] = SecretStr(key_file.read_text().strip())
    loopback = settings.rbot_api_host in ("127.0.0.1", "localhost", "::1")
    if loopback and "RBOT_OPEN_REGISTRATION" not in os.environ:
        update["rbot_open_registration"] = "trader"
    return settings.model_copy(update=update) if update else settings


async def cmd_up(settings: Settings) -> None:
    from rbot.api.server import ApiServer

    settings = embedded_defaults(settings)
    instance = settings.rbot_instance or default_instance()
    children: list[ChildSpec] = []
    if settings.nats_url:
        url: Callable[[], str] = lambda: settings.nats_url or DEFAULT_URL  # noqa: E731
        nats_line = settings.nats_url
    else:
        natsd = EmbeddedNats(
            settings,
            port=int(os.environ.get("RBOT_NATS_PORT", "4222")),
            monitor_port=int(os.environ.get("RBOT_NATS_MONITOR_PORT", "8222")),
            instance=instance,
        )
        children.append(natsd.spec())  # restarts its own server: never counts below
        url = lambda: natsd.url  # noqa: E731
        nats_line = "embedded"
    reporter = Reporter(settings, url, instance)
    if not settings.nats_url:
        natsd.report = reporter.report
    if settings.nats_url:
        reporter.nats_up.set()
    api = ApiServer(settings, url)
    admin_note: list[str] = []

    async def bootstrap(ready: Callable[[], None]) -> None:
        from rbot.api.users import ensure_admin

        bus = await connect(
            url(), settings.subjects(), "rbot-bootstrap", auth=operator_auth(settings)
        )
        try:
            created = await ensure_admin(bus)
        finally:
            await bus.close()
        if created:
            email, password = created
            admin_note.append(
                f"  first start: created admin {email} with password {password}\n"
                "  (shown once; change it with POST /auth/password)"
            )
        ready()

    children += [
        ChildSpec("bootstrap", bootstrap, restart=Restart.TRANSIENT),
        ChildSpec("actors", actor_supervisor(settings, url, [], reporter).run, shutdown_timeout=20),
        ChildSpec("api", api.main, shutdown_timeout=10),
    ]
    root = Supervisor(
        children,
        name="rbot",
        max_restarts=5,
        max_seconds=60.0,
        report=reporter.report,
        on_escalate=lambda why: halt_trading(settings, url(), why),
        outage=is_outage,
    )

    def banner() -> None:
        host = settings.rbot_api_host
        lines = [
            "",
            "RBOT Arena is up (paper mode)",
            f"  dashboard  http://{host}:{api.port}/",
            f"  API docs   http://{host}:{api.port}/docs",
            f"  NATS       {url()} ({nats_line})",
            f"  tap        rbot tap   or   nats sub '{settings.rbot_prefix}.evt.>' (rbot creds tap)",
            *admin_note,
            "  Ctrl-C stops everything",
            "",
        ]
        print("\n".join(lines), flush=True)

    await run_tree(root, reporter, banner)


async def cmd_api(settings: Settings) -> None:
    from rbot.api.server import ApiServer

    url = settings.nats_url or DEFAULT_URL
    await provision_first(settings, url)
    api = ApiServer(settings.model_copy(update={"nats_url": url}))
    reporter = Reporter(settings, lambda: url, settings.rbot_instance or default_instance())
    reporter.nats_up.set()
    root = Supervisor(
        [ChildSpec("api", api.main)], name="api", report=reporter.report, outage=is_outage
    )
    await run_tree(
        root,
        reporter,
        lambda: print(
            f"API on http://{settings.rbot_api_host}:{api.port}/ (NATS {url})", flush=True
        ),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rbot", description="RBOT Arena")
    p.add_argument("--log-level", default=os.environ.get("RBOT_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="run everything: embedded NATS, actors and the API")
    sub.add_parser("api", help="run the API against NATS_URL")
    add_parsers(sub)
    from rbot.api.usercli import add_parser as add_user_parser

    add_user_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = setup(args.log_level)
    if args.cmd == "up":
        return run_main(cmd_up(settings))
    if args.cmd == "api":
        return run_main(cmd_api(settings))
    if args.cmd == "user":
        from rbot.api import usercli

        return run_main(usercli.run(args, settings))
    done = run_command(args, settings)
    if done is None:
        raise SystemExit(2)
    return done


if __name__ == "__main__":
    sys.exit(main())
