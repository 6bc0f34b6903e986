"""`quantorch evaluate` compares the baselines on fair terms, on the real sample data: random
spends what the policy spent in the same backtest, and every row shows its exposure."""

import datetime as dt
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.config import ORCHESTRATOR, load_config
from quantorch.evaluation import MATCH_TOLERANCE, evaluate, simulate_matched_random, spend_target
from quantorch.orchestrator.profiles import load_profile
from quantorch.store import Store

torch.set_num_threads(1)

PERIOD = {"backtest.start": dt.date(2022, 1, 3), "backtest.end": dt.date(2022, 4, 29),
          "universe": ["AAPL", "JPM", "KO", "XOM", "PFE", "WMT"]}


@pytest.fixture
def config(tmp_path):
    return load_config().with_overrides({**PERIOD, "reports_dir": str(tmp_path / "reports")})


def test_random_spends_what_the_policy_spent_and_every_row_shows_its_exposure(loaded_db, config):
    store = Store(loaded_db)
    neutral = load_profile("neutral")
    evaluation = evaluate(config, store, [neutral],
                          ["policy", "random", "all-tools", "buy-and-hold"], seeds=2)
    by = {r.orchestrator: r for r in evaluation.rows}
    policy, random = by["policy"], by["random"]
    # matched to the policy's realised spend per decision in this very backtest
    assert random.matched_cost_target_usd == pytest.approx(policy.tool_cost_per_decision_usd)
    assert random.matched_cost_ratio == pytest.approx(
        random.tool_cost_per_decision_usd / policy.tool_cost_per_decision_usd)
    assert abs(random.matched_cost_ratio - 1) <= MATCH_TOLERANCE
    assert policy.matched_cost_ratio is None
    target = evaluation.targets["c:neutral"]
    assert target["matched_cost_ratio"] == pytest.approx(random.matched_cost_ratio)
    # exposure and flat decisions on every row (buy-and-hold records no decisions)
    for row in evaluation.rows:
        assert 0.0 <= row.exposure <= 1.5
    assert all(0.0 <= by[n].flat_share <= 1.0 for n in ("policy", "random", "all-tools"))
    assert by["buy-and-hold"].flat_share is None
    stored = json.loads(json.dumps(evaluation.to_json(), allow_nan=False))
    rows = {r["orchestrator"]: r for r in stored["results"]}
    assert rows["random"]["matched_cost_ratio"] == pytest.approx(random.matched_cost_ratio)
    assert {"exposure", "flat_share"} <= set(rows["all-tools"])
    html = evaluation.report_path.read_text(encoding="utf-8")
    assert "mean gross exposure" in html and "random / policy tool cost per decision" in html

    # random alone: the policy runs anyway for the target, without a row; same seed, same run
    alone = evaluate(config, store, [neutral], ["random"], seeds=1)
    assert [r.orchestrator for r in alone.rows] == ["random"]
    assert alone.rows[0].matched_cost_target_usd == random.matched_cost_target_usd
    assert alone.rows[0].per_seed_sharpe[0] == random.per_seed_sharpe[0]


def test_matching_corrects_from_realised_runs_and_is_deterministic(loaded_db, config):
    """With no tolerance every run is corrected: the second run's call probability comes from
    the first run's realised spend, and the same seed gives the same runs again."""
    store = Store(loaded_db)
    neutral = load_profile("neutral")  # the config's profile: the policy runs under it too
    policy_cfg = config.with_overrides({"backtest.strategy": ORCHESTRATOR,
                                        "orchestrator.name": "policy"})
    from quantorch.backtest.runner import simulate_config

    policy_run = simulate_config(policy_cfg, store)
    target = spend_target(policy_run, neutral)
    assert target.cost_per_decision_usd == policy_run.tools["tool_cost_per_decision_usd"]
    assert len(target.dates) == len(policy_run.decisions)
    assert np.all(np.abs(target.previous_position) <= 1.0)

    def matched():
        cache: dict = {}
        return simulate_matched_random(config, store, policy_run, neutral, seed=3, cache=cache,
                                       tolerance=0.0, max_runs=2)

    (first, match), (again, match_again) = matched(), matched()
    assert match.runs == 2 and match == match_again
    assert first.result.equity.equals(again.result.equity)
    assert match.realised_usd == first.tools["tool_cost_per_decision_usd"]


def test_evaluate_prints_exposure_and_the_matched_cost_ratio(loaded_db, tmp_path):
    result = CliRunner().invoke(app, [
        "evaluate", "--start", "2022-01", "--end", "2022-03", "--orchestrators", "policy,random",
        "--profiles", "neutral", "--seeds", "1", "--db", str(loaded_db),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "expo" in result.stdout and "mean gross exposure" in result.stdout
    assert "random spent" in result.stdout
    assert "x the policy's realised tool cost per decision (neutral)" in result.stdout


def test_a_walk_forward_fold_matches_random_to_its_policy(loaded_db, tmp_path):
    from quantorch.walkforward import _settings, fold_layout, run_fold

    config = load_config().with_overrides({"universe": PERIOD["universe"]})
    fold = fold_layout(2017, 2017, 1, config.training.train_start)[0]
    outcome = run_fold({
        "config": config.model_dump_json(), "db_path": str(loaded_db), "fold": fold.to_json(),
        "orchestrators": ["random"],
        "profiles": [load_profile("neutral").model_dump_json()],
        "settings": _settings(1_000), "checkpoint_dir": str(tmp_path / "fold"), "threads": 1,
    })
    # the policy ran for the target but is not a row of the fold
    assert [r["orchestrator"] for r in outcome["runs"]] == ["random"]
    ratio = outcome["runs"][0]["matched_cost_ratio"]
    assert ratio is None or abs(ratio - 1) <= MATCH_TOLERANCE

