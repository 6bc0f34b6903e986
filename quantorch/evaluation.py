"""``quantorch evaluate``: every orchestrator under every profile on a held-out period.

Each (orchestrator, profile) is backtested with the same engine, costs and data as
``quantorch backtest``. Figures come with two confidence intervals:

- over seeds: the mean over ``seeds`` runs +- 1.96 standard errors. Only the ``random`` router
  draws random numbers, so for the deterministic orchestrators this interval has zero width
  (their runs are identical by construction, which the determinism tests check);
- a stationary block bootstrap of the daily returns (blocks of 21 sessions on average, 1,000
  resamples) for Sharpe and CAGR, which is the honest uncertainty of a 3-year backtest.

``random`` spends what the policy spent: its call probability is calibrated to the policy's
realised tool cost per decision in the same backtest, checked after the run and corrected if
it is more than 5% off (:func:`simulate_matched_random`); every row shows its mean gross
exposure and its share of flat decisions, so a baseline that loses by sitting in cash shows.

It also checks the ToolOrchestra-style targets of the product (see docs/reward.md) and writes
an HTML report with the cost-vs-Sharpe (Pareto) view.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # the kernel imports torch (seconds): loaded only when a backtest runs
    from quantorch.orchestrator.orchestrators import SpendTarget

__all__ = [
    "BASELINE_STRATEGIES",
    "EVALUATED",
    "Evaluation",
    "EvaluationRow",
    "MatchedSpend",
    "block_bootstrap",
    "check_targets",
    "evaluate",
    "simulate_matched_random",
    "spend_target",
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
    #: Mean gross exposure over the sessions (1.0 = fully invested), mean over seeds.
    exposure: float | None = None
    #: Share of the decisions whose target weight (after the RiskGuard) is 0, mean over seeds;
    #: None for a rule strategy (it records no decisions).
    flat_share: float | None = None
    #: ``random`` only: its realised tool cost per decision over the policy's realised one in
    #: the same backtest (mean over seeds; see :func:`simulate_matched_random`).
    matched_cost_ratio: float | None = None
    #: ``random`` only: the policy's realised tool cost per decision it was matched to (USD).
    matched_cost_target_usd: float | None = None
    #: ``random`` only: its call probability per step (mean over seeds); 1.0 with a ratio
    #: below 1 means it cannot spend as much as the policy (it calls at every step).
    matched_call_probability: float | None = None
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
        exposure=float(np.mean([m["exposure"] for m in metrics])),
        flat_share=_flat_share(runs),
        equity=equity,
    )


def _flat_share(runs: Sequence[Simulated]) -> float | None:
    """Mean over runs of the share of decisions left flat (target weight 0 after the guard)."""
    shares = [float((r.decisions["target_weight"].abs() < 1e-12).mean()) for r in runs
              if r.decisions is not None and len(r.decisions)]
    return float(np.mean(shares)) if shares else None


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
                # random's realised tool cost per decision over the policy's, after matching
                "matched_cost_ratio": random.matched_cost_ratio,
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


#: How far (relative) random's realised tool cost per decision may be from the policy's before
#: its call probability is corrected and the run redone.
MATCH_TOLERANCE = 0.05
#: At most this many backtests of ``random`` per seed: the calibrated one and its corrections.
MATCH_RUNS = 4


@dataclass(frozen=True)
class MatchedSpend:
    """How a ``random`` run's tool spend compares with the policy's it was matched to."""

    target_usd: float  # the policy's realised tool cost per decision
    realised_usd: float  # random's, in the run kept
    call_probability: float  # of the run kept
    runs: int  # backtests made (1: the calibration landed within the tolerance)

    @property
    def ratio(self) -> float | None:
        """Realised over target (1.0 when both are 0; None when only the target is)."""
        if self.target_usd > 0:
            return self.realised_usd / self.target_usd
        return 1.0 if self.realised_usd == 0 else None


def spend_target(policy_run: Simulated, profile: TraderProfile) -> SpendTarget:
    """The policy's realised tool cost per decision in ``policy_run``, with the points it
    decided and the position it held at each (its weight at the decision's close over the
    profile's max position, as the kernel shows it to the orchestrator)."""
    from quantorch.orchestrator.orchestrators import SpendTarget

    cost = float((policy_run.tools or {}).get("tool_cost_per_decision_usd", 0.0) or 0.0)
    decisions = policy_run.decisions
    if decisions is None or not len(decisions):
        return SpendTarget(cost)
    dates = pd.DatetimeIndex(pd.to_datetime(decisions["decision_date"]))
    weights = policy_run.result.weights.reindex(dates)
    column = weights.columns.get_indexer(decisions["ticker"].astype(str))
    held = np.where(column >= 0, weights.to_numpy()[np.arange(len(dates)), column], 0.0)
    previous = np.clip(np.nan_to_num(held / profile.limits.max_position), -1.0, 1.0)
    return SpendTarget(cost, dates.to_numpy(), decisions["ticker"].astype(str).to_numpy(),
                       previous)


def _corrected_probability(tried: Sequence[tuple[float, float]], target: float) -> float:
    """The next call probability from ``(probability, realised spend)`` of the runs so far:
    interpolated between the closest runs either side of the target (``(0, 0)`` is one: no
    calls cost nothing), proportional to the last run before one overshoots."""
    below = max([(p, s) for p, s in tried if s < target] + [(0.0, 0.0)])
    above = [(p, s) for p, s in tried if s > target and p > below[0]]
    if above:
        hi = min(above)
        guess = below[0] + (target - below[1]) * (hi[0] - below[0]) / (hi[1] - below[1])
    else:
        last_p, last_s = tried[-1]
        guess = last_p * target / last_s if last_s > 0 else 2 * last_p
    return float(np.clip(guess, 1e-6, 1.0))


def simulate_matched_random(
    config: QuantorchConfig,
    store: Store,
    policy_run: Simulated,
    profile: TraderProfile,
    *,
    seed: int,
    policies=None,
    cache: dict | None = None,
    progress: Progress = SILENT,
    tolerance: float = MATCH_TOLERANCE,
    max_runs: int = MATCH_RUNS,
) -> tuple[Simulated, MatchedSpend]:
    """Backtest ``random`` at the policy's realised tool cost per decision.

    ``policy_run`` is the policy's backtest under ``profile`` over the period of ``config``
    (``quantorch evaluate`` and each walk-forward fold call this after it). The router's call
    probability is calibrated on the points the policy decided, with the positions it held, to
    the policy's realised spend per decision (:func:`spend_target`). After the run, a realised
    spend more than ``tolerance`` (relative) away from it is corrected
    (:func:`_corrected_probability`) and the backtest redone, ``max_runs`` backtests at most;
    every run draws from ``seed``, so the outcome is deterministic for a seed. Returns the run
    closest to the target and its :class:`MatchedSpend` (``runs``: the backtests made). A
    target of a few calls over the period (the cost-conscious profile's) cannot be met to 5%:
    the ratio then says how far it stayed.
    """
    from quantorch.kernel.factory import build_participant

    cfg = config.with_overrides({"backtest.strategy": ORCHESTRATOR, "orchestrator.name": "random"})
    target = spend_target(policy_run, profile)
    goal = target.cost_per_decision_usd
    tried: list[tuple[float, float]] = []
    probability: float | None = None
    best: tuple[float, Simulated, MatchedSpend] | None = None
    for run in range(1, max_runs + 1):
        participant = build_participant(cfg, store, seed=seed, policies=policies, cache=cache,
                                        profile=profile)
        router = participant.setup.orchestrator
        router.target = target
        if probability is not None:  # a correction from the realised runs: no recalibration
            router.call_probability, router.calibrated = probability, True
        sim = simulate_config(cfg, store, participant=participant, progress=progress)
        realised = float((sim.tools or {}).get("tool_cost_per_decision_usd", 0.0) or 0.0)
        match = MatchedSpend(goal, realised, float(router.call_probability), run)
        tried.append((match.call_probability, realised))
        miss = abs(match.ratio - 1) if match.ratio is not None else math.inf
        if best is None or miss < best[0]:
            best = (miss, sim, match)
        if goal <= 0 or miss <= tolerance:
            break
        probability = _corrected_probability(tried, goal)
        if any(math.isclose(probability, p, rel_tol=1e-9) for p, _ in tried):
            break  # nothing new to try: it calls at every step and still spends less
        if run < max_runs:
            progress.phase(f"random under {profile.name}: spent {match.ratio:.2f}x the "
                           "policy's tool cost per decision; correcting and rerunning")
    # the run closest to the target (the last one, unless a correction overshot)
    _, sim, match = best
    return sim, dataclasses.replace(match, runs=len(tried))


def evaluate(
    config: QuantorchConfig,
    store: Store,
    profiles: Sequence[TraderProfile],
    orchestrators: Sequence[str] | None = None,
    seeds: int = 5,
    progress: Progress = SILENT,
) -> Evaluation:
    """Backtest each orchestrator (and rule baseline) under each profile; store one
    ``evaluate`` run.

    ``random`` is matched to the policy's realised tool cost per decision under the same
    profile (:func:`simulate_matched_random`); evaluated without ``policy``, the policy is
    backtested anyway for that target (it gets no row).
    """
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
    matched: dict[tuple[str, str], list[MatchedSpend]] = {}
    policy_runs: dict[str, Simulated] = {}

    def backtest(profile: TraderProfile, name: str, seed: int) -> Simulated:
        if name in BASELINE_STRATEGIES:
            cfg = config.with_overrides({"backtest.strategy": name})
        else:
            cfg = config.with_overrides({"backtest.strategy": ORCHESTRATOR,
                                         "orchestrator.name": name})
        # the profile object itself: a profile file need not be a shipped name
        participant = build_participant(cfg, store, seed=seed, policies=policies, cache=cache,
                                        profile=profile)
        return simulate_config(cfg, store, participant=participant, progress=progress)

    def policy_run(profile: TraderProfile) -> Simulated:
        # deterministic: one run per profile, its row and random's cost target (random alone
        # runs it too, for the target, without a row)
        if profile.name not in policy_runs:
            policy_runs[profile.name] = backtest(profile, "policy", config.seed)
        return policy_runs[profile.name]

    for done, (profile, name, k, n) in enumerate(jobs):
        progress.phase(
            f"backtest {done + 1} of {len(jobs)}: {name} under {profile.name}"
            + (f", seed {k + 1}/{n}" if n > 1 else "")
        )
        if name == "policy":
            sim = policy_run(profile)
        elif name == "random":
            sim, match = simulate_matched_random(
                config, store, policy_run(profile), profile, seed=config.seed + k,
                policies=policies, cache=cache, progress=progress,
            )
            matched.setdefault((profile.name, name), []).append(match)
        else:
            sim = backtest(profile, name, config.seed + k)
        runs_by_pair.setdefault((profile.name, name), []).append(sim)
        if len(runs_by_pair[(profile.name, name)]) < n:
            continue
        runs = runs_by_pair.pop((profile.name, name))
        start, end = runs[0].start, runs[0].end
        row = _row(name, profile, runs, config.seed)
        if n == 1 and seeds > 1:  # deterministic: every seed gives this same run
            row.seeds = seeds
            row.per_seed_sharpe = row.per_seed_sharpe * seeds
        if (profile.name, name) in matched:
            matches = matched.pop((profile.name, name))
            row.matched_cost_target_usd = matches[0].target_usd
            row.matched_call_probability = float(np.mean([m.call_probability for m in matches]))
            row.matched_cost_ratio = MatchedSpend(
                matches[0].target_usd, float(np.mean([m.realised_usd for m in matches])),
                row.matched_call_probability, sum(m.runs for m in matches),
            ).ratio
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
