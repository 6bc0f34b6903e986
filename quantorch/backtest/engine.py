"""The backtest engine: target weights (or share orders) in, fills and daily equity out.

The fill rules are the kernel's (:mod:`quantorch.kernel.execution`), the same functions the
session-by-session driver and the simulated broker call; this module walks the sessions with
them and has vectorbt record the result.

Timing (design brief, section 3)
--------------------------------
- A row of ``target_weights`` is a decision taken at the close of session t; it may only use
  data up to t (the strategies' contract).
- It becomes share orders **at t's close**: :func:`~quantorch.kernel.execution.target_shares`
  sizes each ticker at its adjusted close of t, valuing the book at the marks (the close,
  else the last fill price, carried forward). A ticker without a close at t gets no order.
- The orders fill at session t+1 (the next row of ``panel.dates``): at the adjusted open of
  t+1 where that cell has an open, else at the adjusted close of t+1. A decision on the last
  session never fills; an order for a ticker with no price at t+1 is skipped (no fill row).
- A NaN target means "leave this ticker's position as it is".

The sizing rule changed (decision-time share quantities)
--------------------------------------------------------
Until now a target weight was handed to vectorbt as a target percentage
(``SizeType.TargetPercent``) and sized at t+1's reference price, as it filled: a quantity no
real broker can be sent, since an order needs its quantity when it is submitted at t.
Orders are now share quantities fixed at t's closes, the one rule for backtests, the
simulated broker and live adapters (Alpaca). Results move slightly: a position holds the
shares sized at t, so its weight after the fill drifts with the overnight move from t's
close to t+1's fill price; when prices rose overnight the buys need more cash than was set
aside and the last buys of the session (the largest) are partly filled with the cash left,
when they fell some cash stays idle until the next rebalance.

Execution
---------
:func:`~quantorch.kernel.execution.execute` runs each session's orders: one shared cash
pool, sells before buys (vectorbt's ``call_seq='auto'``: ascending order value), a buy that
needs more cash than is left partly filled with the cash left, shorts allowed. Slippage moves
the fill price adversely by ``slippage_bps`` (buys pay ``p*(1+s)``, sells get ``p*(1-s)``);
the fee is ``fee_bps`` of the slipped notional. Costs are always charged.

vectorbt's ``Portfolio.from_orders`` with those share quantities (``size_type=Amount``) is the
engine of record: the fills and cash returned are vectorbt's. They must equal the kernel's
walk to 1e-9 relative; a difference is a bug and raises :class:`RuntimeError` naming the first
session and ticker where they part.

Decision bills
--------------
An orchestrator's decisions cost money besides trading: the tools it called and its model's
tokens. :func:`simulate_orders` takes them as ``bills`` (USD per decision session) and debits
them from the cash at that session's close (:mod:`quantorch.kernel.execution`), so equity,
Sharpe and every other figure are net of them.

Cash-buffer rule (how a target weight becomes an order)
-------------------------------------------------------
Every non-NaN target weight ``w`` is applied as ``w / ((1 + s) * (1 + f))`` of equity valued at
t's closes, on both sides and on every rebalance. Buying that weight from cash at t's close
costs exactly ``w`` of equity including slippage and fees, so an all-cash buy of weights that
sum to 1 spends the cash to the cent at those prices: for an equal-weight buy of N tickers
from cash ``C``, ``shares_i = (C / N) / (close_i * (1 + s) * (1 + f))``, filled at t+1's
reference price. Because the same factor is applied to every rebalance, unchanged targets map
to unchanged effective targets: daily rebalancing to the same weights only trades the drift
(both ways), never a systematic sell. The held book therefore sits a factor
``1 / ((1+s)(1+f))`` (0.06% at 1 + 5 bps) below the nominal weights: that cash is the buffer
that pays the next rebalance's costs.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quantorch.data.panel import PricePanel
from quantorch.kernel.execution import Costs, execute, slippage_cost, target_shares

__all__ = ["FILL_COLUMNS", "Costs", "SimulationResult", "simulate", "simulate_orders"]

#: Columns of :attr:`SimulationResult.fills`, in order.
FILL_COLUMNS = (
    "decision_date",
    "fill_date",
    "ticker",
    "side",
    "quantity",
    "fill_price",
    "notional",
    "fees",
    "slippage_cost",
)

_FLOAT_COLUMNS = FILL_COLUMNS[4:]
_BUY = 0  # vectorbt.portfolio.enums.OrderSide.Buy
_AMOUNT = 0  # vectorbt.portfolio.enums.SizeType.Amount
_BOTH = 2  # vectorbt.portfolio.enums.Direction.Both
_PARITY_RTOL = 1e-9


@dataclass(frozen=True)
class SimulationResult:
    """What one simulation produced, indexed by the panel's sessions.

    Attributes
    ----------
    equity
        Portfolio value (cash + positions at the adjusted close) at each session close.
    cash
        Cash at each session close.
    gross_exposure
        Sum of absolute position values over equity at each close.
    fills
        One row per executed order, sorted by fill_date, ticker; see :data:`FILL_COLUMNS`.
        ``ticker`` and ``side`` are categoricals.
    weights
        Position value over equity at each close (dates x tickers).
    """

    equity: pd.Series
    cash: pd.Series
    gross_exposure: pd.Series
    fills: pd.DataFrame
    weights: pd.DataFrame


@dataclass(frozen=True)
class _Prices:
    close: np.ndarray
    reference: np.ndarray  # the un-slipped fill price: the open, else the close
    mark: np.ndarray  # valuation at the close: the close, else the fill price, carried on


@dataclass(frozen=True)
class _Walk:
    """The kernel's pass over the sessions: orders by fill session, and what they got."""

    orders: np.ndarray  # signed shares executed at each session (NaN: none)
    filled: np.ndarray  # signed shares filled (0: none)
    fees: np.ndarray
    cash: np.ndarray  # after each session's fills and the bill paid at its close
    bills: np.ndarray | None = None  # USD debited at each session's close


