"""Moving-average crossover: hold, equally weighted, the tickers in an uptrend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib
from pydantic import Field, model_validator
from quantorch.strategies.base import StrategyParams

from quantorch.data.panel import PricePanel

__all__ = ["SmaCross", "SmaCrossParams", "sma"]


class SmaCrossParams(StrategyParams):
    """Window lengths in sessions; ``fast`` must be shorter than ``slow``."""

    fast: int = Field(50, ge=1, description="fast simple moving average, sessions")
    slow: int = Field(200, ge=2, description="slow simple moving average, sessions")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(
                f"fast ({self.fast}) must be smaller than slow ({self.slow}); swap or change them"
            )
        return self


def sma(close: pd.DataFrame, window: int) -> pd.DataFrame:
    """TA-Lib simple moving average of each column over its own bars.

    NaN cells (no bar) are skipped rather than poisoning the running sum, so the value at a
    date averages the ``window`` latest bars on or before it; NaN where there is no bar or
    fewer than ``window`` bars so far.
    """
    out = np.full(close.shape, np.nan)
    for j in range(close.shape[1]):
        column = close.iloc[:, j].to_numpy(dtype=np.float64)
        has_bar = ~np.isnan(column)
        if has_bar.sum() >= window:
            out[has_bar, j] = talib.SMA(column[has_bar], timeperiod=window)
    return pd.DataFrame(out, index=close.index, columns=close.columns)


class SmaCross:
    """Long-only, equal weight over the tickers whose fast SMA is above their slow SMA.

    At each decision date t a ticker with a close at t and ``SMA(fast) > SMA(slow)`` (TA-Lib,
    on the adjusted close up to t) gets ``1 / n`` of equity, every other ticker 0; all cash
    when no ticker qualifies. Needs ``slow`` sessions of history.
    """

    name = "sma-cross"
    Params = SmaCrossParams

    def __init__(self, params: SmaCrossParams | None = None) -> None:
        self.params = params or SmaCrossParams()

    @property
    def warmup_sessions(self) -> int:
        return self.params.slow

    def target_weights(self, panel: PricePanel, decision_dates: pd.DatetimeIndex) -> pd.DataFrame:
        decision_dates = pd.DatetimeIndex(decision_dates)
        close = panel.close
        fast = sma(close, self.params.fast).to_numpy()
        slow = sma(close, self.params.slow).to_numpy()
        with np.errstate(invalid="ignore"):
            uptrend = (fast > slow) & close.notna().to_numpy()
        signal = pd.DataFrame(uptrend, index=close.index, columns=close.columns)
        signal = signal.reindex(decision_dates, fill_value=False).to_numpy(dtype=np.float64)
        count = signal.sum(axis=1, keepdims=True)
        weights = np.divide(signal, count, out=np.zeros_like(signal), where=count > 0)
        return pd.DataFrame(weights, index=decision_dates, columns=close.columns)


STRATEGY_CLASS = SmaCross
