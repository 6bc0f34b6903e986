"""Yahoo Finance prices through ``yfinance`` (online; install ``quantorch[online]``).

yfinance does not raise when a symbol is unknown or the network is down: it logs and returns an
empty frame. This adapter turns that silence into :class:`DataSourceUnavailableError` naming the
tickers that came back empty, retries rate limits with exponential backoff, and never hands an
empty frame to a backtest.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from quantorch.data.panel import PRICE_COLUMNS
from quantorch.errors import DataSourceUnavailableError, UserInputError
from quantorch.redact import redact

__all__ = ["YFinanceProvider"]

_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class YFinanceProvider:
    """Daily OHLCV and adjusted close from Yahoo Finance.

    Parameters
    ----------
    retries
        Attempts per request when Yahoo rate-limits.
    backoff
        First wait in seconds; doubled after each rate-limited attempt.
    download
        The download function (``yfinance.download`` by default; tests inject a fake).
    """

    name = "yfinance"
    whole_history = False

    def __init__(
        self,
        retries: int = 4,
        backoff: float = 2.0,
        timeout: float = 20.0,
        download: Callable[..., pd.DataFrame] | None = None,
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._download = download

    def available(self) -> None:
        return None

    def fetch(self, tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
        tickers = list(tickers)
        raw, errors = self._download_with_retry(tickers, start, end)
        frame = _to_long(raw, tickers)
        missing = sorted(set(tickers) - set(frame["ticker"]))
        if missing:
            # yfinance's log lines and errors may carry request URLs (a proxy's user:password@)
            detail = f": {redact(errors[-1])}" if errors else ""
            raise DataSourceUnavailableError(
                f"yfinance returned no prices for {', '.join(missing)} between {start} and {end}"
                f"{redact(_shorten(detail))} (check the symbols and your internet connection, or use "
                "--source sample offline)"
            )
        return frame

    def _download_with_retry(
        self, tickers: list[str], start: dt.date, end: dt.date
    ) -> tuple[pd.DataFrame, list[str]]:
        download = self._download or _yfinance_download()
        rate_limit = _rate_limit_error()
        delay = self.backoff
        capture = _Captured()
        logger = logging.getLogger("yfinance")
        previous_level, previous_propagate = logger.level, logger.propagate
        logger.addHandler(capture)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        try:
            for attempt in range(1, self.retries + 1):
                try:
                    raw = download(
                        tickers,
                        start=str(start),
                        end=str(pd.Timestamp(end) + pd.Timedelta(days=1))[:10],
                        auto_adjust=False,
                        actions=False,
                        progress=False,
                        threads=False,
                        group_by="ticker",
                        timeout=self.timeout,
                        multi_level_index=True,
                    )
                except rate_limit as exc:
                    if attempt == self.retries:
                        raise DataSourceUnavailableError(
                            f"Yahoo Finance is rate-limiting requests after {attempt} attempts; "
                            "wait a few minutes and run the command again"
                        ) from exc
                    time.sleep(delay)
                    delay *= 2
                    continue
                except (OSError, ValueError, RuntimeError) as exc:
                    raise DataSourceUnavailableError(
                        f"yfinance failed: {redact(str(exc))} (check your internet connection)"
                    ) from exc
                rate_limited = any("rate limit" in m.lower() for m in capture.messages)
                if rate_limited and attempt < self.retries and (raw is None or raw.empty):
                    capture.messages.clear()
                    time.sleep(delay)
                    delay *= 2
                    continue
                return (raw if raw is not None else pd.DataFrame()), capture.messages
            raise AssertionError("unreachable")
        finally:
            logger.removeHandler(capture)
            logger.setLevel(previous_level)
            logger.propagate = previous_propagate


def _to_long(raw: pd.DataFrame, tickers: list[str]) -> pd.DataFrame:
    if raw is None or raw.empty:
        return pd.DataFrame(columns=list(PRICE_COLUMNS))
    parts = []
    for ticker in tickers:
        if isinstance(raw.columns, pd.MultiIndex):
            if ticker not in raw.columns.get_level_values(0):
                continue
            one = raw[ticker]
        else:
            one = raw
        one = one.rename(columns=_COLUMNS).dropna(subset=["close"])
        if one.empty:
            continue
        one = one.rename_axis("date").reset_index()
        one["date"] = pd.to_datetime(one["date"]).dt.tz_localize(None).dt.normalize()
        one["ticker"] = ticker
        if "adj_close" not in one:
            one["adj_close"] = one["close"]
        for column in PRICE_COLUMNS:
            if column not in one:
                one[column] = float("nan")
        parts.append(one[list(PRICE_COLUMNS)])
    if not parts:
        return pd.DataFrame(columns=list(PRICE_COLUMNS))
    frame = pd.concat(parts, ignore_index=True)
    frame["volume"] = frame["volume"].astype("float64")
    return frame


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _yfinance_download() -> Callable[..., Any]:
    try:
        import yfinance
    except ImportError as exc:
        raise UserInputError(
            "the yfinance source needs the online extra: pip install 'quantorch[online]'"
        ) from exc
    return yfinance.download


def _rate_limit_error() -> type[BaseException]:
    try:
        from yfinance.exceptions import YFRateLimitError
    except ImportError:  # yfinance absent or too old: nothing to catch
        return _NeverRaised
    return YFRateLimitError


class _NeverRaised(Exception):
    pass
