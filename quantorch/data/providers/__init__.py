"""Price providers: adapters that turn a vendor's data into the long price frame.

A provider answers two questions: which tickers and dates it has (:meth:`available`, ``None``
when it cannot know without asking the network) and the bars for some tickers over a range
(:meth:`fetch`). Everything else (incremental fetching, storage, validation) lives in
:mod:`quantorch.data.service` and is shared by all providers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from quantorch.errors import UserInputError, did_you_mean

__all__ = ["PriceProvider", "get_provider", "benchmark_label", "PROVIDERS"]

PROVIDERS = ("sample", "yfinance", "file")

#: Benchmarks that are price indices: their level leaves dividends out, while the stocks'
#: adjusted closes include them, so comparing the two flatters a strategy by the dividend yield.
_PRICE_INDICES = {
    "SP500": "S&P 500",
    "^GSPC": "S&P 500",
    "^SPX": "S&P 500",
    "^IXIC": "NASDAQ Composite",
    "^NDX": "NASDAQ-100",
    "^DJI": "Dow Jones Industrial Average",
    "^RUT": "Russell 2000",
}


def benchmark_label(symbol: str) -> str:
    """What a benchmark series is, said plainly (e.g. a price index without dividends)."""
    name = _PRICE_INDICES.get(symbol.upper())
    if name is not None:
        return f"{name} price index (excludes dividends)"
    return f"{symbol} (adjusted close as stored)"


class PriceProvider(Protocol):
    """The port every price source implements."""

    name: str
    #: Fetch a ticker's whole available history on first use (cheap sources), not just gaps.
    whole_history: bool

    def available(self) -> dict[str, tuple[dt.date, dt.date]] | None:
        """Known tickers with their first and last dates, or None if unknowable offline."""
        ...

    def fetch(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars for ``tickers`` in [start, end] as a long frame with ``PRICE_COLUMNS``."""
        ...


def get_provider(name: str) -> PriceProvider | None:
    """The provider called ``name``; ``None`` for ``file`` (rows only come in by import)."""
    if name == "sample":
        from quantorch.data.providers.sample import SampleProvider

        return SampleProvider()
    if name == "yfinance":
        from quantorch.data.providers.yfinance import YFinanceProvider

        return YFinanceProvider()
    if name == "file":
        return None
    suggestion = did_you_mean(name, PROVIDERS)
    raise UserInputError(
        f"unknown data source '{name}'{suggestion}; available: {', '.join(PROVIDERS)}"
    )
