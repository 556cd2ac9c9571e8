#!/usr/bin/env python3
"""Write the seed corpus of fuzz_engine into csrc/fuzz/corpus/.

Each seed exercises one feature; the byte format is described at the top of
fuzz_engine.c and mirrored by the helpers below. The output is deterministic:
run this again after changing the format and commit the result. Files named
NN_regression_* are inputs that once broke the engine, kept as they were.

Usage: python3 csrc/fuzz/make_corpus.py [output-dir]
"""
import pathlib
import sys

GTC, IOC, FOK = 0, 2, 3  # the tif field of a NEW record
BUY, SELL = 0, 1
STP_NONE, STP_NEWEST, STP_OLDEST, STP_BOTH = 0, 1, 2, 3


PROCESS, BATCH, FAST = 0, 2, 3  # how commands reach the engine


def config(level_events=False, expected=0, route=PROCESS, caller_ids=False):
    """The first byte: level events, expected_orders choice (0-3), route, caller order ids."""
    return bytes([(1 if level_events else 0) | (expected << 1) | (route << 3)
                  | (0x20 if caller_ids else 0)])


FRESH, TOP, ZERO, OPEN, FINISHED, HIGH = 0, 3, 4, 5, 6, 7  # a caller id's kind


def cid(record, how=FRESH, k=0):
    """A NEW record with caller order ids: its id byte `d` appended."""
    assert 0 <= k < 32
    return record + bytes([how | (k << 3)])


def op(kind, inst=0, account=0):
    return (kind << 4) | (account << 2) | inst


def new(inst=0, account=0, side=BUY, aggr=0, tif=GTC, post_only=False, lots=1, stp=STP_NONE,
        coid=None, scale=0, bad=None):
    """A NEW limit order `aggr` ticks (-8..7) from the mid toward the other side."""
    assert -8 <= aggr <= 7 and 1 <= lots <= 16
    a = side | ((aggr + 8) << 1) | (tif << 5) | (0x80 if post_only else 0)
    b = (lots - 1) | (stp << 4) | (0x80 if coid is not None else 0)
    c = (coid or 0) | ({None: 0, "tick": 6, "lot": 7}[bad] << 3) | (scale << 6)
    return bytes([op(0, inst, account), a, b, c])


def market(inst=0, account=0, side=BUY, fok=False, lots=1, stp=STP_NONE, scale=0):
    a = side | (0x20 if fok else 0)
    b = (lots - 1) | (stp << 4)
    return bytes([op(6, inst, account), a, b, scale << 6])


def extreme(inst=0, account=0, side=BUY, aggr=0, qty_index=0, price_mode=0, raw_qty=False):
    a = side | ((aggr + 8) << 1)
    c = (8 if raw_qty else 0) | (price_mode << 4)
    return bytes([op(7, inst, account), a, qty_index, c])


def pick(resting=None, back=None, raw_id=None):
    """The `a` byte choosing a target id."""
    if resting is not None:
        return resting
    if back is not None:
        return 0x80 | back
    return 0xC0 | raw_id


def cancel(a, inst=0, account=0, any_account=False, as_owner=True, coid=None):
    b = (1 if any_account else 0) | (2 if as_owner else 0) | (0x40 if coid is not None else 0)
    return bytes([op(8, inst, account), a, b, coid or 0])


def cancel_coid(coid, inst=0, account=0):
    return bytes([op(10, inst, account), 0, 0, coid])


def modify(a, qty_mode, c, price_mode=0, inst=0, account=0, any_account=False, as_owner=True,
           by_coid=False, keep_qty=False):
    b = ((1 if any_account else 0) | (2 if as_owner else 0) | (qty_mode << 2) | (price_mode << 4)
         | (0x80 if keep_qty else 0))
    return bytes([op(13 if by_coid else 11, inst, account), a, b, c])


def malformed(field, value, base):
    """Record `base` (a NEW limit, an account-wide command, CANCEL or MODIFY by id) with one
    field spoilt."""
    kind = base[0] >> 4
    assert kind <= 13
    d = (1 if kind == 5 else 0 if kind < 5 else 2 if kind <= 10 else 3) | (field << 2)
    return bytes([(14 << 4) | (base[0] & 15)]) + base[1:] + bytes([d, value])


