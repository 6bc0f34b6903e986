"""The backtest driver: the decision kernel walked session by session over history.

At each session: the orders decided at the previous decision fill (kernel fill rules: the
reference price, slippage, fees, the cash check), the book is marked at the close, and at a
decision date :func:`~quantorch.kernel.step.decision_step` decides for the book as it stands;
the decisions' bill (tools and model tokens) is paid from the cash, and the target weights
become share orders sized at that close. A paper cycle does exactly this for
one session, with a broker instead of the in-memory fills, so a backtest and a paper replay of
the same period agree fill for fill.

When the walk is done, vectorbt executes the same share orders as the engine of record
(:func:`~quantorch.backtest.engine.simulate_orders`): its fills and daily equity are what a run
stores and reports, and the walk's own book must agree with them (a disagreement is a bug and
stops the run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quantorch.brokers.simulated import SimulatedBroker
from quantorch.data.panel import PricePanel
from quantorch.kernel.book import BookState, session_marks
from quantorch.kernel.execution import Costs, execute, orders_from_deltas, target_shares
from quantorch.kernel.step import StepResult
from quantorch.progress import SILENT, Progress
from quantorch.store import repository

__all__ = ["Walk", "walk"]

#: ``step(book, session, first_decision_id)`` for one decision date.
Step = Callable[[BookState, pd.Timestamp, int], StepResult]

_AGREEMENT = 1e-9


@dataclass
class Walk:
    """What a walk produced besides vectorbt's record."""

    orders: pd.DataFrame  # sessions x tickers: signed shares ordered for execution that session
    equity: pd.Series  # the kernel's own equity at each close
    decisions: list[dict] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)
    transcripts: list[dict] = field(default_factory=list)
    kill_sessions: list[pd.Timestamp] = field(default_factory=list)
    #: USD each decision session's decisions cost (tools + model tokens), paid at its close.
    bills: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    #: The RiskGuard's target weights of each decision date (over the panel's tickers).
    targets: dict[pd.Timestamp, np.ndarray] = field(default_factory=dict)
    final_book: BookState | None = None


def walk(
    panel: PricePanel,
    decision_dates: Sequence[pd.Timestamp],
    step: Step,
    costs: Costs,
    initial_cash: float,
    progress: Progress = SILENT,
    *,
    broker: SimulatedBroker | None = None,
) -> Walk:
    """Walk the sessions of ``panel``, deciding at ``decision_dates`` with ``step``.

    Orders fill in memory with the kernel's rules, or, with ``broker``, through it: each
    session the broker settles the open orders, the book is rebuilt from the shares and cash it
    reports, and the next decision's orders (with their client order ids) are submitted to it.
    A decision at the last session is taken (and recorded) but never fills.
    """
    dates = pd.DatetimeIndex(panel.dates)
    tickers = list(panel.tickers)
    close = panel.close.to_numpy(dtype=np.float64)
    opens = panel.open.to_numpy(dtype=np.float64)
    reference = np.where(np.isnan(opens), close, opens)
    marks = session_marks(close, reference)
    wanted = set(pd.DatetimeIndex(decision_dates))
    book = BookState.opening(tickers, initial_cash)
    orders = np.full((len(dates), len(tickers)), np.nan)
    equity = np.empty(len(dates))
    result = Walk(orders=pd.DataFrame(), equity=pd.Series(dtype=float))
    pending: np.ndarray | None = None
    bills: dict[pd.Timestamp, float] = {}
    if broker is not None:
        broker.open(initial_cash, dates[0])
    progress.phase("deciding session by session", len(wanted))
    for i, session in enumerate(dates):
        if broker is not None:  # the broker's state is the book: settle, then read it back
            now = np.where(np.isfinite(marks[i]), marks[i], book.marks)
            broker.settle(session, tickers, reference[i], now)
            held = broker.shares()
            book = book.after(np.array([held.get(t, 0.0) for t in tickers]), broker.cash())
            if pending is not None:
                orders[i] = pending
                pending = None
        elif pending is not None:
            orders[i] = pending
            done = execute(book.shares, book.cash, pending, reference[i], costs)
            book = book.after(done.shares, done.cash)
            pending = None
        book = book.marked(session, marks[i])
        if session in wanted:
            outcome = step(book, session, len(result.decisions))
            book = outcome.book
            if outcome.bill_usd:  # the decisions' bill, paid before the orders are sized
                bills[session] = outcome.bill_usd
                if broker is not None:
                    with broker.store.transaction() as con:
                        repository.insert_decision_bill(con, broker.account, session,
                                                        outcome.tool_cost_usd,
                                                        outcome.llm_cost_usd)
                    book = book.after(book.shares, broker.cash())
                else:
                    book = book.after(book.shares, book.cash - outcome.bill_usd)
            result.decisions.extend(outcome.decisions)
            result.tool_calls.extend(outcome.tool_calls)
            result.transcripts.extend(outcome.transcripts)
            result.targets[session] = outcome.target_weights
            if outcome.killed:
                result.kill_sessions.append(session)
            if i + 1 < len(dates):
                targets = outcome.order_targets
                deltas = target_shares(book.shares, book.cash, targets, close[i], costs,
                                       marks=book.marks)
                pending = np.where(np.abs(np.nan_to_num(deltas)) > 0, deltas, np.nan)
                if broker is not None:
                    broker.submit(orders_from_deltas(tickers, pending, targets, close[i], session,
                                                     broker.account))
            progress.advance(detail=str(session.date()))
        equity[i] = book.equity
    result.orders = pd.DataFrame(orders, index=dates, columns=tickers)
    result.equity = pd.Series(equity, index=dates, name="equity")
    result.bills = pd.Series(bills, dtype=float, name="bill_usd")
    result.final_book = book
    return result


def check_agreement(walked: pd.Series, recorded: pd.Series) -> None:
    """The walk's equity and the engine of record's agree (else a bug: stop, say where)."""
    a = walked.to_numpy(dtype=np.float64)
    b = recorded.reindex(walked.index).to_numpy(dtype=np.float64)
    scale = np.maximum(np.abs(a), 1.0)
    bad = np.flatnonzero(~(np.abs(a - b) <= _AGREEMENT * scale))
    if len(bad):
        first = bad[0]
        raise RuntimeError(
            f"the kernel walk and vectorbt disagree on {walked.index[first].date()}: equity "
            f"{a[first]:.6f} vs {b[first]:.6f} (a bug in quantorch: please report it)"
        )
