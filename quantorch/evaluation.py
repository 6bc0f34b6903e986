"""``quantorch evaluate``: every orchestrator under every profile on a held-out period.

Each (orchestrator, profile) is backtested with the same engine, costs and data as
``quantorch backtest``. Figures come with two confidence intervals:

- over seeds: the mean over ``seeds`` runs +- 1.96 standard errors. Only the ``random`` router
  draws random numbers, so for the deterministic orchestrators this interval has zero width
  (their runs are identical by construction, which the determinism tests check);
- a stationary block bootstrap of the daily returns (blocks of 21 sessions on average, 1,000
  resamples) for Sharpe and CAGR, which is the honest uncertainty of a 3-year backtest.

It also checks the ToolOrchestra-style targets of the product (see docs/reward.md) and writes
an HTML report with the cost-vs-Sharpe (Pareto) view.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from quantorch.backtest import metrics
from quantorch.backtest.metrics import performance_metrics
from quantorch.backtest.report import remove_stale_partials
from quantorch.backtest.runner import Simulated, simulate_config
from quantorch.config import ORCHESTRATOR, QuantorchConfig
from quantorch.evaluation_report import write_evaluation_report
from quantorch.orchestrator import ORCHESTRATORS
from quantorch.orchestrator.profiles import TraderProfile
from quantorch.progress import SILENT, Progress
from quantorch.store import Store, code_version, repository

__all__ = [
    "BASELINE_STRATEGIES",
    "EVALUATED",
    "EvaluationRow",
    "Evaluation",
    "evaluate",
    "block_bootstrap",
    "check_targets",
]

_SEEDED = {"random"}
#: Rule strategies evaluated beside the orchestrators (same engine, costs and period).
BASELINE_STRATEGIES = ("buy-and-hold",)
#: Everything ``quantorch evaluate`` can compare, in table order.
EVALUATED = (*ORCHESTRATORS, *BASELINE_STRATEGIES)


def default_evaluated(config: QuantorchConfig) -> tuple[str, ...]:
    """What ``quantorch evaluate`` compares by default: every orchestrator and rule baseline,
    the ``llm`` one only when an endpoint is configured (``llm.base_url``)."""
    return tuple(n for n in EVALUATED if n != "llm" or config.llm.base_url)


@dataclass
class EvaluationRow:
    """Figures for one (orchestrator, profile)."""

    orchestrator: str
    profile: str
    sharpe: float
    cagr: float
    max_drawdown: float
    turnover: float
    tool_cost_usd: float
    tool_cost_per_decision_usd: float
    calls_per_decision: float
    preference_adherence: float | None
    tool_share: dict[str, float]
    sharpe_ci_seeds: tuple[float, float]
    sharpe_ci_bootstrap: tuple[float, float]
    cagr_ci_bootstrap: tuple[float, float]
    seeds: int
    per_seed_sharpe: list[float] = field(default_factory=list)
    #: The first run's daily equity (for the report's curves); not part of the JSON.
    equity: pd.Series | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        def clean(value):
            if isinstance(value, float):
                return None if not math.isfinite(value) else value
            if isinstance(value, tuple | list):
                return [clean(v) for v in value]
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return {k: clean(v) for k, v in self.__dict__.items() if k != "equity"}


@dataclass
class Evaluation:
    run_id: str
    start: dt.date
    end: dt.date
    rows: list[EvaluationRow]
    targets: dict
    report_path: Path | None = None
    #: Set when the llm orchestrator was evaluated over its model's training period.
    training_window: dict | None = None

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "period": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "report_path": str(self.report_path) if self.report_path else None,
            "results": [r.to_json() for r in self.rows],
            "targets": self.targets,
            "training_window": self.training_window,
        }


def block_bootstrap(
    returns: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    block: int = 21,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of ``statistic`` under a stationary block bootstrap (Politis-Romano).

    The bootstrap lives in the measures module: see
    :func:`quantorch.backtest.metrics.stationary_block_bootstrap` (and
    :func:`~quantorch.backtest.metrics.paired_block_bootstrap` for two series on the same days).
    """
    return metrics.stationary_block_bootstrap(
        returns, statistic, block=block, resamples=resamples, seed=seed
    )


def _sharpe(returns: np.ndarray) -> float:
    """Sharpe ratio of a resample; evaluate's convention: only a zero deviation gives NaN."""
    return metrics.sharpe_ratio(returns, 252, noise_floor=0.0)


def _cagr(returns: np.ndarray) -> float:
    """CAGR of a resample; evaluate's convention: years = number of sessions / 252."""
    return metrics.cagr_from_returns(returns, 252)


