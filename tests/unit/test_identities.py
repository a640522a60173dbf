"""The permission generator (pure) and the credential files (bus/identities.py, bus/credentials.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from pydantic import SecretStr

from rbot.bus.config import Settings
from rbot.bus.credentials import (
    actor_auth,
    auth_for,
    creds_dir,
    ensure_credentials,
    local_defaults,
    password_hashes,
)
from rbot.bus.identities import (
    ACTOR_IDENTITY,
    IDENTITIES,
    UnknownIdentity,
    identity_of,
    inbox_prefix,
    permissions,
    render_authorization,
)
from rbot.bus.subjects import Subjects, matches
from tests.natsd import nats_server_bin

S = Subjects()


def allowed(patterns: tuple[str, ...], subject: str) -> bool:
    return any(matches(p, subject) for p in patterns)


def pub(identity: str, subject: str, s: Subjects = S) -> bool:
    return allowed(permissions(identity, s).publish, subject)


def sub(identity: str, subject: str, s: Subjects = S) -> bool:
    return allowed(permissions(identity, s).subscribe, subject)


def test_only_the_guard_and_the_reapers_expiry_reach_the_executor() -> None:
    cmd = S.exec("oanda", "EUR_USD")
    assert {i for i in IDENTITIES if pub(i, cmd)} == {"operator", "guard", "reaper"}


def test_only_the_executor_writes_order_state_and_the_guard_only_idempotency() -> None:
    state = S.kv_keys("orders", "o.paper-oanda-1")
    idem = S.kv_keys("orders", "idem.u1.k1")
    # the live executor writes its own (live) orders, fenced by its venue's lease
    assert {i for i in IDENTITIES if pub(i, state)} == {"operator", "executor", "live"}
    assert {i for i in IDENTITIES if pub(i, idem)} == {"operator", "executor", "live", "guard"}


def test_users_and_tokens_are_the_apis_alone() -> None:
    for bucket in ("users", "tokens"):
        write = S.kv_keys(bucket, "x")
        read = f"$JS.API.DIRECT.GET.{S.kv_stream(bucket)}.{write}"
        watch = f"$JS.API.CONSUMER.CREATE.{S.kv_stream(bucket)}"
        for what in (write, read, watch):
            assert {i for i in IDENTITIES if pub(i, what)} == {"operator", "api"}, what


def test_market_data_comes_from_the_feeds_only() -> None:
    assert {i for i in IDENTITIES if pub(i, S.tick("oanda", "EUR_USD"))} == {"operator", "feeds"}
    assert {i for i in IDENTITIES if pub(i, S.kv_keys("prices", "oanda.EUR_USD"))} == {
        "operator",
        "feeds",
    }


def test_order_events_come_from_the_executor_and_rejections_from_the_guard() -> None:
    filled = S.order_event("oanda", "EUR_USD", "order_filled")
    rejected = S.order_event("oanda", "EUR_USD", "order_rejected")
    assert {i for i in IDENTITIES if pub(i, filled)} == {"operator", "executor", "live"}
    assert {i for i in IDENTITIES if pub(i, rejected)} == {"operator", "executor", "live", "guard"}


def test_tap_subscribes_to_events_market_data_and_beats_and_publishes_nothing() -> None:
    p = permissions("tap", S)
    assert p.publish == ()
    assert set(p.subscribe) == {"rbot.evt.>", "rbot.md.>", "rbot.hb.>"}
    assert not sub("tap", S.order_place) and not sub("tap", "_INBOX.x")
    assert 'publish: { deny: [">"] }' in render_authorization({"tap": "$2b$08$x"}, S)


def test_nobody_reads_another_identitys_replies() -> None:
    for i in IDENTITIES:
        for j in IDENTITIES:
            if i != j and "operator" not in (i, j) and j != "tap":
                assert not sub(i, f"{inbox_prefix(j)}.abc"), (i, j)
        assert not (i != "operator" and sub(i, "_INBOX.abc")), i


def test_heartbeats_only_under_the_identitys_own_actor_names() -> None:
    for actor, identity in ACTOR_IDENTITY.items():
        assert pub(identity, S.heartbeat(actor, "host-1"))
        others = {a for a, i in ACTOR_IDENTITY.items() if i != identity}
        assert not any(pub(identity, S.heartbeat(a, "host-1")) for a in others)


def test_the_executor_owns_one_consumer_per_partition() -> None:
    s = Subjects(prefix="t1", partitions=3)
    stream = s.stream("EXEC")
    for n in range(3):
        assert pub("executor", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.paper_executor_p{n}", s)
        assert pub("executor", f"$JS.ACK.{stream}.paper_executor_p{n}.1.2.3.4.5", s)
    assert not pub("executor", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.paper_executor_p3", s)
    assert not pub("executor", f"$JS.API.STREAM.DELETE.{stream}", s)


def test_pulling_commands_is_the_executors_alone_while_kv_scans_may_pull() -> None:
    """A scan (bus/kvscan.py) pulls from its own ephemeral consumer on a KV stream;
    that must not open the work queues: only the executors take EXEC commands."""
    exec_pull = f"$JS.API.CONSUMER.MSG.NEXT.{S.stream('EXEC')}.{S.exec_consumer(0)}"
    live_pull = f"$JS.API.CONSUMER.MSG.NEXT.{S.stream('EXEC')}.{S.live_consumer('oanda')}"
    assert {i for i in IDENTITIES if pub(i, exec_pull)} == {"operator", "executor"}
    assert {i for i in IDENTITIES if pub(i, live_pull)} == {"operator", "live"}
    scan_pull = f"$JS.API.CONSUMER.MSG.NEXT.{S.kv_stream('prices')}.AbC123"
    assert pub("api", scan_pull) and pub("guard", scan_pull) and pub("executor", scan_pull)
    assert not pub("api", f"$JS.API.CONSUMER.MSG.NEXT.{S.stream('ORDERS')}.AbC123")


def test_names_follow_the_prefix() -> None:
    s = Subjects(prefix="t1a2b")
    text = render_authorization({i: "$2b$08$x" for i in IDENTITIES}, s)
    assert "t1a2b_ORDERS" in text and "KV_t1a2b_users" in text and "$KV.t1a2b_orders.idem.>" in text
    assert '"rbot.' not in text and "KV_users" not in text


def test_the_guard_may_answer_requests_and_others_may_not() -> None:
    # the guard serves orders; the live executor answers `rbot reconcile`
    assert permissions("guard", S).allow_responses and permissions("live", S).allow_responses
    answers = {i for i in IDENTITIES if permissions(i, S).allow_responses}
    assert answers == {"guard", "live"}


def test_unknown_names_are_refused() -> None:
    with pytest.raises(UnknownIdentity):
        permissions("root", S)
    with pytest.raises(UnknownIdentity):
        identity_of("crypto_miner")
    assert identity_of("coinbase_feed") == "feeds"


def test_the_rendered_config_is_valid_for_nats_server(tmp_path: Path) -> None:
    hashes = password_hashes(ensure_credentials(tmp_path / "creds"))
    conf = tmp_path / "auth.conf"
    conf.write_text(render_authorization(hashes, Subjects(prefix="t9", partitions=4)))
    done = subprocess.run(
        [nats_server_bin(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- credential files ---------------------------------------------------------
def test_credentials_are_made_once_private_and_hashed(tmp_path: Path) -> None:
    folder = tmp_path / "creds"
    first = ensure_credentials(folder)
    assert set(first) == set(IDENTITIES)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for identity in IDENTITIES:
        assert stat.S_IMODE((folder / identity).stat().st_mode) == 0o600
    again = ensure_credentials(folder)
    assert {k: v.get_secret_value() for k, v in again.items()} == {
        k: v.get_secret_value() for k, v in first.items()
    }
    hashes = password_hashes(first)
    api_pw = first["api"].get_secret_value()
    assert api_pw not in hashes["api"] and bcrypt.checkpw(api_pw.encode(), hashes["api"].encode())
    assert len({p.get_secret_value() for p in first.values()}) == len(IDENTITIES)


def test_auth_from_a_folder_from_one_user_or_none(tmp_path: Path) -> None:
    folder = tmp_path / "creds"
    pw = ensure_credentials(folder)
    base = Settings(_env_file=None)  # type: ignore[call-arg]
    assert auth_for(base, "api") is None and actor_auth(base, "order_guard") is None
    by_folder = base.model_copy(update={"nats_creds_dir": folder})
    guard = actor_auth(by_folder, "order_guard")
    assert guard is not None and guard.user == "guard" and guard.inbox_prefix == "_INBOX_guard"
    assert guard.password.get_secret_value() == pw["guard"].get_secret_value()
    assert "guard" in repr(guard) and pw["guard"].get_secret_value() not in repr(guard)
    one = base.model_copy(update={"nats_user": "deploy", "nats_password": SecretStr("pw")})
    auth = auth_for(one, "executor")
    assert auth is not None and auth.user == "deploy" and auth.inbox_prefix is None


def test_local_commands_find_rbot_ups_credentials(tmp_path: Path) -> None:
    base = Settings(_env_file=None, rbot_data_dir=tmp_path)  # type: ignore[call-arg]
    assert local_defaults(base).nats_creds_dir is None  # nothing made yet: open server
    ensure_credentials(creds_dir(tmp_path))
    assert local_defaults(base).nats_creds_dir == creds_dir(tmp_path)
    remote = base.model_copy(update={"nats_url": "nats://10.0.0.5:4222"})
    assert local_defaults(remote).nats_creds_dir is None


def test_rbot_creds_shows_a_secret_only_when_asked(tmp_path: Path) -> None:
    pw = ensure_credentials(creds_dir(tmp_path))
    env = {**os.environ, "RBOT_DATA_DIR": str(tmp_path)}
    env.pop("NATS_URL", None)
    rbot = str(Path(sys.executable).parent / "rbot")
    listing = subprocess.run(
        [rbot, "creds"], capture_output=True, text=True, env=env, timeout=30, check=True
    ).stdout
    assert "tap" in listing and "executor" in listing
    assert not any(p.get_secret_value() in listing for p in pw.values())
    tap = subprocess.run(
        [rbot, "creds", "tap"], capture_output=True, text=True, env=env, timeout=30, check=True
    ).stdout
    assert f"NATS_PASSWORD='{pw['tap'].get_secret_value()}'" in tap
    assert "NATS_USER=tap" in tap and "nats sub 'rbot.evt.>'" in tap
    assert pw["operator"].get_secret_value() not in tap
