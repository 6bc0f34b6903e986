"""The orchestrator end to end: training from config, the decision path, the CLI's errors."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.config import load_config
from quantorch.orchestrator.dataset import ToolSlot
from quantorch.orchestrator.factory import build_orchestrator_strategy
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


@pytest.mark.slow
def test_poisoned_future_over_the_whole_decision_path(small_checkpoint, loaded_db, monkeypatch):
    """Overwrite every price after t with garbage: no target weight decided up to t changes."""
    config = load_config().with_overrides({
        **SHORT, "orchestrator.checkpoint": small_checkpoint, "backtest.strategy": "orchestrator",
    })
    store = Store(loaded_db)
    from quantorch.data.service import load_panel
    from quantorch.toolkit import market as market_module

    panel = load_panel(store, "sample", config.universe, dt.date(2017, 1, 3), dt.date(2018, 6, 29))
    dates = panel.dates[(panel.dates >= "2018-01-02")][::5]
    cut = pd.Timestamp("2018-03-29")

    def weights(poison: bool) -> pd.DataFrame:
        real = market_module.load_market_data

        def load(*args, **kwargs):
            data = real(*args, **kwargs)
            if not poison:
                return data
            rng = np.random.default_rng(0)
            prices = data.prices
            garbage = {}
            for field in ("close", "open", "high", "low", "volume"):
                frame = getattr(prices, field).copy()
                after = frame.index > cut
                frame.loc[after] = rng.uniform(1, 1e6, size=frame.loc[after].shape)
                garbage[field] = frame
            from dataclasses import replace

            bench = data.benchmark
            if bench is not None:
                bench = bench.copy()
                bench[bench.index > cut] = 1e9
            factors = data.factors
            if factors is not None:
                factors = factors.copy()
                factors[factors.index > cut] = 7.0
            return replace(data, prices=type(prices)(**garbage), benchmark=bench, factors=factors)

        monkeypatch.setattr(market_module, "load_market_data", load)
        strategy = build_orchestrator_strategy(config, store)
        used = panel
        if poison:  # the strategy also sees the poisoned panel itself
            used = load(store, "sample", config.universe, panel.dates[0].date(), panel.dates[-1].date()).prices
        return strategy.target_weights(used, dates), strategy.log

    clean, clean_log = weights(False)
    dirty, dirty_log = weights(True)
    upto = clean.index <= cut
    pd.testing.assert_frame_equal(clean.loc[upto], dirty.loc[upto])
    before = [d for d in clean_log.decisions if pd.Timestamp(d["decision_date"]) <= cut]
    after_poison = [d for d in dirty_log.decisions if pd.Timestamp(d["decision_date"]) <= cut]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("reward", "forward_return")} for r in rows]  # noqa: E731
    assert strip(before) == strip(after_poison)  # same tools called, same positions


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
    result = invoke("backtest", "--start", "2020", "--strategy", "sma-cross", "--profile", "neutral",
                    "--db", str(loaded_db))
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
