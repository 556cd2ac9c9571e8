"""The server's per-order path in C (csrc/binding/server.h); the Python it
calls is named in pyengine/server/seam.py."""

from collections.abc import Callable
from typing import Any, Literal

from _typeshed import ReadableBuffer

from .server.seam import IntakeEvents, PendingRequest, PollerEvents, RouterEvents

SIDE_CODES: dict[str, int]
ORDER_TYPE_CODES: dict[str, int]
TIF_CODES: dict[str, int]
STP_CODES: dict[str, int]

class FormError(ValueError):
    """A per-order request that is not well-formed: args (code, message)."""

def read_order(kind: str, message: dict[str, Any], /) -> tuple[Any, ...]: ...
def stage_times(records: bytes, width: int, start: int, end: int, /) -> bytes:
    """The times from point start to end of every record, sorted (native int64)."""

class Link:
    """One session's per-order state."""

    sid: int
    admin: bool
    closed: bool
    session: Any  # the Session it was built with
    last_read: float  # when its socket last gave bytes (time.monotonic()'s clock)
    unsent: int
    writing: bool
    def __init__(self, sid: int, session: Any, rate: float, burst: float, *, fd: int = -1,
                 max_unsent: int = 0) -> None: ...
    @property
    def account(self) -> int | None: ...
    @property
    def busy(self) -> bool: ...
    @property
    def order_count(self) -> int: ...
    @property
    def pending_count(self) -> int: ...
    account_shared: bool
    def login(self, account: int, admin: bool, /) -> None: ...
    def close(self) -> None: ...
    def tag(self, kind: str, req_id: Any, extra: Any = None, /) -> int: ...
    def take_token(self, now: float | None = None, /) -> bool: ...
    def spend(self, tokens: float, now: float | None = None, /) -> None: ...
    def orders(self) -> dict[int, tuple[int, str | None]]: ...
    def order_ids(self, instrument: int | None = None, /) -> list[int]: ...
    def pending(self) -> dict[int, PendingRequest]: ...
    def write(self) -> int:
        """Send what the socket takes now: the bytes left. OSError if the send fails."""
    def take_output(self) -> bytes: ...
    def drop_output(self) -> None: ...
    def forget_socket(self) -> None: ...

OUT_WAIT: int
OUT_SLOW: int

class Ledger:
    """The server's per-order bookkeeping."""

    def attach(self, link: Link, /) -> None: ...
    def detach(self, sid: int, /) -> None: ...
    def owner(self, order_id: int, /) -> Link | None: ...
    def order(self, order_id: int, /) -> tuple[int, str | None] | None: ...
    def verify(self) -> list[int]: ...
    def own(self, link: Link, order_id: int, instrument: int, client_order_id: str | None, /) -> None: ...
    def forget(self, link: Link, order_id: int, /) -> None: ...
    def release(self, link: Link, /) -> dict[int, tuple[int, str | None]]: ...
    def owned(self, account: int | None, /) -> list[tuple[int, int]]: ...
    def open(self, account: int, /) -> int: ...
    def in_flight(self, account: int, /) -> int: ...
    def count_open(self, account: int, n: int, /) -> None: ...
    known_order_id: int
    """The highest order id the server knows (recovered, or in an accepted order routed); setting it only
    raises it."""
    @property
    def catch_up_seq(self) -> int:
        """catch_up()'s seq until it is routed, then 0."""
    def catch_up(self, seq: int, /) -> None:
        """The engine answered commands up to `seq` not routed yet: until the event of that seq is routed,
        any order id may be one a client was told of (0: none)."""
    def meters(self) -> dict[str, Any]: ...
    def send(self, link: Link, frame: bytes, /) -> None: ...
    def flush(self) -> list[tuple[Any, int]] | None:
        """Write every session's output: None, or (session, OUT_WAIT | OUT_SLOW | errno) to see to."""

class CommandBuffer:
    """struct runner_cmd records queued (a writable buffer of `capacity` records)."""

    capacity: int
    queued: int
    sent: int
    held: bool  # a flush waiting for room holds the records: push() pushes none
    pushes: int  # ring operations that put records in
    def __init__(self, capacity: int) -> None: ...
    @property
    def full(self) -> bool: ...
    def reserve(self) -> int: ...
    def unreserve(self) -> None: ...
    def attach(self, runner: int, api: int, ledger: Ledger, /) -> None:
        """Push to the runner at address `runner` through the struct runner_api at `api`."""
    def detach(self) -> None: ...
    def push(self) -> bool:
        """Push what fits, unless held: True when every queued record is in."""
    def submit(self) -> int:
        """Push what fits, held or not: how many records went in."""
    def __buffer__(self, flags: int, /) -> memoryview: ...

