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
from quantorch.orchestrator.strategy import slot_panels
from quantorch.store import Store
from quantorch.toolkit.spec import MarketData

__all__ = ["resolve_slots", "market_for", "period_dataset", "WARMUP_SESSIONS"]

#: History loaded before a period so every tool has its look-back (252-session windows).
WARMUP_SESSIONS = 300


def resolve_slots(names: Sequence[str]) -> list[ToolSlot]:
    """``["technical:basic", ...]`` -> slots with the provider's price and the tool's outputs."""
    from quantorch.toolkit.registry import get_tool

    slots = []
    for name in names:
        tool_name, _, provider_name = name.partition(":")
        tool = get_tool(tool_name)
        try:
            provider = tool.spec.provider(provider_name or None)
        except KeyError:
            valid = ", ".join(p.name for p in tool.spec.providers)
            raise UserInputError(
                f"unknown provider '{provider_name}' for tool {tool_name}; providers: {valid}"
            ) from None
        if provider.online:
            raise UserInputError(
                f"{tool_name}:{provider.name} needs the network and cannot be precomputed for "
                "the compact policy; remove it from orchestrator.tools"
            )
        slots.append(
            ToolSlot(
                tool_name,
                provider.name,
                provider.expected_cost_usd,
                tool.spec.provider_outputs(provider.name),
            )
        )
    return slots


def market_for(
    config: QuantorchConfig, store: Store, start: dt.date, end: dt.date
) -> MarketData:
    """Prices (with warm-up), benchmark, factor ETFs, filings and news for the universe."""
    from quantorch.toolkit.market import load_market_data

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
) -> DecisionDataset:
    """Every (session, ticker) in [start, end] whose forward return ends inside the period."""
    cut = market.truncate(pd.Timestamp(end))
    prices = cut.prices
    dates = prices.dates[(prices.dates >= pd.Timestamp(start)) & (prices.dates <= pd.Timestamp(end))]
    if len(dates) == 0:
        raise UserInputError(f"no sessions with data between {start} and {end}")
    tickers = prices.tickers
    panels, _ = slot_panels(cut, list(slots), tickers, dates)
    return build_dataset(prices, panels, dates, tickers, horizon, normalisation=normalisation)
