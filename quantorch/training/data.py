"""Walk-forward decision datasets from real data, for training and evaluation.

Train, validation and test periods never overlap, and a period's forward returns are computed
on prices cut at the period's end, so no training label reaches into the validation period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from quantorch.config import QuantorchConfig
from quantorch.data import calendar
from quantorch.errors import UserInputError
from quantorch.orchestrator.dataset import DecisionDataset, ToolSlot, build_dataset
from quantorch.orchestrator.slots import WARMUP_SESSIONS, slot_panels
from quantorch.store import Store
from quantorch.toolkit.market import load_market_data
from quantorch.toolkit.spec import MarketData

__all__ = ["market_for", "period_dataset"]


def market_for(
    config: QuantorchConfig, store: Store, start: dt.date, end: dt.date
) -> MarketData:
    """Prices (with warm-up), benchmark, factor ETFs, filings and news for the universe."""
    first = calendar.shift_sessions(start, -WARMUP_SESSIONS).date()
    return load_market_data(
        store,
        config.data.source,
        list(config.universe),
        first,
        end,
        benchmark=config.benchmark_symbol,
    )


def period_dataset(
    market: MarketData,
    slots: Sequence[ToolSlot],
    start: dt.date,
    end: dt.date,
    horizon: int,
    normalisation: dict | None = None,
    extra_dirs: Sequence = (),
) -> DecisionDataset:
    """Every (session, ticker) in [start, end] whose forward return ends inside the period."""
    cut = market.truncate(pd.Timestamp(end))
    prices = cut.prices
    dates = prices.dates[(prices.dates >= pd.Timestamp(start)) & (prices.dates <= pd.Timestamp(end))]
    if len(dates) == 0:
        raise UserInputError(f"no sessions with data between {start} and {end}")
    tickers = prices.tickers
    panels, _ = slot_panels(cut, list(slots), tickers, dates, extra_dirs=extra_dirs)
    return build_dataset(prices, panels, dates, tickers, horizon, normalisation=normalisation)
