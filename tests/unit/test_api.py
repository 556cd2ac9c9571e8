"""The shape of the public API: the same verb takes the same arguments in
every interface, and the package's namespace is its public API."""

from __future__ import annotations

import importlib
import inspect
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import pyengine
import pyengine.testing
from pyengine import Engine, pack_cancel, pack_modify, pack_new_order
from pyengine.batch import CommandType
from pyengine.client import Client
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
