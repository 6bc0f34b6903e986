"""One session's decisions: the orchestrator (or a rule strategy) proposes, the RiskGuard disposes.

:func:`decision_step` is the one decision path of quantorch. A backtest calls it at every
decision date of a walk over the sessions; a paper cycle calls it once, for the session that
just closed; both hand it the book as it really stands (:class:`~quantorch.kernel.book.BookState`)
and the data known at that close, and both get back the same :class:`StepResult`: the target
weights the RiskGuard let through, one decision row per ticker and one row per tool call.

How a routing orchestrator decides (the same ``DecisionCore`` that training uses):

1. the free inputs of the session's decision points (cheap price statistics, the position held,
   the budget left, the trader profile) are observed;
2. each step the orchestrator calls a tool slot or decides a position bucket; a called slot is
   answered by the tool executor (panels or real calls) and its features, normalised with the
   checkpoint's statistics, join the observation;
3. the positions (fractions of the profile's max position) become proposed weights for the
   tickers decided; tickers without a price today keep their weights;
4. the RiskGuard (per-ticker, gross and net caps, turnover cap, drawdown kill switch with its
   cooldown) turns proposals into target weights. No orchestrator output, tool output or news
   text reaches a position without passing it.

A rule strategy (buy-and-hold, sma-cross, a plug-in) proposes its own weights for the session
(:class:`RuleWeights`) and passes the same guard.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from quantorch.data import calendar
from quantorch.kernel.book import BookState
from quantorch.kernel.executor import ToolExecutor, coverage
from quantorch.orchestrator.dataset import DecisionDataset, ToolSlot, normalise
from quantorch.orchestrator.env import EnvConfig
from quantorch.orchestrator.guard import GuardResult, apply_risk_guard
from quantorch.orchestrator.orchestrators import Orchestrator, decide
from quantorch.orchestrator.profiles import RiskLimits, TraderProfile
from quantorch.toolkit.spec import ToolResult

__all__ = ["RoutingSetup", "RuleWeights", "StepResult", "decision_step", "guard_step"]


@dataclass(frozen=True)
class RuleWeights:
    """A rule strategy's proposals: target weights per decision date (NaN keeps a position)."""

    name: str
    weights: pd.DataFrame

    def at(self, session: pd.Timestamp, tickers: Sequence[str]) -> np.ndarray:
        if pd.Timestamp(session) not in self.weights.index:
            return np.full(len(tickers), np.nan)
        row = self.weights.loc[pd.Timestamp(session)]
        return row.reindex(list(tickers)).to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class RoutingSetup:
    """What a routing orchestrator needs besides the book: the slots it was trained on, the
    statistics its inputs are normalised with, and the environment settings (costs)."""

    orchestrator: Orchestrator
    slots: tuple[ToolSlot, ...]
    normalisation: dict[str, tuple[list[float], list[float]]]
    env_config: EnvConfig
    horizon: int


@dataclass(frozen=True)
class StepResult:
    """The outcome of one session's decisions.

    ``target_weights`` covers every ticker of the book (weights of equity after the RiskGuard,
    always within its limits); ``keep`` marks the tickers nothing was decided for (no price
    today, or a rule strategy's NaN) whose weight the guard left as it was: they get no order.
    ``decisions`` and ``tool_calls`` are rows for the store (``decision_id`` numbered from the
    ``first_decision_id`` the step was given; each tool call names its decision); ``book`` is
    the input book carrying the RiskGuard's new state (peak, kill-switch cooldown).
    """

    session: pd.Timestamp
    target_weights: np.ndarray
    keep: np.ndarray
    decisions: tuple[dict, ...]
    tool_calls: tuple[dict, ...]
    book: BookState
    killed: bool
    guard_notes: tuple[str, ...] = field(default_factory=tuple)
    #: The llm orchestrator's conversations (one row per decision, for ``llm_transcripts``).
    transcripts: tuple[dict, ...] = field(default_factory=tuple)

    @property
    def tool_cost_usd(self) -> float:
        """What the session's tool calls cost (USD), debited at the decision."""
        return float(sum(d["tool_cost_usd"] for d in self.decisions))

    @property
    def llm_cost_usd(self) -> float:
        """What the llm orchestrator's own tokens cost this session (USD), debited with it."""
        return float(sum(d.get("llm_cost_usd") or 0.0 for d in self.decisions))

    @property
    def bill_usd(self) -> float:
        """The session's whole decision bill: tools plus model tokens (USD)."""
        return self.tool_cost_usd + self.llm_cost_usd

    @property
    def order_targets(self) -> np.ndarray:
        """The weights to trade to: ``target_weights`` with NaN where a position is kept."""
        return np.where(self.keep, np.nan, self.target_weights)