def _preference_adherence(decisions: pd.DataFrame | None, profile: TraderProfile) -> float | None:
    """Mean share of the profile's tool-preference mass the decisions covered (None: neutral)."""
    mass = sum(profile.tool_preferences.values())
    if decisions is None or not len(decisions) or mass == 0:
        return None
    covered = decisions["tools_called"].map(
        lambda calls: sum(profile.tool_preferences.get(t, 0.0) for t in {c.split(":")[0] for c in calls})
    )
    return float((covered / mass).mean())


def _tool_share(tool_calls: pd.DataFrame | None) -> dict[str, float]:
    if tool_calls is None or not len(tool_calls):
        return {}
    return {k: float(v) for k, v in tool_calls["tool"].value_counts(normalize=True).items()}


def _row(name: str, profile: TraderProfile, runs: list[Simulated], seed: int) -> EvaluationRow:
    first = runs[0]
    equity = first.result.equity
    returns = equity.pct_change().dropna().to_numpy()
    metrics = [performance_metrics(r.result.equity, r.result.fills, r.result.gross_exposure) for r in runs]
    sharpes = [m["sharpe"] for m in metrics]
    mean = float(np.mean(sharpes))
    half = 1.96 * float(np.std(sharpes, ddof=1)) / math.sqrt(len(sharpes)) if len(sharpes) > 1 else 0.0
    tools = [r.tools or {} for r in runs]

    def avg(key: str, fallback: str | None = None) -> float:
        return float(np.mean([t.get(key, t.get(fallback, 0.0)) or 0.0 for t in tools]))

    return EvaluationRow(
        orchestrator=name,
        profile=profile.name,
        sharpe=mean,
        cagr=float(np.mean([m["cagr"] for m in metrics])),
        max_drawdown=float(np.mean([m["max_drawdown"] for m in metrics])),
        turnover=float(np.mean([m["turnover"] for m in metrics])),
        # the decision's whole bill: the tools', plus the llm orchestrator's own tokens
        tool_cost_usd=avg("decision_cost_usd", "tool_cost_usd"),
        tool_cost_per_decision_usd=avg("decision_cost_per_decision_usd",
                                       "tool_cost_per_decision_usd"),
        calls_per_decision=avg("calls_per_decision"),
        preference_adherence=_preference_adherence(first.decisions, profile),
        tool_share=_tool_share(first.tool_calls),
        sharpe_ci_seeds=(mean - half, mean + half),
        sharpe_ci_bootstrap=block_bootstrap(returns, _sharpe, seed=seed),
        cagr_ci_bootstrap=block_bootstrap(returns, _cagr, seed=seed),
        seeds=len(runs),
        per_seed_sharpe=[float(s) for s in sharpes],
        equity=equity,
    )


def check_targets(rows: Sequence[EvaluationRow], profiles: Sequence[TraderProfile]) -> dict:
    """The product's targets (docs/reward.md), each with its figures and met or not."""
    by = {(r.orchestrator, r.profile): r for r in rows}
    out: dict = {}
    for profile in profiles:
        policy, all_tools, random = (by.get((o, profile.name)) for o in ("policy", "all-tools", "random"))
        if policy and all_tools:
            ratio = policy.tool_cost_usd / all_tools.tool_cost_usd if all_tools.tool_cost_usd else None
            out[f"a:{profile.name}"] = {
                "rule": "policy Sharpe >= all-tools Sharpe at <= 30% of its tool cost",
                "policy_sharpe": policy.sharpe,
                "all_tools_sharpe": all_tools.sharpe,
                "cost_ratio": ratio,
                "met": bool(policy.sharpe >= all_tools.sharpe and ratio is not None and ratio <= 0.30),
            }
        if policy and random:
            out[f"c:{profile.name}"] = {
                "rule": "policy Sharpe > random (matched cost) Sharpe",
                "policy_sharpe": policy.sharpe,
                "random_sharpe": random.sharpe,
                "policy_cost_usd": policy.tool_cost_usd,
                "random_cost_usd": random.tool_cost_usd,
                "met": bool(policy.sharpe > random.sharpe),
            }
    neutral = by.get(("policy", "neutral"))
    if neutral:
        for profile in profiles:
            if profile.name == "neutral" or not profile.tool_preferences:
                continue
            row = by.get(("policy", profile.name))
            if not row:
                continue
            for tool in profile.tool_preferences:
                share, base = row.tool_share.get(tool, 0.0), neutral.tool_share.get(tool, 0.0)
                sharpe_gap = (
                    abs(row.sharpe - neutral.sharpe) / abs(neutral.sharpe) if neutral.sharpe else None
                )
                out[f"b:{profile.name}:{tool}"] = {
                    "rule": "preferred tool's share of calls >= 3x neutral's, Sharpe within 10%",
                    "share": share,
                    "neutral_share": base,
                    "ratio": share / base if base else (float("inf") if share else None),
                    "sharpe": row.sharpe,
                    "neutral_sharpe": neutral.sharpe,
                    "met": bool(
                        (share >= 3 * base and share > 0)
                        and sharpe_gap is not None
                        and sharpe_gap <= 0.10
                    ),
                }
    return json.loads(json.dumps(out, default=float).replace("Infinity", "null"))