def move_mid(inst, ticks):
    """No command: the instrument's mid moves by `ticks` (-2..2)."""
    return bytes([op(15, inst), ticks + 2, 0, 0])


def repeat(times):
    """Decode and run the last record that ran a command again, 1..256 times."""
    assert 1 <= times <= 256
    return bytes([op(15), 5 << 5, times - 1, 0])


def set_state(inst, halted, account=0):
    return bytes([op(15, inst, account), 0xF0 if halted else 0xC0, 0, 0])


def set_limits(inst=0, account=0, qty=0, qty_mode=0, notional=0, notional_mode=0, flag=False,
               reserved=False, unknown=0):
    """SET_LIMITS: max_qty from `qty` (0-63) as (n, n * 16 lots, INT64_MAX - n, -1 - n)[qty_mode],
    max_notional from `notional` (0-63) as (m * 1000, m * 64000, INT64_MAX - m,
    -1 - m)[notional_mode] (0: none); with a flag, reserved set, or the unknown instrument
    (FZ_NINST, FZ_NINST + 1, UINT32_MAX)[unknown - 1]."""
    assert 0 <= qty < 64 and 0 <= notional < 64 and 0 <= unknown < 4
    a = 0xD0 | (1 if flag else 0) | (2 if reserved else 0) | (unknown << 2)
    return bytes([op(15, inst, account), a, qty | (qty_mode << 6), notional | (notional_mode << 6)])


def cancel_all(inst=0, account=0, dead_man=False, everywhere=False, field=0, every_account=False,
               keep_account=False):
    """CANCEL_ALL of the account's orders on `inst`, or on every instrument (the command's
    instrument field is then `field`, which the engine ignores); with `every_account`, of
    every account's (its account field 0, or with `keep_account` `account`: bad_command
    unless that is 0)."""
    a = ((4 if dead_man else 0) | (8 if everywhere else 0) | (16 if every_account else 0)
         | (32 if keep_account else 0))
    return bytes([op(5, inst, account), a, field if everywhere else 0, 0])


def set_mmp(inst=0, account=0, lots=0, plus_one=False, scale=0, window=0, window_scale=0):
    """SET_MMP: the limit `lots` lots times (1, 5, 40)[scale] (+1), or INT64_MAX - lots with
    scale 3; the window `window` << (0, 6, 20)[window_scale], or INT64_MAX - window with 3."""
    assert 0 <= lots < 32 and 0 <= scale < 4 and 0 <= window < 64 and 0 <= window_scale < 4
    b = lots | (0x20 if plus_one else 0) | (scale << 6)
    return bytes([op(5, inst, account), 1, b, window | (window_scale << 6)])


def reset_mmp(inst=0, account=0):
    return bytes([op(5, inst, account), 2, 0, 0])


def clock_on(ticks, big=False):
    """No command: the clock moves on by `ticks`, or by (ticks + 1) << 16 if big."""
    assert 0 <= ticks < 65536
    return bytes([op(5), 3 | (4 if big else 0), ticks & 255, ticks >> 8])


def clock_back(ticks):
    assert 0 <= ticks < 65536
    return bytes([op(5), 3 | 8, ticks & 255, ticks >> 8])


def clock_edge(low, k=0):
    """No command: the clock goes to INT64_MIN + k (low) or INT64_MAX - k."""
    assert 0 <= k < 256
    return bytes([op(5), 3 | 12, k, 1 if low else 0])


def book(inst, accounts=(0, 1), depth=4, caller_ids=False):
    """Resting orders on both sides, `depth` levels each (fresh ids with caller ids)."""
    out = b""
    tail = bytes([FRESH]) if caller_ids else b""
    for level in range(depth):
        for i, acct in enumerate(accounts):
            out += new(inst, acct, BUY, aggr=-1 - level, lots=1 + i) + tail
            out += new(inst, acct, SELL, aggr=-1 - level, lots=2 + i) + tail
    return out


