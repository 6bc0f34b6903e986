"""The decision environment: route between priced tools, then take a position.

An episode is one decision point (ticker, decision date) under one trader profile. Each step
the agent either calls a tool slot (tool, provider), paying its price (nothing when the tool
had no data for the point: :func:`~quantorch.toolkit.spec.charged_cost`) and revealing its
features and coverage, or decides: picks one of :data:`POSITION_BUCKETS` (a fraction of the
profile's max position), which ends the episode with the reward of ``docs/reward.md`` measured
over the horizon from the next session's fill.

Action space: ``Discrete(K + B)``: K tool slots then B position buckets. Positions are discrete
buckets rather than a continuous value so that routing and deciding are one categorical choice
that action masking (MaskablePPO) covers whole; five buckets are enough for a per-ticker size
that the RiskGuard and the portfolio scale afterwards.

Masks: a tool is masked once any of its providers was called, or when its price exceeds the
profile's remaining budget; short buckets are masked for long-only profiles; deciding is always
allowed. The vectorised :class:`DecisionCore` does all the work for a batch of episodes;
:class:`DecisionEnv` (gymnasium) and :class:`BatchedDecisionEnv` (stable-baselines3 VecEnv) are
thin wrappers over it, and backtests use the same core to decide, so training and trading
share one decision path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from quantorch.orchestrator.dataset import CONTEXT_FEATURES, DecisionDataset
from quantorch.orchestrator.profiles import TraderProfile, profile_feature_names
from quantorch.orchestrator.reward import REWARD_SCALE, decision_reward, tool_cost_term
from quantorch.toolkit.spec import charged_cost

__all__ = [
    "POSITION_BUCKETS",
    "EnvConfig",
    "DecisionCore",
    "DecisionEnv",
    "BatchedDecisionEnv",
    "observation_names",
]

POSITION_BUCKETS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
OBS_BOUND = 5.0


@dataclass(frozen=True)
class EnvConfig:
    """Environment settings that are not part of a profile."""

    fee_bps: float = 1.0
    slippage_bps: float = 5.0
    #: Slots (indices) the agent may call; None = all. () = no tools (free context only).
    allowed_slots: tuple[int, ...] | None = None
    #: Call exactly these slots in this order before deciding (the all-tools baseline).
    forced_routing: tuple[int, ...] | None = None


def observation_names(dataset: DecisionDataset, tools: list[str]) -> list[str]:
    """The observation layout, one name per entry (stored in checkpoints)."""
    names = [f"context.{c}" for c in CONTEXT_FEATURES]
    names += ["position.previous", "budget.remaining"]
    names += [f"profile.{n}" for n in profile_feature_names(tools)]
    for slot in dataset.slots:
        names += [f"{slot.key}.{f}" for f in slot.features]
        names += [f"{slot.key}.called", f"{slot.key}.coverage"]
    return names


class DecisionCore:
    """A batch of ``n`` decision episodes, advanced together with numpy."""

    def __init__(
        self,
        dataset: DecisionDataset,
        profiles: Sequence[TraderProfile],
        config: EnvConfig,
        n: int,
        seed: int | None = None,
        auto_reset: bool = True,
        strict: bool = True,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError("the dataset has no decision points")
        self.dataset = dataset
        self.profiles = list(profiles)
        self.config = config
        self.n = n
        self.auto_reset = auto_reset
        self.strict = strict
        self.rng = np.random.default_rng(seed)
        self.tools = sorted({s.tool for s in dataset.slots})
        self.n_slots = len(dataset.slots)
        self.n_actions = self.n_slots + len(POSITION_BUCKETS)
        self.slot_tool = np.array([self.tools.index(s.tool) for s in dataset.slots], dtype=np.int64)
        self.slot_price = np.array([s.price_usd for s in dataset.slots])
        self.slot_tool_onehot = np.eye(len(self.tools), dtype=bool)[self.slot_tool] if self.n_slots else np.zeros((0, len(self.tools)), bool)
        self.allowed = np.ones(self.n_slots, dtype=bool)
        if config.allowed_slots is not None:
            self.allowed[:] = False
            self.allowed[list(config.allowed_slots)] = True
        self.forced = None if config.forced_routing is None else np.asarray(config.forced_routing, dtype=np.int64)

        self.profile_features = np.stack([p.features(self.tools) for p in self.profiles])
        self.profile_prefs = np.stack([p.preference_vector(self.tools) for p in self.profiles])
        self.profile_budget = np.array([p.cost_budget_usd for p in self.profiles])
        self.profile_budget_bps = np.array([p.budget_bps for p in self.profiles])
        self.profile_risk = np.array([p.risk_aversion for p in self.profiles])
        self.profile_turnover = np.array([p.turnover_aversion for p in self.profiles])
        self.profile_short = np.array([p.limits.allow_short for p in self.profiles])
        self.profile_weights = {
            "pnl": np.array([p.reward.pnl for p in self.profiles]),
            "risk": np.array([p.reward.risk for p in self.profiles]),
            "tool_cost": np.array([p.reward.tool_cost for p in self.profiles]),
            "preference": np.array([p.reward.preference for p in self.profiles]),
            "gate": np.array([float(p.reward.gate_preference) for p in self.profiles]),
        }

        self._slices = self._layout()
        self.obs_dim = self._slices[-1][1] if self._slices else 0
        self.row = np.zeros(n, dtype=np.int64)
        self.profile = np.zeros(n, dtype=np.int64)
        self.previous_position = np.zeros(n)
        self.called = np.zeros((n, self.n_slots), dtype=bool)
        self.spent = np.zeros(n)
        self.steps = np.zeros(n, dtype=np.int64)
        #: Cost charged at the decision besides the slots' prices (the llm orchestrator's own
        #: tokens, USD): it enters the reward's tool-cost term, not the budget masks. Zero in
        #: training environments, so their per-step charges stay as documented.
        self.extra_cost = np.zeros(n)

    # ---- layout ------------------------------------------------------------------------------
    def _layout(self) -> list[tuple[int, int]]:
        sizes = [len(CONTEXT_FEATURES), 2, self.profile_features.shape[1]]
        sizes += [len(s.features) + 2 for s in self.dataset.slots]
        edges = np.cumsum([0, *sizes])
        return list(zip(edges[:-1], edges[1:], strict=True))

    # ---- episodes ----------------------------------------------------------------------------
    def reset(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Start new episodes in the slots ``rows`` (all by default) at random points."""
        idx = np.arange(self.n) if rows is None else np.asarray(rows)
        if len(idx):
            self.row[idx] = self.rng.integers(len(self.dataset), size=len(idx))
            self.profile[idx] = self.rng.integers(len(self.profiles), size=len(idx))
            start = self.rng.choice(POSITION_BUCKETS, size=len(idx))
            start = np.where(self.profile_short[self.profile[idx]], start, np.abs(start))
            self.previous_position[idx] = start
            self.called[idx] = False
            self.spent[idx] = 0.0
            self.steps[idx] = 0
        return self.observe()

    def load(self, rows: np.ndarray, profile: np.ndarray, previous_position: np.ndarray) -> np.ndarray:
        """Set the episodes to given points (backtests and evaluation); len(rows) == n."""
        self.row[:] = rows
        self.profile[:] = profile
        self.previous_position[:] = previous_position
        self.called[:] = False
        self.spent[:] = 0.0
        self.steps[:] = 0
        self.extra_cost[:] = 0.0
        return self.observe()

    def observe(self) -> np.ndarray:
        data = self.dataset
        obs = np.zeros((self.n, self.obs_dim), dtype=np.float32)
        (c0, c1), (s0, _), (p0, p1), *slot_slices = self._slices
        obs[:, c0:c1] = data.context[self.row]
        obs[:, s0] = self.previous_position
        budget = self.profile_budget[self.profile]
        remaining = np.where(budget > 0, np.clip(1 - self.spent / np.maximum(budget, 1e-12), 0, 1), 0.0)
        obs[:, s0 + 1] = remaining
        obs[:, p0:p1] = self.profile_features[self.profile]
        for k, (a, b) in enumerate(slot_slices):
            called = self.called[:, k]
            width = b - a - 2
            obs[:, a : a + width] = data.slot_features[k][self.row] * called[:, None]
            obs[:, b - 2] = called
            obs[:, b - 1] = data.slot_coverage[self.row, k] & called
        return obs

    def action_masks(self) -> np.ndarray:
        """(n, K + B) bool: which actions are valid now."""
        masks = np.ones((self.n, self.n_actions), dtype=bool)
        if self.n_slots:
            tool_used = (self.called.astype(np.int64) @ self.slot_tool_onehot.astype(np.int64)) > 0
            slot_used = tool_used[:, self.slot_tool]
            remaining = self.profile_budget[self.profile][:, None] - self.spent[:, None]
            affordable = self.slot_price[None, :] <= remaining + 1e-12
            masks[:, : self.n_slots] = ~slot_used & affordable & self.allowed[None, :]
            if self.forced is not None:
                masks[:, : self.n_slots] = False
                pending = self.steps < len(self.forced)
                forced_slot = self.forced[np.minimum(self.steps, len(self.forced) - 1)]
                masks[pending, forced_slot[pending]] = True
                masks[pending, self.n_slots :] = False
        short = ~self.profile_short[self.profile]
        masks[np.ix_(short, self.n_slots + np.flatnonzero(POSITION_BUCKETS < 0))] = False
        return masks

    def step(
        self, actions: np.ndarray, active: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Advance every episode (or only the ``active`` ones) by one action.

        Returns observations, rewards, done flags and an info dict with, for episodes that
        ended: ``position``, ``terms`` (reward terms) and the ``called`` slots, and (with
        auto-reset) ``terminal_observation``.
        """
        actions = np.asarray(actions, dtype=np.int64).copy()
        active = np.ones(self.n, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        valid = self.action_masks()[np.arange(self.n), actions] | ~active
        if not valid.all():
            if self.strict:
                bad = int(np.flatnonzero(~valid)[0])
                raise ValueError(
                    f"action {actions[bad]} is masked in episode {bad}; pass action_masks"
                )
            # a masked action means "no trade": decide the bucket nearest the current position
            hold = np.abs(POSITION_BUCKETS[None, :] - self.previous_position[:, None]).argmin(1)
            actions[~valid] = self.n_slots + hold[~valid]
        rewards = np.zeros(self.n)
        is_tool = (actions < self.n_slots) & active
        tool_rows = np.flatnonzero(is_tool)
        if len(tool_rows):
            slots = actions[tool_rows]
            # a call whose tool had no data is free: coverage at the decision is known then
            # (the dataset's, or what the executor just answered through ``reveal``)
            covered = self.dataset.slot_coverage[self.row[tool_rows], slots]
            price = charged_cost(self.slot_price[slots], covered)
            self.called[tool_rows, slots] = True
            self.spent[tool_rows] += price
            pidx = self.profile[tool_rows]
            rewards[tool_rows] = (
                -self.profile_weights["tool_cost"][pidx]
                * tool_cost_term(price, self.profile_budget[pidx], self.profile_budget_bps[pidx])
                * REWARD_SCALE
            )
        self.steps += active
        done = ~is_tool & active
        info: dict = {"done_rows": np.flatnonzero(done)}
        rows = info["done_rows"]
        if len(rows):
            position = POSITION_BUCKETS[actions[rows] - self.n_slots]
            terms = self._decision_terms(rows, position)
            # the tools' price was charged at each call: add it back to the decision's total
            pidx = self.profile[rows]
            rewards[rows] = terms["total"] + self.profile_weights["tool_cost"][pidx] * terms["tool_cost"]
            info.update(
                position=position,
                terms=terms,
                called=self.called[rows].copy(),
                spent=self.spent[rows].copy(),
                row=self.row[rows].copy(),
                profile=self.profile[rows].copy(),
            )
        obs = self.observe()
        if self.auto_reset and len(rows):
            info["terminal_observation"] = obs[rows].copy()
            obs = self.reset(rows)
        return obs, rewards, done, info

    def _decision_terms(self, rows: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        data = self.dataset
        pidx = self.profile[rows]
        # the tool fit counts the tools that answered: a call whose tool had no data is free
        # (charged_cost) and tells nothing, so it earns no preference bonus either (else an
        # empty slot, such as fundamental:factor before 2014, is a free bonus to collect)
        answered = self.called[rows] & data.slot_coverage[self.row[rows]]
        called_tools = (answered.astype(np.int64) @ self.slot_tool_onehot.astype(np.int64)) > 0
        forward = np.nan_to_num(data.forward_return[self.row[rows]], nan=0.0)
        return decision_reward(
            position=position,
            previous_position=self.previous_position[rows],
            forward_return=forward,
            daily_volatility=data.daily_volatility[self.row[rows]],
            horizon=data.horizon,
            risk_aversion=self.profile_risk[pidx],
            fee_bps=self.config.fee_bps,
            slippage_bps=self.config.slippage_bps,
            tool_cost_usd=self.spent[rows] + self.extra_cost[rows],
            cost_budget_usd=self.profile_budget[pidx],
            budget_bps=self.profile_budget_bps[pidx],
            called=called_tools,
            preferences=self.profile_prefs[pidx],
            turnover_aversion=self.profile_turnover[pidx],
            weights={k: v[pidx] for k, v in self.profile_weights.items()},
        )


def _observation_space(dim: int) -> gym.spaces.Box:
    # features are z-scores clipped to +-5; flags, positions and profile features lie in [-1, 1]
    return gym.spaces.Box(-OBS_BOUND, OBS_BOUND, (dim,), np.float32)


class DecisionEnv(gym.Env):
    """One decision episode at a time, with the gymnasium API (``check_env`` passes).

    A masked action is not an error here: it is read as "no trade" (the position bucket nearest
    the current position), the same fallback an LLM orchestrator gets for a malformed call.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: DecisionDataset,
        profiles: Sequence[TraderProfile],
        config: EnvConfig | None = None,
    ) -> None:
        self._dataset, self._profiles, self._config = dataset, list(profiles), config or EnvConfig()
        self.core = DecisionCore(
            dataset, self._profiles, self._config, n=1, auto_reset=False, strict=False
        )
        self.action_space = gym.spaces.Discrete(self.core.n_actions)
        self.observation_space = _observation_space(self.core.obs_dim)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.rng = np.random.default_rng(seed)
        obs = self.core.reset()
        return obs[0], {"action_mask": self.core.action_masks()[0]}

    def step(self, action):
        obs, reward, done, info = self.core.step(np.array([int(action)]))
        out = {"action_mask": self.core.action_masks()[0]}
        if done[0]:
            out["position"] = float(info["position"][0])
            out["terms"] = {k: float(v[0]) for k, v in info["terms"].items()}
        return obs[0], float(reward[0]), bool(done[0]), False, out

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()[0]