def guard_step(
    book: BookState, session: pd.Timestamp, proposed: np.ndarray, limits: RiskLimits,
    sessions: pd.DatetimeIndex | None = None,
) -> tuple[GuardResult, BookState]:
    """Apply the RiskGuard to ``proposed`` weights against the book, with the kill switch's
    cooldown: while it runs the book stays flat; when it ends the switch re-arms from the
    equity the book has then. Returns the guard's result and the book with its new risk state.
    """
    session = pd.Timestamp(session)
    cooldown, peak = book.cooldown_until, book.peak_equity
    if cooldown is not None and session >= cooldown:
        cooldown, peak = None, book.equity  # re-armed: the drawdown counts from here
    drawdown = -1.0 if cooldown is not None else (book.equity / peak - 1.0 if peak > 0 else 0.0)
    guard = apply_risk_guard(proposed, book.weights, limits, drawdown=drawdown)
    if guard.killed and cooldown is None:
        cooldown = _sessions_later(session, limits.kill_cooldown_sessions, sessions)
    return guard, book.with_risk(peak_equity=peak, cooldown_until=cooldown)


def _sessions_later(session: pd.Timestamp, count: int, sessions: pd.DatetimeIndex | None) -> pd.Timestamp:
    if sessions is not None and session in sessions:
        position = sessions.get_loc(session) + count
        return sessions[min(position, len(sessions) - 1)]
    return calendar.shift_sessions(session, count)


def decision_step(
    book: BookState,
    session: pd.Timestamp,
    inputs: DecisionDataset | None,
    profile: TraderProfile,
    orchestrator: RoutingSetup | RuleWeights,
    executor: ToolExecutor | None,
    *,
    first_decision_id: int = 0,
    sessions: pd.DatetimeIndex | None = None,
) -> StepResult:
    """Decide one session for the book as it stands at its close.

    Parameters
    ----------
    book
        The book at ``session``'s close (shares, cash, marks, peak, kill-switch state).
    session
        The session whose close the decisions are taken at.
    inputs
        The session's decision points with their free inputs (from
        :func:`~quantorch.orchestrator.dataset.decision_points`, rows of this session only);
        slot features are filled by ``executor`` as the orchestrator calls. None for a rule
        strategy.
    profile
        The trader profile: its limits feed the RiskGuard, its style the orchestrator.
    orchestrator
        A routing orchestrator with its slots and normalisation, or a rule strategy's weights.
    executor
        Answers the tool calls (None for a rule strategy).
    first_decision_id
        Number of the first decision row (a run numbers its decisions 0, 1, ...).
    sessions
        The session calendar of the run (to place the kill switch's cooldown end); None uses
        the XNYS calendar.
    """
    session = pd.Timestamp(session)
    limits = profile.limits
    if isinstance(orchestrator, RuleWeights):
        proposed = orchestrator.at(session, book.tickers)
        guard, after = guard_step(book, session, proposed, limits, sessions)
        return StepResult(session, guard.weights, _kept(proposed, guard, book), (), (), after,
                          guard.killed, tuple(guard.notes))
    if inputs is None or executor is None:
        raise ValueError("a routing orchestrator needs the session's inputs and a tool executor")
    return _route(book, session, inputs, profile, orchestrator, executor, first_decision_id,
                  sessions)


