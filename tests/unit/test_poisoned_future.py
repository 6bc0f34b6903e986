"""Poisoned future: overwrite everything after t with garbage; nothing computed at t may change.

For every provider of ``technical``, ``risk`` and ``cross_section``, on real data, both the whole-panel path
(backtests, training) and the single-call path (the runner). The garbage mixes huge, tiny,
negative, zero, NaN and infinite values in every price, high, low, volume, benchmark and
factor value after t, so a tool that decides anything from the whole series (e.g. "does this
ticker have highs and lows?") is caught.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantorch.toolkit.registry import get_tool
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import ToolRequest
from tests._tool_data import index_market, poison_after, same, stock_market, window

RUNNER = ToolRunner(None, cache=False, timeout_s=None)

PROVIDERS = [("technical", "basic"), ("technical", "full"), ("risk", "fast"), ("risk", "full"),
             ("cross_section", "basic")]
# (data, decision dates t): a crisis, a quarter-end GARCH refit day, the day after one, a Monday
DATASETS = {
    "indices-ohlcv": (lambda: window(index_market(), "2006-01-01", "2016-12-31"),
                      ["2008-10-15", "2011-06-30", "2016-01-04"]),
    "stocks-close-only": (
        lambda: window(stock_market(), "2010-01-01", "2015-12-31", ["AAPL", "GE", "RRC", "XOM"]),
        ["2012-03-30", "2012-04-02", "2015-08-24"],
    ),
    # a cross-section needs at least 5 tickers: the garbage after t hits all of them
    "stocks-cross-section": (
        lambda: window(stock_market(), "2010-01-01", "2015-12-31",
                       ["AAPL", "GE", "RRC", "XOM", "KO", "JPM", "MSFT"]),
        ["2012-03-30", "2015-08-24"],
    ),
}
#: Which data sets each tool is checked on (a cross-section of 2 or 4 tickers has no ranks).
CASES = [(t, p, d) for t, p in PROVIDERS for d in DATASETS
         if (t == "cross_section") == (d == "stocks-cross-section")]


@pytest.mark.parametrize(("tool", "provider", "dataset"), CASES,
                         ids=[f"{t}:{p}-{d}" for t, p, d in CASES])
def test_garbage_after_t_changes_nothing_up_to_t(tool, provider, dataset):
    make, days = DATASETS[dataset]
    data = make()
    tickers, dates = data.prices.tickers, data.prices.dates
    clean = RUNNER.panel(tool, provider, data, tickers, dates, on_error="raise")
    names = get_tool(tool).spec.provider_outputs(provider)
    for seed, day in enumerate(days):
        t = pd.Timestamp(day)
        poisoned = poison_after(data, t, seed=seed)
        assert not np.isfinite(poisoned.prices.close.loc[dates > t].to_numpy()).all()
        spoiled = RUNNER.panel(tool, provider, poisoned, tickers, dates, on_error="raise")
        for name in names:
            before = clean[name].loc[:t].to_numpy()
            after = spoiled[name].loc[:t].to_numpy()
            equal = (before == after) | (np.isnan(before) & np.isnan(after))
            assert equal.all(), f"{tool}:{provider} {name} changed at or before {day}"
        covered = [n for n in names if np.isfinite(clean[n].loc[t].to_numpy()).any()]
        assert len(covered) >= len(names) // 2, f"too little computed at {day}: {covered}"
        for ticker in tickers:
            request = ToolRequest(tool=tool, ticker=ticker, asof=t, provider=provider)
            honest, fooled = RUNNER.run(request, data), RUNNER.run(request, poisoned)
            assert honest.error is None and fooled.error is None, honest.error or fooled.error
            for name in names:
                assert same(honest.features[name], fooled.features[name]), (ticker, day, name)
                assert same(honest.features[name], clean[name].at[t, ticker]), (ticker, day, name)


def test_poison_reaches_highs_lows_and_volumes():
    """The garbage really hits the inputs of ATR/ADX and OBV (guards the test itself)."""
    data = index_market()
    t = pd.Timestamp("2008-10-15")
    poisoned = poison_after(data, t, seed=3)
    for field in ("high", "low", "volume"):
        later = getattr(poisoned.prices, field).loc[data.prices.dates > t].to_numpy()
        assert np.isnan(later).any() and (np.abs(later) > 1e6).any()
    assert (poisoned.prices.high.loc[:t] == data.prices.high.loc[:t]).all().all()
