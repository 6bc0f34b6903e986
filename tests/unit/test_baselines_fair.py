"""The baselines compare on fair terms: the all-tools head learns the decision, not the routing
it cannot change; random routing is matched to a given spend (issue 13, item 5)."""

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from quantorch.evaluation import MatchedSpend, _corrected_probability
from quantorch.orchestrator.env import POSITION_BUCKETS, DecisionCore, EnvConfig
from quantorch.orchestrator.orchestrators import (
    RandomRouter,
    SpendTarget,
    decide,
    without_routing_terms,
)
from quantorch.orchestrator.profiles import TraderProfile, load_profile
from quantorch.orchestrator.reward import transaction_cost_term
from quantorch.training.ppo import ForcedRoutingEnv, PPOSettings, train_policy, validation_score

from .test_env import planted_dataset

torch.set_num_threads(1)

FORCED = (0, 2)  # oracle and the dear noise provider: $0.005 a decision
FLAT = int(np.flatnonzero(POSITION_BUCKETS == 0.0)[0])
LONG = int(np.flatnonzero(POSITION_BUCKETS == 1.0)[0])


@dataclass
class _ForcedThen:
    """The all-tools routing (the forced slots, whatever the budget), then a fixed bucket."""

    bucket: int
    name: str = "forced"

    def env_config(self, base, slots):
        return replace(base, forced_routing=FORCED)

    def choose(self, obs, masks, core):
        pending = core.steps < len(FORCED)
        forced = np.asarray(FORCED)[np.minimum(core.steps, len(FORCED) - 1)]
        return np.where(pending, forced, core.n_slots + self.bucket)


@pytest.fixture
def prefers_oracle():
    """A long-only profile that prefers the forced tool and whose budget the route exceeds."""
    return TraderProfile(name="prefers-oracle", description="x", tool_preferences={"oracle": 1.0},
                         cost_budget_usd=0.001, turnover_aversion=0.2)


def test_a_flat_position_earns_no_gated_bonus_and_routing_terms_can_be_left_out(
        prefers_oracle):
    """The cause of the all-tools head sitting in cash was a gate that a flat decision (outcome
    exactly 0) passed, paying the whole preference bonus for sure. The gate is strictly positive
    now; the forced calls' cost is still sunk, and the head learns without the routing's terms."""
    data = planted_dataset(200)
    rows, n = np.arange(200), 200
    args = (_ForcedThen(FLAT), data, [prefers_oracle], EnvConfig(), rows, np.zeros(n, int), np.zeros(n))
    full = decide(*args)
    decision_only = decide(*args, routing_terms=False)
    assert np.allclose(full.terms["preference"], 0.0)  # no bonus for sitting in cash
    assert np.allclose(full.terms["tool_cost"], 0.005 / 0.001 * 20)  # 100 bps, sunk
    assert np.allclose(full.terms["total"], -100.0)
    assert np.allclose(decision_only.terms["preference"], 0.0)
    assert np.allclose(decision_only.terms["total"], 0.0)
    assert np.array_equal(full.spent, decision_only.spent)  # the real spend is still recorded
    # the turnover style is the decision's own: it stays
    moved = decide(_ForcedThen(FLAT), data,
                   [prefers_oracle], EnvConfig(), rows, np.zeros(n, int), np.ones(n),
                   routing_terms=False)
    assert np.allclose(moved.terms["preference"], -0.2 * 1.0 / 2 * 5e-3 * 1e4)


def test_without_routing_terms_leaves_the_observation_alone(prefers_oracle):
    data = planted_dataset(50)
    cores = [DecisionCore(data, [prefers_oracle], EnvConfig(forced_routing=FORCED), n=50,
                          auto_reset=False) for _ in range(2)]
    without_routing_terms(cores[1])
    observed = [c.load(np.arange(50), np.zeros(50, int), np.zeros(50)) for c in cores]
    assert np.array_equal(observed[0], observed[1])
    assert np.array_equal(cores[0].action_masks(), cores[1].action_masks())


