import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from quantorch.orchestrator.dataset import CONTEXT_FEATURES, DecisionDataset, ToolSlot
from quantorch.orchestrator.env import (
    POSITION_BUCKETS,
    BatchedDecisionEnv,
    DecisionCore,
    DecisionEnv,
    EnvConfig,
)
from quantorch.orchestrator.profiles import load_profile


def planted_dataset(n=4000, seed=0, horizon=5) -> DecisionDataset:
    """Two priced tools: `oracle` predicts the forward return, `noise` does not."""
    rng = np.random.default_rng(seed)
    forward = rng.normal(0, 0.03, n)
    signal = np.sign(forward)[:, None].astype(np.float32)
    noise = rng.normal(0, 1, (n, 2)).astype(np.float32)
    return DecisionDataset(
        tickers=np.array(["T"] * n, dtype=object),
        dates=np.arange(n).astype("datetime64[D]"),
        context=rng.normal(0, 1, (n, len(CONTEXT_FEATURES))).astype(np.float32),
        slots=[
            ToolSlot("oracle", "only", 0.001, ("direction",)),
            ToolSlot("noise", "cheap", 0.0005, ("a", "b")),
            ToolSlot("noise", "dear", 0.004, ("a", "b")),
        ],
        slot_features=[signal, noise, noise.copy()],
        slot_coverage=np.ones((n, 3), dtype=bool),
        forward_return=forward,
        daily_volatility=np.full(n, 0.01),
        horizon=horizon,
    )


@pytest.fixture
def profiles():
    return [load_profile("neutral"), load_profile("active-technical")]


def test_gymnasium_check_env(profiles):
    check_env(DecisionEnv(planted_dataset(200), profiles), skip_render_check=True)


def test_deterministic_for_a_seed(profiles):
    def rollout(seed):
        env = BatchedDecisionEnv(planted_dataset(500), profiles, n_envs=32, seed=seed)
        obs = env.reset()
        rng = np.random.default_rng(1)
        trace = [obs.copy()]
        for _ in range(20):
            masks = env.action_masks()
            actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
            obs, rewards, _, _ = env.step(actions)
            trace += [obs.copy(), rewards.copy()]
        return trace

    first, second, other = rollout(3), rollout(3), rollout(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_masks_tool_once_per_decision_and_budget(profiles):
    core = DecisionCore(planted_dataset(50), profiles, EnvConfig(), n=2, auto_reset=False)
    core.load(np.array([0, 1]), np.array([0, 0]), np.zeros(2))
    masks = core.action_masks()
    assert masks[:, :3].all() and masks[:, 3:].sum(axis=1).tolist() == [3, 3]  # long-only: no shorts
    core.step(np.array([1, 0]))  # noise:cheap, oracle
    masks = core.action_masks()
    assert masks[0].tolist()[:3] == [True, False, False]  # both noise providers masked
    assert masks[1].tolist()[:3] == [False, True, True]
    # a decision ends the episode and is always allowed
    _, _, done, info = core.step(np.array([3 + 4, 3 + 2]))
    assert done.all() and info["position"].tolist() == [1.0, 0.0]


def test_tool_cost_charged_at_call_and_sums_to_the_decision_reward(profiles):
    core = DecisionCore(planted_dataset(50), profiles[:1], EnvConfig(), n=1, auto_reset=False)
    core.load(np.array([7]), np.array([0]), np.array([0.0]))
    _, r_tool, _, _ = core.step(np.array([0]))
    assert r_tool[0] == pytest.approx(-0.001 / 0.05 * 20.0)  # share of budget x budget_bps
    _, r_decide, _, info = core.step(np.array([3 + 4]))
    assert r_tool[0] + r_decide[0] == pytest.approx(info["terms"]["total"][0])


def test_budget_masks_expensive_tools():
    profile = load_profile("cost-conscious-quant")  # budget 0.001 USD
    core = DecisionCore(planted_dataset(50), [profile], EnvConfig(), n=1, auto_reset=False)
    core.load(np.array([0]), np.array([0]), np.array([0.0]))
    assert core.action_masks()[0, :3].tolist() == [True, True, False]


def test_forced_routing_and_allowed_slots(profiles):
    forced = DecisionCore(planted_dataset(50), profiles, EnvConfig(forced_routing=(2, 0)), n=1, auto_reset=False)
    forced.load(np.array([0]), np.array([0]), np.array([0.0]))
    assert np.flatnonzero(forced.action_masks()[0]).tolist() == [2]
    forced.step(np.array([2]))
    assert np.flatnonzero(forced.action_masks()[0]).tolist() == [0]
    forced.step(np.array([0]))
    assert not forced.action_masks()[0, :3].any() and forced.action_masks()[0, 3:].any()
    none = DecisionCore(planted_dataset(50), profiles, EnvConfig(allowed_slots=()), n=1, auto_reset=False)
    none.load(np.array([0]), np.array([0]), np.array([0.0]))
    assert not none.action_masks()[0, :3].any()


def test_masked_action_is_refused(profiles):
    core = DecisionCore(planted_dataset(50), profiles[:1], EnvConfig(), n=1, auto_reset=False)
    core.load(np.array([0]), np.array([0]), np.array([0.0]))
    with pytest.raises(ValueError, match="masked"):
        core.step(np.array([3]))  # short bucket for a long-only profile


def test_features_hidden_until_called(profiles):
    data = planted_dataset(50)
    core = DecisionCore(data, profiles[:1], EnvConfig(), n=1, auto_reset=False)
    obs = core.load(np.array([5]), np.array([0]), np.array([0.0]))
    start = core._slices[3][0]
    assert obs[0, start] == 0
    obs, *_ = core.step(np.array([0]))
    assert obs[0, start] == data.slot_features[0][5, 0] and obs[0, start + 1] == 1


def test_position_buckets_cover_the_range():
    assert POSITION_BUCKETS.min() == -1 and POSITION_BUCKETS.max() == 1 and 0 in POSITION_BUCKETS


def test_single_env_reads_a_masked_action_as_no_trade(profiles):
    env = DecisionEnv(planted_dataset(50), profiles[:1])
    env.reset(seed=0)
    env.core.previous_position[:] = 0.5
    _, _, terminated, _, info = env.step(3)  # -1 bucket: masked for a long-only profile
    assert terminated and info["position"] == 0.5
