"""The in-memory price panel every strategy, tool and the backtest engine read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["PricePanel", "PRICE_COLUMNS"]

#: Columns of a long price frame (one row per ticker and date), as stored in DuckDB.
PRICE_COLUMNS = ("date", "ticker", "open", "high", "low", "close", "adj_close", "volume")


@dataclass(frozen=True)
class PricePanel:
    """Adjusted daily prices as (dates x tickers) frames on one XNYS session index.

    ``close`` is the split-and-dividend adjusted close. ``open``, ``high`` and ``low`` are
    adjusted by the same factor (adj_close / close) so that returns across them are consistent;
    they are all-NaN for a ticker whose source ships only closes. ``volume`` is in shares.
    A NaN means no bar for that ticker on that session (not listed yet, halted, missing).
    """

    close: pd.DataFrame
    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    volume: pd.DataFrame

    @property
    def dates(self) -> pd.DatetimeIndex:
        return self.close.index  # type: ignore[return-value]

    @property
    def tickers(self) -> list[str]:
        return list(self.close.columns)

    def has_opens(self) -> pd.Series:
        """Per ticker: does the source ship opening prices?"""
        return self.open.notna().any()

    def truncate(self, asof: pd.Timestamp | str) -> PricePanel:
        """The panel as known at the close of ``asof`` (rows after it removed)."""
        cut = slice(None, pd.Timestamp(asof))
        return PricePanel(*(getattr(self, f).loc[cut] for f in _FIELDS))

    def select(self, tickers: list[str]) -> PricePanel:
        return PricePanel(*(getattr(self, f).reindex(columns=tickers) for f in _FIELDS))

    @classmethod
    def from_long(cls, frame: pd.DataFrame, index: pd.DatetimeIndex, tickers: list[str]) -> PricePanel:
        """Pivot a long frame with :data:`PRICE_COLUMNS` onto ``index`` x ``tickers``."""
        frame = frame.assign(date=pd.to_datetime(frame["date"]).astype("datetime64[ns]"))

        def pivot(column: str) -> pd.DataFrame:
            wide = frame.pivot(index="date", columns="ticker", values=column)
            wide = wide.reindex(index=index, columns=tickers).astype("float64")
            wide.columns.name = None
            wide.index.name = "date"
            return wide

        adj_close = pivot("adj_close")
        raw_close = pivot("close")
        factor = (adj_close / raw_close).where(raw_close > 0)
        return cls(
            close=adj_close,
            open=pivot("open") * factor,
            high=pivot("high") * factor,
            low=pivot("low") * factor,
            volume=pivot("volume"),
        )

    @classmethod
    def from_close(cls, close: pd.DataFrame) -> PricePanel:
        """A close-only panel (opens, highs, lows and volumes unknown)."""
        empty = pd.DataFrame(np.nan, index=close.index, columns=close.columns)
        return cls(close=close, open=empty, high=empty.copy(), low=empty.copy(), volume=empty.copy())


_FIELDS = ("close", "open", "high", "low", "volume")
