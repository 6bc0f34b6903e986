"""``quantorch paper reconcile``: the broker against the ledger, and the ledger against itself.

The ledger is the store's ``broker_fills`` (shares) and ``cash_ledger`` (cash). A cycle
compares the broker with it after every settlement and halts the account on a difference
(:class:`~quantorch.paper.cycle.ReconciliationError`); this shows every difference, and lifts
the halt once there is none. It never guesses: a difference is fixed by the trader (at the
broker, or by opening a new account), not by quantorch rewriting the ledger.

Checks, each with a name in the result:

``broker``     the broker's shares per ticker and cash equal the ledger's
``positions``  the positions stored at the last finished cycle equal the ledger's shares then
``cash``       the cash stored with that cycle's equity equals the ledger's cash then
``orders``     every order's filled quantity is the sum of its stored fills
``intents``    no order stayed an unsent intent past its cycle
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantorch.paper.cycle import (
    CASH_TOLERANCE,
    SHARE_TOLERANCE,
    PaperTrader,
    account_run_id,
    broker_cash_expected,
    check_account,
    reconciliation,
)
from quantorch.store import repository

__all__ = ["ReconcileResult", "reconcile"]


@dataclass(frozen=True)
class ReconcileResult:
    """What :func:`reconcile` found; ``resumed`` when it lifted a halt."""

    account: str
    differences: list[tuple[str, str]]
    halted: str | None
    resumed: bool
    message: str

    def to_json(self) -> dict:
        return {"reconciled": not self.differences, "resumed": self.resumed,
                "halted": self.halted, "message": self.message,
                "differences": [{"check": c, "difference": d} for c, d in self.differences]}


def reconcile(trader: PaperTrader) -> ReconcileResult:
    """Compare (see the module docstring); lift the account's halt when nothing differs."""
    account = trader.account
    row = check_account(trader.store, account)
    broker = trader._broker()
    with trader.exclusive():  # no cycle of the account writes meanwhile
        broker_shares, broker_cash = broker.shares(), broker.cash()
        with trader.store.connect(read_only=True) as con:
            differences = [("broker", d) for d in reconciliation(
                repository.shares_held(con, account),
                broker_cash_expected(con, account, broker), broker_shares, broker_cash)]
            differences += _ledger_differences(con, account)
        resumed = False
        if not differences and row["halted_reason"]:
            with trader.store.transaction() as con:
                repository.update_account(con, account, halted_reason=None)
            resumed = True
    if differences:
        message = (f"{len(differences)} difference(s): nothing was changed. Fix the account at "
                   f"the {broker.name} broker (or open a new account with --account NAME), then "
                   "run `quantorch paper reconcile` again"
                   + ("; trading stays halted" if row["halted_reason"] else ""))
    elif resumed:
        message = (f"paper account '{account}': broker and ledger agree; the halt "
                   f"({row['halted_reason']}) is lifted and the next cycle trades")
    else:
        message = f"paper account '{account}': broker and ledger agree"
    return ReconcileResult(account, differences, row["halted_reason"] if not resumed else None,
                           resumed, message)


def _ledger_differences(con, account: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    last = con.execute(
        "SELECT max(session) FROM cycles WHERE account = ? AND status IN ('done', 'missed')",
        [account]).fetchone()[0]
    if last is not None:
        stored = {t: q for t, q in con.execute(
            "SELECT ticker, quantity FROM positions WHERE account = ? AND session = ?",
            [account, last]).fetchall()}
        ledger = {t: q for t, q in con.execute(
            "SELECT ticker, sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) FROM "
            "broker_fills WHERE account = ? AND fill_session <= ? GROUP BY ticker",
            [account, last]).fetchall() if abs(q) > 1e-12}
        for ticker in sorted(set(stored) | set(ledger)):
            a, b = ledger.get(ticker, 0.0), stored.get(ticker, 0.0)
            if abs(a - b) > SHARE_TOLERANCE * max(1.0, abs(a)):
                found.append(("positions", (f"{ticker} at {last}: ledger {a:,.6f} shares, "
                                           f"stored positions {b:,.6f}")))
        cash_then = repository.cash_balance(con, account, through=last)
        equity_cash = con.execute("SELECT cash FROM equity WHERE run_id = ? AND date = ?",
                                  [account_run_id(account), last]).fetchone()
        if equity_cash is None:
            found.append(("cash", f"no equity row stored for the finished cycle of {last}"))
        elif abs(float(equity_cash[0]) - cash_then) > CASH_TOLERANCE and not (
                abs(cash_then) < 1e-6 and abs(float(equity_cash[0])) < CASH_TOLERANCE):
            found.append(("cash", (f"at {last}: ledger ${cash_then:,.2f}, stored with the "
                                  f"equity ${float(equity_cash[0]):,.2f}")))
    for order_id, filled, summed in con.execute(
        "SELECT o.client_order_id, o.filled_quantity, coalesce(sum(f.quantity), 0) FROM orders o "
        "LEFT JOIN broker_fills f ON f.account = o.account AND f.client_order_id = "
        "o.client_order_id WHERE o.account = ? GROUP BY ALL", [account],
    ).fetchall():
        if not np.isclose(filled, summed, rtol=1e-9, atol=1e-9):
            found.append(("orders", (f"{order_id}: filled {filled:,.6f} shares, its fills sum "
                                    f"to {summed:,.6f}")))
    if last is not None:
        for (order_id,) in con.execute(
            "SELECT client_order_id FROM orders WHERE account = ? AND status = 'intent' AND "
            "decision_session <= ?", [account, last],
        ).fetchall():
            found.append(("intents", f"{order_id} was never sent to the broker"))
    return found