def _route(book, session, inputs, profile, setup: RoutingSetup, executor, first_id, sessions):
    limits = profile.limits
    index = {t: i for i, t in enumerate(book.tickers)}
    tickers = [str(t) for t in inputs.tickers]
    idx = np.array([index[t] for t in tickers], dtype=np.int64)
    n = len(tickers)
    results: dict[tuple[int, int], ToolResult] = {}
    weights = book.weights
    previous = np.clip(weights[idx] / limits.max_position, -1, 1) if n else np.zeros(0)
    plans = None
    chooser = setup.orchestrator
    if n and hasattr(setup.orchestrator, "plan_session"):
        plans, chooser = _converse(setup, inputs, tickers, session, profile, previous,
                                   weights[idx], executor)

    def reveal(slot_index: int, positions: np.ndarray) -> None:
        slot = setup.slots[slot_index]
        if plans is None:
            answered = executor.call(slot, [tickers[p] for p in positions], session)
        else:  # the conversation made the calls: replay their results
            answered = [plans[p].results[plans[p].calls.index(slot_index)] for p in positions]
        raw = np.array([[r.features.get(f, math.nan) for f in slot.features] for r in answered],
                       dtype=np.float64).reshape(len(positions), len(slot.features))
        inputs.slot_features[slot_index][positions] = normalise(slot.key, raw, setup.normalisation)
        inputs.slot_coverage[positions, slot_index] = [coverage(r, slot.features) for r in answered]
        for p, result in zip(positions, answered, strict=True):
            results[(int(p), slot_index)] = result

    proposed = np.full(len(book.tickers), np.nan)  # undecided tickers keep their position
    batch = None
    if n:
        extra = None if plans is None else np.array([p.cost_usd for p in plans])
        batch = decide(chooser, inputs, [profile], setup.env_config, np.arange(n),
                       np.zeros(n, dtype=np.int64), previous, reveal, extra_cost=extra)
        proposed[idx] = batch.position * limits.max_position
        if plans is not None:  # a fallback keeps the position exactly: no order
            kept = np.array([p.fallback is not None for p in plans])
            proposed[idx[kept]] = np.nan
    guard, after = guard_step(book, session, proposed, limits, sessions)
    keep = _kept(proposed, guard, book)
    if batch is None:
        return StepResult(session, guard.weights, keep, (), (), after, guard.killed,
                          tuple(guard.notes))

    fill_session = _next_session(session, sessions)
    asof = calendar.decision_time(session)
    reward = batch.terms.get("total", np.full(n, np.nan))
    decisions, calls, transcripts = [], [], []
    for j, ticker in enumerate(tickers):
        decision_id = first_id + j
        order = batch.call_order[j]
        known = math.isfinite(inputs.forward_return[j])
        plan = plans[j] if plans is not None else None
        # the core charges a call by its coverage; a failed call has none but the provider was
        # invoked, and the runner bills it (docs/tools.md): the decision pays that bill too
        failed = sum(results[(j, k)].cost_usd for k in order if results[(j, k)].error)
        decisions.append({
            "decision_id": decision_id,
            "orchestrator": setup.orchestrator.name,
            "profile": profile.name,
            "ticker": ticker,
            "decision_date": session.date(),
            "fill_date": fill_session.date() if fill_session is not None else None,
            "horizon": setup.horizon,
            "tools_called": [setup.slots[k].key for k in order],
            "n_calls": len(order),
            "tool_cost_usd": float(batch.spent[j] + failed),
            "proposed_position": float(batch.position[j]),
            "target_weight": float(guard.weights[idx[j]]),
            "guard_note": guard.notes[idx[j]] or None,
            "rationale": plan.rationale if plan is not None else None,
            "reward": float(reward[j]) if known else None,
            "forward_return": float(inputs.forward_return[j]) if known else float("nan"),
            "executor": executor.name,
            "llm_cost_usd": plan.cost_usd if plan is not None else None,
            "llm_tokens": plan.tokens if plan is not None else None,
        })
        for k in order:
            calls.append(_call_row(results[(j, k)], setup.slots[k], asof, decision_id,
                                   executor.name))
        if plan is not None:
            transcripts.append(_transcript_row(plan, setup.orchestrator, decision_id, session))
    return StepResult(session, guard.weights, keep, tuple(decisions), tuple(calls), after,
                      guard.killed, tuple(guard.notes), tuple(transcripts))


