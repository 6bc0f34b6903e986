"""The built-in paper broker: the backtest engine's fill rules, with its state in DuckDB.

Orders decided at a session's close fill at the next session (:meth:`SimulatedBroker.settle`):
at the reference price (the adjusted open where the bar has one, else the adjusted close) with
slippage and fees, sells before buys, a buy partly filled with the cash left when it needs more,
exactly as :func:`~quantorch.kernel.execution.execute` rules and the vectorbt engine does. So a
session-by-session replay through this broker gives a backtest's fills and equity.

State is the store's: ``orders`` (intent, submitted, then filled, partially_filled, expired or
rejected), ``broker_fills`` (each fill once, keyed by its id), ``cash_ledger`` (the deposit, every
fill's notional and fee) and a ``positions`` snapshot per session. Shares and cash are read back
from the fills and the ledger, never kept in memory, so a broker object can be thrown away (or
the process killed) between sessions without losing anything. Each settlement is one
transaction: after a crash it happened whole or not at all, and running it again adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from quantorch.brokers import OrderAck
from quantorch.kernel.execution import (
    Costs,
    Fill,
    Order,
    deltas_from_orders,
    execute,
    fills_from_execution,
)
from quantorch.store import Store, repository

__all__ = ["SimulatedBroker"]

_OPEN = ("submitted", "accepted")
#: The ledger adds its entries in a different order than the execution did: an account the
#: fills spent to the cent may sum to a few 1e-11 below zero. Less than a micro-dollar is zero.
_DUST_USD = 1e-6


def _ledger_cash(con, account: str) -> float:
    cash = repository.cash_balance(con, account)
    return 0.0 if abs(cash) < _DUST_USD else cash


class SimulatedBroker:
    """A paper account filled by the kernel's rules (see the module docstring).

    Parameters
    ----------
    store
        Where the account's orders, fills, ledger and positions live.
    account
        The account name (a paper account, or a replay's id).
    costs
        Fees and slippage, as in backtests.
    """

    name = "sim"
    #: Its shares and cash are the store's ledger: the cycle has nothing to reconcile.
    keeps_ledger = True

    def __init__(self, store: Store, account: str, costs: Costs) -> None:
        self.store = store
        self.account = account
        self.costs = costs

    # ---- the account ----------------------------------------------------------------------

    def open(self, cash: float, session: pd.Timestamp) -> None:
        """Fund the account once (a second call adds nothing)."""
        with self.store.transaction() as con:
            repository.insert_cash_entries(con, self.account, [{
                "session": pd.Timestamp(session).date(), "kind": "deposit", "amount": float(cash),
                "entry_key": "opening-deposit", "note": "initial cash",
            }])

    def shares(self) -> dict[str, float]:
        if not self.store.exists:
            return {}
        with self.store.connect(read_only=True) as con:
            return repository.shares_held(con, self.account)

    def cash(self) -> float:
        if not self.store.exists:
            return 0.0
        with self.store.connect(read_only=True) as con:
            return _ledger_cash(con, self.account)

    def order(self, client_order_id: str) -> OrderAck | None:
        if not self.store.exists:
            return None
        with self.store.connect(read_only=True) as con:
            rows = repository.orders_for(con, self.account)
        found = rows[rows["client_order_id"] == client_order_id]
        return None if found.empty else _ack(found.iloc[0])

    def fills(self, session: pd.Timestamp | None = None) -> list[Fill]:
        if not self.store.exists:
            return []
        with self.store.connect(read_only=True) as con:
            return _fills_of(repository.fills_for(con, self.account, session=session))

    # ---- orders ------------------------------------------------------------------------------

    def submit(self, orders: Sequence[Order], *, run_id: str | None = None) -> list[OrderAck]:
        """Record the orders and accept them (the simulator accepts everything at once); an
        order already known keeps its state."""
        if not orders:
            return []
        ids = [o.client_order_id for o in orders]
        with self.store.transaction() as con:
            repository.insert_order_intents(con, self.account, list(orders), broker=self.name,
                                            run_id=run_id)
            rows = repository.orders_for(con, self.account)
            rows = rows[rows["client_order_id"].isin(ids)]
            for order_id in rows.loc[rows["status"] == "intent", "client_order_id"]:
                repository.update_order(con, order_id, status="submitted")
            rows = repository.orders_for(con, self.account)
        known = {r.client_order_id: r for r in rows.itertuples(index=False)}
        return [_ack(pd.Series(known[i]._asdict())) for i in ids]

    def settle(
        self,
        session: pd.Timestamp,
        tickers: Sequence[str],
        reference_prices: np.ndarray,
        marks: np.ndarray,
        *,
        run_id: str | None = None,
    ) -> list[Fill]:
        """Fill every open order decided before ``session`` at its reference prices, and store
        the account's positions valued at ``marks``. Returns the new fills (none on a repeat)."""
        session = pd.Timestamp(session)
        tickers = [str(t) for t in tickers]
        with self.store.transaction() as con:
            pending = repository.orders_for(con, self.account, status=_OPEN)
            pending = pending[pd.to_datetime(pending["decision_session"]) < session]
            orders = [
                Order(
                    client_order_id=r.client_order_id, ticker=r.ticker, side=r.side,
                    quantity=float(r.quantity), decision_session=pd.Timestamp(r.decision_session),
                    target_weight=float(r.target_weight) if pd.notna(r.target_weight) else np.nan,
                    reference_price=float(r.reference_price) if pd.notna(r.reference_price)
                    else np.nan,
                )
                for r in pending.itertuples(index=False)
            ]
            held = repository.shares_held(con, self.account)
            shares = np.array([held.get(t, 0.0) for t in tickers])
            cash = _ledger_cash(con, self.account)
            if not orders:  # nothing open, or settled already (a restart): report those fills
                fills = _fills_of(repository.fills_for(con, self.account, session=session))
            else:
                deltas = deltas_from_orders(orders, tickers)
                done = execute(shares, cash, deltas, np.asarray(reference_prices, float),
                               self.costs)
                fills = fills_from_execution(orders, done, session, tickers)
                repository.insert_broker_fills(con, self.account, fills, run_id=run_id)
                filled = {f.client_order_id: f.quantity for f in fills}
                for order in orders:
                    got = filled.get(order.client_order_id, 0.0)
                    status, reason = _outcome(order, got, np.asarray(reference_prices, float)[
                        tickers.index(order.ticker)])
                    repository.update_order(con, order.client_order_id, status=status,
                                            reason=reason)
                shares = np.asarray(done.shares, dtype=np.float64)
            values = shares * np.asarray(marks, dtype=np.float64)
            repository.upsert_positions(con, self.account, session.date(), [
                {"ticker": t, "quantity": float(q), "market_price": float(m),
                 "market_value": float(v) if np.isfinite(v) else None}
                for t, q, m, v in zip(tickers, shares, marks, values, strict=True) if q != 0
            ])
        return fills


def _fills_of(rows: pd.DataFrame) -> list[Fill]:
    return [
        Fill(
            fill_id=r.broker_fill_id, client_order_id=r.client_order_id, ticker=r.ticker,
            side=r.side, quantity=float(r.quantity), fill_price=float(r.fill_price),
            notional=float(r.notional), fees=float(r.fees),
            slippage_cost=float(r.slippage_cost) if pd.notna(r.slippage_cost) else 0.0,
            decision_session=pd.Timestamp(r.decision_session),
            fill_session=pd.Timestamp(r.fill_session),
        )
        for r in rows.itertuples(index=False)
    ]


def _ack(row: pd.Series) -> OrderAck:
    filled = row.get("filled_quantity")
    return OrderAck(
        client_order_id=str(row["client_order_id"]),
        status=str(row["status"]),
        broker_order_id=row.get("broker_order_id") if pd.notna(row.get("broker_order_id")) else None,
        filled_quantity=float(filled) if pd.notna(filled) else 0.0,
        reason=row.get("reason") if pd.notna(row.get("reason")) else None,
    )


def _outcome(order: Order, filled: float, reference_price: float) -> tuple[str, str | None]:
    """An order's final state after its session (the simulator's orders are day orders)."""
    if filled == 0:
        if not np.isfinite(reference_price):
            return "rejected", "no price for the ticker at the fill session"
        return "rejected", "no cash left for a buy"
    if filled < order.quantity * (1 - 1e-12):
        return "partially_filled", "the rest expired: not enough cash at the fill"
    return "filled", None
