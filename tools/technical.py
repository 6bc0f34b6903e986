"""Technical analysis with TA-Lib: trend, momentum, mean reversion, volatility, volume.

Providers: ``basic`` (five close-based indicators) and ``full`` (everything, including ATR/ADX
where highs and lows exist and volume indicators where volume exists). Close-only series
work: what needs OHLC or volume is NaN, and the summary says it is not covered.

Each indicator family runs on the ticker's own bars, skipping sessions where its inputs are
missing: close-based indicators on the bars with a close, ATR/ADX on the bars with a close, a
high and a low, volume indicators on the bars with a close and a volume. Which bars count is
decided bar by bar, never from the whole series, so a bar after t can never change a value at
t (the poisoned-future tests check this).

Coverage: every indicator is NaN during its warm-up (the 10-session rate of change needs 11
closes, RSI 15, the 20-session SMA 20), so a call has data when one indicator is finite (the
default rule of :class:`~quantorch.toolkit.base.PanelTool`); a call with none is not covered and
not charged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import talib

from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import MarketData, OutputField, ProviderSpec, ToolSpec

__all__ = ["SPEC", "TOOL", "TechnicalTool", "close_indicators", "range_indicators",
           "volume_indicators"]

_BASIC = (
    OutputField(name="close_vs_sma20", description="close / 20-session SMA - 1", unit="fraction"),
    OutputField(name="close_vs_sma50", description="close / 50-session SMA - 1", unit="fraction"),
    OutputField(name="rsi14", description="14-session RSI, centred: RSI/100 - 0.5", unit="fraction"),
    OutputField(name="roc10", description="10-session rate of change", unit="fraction"),
    OutputField(name="bollinger_pctb", description="Bollinger %b (20 sessions, 2 sd)", unit="fraction of band"),
)
_FULL_ONLY = (
    OutputField(name="close_vs_sma200", description="close / 200-session SMA - 1", unit="fraction"),
    OutputField(name="sma50_slope", description="5-session change of the 50-session SMA", unit="fraction"),
    OutputField(name="macd_hist", description="MACD(12,26,9) histogram / close", unit="fraction of price"),
    OutputField(name="zscore20", description="(close - 20-session mean) / 20-session sd", unit="z-score"),
    OutputField(name="roc20", description="20-session rate of change", unit="fraction"),
    OutputField(name="natr14", description="14-session normalised ATR (needs high/low)", unit="fraction of price"),
    OutputField(name="adx14", description="14-session ADX trend strength / 100 (needs high/low)", unit="fraction"),
    OutputField(name="obv_slope20", description="20-session change of on-balance volume / mean volume (needs volume)", unit="ratio"),
    OutputField(name="volume_z20", description="volume z-score over 20 sessions (needs volume)", unit="z-score"),
)
_RANGE = ("natr14", "adx14")
_VOLUME = ("obv_slope20", "volume_z20")

SPEC = ToolSpec(
    name="technical",
    description=(
        "Technical indicators of the stock's own price and volume up to the decision close: "
        "trend (price vs moving averages, their slope), momentum (RSI, rate of change, MACD), "
        "mean reversion (Bollinger %b, z-score), volatility (ATR) and volume (OBV)."
    ),
    outputs=_BASIC + _FULL_ONLY,
    providers=(
        # Prices and latencies (measured p50 of a single call): see docs/tools.md.
        ProviderSpec(name="basic", description="5 close-based indicators",
                     usd_per_call=0.0005, expected_latency_ms=4,
                     outputs=tuple(f.name for f in _BASIC)),
        ProviderSpec(name="full", description="14 indicators incl. ATR/ADX and volume",
                     usd_per_call=0.002, expected_latency_ms=6),
    ),
    default_provider="basic",
)


def _lag(values: np.ndarray, periods: int) -> np.ndarray:
    out = np.full_like(values, np.nan)
    if len(values) > periods:
        out[periods:] = values[:-periods]
    return out


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full_like(numerator, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def close_indicators(close: np.ndarray, full: bool) -> dict[str, np.ndarray]:
    """Close-based indicators of one ticker's consecutive bars (1-D, no NaN)."""
    out: dict[str, np.ndarray] = {}
    sma20 = talib.SMA(close, 20)
    sma50 = talib.SMA(close, 50)
    out["close_vs_sma20"] = close / sma20 - 1
    out["close_vs_sma50"] = close / sma50 - 1
    out["rsi14"] = talib.RSI(close, 14) / 100 - 0.5
    out["roc10"] = talib.ROC(close, 10) / 100
    upper, _, lower = talib.BBANDS(close, 20, 2.0, 2.0)
    out["bollinger_pctb"] = _ratio(close - lower, upper - lower)
    if not full:
        return out
    out["close_vs_sma200"] = close / talib.SMA(close, 200) - 1
    out["sma50_slope"] = sma50 / _lag(sma50, 5) - 1
    _, _, hist = talib.MACD(close, 12, 26, 9)
    out["macd_hist"] = hist / close
    out["zscore20"] = _ratio(close - sma20, talib.STDDEV(close, 20, 1.0))
    out["roc20"] = talib.ROC(close, 20) / 100
    return out


