"""The server's file-descriptor limit: raised for max_connections at start,
or a refusal to start when the hard limit is too low. Each case in a child
process, whose limits it may change."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def in_child(soft: int, hard: int, body: str) -> str:
    """What `body` prints in a Python child whose descriptor limits are
    (`soft`, `hard`) before it runs."""
    code = textwrap.dedent(f"""
        import errno, resource, socket
        from pyengine.server.descriptors import RESERVED, reserve_descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
    """) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_soft_limit_below_the_connections_is_raised_to_hold_them() -> None:
    out = in_child(300, 4096, """
        print(reserve_descriptors(1024), resource.getrlimit(resource.RLIMIT_NOFILE))
        held = [socket.socket() for _ in range(1100)]  # more than the 300 the process had
        print(len(held))
    """)
    assert out == "1280 (1280, 4096)\n1100\n"


def test_a_soft_limit_that_is_enough_stays() -> None:
    assert in_child(5000, 8192, "print(reserve_descriptors(1024), resource.getrlimit(resource.RLIMIT_NOFILE))") \
        == "5000 (5000, 8192)\n"


def test_a_hard_limit_below_the_connections_is_refused_in_words() -> None:
    out = in_child(300, 1000, """
        try:
            reserve_descriptors(1024)
        except OSError as exc:
            print(exc.errno == errno.EMFILE, exc.strerror)
        print(resource.getrlimit(resource.RLIMIT_NOFILE))
    """)
    assert out == ("True 1024 connections at once need 1280 file descriptors and the process may open at most 1000 "
                   "(its hard limit, `ulimit -Hn`): raise it, or lower max_connections\n(300, 1000)\n")


def test_a_soft_limit_the_kernel_will_not_raise_is_refused_in_words() -> None:
    out = in_child(300, 4096, """
        def refuse(*args):
            raise ValueError("not allowed to raise the soft limit")
        resource.setrlimit = refuse
        try:
            reserve_descriptors(1024)
        except OSError as exc:
            print(exc.errno == errno.EMFILE, exc.strerror)
    """)
    assert out == ("True 1024 connections at once need 1280 file descriptors and the soft limit 300 could not be "
                   "raised: not allowed to raise the soft limit\n")
