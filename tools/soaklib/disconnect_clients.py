"""Disconnect clients: sessions that place orders and drop the connection,
and check what the next login of the account takes over."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent

from pyengine.client import Client, ConnectionClosed, ServerError

from .common import (ACCOUNTS_PER_DISCONNECTOR, CLAIM_RETRY_DELAY, DISCONNECT_BASE, MARKETS, QUIET, QUIET_ASK,
                     QUIET_BID, REPLY_TIMEOUT, REUSE_DELAY, Soak, close_and_wait, compare_open, mass_cancel_all,
                     reset_on_close)


def disconnect_account(client_index: int, j: int) -> int:
    return DISCONNECT_BASE + client_index * 100 + j


@dataclass
class DisconnectAccount:
    account: int
    waiting: dict[int, int] = field(default_factory=dict)  # order id -> qty, left by the last session
    phantoms: int = 0  # orders the server hands over that cannot exist (reported once)
    reusable_at: float = 0.0
    last_drop: str = "none yet"


class Disconnector:
    """Logs in, places orders, drops the connection; checks what the next
    login of the account takes over (see the module docstring)."""

    def __init__(self, soak: Soak, index: int) -> None:
        self.soak = soak
        self.report = soak.report
        self.name = f"disconnect-{index}"
        self.rng = soak.rng(self.name)
        self.accounts = [DisconnectAccount(disconnect_account(index, j)) for j in range(ACCOUNTS_PER_DISCONNECTOR)]

    def run(self) -> None:
        while not self.soak.stop.is_set():
            account = min(self.accounts, key=lambda a: a.reusable_at)
            if self.soak.stop.wait(max(0.0, account.reusable_at - time.monotonic())):
                break
            self._guarded(self._cycle, account)
            gevent.sleep(self.rng.uniform(0.01, 0.1))
        for account in self.accounts:
            gevent.sleep(max(0.0, account.reusable_at - time.monotonic()))
            self._guarded(self._final, account)

    def _guarded(self, step: Callable[[DisconnectAccount], None], account: DisconnectAccount) -> None:
        try:
            step(account)
        except (OSError, ServerError, ConnectionClosed) as exc:
            self.report.fail("connections", f"{self.name} account {account.account}: {exc!r}")
            account.reusable_at = time.monotonic() + REUSE_DELAY
            gevent.sleep(1.0)

    def _label(self, account: DisconnectAccount) -> str:
        return f"account {account.account} (last session: {account.last_drop})"

    def _log_in(self, account: DisconnectAccount, cod: bool) -> tuple[Client, dict[int, int], bool]:
        """Log in and check the claim; returns the session, the resting
        orders it now holds (order id -> qty) and whether the claim was right."""
        expected = len(account.waiting) + account.phantoms
        client = self.soak.connect()
        claimed = client.login(account.account, cancel_on_disconnect=cod)["claimed_orders"]
        if claimed == 0 and expected:
            close_and_wait(client)  # it holds nothing: maybe the server had not seen the drop yet
            gevent.sleep(CLAIM_RETRY_DELAY)
            client = self.soak.connect()
            claimed = client.login(account.account, cancel_on_disconnect=cod)["claimed_orders"]
            self.report.count("claim_retries")
        self.report.count("claims_checked")
        if claimed != expected:
            self.report.fail("disconnect_claims", f"{self._label(account)}: the login claimed {claimed} open "
                                                  f"orders, expected {expected}: {self._claim_error(account, claimed)}")
            account.phantoms += max(0, claimed - expected)
            self.report.count("claim_phantom_orders", max(0, claimed - expected))
            self.report.count("claim_missing_orders", max(0, expected - claimed))
        return client, dict(account.waiting), claimed == expected

    @staticmethod
    def _claim_error(account: DisconnectAccount, claimed: int) -> str:
        resting = len(account.waiting)
        expected = resting + account.phantoms
        left = f"the session left {resting} acknowledged resting order(s)" + (
            f" and {account.phantoms} phantom(s) reported before" if account.phantoms else "")
        if claimed < expected:
            return f"{expected - claimed} missing; {left}"
        return f"{claimed - expected} phantom(s), orders handed over that are not open; {left}"

    def _verify(self, client: Client, account: DisconnectAccount, held: dict[int, int]) -> None:
        cancelled, count = mass_cancel_all(client)
        compare_open(self.report, "disconnect_claims", self._label(account), held, cancelled, count)
        self.report.count("claims_verified_by_mass_cancel")

    def _cycle(self, account: DisconnectAccount) -> None:
        cod = self.rng.random() < 0.5
        client, held, claim_right = self._log_in(account, cod)
        if held and (not claim_right or self.rng.random() < 0.5):
            self._verify(client, account, held)
            held = {}
        elif held and self.rng.random() < 0.5:
            self._cancel_one(client, account, held)
        held.update(self._place_resting(client))
        takers = self._send_takers(client) if self.rng.random() < self.soak.opts.taker_drops else 0
        style = self._drop(client)
        account.waiting = {} if cod else held
        if cod:
            account.phantoms = 0  # they stay with the closed session
        account.reusable_at = time.monotonic() + REUSE_DELAY
        account.last_drop = (f"{len(held)} resting order(s), {takers} taker order(s) in flight, "
                             f"cancel_on_disconnect {str(cod).lower()}, {style}")
        self.report.count("disconnects")
        self.report.count(f"disconnects_{'cod' if cod else 'no_cod'}")
        self.report.count(f"disconnects_{style}")

    def _final(self, account: DisconnectAccount) -> None:
        client, held, _ = self._log_in(account, cod=False)
        self._verify(client, account, held)
        close_and_wait(client)

    def _cancel_one(self, client: Client, account: DisconnectAccount, held: dict[int, int]) -> None:
        """Cancel a taken-over order by id: it must still be open, untouched."""
        oid = self.rng.choice(sorted(held))
        reply = client.request(client.cancel(order_id=oid), timeout=REPLY_TIMEOUT)
        if reply.get("type") != "cancelled" or reply.get("leaves") != held[oid]:
            self.report.fail("disconnect_claims", f"{self._label(account)}: cancel of taken-over order {oid} "
                                                  f"(qty {held[oid]}) got {reply}")
        del held[oid]

    def _place_resting(self, client: Client) -> dict[int, int]:
        sent = []
        for _ in range(self.rng.randint(1, 4)):
            side = self.rng.choice(("buy", "sell"))
            price = QUIET_BID - self.rng.randint(0, 50) if side == "buy" else QUIET_ASK + self.rng.randint(0, 50)
            qty = self.rng.randint(1, 5)
            options = {"client_order_id": f"d{self.rng.randrange(10**9)}"} if self.rng.random() < 0.3 else {}
            sent.append((client.new_order(QUIET.symbol, side, qty, price, **options), qty))
        self.report.count("disconnect_orders", len(sent))
        placed: dict[int, int] = {}
        for req_id, qty in sent:
            reply = client.request(req_id, timeout=REPLY_TIMEOUT)
            if reply.get("type") != "ack" or reply.get("qty") != qty:
                self.report.fail("disconnect_claims", f"{self.name}: a resting order got {reply}")
                continue
            placed[reply["order_id"]] = qty
            self.soak.board.add(reply["order_id"], reply["client_order_id"])
            self.report.count("disconnect_acks")
        return placed

    def _send_takers(self, client: Client) -> int:
        """Orders that trade or end at once, left in flight by the drop."""
        n = self.rng.randint(1, 3)
        for _ in range(n):
            market = self.rng.choice(MARKETS)
            side = self.rng.choice(("buy", "sell"))
            kind = self.rng.choice(("ioc", "fok", "market"))
            if kind == "market":
                client.new_order(market.symbol, side, self.rng.randint(1, 10), order_type="market")
            else:
                through = self.rng.randint(0, 3) * market.tick
                price = market.mid + through if side == "buy" else market.mid - through
                client.new_order(market.symbol, side, self.rng.randint(1, 10), price, tif=kind)
        self.report.count("disconnect_orders", n)
        return n

    def _drop(self, client: Client) -> str:
        style = self.rng.choice(("close", "reset"))
        if style == "reset":
            reset_on_close(client.sock)
        client.close()
        return style
