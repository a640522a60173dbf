"""KV keys, built in one place (every part token-checked, like subjects).

bucket orders   o.<order_id>                   current state of an order (every order ever)
                a.<part>.<user>.<order_id>     active-set marker: the order is PENDING/OPEN, or its
                                               last change is not fully booked yet (rebuild, reaper,
                                               positions read only these: O(active), never history)
                uh.<user>                      the user's order-history index head (chunk count)
                ul.<user>.<n>                  chunk n of the user's order ids, oldest first
                n.<part>                       a partition's order counters (/metrics)
                fence.<part>                   the partition's lease; its revision is the epoch
                                               that fences every write of the partition
                lc.<venue>                     the live executor's last broker transaction applied
                idem.<user>.<key>              idempotency record (client_order_id / Idempotency-Key)
                pos.<user>.<venue>.<symbol>    a user's net position
                acct.<user>                    a user's paper account
bucket limits   rl.<user>                      the user's order-rate window (memory storage)
bucket prices   <venue>.<symbol>               the last tick
bucket control  trading                        ACTIVE / REDUCING / HALTED
bucket actors   <actor>.<instance>                 the pulse's view of an actor (heartbeat)
                lifecycle.<actor>.<instance>       its last supervisor event (reporter)
                feed.<venue>                       the feed leader's link status
                nats_server                        the embedded server's restarts (``rbot up``)
bucket leases   <name>[.<part>]
bucket users    u_<hash>                       a user (the id is the key)
                admins                         the roster of enabled admins (last-admin rule)
bucket lockouts login.<client>.<account>       failed logins of one client on one account
                loginacct.<account>            failed logins on one account, from anywhere
                pin.<user>                     failed live PINs of one user
"""

from __future__ import annotations

from .subjects import check_token

TRADING = "trading"
NATS_SERVER = "nats_server"

ADMINS = "admins"


def login_client(client: str, account: str) -> str:
    return f"login.{check_token(client, 'client')}.{check_token(account, 'account')}"


def login_account(account: str) -> str:
    return f"loginacct.{check_token(account, 'account')}"


def pin_failures(user: str) -> str:
    return f"pin.{check_token(user, 'user')}"


def order(order_id: str) -> str:
    return f"o.{check_token(order_id, 'order id')}"


def orders_all() -> str:
    """Every order ever: for one-off migrations and tests, never for a request."""
    return "o.*"


def active(partition: int, user: str, order_id: str) -> str:
    return f"a.{_part(partition)}.{check_token(user, 'user')}.{check_token(order_id, 'order id')}"


def active_of_partition(partition: int) -> str:
    return f"a.{_part(partition)}.>"


def active_of_user(user: str) -> str:
    return f"a.*.{check_token(user, 'user')}.*"


def active_all() -> str:
    return "a.>"


def parse_active(key: str) -> tuple[int, str, str]:
    """``a.<part>.<user>.<id>`` -> (part, user, id)."""
    head, part, user, oid = key.split(".")
    if head != "a":
        raise ValueError(f"not an active-set key: {key!r}")
    return int(part), user, oid


def user_head(user: str) -> str:
    return f"uh.{check_token(user, 'user')}"


def user_chunk(user: str, n: int) -> str:
    if n < 0:
        raise ValueError("chunk numbers start at 0")
    return f"ul.{check_token(user, 'user')}.{n}"


def counters(partition: int) -> str:
    return f"n.{_part(partition)}"


def fence(partition: int) -> str:
    return f"fence.{_part(partition)}"


def fences() -> str:
    return "fence.*"


def parse_fence(key: str) -> int:
    head, part = key.split(".")
    if head != "fence":
        raise ValueError(f"not a fence key: {key!r}")
    return int(part)


def rate(user: str) -> str:
    return f"rl.{check_token(user, 'user')}"


def _part(partition: int) -> str:
    if not isinstance(partition, int) or not 0 <= partition < 4096:
        raise ValueError(f"bad partition {partition!r}")
    return str(partition)


def idem(user: str, key: str) -> str:
    return f"idem.{check_token(user, 'user')}.{check_token(key, 'idempotency key')}"


def position(user: str, venue: str, symbol: str) -> str:
    return f"pos.{check_token(user, 'user')}.{check_token(venue, 'venue')}.{check_token(symbol, 'symbol')}"


def account(user: str) -> str:
    return f"acct.{check_token(user, 'user')}"


def price(venue: str, symbol: str) -> str:
    return f"{check_token(venue, 'venue')}.{check_token(symbol, 'symbol')}"


def actor_status(actor: str, instance: str) -> str:
    return f"{check_token(actor, 'actor')}.{check_token(instance, 'instance')}"


def lifecycle(actor: str, instance: str) -> str:
    return f"lifecycle.{check_token(actor, 'actor')}.{check_token(instance, 'instance')}"


def feed(venue: str) -> str:
    return f"feed.{check_token(venue, 'venue')}"


def live_cursor(venue: str) -> str:
    """The last broker transaction the venue's live executor applied (its catch-up point)."""
    return f"lc.{check_token(venue, 'venue')}"
