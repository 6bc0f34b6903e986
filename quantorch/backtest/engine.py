"""The backtest kernel: target weights in, fills and daily equity out.

Timing (design brief, section 3)
--------------------------------
- A row of ``target_weights`` is a decision taken at the close of session t; it may only use
  data up to t (the strategies' contract).
- Its orders fill at session t+1 (the next row of ``panel.dates``): at the adjusted open of
  t+1 where that cell has an open, else at the adjusted close of t+1. A decision on the last
  session never fills; an order for a ticker with no price at t+1 is skipped (no fill row).
- A NaN target means "leave this ticker's position as it is".

Execution
---------
vectorbt's ``Portfolio.from_orders`` (numba) does cash and positions: one shared cash pool
(``cash_sharing=True, group_by=True``), sells before buys (``call_seq='auto'``), target
percentages valued at the un-slipped reference fill price (``val_price``), and no order may
spend more cash than the pool holds (a buy that would is partly filled with the cash left).
Slippage moves the fill price adversely by ``slippage_bps`` (buys pay ``p*(1+s)``, sells get
``p*(1-s)``); the fee is ``fee_bps`` of the slipped notional. Costs are always charged.

Cash-buffer rule (how a target weight becomes an order)
-------------------------------------------------------
Every non-NaN target weight ``w`` is applied as ``w / ((1 + s) * (1 + f))`` of equity valued at
the reference prices, on both sides and on every rebalance. Buying that weight from cash costs
exactly ``w`` of equity including slippage and fees, so an all-cash buy of weights that sum to
1 spends the cash to the cent and never overdraws it: for an equal-weight buy of N tickers
from cash ``C``, ``shares_i = (C / N) / (p_i * (1 + s) * (1 + f))``. Because the same factor is
applied to every rebalance, unchanged targets map to unchanged effective targets: daily
rebalancing to the same weights only trades the drift (both ways), never a systematic sell.
The held book therefore sits a factor ``1 / ((1+s)(1+f))`` (0.06% at 1 + 5 bps) below the
nominal weights: that cash is the buffer that pays the next rebalance's costs.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quantorch.data.panel import PricePanel

__all__ = ["FILL_COLUMNS", "Costs", "SimulationResult", "simulate"]

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
_TARGET_PERCENT = 5  # vectorbt.portfolio.enums.SizeType.TargetPercent
_BOTH = 2  # vectorbt.portfolio.enums.Direction.Both


@dataclass(frozen=True)
class Costs:
    """Trading costs, charged on every fill.

    Parameters
    ----------
    fee_bps
        Commission in basis points of traded notional (quantity x fill price).
    slippage_bps
        Adverse price move in basis points of the reference fill price.
    """

    fee_bps: float
    slippage_bps: float

    def __post_init__(self) -> None:
        for field in ("fee_bps", "slippage_bps"):
            value = getattr(self, field)
            if not np.isfinite(value) or not 0 <= value < 10_000:
                raise ValueError(f"Costs.{field} must be in [0, 10000) bps, got {value!r}")

    @property
    def fee(self) -> float:
        return self.fee_bps / 1e4

    @property
    def slippage(self) -> float:
        return self.slippage_bps / 1e4


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
    """
    if not np.isfinite(initial_cash) or initial_cash <= 0:
        raise ValueError(f"initial_cash must be a positive number, got {initial_cash!r}")
    dates = pd.DatetimeIndex(panel.dates)
    tickers = list(panel.tickers)
    if not (dates.is_monotonic_increasing and dates.is_unique):
        raise ValueError("panel dates must be sorted and unique")
    n_dates, n_tickers = len(dates), len(tickers)

    target = _target_matrix(target_weights, dates, panel.close.columns)
    close = panel.close.to_numpy(dtype=np.float64)
    opens = panel.open.to_numpy(dtype=np.float64)
    reference = np.where(np.isnan(opens), close, opens)  # the un-slipped fill price
    del opens
    # The mark for valuation at the close: the close, else that day's fill price, carried on.
    mark = _ffill(np.where(np.isnan(close), reference, close))

    # Decision at row t -> order at row t+1, scaled by the cash-buffer rule.
    buffer = (1.0 + costs.slippage) * (1.0 + costs.fee)
    size = np.full((n_dates, n_tickers), np.nan)
    if n_dates > 1:
        np.divide(target[:-1], buffer, out=size[1:])
    del target
    # Value held positions at the fill price where there is one, else at the last mark.
    val_price = reference.copy()
    if n_dates > 1:
        np.copyto(val_price[1:], mark[:-1], where=np.isnan(reference[1:]))
    n_orders = int(np.count_nonzero(~np.isnan(size) & ~np.isnan(reference)))

    records = _run_vectorbt(close, size, reference, val_price, costs, initial_cash, n_orders)
    del size, val_price, reference

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
    quantity, fill_price, notional, fees, slippage_cost = amounts
    np.take(records["size"], order, out=quantity)
    np.take(records["price"], order, out=fill_price)
    np.take(records["fees"], order, out=fees)
    del records, order
    np.multiply(quantity, fill_price, out=notional)
    # fill = ref * (1 + s) for buys, ref * (1 - s) for sells: the slippage paid per share is
    # fill * s / (1 +- s), exactly, without keeping the reference prices around.
    s = costs.slippage
    np.multiply(notional, np.where(is_buy, s / (1.0 + s), s / (1.0 - s)), out=slippage_cost)

    flow = np.zeros((n_dates, n_tickers))
    flow[idx, col] = np.where(is_buy, quantity, -quantity)  # at most one order per cell
    value = np.cumsum(flow, axis=0, out=flow)  # positions in shares ...
    cash_flow = np.where(is_buy, -notional, notional) - fees
    cash = initial_cash + np.cumsum(np.bincount(idx, weights=cash_flow, minlength=n_dates))
    del cash_flow
    cash[np.abs(cash) <= 1e-9 * initial_cash] = 0.0  # summation dust from an all-in buy
    np.multiply(value, mark, out=value, where=value != 0)  # ... now in money
    del mark
    value[np.isnan(value)] = 0.0
    equity = cash + value.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gross = np.abs(value).sum(axis=1) / equity
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


