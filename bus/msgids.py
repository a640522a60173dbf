"""Every ``Nats-Msg-Id`` the system writes: JetStream drops a second message with
the same id inside the stream's duplicate window (``provision.DUPLICATE_WINDOW_S``).

One function per kind, so a retry rebuilds exactly the id it used before:

* ``place.<order>``: the guard's place command on EXEC (a replayed request
  publishes it again; the executor books it once);
* ``cancel.<order>.<nonce>``: a cancel; each request is its own command;
* ``expire.<order>.<status>``: the reaper's command, repeated every round until
  the order's status moves;
* ``<order>.<n>``: the order's n-th event on ORDERS (also the envelope's ``id``),
  so a re-publish after a crash is a duplicate, not a second event.
"""

from __future__ import annotations

HEADER = "Nats-Msg-Id"


def place(order_id: str) -> str:
    return f"place.{order_id}"


def cancel(order_id: str, nonce: str) -> str:
    return f"cancel.{order_id}.{nonce}"


def expire(order_id: str, status: str) -> str:
    return f"expire.{order_id}.{status}"


def event(order_id: str, n: int) -> str:
    return f"{order_id}.{n}"


def headers(msg_id: str) -> dict[str, str]:
    return {HEADER: msg_id}
