"""The walk-forward HTML report, built from a small real sweep on the sample data."""

import json

import pytest
import torch

from quantorch.backtest.report import plotly_js_name
from quantorch.config import load_config
from quantorch.orchestrator.profiles import load_profile
from quantorch.store import Store
from quantorch.walkforward import walk_forward
from quantorch.walkforward_report import SECTIONS, WALKFORWARD_CHART_IDS, pareto_front
from tests.integration.test_walkforward import STEPS, _config_file

torch.set_num_threads(1)

ORCHESTRATORS = ["policy", "all-tools", "random", "free-tools", "buy-and-hold"]


def test_pareto_front_keeps_the_points_nothing_beats():
    costs = [0.0, 0.0, 0.01, 0.02, 0.02, float("nan")]
    sharpes = [0.5, 0.3, 0.8, 0.7, 0.9, 2.0]
    # (0.0, 0.3) is beaten by (0.0, 0.5); (0.02, 0.7) by (0.01, 0.8); NaN is left out
    assert pareto_front(costs, sharpes) == [0, 2, 4]
    assert pareto_front([], []) == []


@pytest.mark.slow
def test_walk_forward_report_has_every_section(loaded_db, tmp_path):
    config = load_config(_config_file(tmp_path))
    profiles = [load_profile("neutral"), load_profile("active-technical")]
    result = walk_forward(config, Store(loaded_db), profiles, ORCHESTRATORS, start_year=2016,
                          end_year=2017, train_years=1, steps=STEPS, threads=1)

    path = result.report_path
    assert path == (tmp_path / "reports" / f"{result.sweep_id}-2016-2017.html").resolve()
    assert (path.parent / plotly_js_name()).exists()  # the page's charts load it from beside
    page = path.read_text()
    for anchor, heading in SECTIONS:
        assert f'<h2 id="{anchor}">{heading}</h2>' in page
    for chart in WALKFORWARD_CHART_IDS:
        assert f'id="{chart}"' in page
    for fold in result.folds:  # the provenance of every figure: each fold's periods
        for start, end in ((fold.train_start, fold.train_end), (fold.val_start, fold.val_end),
                           (fold.test_start, fold.test_end)):
            assert f"{start} to {end}" in page
    for key in ("a:neutral", "a", "b:technical", "b:sentiment", "c:neutral", "d:neutral",
                "e:active-technical"):
        assert key in result.targets
    assert page.count('class="met"') + page.count('class="not-met"') >= len(result.targets)
    assert "no profile prefers it" in page  # sentiment: no shipped profile prefers it
    assert "Pareto front of the stitched points" in page

    for row in result.rows:
        assert set(row.per_fold_sharpe_ci) == {2016, 2017}
        assert set(row.per_fold_tool_cost_per_decision_usd) == {2016, 2017}
        assert all(0.0 <= rate <= 1.0 for rate in row.tool_calls_per_decision.values())
        assert row.orchestrator in page
    by = {(r.orchestrator, r.profile): r for r in result.rows}
    forced = by[("all-tools", "neutral")].tool_calls_per_decision
    assert forced and all(rate == pytest.approx(1.0) for rate in forced.values())
    assert by[("buy-and-hold", "neutral")].tool_calls_per_decision == {}

    payload = result.to_json()
    assert payload["report_path"] == str(path)
    assert payload["targets"] == result.targets
    assert "item 6" not in payload["not_done"]
    json.dumps(payload, allow_nan=False)
