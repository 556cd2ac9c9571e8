"""Every method of an Engine that uses the C engine holds it for the whole
call, as the C verbs do (csrc/binding/calls.c): another thread, or code the
call itself runs, finds it in use (ConcurrentUseError, saying which) and
cannot close it, change it or read it half-changed.

The engine is caught inside a method by a profile function, which runs at
the method's first call into the C engine: cffi lets go of the GIL around
those calls, so another thread could run then. The runs are apart (a child
interpreter each): a method without the hold went on with a freed engine."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from pyengine import ConcurrentUseError, Engine, EngineClosed, EngineError, pack_new_order
from pyengine._calls import CLOSED, HELD, IN_USE_HERE

from .conftest import run_python

# Every public method that reads or changes the C engine but the C verbs
# (test_calls.py), with the call made, on an engine set up by SETUP below.
CALLS = {
    "add_instrument": 'e.add_instrument("Y")',
    "halt": 'e.halt("X")',
    "resume": 'e.resume("X")',
    "trading_state": 'e.trading_state("X")',
    "set_order_limits": 'e.set_order_limits("X", max_qty=5)',
    "order_limits": 'e.order_limits("X")',
    "cancel_all": "e.cancel_all(1)",
    "set_mmp": 'e.set_mmp(1, "X", 5)',
    "reset_mmp": 'e.reset_mmp(1, "X")',
    "mmp": 'e.mmp(1, "X")',
    "process_batch": "e.process_batch(CMDS)",
    "process_batch into out": "e.process_batch(CMDS, out=bytearray())",
    "process_batch counts only": "e.process_batch(CMDS, collect_events=False)",
    "seq": "e.seq",
    "open_orders": "e.open_orders()",
    "open_orders of one": 'e.open_orders("X")',
    "stats": "e.stats()",
    "state_hash": "e.state_hash()",
    "verify": "e.verify()",
    "repr": "repr(e)",
    "close": "e.close()",
}

SETUP = textwrap.dedent("""
    import json, sys, threading
    from pyengine import Engine, pack_new_order

    CMDS = pack_new_order(0, "sell", 1, 200, account=2) * 3

    def fresh():
        e = Engine()
        e.add_instrument("X")
        e.submit("X", "buy", 1, 100, account=1)
        e.set_mmp(1, "X", 50)
        return e

    def caught(call):
        try:
            return ["ok", repr(call())]
        except Exception as exc:
            return [type(exc).__name__, str(exc)]

    def at_first_c_call(then):
        # A profile function that runs then() once, at the first call into the C engine.
        done = []
        def profile(frame, event, arg):
            name = getattr(arg, "__name__", "")
            if event == "c_call" and not done and (name.startswith("eng_") or name == "_detach"):
                done.append(name)
                then()
        return profile
