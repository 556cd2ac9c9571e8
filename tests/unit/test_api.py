"""The shape of the public API: the same verb takes the same arguments in
every interface, and the package's namespace is its public API."""

from __future__ import annotations

import importlib.util
import inspect
import re
import socket
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import pyengine
import pyengine.batch
import pyengine.testing
from pyengine import Engine, pack_cancel, pack_modify, pack_new_order
from pyengine.batch import CommandType
from pyengine.client import Client
from pyengine.errors import InvalidArgumentType
from pyengine.testing import ReferenceEngine

# The modules a user imports by name (pyengine.server's are the server's own).
PUBLIC_MODULES = [
    "pyengine.batch",
    "pyengine.client",
    "pyengine.engine",
    "pyengine.enums",
    "pyengine.errors",
    "pyengine.events",
    "pyengine.testing.reference",
    "pyengine.testing.strategies",
    "pyengine.server.protocol",
]


def params(fn: Callable[..., Any], drop: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter but self and `drop`."""
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.name != "self" and p.name not in drop
    ]


@pytest.mark.parametrize(
    ("engine_verb", "client_verb"),
    [(Engine.submit, Client.new_order), (Engine.cancel, Client.cancel), (Engine.modify, Client.modify)],
)
def test_client_verbs_take_the_engines_arguments(engine_verb: Any, client_verb: Any) -> None:
    """A client acts as the account it logged in as: no `account` argument;
    the server numbers the orders: no `order_id` of a new order (that is for
    an Engine with caller order ids); everything else as Engine's, in the
    same order, with the same defaults."""
    drop = ("account", "order_id") if engine_verb is Engine.submit else ("account",)
    assert params(client_verb) == params(engine_verb, drop=drop)


@pytest.mark.parametrize("verb", ["submit", "cancel", "modify", "order", "set_order_limits", "order_limits"])
def test_reference_engine_takes_the_engines_arguments(verb: str) -> None:
    assert params(getattr(ReferenceEngine, verb)) == params(getattr(Engine, verb))


def test_c_fast_paths_take_the_python_paths_arguments() -> None:
    assert params(Engine.submit) == params(Engine._submit)
    assert params(Engine.cancel) == params(Engine._cancel)


@pytest.mark.parametrize(
    ("pack", "verb"), [(pack_new_order, Engine.submit), (pack_cancel, Engine.cancel), (pack_modify, Engine.modify)]
)
def test_packers_take_the_engines_arguments(pack: Any, verb: Any) -> None:
    """As Engine's, the instrument by number rather than symbol, and a ts."""
    packed = params(pack, drop=("ts",))
    engine = params(verb)
    if engine[0][0] == "symbol":
        engine[0] = ("instrument", *engine[0][1:])
        packed[0] = (packed[0][0], packed[0][1], inspect.Parameter.empty)
    assert packed == engine


class _Listener:
    """A loopback TCP port that reads the frames a Client sends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conn: socket.socket | None = None

    def sent(self) -> dict[str, Any]:
        if self.conn is None:
            self.conn, _ = self.sock.accept()
        head = self._exactly(4)
        return orjson.loads(self._exactly(int.from_bytes(head, "big")))  # type: ignore[no-any-return]

    def _exactly(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            assert chunk, "the client closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.sock.close()


def test_client_takes_arguments_as_engine_does() -> None:
    wire = _Listener()
    with Client("127.0.0.1", wire.port) as c:
        c.cancel(7)
        assert wire.sent() == {"type": "cancel", "order_id": 7, "req_id": 1}
        c.modify(7, 3)
        assert wire.sent() == {"type": "modify", "order_id": 7, "qty": 3, "req_id": 2}
        c.modify(client_order_id="b", price=810)
        assert wire.sent() == {"type": "modify", "client_order_id": "b", "price": 810, "req_id": 3}
        c.new_order("ESZ6", "sell", 2, order_type="market")
        assert wire.sent() == {
            "type": "new_order", "symbol": "ESZ6", "side": "sell", "qty": 2, "order_type": "market",
            "post_only": False, "stp": "none", "req_id": 4,
        }  # no tif: the server's default for a market order, ioc
        with pytest.raises(TypeError):
            c.new_order("ESZ6", "buy", 1, 100, bogus=1)  # type: ignore[call-arg]
    wire.close()


@pytest.mark.parametrize("package", [pyengine, pyengine.testing], ids=lambda p: p.__name__)
def test_a_packages_namespace_is_its_public_api(package: Any) -> None:
    """dir() lists what __all__ does (and dunder names), not `annotations`,
    `Any` or the submodules importing binds; every listed name resolves."""
    names = {n for n in dir(package) if not (n.startswith("__") and n.endswith("__"))}
    assert names == set(package.__all__)
    assert not hasattr(package, "annotations") and not hasattr(package, "Any")
    for name in package.__all__:
        getattr(package, name)


def test_the_testing_package_exports_every_kind_of_command() -> None:
    from pyengine.testing import strategies

    kinds = typing.get_args(strategies.Command)
    assert len(kinds) >= 8
    for kind in kinds:
        assert kind.__name__ in pyengine.testing.__all__ and getattr(pyengine.testing, kind.__name__) is kind


def test_the_testing_package_says_what_its_strategies_need_without_hypothesis() -> None:
    code = ("import sys; sys.modules['hypothesis'] = None\n"  # an import of hypothesis fails
            "from pyengine.testing import ReferenceEngine\n"
            "from pyengine.testing import NewOrder\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.splitlines()[-1] == (
        'ModuleNotFoundError: pyengine.testing.NewOrder needs Hypothesis: pip install "pyengine[testing]"')


def test_the_package_namespace_needs_no_numpy() -> None:
    """numpy is optional: without it the dtypes are not listed, and a star
    import, help() and inspect walk the rest; with it they are listed."""
    code = ("import sys; sys.modules['numpy'] = None\n"  # an import of numpy fails
            "import inspect, pydoc, pyengine\n"
            "from pyengine import *\n"
            "pydoc.render_doc(pyengine); inspect.getmembers(pyengine)\n"
            "assert 'COMMAND_DTYPE' not in pyengine.__all__ and 'Engine' in dir(pyengine)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    if importlib.util.find_spec("numpy") is not None:
        assert {"COMMAND_DTYPE", "EVENT_DTYPE"} <= set(pyengine.__all__)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_list_every_public_class_and_function_they_define(name: str) -> None:
    module = importlib.import_module(name)
    defined = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v)) and v.__module__ == name
    }
    assert defined <= set(module.__all__)
    assert all(hasattr(module, n) for n in module.__all__)


@pytest.mark.parametrize("symbol", ["A B", " A", "A\t", "", "S" * 16, "é"])
def test_both_engines_refuse_the_same_symbols(symbol: str) -> None:
    """docs/semantics.md: 1 to 15 bytes of printable ASCII without spaces."""
    for engine in (Engine(), ReferenceEngine()):
        with pytest.raises(ValueError):
            engine.add_instrument(symbol)


def test_both_engines_take_every_printable_character_but_space() -> None:
    for engine in (Engine(), ReferenceEngine()):
        assert engine.add_instrument("!~" + "".join(chr(c) for c in range(0x21, 0x7F, 8))) == 0


def test_the_semantics_count_and_name_every_command() -> None:
    """docs/semantics.md says how many commands the engine has, and names
    each: as many as the core's command types."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "semantics.md").read_text()
    found = re.search(r"There are (\w+) commands:(.*?)\.\s+Every\s+command", text, re.S)
    assert found, "docs/semantics.md no longer says how many commands there are"
    numbers = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    assert numbers.index(found.group(1)) + 1 == len(CommandType)
    assert len(re.findall(r"\*\*[^*]+\*\*", found.group(2))) == len(CommandType)


# Every public call that takes arguments, once per way of calling it, with valid arguments by keyword: the Engine's
# methods, its constructor ("Engine") and the packers of pyengine.batch ("pack_..."). True: on an Engine made with
# caller_order_ids=True.
_ORDER = dict(
    symbol="X", side="buy", qty=2, price=100, tif="gtc", account=1, client_order_id="c", order_type="limit",
    post_only=False, stp="none",
)
_PACKED_ORDER = {("instrument" if k == "symbol" else k): (0 if k == "symbol" else v) for k, v in _ORDER.items()}
_CALLS: list[tuple[str, dict[str, Any], bool]] = [
    ("submit", _ORDER, False),
    ("submit", _ORDER | {"order_id": 9}, True),
    ("cancel", dict(order_id=1, account=1), False),
    ("cancel", dict(client_order_id="c", account=1), False),
    ("modify", dict(order_id=1, qty=2, price=100, account=1), False),
    ("modify", dict(client_order_id="c", account=1, qty=2), False),
    ("order", dict(order_id=1, account=1), False),
    ("order", dict(client_order_id="c", account=1), False),
    ("book", dict(symbol="X", depth=5), False),
    ("instrument_id", dict(symbol="X"), False),
    ("add_instrument", dict(symbol="Y", tick_size=1, lot_size=1, price_band=(1, 1000), market_protection=5), False),
    ("halt", dict(symbol="X"), False),
    ("resume", dict(symbol="X"), False),
    ("trading_state", dict(symbol="X"), False),
    ("set_order_limits", dict(symbol="X", max_qty=10, max_notional=1000), False),
    ("order_limits", dict(symbol="X"), False),
    ("cancel_all", dict(account=1, symbol="X", dead_man=False), False),
    ("set_mmp", dict(account=1, symbol="X", qty_limit=5, window=0), False),
    ("reset_mmp", dict(account=1, symbol="X"), False),
    ("mmp", dict(account=1, symbol="X"), False),
    ("open_orders", dict(symbol="X"), False),
    ("process_batch", dict(commands=b"", collect_events=True, out=bytearray()), False),
    ("decode_events", dict(raw=b""), False),
    ("Engine", dict(expected_orders=0, level_updates=False, caller_order_ids=False), False),
    ("pack_new_order", _PACKED_ORDER | {"order_id": 9, "ts": 0}, False),
    ("pack_cancel", dict(order_id=1, account=1, ts=0), False),
    ("pack_cancel", dict(client_order_id="c", account=1), False),
    ("pack_modify", dict(order_id=1, qty=2, price=100, account=1, ts=0), False),
    ("pack_set_state", dict(instrument=0, state="halted", ts=0), False),
    ("pack_cancel_all", dict(account=1, instrument=0, dead_man=False, ts=0), False),
    ("pack_set_mmp", dict(account=1, instrument=0, qty_limit=5, window=0, ts=0), False),
    ("pack_reset_mmp", dict(account=1, instrument=0, ts=0), False),
    ("pack_set_order_limits", dict(instrument=0, max_qty=10, max_notional=1000, ts=0), False),
]


def _call(name: str, caller_ids: bool) -> tuple[Callable[..., Any], Engine | None]:
    """The callable named `name` and the Engine it works on, if any."""
    if name == "Engine":
        return Engine, None
    if name.startswith("pack_"):
        return getattr(pyengine.batch, name), None
    eng = Engine(caller_order_ids=caller_ids)
    eng.add_instrument("X")
    return getattr(eng, name), eng


def _wrong_types(value: Any, default: Any) -> list[Any]:
    """Values of a type other than that of `value`; None too, unless it is the default."""
    if type(value) is bool:
        wrong: list[Any] = [1, "yes"]
    elif type(value) is int:
        wrong = [2.0, "2", True]
    elif type(value) is str:
        wrong = [5, b"x"]
    elif type(value) is tuple:
        wrong = [5, (1.0, 1000)]
    elif type(value) is bytearray:
        wrong = [b"", 5]
    else:
        wrong = [5, "x"]  # a buffer
    return wrong if default is None else [*wrong, None]


def _wrong_typed_calls() -> list[Any]:
    cases = []
    for name, kwargs, caller_ids in _CALLS:
        fn, _ = _call(name, caller_ids)
        defaults = {p.name: p.default for p in inspect.signature(fn).parameters.values()}
        for arg, value in kwargs.items():
            # pack_set_state takes a state's str or its code
            wrong_values = [b"halted", 1.0, None] if arg == "state" else _wrong_types(value, defaults[arg])
            for wrong in wrong_values:
                cases.append(pytest.param(name, kwargs, caller_ids, arg, wrong, id=f"{name}-{arg}={wrong!r}"))
    return cases


@pytest.mark.parametrize(("name", "kwargs", "caller_ids"), [pytest.param(*c, id=c[0]) for c in _CALLS])
def test_the_calls_of_the_type_checks_are_valid(name: str, kwargs: dict[str, Any], caller_ids: bool) -> None:
    fn, _ = _call(name, caller_ids)
    fn(**kwargs)


@pytest.mark.parametrize(("name", "kwargs", "caller_ids", "arg", "wrong"), _wrong_typed_calls())
def test_an_argument_of_a_wrong_type_raises_invalid_argument_type_naming_it(
    name: str, kwargs: dict[str, Any], caller_ids: bool, arg: str, wrong: Any
) -> None:
    """One rule for the whole API (pyengine.errors): an argument of a wrong
    type raises InvalidArgumentType, a TypeError, whose message starts with
    the argument's name; nothing runs."""
    fn, eng = _call(name, caller_ids)
    with pytest.raises(InvalidArgumentType) as info:
        fn(**(kwargs | {arg: wrong}))
    assert str(info.value).startswith(arg), str(info.value)
    if eng is not None:
        assert eng.seq == 0
        assert [i.symbol for i in eng.instruments] == ["X"]
