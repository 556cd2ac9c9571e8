"""Unit-test helpers for the server's parts run without starting it."""

from __future__ import annotations

import socket
import subprocess
import sys

from pyengine.server.app import Server
from pyengine.server.session import Session


def add_session(server: Server, sock: socket.socket, sid: int) -> Session:
    """A session of `server` (not started) on `sock`, registered and
    attached to its Ledger as the listener does it; not logged in."""
    session = Session(server, sock, f"127.0.0.1:{40000 + sid}", sid)
    server.sessions[sid] = session
    server.ledger.attach(session.link)
    return session


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter, its output captured: code that
    may crash the process fails the test that runs it this way instead of
    ending the test run."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
