"""The fill rules (quantorch.kernel.execution) against vectorbt, the engine of record."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from quantorch.kernel.execution import (
    Costs,
    Fill,
    Order,
    client_order_id,
    deltas_from_orders,
    execute,
    fill_price,
    fills_from_execution,
    orders_from_deltas,
    target_shares,
)

RTOL = 1e-9
CASH = 100_000.0


# ---------------------------------------------------------------- vectorbt, the reference


def _vectorbt(sizes: np.ndarray, prices: np.ndarray, costs: Costs, cash: float) -> dict:
    """vectorbt's ``from_orders`` with share quantities, configured as the engine runs it."""
    import vectorbt as vbt

    portfolio = vbt.Portfolio.from_orders(
        close=prices,
        size=sizes,
        size_type=0,  # Amount
        direction=2,  # Both
        price=prices,
        fees=costs.fee,
        fixed_fees=0.0,
        slippage=costs.slippage,
        min_size=0.0,  # vectorbt's default is 1e-8 shares; the engine passes 0
        init_cash=cash,
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        allow_partial=True,
        lock_cash=False,
        freq="1D",
    )
    records = portfolio.order_records
    filled = np.zeros(sizes.shape)
    fees = np.zeros(sizes.shape)
    price = np.full(sizes.shape, np.nan)
    sign = np.where(records["side"] == 0, 1.0, -1.0)
    filled[records["idx"], records["col"]] = sign * records["size"]
    fees[records["idx"], records["col"]] = records["fees"]
    price[records["idx"], records["col"]] = records["price"]
    return {
        "filled": filled,
        "fees": fees,
        "price": price,
        "cash": np.asarray(portfolio.cash()).reshape(-1),
        "shares": np.asarray(portfolio.assets()),
    }


def _kernel(sizes: np.ndarray, prices: np.ndarray, costs: Costs, cash: float) -> dict:
    """The same sessions through :func:`execute`, one row at a time."""
    n_sessions, n_tickers = sizes.shape
    out = {
        "filled": np.zeros(sizes.shape),
        "fees": np.zeros(sizes.shape),
        "price": np.full(sizes.shape, np.nan),
        "slippage": np.zeros(sizes.shape),
        "cash": np.empty(n_sessions),
        "shares": np.empty(sizes.shape),
    }
    shares = np.zeros(n_tickers)
    for i in range(n_sessions):
        done = execute(shares, cash, sizes[i], prices[i], costs)
        shares, cash = done.shares, done.cash
        out["filled"][i] = done.filled
        out["fees"][i] = done.fees
        out["price"][i] = done.fill_prices
        out["slippage"][i] = done.slippage_cost
        out["cash"][i] = cash
        out["shares"][i] = shares
    return out


