"""The fill rules, once: sizing, fill price, costs and the cash check, as pure functions.

The backtest engine, the session-by-session backtest driver and the simulated broker all call
these functions; a real broker (Alpaca) receives the same :class:`Order` values.

Timing
------
An order is decided at the close of session t and **sized at t's closes**: it is a share
quantity from the moment it exists, as a real broker needs it at submission. It fills at
session t+1 at the reference price: the adjusted open of t+1 where that bar has one, else the
adjusted close of t+1. A ticker without a reference price at t+1 does not fill (the order is
skipped, not carried over).

Sizing and the cash-buffer rule
-------------------------------
:func:`target_shares` turns target weights of equity into signed share changes. Equity is the
cash plus every holding valued at its mark (the close, else the last known price). A target
weight ``w`` is applied as ``w / ((1 + s) * (1 + f))`` of that equity, at the sizing price:
buying it from cash at that price costs exactly ``w`` of equity with slippage ``s`` and fee
``f``, so an all-cash buy of weights summing to 1 spends the cash to the cent at the sizing
prices. The same factor applies to every rebalance, so unchanged targets only trade the drift.
A NaN target means no order; so does a ticker without a finite, positive sizing price, and a
book whose equity is not positive.

Because the order is sized at t and fills at t+1, the fill costs what t+1's price says: more
than the cash set aside when the price rose overnight, less when it fell.

Sequencing and partial fills
----------------------------
:func:`execute` reproduces vectorbt's ``Portfolio.from_orders`` with ``size_type=Amount``,
one shared cash pool (``cash_sharing=True, group_by=True``), ``call_seq='auto'``,
``allow_partial=True``, ``lock_cash=False``, ``direction=Both``:

- Orders run in ascending order of their approximate value, ``quantity * reference price``
  (a stable sort): every sell (negative value) before every buy, the largest sell first, the
  smallest buy first.
- A sell always fills in full; selling below zero opens a short, whose proceeds are cash.
- A buy fills in full when its cost with fees is at most the cash left (within vectorbt's
  tolerance, 1e-9 relative); otherwise it is partly filled with all the cash left
  (``quantity = cash / (1 + f) / fill price``, the fee is the rest) and every later buy of the
  session is rejected. Cash therefore never goes below zero.
- Like vectorbt, results within 1e-9 relative (1e-12 absolute) of zero are zero: a cash
  balance or position that small is treated as none, and an order for at most 1e-12 shares is
  ignored. There is no minimum order size, fixed fee or share granularity (the engine passes
  ``min_size=0``; vectorbt's own default would drop orders under 1e-8 shares).
- The sort key uses the order's reference price (vectorbt's ``val_price=inf``). Where a
  ticker has no reference price its order is skipped, so where it would sort is immaterial.

Costs
-----
Buys pay ``p * (1 + s)``, sells get ``p * (1 - s)`` (:func:`fill_price`); the fee is ``f`` of
the slipped notional (:func:`fill_fees`); the slippage cost is ``quantity * p * s`` against the
reference price ``p`` (:func:`slippage_cost`). Costs are always charged.

Decision bills
--------------
What a decision cost besides trading (the tools the orchestrator called and, for the llm
orchestrator, its own tokens) is paid in cash at the decision: at session t's close, after
t's fills and before the orders decided at t are sized, so every figure is net of all costs
and the orders are sized on the book that paid. A bill the cash cannot cover (a fully
invested book) leaves the cash negative by at most that bill; the next session's sale
proceeds pay it first, and no buy fills while the cash is not positive.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "Costs",
    "Execution",
    "Fill",
    "Order",
    "Position",
    "Side",
    "client_order_id",
    "deltas_from_orders",
    "execute",
    "fill_fees",
    "fill_price",
    "fills_from_execution",
    "orders_from_deltas",
    "slippage_cost",
    "target_shares",
]

Side = Literal["buy", "sell"]

# vectorbt.utils.math_: rel_tol and abs_tol of is_close_nb, add_nb and friends.
_REL_TOL = 1e-9
_ABS_TOL = 1e-12


@dataclass(frozen=True, slots=True)
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
        """The fee as a fraction of notional."""
        return self.fee_bps / 1e4

    @property
    def slippage(self) -> float:
        """The slippage as a fraction of the reference price."""
        return self.slippage_bps / 1e4


@dataclass(frozen=True, slots=True)
class Order:
    """A share quantity to trade, decided and sized at the close of ``decision_session``.

    Attributes
    ----------
    client_order_id
        Deterministic id (see :func:`client_order_id`); a broker refuses a duplicate.
    ticker
        The instrument.
    side
        ``"buy"`` or ``"sell"``.
    quantity
        Shares, > 0.
    decision_session
        The session at whose close the order was decided and sized.
    target_weight
        The weight of equity the order moves the position towards.
    reference_price
        The close it was sized at.
    """

    client_order_id: str
    ticker: str
    side: Side
    quantity: float
    decision_session: pd.Timestamp
    target_weight: float
    reference_price: float

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell"):
            raise ValueError(f"Order.side must be 'buy' or 'sell', got {self.side!r}")
        if not (np.isfinite(self.quantity) and self.quantity > 0):
            raise ValueError(f"Order.quantity must be a positive number, got {self.quantity!r}")


@dataclass(frozen=True, slots=True)
class Fill:
    """What one order got, at ``fill_session``.

    Attributes
    ----------
    fill_id
        Unique per fill (the simulated broker: ``f"{client_order_id}-1"``).
    client_order_id
        The order it fills.
    ticker, side
        As the order's.
    quantity
        Shares filled, > 0; less than ordered when the cash ran out.
    fill_price
        Per share, slippage included.
    notional
        ``quantity * fill_price``.
    fees
        Commission paid.
    slippage_cost
        USD lost to slippage against the reference price.
    decision_session, fill_session
        When the order was decided, and when it filled.
    """

    fill_id: str
    client_order_id: str
    ticker: str
    side: Side
    quantity: float
    fill_price: float
    notional: float
    fees: float
    slippage_cost: float
    decision_session: pd.Timestamp
    fill_session: pd.Timestamp

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell"):
            raise ValueError(f"Fill.side must be 'buy' or 'sell', got {self.side!r}")
        if not (np.isfinite(self.quantity) and self.quantity > 0):
            raise ValueError(f"Fill.quantity must be a positive number, got {self.quantity!r}")


@dataclass(frozen=True, slots=True)
class Position:
    """A holding (negative ``quantity``: short) valued at its mark."""

    ticker: str
    quantity: float
    market_price: float
    market_value: float


@dataclass(frozen=True, slots=True)
class Execution:
    """One session's orders executed: the book after them and what each ticker got.

    Arrays are over the tickers passed to :func:`execute`, in that order, and read-only.

    Attributes
    ----------
    shares
        Positions after the fills (negative: short).
    cash
        Cash after the fills, >= 0.
    filled
        Signed shares filled (buys > 0, sells < 0); 0 where nothing filled.
    fill_prices
        Fill price per share, slippage included; NaN where nothing filled.
    fees
        Fees paid; 0 where nothing filled.
    slippage_cost
        USD lost to slippage against the reference price; 0 where nothing filled.
    """

    shares: np.ndarray
    cash: float
    filled: np.ndarray
    fill_prices: np.ndarray
    fees: np.ndarray
    slippage_cost: np.ndarray


# ---------------------------------------------------------------- client order ids

_PLAIN_ACCOUNT = re.compile(r"[A-Za-z0-9]{1,12}")
_PLAIN_TICKER = re.compile(r"[A-Za-z0-9.]{1,16}")
_UNSAFE = re.compile(r"[^A-Za-z0-9.]")
_MAX_SEQUENCE = 10**9  # 9 digits: with the widest account and ticker parts, 48 characters


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def client_order_id(account: str, session: object, ticker: str, sequence: int = 0) -> str:
    """The deterministic client order id of an order, e.g. ``"acct-20210305-AAPL-0"``.

    Parameters
    ----------
    account
        The account name. Up to 12 letters and digits appear as they are; any other name is
        replaced by ``"x."`` and 10 hex digits of its SHA-256.
    session
        The decision session (anything :class:`pandas.Timestamp` accepts); its date is used.
    ticker
        Up to 16 letters, digits and dots appear as they are; any other ticker (``BRK-B``,
        ``^GSPC``) becomes its letters and digits, ``"_"`` and 7 hex digits of its SHA-256.
    sequence
        Distinguishes several orders for one ticker in one session, 0 to 999,999,999.

    Returns
    -------
    str
        At most 48 characters of ``[A-Za-z0-9._-]``; distinct (account, session, ticker,
        sequence) give distinct ids (the dot and the underscore never occur in a plain
        account or ticker, so hashed parts cannot collide with plain ones).

    Raises
    ------
    ValueError
        An empty account or ticker, a session that is not a date, or a sequence out of range.
    TypeError
        A sequence that is not an integer.
    """
    if not account or not ticker:
        raise ValueError("client_order_id needs a non-empty account and ticker")
    if isinstance(sequence, bool) or not isinstance(sequence, int | np.integer):
        raise TypeError(f"sequence must be an integer, got {sequence!r}")
    if not 0 <= sequence < _MAX_SEQUENCE:
        raise ValueError(f"sequence must be in [0, {_MAX_SEQUENCE}), got {sequence}")
    stamp = pd.Timestamp(session)
    if pd.isna(stamp):
        raise ValueError(f"session must be a date, got {session!r}")
    account_part = account if _PLAIN_ACCOUNT.fullmatch(account) else f"x.{_digest(account, 10)}"
    if _PLAIN_TICKER.fullmatch(ticker):
        ticker_part = ticker
    else:
        ticker_part = f"{_UNSAFE.sub('', ticker).replace('.', '')[:8]}_{_digest(ticker, 7)}"
    return f"{account_part}-{stamp:%Y%m%d}-{ticker_part}-{int(sequence)}"


# ---------------------------------------------------------------- per-fill formulas


def fill_price(side: Side, reference_price: float | np.ndarray, slippage: float):
    """The price per share a fill gets: buys pay ``p * (1 + s)``, sells get ``p * (1 - s)``.

    Parameters
    ----------
    side
        ``"buy"`` or ``"sell"``.
    reference_price
        The un-slipped price ``p`` (scalar or array).
    slippage
        ``s``, a fraction (``Costs.slippage``).
    """
    if side == "buy":
        return reference_price * (1 + slippage)
    if side == "sell":
        return reference_price * (1 - slippage)
    raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")


def fill_fees(notional: float | np.ndarray, fee: float):
    """The fee of a fill: ``fee`` (``Costs.fee``) of the slipped notional."""
    return notional * fee


def slippage_cost(
    quantity: float | np.ndarray, reference_price: float | np.ndarray, slippage: float
):
    """USD lost to slippage against the reference price: ``|quantity| * p * s``."""
    return np.abs(quantity) * reference_price * slippage


# ---------------------------------------------------------------- vectorbt's arithmetic


def _is_close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """vectorbt's ``is_close_nb``, elementwise, for finite ``a`` and ``b``."""
    tolerance = np.maximum(_REL_TOL * np.maximum(np.abs(a), np.abs(b)), _ABS_TOL)
    return np.abs(a - b) <= tolerance


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """vectorbt's ``add_nb``, elementwise, for finite ``a`` and ``b``: a sum within tolerance
    of zero is zero. (``add_nb`` asks ``is_close(|a|, |b|)`` for opposite signs and
    ``is_close(a + b, 0)`` otherwise; both are this one test, since ``|a + b| >= max(|a|,
    |b|)`` when the signs agree.)"""
    total = a + b
    tolerance = np.maximum(_REL_TOL * np.maximum(np.abs(a), np.abs(b)), _ABS_TOL)
    total[np.abs(total) <= tolerance] = 0.0
    return total


