"""The Ledger's per-account counts (csrc/binding/ledger.c): open orders and
new orders in flight, kept in C, against a dict, for many accounts."""

from __future__ import annotations

import random

import pytest

from pyengine._server import Ledger


def test_counts_of_many_accounts_are_a_dicts() -> None:
    ledger, model = Ledger(), {}
    rng = random.Random(7)
    # Accounts spread over the 32-bit range, and runs of neighbours (whose
    # home slots collide in a small table); enough to grow it several times.
    accounts = [rng.randrange(2**32) for _ in range(3000)] + list(range(1000, 1400)) + [0, 2**32 - 1]
    accounts += [k << 20 for k in range(1, 2000)]  # apart by a power of two: the hash's high bits tell them apart
    for step in range(20_000):
        account = rng.choice(accounts)
        n = rng.randrange(-3, 4)
        ledger.count_open(account, n)
        model[account] = model.get(account, 0) + n
        if step % 997 == 0:
            assert all(ledger.open(a) == model.get(a, 0) for a in accounts)
    assert all(ledger.open(a) == model.get(a, 0) for a in accounts)
    assert all(ledger.in_flight(a) == 0 for a in accounts)


def test_reading_an_unknown_account_finds_zero() -> None:
    ledger = Ledger()
    assert ledger.open(5) == 0 and ledger.in_flight(5) == 0
    ledger.count_open(5, 2)
    assert ledger.open(5) == 2 and ledger.open(6) == 0


def test_account_numbers_are_32_bit() -> None:
    ledger = Ledger()
    for bad in (2**32, -1):
        with pytest.raises(OverflowError):
            ledger.count_open(bad, 1)
        with pytest.raises(OverflowError):
            ledger.open(bad)
