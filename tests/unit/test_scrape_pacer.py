"""The metrics endpoint's pacing of scrapes (pyengine/server/metrics.py): at
most one answer made an interval (MIN_SCRAPE_INTERVAL), one at a time,
whatever the scrapers do; the same scrape within the interval given the
answer made for it. On a clock of the test's own, so that what is checked
is the waits asked for, not how long anything took."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gevent

from pyengine.server.httpd import StartResponse
from pyengine.server.metrics import ScrapePacer


class Clock:
    """A clock that moves only when slept on, or when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 9))
        self.now += seconds


class App:
    """A WSGI app that numbers its answers."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self.made += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"answer %d" % self.made]


def scrape(app: Any, accept: str = "text/plain") -> tuple[str, list[tuple[str, str]], bytes]:
    head: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        head[:] = status, list(headers)
        headers.append(("Date", "now"))  # as the server does to the list it is given

    body = b"".join(app({"REQUEST_METHOD": "GET", "HTTP_ACCEPT": accept}, start_response))
    return head[0], head[1], body


def paced() -> tuple[Clock, App, Any]:
    clock, inner = Clock(), App()
    return clock, inner, ScrapePacer(0.125, clock, clock.sleep)(inner)


def test_the_same_scrape_within_the_interval_gets_the_same_answer_at_once() -> None:
    clock, inner, app = paced()
    assert scrape(app) == ("200 OK", [("Content-Type", "text/plain")], b"answer 1")
    clock.now += 0.0625
    assert scrape(app) == ("200 OK", [("Content-Type", "text/plain")], b"answer 1")  # headers as made
    assert scrape(app)[2] == b"answer 1"
    assert (inner.made, clock.slept) == (1, [])
    clock.now += 0.0625
    assert scrape(app)[2] == b"answer 2"  # the interval over: a new one, at once
    assert clock.slept == []


def test_another_scrape_within_the_interval_waits_for_its_turn() -> None:
    clock, inner, app = paced()
    scrape(app)
    clock.now += 0.0625
    assert scrape(app, accept="application/openmetrics-text")[2] == b"answer 2"
    assert clock.slept == [0.0625]  # what was left of the interval
    assert scrape(app, accept="application/openmetrics-text")[2] == b"answer 2"
    assert scrape(app)[2] == b"answer 3"  # the first one's answer has had its interval
    assert clock.slept == [0.0625, 0.125]


def test_answers_are_made_one_at_a_time() -> None:
    running, overlapped, done = [0], [False], []

    def slow(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        running[0] += 1
        overlapped[0] |= running[0] > 1
        gevent.sleep(0.001)  # another answer's turn, were it let in
        running[0] -= 1
        done.append(environ["QUERY_STRING"])
        start_response("200 OK", [])
        return [b"text"]

    app = ScrapePacer(0.0)(slow)
    gevent.joinall([gevent.spawn(app, {"QUERY_STRING": str(n)}, lambda status, headers: None) for n in range(10)],
                   raise_error=True)
    assert sorted(done, key=int) == [str(n) for n in range(10)]
    assert not overlapped[0]
