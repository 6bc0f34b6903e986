"""The orchestrator end to end: training from config, the decision path, the CLI's errors."""

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.config import load_config
from quantorch.orchestrator.dataset import ToolSlot
from quantorch.orchestrator.policy import load_checkpoint, save_checkpoint
from quantorch.store import Store
from quantorch.training.pipeline import train_from_config
from quantorch.training.ppo import PPOSettings

runner = CliRunner()
SHORT = {
    "training.train_start": dt.date(2016, 1, 1),
    "training.train_end": dt.date(2016, 12, 31),
    "training.val_start": dt.date(2017, 1, 1),
    "training.val_end": dt.date(2017, 6, 30),
    "universe": ["AAPL", "JPM", "KO", "XOM"],
}


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory, loaded_db_template):
    """A policy trained briefly by the real pipeline on real data (not the shipped one)."""
    folder = tmp_path_factory.mktemp("ckpt")
    config = load_config().with_overrides(SHORT)
    outcome = train_from_config(
        config, Store(loaded_db_template), folder / "policy.pt",
        settings=PPOSettings(steps=20_000, n_envs=128, eval_every=10_000, net_arch=[32, 32]),
    )
    return outcome.path


@pytest.mark.slow
def test_training_writes_a_checkpoint_with_provenance(small_checkpoint):
    checkpoint = load_checkpoint(small_checkpoint)
    meta = checkpoint.meta
    assert meta["train_period"] == ["2016-01-01", "2016-12-31"]
    assert meta["validation_period"] == ["2017-01-01", "2017-06-30"]
    assert meta["seed"] == 42 and "code_version" in meta and meta["config_hash"]
    assert {s.key for s in checkpoint.slots} == set(load_config().orchestrator.tools)
    assert small_checkpoint.with_suffix(".curve.csv").exists()


def invoke(*args, env=None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def test_unknown_orchestrator_and_profile(loaded_db):
    result = invoke("backtest", "--start", "2020", "--orchestrator", "polcy", "--db", str(loaded_db))
    assert result.exit_code == 2 and "did you mean policy" in result.stderr
    result = invoke("backtest", "--start", "2020", "--profile", "nutral", "--db", str(loaded_db))
    assert result.exit_code == 2 and "did you mean neutral" in result.stderr
    result = invoke("evaluate", "--start", "2020", "--orchestrators", "policy,randm", "--db", str(loaded_db))
    assert result.exit_code == 2 and "did you mean random" in result.stderr


def test_strategy_and_orchestrator_are_exclusive(loaded_db):
    result = invoke("backtest", "--start", "2020", "--strategy", "sma-cross", "--orchestrator",
                    "policy", "--db", str(loaded_db))
    assert result.exit_code == 2 and "one or the other" in result.stderr


def test_checkpoint_for_another_tool_set_is_refused(small_checkpoint, loaded_db, tmp_path):
    checkpoint = load_checkpoint(small_checkpoint)
    checkpoint.slots = [ToolSlot("oracle", "only", 0.001, ("direction",)), *checkpoint.slots[1:]]
    foreign = save_checkpoint(checkpoint, tmp_path / "foreign.pt")
    result = invoke("backtest", "--start", "2020", "--checkpoint", str(foreign), "--db", str(loaded_db))
    assert result.exit_code == 2
    assert "oracle" in result.stderr and "quantorch train" in result.stderr
    missing = invoke("backtest", "--start", "2020", "--checkpoint", str(tmp_path / "none.pt"), "--db", str(loaded_db))
    assert missing.exit_code == 2 and "quantorch train --out" in missing.stderr


def test_malformed_profile(loaded_db, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ndescription: x\nlimits:\n  max_postion: 0.1\n")
    result = invoke("profile", "validate", str(bad))
    assert result.exit_code == 2 and "unknown key 'limits.max_postion'" in result.stderr
    bad.write_text("name: mine\ndescription: x\ntool_preferences: {techincal: 1}\n")
    result = invoke("profile", "validate", str(bad))
    assert result.exit_code == 2 and "did you mean technical" in result.stderr
    bad.write_text("name: [mine\n")
    result = invoke("backtest", "--start", "2020", "--profile", str(bad), "--db", str(loaded_db))
    assert result.exit_code == 2 and "malformed YAML" in result.stderr


def test_profile_commands():
    listing = invoke("profile", "list", "--json")
    names = {p["name"] for p in json.loads(listing.stdout)}
    assert {"neutral", "cautious-fundamental", "active-technical", "cost-conscious-quant"} <= names
    shown = invoke("profile", "show", "active-technical")
    assert shown.exit_code == 0 and "allow_short: true" in shown.stdout


@pytest.mark.slow
def test_evaluate_takes_a_profile_file_whose_name_is_not_shipped(loaded_db, tmp_path):
    mine = tmp_path / "my-style.yaml"
    mine.write_text("name: my-style\ndescription: a trader's own profile\nrisk_aversion: 4\n"
                    "tool_preferences: {risk: 1.0}\nlimits:\n  max_position: 0.06\n")
    result = invoke("evaluate", "--start", "2022-01", "--end", "2022-03", "--profiles", str(mine),
                    "--orchestrators", "policy,buy-and-hold", "--seeds", "1", "--json",
                    "--db", str(loaded_db))
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert {(r["orchestrator"], r["profile"]) for r in rows} == {
        ("policy", "my-style"), ("buy-and-hold", "my-style")}
