"""Login throttling: progressive delay per client and account (OWASP).

The old rule (5 failures on an email from anywhere lock it for everyone) let a
stranger lock the owner out.  Here failures count per *client and account*:

- ``login.<client>.<account>``: after ``FREE_PER_CLIENT`` failures, each further
  attempt from that client on that account must wait 1, 2, 4 ... seconds (at
  most ``MAX_DELAY_S``) after the last failure.  The owner, on another client,
  is not slowed by a stranger's guesses.
- ``loginacct.<account>``: a looser cap for guessing spread over many clients.
  Past ``FREE_PER_ACCOUNT`` failures it delays only clients that have already
  failed on this account: a client with a clean record (the owner's) still gets
  in, and each new guessing client gets one try before the account delay applies.

A success from a client clears that client's counter; counters idle for
``FORGET_S`` start over.  Counters live in KV ``lockouts`` (``lockouts.py``), so
they hold across API replicas and restarts.  The client is the socket's peer
address (no ``X-Forwarded-For`` is trusted), hashed into the key; the account
is the user id the email maps to, whether or not the user exists, so the
answers do not tell which emails are registered.

The pure policy (``wait_for``) takes the counters and a time; ``LoginThrottle``
is the thin shell around the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from rbot.bus import keys

from .lockouts import LockoutStore, Strikes
from .users import InvalidEmail, user_id

FREE_PER_CLIENT = 3
FREE_PER_ACCOUNT = 20
MAX_DELAY_S = 15 * 60.0
FORGET_S = 60 * 60.0


def delay_after(count: int, free: int) -> float:
    """Seconds to wait after the ``count``-th failure: none for the free ones, then doubling."""
    if count <= free:
        return 0.0
    return min(2.0 ** min(count - free - 1, 32), MAX_DELAY_S)


def _wait(strikes: Strikes, free: int, now: float) -> float:
    last = strikes.last
    if last is None or now - last >= FORGET_S:
        return 0.0
    return max(0.0, last + delay_after(strikes.count, free) - now)


def wait_for(client: Strikes, account: Strikes, now: float) -> float:
    """Seconds this client must wait before its next try on this account (0: go ahead)."""
    wait = _wait(client, FREE_PER_CLIENT, now)
    last = client.last
    if last is not None and now - last < FORGET_S:  # failed here lately: the account cap applies
        wait = max(wait, _wait(account, FREE_PER_ACCOUNT, now))
    return wait


def account_key(email: str) -> str:
    """The account an email names, registered or not (no enumeration)."""
    try:
        return user_id(email)
    except InvalidEmail:
        return "x_" + hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def client_key(address: str) -> str:
    return "c_" + hashlib.sha256(address.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    store: LockoutStore

    def _keys(self, address: str, account: str) -> tuple[str, str]:
        return keys.login_client(client_key(address), account), keys.login_account(account)

    async def wait(self, address: str, account: str) -> float:
        ckey, akey = self._keys(address, account)
        client = await self.store.read(ckey)
        acct = await self.store.read(akey) if client.count else Strikes()
        return wait_for(client, acct, self.store.clock())

    async def failed(self, address: str, account: str) -> None:
        ckey, akey = self._keys(address, account)
        await self.store.strike(ckey, forget_after=FORGET_S)
        await self.store.strike(akey, forget_after=FORGET_S)

    async def succeeded(self, address: str, account: str) -> None:
        ckey, _ = self._keys(address, account)
        if (await self.store.read(ckey)).count:
            await self.store.clear(ckey)
