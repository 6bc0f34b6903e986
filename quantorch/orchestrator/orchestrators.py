"""Orchestrators behind one protocol: route between tool slots, then pick a position.

Every orchestrator decides through the same :class:`~quantorch.orchestrator.env.DecisionCore`
as training uses; they differ only in which slots they may or must call (an
:class:`~quantorch.orchestrator.env.EnvConfig`) and how they choose the next action.

- ``policy``: the PPO-trained router and decision head.
- ``all-tools``: calls every tool with its dearest provider, then decides with a head trained
  by PPO under that forced routing (so comparing it with ``policy`` isolates routing). Its
  learner is not paid the routing's own terms (see :func:`without_routing_terms`).
- ``free-tools``: calls nothing; decides from the free context with the policy's head.
- ``technical-only``: calls the dearest ``technical`` provider, then the policy's head decides.
- ``random``: routes at random at the policy's tool cost per decision, then the policy's head
  decides (:class:`RandomRouter`, :class:`SpendTarget`).

Buy-and-hold is the rule strategy ``buy-and-hold`` (equal weight, never rebalanced), not an
orchestrator, so that one name always means one portfolio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import pandas as pd

from quantorch.errors import UserInputError
from quantorch.orchestrator import ORCHESTRATORS, check_orchestrator_name
from quantorch.orchestrator.dataset import DecisionDataset, ToolSlot
from quantorch.orchestrator.env import DecisionCore, EnvConfig
from quantorch.orchestrator.policy import PolicyCheckpoint
from quantorch.orchestrator.profiles import TraderProfile

__all__ = [
    "ORCHESTRATORS",
    "DecisionBatch",
    "Orchestrator",
    "RandomRouter",
    "ScriptedRouter",
    "SpendTarget",
    "dearest_slots",
    "decide",
    "make_orchestrator",
    "without_routing_terms",
]



@dataclass(frozen=True)
class DecisionBatch:
    """The outcome of deciding a batch of points."""

    position: np.ndarray  # (n,) in [-1, 1]
    called: np.ndarray  # (n, K) slots called
    spent: np.ndarray  # (n,) USD
    terms: dict[str, np.ndarray]  # reward terms (bps of full-position notional)
    call_order: tuple[tuple[int, ...], ...] = ()  # per point, the slots in the order called


class Orchestrator(Protocol):
    name: str

    def env_config(self, base: EnvConfig, slots: Sequence[ToolSlot]) -> EnvConfig: ...

    def choose(self, obs: np.ndarray, masks: np.ndarray, core: DecisionCore) -> np.ndarray: ...


def dearest_slots(slots: Sequence[ToolSlot], tools: Sequence[str] | None = None) -> tuple[int, ...]:
    """Index of the dearest provider of each tool (all tools, or those named), in slot order."""
    best: dict[str, int] = {}
    for i, slot in enumerate(slots):
        if tools is not None and slot.tool not in tools:
            continue
        if slot.tool not in best or slot.price_usd > slots[best[slot.tool]].price_usd:
            best[slot.tool] = i
    return tuple(sorted(best.values()))


#: Answers the tool calls of one step: ``reveal(slot, positions)`` must fill the dataset's
#: features and coverage of slot ``slot`` for the batch positions ``positions`` (dataset rows
#: ``rows[positions]``) before the step observes them.
Reveal = Callable[[int, np.ndarray], None]


def decide(
    orchestrator: Orchestrator,
    dataset: DecisionDataset,
    profiles: Sequence[TraderProfile],
    base: EnvConfig,
    rows: np.ndarray,
    profile_index: np.ndarray,
    previous_position: np.ndarray,
    reveal: Reveal | None = None,
    extra_cost: np.ndarray | None = None,
    routing_terms: bool = True,
) -> DecisionBatch:
    """Run ``orchestrator`` on the given decision points until every one has decided.

    Without ``reveal`` the dataset already holds every slot's features (training, evaluation
    on precomputed panels); with it, a slot's features are fetched only when a decision calls
    it (a tool executor answers), so nothing is computed, charged or logged for a tool no one
    called. ``extra_cost`` (USD per point) is charged in the reward's tool-cost term besides the
    slots' prices: the llm orchestrator's own tokens. ``routing_terms=False`` scores the
    decisions without the routing's own reward terms (:func:`without_routing_terms`: how a
    forced-routing head is trained and validated); ``spent`` is the real spend either way.
    """
    n = len(rows)
    config = orchestrator.env_config(base, dataset.slots)
    core = DecisionCore(dataset, profiles, config, n=n, auto_reset=False)
    if not routing_terms:
        without_routing_terms(core)
    obs = core.load(rows, profile_index, previous_position)
    if extra_cost is not None:
        core.extra_cost[:] = extra_cost
    position = np.zeros(n)
    done = np.zeros(n, dtype=bool)
    terms: dict[str, np.ndarray] = {}
    order: list[list[int]] = [[] for _ in range(n)]
    for _ in range(core.n_slots + 1):
        masks = core.action_masks()
        actions = np.asarray(orchestrator.choose(obs, masks, core), dtype=np.int64)
        calling = (actions < core.n_slots) & ~done
        for slot in np.unique(actions[calling]):
            positions = np.flatnonzero(calling & (actions == slot))
            if reveal is not None:
                reveal(int(slot), positions)
            for i in positions:
                order[i].append(int(slot))
        obs, _, finished, info = core.step(actions, active=~done)
        rows_done = info["done_rows"]
        if len(rows_done):
            position[rows_done] = info["position"]
            for key, value in info["terms"].items():
                terms.setdefault(key, np.zeros(n))[rows_done] = value
        done |= finished
        if done.all():
            break
    return DecisionBatch(position, core.called.copy(), core.spent.copy(), terms,
                         tuple(tuple(o) for o in order))


def without_routing_terms(core: DecisionCore) -> DecisionCore:
    """Leave the routing's own terms out of ``core``'s reward: the tools' cost and the tool-fit
    part of the preference term (its turnover-style part stays). Returns ``core``.

    Under forced routing (``all-tools``) both are constants of the routing, not of the decision:
    its calls are paid whatever the head decides, and they cover every preferred tool. Left in,
    the tool fit was a payment for sitting in cash while the preference bonus was gated on a
    non-negative outcome (a flat position's outcome is exactly 0: with every tool called, a
    profile with preferences earned the whole bonus, 50 bps x its weight, for sure by staying
    flat); under today's strictly positive gate it would still pay the head for a routing it
    cannot change. The observation is untouched (the profile's
    preference weights and budget are still seen) and ``spent`` still records the real spend.
    """
    core.profile_prefs = np.zeros_like(core.profile_prefs)
    core.profile_weights = {**core.profile_weights,
                            "tool_cost": np.zeros_like(core.profile_weights["tool_cost"])}
    return core


@dataclass
class ScriptedRouter:
    """Replays decisions taken elsewhere through the decision core: per point, the slots to
    call in order, then the bucket. The llm orchestrator's plans go through it, so its reward
    and costs are computed exactly as every other orchestrator's."""

    name: str
    scripts: tuple[tuple[int, ...], ...]
    buckets: np.ndarray  # (n,) index into POSITION_BUCKETS

    def env_config(self, base: EnvConfig, slots: Sequence[ToolSlot]) -> EnvConfig:
        return replace(base, allowed_slots=None, forced_routing=None)

    def choose(self, obs: np.ndarray, masks: np.ndarray, core: DecisionCore) -> np.ndarray:
        actions = core.n_slots + np.asarray(self.buckets, dtype=np.int64)
        for i, script in enumerate(self.scripts):
            step = int(core.steps[i])
            if step < len(script):
                actions[i] = script[step]
        return actions