SEEDS = {
    "01_rest_cross": config() + book(0) + new(0, 2, BUY, aggr=3, lots=16)
    + new(0, 3, SELL, aggr=4, lots=16, scale=2),
    "02_cancel": config() + book(1) + cancel(pick(resting=0)) + cancel(pick(resting=3))
    + cancel(pick(back=1), any_account=True, as_owner=False) + cancel(pick(raw_id=0))
    + cancel(pick(raw_id=60), account=2, as_owner=False),
    "03_modify": config() + book(0) + modify(pick(resting=0), 0, 1)
    + modify(pick(resting=1), 2, 3) + modify(pick(resting=2), 1, 0x52, price_mode=2)
    + modify(pick(resting=3), 1, 0xF4, price_mode=2) + modify(pick(resting=4), 0, 0, price_mode=3)
    + modify(pick(resting=5), 1, 0) + modify(pick(resting=6), 3, 0),
    "04_ioc_fok": config() + book(0) + new(0, 2, BUY, aggr=1, tif=IOC, lots=16)
    + new(0, 2, SELL, aggr=2, tif=FOK, lots=16, scale=3) + new(0, 3, SELL, aggr=1, tif=FOK, lots=2)
    + new(0, 3, BUY, aggr=-2, tif=IOC),
    "05_market": config() + book(1) + book(2) + market(1, 2, BUY, lots=4)
    + market(2, 2, SELL, fok=True, lots=3) + market(2, 3, BUY, lots=16, scale=3)
    + market(0, 3, SELL, lots=2),
    "06_post_only": config() + book(0) + new(0, 2, BUY, aggr=-1, post_only=True)
    + new(0, 2, SELL, aggr=2, post_only=True) + modify(pick(resting=0), 2, 0x70, price_mode=2)
    + new(0, 3, SELL, aggr=1, lots=16),
    "07_stp": config() + book(0, accounts=(0, 0, 1))
    + new(0, 0, BUY, aggr=3, lots=8, stp=STP_NEWEST) + new(0, 0, BUY, aggr=3, lots=8, stp=STP_OLDEST)
    + new(0, 0, SELL, aggr=3, lots=8, stp=STP_BOTH) + new(0, 1, SELL, aggr=3, tif=FOK, lots=9,
                                                          stp=STP_OLDEST),
    "08_band": config() + book(2) + new(2, 1, BUY, aggr=-8) + new(2, 1, SELL, aggr=7, lots=3)
    + move_mid(2, 2) * 12 + new(2, 2, SELL, aggr=-6) + market(2, 3, BUY, lots=16, scale=3)
    + new(2, 0, BUY, aggr=0, bad="tick") + new(2, 0, BUY, aggr=0, bad="lot"),
    "09_coid": config(expected=1) + new(0, 0, BUY, aggr=-1, coid=1) + new(0, 0, BUY, aggr=-2, coid=1)
    + new(0, 1, BUY, aggr=-2, coid=1) + cancel_coid(1, account=1)
    + modify(0, 2, 0x21, by_coid=True) + new(0, 1, SELL, aggr=-1, coid=2)
    + cancel(pick(resting=0), coid=7),
    "10_level_events": config(level_events=True, expected=2) + book(0) + book(1, accounts=(2, 3))
    + new(0, 2, SELL, aggr=3, lots=16, scale=2) + modify(pick(resting=0), 1, 2)
    + cancel(pick(resting=1)) + market(1, 0, SELL, lots=16),
    "11_extreme": config(level_events=True) + book(0) + extreme(0, 2, BUY, aggr=-1, qty_index=0)
    + extreme(0, 3, BUY, aggr=-1, qty_index=0) + extreme(0, 2, SELL, price_mode=1, qty_index=2)
    + extreme(1, 2, SELL, price_mode=3, qty_index=1) + extreme(0, 0, BUY, qty_index=13)
    + extreme(2, 0, BUY, price_mode=2, qty_index=5),
    "12_malformed": config() + book(0) + b"".join(
        malformed(field, value, base)
        for field, value in [(0, 0), (0, 7), (1, 3), (2, 9), (3, 0), (4, 4), (5, 8), (6, 0),
                             (7, 0), (8, 2), (9, 3), (10, 5), (11, 0), (12, 1), (13, 0),
                             (14, 1), (15, 0)]
        for base in (new(0, 2, BUY, aggr=-1), cancel(pick(resting=0)),
                     modify(pick(resting=1), 0, 1))),
    "13_deep_sweep": config(expected=3) + b"".join(book(0, accounts=(a, a + 1), depth=8)
                                                   for a in (0, 2))
    + move_mid(0, -2) * 3 + new(0, 1, BUY, aggr=7, lots=16, scale=3, stp=STP_OLDEST)
    + new(0, 2, SELL, aggr=7, lots=16, scale=3, stp=STP_NEWEST),
    "14_halt": config(level_events=True) + book(0) + book(1) + set_state(0, True)
    + new(0, 2, BUY, aggr=3, lots=4) + modify(pick(back=20), 2, 1) + modify(pick(back=19), 1, 0)
    + cancel(pick(back=18)) + new(1, 2, BUY, aggr=3, lots=2) + set_state(0, True)
    + set_state(0, False) + new(0, 2, BUY, aggr=3, lots=4)
    + malformed(0, 4, new(0, 0, BUY, lots=1)) + new(0, 2, SELL, aggr=3)
    + malformed(0, 4, modify(pick(resting=0), 1, 3)) + malformed(0, 4, cancel(pick(resting=0)))
    + new(0, 2, SELL, aggr=3),
    "15_fast_paths": config(route=FAST) + book(0) + new(0, 2, BUY, aggr=-5)
    + new(0, 2, BUY, aggr=-5, coid=3, stp=STP_OLDEST) + new(0, 3, SELL, aggr=3, lots=12)
    + cancel(pick(resting=0)) + cancel(pick(resting=0), account=1, as_owner=False)
    + cancel(pick(resting=1), any_account=True, coid=5) + cancel_coid(3, account=2)
    + modify(pick(resting=0), 0, 0) + modify(pick(resting=1), 1, 0x64, price_mode=2)
    + market(0, 1, SELL, lots=16) + malformed(1, 0, new(0, 1))
    + malformed(6, 0, new(0, 1)) + malformed(0, 4, new(0, 1)),
    "16_batch_take": config(level_events=True, route=BATCH) + book(0) + book(2)
    + new(0, 2, BUY, aggr=3, lots=16) + cancel(pick(resting=2)) + modify(pick(resting=3), 2, 1)
    + market(2, 3, SELL, lots=16, scale=2) + malformed(0, 9, new(0, 1)),
    "17_deep_repeat": config(level_events=True, expected=1) + new(0, 0, SELL, aggr=-2)
    + repeat(256) + repeat(256) + new(0, 1, SELL, aggr=-1, lots=2) + repeat(100)
    + new(1, 2, BUY, aggr=-3, coid=4) + repeat(8)
    + new(0, 2, BUY, aggr=2, lots=16, scale=3) + cancel(pick(resting=0)) + repeat(200)
    + modify(pick(resting=5), 2, 1) + repeat(50),
    "19_caller_ids": config(caller_ids=True) + book(0, caller_ids=True)
    + cid(new(0, 2, BUY, aggr=-2), OPEN, 0) + cid(new(0, 2, BUY, aggr=-2), ZERO)
    + cid(new(0, 2, BUY, aggr=-2), HIGH, 0) + cid(new(0, 2, SELL, aggr=-3), HIGH, 1)
    + cid(new(0, 3, BUY, aggr=-1), TOP, 0) + cid(new(0, 3, BUY, aggr=-1), TOP, 0)
    + cid(new(0, 3, SELL, aggr=-1), TOP, 1) + cid(new(0, 2, BUY, aggr=3, tif=IOC, lots=2))
    + cid(new(0, 2, BUY, aggr=-2), FINISHED, 0) + cancel(pick(resting=0))
    + cid(new(0, 1, SELL, aggr=-4), FINISHED, 0) + cid(new(0, 1, SELL, aggr=-4), FINISHED, 0)
    + modify(pick(resting=1), 2, 1) + modify(pick(back=2), 1, 0x64, price_mode=2)
    + cid(market(0, 3, SELL, lots=16), FINISHED, 3) + cid(extreme(0, 2, BUY, qty_index=13))
    + cancel(pick(back=0)) + malformed(1, 0x80, new(0, 1)) + malformed(1, 0, new(0, 1))
    + cid(new(0, 1, BUY, aggr=-1, coid=2)) + cid(new(0, 1, BUY, aggr=-1, coid=2), OPEN, 0),
    "20_caller_ids_fast": config(level_events=True, route=FAST, caller_ids=True)
    + book(0, caller_ids=True) + cid(new(0, 2, BUY, aggr=-5)) + cid(new(0, 2, BUY, aggr=-5), ZERO)
    + cid(new(0, 2, BUY, aggr=-5, coid=3), OPEN, 0) + cid(new(0, 3, SELL, aggr=3, lots=12))
    + cancel(pick(resting=0)) + cid(new(0, 3, SELL, aggr=-3), FINISHED, 0)
    + cancel_coid(3, account=2) + modify(pick(resting=1), 1, 0x64, price_mode=2)
    + cid(market(0, 1, SELL, lots=16)) + set_state(0, True) + cid(new(0, 1), OPEN, 0)
    + set_state(0, False) + malformed(6, 0, new(0, 1)),
    "21_caller_ids_repeat": config(expected=1, route=BATCH, caller_ids=True)
    + cid(new(0, 0, SELL, aggr=-2)) + repeat(200) + cid(new(0, 1, BUY, aggr=-2), HIGH, 3)
    + repeat(100) + cid(new(0, 2, BUY, aggr=3, lots=16, scale=3)) + repeat(20)
    + cid(new(0, 1, SELL, aggr=-1), FINISHED, 5) + repeat(150)
    + cid(new(0, 3, BUY, aggr=-1), OPEN, 7) + repeat(30),
    "22_cancel_all": config(level_events=True) + book(0, accounts=(0, 0, 1)) + book(1)
    + book(2, accounts=(0, 2)) + modify(pick(resting=20), 2, 1) + modify(pick(resting=10), 0, 1)
    + cancel_all(0, 0) + cancel_all(0, 0) + cancel_all(1, 1, dead_man=True)
    + set_state(2, True) + cancel_all(account=0, everywhere=True, field=7)
    + cancel_all(2, 2, dead_man=True, everywhere=True, field=255) + set_state(2, False)
    + book(0) + repeat(3) + cancel_all(0, 1, everywhere=True) + repeat(2)
    + malformed(5, 1, cancel_all(0, 0)) + malformed(5, 0x30, cancel_all(0, 0))
    + malformed(7, 0, cancel_all(0, 0)) + malformed(7, 255, cancel_all(0, 0, everywhere=True))
    + malformed(6, 0, cancel_all(0, 0)) + malformed(0, 5, new(0, 0, BUY, aggr=-1))
    + malformed(0, 5, cancel(pick(resting=0))) + malformed(15, 1, cancel_all(0, 0)),
    "23_mmp_trip": config() + set_mmp(0, 0, lots=5) + set_mmp(0, 1, lots=2, plus_one=True)
    + set_mmp(0, 2, lots=4, window=40) + book(0) + book(1, accounts=(0, 1))
    + new(0, 2, BUY, aggr=3, lots=16) + new(0, 0, SELL, aggr=-1) + new(0, 1, BUY, aggr=-1)
    + new(1, 0, SELL, aggr=-1) + reset_mmp(0, 0) + new(0, 0, SELL, aggr=-1, lots=3)
    + new(0, 0, BUY, aggr=-1, lots=3) + reset_mmp(0, 2) + new(0, 2, SELL, aggr=3, lots=16)
    + set_mmp(1, 3, lots=1) + new(1, 3, SELL, aggr=-2) + new(1, 3, BUY, aggr=2)
    + new(1, 3, BUY, aggr=-3) + set_mmp(1, 3) + new(1, 3, BUY, aggr=-3) + reset_mmp(1, 3)
    + set_mmp(0, 1, lots=31, scale=3, window=63, window_scale=3) + reset_mmp(0, 1)
    + book(0, accounts=(1, 2)) + new(0, 1, SELL, aggr=4, lots=16, scale=3)
    + new(0, 1, BUY, aggr=4, lots=16, scale=3) + set_mmp(2, 2, lots=1, scale=2)
    + book(2, accounts=(2, 3)) + market(2, 3, BUY, lots=16, scale=3),
    "24_mmp_window": config(level_events=True, route=BATCH) + set_mmp(0, 0, lots=3, window=10)
    + set_mmp(0, 1, lots=6, window=3, window_scale=1) + new(0, 0, SELL, aggr=-1, lots=16)
    + new(0, 1, BUY, aggr=-1, lots=16) + new(0, 2, BUY, aggr=1, lots=2) + clock_on(20)
    + new(0, 2, BUY, aggr=1, lots=2) + new(0, 3, BUY, aggr=1, lots=2)
    + new(0, 2, SELL, aggr=1, lots=4) + clock_on(100) + new(0, 3, SELL, aggr=1, lots=2)
    + clock_on(3, big=True) + new(0, 3, SELL, aggr=1, lots=2) + new(0, 2, SELL, aggr=1, lots=5)
    + new(0, 1, BUY, aggr=-1) + reset_mmp(0, 0) + new(0, 0, BUY, aggr=-1, lots=16)
    + clock_edge(low=False, k=1) + new(0, 2, SELL, aggr=1) + repeat(3) + reset_mmp(0, 0)
    + new(0, 0, BUY, aggr=-1, lots=16) + new(0, 2, SELL, aggr=1) + clock_edge(low=False)
    + new(0, 2, SELL, aggr=1, lots=3) + new(0, 2, SELL, aggr=1) + reset_mmp(0, 0)
    + new(0, 0, BUY, aggr=-1, lots=16) + clock_edge(low=True, k=3) + new(0, 3, SELL, aggr=1)
    + clock_back(2) + new(0, 3, SELL, aggr=1, lots=3),
    "25_mmp_malformed": config() + book(0) + malformed(11, 5, set_mmp(0, 0, lots=2))
    + malformed(12, 1, set_mmp(0, 0, lots=2)) + malformed(12, 0, set_mmp(0, 0, lots=2))
    + malformed(5, 16, set_mmp(0, 0, lots=2)) + malformed(5, 4, reset_mmp(0, 0))
    + malformed(6, 0, set_mmp(0, 0, lots=2)) + malformed(7, 0, set_mmp(0, 0, lots=2))
    + malformed(7, 255, reset_mmp(0, 0)) + malformed(1, 9, set_mmp(0, 0, lots=2))
    + malformed(15, 2, set_mmp(0, 0, lots=1)) + malformed(15, 2, new(0, 0, SELL, aggr=3))
    + malformed(0, 6, new(0, 1, BUY, aggr=-1, lots=2)) + malformed(0, 7, new(0, 1, BUY))
    + malformed(0, 6, modify(pick(resting=0), 2, 1)) + malformed(0, 8, set_mmp(0, 0))
    + malformed(0, 1, set_mmp(0, 0)) + malformed(14, 0, reset_mmp(0, 0)),
    "26_mmp_caller_ids_fast": config(level_events=True, route=FAST, caller_ids=True)
    + set_mmp(0, 0, lots=2) + set_mmp(0, 2, lots=1) + book(0, caller_ids=True)
    + cid(new(0, 2, BUY, aggr=3, lots=16)) + cid(new(0, 0, SELL, aggr=-1))
    + cid(new(0, 2, BUY, aggr=-1)) + reset_mmp(0, 2) + cid(new(0, 2, BUY, aggr=-1))
    + cancel_all(0, 1, dead_man=True) + cancel_all(0, 2, everywhere=True) + reset_mmp(0, 0)
    + cid(new(0, 0, SELL, aggr=-1)) + repeat(4) + cancel_all(0, 0) + set_mmp(0, 0),
    # Fills at the window's edges: one window-length after its opening fill a
    # new window opens; one tick before, the same goes on.
    "27_mmp_window_edge": config() + set_mmp(0, 0, lots=3, window=10)
    + new(0, 0, SELL, aggr=-1, lots=16) + new(0, 2, BUY, aggr=1, lots=2) + clock_on(9)
    + new(0, 2, BUY, aggr=1, lots=2) + clock_on(8) + new(0, 2, BUY, aggr=1)
    + new(0, 2, BUY, aggr=1) + clock_on(8) + new(0, 2, BUY, aggr=1, lots=3)
    + new(0, 2, BUY, aggr=1),
    # One trade takes taker and maker over: the taker trips first. A tripped
    # account's bad NEW is refused as mmp before its qty is looked at; a
    # limit of 0 stores no window.
    "28_mmp_trip_order": config(level_events=True) + set_mmp(0, 0, lots=1) + set_mmp(0, 2, lots=1)
    + new(0, 0, SELL, aggr=-1, lots=2) + new(0, 0, BUY, aggr=-2) + new(0, 2, BUY, aggr=-3)
    + new(0, 2, BUY, aggr=1, lots=2) + extreme(0, 2, BUY, qty_index=13)
    + extreme(0, 0, SELL, qty_index=12) + set_mmp(0, 2, window=5)
    + set_mmp(0, 0, window=63, window_scale=3) + extreme(0, 2, BUY, qty_index=13),
    # Order limits (10 lots, 9000 notional) on AAA, whose mid is 1000: each
    # reject, the quantity's first, both before a duplicate id and a
    # post-only cross; an order at the notional limit rests; a notional past
    # int64 is over. A modify that leaves more (qty up, or the price moved)
    # is held to them, before its post-only cross; a mere reduction at the
    # order's price goes through limits it is over. Market orders by their
    # quantity only; BBB in lots.
    "29_limits": config(caller_ids=True) + book(0, caller_ids=True)
    + set_limits(0, 3, qty=10, notional=9) + cid(new(0, 2, BUY, aggr=-5, lots=11))
    + cid(new(0, 2, BUY, aggr=-5, lots=10)) + cid(new(0, 2, BUY, aggr=0, lots=9))
    + cid(new(0, 2, BUY, aggr=2, post_only=True, lots=10))
    + cid(new(0, 2, SELL, aggr=-3, lots=12), OPEN, 0)
    + cid(extreme(0, 2, SELL, price_mode=1, qty_index=11))
    + modify(pick(resting=0), 2, 0) + modify(pick(resting=0), 0, 0x90, price_mode=2, keep_qty=True)
    + modify(pick(resting=0), 1, 0x7B, price_mode=2) + set_limits(0, 3, qty=5)
    + modify(pick(resting=0), 0, 1) + modify(pick(resting=0), 1, 0x86, price_mode=3)
    + modify(pick(resting=0), 1, 0x76, price_mode=2)
    + modify(pick(resting=0), 1, 0x75, price_mode=2)
    + modify(pick(resting=0), 2, 0) + set_limits(0, 3, qty=10, notional=9)
    + cid(market(0, 3, SELL, lots=11)) + cid(market(0, 3, SELL, lots=10))
    + modify(pick(resting=0), 1, 0) + cid(new(0, 2, SELL, aggr=-2, post_only=True, lots=2))
    + modify(pick(resting=0), 1, 0x6B, price_mode=2) + modify(pick(resting=0), 1, 0x62, price_mode=2)
    + set_limits(1, 0, qty=2, qty_mode=1, notional=1, notional_mode=1)
    + cid(new(1, 2, BUY, aggr=-2, lots=16, scale=2)) + cid(new(1, 2, BUY, aggr=-2, lots=6, scale=2))
    + cid(new(1, 2, BUY, aggr=-2, lots=16)) + set_limits(0, 3)
    + cid(new(0, 2, BUY, aggr=-1, lots=16, scale=3)),
    # Limits through the fast paths (eng_run for SET_LIMITS); each bad
    # SET_LIMITS and the order of their checks; limits near INT64_MAX; a
    # NEW's, a CANCEL's and a MODIFY's fields as a SET_LIMITS (type 8), and
    # the first unknown type.
    "30_limits_fast_malformed": config(level_events=True, route=FAST) + book(0)
    + set_limits(0, 1, qty=3) + new(0, 2, BUY, aggr=-2, lots=4)
    + new(0, 2, BUY, aggr=-2, lots=4, coid=1) + new(0, 2, BUY, aggr=-2, lots=3)
    + modify(pick(resting=0), 2, 0) + modify(pick(resting=0), 0, 1)
    + set_limits(0, 1, qty=1, qty_mode=3) + set_limits(0, 1, notional_mode=3)
    + set_limits(0, 1, flag=True) + set_limits(0, 1, flag=True, reserved=True)
    + set_limits(0, 1, unknown=1) + set_limits(0, 1, unknown=2)
    + set_limits(0, 1, qty_mode=3, unknown=3) + set_limits(0, 1, flag=True, unknown=3)
    + set_limits(0, 1, qty=63, qty_mode=2, notional=63, notional_mode=2)
    + extreme(0, 2, SELL, price_mode=1, qty_index=11) + extreme(0, 2, BUY, qty_index=3)
    + extreme(0, 2, BUY, qty_index=0, price_mode=3)
    + malformed(0, 8, new(0, 1, BUY, aggr=-1, lots=2)) + new(0, 2, SELL, aggr=-3)
    + market(0, 2, SELL, lots=2) + malformed(0, 8, cancel(pick(resting=0)))
    + malformed(0, 8, modify(pick(resting=0), 1, 3)) + malformed(0, 9, new(0, 1))
    + set_limits(2, 0, qty=1, qty_mode=1) + new(2, 3, BUY, aggr=-1, lots=16, scale=2) + repeat(2),
    # CANCEL_ALL of every account: one instrument's whole book in book order
    # (while halted too), then every instrument's; an empty book; each
    # refusal (an account named, dead_man, an unknown instrument, a spoilt
    # account or reserved field) and the flag as a spoilt field of a
    # CANCEL_ALL of one account; through eng_process, a batch and eng_run.
    "31_cancel_all_accounts": config(level_events=True) + book(0, accounts=(0, 1, 2))
    + book(1, accounts=(1, 3)) + book(2, accounts=(2, 3)) + cancel_all(0, 1, every_account=True)
    + cancel_all(0, 2, every_account=True) + book(0, accounts=(3, 1)) + set_state(0, True)
    + cancel_all(0, 2, every_account=True, keep_account=True)
    + cancel_all(0, 0, every_account=True, keep_account=True) + set_state(0, False)
    + book(0, accounts=(2, 0)) + cancel_all(1, 3, dead_man=True, every_account=True)
    + cancel_all(1, 1, dead_man=True, everywhere=True, every_account=True, keep_account=True)
    + malformed(7, 0, cancel_all(0, 0, every_account=True))
    + malformed(15, 1, cancel_all(0, 0, every_account=True))
    + malformed(6, 0, cancel_all(0, 0, every_account=True))
    + malformed(5, 0x40, cancel_all(0, 0)) + book(0, accounts=(1, 2))
    + malformed(5, 0x60, cancel_all(1, 0)) + book(1, accounts=(0, 3))
    + cancel_all(2, 3, everywhere=True, field=200, every_account=True)
    + cancel_all(1, 0, everywhere=True, every_account=True) + book(2, accounts=(1,)) + repeat(2),
    "32_cancel_all_accounts_routes": config(route=BATCH) + book(0) + book(1, accounts=(2, 3))
    + set_mmp(0, 1, lots=2) + new(0, 2, BUY, aggr=3, lots=16) + book(0, accounts=(1, 3))
    + cancel_all(1, 0, every_account=True) + cancel_all(0, 3, everywhere=True, every_account=True)
    + new(0, 1, SELL, aggr=-1) + cancel_all(0, 0, every_account=True),
    "33_cancel_all_accounts_fast": config(level_events=True, route=FAST, caller_ids=True)
    + book(0, accounts=(0, 1, 2), caller_ids=True) + book(2, accounts=(3,), caller_ids=True)
    + cancel_all(0, 1, every_account=True) + book(0, accounts=(1,), depth=2, caller_ids=True)
    + cancel_all(0, 0, everywhere=True, every_account=True)
    + cancel_all(0, 3, every_account=True, keep_account=True)
    + cancel_all(2, 2, every_account=True),
}


def main():
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else (
        pathlib.Path(__file__).resolve().parent / "corpus")
    out.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (out / name).write_bytes(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")


if __name__ == "__main__":
    main()
