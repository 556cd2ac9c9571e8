"""Cancel-all of every account (a venue's kill switch): one command, one walk
of the books, through the Engine, the batch path and the model alike."""

from __future__ import annotations

from typing import Any

import pytest

from pyengine import (
    CancelReason,
    Cancelled,
    Engine,
    MassCancelled,
    Rejected,
    RejectReason,
    pack_cancel_all,
)
from pyengine.batch import COMMAND_STRUCT, CommandFlag, CommandType
from pyengine.testing import ReferenceEngine

from .test_api import params

USER = CancelReason.USER


def record(flags: int, account: int = 0) -> bytes:
    """A CANCEL_ALL record of instrument 0 with these flags and account."""
    return COMMAND_STRUCT.pack(CommandType.CANCEL_ALL, 0, 0, 0, 0, flags, 0, 0, account, 0, 0, 0, 0, b"")


def book(engine: Any) -> list[int]:
    """A and B with orders of accounts 1, 2 and 3; the ids in A's book order."""
    engine.add_instrument("A")
    engine.add_instrument("B")
    ids = [ev.order_id for ev in engine.submit("A", "buy", 1, 99, account=1)]
    ids += [ev.order_id for ev in engine.submit("A", "buy", 2, 100, account=2)]
    ids += [ev.order_id for ev in engine.submit("A", "buy", 3, 100, account=1)]
    ids += [ev.order_id for ev in engine.submit("A", "sell", 4, 106, account=3)]
    ids += [ev.order_id for ev in engine.submit("A", "sell", 5, 105, account=2)]
    engine.submit("B", "sell", 6, 105, account=1)
    return [ids[1], ids[2], ids[0], ids[4], ids[3]]


@pytest.mark.parametrize("make", [Engine, ReferenceEngine])
def test_every_accounts_orders_go_in_book_order_in_one_command(make: Any) -> None:
    engine = make()
    a_ids = book(engine)
    events = engine.cancel_all(symbol="A", all_accounts=True)
    assert events == [
        Cancelled(7, a_ids[0], 2, USER),
        Cancelled(7, a_ids[1], 3, USER),
        Cancelled(7, a_ids[2], 1, USER),
        Cancelled(7, a_ids[3], 5, USER),
        Cancelled(7, a_ids[4], 4, USER),
        MassCancelled(7, None, "A", 5, USER),
    ]
    assert [o.symbol for o in engine.open_orders()] == ["B"]
    assert engine.cancel_all(all_accounts=True)[-1] == MassCancelled(8, None, None, 1, USER)
    assert engine.open_orders() == []
    assert engine.cancel_all(None, "B", all_accounts=True) == [MassCancelled(9, None, "B", 0, USER)]
    engine.verify()


@pytest.mark.parametrize("make", [Engine, ReferenceEngine])
def test_a_cancel_all_of_one_account_is_called_as_before(make: Any) -> None:
    engine = make()
    book(engine)
    assert engine.cancel_all(2, "A")[-1] == MassCancelled(7, 2, "A", 2, USER)
    assert engine.cancel_all(1, dead_man=True)[-1] == MassCancelled(8, 1, None, 3, CancelReason.DEAD_MAN)
    assert engine.cancel_all(account=3)[-1] == MassCancelled(9, 3, None, 1, USER)


@pytest.mark.parametrize("call", [Engine().cancel_all, ReferenceEngine().cancel_all, pack_cancel_all])
def test_every_account_takes_no_account_and_no_dead_man(call: Any) -> None:
    """Neither an account nor all_accounts, both, or all_accounts with
    dead_man (the dead-man switch is one account's) is no request."""
    with pytest.raises(ValueError, match="account"):
        call()
    with pytest.raises(ValueError, match="account"):
        call(0, all_accounts=True)
    with pytest.raises(ValueError, match="dead_man"):
        call(all_accounts=True, dead_man=True)
    with pytest.raises(TypeError, match="all_accounts"):
        call(1, all_accounts=1)


def test_the_packed_command_is_the_engines() -> None:
    engine, model = Engine(), ReferenceEngine()
    book(model)
    book(engine)
    packed = pack_cancel_all(None, 0, all_accounts=True) + pack_cancel_all(all_accounts=True)
    assert packed == record(CommandFlag.ALL_ACCOUNTS) + record(CommandFlag.ALL_ACCOUNTS | CommandFlag.ALL_INSTRUMENTS)
    expected = model.cancel_all(None, "A", all_accounts=True) + model.cancel_all(all_accounts=True)
    assert engine.decode_events(engine.process_batch(packed).events) == expected
    verb = params(Engine.cancel_all)
    assert params(ReferenceEngine.cancel_all) == verb
    packer = params(pack_cancel_all, drop=("ts",))
    assert (packer[1][0], verb[1][0]) == ("instrument", "symbol") and packer[:1] + packer[2:] == verb[:1] + verb[2:]


def test_the_core_refuses_an_account_or_dead_man_with_every_account() -> None:
    """Records the packers never write: an account named with every account
    (bad_command), every account with DEAD_MAN (bad_flags). Nothing goes."""
    engine = Engine()
    book(engine)
    every = CommandFlag.ALL_ACCOUNTS
    records = record(every, 1) + record(every | CommandFlag.ALL_INSTRUMENTS, 2) + record(every | CommandFlag.DEAD_MAN)
    events = engine.decode_events(engine.process_batch(records + record(128)).events)
    assert len(events) == 4
    assert [ev.reason for ev in events if isinstance(ev, Rejected)] == [
        RejectReason.BAD_COMMAND, RejectReason.BAD_COMMAND, RejectReason.BAD_FLAGS, RejectReason.BAD_FLAGS]
    assert len(engine.open_orders()) == 6