def _assert_same(kernel: dict, reference: dict, cash: float) -> None:
    np.testing.assert_array_equal(kernel["filled"] != 0, reference["filled"] != 0)
    np.testing.assert_allclose(kernel["filled"], reference["filled"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(kernel["fees"], reference["fees"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(kernel["price"], reference["price"], rtol=RTOL, atol=0)
    scale = cash + np.abs(reference["filled"] * np.nan_to_num(reference["price"])).sum()
    np.testing.assert_allclose(kernel["cash"], reference["cash"], rtol=RTOL, atol=RTOL * scale)
    share_scale = np.abs(reference["filled"]).sum()
    np.testing.assert_allclose(
        kernel["shares"], reference["shares"], rtol=RTOL, atol=RTOL * share_scale
    )


costs_strategy = st.builds(
    Costs,
    fee_bps=st.one_of(st.just(0.0), st.floats(0, 200)),
    slippage_bps=st.one_of(st.just(0.0), st.floats(0, 200)),
)


@st.composite
def books_and_orders(draw) -> tuple[np.ndarray, np.ndarray]:
    """Sessions x tickers of prices and share orders. The first session builds a random book
    from cash (longs and shorts); later ones trade it: sells, shorts, buys that need more
    cash than is left, NaN orders, tickers without a price, and orders vectorbt ignores."""
    n_tickers = draw(st.integers(1, 7))
    n_sessions = draw(st.integers(1, 4))
    shape = (n_sessions, n_tickers)
    price = st.one_of(st.floats(0.5, 2_000), st.just(np.nan))
    prices = np.array(
        draw(st.lists(price, min_size=n_tickers * n_sessions, max_size=n_tickers * n_sessions))
    ).reshape(shape)
    # An order as a fraction of the cash per ticker, in shares at a typical price.
    fraction = st.one_of(
        st.floats(-2, 3),
        st.sampled_from([0.0, 1.0, -1.0, np.nan, 1e-13, -1e-13]),
    )
    fractions = np.array(
        draw(st.lists(fraction, min_size=n_tickers * n_sessions, max_size=n_tickers * n_sessions))
    ).reshape(shape)
    typical = (
        np.nanmedian(np.where(np.isnan(prices), np.nan, prices))
        if np.isfinite(prices).any()
        else 100.0
    )
    sizes = fractions * CASH / n_tickers / typical
    sizes[np.abs(fractions) < 1e-12] = fractions[np.abs(fractions) < 1e-12]  # tiny stays tiny
    return prices, sizes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books_and_orders(), costs_strategy)
def test_execute_equals_vectorbt_from_orders(book, costs):
    prices, sizes = book
    kernel = _kernel(sizes, prices, costs, CASH)
    reference = _vectorbt(sizes, prices, costs, CASH)
    _assert_same(kernel, reference, CASH)


@st.composite
def all_in_rebalances(draw):
    """Target weights over sessions whose buys run out of cash: all-in, then rebalanced at
    moved prices, so some buys are partly filled and later ones rejected."""
    n_tickers = draw(st.integers(2, 8))
    n_sessions = draw(st.integers(2, 5))
    moves = np.array(
        draw(
            st.lists(
                st.floats(-0.1, 0.1),
                min_size=n_tickers * n_sessions,
                max_size=n_tickers * n_sessions,
            )
        )
    ).reshape(n_sessions, n_tickers)
    start = np.array(draw(st.lists(st.floats(1, 500), min_size=n_tickers, max_size=n_tickers)))
    prices = start * np.cumprod(1 + moves, axis=0)
    raw = np.array(
        draw(
            st.lists(
                st.floats(0, 1), min_size=n_tickers * n_sessions, max_size=n_tickers * n_sessions
            )
        )
    ).reshape(n_sessions, n_tickers)
    assume(bool((raw.sum(axis=1) > 0).all()))
    return prices, raw / raw.sum(axis=1, keepdims=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(all_in_rebalances(), costs_strategy)
def test_decision_time_sizing_then_execution_equals_vectorbt(case, costs):
    """The engine's loop: size at session t's prices, execute at t+1's; vectorbt gets the
    resulting share quantities."""
    prices, weights = case
    n_sessions, n_tickers = prices.shape
    sizes = np.full((n_sessions + 1, n_tickers), np.nan)
    fills_at = np.vstack([prices, prices[-1:] * 1.01])  # the last decision fills a day later
    shares, cash = np.zeros(n_tickers), CASH
    for i in range(n_sessions):
        if i:
            done = execute(shares, cash, sizes[i], fills_at[i], costs)
            shares, cash = done.shares, done.cash
        sizes[i + 1] = target_shares(shares, cash, weights[i], prices[i], costs)
    kernel = _kernel(sizes, fills_at, costs, CASH)
    reference = _vectorbt(sizes, fills_at, costs, CASH)
    _assert_same(kernel, reference, CASH)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 30),
    st.lists(st.floats(0.01, 5_000), min_size=30, max_size=30),
    costs_strategy,
    st.floats(1, 1e9),
)
def test_the_cash_buffer_rule_spends_an_all_cash_buy_to_the_cent(n, prices, costs, cash):
    prices = np.array(prices[:n])
    deltas = target_shares(np.zeros(n), cash, np.full(n, 1.0 / n), prices, costs)
    np.testing.assert_allclose(
        deltas, cash / n / (prices * (1 + costs.slippage) * (1 + costs.fee)), rtol=1e-12
    )
    done = execute(np.zeros(n), cash, deltas, prices, costs)
    np.testing.assert_allclose(done.filled, deltas, rtol=1e-12)  # every buy filled in full
    spent = (done.filled * done.fill_prices).sum() + done.fees.sum()
    assert spent == pytest.approx(cash, rel=1e-12, abs=0.005)
    assert 0 <= done.cash <= 0.005


@settings(max_examples=200, deadline=None)
@given(books_and_orders(), costs_strategy, st.floats(0, 1e7))
def test_buys_never_take_cash_below_zero(book, costs, cash):
    prices, sizes = book
    shares = np.zeros(prices.shape[1])
    for i in range(len(prices)):
        done = execute(shares, cash, sizes[i], prices[i], costs)
        bought = done.filled > 0
        sold = done.filled < 0
        proceeds = (-done.filled[sold] * done.fill_prices[sold]).sum() - done.fees[sold].sum()
        spent = (done.filled[bought] * done.fill_prices[bought]).sum() + done.fees[bought].sum()
        assert done.cash >= 0
        assert spent <= (cash + proceeds) * (1 + 1e-9)
        assert done.cash == pytest.approx(cash + proceeds - spent, rel=1e-9, abs=1e-6)
        shares, cash = done.shares, done.cash


def test_a_buy_that_needs_more_cash_is_partly_filled_with_the_cash_left():
    costs = Costs(fee_bps=10, slippage_bps=5)
    # Two buys of 60% of the cash each: the smaller-valued first, the second gets the rest.
    prices = np.array([100.0, 50.0])
    deltas = np.array([600.0, 1_300.0])  # values 60,000 and 65,000
    done = execute(np.zeros(2), CASH, deltas, prices, costs)
    first_cost = 600 * fill_price("buy", 100.0, costs.slippage) * (1 + costs.fee)
    left = CASH - first_cost
    assert done.filled[0] == 600
    assert done.filled[1] == pytest.approx(left / (1 + costs.fee) / (50 * 1.0005), rel=1e-12)
    assert done.fees[1] == pytest.approx(left - left / (1 + costs.fee), rel=1e-12)
    assert done.cash == 0


def test_orders_without_a_reference_price_are_skipped_and_tiny_ones_ignored():
    costs = Costs(1, 5)
    done = execute(
        np.array([10.0, 0.0, 0.0]),
        1_000.0,
        np.array([-10.0, 5.0, 1e-13]),
        np.array([np.nan, 20.0, 20.0]),
        costs,
    )
    assert list(done.filled) == [0.0, 5.0, 0.0]
    assert done.shares[0] == 10.0 and np.isnan(done.fill_prices[0])
    with pytest.raises(ValueError, match="positive"):
        execute(np.zeros(1), 1.0, np.array([1.0]), np.array([0.0]), costs)
    with pytest.raises(ValueError, match="cash"):
        execute(np.zeros(1), float("inf"), np.array([1.0]), np.array([1.0]), costs)
    # a debt (a decision bill the cash could not cover) fills no buy
    assert execute(np.zeros(1), -1.0, np.array([1.0]), np.array([1.0]), costs).filled[0] == 0


def test_target_shares_holds_nan_targets_and_values_the_book_at_the_marks():
    costs = Costs(0, 0)
    shares = np.array([10.0, 5.0, 0.0])
    marks = np.array([10.0, 20.0, 30.0])  # the second has no close today: carried at its mark
    prices = np.array([10.0, np.nan, 30.0])
    deltas = target_shares(shares, 800.0, np.array([0.5, 0.5, np.nan]), prices, costs, marks)
    equity = 800 + 100 + 100
    assert deltas[0] == pytest.approx(equity * 0.5 / 10 - 10)
    assert np.isnan(deltas[1]) and np.isnan(deltas[2])  # no price; NaN target
    short = target_shares(np.array([-1e6]), 1.0, np.array([0.1]), np.array([10.0]), costs)
    assert np.isnan(short).all()  # equity not positive: no order


# ---------------------------------------------------------------- values


account_names = st.text(min_size=1, max_size=40)
tickers = st.one_of(
    st.sampled_from(["AAPL", "BRK.B", "BRK-B", "BRKB", "^GSPC", "GSPC", "BF/B", "X"]),
    st.text(min_size=1, max_size=24),
)
sessions = st.dates(
    min_value=pd.Timestamp("1990-01-01").date(), max_value=pd.Timestamp("2100-12-31").date()
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(account_names, sessions, tickers, st.integers(0, 10**9 - 1)),
        min_size=1,
        max_size=30,
        unique=True,
    )
)
def test_client_order_ids_are_short_safe_deterministic_and_unique(keys):
    ids = [client_order_id(a, pd.Timestamp(s), t, q) for a, s, t, q in keys]
    assert ids == [client_order_id(a, pd.Timestamp(s), t, q) for a, s, t, q in keys]
    assert len(set(ids)) == len(keys)
    for identifier in ids:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,48}", identifier), identifier