def _decide_actions(core: DecisionCore, masks: np.ndarray) -> np.ndarray:
    """Masks with every tool slot off: the decision head must decide now."""
    only_decide = masks.copy()
    only_decide[:, : core.n_slots] = False
    return only_decide


@dataclass
class PolicyOrchestrator:
    """The trained router (``policy``) or one of its restricted variants."""

    checkpoint: PolicyCheckpoint
    name: str = "policy"
    deterministic: bool = True
    rng: np.random.Generator | None = None
    allowed: tuple[int, ...] | None = None
    forced: tuple[int, ...] | None = None

    def env_config(self, base: EnvConfig, slots: Sequence[ToolSlot]) -> EnvConfig:
        return replace(base, allowed_slots=self.allowed, forced_routing=self.forced)

    def choose(self, obs: np.ndarray, masks: np.ndarray, core: DecisionCore) -> np.ndarray:
        if self.deterministic:
            return self.checkpoint.predict(obs, masks, deterministic=True)
        probs = self.checkpoint.action_probabilities(obs, masks)
        rng = self.rng or np.random.default_rng(0)
        cumulative = probs.cumsum(axis=1)
        draws = rng.random(len(probs))[:, None]
        return np.minimum((cumulative < draws).sum(axis=1), probs.shape[1] - 1)


