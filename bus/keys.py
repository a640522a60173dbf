"""KV keys, built in one place (every part token-checked, like subjects).

bucket orders   o.<order_id>                   current state of an order
                idem.<user>.<key>              idempotency record (client_order_id / Idempotency-Key)
                pos.<user>.<venue>.<symbol>    a user's net position
                acct.<user>                    a user's paper account
bucket prices   <venue>.<symbol>               the last tick
bucket control  trading                        ACTIVE / REDUCING / HALTED
bucket actors   <actor>.<instance>, lifecycle.<actor>.<instance>
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
    return "o.*"


def idem(user: str, key: str) -> str:
    return f"idem.{check_token(user, 'user')}.{check_token(key, 'idempotency key')}"


def position(user: str, venue: str, symbol: str) -> str:
    return f"pos.{check_token(user, 'user')}.{check_token(venue, 'venue')}.{check_token(symbol, 'symbol')}"


def account(user: str) -> str:
    return f"acct.{check_token(user, 'user')}"


def price(venue: str, symbol: str) -> str:
    return f"{check_token(venue, 'venue')}.{check_token(symbol, 'symbol')}"
