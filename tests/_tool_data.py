"""Real market data for the tool tests (offline, shipped in skfolio and arch), and the poison.

Not a test module: imported by the tool tests. Everything is cached per process.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd

from quantorch.data.panel import PRICE_COLUMNS, PricePanel
from quantorch.toolkit.spec import MarketData

STOCKS = (
    "AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
    "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM",
)  # fmt: skip
INDICES = ("^GSPC", "^IXIC")


def _ns(index: pd.Index) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(index).as_unit("ns").rename("date")


@functools.cache
def stock_market() -> MarketData:
    """20 S&P 500 stocks, adjusted closes only, 1990-2022, with the S&P 500 index as benchmark."""
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    close = load_sp500_dataset().astype("float64")
    close.index = _ns(close.index)
    close.columns = [str(c) for c in close.columns]
    index = load_sp500_index().astype("float64").iloc[:, 0]
    index.index = _ns(index.index)
    return MarketData(prices=PricePanel.from_close(close), benchmark=index.reindex(close.index))


@functools.cache
def index_market() -> MarketData:
    """^GSPC and ^IXIC daily OHLCV, 1999-2018, with ^GSPC's adjusted close as benchmark."""
    from arch.data import nasdaq, sp500

    parts = []
    for ticker, frame in (("^GSPC", sp500.load()), ("^IXIC", nasdaq.load())):
        long = frame.rename(
            columns={"Open": "open", "High": "high", "Low": "low", "Close": "close",
                     "Adj Close": "adj_close", "Volume": "volume"}
        ).rename_axis("date").reset_index()
        long["ticker"] = ticker
        long["volume"] = long["volume"].astype("float64")
        parts.append(long[list(PRICE_COLUMNS)])
    long = pd.concat(parts, ignore_index=True)
    long["date"] = pd.to_datetime(long["date"]).dt.normalize()
    index = _ns(sorted(long["date"].unique()))
    panel = PricePanel.from_long(long, index, list(INDICES))
    return MarketData(prices=panel, benchmark=panel.close["^GSPC"].copy())


def window(data: MarketData, start: str, end: str, tickers: list[str] | None = None) -> MarketData:
    """The data between two dates, for some tickers (all by default)."""
    prices = data.prices if tickers is None else data.prices.select(list(tickers))
    cut = slice(pd.Timestamp(start), pd.Timestamp(end))
    return MarketData(
        prices=PricePanel(*(getattr(prices, f).loc[cut] for f in ("close", "open", "high", "low", "volume"))),
        benchmark=None if data.benchmark is None else data.benchmark.loc[cut],
        factors=None if data.factors is None else data.factors.loc[cut],
    )


def _garbage(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Huge, tiny, negative, zero, NaN and infinite values, mixed."""
    kinds = rng.integers(0, 6, size=shape)
    values = np.select(
        [kinds == 0, kinds == 1, kinds == 2, kinds == 3, kinds == 4],
        [rng.uniform(1e6, 1e12, size=shape), rng.uniform(1e-9, 1e-6, size=shape),
         -rng.uniform(1, 1e6, size=shape), np.zeros(shape), np.full(shape, np.nan)],
        default=np.inf,
    )
    return values


def poison_after(data: MarketData, t: pd.Timestamp, seed: int = 0) -> MarketData:
    """The same data with every price, volume, benchmark and factor value after ``t`` garbage."""
    rng = np.random.default_rng(seed)
    later = data.prices.dates > t

    def spoil(frame: pd.DataFrame) -> pd.DataFrame:
        values = frame.to_numpy(dtype=np.float64, copy=True)
        values[later] = _garbage(values[later].shape, rng)
        return pd.DataFrame(values, index=frame.index, columns=frame.columns)

    prices = PricePanel(*(spoil(getattr(data.prices, f)) for f in ("close", "open", "high", "low", "volume")))
    benchmark = data.benchmark
    if benchmark is not None:
        spoiled = benchmark.to_numpy(dtype=np.float64, copy=True)
        after = benchmark.index > t
        spoiled[after] = _garbage(spoiled[after].shape, rng)
        benchmark = pd.Series(spoiled, index=benchmark.index, name=benchmark.name)
    factors = data.factors
    if factors is not None:
        spoiled = factors.to_numpy(dtype=np.float64, copy=True)
        after = factors.index > t
        spoiled[after] = _garbage(spoiled[after].shape, rng)
        factors = pd.DataFrame(spoiled, index=factors.index, columns=factors.columns)
    return dataclasses.replace(data, prices=prices, benchmark=benchmark, factors=factors)


def same(a: float, b: float) -> bool:
    """Equal, NaN equal to NaN (tools must give bit-identical numbers, not just close ones)."""
    return (np.isnan(a) and np.isnan(b)) or a == b
