"""The backtest kernel on real prices: timing, costs, cash, holds, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from quantorch.backtest.engine import FILL_COLUMNS, Costs, simulate
from quantorch.data.calendar import period_ends
from quantorch.data.panel import PricePanel

CASH = 1_000_000.0
FEE_BPS, SLIPPAGE_BPS = 1.0, 5.0
F, S = FEE_BPS / 1e4, SLIPPAGE_BPS / 1e4


def _from(panel: PricePanel, start: str) -> PricePanel:
    cut = slice(pd.Timestamp(start), None)
    return PricePanel(
        *(getattr(panel, f).loc[cut] for f in ("close", "open", "high", "low", "volume"))
    )


def _equal_weight(panel: PricePanel, dates) -> pd.DataFrame:
    dates = pd.DatetimeIndex(dates)
    return pd.DataFrame(1.0 / len(panel.tickers), index=dates, columns=panel.tickers)


@pytest.fixture(scope="module")
def panel_2020(sample_panel: PricePanel) -> PricePanel:
    return _from(sample_panel, "2020-01-02")


def test_equal_weight_buy_and_hold_matches_the_hand_computation(panel_2020, sp500_closes):
    first = pd.Timestamp("2020-01-02")
    result = simulate(
        panel_2020, _equal_weight(panel_2020, [first]), Costs(FEE_BPS, SLIPPAGE_BPS), CASH
    )

    raw = sp500_closes.loc["2020-01-02":]
    n = raw.shape[1]
    fill_day = raw.index[1]  # the NEXT session; close-only data fills at its close
    reference = raw.iloc[1]
    shares = (CASH / n) / (reference * (1 + S) * (1 + F))
    final = float((shares * raw.iloc[-1]).sum())

    fills = result.fills.set_index("ticker")
    assert list(result.fills.columns) == list(FILL_COLUMNS)
    assert len(fills) == n
    assert (fills["decision_date"] == first).all() and (fills["fill_date"] == fill_day).all()
    assert (fills["side"] == "buy").all()
    np.testing.assert_allclose(fills["quantity"], shares[fills.index], rtol=1e-9)
    np.testing.assert_allclose(fills["fill_price"], reference[fills.index] * (1 + S), rtol=1e-12)
    np.testing.assert_allclose(fills["fees"], F * fills["notional"], rtol=1e-12)
    np.testing.assert_allclose(
        fills["slippage_cost"], shares[fills.index] * reference[fills.index] * S, rtol=1e-9
    )
    assert result.equity.iloc[-1] == pytest.approx(final, rel=1e-9)
    assert abs(result.cash.iloc[-1]) <= 1e-6 * CASH and result.cash.min() >= 0
    assert result.equity.iloc[0] == CASH  # nothing fills on the decision day itself
    # Equity on the fill day: cash spent, positions marked at the fill-day close.
    assert result.equity.loc[fill_day] == pytest.approx(CASH / ((1 + S) * (1 + F)), rel=1e-12)
    assert result.equity.index.equals(panel_2020.dates)
    np.testing.assert_allclose(result.weights.sum(axis=1).iloc[1:], result.gross_exposure.iloc[1:])


def test_ohlcv_orders_fill_at_the_next_sessions_adjusted_open(ohlcv_panel, arch_bars):
    panel = _from(ohlcv_panel, "2010-01-04")
    decision = panel.dates[10]
    weights = pd.DataFrame({"^GSPC": [0.6], "^IXIC": [0.4]}, index=[decision])
    result = simulate(panel, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)

    fill_day = panel.dates[11]
    final = 0.0
    for ticker, weight in (("^GSPC", 0.6), ("^IXIC", 0.4)):
        raw = arch_bars[ticker]
        bar = raw.loc[fill_day]
        adjusted_open = bar["Open"] * bar["Adj Close"] / bar["Close"]
        shares = CASH * weight / (adjusted_open * (1 + S) * (1 + F))
        fill = result.fills.loc[result.fills["ticker"] == ticker].iloc[0]
        assert fill["fill_date"] == fill_day and fill["decision_date"] == decision
        assert fill["fill_price"] == pytest.approx(adjusted_open * (1 + S), rel=1e-12)
        assert fill["quantity"] == pytest.approx(shares, rel=1e-9)
        final += shares * raw["Adj Close"].iloc[-1]
    assert len(result.fills) == 2
    assert result.equity.iloc[-1] == pytest.approx(final, rel=1e-9)
    assert (result.equity.loc[:decision] == CASH).all()


def test_higher_costs_give_strictly_lower_final_equity(panel_2020):
    weights = _equal_weight(panel_2020, period_ends(panel_2020.dates, "monthly"))
    finals = [
        simulate(panel_2020, weights, Costs(fee, slip), CASH).equity.iloc[-1]
        for fee, slip in ((0, 0), (1, 0), (1, 5), (10, 5), (10, 50))
    ]
    assert all(a > b for a, b in itertools.pairwise(finals)), finals


def test_zero_costs_trade_at_the_reference_price(panel_2020):
    first = panel_2020.dates[0]
    result = simulate(panel_2020, _equal_weight(panel_2020, [first]), Costs(0, 0), CASH)
    close = panel_2020.close
    shares = CASH / len(panel_2020.tickers) / close.iloc[1]
    expected = (close * shares).sum(axis=1).iloc[1:]
    np.testing.assert_allclose(result.equity.iloc[1:], expected, rtol=1e-12)
    assert result.fills["fees"].sum() == 0 and result.fills["slippage_cost"].sum() == 0
    np.testing.assert_allclose(result.fills["fill_price"], close.iloc[1].sort_index(), rtol=0)


def test_same_inputs_give_identical_outputs(panel_2020):
    rng = np.random.default_rng(7)
    raw = rng.random((len(panel_2020.dates), len(panel_2020.tickers)))
    weights = pd.DataFrame(
        raw / raw.sum(axis=1, keepdims=True), index=panel_2020.dates, columns=panel_2020.tickers
    )
    first = simulate(panel_2020, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)
    second = simulate(panel_2020, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)
    pd.testing.assert_series_equal(first.equity, second.equity, check_exact=True)
    pd.testing.assert_series_equal(first.cash, second.cash, check_exact=True)
    pd.testing.assert_frame_equal(first.fills, second.fills, check_exact=True)
    pd.testing.assert_frame_equal(first.weights, second.weights, check_exact=True)


def test_nan_targets_hold_positions(panel_2020):
    dates = panel_2020.dates
    weights = pd.DataFrame(np.nan, index=dates[[0, 20, 40, 60]], columns=panel_2020.tickers)
    weights.iloc[0] = 1.0 / len(panel_2020.tickers)
    weights.loc[dates[40], "AAPL"] = 0.0  # sell only AAPL; every other NaN keeps its position
    result = simulate(panel_2020, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)
    fills = result.fills
    assert set(fills["fill_date"]) == {dates[1], dates[41]}
    late = fills.loc[fills["fill_date"] == dates[41]]
    assert list(late["ticker"]) == ["AAPL"] and list(late["side"]) == ["sell"]
    bought = fills.loc[(fills["fill_date"] == dates[1]) & (fills["ticker"] == "AAPL"), "quantity"]
    assert late["quantity"].iloc[0] == pytest.approx(bought.iloc[0], rel=1e-12)
    assert result.weights["AAPL"].iloc[41:].eq(0).all()


def test_a_decision_on_the_last_session_never_fills(panel_2020):
    last = panel_2020.dates[-1]
    result = simulate(
        panel_2020, _equal_weight(panel_2020, [last]), Costs(FEE_BPS, SLIPPAGE_BPS), CASH
    )
    assert result.fills.empty and list(result.fills.columns) == list(FILL_COLUMNS)
    assert (result.equity == CASH).all() and (result.gross_exposure == 0).all()


def test_orders_for_tickers_without_a_price_at_the_fill_session_are_skipped(panel_2020):
    close = panel_2020.close.copy()
    close.iloc[1, close.columns.get_loc("MSFT")] = np.nan  # no MSFT bar on the fill day
    panel = PricePanel.from_close(close)
    result = simulate(
        panel, _equal_weight(panel, [panel.dates[0]]), Costs(FEE_BPS, SLIPPAGE_BPS), CASH
    )
    assert "MSFT" not in set(result.fills["ticker"])
    assert len(result.fills) == len(panel.tickers) - 1
    assert result.cash.iloc[-1] == pytest.approx(CASH / len(panel.tickers), rel=1e-9)
    assert not result.equity.isna().any()


def test_daily_rebalancing_to_unchanged_targets_does_not_churn(panel_2020):
    weights = _equal_weight(panel_2020, panel_2020.dates)
    result = simulate(panel_2020, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)
    buffer = (1 + S) * (1 + F)
    after = result.weights.iloc[3:]
    # Held weights stay at w / buffer; only the drift is traded, in both directions.
    np.testing.assert_allclose(after, 1 / 20 / buffer, atol=5e-6)
    later = result.fills.loc[result.fills["fill_date"] > panel_2020.dates[2]]
    by_side = later.groupby("side", observed=True)["notional"].sum()
    assert abs(by_side["buy"] / by_side["sell"] - 1) < 0.01
    assert result.cash.min() >= 0
    assert later["notional"].sum() / result.equity.mean() / 3 < 5  # drift only: a few x a year


def test_long_short_targets(panel_2020):
    weights = pd.DataFrame({"XOM": [0.5], "CVX": [-0.5]}, index=[panel_2020.dates[0]])
    result = simulate(panel_2020, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)
    assert set(zip(result.fills["ticker"], result.fills["side"], strict=True)) == {
        ("XOM", "buy"),
        ("CVX", "sell"),
    }
    assert result.gross_exposure.iloc[1] == pytest.approx(1 / ((1 + S) * (1 + F)), rel=1e-3)
    assert result.cash.iloc[1] == pytest.approx(CASH, rel=1e-3)  # short proceeds fund the long
    close = panel_2020.close
    fills = result.fills.set_index("ticker")
    position = {"XOM": fills.loc["XOM", "quantity"], "CVX": -fills.loc["CVX", "quantity"]}
    marked = sum(q * close[t].iloc[-1] for t, q in position.items())
    assert result.equity.iloc[-1] == pytest.approx(result.cash.iloc[-1] + marked, rel=1e-12)


def test_weights_off_the_panel_are_refused(panel_2020):
    costs = Costs(FEE_BPS, SLIPPAGE_BPS)
    with pytest.raises(ValueError, match="not a session"):
        simulate(panel_2020, _equal_weight(panel_2020, [pd.Timestamp("2020-01-04")]), costs, CASH)
    with pytest.raises(ValueError, match="not in the panel"):
        simulate(panel_2020, pd.DataFrame({"APPL": [1.0]}, index=panel_2020.dates[:1]), costs, CASH)
    with pytest.raises(ValueError):
        Costs(-1, 0)
    with pytest.raises(ValueError):
        simulate(panel_2020, _equal_weight(panel_2020, panel_2020.dates[:1]), costs, 0.0)


def test_sells_fund_buys_in_the_same_session_when_other_targets_hold(panel_2020):
    dates = panel_2020.dates
    weights = pd.DataFrame(np.nan, index=dates[[0, 10]], columns=panel_2020.tickers)
    weights.iloc[0] = 1.0 / len(panel_2020.tickers)  # all in: no spare cash afterwards
    weights.loc[dates[10], ["AAPL", "XOM"]] = [0.1, 0.0]  # AAPL (first column) funded by XOM
    result = simulate(panel_2020, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)
    late = result.fills.loc[result.fills["fill_date"] == dates[11]].set_index("ticker")
    assert list(late.index) == ["AAPL", "XOM"] and late.loc["XOM", "side"] == "sell"
    # The buy was not starved of cash: AAPL ends near its target, and little cash is idle.
    assert result.weights.loc[dates[11], "AAPL"] == pytest.approx(
        0.1 / ((1 + S) * (1 + F)), rel=2e-3
    )
    assert result.cash.loc[dates[11]] / result.equity.loc[dates[11]] < 1e-3
