"""The backtest engine on real prices: decision-time sizing, timing, costs, cash, holds,
determinism, and vectorbt as the engine of record checked against the kernel."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest

from quantorch.backtest import engine
from quantorch.backtest.engine import FILL_COLUMNS, Costs, simulate, simulate_orders
from quantorch.data.calendar import period_ends
from quantorch.data.panel import PricePanel

CASH = 1_000_000.0
FEE_BPS, SLIPPAGE_BPS = 1.0, 5.0
F, S = FEE_BPS / 1e4, SLIPPAGE_BPS / 1e4
BUFFER = (1 + S) * (1 + F)


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
    decision_close, reference = raw.iloc[0], raw.iloc[1]
    # Sized at the decision close with the cash-buffer rule, filled at the next close.
    shares = (CASH / n) / (decision_close * (1 + S) * (1 + F))
    cost = shares * reference * (1 + S) * (1 + F)
    assert cost.sum() < CASH  # 2020-01-03 fell: every buy fills in full, some cash is left
    left = CASH - cost.sum()
    final = left + float((shares * raw.iloc[-1]).sum())

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
    assert result.cash.iloc[-1] == pytest.approx(left, rel=1e-9) and result.cash.min() >= 0
    assert result.equity.iloc[0] == CASH  # nothing fills on the decision day itself
    # Equity on the fill day: the cash left plus the positions marked at the fill-day close.
    assert result.equity.loc[fill_day] == pytest.approx(
        left + float((shares * reference).sum()), rel=1e-12
    )
    assert result.equity.index.equals(panel_2020.dates)
    np.testing.assert_allclose(result.weights.sum(axis=1).iloc[1:], result.gross_exposure.iloc[1:])


def test_ohlcv_orders_fill_at_the_next_sessions_adjusted_open(ohlcv_panel, arch_bars):
    panel = _from(ohlcv_panel, "2010-01-04")
    decision = panel.dates[10]
    weights = pd.DataFrame({"^GSPC": [0.6], "^IXIC": [0.4]}, index=[decision])
    result = simulate(panel, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)

    fill_day = panel.dates[11]
    final = left = CASH
    for ticker, weight in (("^GSPC", 0.6), ("^IXIC", 0.4)):
        raw = arch_bars[ticker]
        bar = raw.loc[fill_day]
        adjusted_open = bar["Open"] * bar["Adj Close"] / bar["Close"]
        # Sized at the decision session's adjusted close, filled at the next adjusted open.
        shares = CASH * weight / (raw.loc[decision, "Adj Close"] * (1 + S) * (1 + F))
        fill = result.fills.loc[result.fills["ticker"] == ticker].iloc[0]
        assert fill["fill_date"] == fill_day and fill["decision_date"] == decision
        assert fill["fill_price"] == pytest.approx(adjusted_open * (1 + S), rel=1e-12)
        assert fill["quantity"] == pytest.approx(shares, rel=1e-9)
        left -= shares * adjusted_open * (1 + S) * (1 + F)
        final += shares * raw["Adj Close"].iloc[-1]
    final += left - CASH
    assert len(result.fills) == 2 and left > 0  # both opened below the decision close
    assert result.cash.iloc[-1] == pytest.approx(left, rel=1e-9)
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
    shares = CASH / len(panel_2020.tickers) / close.iloc[0]  # sized at the decision close
    left = CASH - (shares * close.iloc[1]).sum()  # filled at the next close
    expected = left + (close * shares).sum(axis=1).iloc[1:]
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
    # Each other buy cost (C / N) x (fill-day close / decision close); MSFT's share stays cash.
    others = close.drop(columns="MSFT")
    spent = (CASH / len(panel.tickers) * others.iloc[1] / others.iloc[0]).sum()
    assert result.cash.iloc[-1] == pytest.approx(CASH - spent, rel=1e-9)
    assert not result.equity.isna().any()


def test_tickers_without_a_close_at_the_decision_session_get_no_order(panel_2020):
    close = panel_2020.close.copy()
    close.iloc[0, close.columns.get_loc("MSFT")] = np.nan  # no MSFT close to size it at
    panel = PricePanel.from_close(close)
    result = simulate(
        panel, _equal_weight(panel, [panel.dates[0]]), Costs(FEE_BPS, SLIPPAGE_BPS), CASH
    )
    assert "MSFT" not in set(result.fills["ticker"])
    assert len(result.fills) == len(panel.tickers) - 1


def test_daily_rebalancing_to_unchanged_targets_does_not_churn(panel_2020):
    weights = _equal_weight(panel_2020, panel_2020.dates)
    result = simulate(panel_2020, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)
    close, equity = panel_2020.close, result.equity
    # Each fill brings a ticker to w / buffer of the previous close's equity at that close;
    # by the fill's close it has drifted with the day's move (unless cash ran out for it).
    drifted = (1 / 20 / BUFFER) * (close / close.shift(1)).mul(equity.shift(1) / equity, axis=0)
    gap = (result.weights - drifted).abs().iloc[3:].to_numpy()
    assert (gap <= 1e-9).mean() > 0.95 and gap.max() < 2e-3
    # Held weights sit at w / buffer on average; only the drift is traded, in both directions.
    assert result.weights.iloc[3:].to_numpy().mean() == pytest.approx(1 / 20 / BUFFER, rel=1e-4)
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
    close = panel_2020.close
    long = 0.5 * CASH / (close["XOM"].iloc[0] * BUFFER)
    short = 0.5 * CASH / (close["CVX"].iloc[0] * BUFFER)
    # The short sale runs first; its proceeds (less costs) fund the long.
    cash = (
        CASH
        + short * close["CVX"].iloc[1] * (1 - S) * (1 - F)
        - long * close["XOM"].iloc[1] * (1 + S) * (1 + F)
    )
    assert result.cash.iloc[1] == pytest.approx(cash, rel=1e-12)
    gross = (long * close["XOM"].iloc[1] + short * close["CVX"].iloc[1]) / result.equity.iloc[1]
    assert result.gross_exposure.iloc[1] == pytest.approx(gross, rel=1e-12)
    fills = result.fills.set_index("ticker")
    assert fills.loc["XOM", "quantity"] == pytest.approx(long, rel=1e-9)
    assert fills.loc["CVX", "quantity"] == pytest.approx(short, rel=1e-9)
    marked = long * close["XOM"].iloc[-1] - short * close["CVX"].iloc[-1]
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
    weights.iloc[0] = 1.0 / len(panel_2020.tickers)  # all in: little spare cash afterwards
    weights.loc[dates[10], ["AAPL", "XOM"]] = [0.1, 0.0]  # AAPL (first column) funded by XOM
    result = simulate(panel_2020, weights, Costs(FEE_BPS, SLIPPAGE_BPS), CASH)
    late = result.fills.loc[result.fills["fill_date"] == dates[11]].set_index("ticker")
    assert list(late.index) == ["AAPL", "XOM"] and late.loc["XOM", "side"] == "sell"
    early = result.fills.loc[result.fills["fill_date"] == dates[1]].set_index("ticker")
    # The buy was not starved of cash: AAPL got all the shares sized at dates[10]'s close.
    close = panel_2020.close
    wanted = 0.1 / BUFFER * result.equity.loc[dates[10]] / close["AAPL"].loc[dates[10]]
    assert late.loc["AAPL", "quantity"] == pytest.approx(
        wanted - early.loc["AAPL", "quantity"], rel=1e-9
    )
    assert late.loc["XOM", "quantity"] == pytest.approx(early.loc["XOM", "quantity"], rel=1e-12)
    assert result.cash.loc[dates[11]] / result.equity.loc[dates[11]] < 1e-2
    assert result.cash.min() >= 0


def test_buys_that_need_more_cash_than_is_left_are_partly_filled(panel_2020):
    close = panel_2020.close
    ratios = (close / close.shift(1)).sum(axis=1)
    up = int(np.argmax(ratios.to_numpy() > len(close.columns) * 1.01))  # a >1% up day
    decision = close.index[up - 1]
    result = simulate(
        panel_2020, _equal_weight(panel_2020, [decision]), Costs(FEE_BPS, SLIPPAGE_BPS), CASH
    )
    fills = result.fills.set_index("ticker")
    shares = CASH / len(close.columns) / (close.loc[decision] * BUFFER)
    value = (shares * close.iloc[up]).sort_values(kind="stable")  # the order they run in
    full = value.index[: len(fills) - 1]
    np.testing.assert_allclose(fills.loc[full, "quantity"], shares[full], rtol=1e-12)
    partial = value.index[len(fills) - 1]  # the next one by value gets the cash left ...
    spent_before = (value[full] * (1 + S) * (1 + F)).sum()
    assert fills.loc[partial, "notional"] + fills.loc[partial, "fees"] == pytest.approx(
        CASH - spent_before, rel=1e-9
    )
    assert fills.loc[partial, "quantity"] < shares[partial]
    assert set(value.index[len(fills) :]).isdisjoint(fills.index)  # ... and later ones none
    assert result.cash.loc[close.index[up]] == 0 and result.cash.min() >= 0


def test_simulate_orders_records_given_share_orders(panel_2020):
    dates = panel_2020.dates
    weights = _equal_weight(panel_2020, period_ends(dates, "monthly"))
    costs = Costs(FEE_BPS, SLIPPAGE_BPS)
    ran = simulate(panel_2020, weights, costs, CASH)
    signed = np.where(ran.fills["side"] == "buy", 1.0, -1.0) * ran.fills["quantity"]
    orders = pd.DataFrame(
        {
            "date": ran.fills["fill_date"],
            "ticker": ran.fills["ticker"].astype(str),
            "quantity": signed,
        }
    ).pivot(index="date", columns="ticker", values="quantity")
    again = simulate_orders(panel_2020, orders, costs, CASH)
    pd.testing.assert_series_equal(again.equity, ran.equity, rtol=1e-9)
    pd.testing.assert_frame_equal(again.fills, ran.fills, rtol=1e-9)
    with pytest.raises(ValueError, match="first session"):
        simulate_orders(panel_2020, pd.DataFrame({"AAPL": [1.0]}, index=dates[:1]), costs, CASH)
    with pytest.raises(ValueError, match="not in the panel"):
        simulate_orders(panel_2020, pd.DataFrame({"APPL": [1.0]}, index=dates[1:2]), costs, CASH)
    with pytest.raises(ValueError, match="infinite"):
        simulate_orders(panel_2020, pd.DataFrame({"AAPL": [np.inf]}, index=dates[1:2]), costs, CASH)


def test_a_kernel_that_disagrees_with_vectorbt_is_a_loud_bug(panel_2020, monkeypatch):
    real = engine.execute

    def off_by_a_little(*args, **kwargs):
        done = real(*args, **kwargs)
        return dataclasses.replace(done, filled=done.filled * (1 + 1e-6))

    monkeypatch.setattr(engine, "execute", off_by_a_little)
    with pytest.raises(RuntimeError, match=r"disagree on a fill at 2020-01-03 \w+"):
        simulate(panel_2020, _equal_weight(panel_2020, panel_2020.dates[:1]), Costs(1, 5), CASH)
