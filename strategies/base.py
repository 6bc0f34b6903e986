"""The strategy contract: from prices to target weights, without look-ahead.

A strategy turns a :class:`~quantorch.data.panel.PricePanel` into target weights on a set of
decision dates; the backtest engine turns those into fills at the next session (see
:mod:`quantorch.backtest.engine`). Orchestrators implement the same protocol.

Contract
--------
- ``target_weights(panel, decision_dates)`` returns a float frame indexed by
  ``decision_dates`` with the panel's tickers as columns (same order).
- The row for date t is the target fraction of equity per ticker decided at the close of t.
  It may only depend on panel rows dated on or before t: computing it on
  ``panel.truncate(t)`` must give the same row (no look-ahead; the "poisoned future" tests
  check this).
- NaN means "keep the current position"; 0 means "no position". Long-only strategies return
  weights >= 0; the sum of absolute weights of a row must not exceed 1.
- ``warmup_sessions`` is how many sessions of history before the first decision date the
  strategy needs to give its first meaningful row; the runner loads that much extra history.

Adding a strategy
-----------------
Write one module in this package that defines ``STRATEGY_CLASS``: a class with a class
attribute ``name`` (the registry key, e.g. ``"sma-cross"``), a class attribute ``Params``
(a subclass of :class:`StrategyParams`) and a constructor taking an instance of it. The
registry in ``quantorch.strategies`` discovers it; nothing else changes.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import pandas as pd
from pydantic import BaseModel, ConfigDict

from quantorch.data.panel import PricePanel

__all__ = ["Strategy", "StrategyClass", "StrategyParams"]


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: strict (unknown keys refused) and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class Strategy(Protocol):
    """Anything that maps prices to target weights on decision dates (see module docs)."""

    name: str
    warmup_sessions: int

    def target_weights(
        self, panel: PricePanel, decision_dates: pd.DatetimeIndex
    ) -> pd.DataFrame: ...


class StrategyClass(Protocol):
    """What a strategy module exports as ``STRATEGY_CLASS``."""

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]

    def __call__(self, params: StrategyParams) -> Strategy: ...