""")


def run_calls(body: str) -> dict[str, dict[str, list[str]]]:
    """Run `body` for each of CALLS (as `call`, its name as `name`), each
    printing one JSON line of what it saw; the lines by method name."""
    script = SETUP + "CALLS = " + repr(CALLS) + "\nfor name, call in CALLS.items():\n" + textwrap.indent(body, "    ")
    proc = run_python(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = {}
    for line in proc.stdout.splitlines():
        got = json.loads(line)
        seen[got.pop("name")] = got
    assert list(seen) == list(CALLS)
    return seen


def test_code_a_method_runs_cannot_use_its_engine() -> None:
    """A garbage collection's callback, a __del__, an argument's __hash__ or
    a profiler run by a method, on its thread, find the engine in use by the
    call in progress: the method ends as if nothing had tried."""
    seen = run_calls(textwrap.dedent("""
        e = fresh()
        probes = {}
        def probe():
            probes["close"] = caught(e.close)
            probes["state_hash"] = caught(e.state_hash)
        sys.setprofile(at_first_c_call(probe))
        try:
            result = caught(lambda: eval(call))
        finally:
            sys.setprofile(None)
        print(json.dumps({"name": name, "probes": probes, "result": result[:1], "after": caught(e.stats)[:1]}))
    """))
    for name, got in seen.items():
        assert set(got["probes"]) == {"close", "state_hash"}, name
        for kind, message in got["probes"].values():
            assert kind == "ConcurrentUseError", (name, kind, message)
            assert "in use by a call in progress on this thread" in message, (name, message)
        assert got["result"] == ["ok"], (name, got)
        assert got["after"] == (["EngineClosed"] if name == "close" else ["ok"]), (name, got)


def test_another_thread_cannot_use_an_engine_a_method_holds() -> None:
    """While a thread is inside any method, another thread's calls -- close,
    a read, a change, a verb -- raise ConcurrentUseError naming another
    thread, and repr says the engine is in use; the method then ends well."""
    seen = run_calls(textwrap.dedent("""
        e = fresh()
        inside, go = threading.Event(), threading.Event()
        def hold():
            inside.set()
            go.wait(60)
        outcome = []
        def worker():
            sys.setprofile(at_first_c_call(hold))
            outcome.append(caught(lambda: eval(call)))
        t = threading.Thread(target=worker)
        t.start()
        assert inside.wait(60)
        probes = {
            "close": caught(e.close),
            "state_hash": caught(e.state_hash),
            "open_orders": caught(e.open_orders),
            "add_instrument": caught(lambda: e.add_instrument("Z")),
            "submit": caught(lambda: e.submit("X", "buy", 1, 100)),
        }
        shown = repr(e)
        go.set()
        t.join()
        print(json.dumps({"name": name, "probes": probes, "repr": shown, "result": outcome[0][:1],
                          "instruments": len(e.instruments)}))
    """))
    for name, got in seen.items():
        for probe, (kind, message) in got["probes"].items():
            assert kind == "ConcurrentUseError", (name, probe, kind, message)
            assert "in use by another thread" in message, (name, probe, message)
        assert got["repr"].endswith("in use>"), (name, got["repr"])
        assert got["result"] == ["ok"], (name, got)
        assert got["instruments"] == (2 if name == "add_instrument" else 1), (name, got)


@pytest.mark.parametrize("call", [
    "eng.open_orders(key)", "eng.trading_state(key)", "eng.order_limits(key)", "eng.mmp(1, key)",
    "eng.halt(key)", "eng.set_mmp(1, key, 5)", "eng.cancel_all(1, key)", "eng.set_order_limits(key, max_qty=1)",
])
def test_a_key_whose_hash_closes_the_engine_finds_it_closed(call: str) -> None:
    """The symbol is looked up before the engine is taken: a key whose
    __hash__ closes the engine leaves the method nothing to run on. Apart:
    the method read a freed engine."""
    proc = run_python(textwrap.dedent("""
        from pyengine import Engine, EngineClosed

        eng = Engine()
        eng.add_instrument("X")
        for i in range(1000):
            eng.submit("X", "buy", 1, 100 + i, account=1)

        class Closing(str):
            def __hash__(self):
                eng.close()
                return str.__hash__(self)

        key = Closing("X")
        try:
            print("returned", CALL)
        except EngineClosed as exc:
            print("EngineClosed", exc)
    """).replace("CALL", call))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "EngineClosed this Engine is closed\n"


def test_an_engine_is_initialised_once() -> None:
    """A second __init__ would put a new engine in place of the one a call
    in progress (another thread's) may be using: refused."""
    eng = Engine()
    eng.add_instrument("X")
    eng.submit("X", "buy", 1, 100)
    with pytest.raises(EngineError, match="initialised once"):
        eng.__init__()  # type: ignore[misc]
    assert eng.seq == 1 and len(eng.open_orders()) == 1


def test_the_hold_is_the_holders_to_end() -> None:
    """_release ends only this thread's own hold; closing needs the engine
    free; a closed engine cannot be held."""
    eng = Engine()
    with pytest.raises(RuntimeError, match="not held by this thread"):
        eng._release()
    assert eng._hold() == HELD
    with pytest.raises(ConcurrentUseError, match="in progress on this thread"):
        eng.close()
    assert eng._hold() == IN_USE_HERE  # held already, by this thread
    eng._release()
    eng.close()
    eng.close()  # closing a closed engine does nothing
    assert eng._hold() == CLOSED
    with pytest.raises(EngineClosed):
        eng.process_batch(pack_new_order(0, "buy", 1, 1))
    assert repr(eng) == "<Engine 0 instruments, closed>"


def test_an_interrupt_at_any_return_from_c_leaves_the_engine_free() -> None:
    """A KeyboardInterrupt comes when the interpreter next checks for
    signals, which CPython does as a call returns: it is raised there, the
    call's work done and its result dropped. Raised at the return of each C
    call a method makes in turn (a profile function raising at "c_return"
    does just that), it never leaves the engine held: the hold is taken in
    a with-block's C __enter__, after which no such point comes before the
    block's cleanup is armed."""
    proc = run_python(SETUP + textwrap.dedent(f"""
        CALLS = {CALLS!r}

        def interrupt_at(k):
            seen = []
            def profile(frame, event, arg):
                if event == "c_return":
                    seen.append(getattr(arg, "__name__", "?"))
                    if len(seen) == k:
                        raise KeyboardInterrupt
            return profile, seen

        stuck = {{}}
        for name, call in CALLS.items():
            for k in range(1, 40):
                e = fresh()
                profile, seen = interrupt_at(k)
                sys.setprofile(profile)
                try:
                    eval(call)
                except KeyboardInterrupt:
                    pass
                finally:
                    sys.setprofile(None)
                if len(seen) < k:
                    break  # the call returned before its k-th C return
                if e._busy:
                    stuck[name] = seen[-1]
                    break
        print(json.dumps(stuck))
    """))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}


def test_a_hold_ends_only_on_the_thread_that_took_it() -> None:
    """Core._holding's exit on another thread raises and leaves the hold
    its holder's, who ends it."""
    import threading

    eng = Engine()
    hold = eng._holding(None)
    hold.__enter__()
    errors: list[BaseException] = []

    def exit_elsewhere() -> None:
        try:
            hold.__exit__(None, None, None)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=exit_elsewhere)
    t.start()
    t.join()
    assert len(errors) == 1 and eng._busy
    assert hold.__exit__(None, None, None) is False and not eng._busy
    eng.add_instrument("X")  # free again


@pytest.mark.parametrize("verb", ['e.submit("X", "buy", 1, 100)', "e.cancel(1)", "e.modify(1, 2)", "e.order(1)",
                                  'e.book("X")'])
def test_a_verb_that_finds_the_engine_held_elsewhere_says_so_if_it_is_freed_at_once(verb: str) -> None:
    """A verb (valid arguments) that finds the engine held by another thread
    raises ConcurrentUseError, also when that thread lets go right after:
    the verb does not look again. Were it to hand the call on to Engine's
    Python method of the same name, the holder would let go right then."""
    import sys
    import threading

    e = Engine()
    e.add_instrument("X")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        assert e._hold() == HELD
        held.set()
        release.wait(60)
        e._release()

    def free_at_a_call_into_engine_py(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.endswith("engine.py") and not release.is_set():
            release.set()
            t.join(60)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(60)
    try:
        with pytest.raises(ConcurrentUseError, match="in use by another thread"):
            sys.setprofile(free_at_a_call_into_engine_py)
            eval(verb)
    finally:
        sys.setprofile(None)
        release.set()
        t.join(60)
    assert not e._busy
    e.submit("X", "buy", 1, 100)  # free again
