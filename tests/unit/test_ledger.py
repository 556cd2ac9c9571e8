"""The Ledger's sessions and the orders they own (csrc/binding/ledger.c):
an order's owner is always an attached session."""

from __future__ import annotations

import gc
import json
import textwrap
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyengine._server import Ledger, Link

from .conftest import run_python


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


def test_a_session_is_detached_by_its_int_id() -> None:
    """Only an int: a key of another type, looked up in the sessions' dict,
    could run code between the check that the session owns nothing and its
    removal."""
    class Sid(int):
        pass

    ledger = Ledger()
    attached(ledger, 9)
    for sid in ("9", 9.0, Sid(9)):
        with pytest.raises(TypeError, match="detach: a session id is an int"):
            ledger.detach(sid)  # type: ignore[arg-type]
    ledger.detach(9)
    ledger.own(attached(ledger, 9), 1, 0, None)  # attached anew: it was gone


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
        # 85 orders: the next client order id grows the Link's dict of them (a table of 128 holds 85);
        # the open orders' shard of the next is empty (85 ids over 256 shards), so it allocates too.
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
            assert ledger.owner(10**9) is None and ledger.order(10**9) is None and link.order_count == 85
            assert coid not in coids and 10**9 not in link.orders()
        else:
            assert ledger.owner(10**9) is link and ledger.order(10**9) == (1, coid) and coids[coid] == 10**9
            assert link.orders()[10**9] == (1, coid)
        ledger.verify()
    # The shard's slots, the order's entry, the key, the client order ids' growth: four ways to fail.
    assert len(failed_at) >= 4, f"allocations failed at {failed_at} only: not each dict's growth"


def test_order_ids_of_an_instrument() -> None:
    ledger = Ledger()
    link = attached(ledger, 1)
    for oid, inst in ((5, 0), (3, 2**32 - 1), (9, 0), (1, 7)):
        ledger.own(link, oid, inst, None)
    assert link.order_ids() == [5, 3, 9, 1]
    assert (link.order_ids(0), link.order_ids(2**32 - 1), link.order_ids(7), link.order_ids(8)) == ([5, 9], [3], [1], [])
    for bad, error in ((2**32, OverflowError), (-1, OverflowError), ("0", TypeError), (0.0, TypeError)):
        with pytest.raises(error):
            link.order_ids(bad)


def test_many_open_orders_are_kept_as_a_dict_keeps_them() -> None:
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
    for link in links:  # each session's list, in the order it came to own them
        assert list(link.orders()) == [oid for oid in ids if model.get(oid) is link]
    sizes = sorted(ledger.verify())
    assert sum(sizes) == len(model) and len(sizes) == 256 and sizes[0] > 0
    assert sizes[-1] <= 2 * len(model) / 256, sizes[-5:]
    for oid in list(model):
        ledger.forget(model.pop(oid), oid)
    assert ledger.owned(None) == [] and sum(ledger.verify()) == 0 and all(link.order_count == 0 for link in links)


def test_a_ledger_whose_sessions_own_orders_is_collected_in_a_cycle() -> None:
    """The open orders hold their sessions' Links, and the Ledger shows the
    collector those references: a cycle through the Ledger, a Link with
    orders and its session is garbage like any other, cleared in whatever
    order the collector picks."""
    class Session:
        ledger: Ledger

    for round_ in range(3):
        ledger = Ledger()
        session = Session()
        session.ledger = ledger
        link = Link(1, session, 0, 0)
        ledger.attach(link)
        other = attached(ledger, 2)
        for oid in range(1, 50):
            ledger.own(link if oid % 3 else other, oid, 0, f"c{oid}" if oid % 2 else None)
        gone = weakref.ref(session)
        del ledger, session, link, other
        gc.collect()
        assert gone() is None, f"round {round_}: the cycle was kept"


def test_an_owner_is_asked_for_by_an_int() -> None:
    ledger = Ledger()
    link = attached(ledger, 1)
    ledger.own(link, 2**64 - 1, 0, None)
    assert ledger.owner(2**64 - 1) is link
    assert ledger.owner(-1) is None and ledger.owner(2**64) is None and ledger.owner(0) is None
    with pytest.raises(TypeError, match="an order id is an int"):
        ledger.owner("1")  # type: ignore[arg-type]


# The index hashes an id by multiplying it by this (idmap.c), and takes the top bits: the ids whose
# hashes differ in their low bits only share a shard and a home slot, and collide.
_FIBONACCI = 0x9E3779B97F4A7C15
def _with_hash(h: int) -> int:
    return h * pow(_FIBONACCI, -1, 2**64) % 2**64


# Homes at the first slots of one shard, and at its last (whatever its size): runs that wrap around its end.
_COLLIDING = st.one_of(st.integers(0, 40).map(lambda j: _with_hash((0x5A << 56) + j)),
                       st.integers(1, 40).map(lambda j: _with_hash((0x5A << 56) + (1 << 56) - j)))