def test_client_order_id_reads_plainly_for_plain_names():
    assert client_order_id("acct", pd.Timestamp("2021-03-05"), "AAPL") == "acct-20210305-AAPL-0"
    assert client_order_id("acct", "2021-03-05", "BRK.B", 2) == "acct-20210305-BRK.B-2"
    long = client_order_id("a very long account name, with spaces", "2021-03-05", "^GSPC")
    assert long.startswith("x.") and "-20210305-GSPC_" in long
    with pytest.raises(ValueError):
        client_order_id("acct", "2021-03-05", "AAPL", -1)


@settings(max_examples=200, deadline=None)
@given(books_and_orders(), costs_strategy)
def test_orders_and_fills_round_trip_through_execute(book, costs):
    prices, sizes = book
    names = [f"T{j}" for j in range(prices.shape[1])]
    session, next_session = pd.Timestamp("2021-03-04"), pd.Timestamp("2021-03-05")
    shares, cash = np.zeros(len(names)), CASH
    for i in range(len(prices)):
        targets = np.linspace(0, 1, len(names))
        orders = orders_from_deltas(names, sizes[i], targets, prices[i], session, "acct")
        assert all(isinstance(o, Order) and o.quantity > 0 for o in orders)
        deltas = deltas_from_orders(orders, names)
        wanted = np.isfinite(sizes[i]) & (np.abs(sizes[i]) > 1e-12)
        np.testing.assert_array_equal(deltas[wanted], sizes[i][wanted])
        assert np.isnan(deltas[~wanted]).all()
        done = execute(shares, cash, deltas, prices[i], costs)
        fills = fills_from_execution(orders, done, next_session, names)
        assert all(isinstance(f, Fill) for f in fills)
        by_ticker = {f.ticker: f for f in fills}
        assert len(by_ticker) == len(fills) == np.count_nonzero(done.filled)
        for j, name in enumerate(names):
            fill = by_ticker.get(name)
            if fill is None:
                assert done.filled[j] == 0
                continue
            signed = fill.quantity if fill.side == "buy" else -fill.quantity
            assert signed == done.filled[j] and fill.fill_price == done.fill_prices[j]
            assert fill.fees == done.fees[j] and fill.slippage_cost == done.slippage_cost[j]
            assert fill.notional == pytest.approx(fill.quantity * fill.fill_price, rel=1e-15)
            assert fill.fill_id == f"{fill.client_order_id}-1"
            assert fill.decision_session == session and fill.fill_session == next_session
            assert fill.slippage_cost == pytest.approx(
                fill.quantity * prices[i, j] * costs.slippage, rel=1e-12
            )
        shares, cash = done.shares, done.cash


def test_values_are_frozen_and_checked():
    order = Order("acct-20210305-AAPL-0", "AAPL", "buy", 1.0, pd.Timestamp("2021-03-05"), 0.1, 10)
    with pytest.raises(AttributeError):
        order.quantity = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        Order("x", "AAPL", "buy", 0.0, pd.Timestamp("2021-03-05"), 0.1, 10.0)
    with pytest.raises(ValueError):
        Order("x", "AAPL", "hold", 1.0, pd.Timestamp("2021-03-05"), 0.1, 10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Costs(fee_bps=-1, slippage_bps=0)
    with pytest.raises(ValueError, match="one per ticker"):
        deltas_from_orders([order, order], ["AAPL"])