class BatchedDecisionEnv(VecEnv):
    """``n`` episodes stepped together in numpy, as a stable-baselines3 ``VecEnv``."""

    def __init__(
        self,
        dataset: DecisionDataset,
        profiles: Sequence[TraderProfile],
        config: EnvConfig | None = None,
        n_envs: int = 256,
        seed: int = 0,
    ) -> None:
        self.core = DecisionCore(dataset, profiles, config or EnvConfig(), n=n_envs, seed=seed)
        self.render_mode = None
        super().__init__(
            n_envs,
            _observation_space(self.core.obs_dim),
            gym.spaces.Discrete(self.core.n_actions),
        )
        self._actions: np.ndarray | None = None
        self.completed: list[dict] = []

    def reset(self):
        return self.core.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, rewards, done, info = self.core.step(self._actions)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        for j, i in enumerate(info["done_rows"]):
            infos[i] = {
                "terminal_observation": info["terminal_observation"][j],
                "episode": {"r": float(info["terms"]["total"][j]), "l": 1},
                "TimeLimit.truncated": False,
            }
        return obs, rewards.astype(np.float32), done, infos

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()

    def seed(self, seed: int | None = None):
        self.core.rng = np.random.default_rng(seed)
        return [seed] * self.num_envs

    def close(self) -> None:
        return None

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        if method_name == "action_masks":
            masks = self.core.action_masks()
            return [masks[i] for i in self._indices(indices)]
        result = getattr(self, method_name)(*args, **kwargs)
        return [result] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
