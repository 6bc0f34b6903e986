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

__all__ = ["market_for", "period_dataset", "period_datasets"]


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
    return period_datasets(market, slots, [(start, end)], horizon, normalisation, extra_dirs)[0]


def period_datasets(
    market: MarketData,
    slots: Sequence[ToolSlot],
    periods: Sequence[tuple[dt.date, dt.date]],
    horizon: int,
    normalisation: dict | None = None,
    extra_dirs: Sequence = (),
) -> list[DecisionDataset]:
    """:func:`period_dataset` for several periods from one tool-panel computation.

    The panels are computed once, on ``market`` cut at the latest period's end, at every
    period's sessions: a tool's value at t depends only on data up to t (the tool panel tests
    check each tool's causality), so a period's features equal those of its own cut. Each
    period's free context and forward returns come from prices cut at *its* end, so no label
    of one period reaches into the next. With ``normalisation=None`` the first period fits the
    z-scores (training) and the others reuse them; else all use the given statistics.
    """
    if not periods:
        return []
    last = max(end for _, end in periods)
    cut = market.truncate(pd.Timestamp(last))
    all_dates = cut.prices.dates
    per_period = []
    for start, end in periods:
        dates = all_dates[(all_dates >= pd.Timestamp(start)) & (all_dates <= pd.Timestamp(end))]
        if len(dates) == 0:
            raise UserInputError(f"no sessions with data between {start} and {end}")
        per_period.append(dates)
    panels, _ = slot_panels(cut, list(slots), cut.prices.tickers,
                            pd.DatetimeIndex(sorted(set().union(*per_period))),
                            extra_dirs=extra_dirs)
    out = []
    for (_, end), dates in zip(periods, per_period, strict=True):
        prices = cut.prices.truncate(pd.Timestamp(end))
        dataset = build_dataset(prices, panels, dates, prices.tickers, horizon,
                                normalisation=normalisation, extra_dirs=extra_dirs)
        if normalisation is None:
            normalisation = dataset.normalisation
        out.append(dataset)
    return out
