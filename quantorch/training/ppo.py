"""PPO training of the routing policy (sb3-contrib MaskablePPO over our batched VecEnv).

The trainer owns the loop, validation, early stopping, learning curves and checkpoints; the
environment (:mod:`quantorch.orchestrator.env`) and the policy network stay apart. MaskablePPO
gives the clipped objective, GAE, a value head, the entropy bonus, minibatch epochs, gradient
clipping and action masking; the environment is vectorised in numpy, so one ``step`` advances
``n_envs`` episodes at once.

A forced-routing head (the ``all-tools`` baseline) is trained on :class:`ForcedRoutingEnv`:
the forced calls are made at each reset, so every learner step is a decision (the same number
of learner actions, rollouts, updates and validations as the policy for the same settings,
none spent on actions it cannot choose), and its reward leaves out the routing's own terms
(:func:`~quantorch.orchestrator.orchestrators.without_routing_terms`), in training and in the
validation that keeps the best weights and stops early. See docs/reward.md, "The all-tools
head".
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from quantorch.orchestrator.dataset import DecisionDataset
from quantorch.orchestrator.env import BatchedDecisionEnv, EnvConfig, observation_names
from quantorch.orchestrator.orchestrators import (
    PolicyOrchestrator,
    decide,
    without_routing_terms,
)
from quantorch.orchestrator.policy import PolicyCheckpoint
from quantorch.orchestrator.profiles import TraderProfile

__all__ = ["ForcedRoutingEnv", "PPOSettings", "TrainResult", "train_policy", "validation_score"]


class PPOSettings(BaseModel):
    """Learner hyper-parameters (defaults produce the shipped checkpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(1_000_000, ge=1_000, description="environment steps (all envs together)")
    n_envs: int = Field(512, ge=1)
    n_steps: int = Field(16, ge=1, description="steps per env per rollout")
    batch_size: int = Field(2048, ge=32)
    n_epochs: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    gamma: float = Field(1.0, ge=0, le=1, description="episodes are a few steps: no discount")
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    ent_coef: float = Field(0.01, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    net_arch: list[int] = Field(default_factory=lambda: [128, 128])
    eval_every: int = Field(50_000, ge=1_000, description="steps between validations")
    patience: int = Field(6, ge=1, description="validations without improvement before stopping")


@dataclass
class TrainResult:
    checkpoint: PolicyCheckpoint
    best_step: int
    best_validation: float
    steps_done: int
    seconds: float
    curve: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def validation_score(
    checkpoint: PolicyCheckpoint,
    dataset: DecisionDataset,
    profiles: Sequence[TraderProfile],
    env_config: EnvConfig,
    seed: int = 0,
    max_rows: int = 20_000,
    forced: tuple[int, ...] | None = None,
) -> dict[str, float]:
    """Mean decision reward of the deterministic policy on held-out points, every profile.

    With ``forced`` routing the reward is the one its head is trained on: without the routing's
    own terms (:func:`~quantorch.orchestrator.orchestrators.without_routing_terms`).
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(len(dataset))
    if len(rows) > max_rows:
        rows = np.sort(rng.choice(rows, max_rows, replace=False))
    totals, calls, costs = [], [], []
    orchestrator = PolicyOrchestrator(checkpoint, forced=forced)
    for p in range(len(profiles)):
        previous = np.zeros(len(rows))
        batch = decide(
            orchestrator, dataset, profiles, env_config, rows, np.full(len(rows), p), previous,
            routing_terms=forced is None,
        )
        totals.append(batch.terms["total"].mean())
        calls.append(batch.called.sum(axis=1).mean())
        costs.append(batch.spent.mean())
    return {
        "reward": float(np.mean(totals)),
        "calls": float(np.mean(calls)),
        "cost_usd": float(np.mean(costs)),
    }


class ForcedRoutingEnv(BatchedDecisionEnv):
    """The learner's environment under forced routing (``EnvConfig.forced_routing``).

    The forced calls are made here at every reset, so the learner only ever decides: each step
    is one decision, every episode ends on it, and no step of the budget goes to an action with
    a single choice. Its reward leaves out the routing's terms, which are constants of the forced
    routing (:func:`~quantorch.orchestrator.orchestrators.without_routing_terms`): the forced
    calls' cost, up to 600 bps a decision under a small budget, and a tool fit that the gated
    preference bonus would pay out for sure to a flat position.
    """

    def __init__(
        self,
        dataset: DecisionDataset,
        profiles: Sequence[TraderProfile],
        config: EnvConfig,
        n_envs: int = 256,
        seed: int = 0,
    ) -> None:
        if not config.forced_routing:
            raise ValueError("ForcedRoutingEnv needs EnvConfig.forced_routing")
        super().__init__(dataset, profiles, config, n_envs=n_envs, seed=seed)
        self.core.auto_reset = False
        without_routing_terms(self.core)

    def _new_episodes(self) -> np.ndarray:
        core = self.core
        core.reset()
        for slot in core.config.forced_routing:
            core.step(np.full(core.n, slot))
        return core.observe()

    def reset(self):
        return self._new_episodes()

    def step_wait(self):
        obs, rewards, done, info = self.core.step(self._actions)
        if not done.all():  # only deciding is allowed once the forced calls are made
            raise AssertionError("a forced-routing episode did not end on the learner's step")
        infos = [
            {"terminal_observation": obs[i], "episode": {"r": float(r), "l": 1},
             "TimeLimit.truncated": False}
            for i, r in zip(info["done_rows"], info["terms"]["total"], strict=True)
        ]
        return self._new_episodes(), rewards.astype(np.float32), done, infos


def train_policy(
    train: DecisionDataset,
    validation: DecisionDataset,
    profiles: Sequence[TraderProfile],
    env_config: EnvConfig,
    settings: PPOSettings,
    seed: int,
    meta: dict,
    curve_path: Path | None = None,
    on_progress: Callable[[int, int, dict[str, float] | None], None] | None = None,
) -> TrainResult:
    """Train with MaskablePPO, validate every ``eval_every`` steps, keep the best weights."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.callbacks import BaseCallback

    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    forced = env_config.forced_routing
    learner_env = ForcedRoutingEnv if forced else BatchedDecisionEnv
    env = learner_env(train, profiles, env_config, n_envs=settings.n_envs, seed=seed)
    model = MaskablePPO(
        "MlpPolicy",
        env,
        learning_rate=settings.learning_rate,
        n_steps=settings.n_steps,
        batch_size=settings.batch_size,
        n_epochs=settings.n_epochs,
        gamma=settings.gamma,
        gae_lambda=settings.gae_lambda,
        clip_range=settings.clip_range,
        ent_coef=settings.ent_coef,
        vf_coef=settings.vf_coef,
        max_grad_norm=settings.max_grad_norm,
        policy_kwargs={"net_arch": list(settings.net_arch)},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    names = observation_names(train, sorted({s.tool for s in train.slots}))
    checkpoint = PolicyCheckpoint(
        policy=model.policy,
        slots=list(train.slots),
        observation_names=names,
        normalisation=train.normalisation,
        horizon=train.horizon,
        net_arch=list(settings.net_arch),
        meta=dict(meta),
    )
    state = {"best": -np.inf, "best_step": 0, "since": 0, "best_weights": None, "next_eval": 0}
    curve: list[dict[str, float]] = []
    started = time.perf_counter()

    def evaluate(step: int, train_reward: float) -> bool:
        model.policy.set_training_mode(False)
        score = validation_score(checkpoint, validation, profiles, env_config, seed=seed, forced=forced)
        row = {
            "step": step,
            "seconds": round(time.perf_counter() - started, 2),
            "train_reward": train_reward,
            "val_reward": score["reward"],
            "val_calls": score["calls"],
            "val_cost_usd": score["cost_usd"],
        }
        curve.append(row)
        if curve_path is not None:
            _write_curve(curve_path, curve)
        if score["reward"] > state["best"] + 1e-6:
            state.update(best=score["reward"], best_step=step, since=0)
            state["best_weights"] = copy.deepcopy(model.policy.state_dict())
        else:
            state["since"] += 1
        if on_progress:
            on_progress(step, settings.steps, row)
        return state["since"] < settings.patience

    class _Callback(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rewards: list[float] = []

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                episode = info.get("episode")
                if episode:
                    self.rewards.append(episode["r"])
            if on_progress and self.n_calls % 8 == 0:
                on_progress(self.num_timesteps, settings.steps, None)
            if self.num_timesteps >= state["next_eval"]:
                state["next_eval"] = self.num_timesteps + settings.eval_every
                recent = float(np.mean(self.rewards[-5000:])) if self.rewards else float("nan")
                keep_going = evaluate(self.num_timesteps, recent)
                model.policy.set_training_mode(True)
                return keep_going
            return True

    state["next_eval"] = settings.eval_every
    callback = _Callback()
    model.learn(total_timesteps=settings.steps, callback=callback)
    stopped_early = model.num_timesteps < settings.steps
    if not stopped_early or not curve or curve[-1]["step"] != model.num_timesteps:
        recent = float(np.mean(callback.rewards[-5000:])) if callback.rewards else float("nan")
        evaluate(model.num_timesteps, recent)
    if state["best_weights"] is not None:
        model.policy.load_state_dict(state["best_weights"])
    model.policy.set_training_mode(False)
    checkpoint.meta.update(
        best_step=state["best_step"],
        best_validation_reward=state["best"],
        steps_done=model.num_timesteps,
        stopped_early=stopped_early,
        train_seconds=round(time.perf_counter() - started, 1),
        ppo=settings.model_dump(),
        # what a learner step is and what it is paid (see ForcedRoutingEnv)
        learner_steps="decisions" if forced else "tool calls and decisions",
        learning_reward="without the routing's terms" if forced else "full",
    )
    return TrainResult(
        checkpoint=checkpoint,
        best_step=state["best_step"],
        best_validation=state["best"],
        steps_done=model.num_timesteps,
        seconds=time.perf_counter() - started,
        curve=curve,
        stopped_early=stopped_early,
    )


def _write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
