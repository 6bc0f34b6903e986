"""Decision bills: what the tools and the model's tokens cost is a cash debit at the decision,
so every figure is net of it; vectorbt stays the engine of record for the fills."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantorch.backtest.engine import Costs, simulate, simulate_orders
from quantorch.data.calendar import period_ends
from quantorch.data.panel import PricePanel
from quantorch.kernel.execution import execute

CASH = 1_000_000.0
COSTS = Costs(1.0, 5.0)


@pytest.fixture(scope="module")
def panel_2020(sample_panel: PricePanel) -> PricePanel:
    cut = slice(pd.Timestamp("2020-01-02"), None)
    return PricePanel(
        *(getattr(sample_panel, f).loc[cut] for f in ("close", "open", "high", "low", "volume"))
    )


def _orders_of(result) -> pd.DataFrame:
    signed = np.where(result.fills["side"] == "buy", 1.0, -1.0) * result.fills["quantity"]
    return pd.DataFrame({"date": result.fills["fill_date"],
                         "ticker": result.fills["ticker"].astype(str), "quantity": signed}
                        ).pivot(index="date", columns="ticker", values="quantity")


def _half_invested(panel: PricePanel):
    """Monthly rebalances to 50% of equity: the cash always covers the bills."""
    dates = period_ends(panel.dates, "monthly")
    weights = pd.DataFrame(0.5 / len(panel.tickers), index=pd.DatetimeIndex(dates),
                           columns=panel.tickers)
    return simulate(panel, weights, COSTS, CASH)


def test_bills_are_a_cash_debit_at_the_decision_and_every_figure_is_net_of_them(panel_2020):
    ran = _half_invested(panel_2020)
    orders = _orders_of(ran)
    decisions = panel_2020.dates[::5]
    bills = pd.Series(0.75, index=decisions)  # $0.75 of tools every fifth session
    paid = simulate_orders(panel_2020, orders, COSTS, CASH, bills=bills)
    # the same fills (vectorbt's, checked against the kernel) ...
    pd.testing.assert_frame_equal(paid.fills, ran.fills, rtol=1e-9)
    # ... and the cash and equity lower by the bills paid so far, from their decision's close
    debited = bills.reindex(panel_2020.dates, fill_value=0.0).cumsum()
    np.testing.assert_allclose(paid.cash.to_numpy(), (ran.cash - debited).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(paid.equity.to_numpy(), (ran.equity - debited).to_numpy(),
                               rtol=1e-12)
    assert paid.equity.iloc[-1] == pytest.approx(ran.equity.iloc[-1] - 0.75 * len(decisions))
    # no bill, or bills of zero, change nothing
    for none in (None, pd.Series(dtype=float), pd.Series(0.0, index=decisions)):
        again = simulate_orders(panel_2020, orders, COSTS, CASH, bills=none)
        pd.testing.assert_series_equal(again.equity, ran.equity, rtol=1e-12)


def test_bad_bills_are_refused(panel_2020):
    orders = _orders_of(_half_invested(panel_2020))
    dates = panel_2020.dates
    for bad, match in ((pd.Series([-1.0], index=dates[:1]), ">= 0"),
                       (pd.Series([np.nan], index=dates[:1]), ">= 0"),
                       (pd.Series([1.0], index=[pd.Timestamp("2020-01-04")]), "not a session")):
        with pytest.raises(ValueError, match=match):
            simulate_orders(panel_2020, orders, COSTS, CASH, bills=bad)


def test_a_bill_a_fully_invested_book_cannot_cover_is_repaid_from_the_next_sales(panel_2020):
    # all in on the first session: the cash is spent to the cent (the cash-buffer rule), so
    # a bill leaves it negative; the next sales pay it back before any buy fills
    dates = panel_2020.dates
    tickers = list(panel_2020.tickers)
    n = len(tickers)
    first = pd.DataFrame(1.0 / n, index=dates[:1], columns=tickers)
    ran = simulate(panel_2020, first, COSTS, CASH)
    buys = _orders_of(ran)
    held = buys.iloc[0]
    # session 10: sell a quarter of one holding and buy more of another
    orders = buys.reindex(dates[:11])
    orders.iloc[10] = np.nan
    orders.loc[dates[10], tickers[0]] = -held[tickers[0]] / 4
    orders.loc[dates[10], tickers[1]] = held[tickers[1]] / 4
    cash_before = float(ran.cash.loc[dates[3]])
    bills = pd.Series({dates[3]: cash_before + 25.0})  # $25 more than the cash left
    paid = simulate_orders(panel_2020, orders, COSTS, CASH, bills=bills)
    assert paid.cash.loc[dates[3]] == pytest.approx(-25.0)
    assert (paid.cash.loc[dates[3]:dates[9]] < 0).all()
    fills = paid.fills[paid.fills["fill_date"] == dates[10]].set_index("ticker")
    sale = fills.loc[tickers[0]]
    assert sale["side"] == "sell"
    # the sale's proceeds paid the debt first; what was left funded the buy
    assert paid.cash.loc[dates[10]] >= 0
    proceeds = sale["notional"] - sale["fees"]
    if tickers[1] in fills.index:
        buy = fills.loc[tickers[1]]
        assert buy["notional"] + buy["fees"] <= proceeds - 25.0 + 1e-6


def test_execute_with_a_debt_fills_no_buy_until_sales_repay_it():
    shares = np.array([10.0, 0.0])
    prices = np.array([100.0, 50.0])
    costs = Costs(0.0, 0.0)
    done = execute(shares, -30.0, np.array([np.nan, 2.0]), prices, costs)
    assert done.filled.tolist() == [0.0, 0.0] and done.cash == -30.0
    done = execute(shares, -30.0, np.array([-1.0, 2.0]), prices, costs)
    # the sale's $100 repays the $30 first; the $70 left buys one share and a 0.4 part
    assert done.filled[0] == -1.0 and done.filled[1] == pytest.approx(1.4)
    assert done.cash == 0.0
    with pytest.raises(ValueError, match="finite"):
        execute(shares, float("nan"), np.array([np.nan, 1.0]), prices, costs)


def test_a_tenth_of_a_cent_bill_on_an_all_in_book_is_not_summation_dust(panel_2020):
    # cost-conscious budgets are $0.001 a decision: on a book whose cash ran out (a buy partly
    # filled on an up day) the cash is -0.001, within vectorbt's dust (1e-9 of $1M); it must
    # still be paid, not snapped to 0
    close = panel_2020.close
    ratios = (close / close.shift(1)).sum(axis=1)
    up = int(np.argmax(ratios.to_numpy() > len(close.columns) * 1.01))  # a >1% up day
    dates = panel_2020.dates
    first = pd.DataFrame(1.0 / len(close.columns), index=dates[up - 1: up],
                         columns=close.columns)
    ran = simulate(panel_2020, first, COSTS, CASH)
    assert ran.cash.iloc[up] == 0  # spent to the cent
    bills = pd.Series(0.001, index=dates[up: up + 20])
    paid = simulate_orders(panel_2020, _orders_of(ran), COSTS, CASH, bills=bills)
    assert paid.cash.iloc[up] == pytest.approx(-0.001, abs=1e-6)
    assert paid.cash.iloc[up + 19] == pytest.approx(-0.02, abs=1e-6)


def test_a_debt_repaid_by_a_sale_whose_rest_a_buy_spends_leaves_exactly_no_cash(panel_2020):
    # found by a cost-conscious random run: all in (cash 0), a $0.001 bill (cash -0.001), then
    # a sale repays it and a buy spends the rest (cash exactly 0): vectorbt's cash, ahead by
    # the $0.001 paid, is within its dust scale of $1M and must not be snapped to 0 before
    # the bill comes off
    close = panel_2020.close
    ratios = (close / close.shift(1)).sum(axis=1)
    up = int(np.argmax(ratios.to_numpy() > len(close.columns) * 1.01))
    dates = panel_2020.dates
    first = pd.DataFrame(1.0 / len(close.columns), index=dates[up - 1: up], columns=close.columns)
    ran = simulate(panel_2020, first, COSTS, CASH)
    orders = _orders_of(ran).reindex(dates[: up + 2])
    held = ran.fills.set_index("ticker")["quantity"]
    a, b = held.index[0], held.index[1]
    orders.loc[dates[up + 1], a] = -held[a] / 10
    orders.loc[dates[up + 1], b] = held[b]  # more than the sale brings: partly filled
    paid = simulate_orders(panel_2020, orders, COSTS, CASH,
                           bills=pd.Series(0.001, index=dates[up: up + 1]))
    assert paid.cash.iloc[up] == pytest.approx(-0.001, abs=1e-6)
    assert paid.cash.iloc[up + 1] == 0.0
