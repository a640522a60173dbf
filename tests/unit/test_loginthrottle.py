"""The login throttle's pure policy: progressive delay per client+account, account cap."""

from __future__ import annotations

from rbot.api.lockouts import Strikes
from rbot.api.loginthrottle import (
    FORGET_S,
    FREE_PER_ACCOUNT,
    FREE_PER_CLIENT,
    MAX_DELAY_S,
    account_key,
    client_key,
    delay_after,
    wait_for,
)

NONE = Strikes()


def strikes(n: int, last: float) -> Strikes:
    s = NONE
    for i in range(n):
        s = s.add(last - (n - 1 - i) * 0.001, forget_after=FORGET_S)
    return s


def test_free_tries_then_doubling_up_to_the_cap() -> None:
    got = [delay_after(n, FREE_PER_CLIENT) for n in range(1, FREE_PER_CLIENT + 8)]
    assert got == [0.0] * FREE_PER_CLIENT + [1, 2, 4, 8, 16, 32, 64]
    assert delay_after(10_000, FREE_PER_CLIENT) == MAX_DELAY_S


def test_wait_counts_from_the_last_failure_and_is_forgotten() -> None:
    c = strikes(FREE_PER_CLIENT + 3, last=1000.0)  # 4 s after the last failure
    assert wait_for(c, NONE, 1000.0) == 4.0
    assert wait_for(c, NONE, 1003.0) == 1.0
    assert wait_for(c, NONE, 1004.0) == 0.0
    big = strikes(FREE_PER_CLIENT + 40, last=1000.0)
    assert wait_for(big, NONE, 1000.0) == MAX_DELAY_S
    assert wait_for(big, NONE, 1000.0 + FORGET_S) == 0.0
    assert big.add(1000.0 + FORGET_S, forget_after=FORGET_S).count == 1  # starts over


def test_the_account_cap_spares_a_clean_client() -> None:
    attacked = strikes(FREE_PER_ACCOUNT + 5, last=1000.0)  # many clients guessed
    assert wait_for(NONE, attacked, 1000.5) == 0.0  # the owner's client: clean, goes in
    one_fail = strikes(1, last=999.0)
    assert wait_for(one_fail, attacked, 1000.5) == 15.5  # a guesser: waits for the account
    assert wait_for(one_fail, strikes(FREE_PER_ACCOUNT, 1000.0), 1000.5) == 0.0


def test_keys_are_tokens_and_do_not_tell_registered_emails() -> None:
    assert account_key("Someone@Example.com") == account_key("someone@example.com")
    assert account_key("not an email").startswith("x_")
    assert client_key("::1") != client_key("127.0.0.1")
    assert len(client_key("2001:db8::1")) <= 64 and "." not in client_key("10.0.0.1")