def range_indicators(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict[str, np.ndarray]:
    """ATR-type indicators of one ticker's consecutive bars with a high and a low."""
    return {
        "natr14": talib.NATR(high, low, close, 14) / 100,
        "adx14": talib.ADX(high, low, close, 14) / 100,
    }


def volume_indicators(close: np.ndarray, volume: np.ndarray) -> dict[str, np.ndarray]:
    """Volume indicators of one ticker's consecutive bars with a volume."""
    obv = talib.OBV(close, volume)
    mean_volume = talib.SMA(volume, 20)
    return {
        "obv_slope20": _ratio(obv - _lag(obv, 20), 20 * mean_volume),
        "volume_z20": _ratio(volume - mean_volume, talib.STDDEV(volume, 20, 1.0)),
    }


class TechnicalTool(PanelTool):
    spec = SPEC

    def series(self, data: MarketData, provider: ProviderSpec, tickers: list[str]) -> dict[str, pd.DataFrame]:
        prices = data.prices
        full = provider.name == "full"
        names = [f.name for f in (_BASIC + _FULL_ONLY if full else _BASIC)]
        shape = (len(prices.dates), len(tickers))
        values = {n: np.full(shape, np.nan) for n in names}

        def matrix(frame: pd.DataFrame) -> np.ndarray:
            return frame.reindex(columns=tickers).to_numpy(dtype=np.float64)

        close = matrix(prices.close)
        high = matrix(prices.high) if full else None
        low = matrix(prices.low) if full else None
        volume = matrix(prices.volume) if full else None
        with np.errstate(divide="ignore", invalid="ignore"):  # bad bars give NaN, not warnings
            self._fill(values, close, high, low, volume, full)
        return {
            n: pd.DataFrame(v, index=prices.dates, columns=tickers, copy=False) for n, v in values.items()
        }

    @staticmethod
    def _fill(
        values: dict[str, np.ndarray],
        close: np.ndarray,
        high: np.ndarray | None,
        low: np.ndarray | None,
        volume: np.ndarray | None,
        full: bool,
    ) -> None:
        for j in range(close.shape[1]):
            has_close = np.isfinite(close[:, j])
            rows = np.flatnonzero(has_close)
            if len(rows) == 0:
                continue
            c = np.ascontiguousarray(close[rows, j])
            for name, column in close_indicators(c, full).items():
                values[name][rows, j] = column
            if not full:
                continue
            rows = np.flatnonzero(has_close & np.isfinite(high[:, j]) & np.isfinite(low[:, j]))
            if len(rows):
                h, lo, c = (np.ascontiguousarray(a[rows, j]) for a in (high, low, close))
                for name, column in range_indicators(h, lo, c).items():
                    values[name][rows, j] = column
            rows = np.flatnonzero(has_close & np.isfinite(volume[:, j]))
            if len(rows):
                c, v = (np.ascontiguousarray(a[rows, j]) for a in (close, volume))
                for name, column in volume_indicators(c, v).items():
                    values[name][rows, j] = column

    def summarise(self, ticker: str, features: dict[str, float], provider: ProviderSpec) -> str:
        parts = []
        trend = features.get("close_vs_sma50", float("nan"))
        if math.isfinite(trend):
            parts.append(f"price {trend:+.1%} vs its 50-day average")
        rsi = features.get("rsi14", float("nan"))
        if math.isfinite(rsi):
            parts.append(f"RSI {100 * (rsi + 0.5):.0f}")
        pctb = features.get("bollinger_pctb", float("nan"))
        if math.isfinite(pctb):
            parts.append(f"Bollinger %b {pctb:.2f}")
        if provider.name == "full":
            macd = features.get("macd_hist", float("nan"))
            if math.isfinite(macd):
                parts.append(f"MACD histogram {macd:+.2%} of price")
            natr = features.get("natr14", float("nan"))
            if math.isfinite(natr):
                parts.append(f"ATR {natr:.1%} of price")
            else:
                parts.append("ATR/ADX not covered (no high/low)")
            if not math.isfinite(features.get("volume_z20", float("nan"))):
                parts.append("volume indicators not covered (no volume)")
        return f"technical ({provider.name}) {ticker}: " + ("; ".join(parts) or "not enough history")


TOOL = TechnicalTool()