_IDS = st.one_of(_COLLIDING, st.integers(1, 2**64 - 1), st.integers(1, 60))
_STEPS = st.lists(st.tuples(st.sampled_from(["own", "forget", "release"]), _IDS, st.integers(0, 2),
                            st.integers(0, 3), st.sampled_from([None, "a", "b"])), max_size=120)


@settings(max_examples=150, deadline=None)
@given(_STEPS)
def test_the_open_orders_are_a_dict_and_a_list_per_session(steps: list[tuple[str, int, int, int, str | None]]) -> None:
    """Own, forget and release in any order, against a dict of each
    session's orders kept in the order it came to own them: an order owned
    again by another session moves to the end of that one's; forgetting
    another session's order changes nothing."""
    ledger = Ledger()
    links = [attached(ledger, sid) for sid in (1, 2, 3)]
    for i, link in enumerate(links):
        link.login(100 + i % 2, False)
    model: list[dict[int, tuple[int, str | None]]] = [{}, {}, {}]
    for kind, oid, who, inst, coid in steps:
        holder = next((i for i, orders in enumerate(model) if oid in orders), None)
        if kind == "own":
            if holder is not None and holder != who:
                del model[holder][oid]
            model[who][oid] = (inst, coid)
            ledger.own(links[who], oid, inst, coid)
        elif kind == "forget":
            if holder == who:
                del model[who][oid]
            ledger.forget(links[who], oid)
        else:
            assert ledger.release(links[who]) == model[who]
            model[who] = {}
        ledger.verify()
        assert [link.orders() for link in links] == model
        assert [list(link.orders()) for link in links] == [list(orders) for orders in model]
        assert [link.order_ids() for link in links] == [list(orders) for orders in model]
        assert [link.order_ids(inst) for link in links] == [
            [o for o, (i, _) in orders.items() if i == inst] for orders in model]
        holder = next((i for i, orders in enumerate(model) if oid in orders), None)
        assert ledger.owner(oid) is (None if holder is None else links[holder])
        assert ledger.order(oid) == (None if holder is None else model[holder][oid])
    assert sorted(ledger.owned(100)) == sorted((oid, inst) for i in (0, 2) for oid, (inst, _) in model[i].items())
    assert sum(ledger.verify()) == sum(map(len, model)) == sum(link.order_count for link in links)


def coids_of(link: Link) -> dict[str, int]:
    """The session's dict of client order ids (its only dict keyed by str and holding ints)."""
    (coids,) = [d for d in gc.get_referents(link) if isinstance(d, dict) and all(
        isinstance(k, str) and isinstance(v, int) for k, v in d.items()) and "marker" in d]
    return coids


def test_an_order_owned_again_leaves_its_old_client_order_id() -> None:
    """Claimed by another session, or told again with another client order
    id: the id it had names it no more, where it named it (and a session
    whose id names it still keeps it)."""
    ledger = Ledger()
    a, b = attached(ledger, 1), attached(ledger, 2)
    for oid, link in enumerate((a, b), start=98):
        ledger.own(link, oid, 0, "marker")
    ledger.own(a, 5, 0, "x")
    ledger.own(b, 5, 1, "y")
    assert "x" not in coids_of(a) and coids_of(b)["y"] == 5 and ledger.order(5) == (1, "y")
    ledger.own(b, 5, 1, "z")
    assert "y" not in coids_of(b) and coids_of(b)["z"] == 5
    ledger.own(b, 5, 1, "z")  # the same again: still named
    assert coids_of(b)["z"] == 5
    ledger.forget(b, 5)
    assert "z" not in coids_of(b) and ledger.owner(5) is None
    ledger.verify()


def test_a_failed_claim_changes_nothing() -> None:
    """Out of memory while an open order is owned again: it stays its
    owner's, with its client order id (the engine holds it: an order nobody
    owns would lose its fills)."""
    import _testcapi as testcapi

    outcomes = set()
    for k in range(6):
        ledger = Ledger()
        a, b = attached(ledger, 1), attached(ledger, 2)
        ledger.own(a, 98, 0, "marker")
        ledger.own(b, 99, 0, "marker")
        ledger.own(a, 10**9, 0, "x")
        coid = f"client-{k}"  # a new str: an allocation of its own is not the one that fails
        testcapi.set_nomemory(k, k + 1)
        try:
            ledger.own(b, 10**9, 1, coid)
            failed = False
        except MemoryError:
            failed = True
        finally:
            testcapi.remove_mem_hooks()
        outcomes.add(failed)
        if failed:
            assert ledger.owner(10**9) is a and ledger.order(10**9) == (0, "x") and coid not in coids_of(b)
            assert a.orders() == {98: (0, "marker"), 10**9: (0, "x")} and coids_of(a)["x"] == 10**9
        else:
            assert ledger.owner(10**9) is b and b.orders()[10**9] == (1, coid) and "x" not in coids_of(a)
        ledger.verify()
    assert outcomes == {True, False}