def evaluate(
    config: QuantorchConfig,
    store: Store,
    profiles: Sequence[TraderProfile],
    orchestrators: Sequence[str] | None = None,
    seeds: int = 5,
    progress: Progress = SILENT,
) -> Evaluation:
    """Backtest each orchestrator (and rule baseline) under each profile; store one
    ``evaluate`` run."""
    # deferred: the kernel imports torch (seconds); `quantorch evaluate` checks names first
    from quantorch.kernel.factory import build_participant, load_policies

    orchestrators = tuple(orchestrators or default_evaluated(config))
    policies = load_policies(config, need_all_tools="all-tools" in orchestrators)
    cache: dict = {}  # tool panels and datasets, computed once per checkpoint
    rows: list[EvaluationRow] = []
    start = end = None
    jobs = [(profile, name, k, seeds if name in _SEEDED else 1)
            for profile in profiles for name in orchestrators
            for k in range(seeds if name in _SEEDED else 1)]
    runs_by_pair: dict[tuple[str, str], list[Simulated]] = {}
    for done, (profile, name, k, n) in enumerate(jobs):
        progress.phase(
            f"backtest {done + 1} of {len(jobs)}: {name} under {profile.name}"
            + (f", seed {k + 1}/{n}" if n > 1 else "")
        )
        if name in BASELINE_STRATEGIES:
            cfg = config.with_overrides({"backtest.strategy": name})
        else:
            cfg = config.with_overrides({"backtest.strategy": ORCHESTRATOR,
                                         "orchestrator.name": name})
        # the profile object itself: a profile file need not be a shipped name
        participant = build_participant(cfg, store, seed=config.seed + k, policies=policies,
                                        cache=cache, profile=profile)
        sim = simulate_config(cfg, store, participant=participant, progress=progress)
        runs_by_pair.setdefault((profile.name, name), []).append(sim)
        if len(runs_by_pair[(profile.name, name)]) < n:
            continue
        runs = runs_by_pair.pop((profile.name, name))
        start, end = runs[0].start, runs[0].end
        row = _row(name, profile, runs, config.seed)
        if n == 1 and seeds > 1:  # deterministic: every seed gives this same run
            row.seeds = seeds
            row.per_seed_sharpe = row.per_seed_sharpe * seeds
        rows.append(row)
    targets = check_targets(rows, profiles)
    window = None
    if "llm" in orchestrators and start is not None:
        from quantorch.llm.window import training_window

        window = training_window(config.llm.model, config.llm.training_cutoff, start, end)
    evaluation = Evaluation(
        run_id=f"ev-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
        start=start,
        end=end,
        rows=rows,
        targets=targets,
        training_window=window,
    )
    folder = Path(config.reports_dir)
    remove_stale_partials(folder)
    report_path = (folder / f"{evaluation.run_id}.html").resolve()
    progress.phase("storing the evaluation")
    _store(store, config, evaluation, profiles, report_path)
    progress.phase("writing the report")
    evaluation.report_path = write_evaluation_report(evaluation, folder)
    return evaluation




def _store(
    store: Store, config: QuantorchConfig, evaluation: Evaluation, profiles, report_path: Path
) -> None:
    payload = evaluation.to_json()
    config_json = {**json.loads(config.model_dump_json()), "profiles": [p.name for p in profiles]}
    run = repository.RunRecord(
        run_id=evaluation.run_id, kind="evaluate",
        strategy=",".join(sorted({r.orchestrator for r in evaluation.rows})),
        source=config.data.source, universe=tuple(config.universe), benchmark=config.benchmark,
        start_date=evaluation.start, end_date=evaluation.end, rebalance=config.backtest.rebalance,
        seed=config.seed, config_hash=config.config_hash(), config=json.dumps(config_json),
        code_version=code_version(),
        metrics={"results": payload["results"], "targets": payload["targets"]},
        report_path=str(report_path),
    )
    with store.transaction() as con:
        repository.insert_run(con, run)