def _snap(value: float) -> float:
    """vectorbt snaps the cash (and each position) to zero before every order."""
    return 0.0 if abs(value) <= _ABS_TOL else value


# ---------------------------------------------------------------- sizing


def target_shares(
    shares: np.ndarray,
    cash: float,
    targets: np.ndarray,
    prices: np.ndarray,
    costs: Costs,
    marks: np.ndarray | None = None,
) -> np.ndarray:
    """Signed share changes that move each ticker to its target weight of equity.

    Parameters
    ----------
    shares
        Current positions, one per ticker (negative: short).
    cash
        Current cash.
    targets
        Target weights of equity; NaN means no order for that ticker.
    prices
        The sizing prices (the decision session's closes). A ticker without a finite,
        positive price gets no order.
    costs
        The cash-buffer factor ``(1 + s) * (1 + f)`` comes from these.
    marks
        The prices that value the book (the close, else the last known price); ``prices``
        when None. A holding without a finite mark adds nothing to equity.

    Returns
    -------
    numpy.ndarray
        ``targets / ((1 + s) * (1 + f)) * equity / prices - shares``; NaN where there is no
        order, all NaN when equity is not positive.
    """
    shares = np.asarray(shares, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    prices = np.asarray(prices, dtype=np.float64)
    valuation = prices if marks is None else np.asarray(marks, dtype=np.float64)
    held = (shares != 0) & np.isfinite(valuation)
    equity = float(cash) + float(np.dot(shares[held], valuation[held]))
    if not equity > 0:
        return np.full(shares.shape, np.nan)
    buffer = (1 + costs.slippage) * (1 + costs.fee)
    with np.errstate(invalid="ignore", divide="ignore"):
        deltas = targets * (equity / buffer) / prices - shares
    deltas[~(np.isfinite(prices) & (prices > 0))] = np.nan
    return deltas


# ---------------------------------------------------------------- execution


def execute(
    shares: np.ndarray,
    cash: float,
    deltas: np.ndarray,
    reference_prices: np.ndarray,
    costs: Costs,
) -> Execution:
    """Execute one session's share orders against the book, as vectorbt would.

    Parameters
    ----------
    shares
        Positions before the session's fills.
    cash
        Cash before the fills. Negative only when a decision's bill (its tool and model
        costs, debited at the decision) exceeded the cash: that debt is paid from the
        session's sale proceeds first, and no buy fills while cash is not positive.
    deltas
        Signed shares to trade per ticker (buy > 0, sell < 0); NaN or 0 means no order.
    reference_prices
        Un-slipped fill prices; NaN skips that ticker's order.
    costs
        Fee and slippage.

    Returns
    -------
    Execution
        The book after the fills and each ticker's fill. Equals vectorbt's
        ``Portfolio.from_orders`` (``size_type=Amount``, shared cash, ``call_seq='auto'``,
        ``allow_partial=True``, ``lock_cash=False``, ``direction=Both``) for that session,
        see the module docstring.

    Raises
    ------
    ValueError
        Infinite or NaN cash, an order for a ticker whose reference price is not positive,
        or an infinite order or reference price where the order would fill.
    """
    shares = np.asarray(shares, dtype=np.float64)
    deltas = np.asarray(deltas, dtype=np.float64)
    reference = np.asarray(reference_prices, dtype=np.float64)
    if not shares.shape == deltas.shape == reference.shape or shares.ndim != 1:
        raise ValueError(
            f"shares, deltas and reference_prices must be 1-d arrays of one length, got "
            f"{shares.shape}, {deltas.shape}, {reference.shape}"
        )
    cash = _snap(float(cash))
    if not np.isfinite(cash):
        raise ValueError(f"cash must be a finite number, got {cash!r}")
    if np.any((reference <= 0) & ~np.isnan(deltas)):
        raise ValueError(
            "reference price must be a positive number where there is an order, got "
            f"{reference[(reference <= 0) & ~np.isnan(deltas)][0]!r}"
        )
    # vectorbt ignores NaN sizes and prices, and sizes within 1e-12 of zero.
    active = (reference > 0) & (np.abs(deltas) > _ABS_TOL)  # False for NaN
    value = deltas * reference  # vectorbt's approximate order value: the sort key
    if not np.isfinite(value[active]).all():
        raise ValueError("deltas and reference prices must be finite where there is an order")
    fee, slip = costs.fee, costs.slippage
    position = np.where(np.abs(shares) <= _ABS_TOL, 0.0, shares)
    filled = np.zeros_like(shares)
    prices = np.full_like(shares, np.nan)
    fees = np.zeros_like(shares)
    cost = np.zeros_like(shares)
    sells = np.flatnonzero(active & (deltas < 0))
    buys = np.flatnonzero(active & (deltas > 0))

    if len(sells):
        sells = sells[np.argsort(value[sells], kind="stable")]
        size = -deltas[sells]
        sell_reference = reference[sells]
        adj_price = fill_price("sell", sell_reference, slip)
        acquired = size * adj_price
        paid = fill_fees(acquired, fee)
        proceeds = _add(acquired, -paid)
        if cash == 0.0:
            # vectorbt snaps a cash balance <= 1e-12 to zero before each order: proceeds
            # that small vanish until the first larger one (only with sub-cent prices).
            large = np.flatnonzero(proceeds > _ABS_TOL)
            proceeds = proceeds[large[0] :] if len(large) else proceeds[-1:]
        proceeds[0] += cash  # then summed in order, as vectorbt adds them
        cash = _snap(float(np.cumsum(proceeds)[-1]))
        filled[sells] = -size
        prices[sells] = adj_price
        fees[sells] = paid
        cost[sells] = slippage_cost(size, sell_reference, slip)
        position[sells] = _add(position[sells], -size)

    if len(buys) and cash > 0:
        buys = buys[np.argsort(value[buys], kind="stable")]
        size = deltas[buys]
        buy_reference = reference[buys]
        adj_price = fill_price("buy", buy_reference, slip)
        required = size * adj_price
        paid = fill_fees(required, fee)
        total = required + paid
        # Cash before each buy if every earlier one filled in full (sequential sums, as vbt).
        steps = np.empty(len(total) + 1)
        steps[0] = cash
        np.negative(total, out=steps[1:])
        running = np.cumsum(steps)
        before, after = running[:-1], running[1:]
        emptied = _is_close(before, total)  # add_nb leaves exactly 0 cash after this buy
        stop = (before <= _ABS_TOL) | ~(emptied | (total < before))  # cash 0, or too dear
        stop[1:] |= emptied[:-1]
        n_full = int(np.argmax(stop)) if stop.any() else len(buys)
        full = buys[:n_full]
        filled[full] = size[:n_full]
        prices[full] = adj_price[:n_full]
        fees[full] = paid[:n_full]
        cost[full] = slippage_cost(size[:n_full], buy_reference[:n_full], slip)
        position[full] = _add(position[full], size[:n_full])
        if n_full == len(buys):
            cash = 0.0 if emptied[-1] else float(after[-1])
        elif n_full > 0 and emptied[n_full - 1]:
            cash = 0.0  # the cash ran out exactly: every later buy is rejected
        elif before[n_full] > _ABS_TOL:
            # Partly filled with all the cash left (vectorbt's buy_nb); later buys rejected.
            left = float(before[n_full])
            col = buys[n_full]
            spend = left / (1 + fee)
            quantity = spend / adj_price[n_full]
            filled[col] = quantity
            prices[col] = adj_price[n_full]
            fees[col] = left - spend
            cost[col] = slippage_cost(quantity, buy_reference[n_full], slip)
            position[col] = _add(position[col : col + 1], np.array([quantity]))[0]
            cash = 0.0
        else:
            cash = 0.0  # at most 1e-12 left: vectorbt treats it as none
        cash = _snap(cash)

    for array in (position, filled, prices, fees, cost):
        array.flags.writeable = False
    return Execution(
        shares=position,
        cash=cash,
        filled=filled,
        fill_prices=prices,
        fees=fees,
        slippage_cost=cost,
    )


# ---------------------------------------------------------------- arrays <-> values


def orders_from_deltas(
    tickers: Sequence[str],
    deltas: np.ndarray,
    targets: np.ndarray,
    prices: np.ndarray,
    session: object,
    account: str,
) -> list[Order]:
    """The :class:`Order` values of one session's share changes.

    Parameters
    ----------
    tickers
        One name per element of the arrays.
    deltas
        Signed shares (see :func:`target_shares`); NaN, or at most 1e-12 shares (which
        vectorbt ignores), gives no order.
    targets
        The target weight behind each delta.
    prices
        The sizing prices (the decision session's closes).
    session
        The decision session.
    account
        For the client order ids (sequence 0).

    Returns
    -------
    list of Order
        In the order of ``tickers``.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    prices = np.asarray(prices, dtype=np.float64)
    if not len(tickers) == len(deltas) == len(targets) == len(prices):
        raise ValueError("tickers, deltas, targets and prices must have one length")
    stamp = pd.Timestamp(session)
    with np.errstate(invalid="ignore"):
        wanted = np.flatnonzero(np.isfinite(deltas) & (np.abs(deltas) > _ABS_TOL))
    return [
        Order(
            client_order_id=client_order_id(account, stamp, str(tickers[i])),
            ticker=str(tickers[i]),
            side="buy" if deltas[i] > 0 else "sell",
            quantity=float(abs(deltas[i])),
            decision_session=stamp,
            target_weight=float(targets[i]),
            reference_price=float(prices[i]),
        )
        for i in wanted
    ]


def _positions_of(orders: Sequence[Order], tickers: Sequence[str]) -> np.ndarray:
    where = {str(t): i for i, t in enumerate(tickers)}
    if len(where) != len(tickers):
        raise ValueError("tickers has duplicates")
    positions = np.empty(len(orders), dtype=np.int64)
    for k, order in enumerate(orders):
        if order.ticker not in where:
            raise ValueError(
                f"order {order.client_order_id!r}: ticker {order.ticker!r} is not in tickers"
            )
        positions[k] = where[order.ticker]
    if len(set(positions.tolist())) != len(positions):
        raise ValueError("more than one order for a ticker in one session: send one per ticker")
    return positions


def deltas_from_orders(orders: Sequence[Order], tickers: Sequence[str]) -> np.ndarray:
    """Signed share quantities of ``orders`` over ``tickers`` (NaN where none), for
    :func:`execute`. At most one order per ticker."""
    deltas = np.full(len(tickers), np.nan)
    positions = _positions_of(orders, tickers)
    for k, order in zip(positions, orders, strict=True):
        deltas[k] = order.quantity if order.side == "buy" else -order.quantity
    return deltas


def fills_from_execution(
    orders: Sequence[Order],
    execution: Execution,
    fill_session: object,
    tickers: Sequence[str],
) -> list[Fill]:
    """The :class:`Fill` of each order that got one.

    Parameters
    ----------
    orders
        The session's orders, at most one per ticker.
    execution
        What :func:`execute` returned for them.
    fill_session
        The session they filled at.
    tickers
        The tickers the execution's arrays are over (those passed to
        :func:`deltas_from_orders`).

    Returns
    -------
    list of Fill
        One per order that filled, in the order of ``orders``; ``fill_id`` is
        ``f"{client_order_id}-1"``. An order that was skipped (no price) or rejected (no
        cash left) has none.
    """
    stamp = pd.Timestamp(fill_session)
    positions = _positions_of(orders, tickers)
    fills = []
    for k, order in zip(positions, orders, strict=True):
        quantity = float(execution.filled[k])
        if quantity == 0:
            continue
        if (quantity > 0) != (order.side == "buy"):
            raise ValueError(f"order {order.client_order_id!r} is a {order.side}, its fill is not")
        price = float(execution.fill_prices[k])
        fills.append(
            Fill(
                fill_id=f"{order.client_order_id}-1",
                client_order_id=order.client_order_id,
                ticker=order.ticker,
                side=order.side,
                quantity=abs(quantity),
                fill_price=price,
                notional=abs(quantity) * price,
                fees=float(execution.fees[k]),
                slippage_cost=float(execution.slippage_cost[k]),
                decision_session=order.decision_session,
                fill_session=stamp,
            )
        )
    return fills
