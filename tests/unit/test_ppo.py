"""PPO must find a planted signal and avoid a priced tool that carries only noise."""

import numpy as np
import pytest

from quantorch.errors import UserInputError
from quantorch.orchestrator.dataset import ToolSlot
from quantorch.orchestrator.env import EnvConfig
from quantorch.orchestrator.orchestrators import PolicyOrchestrator, decide
from quantorch.orchestrator.policy import load_checkpoint, save_checkpoint
from quantorch.orchestrator.profiles import load_profile
from quantorch.training.ppo import PPOSettings, train_policy

from .test_env import planted_dataset

SETTINGS = PPOSettings(steps=60_000, n_envs=256, n_steps=32, batch_size=2048, learning_rate=3e-3,
                       net_arch=[64, 64], eval_every=20_000, patience=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    profiles = [load_profile("neutral")]
    result = train_policy(planted_dataset(4000, seed=0), planted_dataset(1000, seed=1), profiles,
                          EnvConfig(), SETTINGS, seed=0, meta={"test": True},
                          curve_path=tmp_path_factory.mktemp("curve") / "curve.csv")
    return result, profiles


def test_planted_signal_is_called_and_followed(trained):
    result, profiles = trained
    test = planted_dataset(2000, seed=2)
    rows = np.arange(len(test))
    batch = decide(PolicyOrchestrator(result.checkpoint), test, profiles, EnvConfig(), rows,
                   np.zeros(len(rows), int), np.zeros(len(rows)))
    oracle, noise_cheap, noise_dear = batch.called.mean(axis=0)
    assert oracle > 0.95
    assert noise_cheap < 0.05 and noise_dear < 0.05
    long_when_up = batch.position[test.forward_return > 0].mean()
    long_when_down = batch.position[test.forward_return < 0].mean()
    assert long_when_up > 0.8 and long_when_down < 0.1  # long-only profile: flat when down
    assert result.curve and result.curve[-1]["val_reward"] > result.curve[0]["val_reward"] - 1e-9


def test_checkpoint_round_trip(trained, tmp_path):
    result, profiles = trained
    path = save_checkpoint(result.checkpoint, tmp_path / "policy.pt")
    loaded = load_checkpoint(path)
    assert loaded.slots == result.checkpoint.slots
    assert loaded.observation_names == result.checkpoint.observation_names
    assert loaded.meta["test"] is True and loaded.horizon == 5
    test = planted_dataset(300, seed=3)
    rows = np.arange(300)
    args = (test, profiles, EnvConfig(), rows, np.zeros(300, int), np.zeros(300))
    a = decide(PolicyOrchestrator(result.checkpoint), *args)
    b = decide(PolicyOrchestrator(loaded), *args)
    assert np.array_equal(a.position, b.position) and np.array_equal(a.called, b.called)


def test_checkpoint_for_another_tool_set_is_refused(trained):
    result, _ = trained
    with pytest.raises(UserInputError, match="oracle:only"):
        result.checkpoint.check_slots([ToolSlot("noise", "cheap", 0.0005, ("a", "b"))])
    with pytest.raises(UserInputError, match="retrain"):
        result.checkpoint.check_slots([
            ToolSlot("oracle", "only", 0.001, ("direction", "extra")),
            ToolSlot("noise", "cheap", 0.0005, ("a", "b")),
            ToolSlot("noise", "dear", 0.004, ("a", "b")),
        ])


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(UserInputError, match="quantorch train"):
        load_checkpoint(tmp_path / "nope.pt")