class Inbox:
    """One session's received bytes, split into frames (csrc/binding/inbox.c)."""

    held: int
    def __init__(self, max_frame: int, error: type[Exception]) -> None: ...
    def read(self, fd: int, /) -> int:
        """One read of fd into the inbox: bytes read, 0 when the peer closed; OSError as os.read."""
    def feed(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def frames(self) -> list[bytes]:
        """The whole frames held, taken; a broken header raises once the frames before it are taken.
        RuntimeError while an Intake drains the inbox."""
    def close(self) -> None:
        """Raises error (truncated_frame) if bytes of a frame are left over."""

class Intake:
    def __init__(
        self,
        *,
        ledger: Ledger,
        commands: CommandBuffer,
        events: IntakeEvents,
        instruments: dict[str, int],
        max_open: int,
        loads: Callable[[bytes], Any],
        turn_after: float = 0.0,
    ) -> None: ...
    def take(self, link: Link, frame: bytes, /) -> None | tuple[Any] | Literal[False]:
        """None: done; (message,): Python's to carry out; False: the buffer is full, nothing done."""
    def drain(self, link: Link, inbox: Inbox, /) -> None | tuple[Any] | bool:
        """take() for each whole frame in inbox, until None (none left), (message,), False, or True
        (it ran turn_after seconds, having taken a frame at least, and frames are left)."""

class Poller:
    """The sessions' sockets, read a loop turn at a time (csrc/binding/poller.c)."""

    watched: int
    turns: int
    reads: int
    spins: int
    spinning: bool
    def __init__(self, intake: Intake, events: PollerEvents) -> None: ...
    after_push: Callable[[], object] | None
    """Called at each turn's end, after the push and before the output is written."""
    def turn(self) -> None:
        """Read every ready socket once, carry out its frames, push, flush; never raises."""
    def watch(self, link: Link, inbox: Inbox, /) -> None: ...
    def unwatch(self, link: Link, /) -> bool: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def spin_for(self, ns: int, switch: Callable[[bool], object] | None, /) -> None:
        """Keep the loop polling for ns after each turn that read: switch(True) to start, switch(False) to stop."""
    def spin(self) -> None:
        """The spinning loop's idle callback: yield the CPU, or switch(False) once the time has passed."""

class Router:
    trades: int
    orders: int
    def __init__(
        self,
        *,
        ledger: Ledger,
        events: RouterEvents,
        market_data: tuple[Any, Any, Any, Any],
        symbols_json: tuple[bytes, ...],
        sides_json: tuple[bytes, ...],
        reasons_json: tuple[bytes, ...],
        dumps: Callable[[Any], bytes],
        status: OrderStatus | None = None,
    ) -> None: ...
    batch: int
    """The most events route_ready takes at a time."""
    @property
    def journal_error(self) -> int:
        """The attached runner's journal error: 0 while it works, else its errno."""
    def route(self, events: Any, n: int, /) -> None: ...
    def attach(self, runner: int, api: int, flush_market_data: Callable[[], object], /) -> None:
        """Drain the runner at address `runner` through the runner_api at `api`."""
    def detach(self) -> None: ...
    def route_ready(self) -> int:
        """Take up to `batch` events from the runner and route them; 0: none, the wake-up armed
        (after a 0, look at journal_error before waiting: the runner's failure wakes without an event).
        RuntimeError when called from the Python its own routing calls."""

class LatencyTrace:
    """Stamps of one new order in `every` on its way through the server (csrc/binding/trace.c)."""

    every: int
    traced: int
    completed: int
    lost: int
    skipped: int
    points: tuple[str, ...]
    def __init__(self, ledger: Ledger, every: int) -> None: ...
    def read(self) -> None: ...
    def records(self) -> bytes: ...

class OrderRecord:
    """One order's status (csrc/binding/status.c)."""

    order_id: int
    last_seq: int | None
    leaves: int
    instrument: int
    account: int
    side: int
    state: int  # 0 open, 1 filled, 2 cancelled
    reason: int
    client_order_id: str | None
    priority: int | None
    filled: int | None
    qty: int | None
    price: int | None

class OrderStatus:
    """Every account's open orders and its last ``keep`` finished ones."""

    keep: int
    def __init__(self, *, keep: int, coid_key_bits: int = 64) -> None: ...
    def recovered(self, order_id: int, account: int, instrument: int, side: int, price: int, leaves: int,
                  client_order_id: str | None, /) -> None: ...
    def apply_events(self, events: ReadableBuffer, /) -> None: ...
    def open_orders(self, account: int, /) -> list[OrderRecord]: ...
    def finished_orders(self, account: int, /) -> list[OrderRecord]: ...
    def find(self, account: int, order_id: int, /) -> OrderRecord | None: ...
    def find_coid(self, account: int, client_order_id: str, /) -> OrderRecord | None: ...
    def verify(self) -> list[int]:
        """Check the records' invariants (AssertionError naming what is wrong); the number of open records in each
        shard of their index."""