def simulate(
    panel: PricePanel,
    target_weights: pd.DataFrame,
    costs: Costs,
    initial_cash: float,
) -> SimulationResult:
    """Simulate trading ``target_weights`` on ``panel`` from all cash.

    Parameters
    ----------
    panel
        Prices; the simulation covers all of ``panel.dates``.
    target_weights
        Decision dates (a subset of ``panel.dates``) x tickers (a subset of the panel's):
        the target fraction of equity per ticker decided at that session's close. NaN keeps
        the position. Tickers absent from the frame are never traded.
    costs
        Fees and slippage, always charged.
    initial_cash
        Starting cash (no positions).

    Returns
    -------
    SimulationResult
        See the module docstring for the timing and the cash-buffer rule.

    Raises
    ------
    ValueError
        A decision date or ticker is not in the panel, a date is duplicated, a weight is
        infinite, or ``initial_cash`` is not a positive number.
    RuntimeError
        vectorbt and the kernel disagree (a bug).
    """
    _check_cash(initial_cash)
    dates = _dates(panel)
    target = _grid(target_weights, dates, panel.close.columns, "target_weights")
    if np.isinf(target).any():
        raise ValueError("target_weights has infinite values (use NaN to keep a position)")
    prices = _prices(panel)
    walk = _walk(prices, costs, float(initial_cash), target=target)
    del target
    return _record(panel, prices, walk, costs, float(initial_cash))


def simulate_orders(
    panel: PricePanel,
    orders: pd.DataFrame,
    costs: Costs,
    initial_cash: float,
    bills: pd.Series | None = None,
) -> SimulationResult:
    """Execute given share orders on ``panel`` from all cash, with the engine's fill rules.

    Parameters
    ----------
    panel
        Prices; the simulation covers all of ``panel.dates``.
    orders
        Fill sessions (a subset of ``panel.dates``, never the first: an order fills the
        session after its decision) x tickers (a subset of the panel's): signed share
        quantities to execute at that session (buy > 0, sell < 0). NaN or 0 is no order.
    costs
        Fees and slippage, always charged.
    initial_cash
        Starting cash (no positions).
    bills
        Decision sessions (a subset of ``panel.dates``) -> USD the decisions of that session
        cost besides trading (tools, model tokens), debited from the cash at its close, after
        its fills (:mod:`quantorch.kernel.execution`, "Decision bills"). vectorbt has no cash
        withdrawals, so with bills it is given the quantities the kernel filled (a buy the
        bills left no cash for is not in them) and its cash is checked net of the bills paid.

    Returns
    -------
    SimulationResult
        vectorbt's record of the orders; ``decision_date`` of a fill is the session before
        its ``fill_date``. ``equity`` and ``cash`` are net of the bills.

    Raises
    ------
    ValueError
        A session or ticker is not in the panel, a session is duplicated, an order is
        infinite or on the first session, or ``initial_cash`` is not a positive number.
    RuntimeError
        vectorbt and the kernel disagree (a bug).
    """
    _check_cash(initial_cash)
    dates = _dates(panel)
    grid = _grid(orders, dates, panel.close.columns, "orders")
    if np.isinf(grid).any():
        raise ValueError("orders has infinite quantities (use NaN or 0 for no order)")
    if len(dates) and np.nan_to_num(grid[0]).any():
        raise ValueError(
            f"orders has an order on {dates[0].date()}, the first session of the panel: an "
            "order fills the session after its decision, so start the panel a session earlier"
        )
    debits = _bills(bills, dates)
    prices = _prices(panel)
    walk = _walk(prices, costs, float(initial_cash), orders=grid, bills=debits)
    del grid
    return _record(panel, prices, walk, costs, float(initial_cash))


