"""Shared fixtures built from real market data shipped in skfolio and arch (offline), and the
one way to reach the real data sets of ../shared/data (``shared_data``, skipped when absent)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from quantorch.data.panel import PricePanel
from tests._shared import shared_file

SHARED_MARKER = "shared_data"


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", f"{SHARED_MARKER}: reads ../shared/data (skipped when it is absent)"
    )


def pytest_collection_modifyitems(config, items) -> None:
    """Every test that uses the ``shared_data`` fixture carries the marker, so CI can rerun
    exactly those with the folder hidden (``-m shared_data``)."""
    for item in items:
        if SHARED_MARKER in getattr(item, "fixturenames", ()):
            item.add_marker(getattr(pytest.mark, SHARED_MARKER))


@pytest.fixture(scope="session")
def shared_data() -> Callable[[str], Path]:
    """``shared_data("stocknet_tweets.csv.gz")`` is that file's path; the test skips when the
    file is absent (a fresh clone has no ../shared)."""
    return shared_file


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