def test_a_session_attached_to_two_ledgers_owns_orders_in_one() -> None:
    """Its list of open orders is one Ledger's: another refuses to give it
    orders or to release them, and shows the collector only the sessions
    whose orders it holds."""
    a, b = Ledger(), Ledger()
    link = attached(a, 1)
    b.attach(link)
    a.own(link, 1, 0, None)
    with pytest.raises(ValueError, match="session 1 owns the orders of another Ledger"):
        b.own(link, 2, 0, None)
    with pytest.raises(ValueError, match="session 1 owns the orders of another Ledger"):
        b.release(link)
    assert link.orders() == {1: (0, None)} and b.owner(1) is None
    assert link in gc.get_referents(a) and link not in gc.get_referents(b)
    del a, b
    gc.collect()
    assert link.order_count == 0 and link.orders() == {}  # its Ledger gone, its orders with it


def test_a_client_order_id_is_a_plain_str() -> None:
    """A str subclass could run Python code while the Ledger looks it up."""
    class Coid(str):
        pass

    ledger = Ledger()
    link = attached(ledger, 1)
    with pytest.raises(TypeError, match="a client order id is a str or None"):
        ledger.own(link, 1, 0, Coid("x"))
    assert ledger.owner(1) is None


@pytest.mark.parametrize("call, args, after", [
    ("link.orders", "()", list(range(1, 301))),  # as they were when the call began
    ("link.order_ids", "()", list(range(1, 301))),
    ("link.order_ids", "(0,)", list(range(3, 301, 3))),
    ("link.order_ids", "(7,)", []),  # the instrument of the orders the finalizer owns
    ("ledger.owned", "(None,)", list(range(1, 301))),
    ("ledger.release", "(link,)", list(range(1001, 1301))),  # the orders it took away: those held at its end
])
def test_a_session_s_orders_are_read_whole_when_a_finalizer_changes_them(call: str, args: str,
                                                                         after: list[int]) -> None:
    """Making the objects of a session's orders can run a collection, and a
    finalizer that forgets them and owns others (in the memory just freed):
    the views give the orders as they were when the call began; release
    takes away, and gives, the orders the session holds, whatever they
    became meanwhile, and leaves it none."""
    proc = run_python(textwrap.dedent(f"""
        import gc
        from pyengine._server import Ledger, Link
        ledger = Ledger()
        link = Link(1, object(), 0, 0)
        ledger.attach(link)
        for oid in range(1, 301):
            ledger.own(link, oid, oid % 3, None)
        in_call, ran_in_call = [False], []
        class Churns:
            def __del__(self):
                ran_in_call.append(in_call[0])
                for oid in range(1, 301):
                    ledger.forget(link, oid)
                for oid in range(1001, 1301):
                    ledger.own(link, oid, 7, None)
        def garbage():
            c = Churns()
            c.cycle = c
        gc.disable()
        # The interpreter's free lists of small tuples and of dicts emptied: the call's first
        # object is allocated anew, and that allocation collects.
        drained = [(i, -i) for i in range(5000)], [{{}} for _ in range(200)], [[] for _ in range(200)]
        garbage()
        call, arg = {call}, {args}  # bound before: binding allocates
        in_call[0] = True
        gc.set_threshold(1)
        gc.enable()
        out = call(*arg)
        in_call[0] = False
        gc.disable()
        ids = sorted(o if isinstance(o, int) else o[0] for o in out)
        print(json.dumps([ran_in_call, ids, link.order_count]))
        ledger.verify()
    """).replace("import gc", "import gc, json"))
    assert proc.returncode == 0, proc.stderr
    ran_in_call, ids, left = json.loads(proc.stdout)
    assert ran_in_call == [True]  # the finalizer ran inside the call: the case this is about
    assert ids == after and left == (0 if call == "ledger.release" else 300)


def test_a_tag_made_while_a_finalizer_tags_the_same_session_is_its_own() -> None:
    """Tagging a request makes a tuple, which can run a collection, and a
    finalizer that tags a request of the same session: each gets a number
    of its own, and both stay pending."""
    proc = run_python(textwrap.dedent("""
        import gc, json
        from pyengine._server import Link
        link = Link(1, object(), 0, 0)
        inner, ran_in_call, in_call = [], [], [False]
        class Tags:
            def __del__(self):
                ran_in_call.append(in_call[0])
                inner.append(link.tag("cancel", "inner", None))
        def garbage():
            t = Tags()
            t.cycle = t
        gc.disable()
        # The free list of 3-tuples emptied but for one, which the call's arguments take: the tag's tuple is
        # made anew, and that allocation collects.
        drained = [(i, i, i) for i in range(5000)]
        garbage()
        del drained[-1]
        tag = link.tag
        in_call[0] = True
        gc.set_threshold(1)
        gc.enable()
        outer = tag("cancel", "outer", None)
        in_call[0] = False
        gc.disable()
        print(json.dumps([ran_in_call, inner + [outer], sorted(v[1] for v in link.pending().values())]))
    """))
    assert proc.returncode == 0, proc.stderr
    ran_in_call, tags, pending = json.loads(proc.stdout)
    assert ran_in_call == [True]
    assert len(set(tags)) == 2 and pending == ["inner", "outer"]
