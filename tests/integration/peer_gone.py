"""Run inside a network namespace of its own (``unshare --net``): a server
with ``[limits] keepalive = 1`` and a logged-in client with a resting order
over loopback, the connection quiet, then loopback taken down, so that the
client's machine is gone without a word as far as the server can tell
(nothing it sends arrives, nothing comes back). Prints the server's log once
the session has closed (or after 20 s), and exits 0 if it did.

    unshare --net python tests/integration/peer_gone.py DIR
"""

from __future__ import annotations

import fcntl
import socket
import struct
import sys
import time
from pathlib import Path

from pyengine.client import Client
from pyengine.server.process import ServerProcess

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def set_loopback(up: bool) -> None:
    """Bring the namespace's loopback interface up or down (ip link set lo up|down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        flags = flags | IFF_UP if up else flags & ~IFF_UP
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags))


def main() -> int:
    work = Path(sys.argv[1])
    set_loopback(True)
    config = work / "keepalive.toml"
    config.write_text("[limits]\nkeepalive = 1\n")
    server = ServerProcess(["--port", "0", "--config", str(config), "--engine-cpu", "-1", "--stats-interval", "0",
                            "--log-level", "debug"], work / "server.log")
    client = Client("127.0.0.1", server.port, keepalive=None)
    client.login(7)  # cancel-on-disconnect, by default
    ack = client.request(client.new_order("ESZ6", "buy", 1, 400_000))
    assert ack["type"] == "ack", ack
    time.sleep(0.5)  # the client's acknowledgement of the ack sent: a quiet connection, for keepalive
    set_loopback(False)
    try:
        server.wait_log(r"event=session_close ", timeout=20)
        closed = True
    except AssertionError:  # no such line in time
        closed = False
    print("".join(server.lines))
    set_loopback(True)
    client.sock.close()  # type: ignore[union-attr]
    server.stop()
    return 0 if closed else 1


if __name__ == "__main__":
    raise SystemExit(main())
