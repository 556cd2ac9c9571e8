"""``Engine``: the in-process, synchronous API of the matching core.

Each call crosses into C once and returns the events it caused as a list of
event objects (``pyengine.events``). The per-call verbs -- ``submit``,
``cancel``, ``modify``, ``order``, ``book`` -- are the base class's
(``pyengine._calls.Core``, csrc/binding/calls.c), which checks the
arguments, calls the core and builds the results in C for every valid call.
A call it does not take goes to the method of the same name with a leading
underscore below, which raises the error. ``process_batch`` is the path for
millions of commands in one call.

An Engine is single-threaded. Every method that reads or changes the C
engine holds it for the whole call, and a call that finds it held raises
``ConcurrentUseError``: from another thread, or from code the running call
itself runs (an argument's ``__index__`` or ``__hash__``, a garbage
collection's callbacks). It is a flag, not a lock: a lock would cost a fifth
of a call; see docs/design.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, NoReturn, SupportsIndex

from . import _args
from ._calls import Core
from ._codes import (
    CANCEL_BY_CODE,
    ORDER_TYPE_CODE,
    REJECT_BY_CODE,
    SIDE_BY_CODE,
    SIDE_CODE,
    STATE_BY_CODE,
    STP_BY_CODE,
    STP_CODE,
    TIF_CODE,
)
from ._ffi import ffi, lib
from .batch import COMMAND_SIZE, EVENT_SIZE, BatchResult, decode_events
from .enums import DEFAULT_TIF, REJECT_MESSAGES, TradingState
from .errors import (
    ConcurrentUseError,
    DuplicateSymbol,
    InvalidArgument,
    InvalidArgumentType,
    EngineBufferError,
    EngineClosed,
    EngineError,
    EngineMemoryError,
    InvariantError,
)
from .events import (
    Accepted,
    BookView,
    Cancelled,
    Event,
    Level,
    LevelUpdate,
    MassCancelled,
    MmpStatus,
    MmpUpdate,
    Modified,
    OrderLimits,
    OrderLimitsSet,
    OrderState,
    Rejected,
    StateChanged,
    Trade,
)

__all__ = ["Engine", "Instrument", "EngineStats"]

_LIMIT = lib.ENG_LIMIT
_COMMAND_ALIGN = ffi.alignof("struct eng_cmd")
# Commands per call into C when a batch's events are dropped: each chunk's
# events are overwritten while still in cache.
_BATCH_CHUNK = 4096


def _default_tif_codes() -> tuple[int, ...]:
    """DEFAULT_TIF in C codes, by order type code (0: no such order type)."""
    by_code = {code: TIF_CODE[DEFAULT_TIF[t]] for t, code in ORDER_TYPE_CODE.items()}
    return tuple(by_code.get(code, 0) for code in range(max(by_code) + 1))


# What the C half builds its results from, besides the Engine's own symbol
# table (see _attach in csrc/binding/calls.c).
_CALL_TABLES: dict[str, Any] = {
    "accepted": Accepted,
    "rejected": Rejected,
    "trade": Trade,
    "cancelled": Cancelled,
    "modified": Modified,
    "level_update": LevelUpdate,
    "state_changed": StateChanged,
    "mass_cancelled": MassCancelled,
    "mmp_update": MmpUpdate,
    "order_limits_set": OrderLimitsSet,
    "level": Level,
    "book_view": BookView,
    "order_state": OrderState,
    "no_memory": EngineMemoryError,
    "sides": SIDE_BY_CODE,
    "side_code": SIDE_CODE,
    "tif_code": TIF_CODE,
    "order_type_code": ORDER_TYPE_CODE,
    "stp_code": STP_CODE,
    "stps": STP_BY_CODE,
    "states": STATE_BY_CODE,
    # Reject code -> (reason, message), by index.
    "rejects": tuple(None if r is None else (r, REJECT_MESSAGES[r]) for r in REJECT_BY_CODE),
    "cancel_reasons": CANCEL_BY_CODE,
    "default_tif": _default_tif_codes(),
    # Why a call could not hold the engine, by Core._hold's code: what Core._holding raises.
    "refusals": (
        None,  # HELD
        (EngineClosed, "this Engine is closed"),
        (ConcurrentUseError,
         "this Engine is in use by a call in progress on this thread: code that a call runs (an argument's "
         "__index__ or __hash__, a garbage collection's callbacks) may not use its Engine"),
        (ConcurrentUseError, "this Engine is in use by another thread; an Engine is single-threaded"),
    ),
}
_API = int(ffi.cast("uintptr_t", lib.eng_api()))


class Instrument(NamedTuple):
    id: int
    symbol: str
    tick_size: int
    lot_size: int
    price_band: tuple[int, int] | None
    market_protection: int | None


class EngineStats(NamedTuple):
    commands: int
    accepted: int
    rejected: int
    trades: int
    cancelled: int
    modified: int
    events: int
    open_orders: int
    levels: int
    bytes_reserved: int  # C memory held by the engine, indexes included
    bytes_per_order_node: int
    index_bytes: int




def _read_stats(e: Any) -> EngineStats:
    st = ffi.new("struct eng_stats *")
    lib.eng_get_stats(e, st)
    return EngineStats(*(getattr(st, f) for f in EngineStats._fields))


def _check_resizable(out: bytearray) -> None:
    """Raise unless process_batch can resize ``out``: a bytearray with a
    memoryview (or a numpy array) of it alive cannot change size."""
    try:
        out.append(0)
    except BufferError:
        raise EngineBufferError(
            "out cannot be resized while a memoryview or numpy array of it is alive: release it, or pass another "
            "bytearray"
        ) from None
    except MemoryError:
        raise EngineMemoryError("out of memory growing out") from None
    del out[-1]


def _grow(out: bytearray, nbytes: int) -> None:
    """Double ``out``, or at least make room for ``nbytes`` more. Out of
    memory for that, the caller's slice assignment grows it by what it needs
    only."""
    try:
        out += bytes(max(nbytes, len(out)))
    except MemoryError:
        pass


def _joined(*parts: memoryview) -> bytes | None:
    """The concatenation of `parts`, or None if there is no memory for it."""
    try:
        return b"".join(parts)
    except MemoryError:
        return None


def _declined(verb: str) -> EngineError:
    """The C half refused a call whose arguments pass every check: a bug."""
    return EngineError(f"internal error: Engine.{verb} refused valid arguments; please report it")


class Engine(Core):
    """An order book engine for any number of instruments.

    >>> eng = Engine()
    >>> eng.add_instrument("ESZ6", tick_size=25, lot_size=1)
    0
    >>> eng.submit("ESZ6", "buy", 10, 450000, account=7)[0].order_id
    1

    With ``caller_order_ids=True`` the caller gives every new order its id:

    >>> gw = Engine(caller_order_ids=True)
    >>> gw.add_instrument("ESZ6", tick_size=25, lot_size=1)
    0
    >>> gw.submit("ESZ6", "buy", 10, 450000, account=7, order_id=9001)[0].order_id
    9001
    """

    __slots__ = ("_ptr", "_symbols", "_names", "_instruments", "_count", "_caller_ids", "__weakref__")

    def __init__(
        self, *, expected_orders: SupportsIndex = 0, level_updates: bool = False, caller_order_ids: bool = False
    ) -> None:
        """``expected_orders`` sizes the order index up front (it grows anyway);
        ``level_updates`` adds a LevelUpdate event after every change to a
        price level (market data); ``caller_order_ids`` makes ``submit`` take
        each new order's id from the caller (``order_id=``, unique among the
        open orders) instead of numbering orders 1, 2, 3, ..."""
        if hasattr(self, "_ptr"):
            # A second __init__ would free the engine a running call may be using.
            raise EngineError("an Engine is initialised once")
        cfg = ffi.new("struct eng_config *")
        cfg.expected_orders = _args.as_int("expected_orders", expected_orders, 0, _args.UINT32_MAX)
        cfg.level_events = _args.as_bool("level_updates", level_updates)
        self._caller_ids = _args.as_bool("caller_order_ids", caller_order_ids)
        cfg.caller_order_ids = self._caller_ids
        ptr = lib.eng_create(cfg)
        if ptr == ffi.NULL:
            raise EngineMemoryError("could not allocate an engine")
        self._ptr: Any = ffi.gc(ptr, lib.eng_destroy)
        self._symbols: dict[str, int] = {}
        self._names: list[str] = []
        self._instruments: list[Instrument] = []
        self._count = ffi.new("size_t *")
        self._attach(
            int(ffi.cast("uintptr_t", ptr)), _API, symbols=self._symbols, names=self._names, **_CALL_TABLES
        )

    # ---- lifetime ------------------------------------------------------------

    def close(self) -> None:
        """Free the C engine now (also done when the Engine is collected).
        Closing a closed Engine does nothing."""
        try:
            with self._holding(None):
                self._detach()
                ffi.release(self._ptr)
                self._ptr = None
        except EngineClosed:
            return

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            with self._holding(None):
                state = f"seq={lib.eng_seq(self._ptr)}"
        except EngineClosed:
            state = "closed"
        except ConcurrentUseError:
            state = "in use"
        return f"<Engine {len(self._names)} instruments, {state}>"

    @property
    def caller_order_ids(self) -> bool:
        """Whether new orders bring their ids (``Engine(caller_order_ids=True)``)."""
        return self._caller_ids

    def _exclusive(self) -> AbstractContextManager[Any]:
        """The C engine, held for a with-block (Core._holding, the verbs'
        flag): every method that uses it runs inside. Look user-given keys up
        inside, or before: their __hash__ may try to close the engine."""
        return self._holding(self._ptr)

    # ---- instruments ---------------------------------------------------------

    def add_instrument(
        self,
        symbol: str,
        *,
        tick_size: SupportsIndex = 1,
        lot_size: SupportsIndex = 1,
        price_band: tuple[SupportsIndex, SupportsIndex] | None = None,
        market_protection: SupportsIndex | None = None,
    ) -> int:
        """Add an instrument and return its number (0, 1, 2, ... in order)."""
        spec = ffi.new("struct eng_instrument_spec *")
        raw_symbol = _args.symbol_bytes(symbol)
        spec.symbol = raw_symbol
        # The symbol as a plain str: the tables hold no object with code of its own (__hash__, __eq__).
        name = raw_symbol.decode("ascii")
        spec.tick_size = _args.as_int("tick_size", tick_size, 1)
        spec.lot_size = _args.as_int("lot_size", lot_size, 1)
        band: tuple[int, int] | None = None
        if price_band is not None:
            if not isinstance(price_band, (tuple, list)) or len(price_band) != 2:
                raise InvalidArgumentType("price_band must be a (min_price, max_price) pair")
            lo = _args.as_int("price_band[0]", price_band[0], 1)
            hi = _args.as_int("price_band[1]", price_band[1], lo)
            spec.min_price, spec.max_price = lo, hi
            band = (lo, hi)
        protection = None if market_protection is None else _args.as_int("market_protection", market_protection, 0)
        spec.market_protection = -1 if protection is None else protection
        out = ffi.new("uint32_t *")
        with self._exclusive() as e:
            if name in self._symbols:
                raise DuplicateSymbol(f"an instrument {name!r} exists already")
            rc = lib.eng_add_instrument(e, spec, out)
            if rc == lib.ENG_NO_MEMORY:
                raise EngineMemoryError("could not allocate the instrument's book")
            if rc != lib.ENG_OK:
                raise EngineError(f"add_instrument: {ffi.string(lib.eng_strerror(rc)).decode()}")
            number = out[0]
            self._symbols[name] = number
            self._names.append(name)
            self._instruments.append(Instrument(number, name, spec.tick_size, spec.lot_size, band, protection))
            return number

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        return tuple(self._instruments)

    def instrument_id(self, symbol: str) -> int:
        """The number of the instrument `symbol` (for packed commands). A
        symbol that is not a str raises ``InvalidArgumentType``, an unknown
        one ``InvalidArgument``, here and in every method that takes one."""
        try:
            return self._symbols[symbol]
        except (KeyError, TypeError):
            # The type only now: the lookup of a str needs no check first.
            if not isinstance(symbol, str):
                raise InvalidArgumentType(f"symbol must be a str, not {type(symbol).__name__}") from None
            raise InvalidArgument(f"unknown symbol {symbol!r}") from None

    # ---- commands ------------------------------------------------------------
    #
    # submit, cancel, modify, order and book are Core's (csrc/binding/calls.c),
    # which runs every valid call and refuses any while the engine is closed or
    # held. It hands a call whose arguments it does not take to the method of
    # the same name with a leading underscore, with the same signature: these
    # find what is wrong and raise the error. They never run a command.

    def _submit(
        self,
        symbol: str,
        side: str,
        qty: int,
        price: int | None = None,
        *,
        tif: str | None = None,
        account: int = 0,
        client_order_id: str | None = None,
        order_type: str = "limit",
        post_only: bool = False,
        stp: str = "none",
        order_id: int | None = None,
    ) -> NoReturn:
        if not isinstance(symbol, str):
            raise InvalidArgumentType(f"symbol must be a str, not {type(symbol).__name__}")
        _args.as_code("side", side, SIDE_CODE)
        ot = _args.as_code("order_type", order_type, ORDER_TYPE_CODE)
        tf = _args.as_code("tif", DEFAULT_TIF[order_type] if tif is None else tif, TIF_CODE)
        _args.as_code("stp", stp, STP_CODE)
        _args.as_int("qty", qty)
        if price is not None:
            _args.as_int("price", price)
        _args.as_int("account", account, 0, _args.UINT32_MAX)
        if client_order_id is not None:
            _args.coid_bytes(client_order_id)
        _args.check_new_order_id(order_id, self._caller_ids)
        _args.check_order_shape(ot != _LIMIT, tf == lib.ENG_GTC, price, _args.as_bool("post_only", post_only))
        raise _declined("submit")

    def _cancel(
        self,
        order_id: int | None = None,
        *,
        account: int | None = None,
        client_order_id: str | None = None,
    ) -> NoReturn:
        _args.check_target(order_id, account, client_order_id)
        raise _declined("cancel")

    def _modify(
        self,
        order_id: int | None = None,
        qty: int | None = None,
        price: int | None = None,
        *,
        account: int | None = None,
        client_order_id: str | None = None,
    ) -> NoReturn:
        _args.check_target(order_id, account, client_order_id)
        if qty is None and price is None:
            raise InvalidArgument("modify needs a new qty, a new price or both")
        if qty is not None:
            _args.as_int("qty", qty)
        if price is not None:
            _args.as_int("price", price)
        raise _declined("modify")

    def _order(
        self,
        order_id: int | None = None,
        *,
        account: int | None = None,
        client_order_id: str | None = None,
    ) -> NoReturn:
        _args.check_target(order_id, account, client_order_id, min_order_id=0)
        raise _declined("order")

    def _book(self, symbol: str, depth: int = 10) -> NoReturn:
        if not isinstance(symbol, str):
            raise InvalidArgumentType(f"symbol must be a str, not {type(symbol).__name__}")
        _args.as_int("depth", depth, 0, _args.INT64_MAX)
        self.instrument_id(symbol)
        raise _declined("book")

    # A fallback's errors for arguments Python refuses (too many, an unknown
    # keyword) name the method called, not the fallback.
    _submit.__qualname__ = "Engine.submit"
    _cancel.__qualname__ = "Engine.cancel"
    _modify.__qualname__ = "Engine.modify"
    _order.__qualname__ = "Engine.order"
    _book.__qualname__ = "Engine.book"

    # ---- trading state -------------------------------------------------------

    def halt(self, symbol: str) -> list[Event]:
        """Halt an instrument: until ``resume``, new orders and modifies for it
        are rejected (``halted``); cancels go through. A sequenced command:
        returns its ``StateChanged`` event."""
        return self._set_state(symbol, lib.ENG_STATE_HALTED)

    def resume(self, symbol: str) -> list[Event]:
        """Open a halted instrument again (``StateChanged`` event)."""
        return self._set_state(symbol, lib.ENG_STATE_OPEN)

    def trading_state(self, symbol: str) -> TradingState:
        """Whether the instrument is open or halted."""
        inst = self.instrument_id(symbol)
        with self._exclusive() as e:
            state = lib.eng_instrument_state(e, inst)
        return TradingState.HALTED if state == lib.ENG_STATE_HALTED else TradingState.OPEN

    def set_order_limits(
        self, symbol: str, *, max_qty: SupportsIndex | None = None, max_notional: SupportsIndex | None = None
    ) -> list[Event]:
        """Set ``symbol``'s order limits (None or 0: no limit, as
        ``order_limits`` gives it): a new order's quantity at most ``max_qty``, a new limit order's price x quantity at
        most ``max_notional`` (a market order's quantity only), and the same
        for the price and open quantity a modify leaves; a modify that only
        lowers an order's quantity at its price always goes. Over them:
        ``Rejected`` with ``max_qty_exceeded`` or ``max_notional_exceeded``.
        Orders already resting stay. A sequenced command: returns its
        ``OrderLimitsSet`` event."""
        return self._run(
            type=lib.ENG_CMD_SET_LIMITS,
            instrument=self.instrument_id(symbol),
            qty=0 if max_qty is None else _args.as_int("max_qty", max_qty, 0),
            price=0 if max_notional is None else _args.as_int("max_notional", max_notional, 0),
        )

    def order_limits(self, symbol: str) -> OrderLimits:
        """``symbol``'s order limits now (0: none)."""
        out = ffi.new("struct eng_order_limits *")
        inst = self.instrument_id(symbol)
        with self._exclusive() as e:
            lib.eng_get_order_limits(e, inst, out)
        return OrderLimits(out.max_qty, out.max_notional)

    def _set_state(self, symbol: str, state: int) -> list[Event]:
        return self._run(type=lib.ENG_CMD_SET_STATE, instrument=self.instrument_id(symbol), qty=state)

    def _run(self, **fields: int) -> list[Event]:
        """Process one command given by its struct eng_cmd fields (the ones
        the verbs with fast paths of their own do not carry)."""
        with self._exclusive() as e:
            cmd = ffi.new("struct eng_cmd *", fields)
            lib.eng_clear_events(e)
            n = lib.eng_process(e, cmd)
            if n <= 0:
                raise EngineMemoryError("the engine could not grow its event buffer")
            raw = memoryview(ffi.buffer(lib.eng_events(e, self._count), n * EVENT_SIZE))
            events = decode_events(raw, self._names, REJECT_BY_CODE, CANCEL_BY_CODE)
            lib.eng_clear_events(e)
            return events

    # ---- account-wide: cancel all, market-maker protection --------------------

    def cancel_all(
        self,
        account: SupportsIndex | None = None,
        symbol: str | None = None,
        *,
        all_accounts: bool = False,
        dead_man: bool = False,
    ) -> list[Event]:
        """Cancel every open order of ``account`` on instrument ``symbol``, or
        on every instrument (None): one sequenced command whose events are a
        ``Cancelled`` per order (book order: instruments by number, bids then
        asks, best level first, oldest first) and a ``MassCancelled`` last.
        ``all_accounts=True`` (and no account): every account's open orders,
        in one walk of the books (a venue's kill switch); its
        ``MassCancelled`` has ``account`` None.
        ``dead_man``: the account's dead-man switch fired; the orders leave
        with reason ``dead_man`` instead of ``user`` (not with
        ``all_accounts``)."""
        acct, flags = _args.cancel_all_scope(account, all_accounts, dead_man)
        if symbol is None:
            return self._run(type=lib.ENG_CMD_CANCEL_ALL, account=acct, flags=flags | lib.ENG_CMD_F_ALL_INSTRUMENTS)
        return self._run(type=lib.ENG_CMD_CANCEL_ALL, account=acct, flags=flags, instrument=self.instrument_id(symbol))

    def set_mmp(
        self, account: SupportsIndex, symbol: str, qty_limit: SupportsIndex, window: SupportsIndex = 0
    ) -> list[Event]:
        """Set ``account``'s market-maker protection on ``symbol``: once the
        quantity it fills there (as maker or taker) within ``window`` goes over
        ``qty_limit``, the engine cancels its resting orders on the instrument
        and refuses its new ones (``mmp``) until ``reset_mmp``. ``qty_limit`` 0
        turns protection off. ``window`` is in the commands' ``ts`` units (the
        server stamps each command with its arrival time in ns; in-process only
        packed commands carry a ts, the other verbs' ts is 0); 0 means the
        window lasts until a reset. Setting also resets. Returns the
        ``MmpUpdate`` event (or a ``Rejected``)."""
        return self._run(
            type=lib.ENG_CMD_SET_MMP,
            instrument=self.instrument_id(symbol),
            account=_args.as_int("account", account, 0, _args.UINT32_MAX),
            qty=_args.as_int("qty_limit", qty_limit, 0),
            price=_args.as_int("window", window, 0),
        )

    def reset_mmp(self, account: SupportsIndex, symbol: str) -> list[Event]:
        """Lift ``account``'s tripped protection on ``symbol`` and start a new
        window (``MmpUpdate`` event)."""
        return self._run(
            type=lib.ENG_CMD_RESET_MMP,
            instrument=self.instrument_id(symbol),
            account=_args.as_int("account", account, 0, _args.UINT32_MAX),
        )

    def mmp(self, account: SupportsIndex, symbol: str) -> MmpStatus | None:
        """``account``'s protection on ``symbol`` now, or None if it has none."""
        info = ffi.new("struct eng_mmp_info *")
        acct = _args.as_int("account", account, 0, _args.UINT32_MAX)
        inst = self.instrument_id(symbol)
        with self._exclusive() as e:
            found = lib.eng_get_mmp(e, acct, inst, info)
        if not found:
            return None
        return MmpStatus(
            acct, symbol, info.qty_limit, info.window, info.filled, info.window_start, bool(info.tripped)
        )

    # ---- batch ---------------------------------------------------------------

    def process_batch(
        self, commands: Any, *, collect_events: bool = True, out: bytearray | None = None
    ) -> BatchResult:
        """Run a buffer of packed commands through the engine in C.

        ``commands``: bytes, bytearray, memoryview or a numpy array of
        ``pyengine.COMMAND_DTYPE``: contiguous 64-byte ``struct eng_cmd``
        records (see ``pyengine.batch``). Returns the events, packed, with
        counts:

        - by default the events are a new buffer handed over from C without a
          copy;
        - with ``out``, a bytearray reused from call to call, the events are
          written into it (it is resized to fit) and ``events`` is ``out``
          itself; reusing memory that is already mapped is the fastest way to
          replay many batches. No memoryview or numpy array of ``out`` may be
          alive: that raises ``EngineBufferError`` before any command runs;
        - ``collect_events=False`` keeps only the counts (and takes no ``out``).

        If the commands cannot all run, or their events cannot all be kept
        (out of memory), the error (``EngineMemoryError``,
        ``EngineBufferError``) carries in ``partial`` the ``BatchResult`` of
        the commands that ran; see docs/batch.md.
        """
        collect = _args.as_bool("collect_events", collect_events)
        if out is not None and not isinstance(out, bytearray):
            raise InvalidArgumentType(f"out must be a bytearray, not {type(out).__name__}")
        if out is not None and not collect:
            raise InvalidArgument("out is where the events go, collect_events=False keeps none: give one or the other")
        with self._exclusive() as e:
            try:
                view = memoryview(commands)
            except TypeError:
                raise InvalidArgumentType(
                    f"commands must support the buffer protocol, not {type(commands).__name__}"
                ) from None
            if not view.c_contiguous:
                raise InvalidArgument("commands must be a contiguous buffer")
            if view.nbytes % COMMAND_SIZE:
                raise InvalidArgument(f"commands must be a whole number of {COMMAND_SIZE}-byte records")
            if out is not None:
                _check_resizable(out)
            total = view.nbytes // COMMAND_SIZE
            cmds = ffi.cast("const struct eng_cmd *", ffi.from_buffer(view))
            if total and int(ffi.cast("uintptr_t", cmds)) % _COMMAND_ALIGN:
                # The core reads the records in place as structs: reading them misaligned is undefined behaviour.
                try:
                    cmds = ffi.new("struct eng_cmd[]", total)
                except MemoryError:
                    raise EngineMemoryError("out of memory copying misaligned commands") from None
                ffi.memmove(cmds, view, view.nbytes)
            before = _read_stats(e)
            lib.eng_clear_events(e)
            lost: BaseException | None = None  # what kept the events of commands that ran from the caller
            if out is not None:
                done, events, lost = self._batch_into(e, cmds, total, out)
            elif collect:
                # One call; the events accumulate in the engine's buffer,
                # which is then handed over to Python without a copy.
                done = lib.eng_process_batch(e, cmds, total)
                ptr = lib.eng_take_events(e, self._count)
                if ptr == ffi.NULL:
                    events, lost = None, MemoryError()
                else:
                    events = ffi.buffer(ffi.gc(ptr, lib.eng_free_events), self._count[0] * EVENT_SIZE)
            else:
                # In chunks, dropping each chunk's events while they are in cache.
                done = 0
                while done < total:
                    n = min(_BATCH_CHUNK, total - done)
                    got = lib.eng_process_batch(e, cmds + done, n)
                    lib.eng_clear_events(e)
                    done += got
                    if got < n:
                        break
                events = b""
            lib.eng_clear_events(e)
            after = _read_stats(e)
        result = BatchResult(
            events=events,
            commands=done,
            event_count=after.events - before.events,
            accepted=after.accepted - before.accepted,
            rejected=after.rejected - before.rejected,
            trades=after.trades - before.trades,
            cancelled=after.cancelled - before.cancelled,
            modified=after.modified - before.modified,
        )
        # What was processed stays processed: its counts and events go with the error.
        err: EngineMemoryError | EngineBufferError | None = None
        if isinstance(lost, BufferError):
            err = EngineBufferError(
                f"out could not be resized after {done} of {total} commands (a memoryview or numpy array of it "
                "was made meanwhile)"
            )
        elif lost is not None:
            err = EngineMemoryError(f"out of memory keeping the events of {done} of {total} commands")
        elif done < total:
            err = EngineMemoryError(f"out of memory after {done} of {total} commands")
        if err is None:
            return result
        err.partial = result
        raise err from lost

    def _batch_into(
        self, e: Any, cmds: Any, total: int, out: bytearray
    ) -> tuple[int, Any, BaseException | None]:
        """process_batch into a caller's bytearray: in chunks whose events are
        copied out while still in cache. Returns the commands processed, their
        events (``out``) and None; or, if ``out`` could not take them (it
        could not be resized), what the caller gets instead: a copy of all
        their events (None if there was no memory for it), and the error."""
        done = pos = 0
        while done < total:
            n = min(_BATCH_CHUNK, total - done)
            got = lib.eng_process_batch(e, cmds + done, n)
            done += got
            chunk = memoryview(ffi.buffer(lib.eng_events(e, self._count), self._count[0] * EVENT_SIZE))
            try:
                if pos + chunk.nbytes > len(out):
                    _grow(out, chunk.nbytes)
                out[pos : pos + chunk.nbytes] = chunk
            except (MemoryError, BufferError) as exc:
                return done, _joined(memoryview(out)[:pos], chunk), exc
            lib.eng_clear_events(e)
            pos += chunk.nbytes
            if got < n:
                break
        try:
            del out[pos:]
        except (MemoryError, BufferError) as exc:
            return done, _joined(memoryview(out)[:pos]), exc
        return done, out, None

    def decode_events(self, raw: Any) -> list[Event]:
        """Packed event records (``BatchResult.events``, or a numpy array of
        ``pyengine.EVENT_DTYPE``) as event objects. A record with a type,
        instrument, side, reason or trading state this engine does not have
        raises ``InvalidArgument`` (docs/batch.md)."""
        return decode_events(raw, self._names, REJECT_BY_CODE, CANCEL_BY_CODE)

    # ---- views ---------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The sequence number of the last command processed."""
        with self._exclusive() as e:
            return int(lib.eng_seq(e))

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Every open order (of one instrument, or all), in book order: bids
        best first then asks best first, oldest first within a level."""
        only = None if symbol is None else self.instrument_id(symbol)
        page = 4096
        buf = ffi.new("struct eng_order_info[]", page)
        out: list[OrderState] = []
        with self._exclusive() as e:
            insts: Iterable[int] = range(len(self._names)) if only is None else (only,)
            for inst in insts:
                for side in (lib.ENG_BUY, lib.ENG_SELL):
                    skip = 0
                    while True:
                        n = lib.eng_book_orders(e, inst, side, skip, buf, page)
                        out.extend(self._order_state(buf[i]) for i in range(n))
                        if n < page:
                            break
                        skip += n
        return out

    def _order_state(self, info: Any) -> OrderState:
        coid = ffi.string(info.coid, 16)
        return OrderState(
            info.order_id,
            self._names[info.instrument],
            SIDE_BY_CODE[info.side],
            info.price,
            info.qty,
            info.account,
            coid.decode("ascii") if coid else None,
            bool(info.post_only),
            STP_BY_CODE[info.stp],
        )

    def stats(self) -> EngineStats:
        with self._exclusive() as e:
            return _read_stats(e)

    def state_hash(self) -> int:
        """A 64-bit hash of the whole matching state (instruments, every
        resting order in priority order, the id counters and seq). Engines fed
        the same commands have equal hashes; so do a server's recovered state
        and ``pyengine-replay``'s."""
        with self._exclusive() as e:
            return int(lib.eng_state_hash(e))

    def verify(self) -> None:
        """Check every invariant of every book and index; raise InvariantError
        naming the first that is broken."""
        why = ffi.new("char[]", 256)
        with self._exclusive() as e:
            rc = lib.eng_verify(e, why, 256)
        if rc != lib.ENG_OK:
            raise InvariantError(ffi.string(why).decode())