def _bills(bills: pd.Series | None, dates: pd.DatetimeIndex) -> np.ndarray | None:
    """``bills`` on the panel's sessions (0 elsewhere); None when there is nothing to pay."""
    if bills is None or not len(bills) or not (bills.to_numpy(dtype=np.float64) != 0).any():
        return None
    values = bills.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("bills must be finite amounts >= 0 (USD paid at each decision)")
    index = pd.DatetimeIndex(bills.index)
    if not index.is_unique:
        raise ValueError("bills has duplicate sessions")
    rows = dates.get_indexer(index)
    if (rows < 0).any():
        raise ValueError(f"bills has session {index[rows < 0][0].date()} that is not a "
                         "session of the panel")
    out = np.zeros(len(dates))
    out[rows] = values
    return out


def _check_cash(initial_cash: float) -> None:
    if not np.isfinite(initial_cash) or initial_cash <= 0:
        raise ValueError(f"initial_cash must be a positive number, got {initial_cash!r}")


def _dates(panel: PricePanel) -> pd.DatetimeIndex:
    dates = pd.DatetimeIndex(panel.dates)
    if not (dates.is_monotonic_increasing and dates.is_unique):
        raise ValueError("panel dates must be sorted and unique")
    return dates


def _prices(panel: PricePanel) -> _Prices:
    close = panel.close.to_numpy(dtype=np.float64)
    opens = panel.open.to_numpy(dtype=np.float64)
    reference = np.where(np.isnan(opens), close, opens)
    del opens
    mark = _ffill(np.where(np.isnan(close), reference, close))
    return _Prices(close=close, reference=reference, mark=mark)


def _walk(
    prices: _Prices,
    costs: Costs,
    initial_cash: float,
    *,
    target: np.ndarray | None = None,
    orders: np.ndarray | None = None,
    bills: np.ndarray | None = None,
) -> _Walk:
    """Run the kernel session by session: fills at the open (reference price), the bill of
    the session's decisions paid at its close, then, with ``target``, size the next session's
    orders at this close."""
    n_dates, n_tickers = prices.reference.shape
    if orders is None:
        orders = np.full((n_dates, n_tickers), np.nan)
    filled = np.zeros((n_dates, n_tickers))
    fees = np.zeros((n_dates, n_tickers))
    cash_path = np.empty(n_dates)
    shares = np.zeros(n_tickers)
    cash = initial_cash
    decides = None if target is None else ~np.isnan(target).all(axis=1)
    for i in range(n_dates):
        row = orders[i]
        if not np.isnan(row).all():
            done = execute(shares, cash, row, prices.reference[i], costs)
            shares, cash = done.shares, done.cash
            filled[i] = done.filled
            fees[i] = done.fees
        if bills is not None:
            cash -= bills[i]
        cash_path[i] = cash
        if decides is not None and decides[i] and i + 1 < n_dates:
            orders[i + 1] = target_shares(
                shares, cash, target[i], prices.close[i], costs, marks=prices.mark[i]
            )
    return _Walk(orders=orders, filled=filled, fees=fees, cash=cash_path, bills=bills)


