"""Point-in-time inputs of many decisions, precomputed as arrays for the environment.

A :class:`DecisionDataset` holds, for N decision points (ticker, date): the free context (cheap
price statistics known at the close of the date), the features every tool slot (tool, provider)
would return if called (computed as whole panels, equal to single calls on truncated data, see
the tool panel tests), whether each tool had data there (by the tool's own rule,
:func:`coverage_of`, as a single call reports it), and the realised forward return from the
next session's fill over the horizon (used only by the reward, never observed).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from quantorch.data.panel import PricePanel

__all__ = [
    "ToolSlot",
    "DecisionDataset",
    "CONTEXT_FEATURES",
    "context_panels",
    "coverage_of",
    "forward_returns",
    "build_dataset",
    "decision_points",
    "normalise",
]

#: Cheap statistics every orchestrator sees for free (no tool call).
CONTEXT_FEATURES = ("return_1d", "return_5d", "return_21d", "volatility_21d", "distance_52w_high")
_CLIP = 5.0


@dataclass(frozen=True)
class ToolSlot:
    """One action of the router: call ``tool`` with ``provider`` for ``price_usd``."""

    tool: str
    provider: str
    price_usd: float
    features: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.tool}:{self.provider}"


@dataclass
class DecisionDataset:
    """Arrays for N decision points; row i is (tickers[i], dates[i])."""

    tickers: np.ndarray
    dates: np.ndarray
    context: np.ndarray  # (N, len(CONTEXT_FEATURES)), normalised, finite
    slots: list[ToolSlot]
    slot_features: list[np.ndarray]  # per slot (N, d_k), normalised, finite (0 where missing)
    slot_coverage: np.ndarray  # (N, K) bool: the tool had data (its own rule, see coverage_of)
    forward_return: np.ndarray  # (N,) simple return from the fill over the horizon (NaN: none)
    daily_volatility: np.ndarray  # (N,) trailing 21-session volatility at the decision
    horizon: int
    normalisation: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tickers)

    def subset(self, rows: np.ndarray) -> DecisionDataset:
        return DecisionDataset(
            tickers=self.tickers[rows],
            dates=self.dates[rows],
            context=self.context[rows],
            slots=self.slots,
            slot_features=[f[rows] for f in self.slot_features],
            slot_coverage=self.slot_coverage[rows],
            forward_return=self.forward_return[rows],
            daily_volatility=self.daily_volatility[rows],
            horizon=self.horizon,
            normalisation=self.normalisation,
        )

    def tradable(self) -> DecisionDataset:
        """Only rows whose forward return is known (for training)."""
        return self.subset(np.flatnonzero(np.isfinite(self.forward_return)))


def context_panels(prices: PricePanel) -> dict[str, pd.DataFrame]:
    """The free context features as (dates x tickers) frames; row t uses closes up to t."""
    close = prices.close
    returns = close.pct_change(fill_method=None)
    return {
        "return_1d": returns,
        "return_5d": close.pct_change(5, fill_method=None),
        "return_21d": close.pct_change(21, fill_method=None),
        "volatility_21d": returns.rolling(21, min_periods=15).std(),
        "distance_52w_high": close / close.rolling(252, min_periods=60).max() - 1,
    }


def forward_returns(prices: PricePanel, horizon: int) -> pd.DataFrame:
    """Return from the fill at t+1 (open where known, else close) to the close of t+1+horizon.

    Indexed by the decision date t. The last ``horizon + 1`` dates have NaN (not yet known).
    """
    fill = prices.open.where(prices.open.notna(), prices.close).shift(-1)
    exit_close = prices.close.shift(-(1 + horizon))
    return exit_close / fill - 1


def _normalise(
    name: str,
    values: np.ndarray,
    stats: dict[str, tuple[list[float], list[float]]],
    fit: bool,
) -> np.ndarray:
    """Z-score with statistics fitted on the training rows (stored in the checkpoint)."""
    if fit:
        with warnings.catch_warnings():  # a feature never covered (e.g. ATR on close-only data)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0)
        mean = np.nan_to_num(mean)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        stats[name] = (mean.tolist(), std.tolist())
    mean, std = (np.asarray(v) for v in stats[name])
    scaled = (values - mean) / std
    return np.clip(np.nan_to_num(scaled, nan=0.0, posinf=_CLIP, neginf=-_CLIP), -_CLIP, _CLIP)


def _stack(frames: Mapping[str, pd.DataFrame], names: Sequence[str], dates, tickers) -> np.ndarray:
    """(N, F) values at the (date, ticker) points, in ``names`` order."""
    columns = []
    for name in names:
        frame = frames[name].reindex(index=pd.DatetimeIndex(np.unique(dates)), columns=np.unique(tickers))
        row = frame.index.get_indexer(pd.DatetimeIndex(dates))
        col = frame.columns.get_indexer(tickers)
        columns.append(frame.to_numpy(dtype=np.float64)[row, col])
    return np.stack(columns, axis=1) if columns else np.zeros((len(dates), 0))


def coverage_of(
    slot: ToolSlot, raw: np.ndarray, extra_dirs: Iterable[str | Path] = ()
) -> np.ndarray:
    """(N,) whether the slot's tool had data at each point, from its raw (un-normalised)
    features ``raw`` (N, len(slot.features)), by the tool's own rule
    (:func:`quantorch.toolkit.spec.covered`: sentiment without news is finite and not covered).
    A tool that cannot be found (a plug-in outside ``extra_dirs``) falls back to the default
    rule, one feature finite.
    """
    from quantorch.errors import UserInputError
    from quantorch.toolkit.registry import get_tool
    from quantorch.toolkit.spec import any_finite, covered

    raw = np.asarray(raw, dtype=np.float64).reshape(-1, len(slot.features))
    features = {name: raw[:, i] for i, name in enumerate(slot.features)}
    try:
        tool = get_tool(slot.tool, extra_dirs)
        has_data = covered(tool, tool.spec.provider(slot.provider), features)
    except (UserInputError, KeyError):
        has_data = any_finite(features, slot.features)
    return np.broadcast_to(np.asarray(has_data, dtype=bool), (len(raw),)).copy()


def normalise(
    name: str, values: np.ndarray, stats: Mapping[str, tuple[list[float], list[float]]]
) -> np.ndarray:
    """``values`` z-scored with the stored statistics ``stats[name]`` (a checkpoint's), as
    :func:`build_dataset` does: NaN becomes 0, everything is clipped to +-5."""
    return _normalise(name, np.asarray(values, dtype=np.float64), dict(stats), fit=False)


def build_dataset(
    prices: PricePanel,
    slot_panels: Sequence[tuple[ToolSlot, Mapping[str, pd.DataFrame]]],
    decision_dates: pd.DatetimeIndex,
    tickers: Sequence[str],
    horizon: int,
    normalisation: dict[str, tuple[list[float], list[float]]] | None = None,
    extra_dirs: Iterable[str | Path] = (),
) -> DecisionDataset:
    """Assemble a dataset for every (decision date, ticker) with a price on that date.

    Pass ``normalisation=None`` to fit the z-scores on these rows (training), or the stored
    statistics of a checkpoint to reuse them (validation, test, backtests). ``extra_dirs``
    (config ``tools.extra_dirs``) finds a plug-in tool's own coverage rule.
    """
    fit = normalisation is None
    stats: dict[str, tuple[list[float], list[float]]] = {} if fit else dict(normalisation)
    dates, names, context, daily_vol, fwd = _free_inputs(
        prices, decision_dates, tickers, horizon, stats, fit
    )
    features, coverage = [], []
    for slot, frames in slot_panels:
        raw = _stack(frames, slot.features, dates, names)
        coverage.append(coverage_of(slot, raw, extra_dirs))
        features.append(_normalise(slot.key, raw, stats, fit))
    return DecisionDataset(
        tickers=names,
        dates=dates,
        context=context,
        slots=[slot for slot, _ in slot_panels],
        slot_features=[f.astype(np.float32) for f in features],
        slot_coverage=(
            np.stack(coverage, axis=1) if coverage else np.zeros((len(dates), 0), dtype=bool)
        ),
        forward_return=fwd,
        daily_volatility=daily_vol,
        horizon=horizon,
        normalisation=stats,
    )


def decision_points(
    prices: PricePanel,
    decision_dates: pd.DatetimeIndex,
    tickers: Sequence[str],
    horizon: int,
    slots: Sequence[ToolSlot],
    normalisation: dict[str, tuple[list[float], list[float]]],
) -> DecisionDataset:
    """A dataset of the decision points with their free inputs only: every slot's features
    are 0 and not covered until a tool executor answers a call (see ``decision_step``).

    The context, volatility and forward return of a point equal :func:`build_dataset`'s.
    """
    stats = dict(normalisation)
    dates, names, context, daily_vol, fwd = _free_inputs(
        prices, decision_dates, tickers, horizon, stats, fit=False
    )
    n = len(dates)
    return DecisionDataset(
        tickers=names,
        dates=dates,
        context=context,
        slots=list(slots),
        slot_features=[np.zeros((n, len(s.features)), dtype=np.float32) for s in slots],
        slot_coverage=np.zeros((n, len(slots)), dtype=bool),
        forward_return=fwd,
        daily_volatility=daily_vol,
        horizon=horizon,
        normalisation=stats,
    )


def _free_inputs(prices, decision_dates, tickers, horizon, stats, fit):
    """Points (date, ticker) with a price on the date; their normalised context, trailing
    volatility and forward return (never observed: only the reward reads it)."""
    close = prices.close.reindex(columns=list(tickers))
    grid = close.reindex(decision_dates)
    has_price = grid.notna().to_numpy()
    date_idx, ticker_idx = np.nonzero(has_price)
    dates = grid.index.to_numpy()[date_idx]
    names = np.asarray(list(tickers), dtype=object)[ticker_idx]
    ctx_frames = context_panels(prices)
    context_raw = _stack(ctx_frames, CONTEXT_FEATURES, dates, names)
    daily_vol = context_raw[:, CONTEXT_FEATURES.index("volatility_21d")].copy()
    context = _normalise("context", context_raw, stats, fit).astype(np.float32)
    fwd = _stack({"fwd": forward_returns(prices, horizon)}, ["fwd"], dates, names)[:, 0]
    return dates, names, context, daily_vol, fwd
