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

from quantorch.errors import UserInputError, closest

__all__ = ["PriceProvider", "get_provider", "PROVIDERS"]

PROVIDERS = ("sample", "yfinance", "file")


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
    hint = closest(name, PROVIDERS)
    suggestion = f" (did you mean {hint}?)" if hint else ""
    raise UserInputError(
        f"unknown data source '{name}'{suggestion}; available: {', '.join(PROVIDERS)}"
    )