def _record(
    panel: PricePanel, prices: _Prices, walk: _Walk, costs: Costs, initial_cash: float
) -> SimulationResult:
    """vectorbt's record of the walk's orders, checked against the walk, as a result."""
    dates = pd.DatetimeIndex(panel.dates)
    tickers = list(panel.tickers)
    n_dates, n_tickers = len(dates), len(tickers)
    reference = prices.reference
    # vectorbt cannot withdraw the bills: it gets what the kernel filled (its cash, ahead by
    # the bills paid, covers each of those fills) and its cash is compared net of the bills
    sizes = walk.orders if walk.bills is None else np.where(walk.filled != 0, walk.filled, np.nan)
    n_orders = int(np.count_nonzero(~np.isnan(sizes) & ~np.isnan(reference)))
    records = _run_vectorbt(prices.close, sizes, reference, costs, initial_cash, n_orders)
    _check_fills(records, walk, dates, tickers)

    # Fill order: by session, then ticker name.
    names = np.asarray([str(t) for t in tickers], dtype=object)
    alphabetical = np.argsort(names, kind="stable")
    rank = np.empty(n_tickers, dtype=np.int64)
    rank[alphabetical] = np.arange(n_tickers)
    order = np.argsort(records["idx"] * max(n_tickers, 1) + rank[records["col"]], kind="stable")
    idx = records["idx"][order]
    col = records["col"][order]
    is_buy = records["side"][order] == _BUY
    amounts = np.empty((len(_FLOAT_COLUMNS), len(order)))  # one block for the float columns
    quantity, fill_price, notional, fees, slip = amounts
    np.take(records["size"], order, out=quantity)
    np.take(records["price"], order, out=fill_price)
    np.take(records["fees"], order, out=fees)
    del records, order
    np.multiply(quantity, fill_price, out=notional)
    slip[:] = slippage_cost(quantity, reference[idx, col], costs.slippage)

    flow = np.zeros((n_dates, n_tickers))
    flow[idx, col] = np.where(is_buy, quantity, -quantity)  # at most one order per cell
    value = np.cumsum(flow, axis=0, out=flow)  # positions in shares ...
    cash_flow = np.where(is_buy, -notional, notional) - fees
    cash = initial_cash + np.cumsum(np.bincount(idx, weights=cash_flow, minlength=n_dates))
    del cash_flow
    if walk.bills is not None:
        cash -= np.cumsum(walk.bills)
    # summation dust where the kernel's cash is exactly 0 (an all-in buy spent it): only there,
    # since a bill is real money however small (a cost-conscious decision pays $0.001)
    cash[(walk.cash == 0.0) & (np.abs(cash) <= 1e-9 * initial_cash)] = 0.0
    np.multiply(value, prices.mark, out=value, where=value != 0)  # ... now in money
    value[np.isnan(value)] = 0.0
    gross_value = np.abs(value).sum(axis=1)
    _check_cash_path(cash, walk.cash, gross_value, dates)
    equity = cash + value.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gross = gross_value / equity
        np.divide(value, equity[:, None], out=value)  # ... now weights

    fills = pd.DataFrame(amounts.T, columns=list(_FLOAT_COLUMNS), copy=False)
    fills.insert(0, "decision_date", dates[idx - 1] if len(idx) else dates[:0])
    fills.insert(1, "fill_date", dates[idx])
    fills.insert(2, "ticker", pd.Categorical.from_codes(rank[col], categories=names[alphabetical]))
    fills.insert(
        3,
        "side",
        pd.Categorical.from_codes(
            np.where(is_buy, 0, 1).astype(np.int8), categories=["buy", "sell"]
        ),
    )
    return SimulationResult(
        equity=pd.Series(equity, index=dates, name="equity", copy=False),
        cash=pd.Series(cash, index=dates, name="cash", copy=False),
        gross_exposure=pd.Series(gross, index=dates, name="gross_exposure", copy=False),
        fills=fills,
        weights=pd.DataFrame(value, index=dates, columns=panel.close.columns, copy=False),
    )


def _parity_error(what: str, date: pd.Timestamp, detail: str) -> RuntimeError:
    return RuntimeError(
        f"internal error: vectorbt and the execution kernel disagree on {what} at "
        f"{date.date()}{detail}. This is a bug in quantorch.kernel.execution or the engine, "
        "not in the inputs: please report it with the panel and orders."
    )