@dataclass(frozen=True)
class SpendTarget:
    """What the random router's spend is matched to: the policy's realised tool cost per
    decision in the same backtest (same profile, same period), and the points it decided with
    the positions it held there (fractions of the profile's max position), where known.

    :func:`quantorch.evaluation.simulate_matched_random` builds one from the policy's run.
    """

    cost_per_decision_usd: float
    dates: np.ndarray | None = None  # (n,) decision dates of the policy's decisions
    tickers: np.ndarray | None = None  # (n,)
    previous_position: np.ndarray | None = None  # (n,) in [-1, 1]


@dataclass
class RandomRouter:
    """Random routing at a target cost per decision, then the policy's decision head.

    Each step, with probability ``call_probability`` a uniformly random allowed slot is called,
    else the policy head decides with the tools it has. :meth:`prepare` bisects the probability
    (:func:`calibrate_random_router`) so the expected spend per decision matches ``target``:
    the policy's realised spend in the same backtest (``quantorch evaluate``, the walk-forward),
    calibrated on the points the policy decided with the positions it held. Without a target
    (a lone ``quantorch backtest --orchestrator random``) it matches what the policy would spend
    on the same points from a flat book, which overstates a policy that calls less once it
    holds a position. ``calibrated`` keeps a probability set by the caller (a correction after
    a realised run) as it is.
    """

    checkpoint: PolicyCheckpoint
    call_probability: float
    rng: np.random.Generator
    name: str = "random"
    target_cost_usd: float | None = None
    target: SpendTarget | None = None
    calibrated: bool = False

    def env_config(self, base: EnvConfig, slots: Sequence[ToolSlot]) -> EnvConfig:
        return replace(base, allowed_slots=None, forced_routing=None)

    def prepare(
        self,
        dataset: DecisionDataset,
        profiles: Sequence[TraderProfile],
        base: EnvConfig,
        max_rows: int = 2000,
    ) -> None:
        """Set the call probability so the mean spend per decision on these decision points
        (the backtest's, under ``profiles[0]``) matches the target."""
        if self.calibrated:
            return
        rows, previous = self._calibration_points(dataset)
        if len(rows) > max_rows:
            keep = np.sort(np.random.default_rng(0).choice(len(rows), max_rows, replace=False))
            rows, previous = rows[keep], previous[keep]
        profile_index = np.zeros(len(rows), dtype=np.int64)
        args = (dataset, profiles, base, rows, profile_index, previous)
        if self.target is not None:
            target = self.target.cost_per_decision_usd
        else:
            target = decide(PolicyOrchestrator(self.checkpoint), *args).spent.mean()
        self.target_cost_usd = float(target)
        calibrate_random_router(self, target, *args)
        self.calibrated = True

    def _calibration_points(self, dataset: DecisionDataset) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``dataset`` and the positions held there: the policy's decisions where the
        target names them, else every row from a flat book."""
        target = self.target
        if target is None or target.dates is None or not len(target.dates):
            return np.arange(len(dataset)), np.zeros(len(dataset))
        index = {(pd.Timestamp(d), str(t)): i
                 for i, (d, t) in enumerate(zip(dataset.dates, dataset.tickers, strict=True))}
        found = [(index.get((pd.Timestamp(d), str(t))), p) for d, t, p in
                 zip(target.dates, target.tickers, target.previous_position, strict=True)]
        found = [(row, p) for row, p in found if row is not None]
        if not found:
            return np.arange(len(dataset)), np.zeros(len(dataset))
        rows, previous = zip(*found, strict=True)
        return np.asarray(rows, dtype=np.int64), np.asarray(previous, dtype=np.float64)

    def choose(self, obs: np.ndarray, masks: np.ndarray, core: DecisionCore) -> np.ndarray:
        head = self.checkpoint.predict(obs, _decide_actions(core, masks), deterministic=True)
        tool_masks = masks[:, : core.n_slots]
        can_call = tool_masks.any(axis=1)
        call = can_call & (self.rng.random(len(obs)) < self.call_probability)
        # a uniformly random allowed slot per row: the argmax of random scores on the mask
        random_slot = (self.rng.random(tool_masks.shape) * tool_masks).argmax(axis=1)
        return np.where(call, random_slot, head)


def calibrate_random_router(
    router: RandomRouter,
    target_cost_usd: float,
    dataset: DecisionDataset,
    profiles: Sequence[TraderProfile],
    base: EnvConfig,
    rows: np.ndarray,
    profile_index: np.ndarray,
    previous_position: np.ndarray,
    iterations: int = 12,
) -> RandomRouter:
    """Bisect the call probability so mean spend per decision matches ``target_cost_usd``."""
    lo, hi = 0.0, 1.0
    seed = int(router.rng.integers(2**31))
    for _ in range(iterations):
        mid = (lo + hi) / 2
        trial = RandomRouter(router.checkpoint, mid, np.random.default_rng(seed))
        spent = decide(trial, dataset, profiles, base, rows, profile_index, previous_position).spent
        if spent.mean() < target_cost_usd:
            lo = mid
        else:
            hi = mid
    router.call_probability = (lo + hi) / 2
    return router


def make_orchestrator(
    name: str,
    policy: PolicyCheckpoint | None,
    all_tools: PolicyCheckpoint | None = None,
    seed: int = 0,
) -> Orchestrator:
    """The orchestrator called ``name`` (see :data:`ORCHESTRATORS`)."""
    check_orchestrator_name(name)
    if policy is None:
        raise UserInputError(f"orchestrator '{name}' needs a policy checkpoint (--checkpoint)")
    slots = policy.slots
    rng = np.random.default_rng(seed)
    if name == "policy":
        return PolicyOrchestrator(policy)
    if name == "all-tools":
        if all_tools is None:
            raise UserInputError(
                "orchestrator 'all-tools' needs its decision-head checkpoint "
                "(train it with `quantorch train --all-tools`)"
            )
        return PolicyOrchestrator(all_tools, name="all-tools", forced=dearest_slots(all_tools.slots))
    if name == "free-tools":
        return PolicyOrchestrator(policy, name="free-tools", allowed=())
    if name == "technical-only":
        forced = dearest_slots(slots, ["technical"])
        if not forced:
            raise UserInputError("the checkpoint has no technical tool slot")
        return PolicyOrchestrator(policy, name="technical-only", forced=forced)
    if name == "llm":
        raise ValueError("the llm orchestrator is built from the llm: config section "
                         "(quantorch.kernel.factory.llm_orchestrator)")
    return RandomRouter(policy, call_probability=0.5, rng=rng)
