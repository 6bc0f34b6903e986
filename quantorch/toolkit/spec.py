"""The uniform description and values of analysis tools.

A :class:`ToolSpec` is what an orchestrator reads to choose a tool: name, an LLM-readable
description, JSON-schema parameters, the output fields with meaning and units, and the
providers (variants) with their price and expected latency, like ToolOrchestra's price table.
A :class:`ToolResult` is what one call returns: numeric features for policies, a short text
summary for LLMs, coverage, cost and latency. :func:`charged_cost` is the one charging rule
(a call whose tool had no data costs nothing) and :func:`covered` the one coverage rule (the
tool's own definition of "no data"), for single calls, panels, the reward and the budget alike.

Tools read only a :class:`MarketData` that the runner has already cut at the decision time, so
a single call cannot see the future by construction; whole-panel computations (for speed) are
held to the same standard by property tests.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from quantorch.data.panel import PricePanel

__all__ = [
    "ErrorKind",
    "ProviderSpec",
    "OutputField",
    "ToolSpec",
    "ToolRequest",
    "ToolResult",
    "MarketData",
    "Tool",
    "any_finite",
    "charged_cost",
    "covered",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSpec(_Frozen):
    """One variant of a tool, with its price and expected latency."""

    name: str
    description: str
    usd_per_call: float = Field(0.0, ge=0)
    usd_per_1k_input_tokens: float = Field(0.0, ge=0)
    usd_per_1k_output_tokens: float = Field(0.0, ge=0)
    #: Typical token counts per call, to quote an expected price for token-priced providers.
    expected_input_tokens: int = Field(0, ge=0)
    expected_output_tokens: int = Field(0, ge=0)
    expected_latency_ms: float = Field(ge=0)
    #: Same inputs give the same outputs: results may be cached and reused for free.
    deterministic: bool = True
    #: Needs the network (an API, an LLM endpoint).
    online: bool = False
    #: Names of the output fields this provider fills (None: all of the tool's outputs).
    outputs: tuple[str, ...] | None = None

    @property
    def expected_cost_usd(self) -> float:
        """Price of a typical call: per-call price plus the expected token bill."""
        return (
            self.usd_per_call
            + self.expected_input_tokens / 1000 * self.usd_per_1k_input_tokens
            + self.expected_output_tokens / 1000 * self.usd_per_1k_output_tokens
        )

    def token_cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """Price of a call that used the given tokens."""
        return (
            self.usd_per_call
            + input_tokens / 1000 * self.usd_per_1k_input_tokens
            + output_tokens / 1000 * self.usd_per_1k_output_tokens
        )


class OutputField(_Frozen):
    """One numeric feature a tool returns."""

    name: str
    description: str
    unit: str = Field(description="e.g. 'fraction', 'annualised fraction', 'z-score', 'USD'")


class ToolSpec(_Frozen):
    """The unified, priced description of one tool."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}, "additionalProperties": False},
        description="JSON schema of the call's arguments besides ticker and asof",
    )
    outputs: tuple[OutputField, ...]
    providers: tuple[ProviderSpec, ...] = Field(min_length=1)
    default_provider: str
    version: str = "1"

    @model_validator(mode="after")
    def _default_is_a_provider(self) -> ToolSpec:
        names = [p.name for p in self.providers]
        known = {f.name for f in self.outputs}
        for provider in self.providers:
            unknown = set(provider.outputs or ()) - known
            if unknown:
                raise ValueError(f"provider {provider.name!r} lists unknown outputs {sorted(unknown)}")
        if self.default_provider not in names:
            raise ValueError(f"default_provider {self.default_provider!r} not in {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate provider names in {names}")
        return self

    def provider(self, name: str | None) -> ProviderSpec:
        """The provider called ``name`` (the default for None); KeyError if unknown."""
        wanted = name or self.default_provider
        for provider in self.providers:
            if provider.name == wanted:
                return provider
        raise KeyError(wanted)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.outputs)

    def provider_outputs(self, name: str | None) -> tuple[str, ...]:
        """The output fields the provider ``name`` fills."""
        provider = self.provider(name)
        return provider.outputs if provider.outputs is not None else self.output_names

    def openai_tool(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry (function calling) an LLM orchestrator sends."""
        properties = {
            "ticker": {"type": "string", "description": "stock ticker, e.g. AAPL"},
            "provider": {
                "type": "string",
                "enum": [p.name for p in self.providers],
                "description": "; ".join(
                    f"{p.name}: {p.description} (~${p.expected_cost_usd:.4f}/call, "
                    f"~{p.expected_latency_ms:.0f} ms)"
                    for p in self.providers
                ),
            },
            **self.parameters.get("properties", {}),
        }
        outputs = "; ".join(f"{f.name} ({f.unit}): {f.description}" for f in self.outputs)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": f"{self.description} Returns: {outputs}",
                "parameters": {
                    "type": "object",
                    "properties": properties,
                    "required": ["ticker", *self.parameters.get("required", [])],
                    "additionalProperties": False,
                },
            },
        }


#: What a failed call asks of the operator (see :class:`ToolResult`).
ErrorKind = Literal["input", "temporary", "tool"]


class ToolRequest(_Frozen):
    """One call: which tool and provider, for which ticker, as of which decision time."""

    tool: str
    ticker: str
    asof: dt.datetime = Field(description="decision time; the tool sees only data known then")
    provider: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(_Frozen):
    """What one call returned.

    ``features`` always holds every output field of the spec; a value that could not be
    computed (no data, not covered by the source) is NaN and ``coverage`` says whether the tool
    had real data for the ticker at ``asof``, by the tool's own definition (:func:`covered`:
    sentiment with no news is neutral, finite and not covered). An answered call without
    coverage costs nothing (:func:`charged_cost`). A failed call has ``error`` set, NaN
    features, and still a cost if the provider charged for it.
    """

    tool: str
    provider: str
    ticker: str
    asof: dt.datetime
    features: dict[str, float]
    summary: str
    coverage: bool
    cost_usd: float = Field(ge=0)
    latency_ms: float = Field(ge=0)
    cache_hit: bool = False
    error: str | None = None
    error_kind: ErrorKind | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    run_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def finite_features(self) -> dict[str, float]:
        return {k: v for k, v in self.features.items() if v is not None and math.isfinite(v)}


@dataclass(frozen=True)
class MarketData:
    """Everything a tool may read, as known at the close of ``asof`` (or earlier).

    Built by the runner from the store and cut with :meth:`truncate` before any single call.
    ``fundamentals`` is long (ticker, period_end, filed_at, metric, value, source); ``news`` is
    long (published_at UTC, ticker, headline, body, source); ``factors`` holds the adjusted
    closes of the style-factor ETFs (MTUM, QUAL, SIZE, USMV, VLUE) on the panel's dates.
    """

    prices: PricePanel
    benchmark: pd.Series | None = None
    factors: pd.DataFrame | None = None
    fundamentals: pd.DataFrame | None = None
    news: pd.DataFrame | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def truncate(self, asof: pd.Timestamp | dt.datetime) -> MarketData:
        """The data as known at decision time ``asof``.

        Bars up to the session of ``asof`` (a decision at a close sees that close), filings
        with ``filed_at`` on or before that date, news published strictly before ``asof``.
        """
        ts = pd.Timestamp(asof)
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        day = ts.normalize()
        fundamentals = self.fundamentals
        if fundamentals is not None:
            fundamentals = fundamentals[pd.to_datetime(fundamentals["filed_at"]) <= day]
        news = self.news
        if news is not None:
            news = news[pd.to_datetime(news["published_at"]) < ts]
        return MarketData(
            prices=self.prices.truncate(day),
            benchmark=None if self.benchmark is None else self.benchmark.loc[:day],
            factors=None if self.factors is None else self.factors.loc[:day],
            fundamentals=fundamentals,
            news=news,
            extras=self.extras,
        )


@runtime_checkable
class Tool(Protocol):
    """What a tool module provides (one module, one tool; see docs/tools.md).

    ``run`` computes one call on data already cut at the decision time. ``panel`` computes the
    same features for many tickers and dates at once, for backtests and training; its value at
    (date t, ticker) must equal ``run`` on data truncated at t. A tool whose "no data" output
    is a finite neutral value also defines ``covered(features, provider) -> bool array`` (see
    :func:`covered`), and ``run`` reports the same.
    """

    spec: ToolSpec

    def run(self, request: ToolRequest, data: MarketData, provider: ProviderSpec) -> ToolResult:
        ...

    def panel(
        self, data: MarketData, provider: ProviderSpec, tickers: list[str], dates: pd.DatetimeIndex
    ) -> dict[str, pd.DataFrame]:
        """Feature name -> (dates x tickers) frame."""
        ...


def charged_cost(price_usd: float | np.ndarray, coverage: bool | np.ndarray) -> float | np.ndarray:
    """What an answered call is charged: its price when the tool had data, nothing when not.

    The one charging rule: the stored tool-call rows (runner and both kernel executors), the
    decision core's budget (``spent``) and the reward's tool-cost term all apply it. Coverage
    at t is known at t (the tool said it had no data), so the rule sees no future. A failed
    call (``ToolResult.error``) is not "no data": it keeps what the provider billed.
    """
    charged = np.where(np.asarray(coverage, dtype=bool), price_usd, 0.0)
    return float(charged) if charged.ndim == 0 else charged


def covered(
    tool: Tool, provider: ProviderSpec, features: Mapping[str, float | np.ndarray]
) -> np.ndarray:
    """Whether ``tool`` had data, per point: ``features`` maps output names to values (scalars
    or arrays of one shape, NaN where not computed).

    The tool's own rule when it defines ``covered(features, provider)`` (sentiment: some news
    in the window; risk: a return-based measure, not the drawdown of a first bar), else: one of
    the provider's outputs is finite. Single calls, panels and the decision dataset use it, so
    both tool executors agree on coverage as they agree on features.
    """
    rule = getattr(tool, "covered", None)
    if callable(rule):
        return np.asarray(rule(features, provider), dtype=bool)
    return any_finite(features, tool.spec.provider_outputs(provider.name))


def any_finite(
    features: Mapping[str, float | np.ndarray], names: Sequence[str]
) -> np.ndarray:
    """Per point: one of the ``names`` in ``features`` is a finite number (the default rule)."""
    values = [np.asarray(features[n], dtype=np.float64) for n in names if n in features]
    if not values:
        return np.asarray(False)
    return np.logical_or.reduce([np.isfinite(v) for v in np.broadcast_arrays(*values)])