def _check_fills(records: np.ndarray, walk: _Walk, dates: pd.DatetimeIndex, tickers) -> None:
    """vectorbt's fills must be the kernel's, ticker by ticker, to 1e-9 relative."""
    idx, col = records["idx"], records["col"]
    matched = walk.filled[idx, col]
    signed = np.where(records["side"] == _BUY, records["size"], -records["size"])
    if (
        len(records) == np.count_nonzero(walk.filled)
        and _agree(signed, matched)
        and _agree(records["fees"], walk.fees[idx, col])
    ):
        return
    vbt_filled = np.zeros_like(walk.filled)
    vbt_fees = np.zeros_like(walk.fees)
    vbt_filled[idx, col] = signed
    vbt_fees[idx, col] = records["fees"]
    differs = ~(
        np.isclose(vbt_filled, walk.filled, rtol=_PARITY_RTOL, atol=0)
        & np.isclose(vbt_fees, walk.fees, rtol=_PARITY_RTOL, atol=0)
    )
    i, j = np.unravel_index(int(np.argmax(differs)), differs.shape)
    raise _parity_error(
        "a fill",
        dates[i],
        f" {tickers[j]}: vectorbt filled {vbt_filled[i, j]!r} shares (fees {vbt_fees[i, j]!r}), "
        f"the kernel {walk.filled[i, j]!r} (fees {walk.fees[i, j]!r})",
    )


def _agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal (the usual case: the same arithmetic), else equal to 1e-9 relative."""
    return np.array_equal(a, b) or np.allclose(a, b, rtol=_PARITY_RTOL, atol=0)


def _check_cash_path(
    cash: np.ndarray, kernel_cash: np.ndarray, gross_value: np.ndarray, dates
) -> None:
    """vectorbt's cash must be the kernel's to 1e-9 of the book (cash + gross positions)."""
    scale = np.maximum(np.abs(cash), np.abs(kernel_cash)) + gross_value
    differs = ~(np.abs(cash - kernel_cash) <= _PARITY_RTOL * scale)
    if differs.any():
        i = int(np.argmax(differs))
        raise _parity_error(
            "the cash", dates[i], f": vectorbt {cash[i]!r}, the kernel {kernel_cash[i]!r}"
        )


def _ffill(values: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN value of each column forward (NaN before the first)."""
    return pd.DataFrame(values, copy=False).ffill().to_numpy()


def _grid(frame: pd.DataFrame, dates: pd.DatetimeIndex, columns: pd.Index, name: str) -> np.ndarray:
    """``frame`` placed on the panel's (dates x tickers) grid, NaN elsewhere."""
    grid = np.full((len(dates), len(columns)), np.nan)
    if frame.empty:
        return grid
    index = pd.DatetimeIndex(frame.index)
    if not index.is_unique:
        raise ValueError(f"{name} has duplicate dates")
    rows = dates.get_indexer(index)
    if (rows < 0).any():
        bad = index[rows < 0][0]
        raise ValueError(
            f"{name} has date {bad.date()} that is not a session of the panel "
            f"({dates[0].date()} to {dates[-1].date()})"
        )
    cols = columns.get_indexer(frame.columns)
    if (cols < 0).any():
        bad = [c for c, i in zip(frame.columns, cols, strict=True) if i < 0]
        raise ValueError(f"{name} has tickers not in the panel: {bad[:5]}")
    grid[np.ix_(rows, cols)] = frame.to_numpy(dtype=np.float64)
    return grid


def _run_vectorbt(
    close: np.ndarray,
    size: np.ndarray,
    price: np.ndarray,
    costs: Costs,
    initial_cash: float,
    n_orders: int,
) -> np.ndarray:
    """Order records (vectorbt's ``order_dt``) of one cash-sharing group."""
    import vectorbt as vbt  # deferred: importing vectorbt takes ~2 s, only simulations need it

    portfolio = vbt.Portfolio.from_orders(
        close=close,
        size=size,
        size_type=_AMOUNT,
        direction=_BOTH,
        price=price,
        val_price=np.inf,  # order values (call sequence) at the order price, as the kernel
        fees=costs.fee,
        fixed_fees=0.0,
        slippage=costs.slippage,
        min_size=0.0,
        max_size=np.inf,
        size_granularity=np.nan,
        reject_prob=0.0,
        lock_cash=False,
        allow_partial=True,
        raise_reject=False,
        log=False,
        init_cash=initial_cash,
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        ffill_val_price=True,
        update_value=False,
        max_orders=max(n_orders, 1),
        attach_call_seq=False,
        freq="1D",
        engine="numba",
    )
    records = portfolio.order_records
    # vectorbt's Portfolio sits in a reference cycle: collect it now so that the order records
    # are freed as soon as simulate() is done with them, not at some later GC pass.
    del portfolio
    gc.collect()
    return records
