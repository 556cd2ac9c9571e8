"""The Ledger's sessions and the orders they own (csrc/binding/ledger.c):
an order's owner is always an attached session."""

from __future__ import annotations

import gc

import pytest

from pyengine._server import Ledger, Link


def attached(ledger: Ledger, sid: int) -> Link:
    link = Link(sid, object(), 0, 0)
    ledger.attach(link)
    return link


def test_a_session_owning_open_orders_is_not_detached() -> None:
    ledger = Ledger()
    link = attached(ledger, 3)
    ledger.own(link, 10, 0, None)
    ledger.own(link, 11, 1, "x")
    with pytest.raises(ValueError, match="session 3 still owns 2 open orders"):
        ledger.detach(3)
    assert ledger.owner(10) is link and sorted(ledger.owned(None)) == [(10, 0), (11, 1)]
    ledger.forget(link, 10)
    ledger.forget(link, 11)
    ledger.detach(3)
    assert ledger.owner(10) is None and ledger.owned(None) == []
    ledger.detach(3)  # gone already: nothing to do


def test_released_orders_let_the_session_go() -> None:
    ledger = Ledger()
    link = attached(ledger, 4)
    ledger.own(link, 20, 0, "y")
    assert ledger.release(link) == {20: (0, "y")}
    ledger.detach(4)
    assert ledger.owner(20) is None


def test_only_an_attached_session_owns_orders() -> None:
    ledger = Ledger()
    stray = Link(5, object(), 0, 0)
    with pytest.raises(ValueError, match="session 5 is not attached"):
        ledger.own(stray, 30, 0, None)
    assert ledger.owner(30) is None


def test_a_session_id_names_one_link() -> None:
    ledger = Ledger()
    first = attached(ledger, 6)
    ledger.attach(first)  # the same link again changes nothing
    with pytest.raises(ValueError, match="another session 6 is attached already"):
        ledger.attach(Link(6, object(), 0, 0))
    ledger.own(first, 40, 0, None)
    assert ledger.owner(40) is first


def test_owners_are_found_by_account() -> None:
    ledger = Ledger()
    a, b = attached(ledger, 1), attached(ledger, 2)
    a.login(100, False)
    b.login(200, False)
    ledger.own(a, 1, 0, None)
    ledger.own(b, 2, 1, None)
    ledger.own(a, 3, 1, None)
    assert sorted(ledger.owned(100)) == [(1, 0), (3, 1)] and ledger.owned(200) == [(2, 1)]
    assert ledger.owned(300) == []


def test_an_order_is_owned_whole_or_not_at_all_when_memory_runs_out() -> None:
    """Whichever allocation of Ledger.own fails, the order is either the
    session's everywhere (owner, the Link's orders, its client order id) or
    nowhere: an owner whose Link does not hold the order could be detached
    under it."""
    import _testcapi as testcapi  # CPython's own test module: a build without it fails here, not skips

    failed_at = []
    for k in range(12):
        ledger = Ledger()
        link = attached(ledger, 1)
        # 85 orders: the next insert grows the Link's dicts (a table of 128 holds 85); the owners'
        # shard of the next is empty (85 ids over 256 shards), so its first insert allocates too.
        for oid in range(1, 86):
            ledger.own(link, oid, 0, f"c{oid}")
        coid = f"client-{k}"  # a new str: an allocation of its own is not the one that fails
        testcapi.set_nomemory(k, k + 1)
        try:
            ledger.own(link, 10**9, 1, coid)
        except MemoryError:
            failed_at.append(k)
        finally:
            testcapi.remove_mem_hooks()
        (coids,) = [d for d in gc.get_referents(link) if isinstance(d, dict) and "c1" in d]
        if failed_at and failed_at[-1] == k:
            assert ledger.owner(10**9) is None and link.order(10**9) is None and link.order_count == 85
            assert coid not in coids
        else:
            assert ledger.owner(10**9) is link and link.order(10**9) == (1, coid) and coids[coid] == 10**9
    # The key, the orders' growth, the owners' shard, the client order ids' growth: four ways to fail.
    assert len(failed_at) >= 4, f"allocations failed at {failed_at} only: not each dict's growth"


def test_many_owners_kept_as_a_dict_keeps_them() -> None:
    """Owners of orders with consecutive ids, ids apart by powers of two
    and 64-bit ids, taken and let go in turn, against a dict; spread over
    the shards the Ledger keeps them in (none holds more than twice its
    share of the orders still open: a dict that grows moves every entry at
    once)."""
    ledger = Ledger()
    links = [attached(ledger, sid) for sid in (1, 2, 3)]
    for i, link in enumerate(links):
        link.login(100 + i, False)
    ids = list(range(1, 20_001)) + [k << 20 for k in range(1, 5_001)] + [2**64 - k for k in range(1, 1_001)]
    model: dict[int, Link] = {}
    for n, oid in enumerate(ids):
        link = links[n % 3]
        ledger.own(link, oid, n % 2, None)
        model[oid] = link
        if n % 3 == 0:  # let every third older one go
            gone = ids[n // 2]
            if gone in model:
                ledger.forget(model.pop(gone), gone)
    assert all(ledger.owner(oid) is model.get(oid) for oid in ids)
    index = {oid: n for n, oid in enumerate(ids)}
    assert sorted(ledger.owned(None)) == sorted((oid, index[oid] % 2) for oid in model)
    assert sorted(ledger.owned(101)) == sorted((oid, index[oid] % 2) for oid, link in model.items() if link is links[1])
    # Not the sessions' dict, nor the modifies' bounds (empty: no modify here); no shard is empty.
    shards = [d for d in gc.get_referents(ledger)
              if isinstance(d, dict) and d and not any(isinstance(v, Link) for v in d.values())]
    sizes = sorted(len(d) for d in shards)
    assert sum(sizes) == len(model) and len(sizes) == 256
    assert sizes[-1] <= 2 * len(model) / 256, sizes[-5:]
    for oid in list(model):
        ledger.forget(model.pop(oid), oid)
    assert ledger.owned(None) == [] and all(len(d) == 0 for d in shards)


def test_an_owner_is_asked_for_by_an_int() -> None:
    ledger = Ledger()
    link = attached(ledger, 1)
    ledger.own(link, 2**64 - 1, 0, None)
    assert ledger.owner(2**64 - 1) is link
    assert ledger.owner(-1) is None and ledger.owner(2**64) is None and ledger.owner(0) is None
    with pytest.raises(TypeError, match="an order id is an int"):
        ledger.owner("1")  # type: ignore[arg-type]
