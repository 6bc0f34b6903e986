"""Strategies: registry, weights, and the poisoned-future (no look-ahead) check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib
from quantorch.strategies import Strategy, available_strategies, get_strategy

from quantorch.backtest.engine import Costs, simulate
from quantorch.data.panel import PricePanel
from quantorch.errors import UserInputError


def _window(panel: PricePanel, start: str, end: str) -> PricePanel:
    cut = slice(pd.Timestamp(start), pd.Timestamp(end))
    return PricePanel(
        *(getattr(panel, f).loc[cut] for f in ("close", "open", "high", "low", "volume"))
    )


@pytest.fixture(scope="module")
def panel(sample_panel: PricePanel) -> PricePanel:
    return _window(sample_panel, "2017-01-01", "2022-12-31")


def test_registry_lists_and_builds_the_strategies():
    assert {"buy-and-hold", "sma-cross"} <= set(available_strategies())
    for name in available_strategies():
        strategy = get_strategy(name)
        assert isinstance(strategy, Strategy) and strategy.name == name
    assert get_strategy("SMA_Cross", {"fast": 10, "slow": 30}).warmup_sessions == 30
    assert get_strategy("sma-cross").warmup_sessions == 200


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        (
            "sma-cros",
            None,
            "unknown strategy 'sma-cros' (did you mean sma-cross?); available: buy-and-hold",
        ),
        ("sma-cross", {"fsat": 10}, "unknown parameter 'fsat' (did you mean fast?)"),
        ("sma-cross", {"fast": 200, "slow": 50}, "fast (200) must be smaller than slow (50)"),
        ("sma-cross", {"fast": "ten"}, "parameter 'fast'"),
        ("sma-cross", {"fast": 0}, "parameter 'fast'"),
        ("buy-and-hold", {"anything": 1}, "unknown parameter 'anything'"),
    ],
)
def test_bad_names_and_parameters_are_user_errors(name, params, expected):
    with pytest.raises(UserInputError) as exc:
        get_strategy(name, params)
    assert expected in str(exc.value)


def test_buy_and_hold_buys_once_what_is_priced(panel):
    close = panel.close.copy()
    close.iloc[:5, close.columns.get_loc("GE")] = np.nan  # GE not trading yet at the start
    strategy = get_strategy("buy-and-hold")
    weights = strategy.target_weights(PricePanel.from_close(close), panel.dates[:40])
    assert list(weights.columns) == panel.tickers and weights.index.equals(panel.dates[:40])
    first = weights.iloc[0]
    assert first["GE"] == 0.0
    np.testing.assert_allclose(first.drop("GE"), 1 / 19)
    assert weights.iloc[1:].isna().all().all()


def test_sma_cross_weights(panel):
    strategy = get_strategy("sma-cross", {"fast": 20, "slow": 100})
    dates = panel.dates[150:]
    weights = strategy.target_weights(panel, dates)
    assert weights.index.equals(dates) and list(weights.columns) == panel.tickers
    assert (weights >= 0).all().all()
    sums = weights.sum(axis=1)
    assert np.allclose(sums[sums > 0], 1.0) and sums.gt(0).any()
    # Equal weight: every non-zero weight in a row is the same.
    for _, row in weights.iloc[::50].iterrows():
        held = row[row > 0]
        assert np.allclose(held, 1 / len(held))
    # Cross-check one ticker against TA-Lib directly.
    aapl = panel.close["AAPL"].to_numpy()
    up = talib.SMA(aapl, 20) > talib.SMA(aapl, 100)
    held = pd.Series(up, index=panel.dates).loc[dates]
    assert (weights["AAPL"].gt(0) == held).all()


@pytest.mark.parametrize("poison", ["scale", "nan"])
@pytest.mark.parametrize("name", ["sma-cross", "buy-and-hold"])
def test_poisoned_future_changes_nothing_up_to_t(panel, name, poison):
    strategy = get_strategy(name, {"fast": 20, "slow": 60} if name == "sma-cross" else None)
    t = pd.Timestamp("2020-03-16")  # mid-crash: signals are moving
    future = panel.dates > t
    garbage = {}
    for field in ("close", "open", "high", "low", "volume"):
        frame = getattr(panel, field).copy()
        frame.loc[future] = frame.loc[future] * 1000.0 if poison == "scale" else np.nan
        garbage[field] = frame
    poisoned = PricePanel(**garbage)

    dates = panel.dates[80:]
    clean_w = strategy.target_weights(panel, dates)
    dirty_w = strategy.target_weights(poisoned, dates)
    truncated_w = strategy.target_weights(panel.truncate(t), dates[dates <= t])
    pd.testing.assert_frame_equal(clean_w.loc[:t], dirty_w.loc[:t], check_exact=True)
    pd.testing.assert_frame_equal(clean_w.loc[:t], truncated_w, check_exact=True)

    costs = Costs(1.0, 5.0)
    clean = simulate(panel, clean_w, costs, 1e6)
    dirty = simulate(poisoned, dirty_w, costs, 1e6)
    pd.testing.assert_series_equal(clean.equity.loc[:t], dirty.equity.loc[:t], check_exact=True)
    pd.testing.assert_frame_equal(
        clean.fills.loc[clean.fills["fill_date"] <= t],
        dirty.fills.loc[dirty.fills["fill_date"] <= t],
        check_exact=True,
    )
