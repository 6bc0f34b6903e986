"""Shared fixtures built from real market data shipped in skfolio and arch (offline)."""

from __future__ import annotations

import pandas as pd
import pytest

from quantorch.data.panel import PricePanel


@pytest.fixture(scope="session")
def sp500_closes() -> pd.DataFrame:
    """Adjusted daily closes of 20 S&P 500 stocks, 1990-01-02 to 2022-12-28 (skfolio)."""
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset().astype("float64")
    prices.index = pd.DatetimeIndex(prices.index).as_unit("ns").rename("date")
    prices.columns = [str(c) for c in prices.columns]
    return prices


@pytest.fixture(scope="session")
def sample_panel(sp500_closes: pd.DataFrame) -> PricePanel:
    """Close-only panel of the 20 skfolio stocks (opens all NaN: fills at the next close)."""
    return PricePanel.from_close(sp500_closes.copy())


@pytest.fixture(scope="session")
def arch_bars() -> dict[str, pd.DataFrame]:
    """Raw daily OHLCV with adjusted close of ^GSPC and ^IXIC, 1999-2018 (arch)."""
    from arch.data import nasdaq, sp500

    bars = {"^GSPC": sp500.load(), "^IXIC": nasdaq.load()}
    for frame in bars.values():
        frame.index = pd.DatetimeIndex(frame.index).as_unit("ns").rename("date")
    return bars


@pytest.fixture(scope="session")
def ohlcv_panel(arch_bars: dict[str, pd.DataFrame]) -> PricePanel:
    """OHLCV panel of ^GSPC and ^IXIC built like the store does (``PricePanel.from_long``)."""
    from quantorch.data.providers.sample import _ohlcv  # the sample provider's own mapping

    parts = [_ohlcv(ticker, frame) for ticker, frame in arch_bars.items()]
    long = pd.concat(parts, ignore_index=True)
    index = pd.DatetimeIndex(sorted(long["date"].unique())).as_unit("ns").rename("date")
    return PricePanel.from_long(long, index, list(arch_bars))
