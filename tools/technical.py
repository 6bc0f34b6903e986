"""Technical analysis with TA-Lib: trend, momentum, mean reversion, volatility, volume.

Providers: ``basic`` (five close-based indicators) and ``full`` (everything, including ATR/ADX
where highs and lows exist and volume indicators where volume exists). Close-only series
work: what needs OHLC or volume is NaN, and the summary says it is not covered.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import talib

from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import MarketData, OutputField, ProviderSpec, ToolSpec

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

SPEC = ToolSpec(
    name="technical",
    description=(
        "Technical indicators of the stock's own price and volume up to the decision close: "
        "trend (price vs moving averages, their slope), momentum (RSI, rate of change, MACD), "
        "mean reversion (Bollinger %b, z-score), volatility (ATR) and volume (OBV)."
    ),
    outputs=_BASIC + _FULL_ONLY,
    providers=(
        ProviderSpec(name="basic", description="5 close-based indicators",
                     usd_per_call=0.0005, expected_latency_ms=2,
                     outputs=tuple(f.name for f in _BASIC)),
        ProviderSpec(name="full", description="14 indicators incl. ATR/ADX and volume",
                     usd_per_call=0.002, expected_latency_ms=5),
    ),
    default_provider="basic",
)


def _column(close: np.ndarray, high: np.ndarray, low: np.ndarray, volume: np.ndarray, full: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    sma20 = talib.SMA(close, 20)
    sma50 = talib.SMA(close, 50)
    out["close_vs_sma20"] = close / sma20 - 1
    out["close_vs_sma50"] = close / sma50 - 1
    out["rsi14"] = talib.RSI(close, 14) / 100 - 0.5
    out["roc10"] = talib.ROC(close, 10) / 100
    upper, _, lower = talib.BBANDS(close, 20, 2.0, 2.0)
    width = upper - lower
    out["bollinger_pctb"] = np.divide(close - lower, width, out=np.full_like(close, np.nan), where=width > 0)
    if not full:
        return out
    out["close_vs_sma200"] = close / talib.SMA(close, 200) - 1
    shifted = np.concatenate([np.full(5, np.nan), sma50[:-5]]) if len(sma50) > 5 else np.full_like(sma50, np.nan)
    out["sma50_slope"] = sma50 / shifted - 1
    _, _, hist = talib.MACD(close, 12, 26, 9)
    out["macd_hist"] = hist / close
    sd20 = talib.STDDEV(close, 20, 1.0)
    out["zscore20"] = np.divide(close - sma20, sd20, out=np.full_like(close, np.nan), where=sd20 > 0)
    out["roc20"] = talib.ROC(close, 20) / 100
    nan = np.full_like(close, np.nan)
    has_range = np.isfinite(high).all() and np.isfinite(low).all()
    out["natr14"] = talib.NATR(high, low, close, 14) / 100 if has_range else nan
    out["adx14"] = talib.ADX(high, low, close, 14) / 100 if has_range else nan.copy()
    if np.isfinite(volume).all() and volume.sum() > 0:
        obv = talib.OBV(close, volume)
        mean_volume = talib.SMA(volume, 20)
        prev = np.concatenate([np.full(20, np.nan), obv[:-20]]) if len(obv) > 20 else np.full_like(obv, np.nan)
        out["obv_slope20"] = np.divide(obv - prev, 20 * mean_volume, out=nan.copy(), where=mean_volume > 0)
        sd = talib.STDDEV(volume, 20, 1.0)
        out["volume_z20"] = np.divide(volume - mean_volume, sd, out=nan.copy(), where=sd > 0)
    else:
        out["obv_slope20"] = nan.copy()
        out["volume_z20"] = nan.copy()
    return out


class TechnicalTool(PanelTool):
    spec = SPEC

    def series(self, data: MarketData, provider: ProviderSpec, tickers: list[str]) -> dict[str, pd.DataFrame]:
        prices = data.prices
        full = provider.name == "full"
        names = [f.name for f in (_BASIC + _FULL_ONLY if full else _BASIC)]
        values = {n: np.full((len(prices.dates), len(tickers)), np.nan) for n in names}
        for j, ticker in enumerate(tickers):
            if ticker not in prices.close:
                continue
            close = prices.close[ticker]
            rows = np.flatnonzero(close.notna().to_numpy())  # skip sessions with no bar
            if len(rows) == 0:
                continue
            def pick(frame: pd.DataFrame) -> np.ndarray:
                return frame[ticker].to_numpy(dtype=np.float64)[rows]
            columns = _column(pick(prices.close), pick(prices.high), pick(prices.low), pick(prices.volume), full)
            for name in names:
                values[name][rows, j] = columns[name]
        return {n: pd.DataFrame(v, index=prices.dates, columns=tickers) for n, v in values.items()}

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
        if provider.name == "full" and not math.isfinite(features.get("natr14", float("nan"))):
            parts.append("ATR/ADX not covered (no high/low)")
        if provider.name == "full" and not math.isfinite(features.get("volume_z20", float("nan"))):
            parts.append("volume indicators not covered (no volume)")
        return f"technical ({provider.name}) {ticker}: " + ("; ".join(parts) or "not enough history")


TOOL = TechnicalTool()
