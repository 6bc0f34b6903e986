"""Assemble the :class:`MarketData` tools read, from the store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import pandas as pd

from quantorch.data import calendar
from quantorch.data.service import ensure_prices, load_panel, stored_coverage
from quantorch.errors import UnknownTickerError
from quantorch.store import Store
from quantorch.toolkit.spec import MarketData

__all__ = ["load_market_data", "load_ticker_history", "FACTOR_TICKERS"]

#: Where a single call's history starts at the latest (the exchange calendar's first year).
EARLIEST = dt.date(1985, 1, 1)

#: Style-factor ETFs (value, quality, momentum, size, low volatility), from the sample source.
FACTOR_TICKERS = ("VLUE", "QUAL", "MTUM", "SIZE", "USMV")


def load_market_data(
    store: Store,
    source: str,
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    benchmark: str | None = None,
) -> MarketData:
    """Prices of ``tickers`` (the source's), the benchmark's close, the factor ETFs' closes
    (offline sample), and the filings and news stored for these tickers, over [start, end].

    News is kept up to the end of ``end`` (UTC); :meth:`MarketData.truncate` cuts each call at
    its decision time. The prices must already be stored (``ensure_prices``) except the factor
    ETFs, which are loaded here when the sample source has them.
    """
    tickers = list(tickers)
    prices = load_panel(store, source, tickers, start, end)
    bench = None
    if benchmark:
        bench = load_panel(store, source, [benchmark], start, end).close[benchmark]
        if not bench.notna().any():  # not stored for this source: tools report beta as n/a
            bench = None
    factors = None
    if not set(FACTOR_TICKERS) <= set(stored_coverage(store, "sample")):
        ensure_prices(store, "sample", list(FACTOR_TICKERS), start, end)
    factor_panel = load_panel(store, "sample", list(FACTOR_TICKERS), start, end).close
    if factor_panel.notna().any().any():
        factors = factor_panel.reindex(prices.dates)
    with store.connect(read_only=True) as con:
        fundamentals = con.execute(
            """
            SELECT ticker, period_end, filed_at, metric, value, source FROM fundamentals
            WHERE ticker IN (SELECT unnest(?)) AND filed_at <= ?
            ORDER BY ticker, filed_at, period_end
            """,
            [tickers, end],
        ).df()
        news = con.execute(
            """
            SELECT published_at, ticker, headline, body, source FROM news
            WHERE ticker IN (SELECT unnest(?)) AND published_at < ?
            ORDER BY ticker, published_at
            """,
            [tickers, pd.Timestamp(end) + pd.Timedelta(days=1)],
        ).df()
    return MarketData(
        prices=prices,
        benchmark=bench,
        factors=factors,
        fundamentals=fundamentals if len(fundamentals) else None,
        news=news if len(news) else None,
    )


def load_ticker_history(
    store: Store,
    source: str,
    ticker: str,
    *,
    benchmark: str | None = None,
    on_request: Callable[[str], None] | None = None,
    peers: Sequence[str] = (),
) -> MarketData:
    """Everything a single call about ``ticker`` may read: its whole history from ``source``
    (with ``peers``' bars beside it, for a tool that ranks the ticker within its universe).

    Fetches what the store lacks (the ticker's full history, the benchmark's, the factor
    ETFs'), then loads it; the runner cuts it at the call's ``asof``. Loading the whole
    history, rather than a window ending at ``asof``, lets the runner say precisely when an
    ``asof`` falls outside the data. A benchmark the source does not know is left out (the
    tools then report beta and correlation as not covered).

    Raises
    ------
    UnknownTickerError
        The source does not know ``ticker`` (with a suggestion), or holds no bar for it.
    """
    last = calendar.last_completed_session().date()
    ensure_prices(store, source, [ticker], EARLIEST, last, on_request=on_request)
    if benchmark and benchmark != ticker:
        try:
            ensure_prices(store, source, [benchmark], EARLIEST, last, on_request=on_request)
        except UnknownTickerError:
            benchmark = None
    others = [p for p in dict.fromkeys(peers) if p != ticker]
    if others:
        try:
            ensure_prices(store, source, others, EARLIEST, last, on_request=on_request)
        except UnknownTickerError:  # a peer the source lacks is left out of the cross-section
            pass
    stored = stored_coverage(store, source)
    span = stored.get(ticker)
    if span is None:
        raise UnknownTickerError(f"no {source} price bars stored for ticker '{ticker}'")
    others = [p for p in others if p in stored]
    return load_market_data(store, source, [ticker, *others], span[0], span[1],
                            benchmark=benchmark)