def _converse(setup: RoutingSetup, inputs: DecisionDataset, tickers, session, profile,
              previous: np.ndarray, weights: np.ndarray, executor: ToolExecutor):
    """The llm orchestrator's plans for the session, and the router that replays them."""
    from quantorch.llm.orchestrator import hold_bucket
    from quantorch.llm.prompts import DecisionContext
    from quantorch.orchestrator.dataset import CONTEXT_FEATURES
    from quantorch.orchestrator.orchestrators import ScriptedRouter

    mean, std = (np.asarray(v, dtype=np.float64) for v in setup.normalisation["context"])
    raw = inputs.context.astype(np.float64) * std + mean  # the free context, unscaled
    day = session.date().isoformat()
    contexts = [
        DecisionContext(ticker, day, dict(zip(CONTEXT_FEATURES, map(float, raw[j]), strict=True)),
                        float(previous[j]), float(weights[j]), profile.cost_budget_usd)
        for j, ticker in enumerate(tickers)
    ]

    def call_tool(j: int, slot_index: int) -> ToolResult:
        return executor.call(setup.slots[slot_index], [tickers[j]], session)[0]

    plans = setup.orchestrator.plan_session(contexts, profile, setup.slots, call_tool)
    buckets = np.array([p.bucket if p.bucket is not None else hold_bucket(previous[j])
                        for j, p in enumerate(plans)], dtype=np.int64)
    router = ScriptedRouter(setup.orchestrator.name, tuple(tuple(p.calls) for p in plans),
                            buckets)
    return plans, router


def _transcript_row(plan, orchestrator, decision_id: int, session: pd.Timestamp) -> dict:
    from quantorch.llm.prompts import BUCKET_NAMES

    return {
        "decision_id": decision_id,
        "ticker": plan.ticker,
        "decision_date": session.date(),
        "model": orchestrator.model.model,
        "messages": json.dumps(plan.messages, ensure_ascii=False),
        "rounds": plan.rounds,
        "cached_rounds": plan.cached_rounds,
        "corrections": plan.corrections,
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "cost_usd": plan.paid_usd,  # paid this run; the decision's cost is decisions.llm_cost_usd
        "latency_ms": plan.latency_ms,
        "position": BUCKET_NAMES[plan.bucket] if plan.bucket is not None else None,
        "fallback": plan.fallback,
        "rationale": plan.rationale,
    }


def _kept(proposed: np.ndarray, guard: GuardResult, book: BookState) -> np.ndarray:
    """Tickers with no proposal whose weight the guard left as the book holds it."""
    return ~np.isfinite(proposed) & (guard.weights == book.weights)


def _next_session(session: pd.Timestamp, sessions: pd.DatetimeIndex | None) -> pd.Timestamp | None:
    if sessions is not None and session in sessions:
        position = sessions.get_loc(session)
        return sessions[position + 1] if position + 1 < len(sessions) else None
    return calendar.shift_sessions(session, 1)


def _json_number(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _call_row(result: ToolResult, slot: ToolSlot, asof, decision_id: int, executor: str) -> dict:
    outputs = {name: _json_number(result.features.get(name, math.nan)) for name in slot.features}
    return {
        "tool": slot.tool,
        "provider": slot.provider,
        "ticker": result.ticker,
        "as_of": asof,
        "arguments": json.dumps({}),
        "outputs": json.dumps(outputs),
        "summary": result.summary or None,
        "coverage": coverage(result, slot.features),
        "cost_usd": float(result.cost_usd),
        "latency_ms": float(result.latency_ms),
        "cache_hit": bool(result.cache_hit),
        "error": result.error,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "decision_id": decision_id,
        "executor": executor,
    }


def session_rows(dataset: DecisionDataset, session: pd.Timestamp) -> DecisionDataset:
    """The rows of ``dataset`` decided at ``session`` (a copy, so an executor may fill it)."""
    rows = np.flatnonzero(pd.DatetimeIndex(dataset.dates) == pd.Timestamp(session))
    subset = dataset.subset(rows)
    return replace(subset, slot_features=[f.copy() for f in subset.slot_features],
                   slot_coverage=subset.slot_coverage.copy())
