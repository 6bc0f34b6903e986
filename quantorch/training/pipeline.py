"""``quantorch train`` end to end: data, walk-forward datasets, PPO, checkpoint, curves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantorch.config import QuantorchConfig
from quantorch.data import calendar
from quantorch.data.providers.sample import FACTOR_ETFS
from quantorch.data.service import ensure_prices
from quantorch.errors import UserInputError
from quantorch.orchestrator.env import EnvConfig
from quantorch.orchestrator.orchestrators import dearest_slots
from quantorch.orchestrator.policy import save_checkpoint
from quantorch.orchestrator.profiles import TraderProfile, list_profiles, load_profile
from quantorch.orchestrator.slots import WARMUP_SESSIONS, resolve_slots
from quantorch.store import Store, code_version
from quantorch.training.data import market_for, period_datasets
from quantorch.training.ppo import PPOSettings, TrainResult, train_policy

__all__ = ["TrainOutcome", "train_from_config", "resolve_profiles"]


@dataclass(frozen=True)
class TrainOutcome:
    path: Path
    curve_path: Path
    result: TrainResult
    train_rows: int
    validation_rows: int


def resolve_profiles(names: list[str], known_tools: list[str]) -> list[TraderProfile]:
    """``["all"]`` -> every shipped profile; else each name or YAML path."""
    if not names or names == ["all"]:
        names = list_profiles()
    return [load_profile(n, known_tools=known_tools) for n in names]


def train_from_config(
    config: QuantorchConfig,
    store: Store,
    out: Path,
    *,
    all_tools: bool = False,
    settings: PPOSettings | None = None,
    say: Callable[[str], None] = lambda _m: None,
    on_progress: Callable[[int, int, dict | None], None] | None = None,
    datasets: dict | None = None,
) -> TrainOutcome:
    """Train the routing policy (or, with ``all_tools``, the forced-routing decision head).

    Both get the same ``settings`` (steps, rollouts, validation every ``eval_every`` steps,
    ``patience``), data, profiles and seed. The all-tools head calls every tool's dearest
    provider whatever the profile's budget (the budget masks calls a policy chooses; this
    baseline chooses none) and learns on
    :class:`~quantorch.training.ppo.ForcedRoutingEnv`: every learner step is a decision and
    its reward leaves out the routing's own terms, so it is neither charged a sunk cost nor
    paid to sit in cash for a tool fit it cannot change (docs/reward.md, "The all-tools head").

    ``datasets`` (a dict the caller keeps) shares the training and validation datasets
    between calls on the same periods, slots and universe: a walk-forward fold trains the
    policy and the all-tools head on one computation of the tool panels.
    """
    periods = config.training
    settings = settings or PPOSettings(steps=periods.steps)
    slots = resolve_slots(config.orchestrator.tools, config.tools.extra_dirs)
    tools = sorted({s.tool for s in slots})
    profiles = resolve_profiles(list(periods.profiles), tools)

    say("loading prices")
    first = calendar.shift_sessions(periods.train_start, -WARMUP_SESSIONS).date()
    wanted = list(config.universe)
    benchmark = config.benchmark_symbol
    if benchmark:
        wanted.append(benchmark)
    if config.data.source == "sample":
        wanted += [t for t in FACTOR_ETFS if t not in wanted]
    ensure_prices(store, config.data.source, wanted, first, periods.val_end)
    market = market_for(config, store, periods.train_start, periods.val_end)

    horizon = config.orchestrator.horizon
    extra = config.tools.extra_dirs
    key = (periods.train_start, periods.train_end, periods.val_start, periods.val_end,
           tuple(s.key for s in slots), horizon, tuple(config.universe), config.data.source,
           config.benchmark_symbol, tuple(str(d) for d in extra))
    if datasets is not None and key in datasets:
        train, validation = datasets[key]
    else:
        say("computing tool panels for the training and validation periods")
        train, validation = (d.tradable() for d in period_datasets(
            market, slots,
            [(periods.train_start, periods.train_end), (periods.val_start, periods.val_end)],
            horizon, extra_dirs=extra))
        if datasets is not None:
            datasets[key] = (train, validation)
    if len(train) == 0 or len(validation) == 0:
        raise UserInputError(
            "no decision points with a known forward return in the training or validation "
            "period; widen --train-start/--train-end/--val-start/--val-end"
        )
    forced = dearest_slots(slots) if all_tools else None
    env_config = EnvConfig(
        fee_bps=config.costs.fee_bps, slippage_bps=config.costs.slippage_bps, forced_routing=forced
    )
    meta = {
        "kind": "all-tools" if all_tools else "policy",
        "train_period": [periods.train_start.isoformat(), periods.train_end.isoformat()],
        "validation_period": [periods.val_start.isoformat(), periods.val_end.isoformat()],
        "profiles": [p.name for p in profiles],
        "tools": [s.key for s in slots],
        "seed": config.seed,
        "universe": list(config.universe),
        "source": config.data.source,
        "costs_bps": [config.costs.fee_bps, config.costs.slippage_bps],
        "config_hash": config.config_hash(),
        "code_version": code_version(),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(),
        "train_rows": len(train),
        "validation_rows": len(validation),
    }
    say(f"training PPO on {len(train):,} decision points x {len(profiles)} profiles")
    out = Path(out)
    curve_path = out.with_suffix(".curve.csv")
    result = train_policy(
        train, validation, profiles, env_config, settings, seed=config.seed, meta=meta,
        curve_path=curve_path, on_progress=on_progress,
    )
    save_checkpoint(result.checkpoint, out)
    return TrainOutcome(out, curve_path, result, len(train), len(validation))
