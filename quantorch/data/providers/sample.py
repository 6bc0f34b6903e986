"""Offline, real market data shipped inside PyPI packages.

- ``skfolio.datasets``: 20 S&P 500 stocks and the S&P 500 index (``SP500``), daily adjusted
  close 1990-01-02 to 2022-12-28; the style-factor ETFs MTUM, QUAL, SIZE, USMV, VLUE
  (2014-01-02 to 2022-12-28). Close-only: ``close`` equals ``adj_close``.
- ``arch.data``: S&P 500 (``^GSPC``) and NASDAQ Composite (``^IXIC``) daily OHLCV with
  adjusted close, 1999-01-04 to 2018-12-31.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

import pandas as pd

from quantorch.data.panel import PRICE_COLUMNS

__all__ = ["SampleProvider", "SAMPLE_STOCKS", "FACTOR_ETFS"]

SAMPLE_STOCKS = (
    "AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
    "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM",
)  # fmt: skip
FACTOR_ETFS = ("MTUM", "QUAL", "SIZE", "USMV", "VLUE")


def _close_only(wide: pd.DataFrame) -> pd.DataFrame:
    long = wide.rename_axis(index="date", columns="ticker").stack().rename("adj_close")
    frame = long.reset_index()
    frame["close"] = frame["adj_close"]
    for column in ("open", "high", "low", "volume"):
        frame[column] = float("nan")
    return frame[list(PRICE_COLUMNS)]


def _ohlcv(ticker: str, data: pd.DataFrame) -> pd.DataFrame:
    frame = data.rename(
        columns={
            "Open": "open",
            "High": "high",
            "Low": "low",
            "Close": "close",
            "Adj Close": "adj_close",
            "Volume": "volume",
        }
    )
    frame = frame.rename_axis("date").reset_index()
    frame["ticker"] = ticker
    frame["volume"] = frame["volume"].astype("float64")
    return frame[list(PRICE_COLUMNS)]


@functools.cache
def _all_bars() -> pd.DataFrame:
    from arch.data import nasdaq, sp500
    from skfolio.datasets import load_factors_dataset, load_sp500_dataset, load_sp500_index

    parts = [
        _close_only(load_sp500_dataset()),
        _close_only(load_sp500_index()),
        _close_only(load_factors_dataset()),
        _ohlcv("^GSPC", sp500.load()),
        _ohlcv("^IXIC", nasdaq.load()),
    ]
    bars = pd.concat(parts, ignore_index=True)
    bars["date"] = pd.to_datetime(bars["date"]).dt.normalize().astype("datetime64[ns]")
    bars = bars.dropna(subset=["adj_close"])
    return bars.sort_values(["ticker", "date"], ignore_index=True)


#: What the sample holds: first and last date per ticker. Static, so that checking a ticker or a
#: window costs nothing (loading the data takes seconds); ``measured_spans`` recomputes it and a
#: test keeps the two equal.
_STOCKS_SPAN = ("1990-01-02", "2022-12-28")
_CATALOGUE: dict[str, tuple[str, str]] = {
    **{ticker: _STOCKS_SPAN for ticker in SAMPLE_STOCKS},
    "SP500": _STOCKS_SPAN,
    **{ticker: ("2014-01-02", "2022-12-28") for ticker in FACTOR_ETFS},
    "^GSPC": ("1999-01-04", "2018-12-31"),
    "^IXIC": ("1999-01-04", "2018-12-31"),
}


@functools.cache
def _available() -> dict[str, tuple[dt.date, dt.date]]:
    return {
        ticker: (dt.date.fromisoformat(first), dt.date.fromisoformat(last))
        for ticker, (first, last) in sorted(_CATALOGUE.items())
    }


def measured_spans() -> dict[str, tuple[dt.date, dt.date]]:
    """First and last date per ticker as the installed packages really ship them."""
    spans = _all_bars().groupby("ticker")["date"].agg(["min", "max"])
    return {str(t): (row["min"].date(), row["max"].date()) for t, row in spans.iterrows()}


class SampleProvider:
    """Real daily prices shipped offline in ``skfolio`` and ``arch`` (see module docs)."""

    name = "sample"
    whole_history = True

    def available(self) -> dict[str, tuple[dt.date, dt.date]]:
        return _available()

    def fetch(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        bars = _all_bars()
        mask = bars["ticker"].isin(list(tickers)) & bars["date"].between(
            pd.Timestamp(start), pd.Timestamp(end)
        )
        return bars.loc[mask].reset_index(drop=True)
