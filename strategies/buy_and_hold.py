"""Buy and hold: equal weight at the first decision, never rebalanced."""

from __future__ import annotations

import numpy as np
import pandas as pd
from quantorch.strategies.base import StrategyParams

from quantorch.data.panel import PricePanel

__all__ = ["BuyAndHold", "BuyAndHoldParams"]


class BuyAndHoldParams(StrategyParams):
    """Buy and hold takes no parameters."""


class BuyAndHold:
    """Equal weight across the tickers priced at the first decision date, then hold.

    The first row gives each ticker with a close on that date ``1 / n`` (others 0); every
    later row is NaN, so the engine never trades again.
    """

    name = "buy-and-hold"
    Params = BuyAndHoldParams
    warmup_sessions = 0

    def __init__(self, params: BuyAndHoldParams | None = None) -> None:
        self.params = params or BuyAndHoldParams()

    def target_weights(self, panel: PricePanel, decision_dates: pd.DatetimeIndex) -> pd.DataFrame:
        decision_dates = pd.DatetimeIndex(decision_dates)
        weights = pd.DataFrame(np.nan, index=decision_dates, columns=panel.close.columns)
        if len(decision_dates) == 0:
            return weights
        priced = panel.close.reindex([decision_dates[0]]).iloc[0].notna().to_numpy()
        if priced.any():
            weights.iloc[0] = np.where(priced, 1.0 / priced.sum(), 0.0)
        return weights


STRATEGY_CLASS = BuyAndHold