def _ffill(values: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN value of each column forward (NaN before the first)."""
    return pd.DataFrame(values, copy=False).ffill().to_numpy()


def _target_matrix(
    target_weights: pd.DataFrame, dates: pd.DatetimeIndex, columns: pd.Index
) -> np.ndarray:
    """``target_weights`` placed on the panel's (dates x tickers) grid, NaN elsewhere."""
    target = np.full((len(dates), len(columns)), np.nan)
    if target_weights.empty:
        return target
    decision_dates = pd.DatetimeIndex(target_weights.index)
    if not decision_dates.is_unique:
        raise ValueError("target_weights has duplicate decision dates")
    rows = dates.get_indexer(decision_dates)
    if (rows < 0).any():
        bad = decision_dates[rows < 0][0]
        raise ValueError(
            f"target_weights has decision date {bad.date()} that is not a session of the panel "
            f"({dates[0].date()} to {dates[-1].date()})"
        )
    cols = columns.get_indexer(target_weights.columns)
    if (cols < 0).any():
        bad = [c for c, i in zip(target_weights.columns, cols, strict=True) if i < 0]
        raise ValueError(f"target_weights has tickers not in the panel: {bad[:5]}")
    values = target_weights.to_numpy(dtype=np.float64)
    if np.isinf(values).any():
        raise ValueError("target_weights has infinite values (use NaN to keep a position)")
    target[np.ix_(rows, cols)] = values
    return target


def _run_vectorbt(
    close: np.ndarray,
    size: np.ndarray,
    price: np.ndarray,
    val_price: np.ndarray,
    costs: Costs,
    initial_cash: float,
    n_orders: int,
) -> np.ndarray:
    """Order records (vectorbt's ``order_dt``) of one cash-sharing group."""
    import vectorbt as vbt  # deferred: importing vectorbt takes ~2 s, only simulations need it

    portfolio = vbt.Portfolio.from_orders(
        close=close,
        size=size,
        size_type=_TARGET_PERCENT,
        direction=_BOTH,
        price=price,
        val_price=val_price,
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