def test_the_forced_routing_learner_only_decides(prefers_oracle):
    data = planted_dataset(500)
    env = ForcedRoutingEnv(data, [prefers_oracle, load_profile("neutral")],
                           EnvConfig(forced_routing=FORCED), n_envs=32, seed=0)
    obs = env.reset()
    core = env.core
    assert (core.steps == len(FORCED)).all() and core.called[:, list(FORCED)].all()
    assert np.allclose(core.spent, 0.005)  # the calls are made (and paid) before the learner acts
    masks = env.action_masks()
    assert not masks[:, : core.n_slots].any() and masks[:, core.n_slots + FLAT].all()
    for bucket in (FLAT, LONG):
        # the episodes this step ends, as they stand before it
        rows, profile = core.row.copy(), core.profile.copy()
        previous = core.previous_position.copy()
        env.step_async(np.full(32, core.n_slots + bucket))
        obs, rewards, done, infos = env.step_wait()
        assert done.all() and len(infos) == 32
        position = POSITION_BUCKETS[bucket]
        pnl = position * data.forward_return[rows] * 1e4
        risk = 0.5 * 2.0 * (position * data.daily_volatility[rows]) ** 2 * 5 * 1e4
        tc = transaction_cost_term(previous, position, 1.0, 5.0) * 1e4
        style = np.where(profile == 0, 0.2, 0.0) * np.abs(position - previous) / 2 * 50
        # no sunk tool cost, no bonus for sitting in cash: the decision's own terms only
        assert np.allclose(rewards, pnl - risk - tc - style, atol=1e-3)
        assert [i["episode"]["r"] for i in infos] == pytest.approx(rewards.tolist(), abs=1e-3)
        assert (core.steps == len(FORCED)).all()  # the next episodes are ready to decide
    assert obs.shape == (32, core.obs_dim)


@pytest.fixture(scope="module")
def forced_head():
    profiles = [TraderProfile(name="prefers-oracle", description="x",
                              tool_preferences={"oracle": 1.0}), load_profile("neutral")]
    settings = PPOSettings(steps=2_048, n_envs=64, n_steps=16, batch_size=256, eval_every=1_024,
                           patience=2, net_arch=[16])
    config = EnvConfig(forced_routing=FORCED)
    result = train_policy(planted_dataset(2000, seed=0), planted_dataset(500, seed=1), profiles,
                          config, settings, seed=0, meta={})
    return result, profiles, config


def test_the_forced_head_is_validated_on_the_reward_it_learns(forced_head):
    result, profiles, config = forced_head
    meta = result.checkpoint.meta
    assert meta["learner_steps"] == "decisions"
    assert meta["learning_reward"] == "without the routing's terms"
    assert all(row["val_calls"] == len(FORCED) for row in result.curve)
    validation = planted_dataset(500, seed=1)
    score = validation_score(result.checkpoint, validation, profiles, config, forced=FORCED)
    rows = np.arange(len(validation))
    from quantorch.orchestrator.orchestrators import PolicyOrchestrator

    totals = [decide(PolicyOrchestrator(result.checkpoint, forced=FORCED), validation, profiles,
                     config, rows, np.full(len(rows), p), np.zeros(len(rows)),
                     routing_terms=False).terms["total"].mean() for p in range(len(profiles))]
    assert score["reward"] == pytest.approx(float(np.mean(totals)))
    assert score["cost_usd"] == pytest.approx(0.005)


def test_random_router_calibrates_to_a_given_target_on_given_points(forced_head):
    result, profiles, _ = forced_head
    data = planted_dataset(600, seed=4)
    rows = np.arange(0, 600, 2)
    target = SpendTarget(0.002, data.dates[rows], data.tickers[rows], np.full(len(rows), 0.5))
    router = RandomRouter(result.checkpoint, 0.5, np.random.default_rng(7), target=target)
    picked, previous = router._calibration_points(data)
    assert np.array_equal(picked, rows) and np.allclose(previous, 0.5)
    router.prepare(data, [profiles[1]], EnvConfig())
    assert router.calibrated and router.target_cost_usd == 0.002
    trial = RandomRouter(result.checkpoint, router.call_probability, np.random.default_rng(8))
    spent = decide(trial, data, [profiles[1]], EnvConfig(), np.arange(600),
                   np.zeros(600, int), np.zeros(600)).spent.mean()
    assert spent == pytest.approx(0.002, rel=0.1)
    fixed = router.call_probability
    router.prepare(data, [profiles[1]], EnvConfig())  # calibrated: a caller's probability stays
    assert router.call_probability == fixed


def test_corrected_probability_brackets_the_target():
    # only an overshoot so far: between (0, 0) and it
    assert _corrected_probability([(0.8, 0.004)], 0.003) == pytest.approx(0.6)
    # only an undershoot: proportional, capped at 1
    assert _corrected_probability([(0.4, 0.002)], 0.003) == pytest.approx(0.6)
    assert _corrected_probability([(0.9, 0.001)], 0.003) == 1.0
    # calling at every step already: nothing new to try (simulate_matched_random stops)
    assert _corrected_probability([(1.0, 0.006)], 0.007) == 1.0
    # both sides: interpolated between the closest runs
    tried = [(0.8, 0.004), (0.6, 0.0028), (0.7, 0.0035)]
    assert _corrected_probability(tried, 0.003) == pytest.approx(0.6 + 0.0002 / 0.0007 * 0.1)


def test_matched_spend_ratio():
    assert MatchedSpend(0.004, 0.0041, 0.7, 1).ratio == pytest.approx(1.025)
    assert MatchedSpend(0.0, 0.0, 1e-4, 1).ratio == 1.0
    assert MatchedSpend(0.0, 0.001, 1e-4, 1).ratio is None
