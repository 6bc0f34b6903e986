"""Walk-forward evaluation on the sample data: fold layout, stitching, resume, CLI, Dask."""

import datetime as dt
import json

import pytest
import torch
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.config import load_config
from quantorch.data import calendar
from quantorch.errors import UserInputError
from quantorch.orchestrator.profiles import load_profile
from quantorch.store import Store
from quantorch.walkforward import Fold, fold_layout, walk_forward

torch.set_num_threads(1)

TICKERS = ["AAPL", "JPM", "KO", "XOM"]
ORCHESTRATORS = ["policy", "free-tools", "buy-and-hold"]
STEPS = 1_000  # training.steps' minimum: enough to exercise the pipeline, not to learn


def _config_file(tmp_path):
    path = tmp_path / "quantorch.yaml"
    path.write_text(f"universe: [{', '.join(TICKERS)}]\n"
                    f"reports_dir: {tmp_path / 'reports'}\n"
                    "backtest:\n  rebalance: weekly\n")
    return path


def _days(fold: Fold, period: str) -> set[dt.date]:
    start, end = getattr(fold, f"{period}_start"), getattr(fold, f"{period}_end")
    return {d.date() for d in calendar.sessions(start, end)}


@pytest.mark.parametrize("train_years", [None, 1, 3])
def test_train_validation_and_test_never_overlap(train_years):
    folds = fold_layout(2008, 2022, train_years, dt.date(2005, 1, 1))
    assert [f.test_year for f in folds] == list(range(2008, 2023))
    for fold in folds:
        train, val, test = (_days(fold, p) for p in ("train", "val", "test"))
        assert not train & val and not val & test and not train & test
        assert max(train) < min(val) and max(val) < min(test)
        assert fold.val_start.year == fold.test_year - 1
        if train_years is None:
            assert fold.train_start == dt.date(2005, 1, 1)
        else:
            assert fold.train_start.year == max(2005, fold.test_year - 1 - train_years)
    with pytest.raises(AssertionError, match="overlap"):
        Fold(2010, dt.date(2008, 1, 1), dt.date(2009, 6, 30), dt.date(2009, 1, 1),
             dt.date(2009, 12, 31), dt.date(2010, 1, 1), dt.date(2010, 12, 31))
    with pytest.raises(UserInputError, match="no training year"):
        fold_layout(2006, 2007, None, dt.date(2005, 1, 1))


@pytest.mark.slow
def test_walk_forward_stitches_test_years_and_resumes(loaded_db, tmp_path):
    config_path = _config_file(tmp_path)
    config = load_config(config_path)
    store = Store(loaded_db)
    profiles = [load_profile("neutral")]

    def sweep():
        return walk_forward(config, store, profiles, ORCHESTRATORS, start_year=2016,
                            end_year=2017, train_years=1, steps=STEPS, threads=1)

    first = sweep()
    assert first.computed_folds == [2016, 2017] and first.reused_folds == []
    for fold in first.folds:  # the stored periods are the layout's, disjoint and ordered
        saved = json.loads((first.sweep_dir / f"fold-{fold.test_year}.json").read_text())
        assert saved["fold"] == fold.to_json()
        assert saved["trained"]["policy"]["steps_done"] >= STEPS
    sessions = {d.date() for d in calendar.sessions(dt.date(2016, 1, 1), dt.date(2017, 12, 31))}
    for row in first.rows:
        assert row.sessions == len(row.returns) == len(sessions)
        assert {d.date() for d in row.returns.index} == sessions
        assert set(row.per_fold_sharpe) == {2016, 2017}
        assert row.equity.notna().all()
    policy = next(r for r in first.rows if r.orchestrator == "policy")
    assert set(policy.versus) == {"buy-and-hold", "free-tools"}
    assert policy.versus["buy-and-hold"]["sessions"] == len(sessions)
    low, high = policy.versus["buy-and-hold"]["low"], policy.versus["buy-and-hold"]["high"]
    assert low <= policy.versus["buy-and-hold"]["difference"] <= high
    assert 0.0 <= policy.deflated_sharpe <= 1.0 and first.trials == 3
    json.dumps(first.to_json(), allow_nan=False)

    # an interrupted sweep: one fold's file is gone; only that fold runs again
    kept = first.sweep_dir / "fold-2016.json"
    kept_text, kept_mtime = kept.read_text(), kept.stat().st_mtime_ns
    (first.sweep_dir / "fold-2017.json").unlink()
    second = sweep()
    assert second.computed_folds == [2017] and second.reused_folds == [2016]
    assert kept.read_text() == kept_text and kept.stat().st_mtime_ns == kept_mtime
    assert second.sweep_dir == first.sweep_dir

    # the CLI finds the same sweep (same config and layout): every fold reused, nothing trained
    result = CliRunner().invoke(app, [
        "evaluate", "--walk-forward", "--start", "2016", "--end", "2017", "--train-years", "1",
        "--steps", str(STEPS), "--profiles", "neutral", "--orchestrators",
        ",".join(ORCHESTRATORS), "--config", str(config_path), "--db", str(loaded_db), "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["reused_folds"] == [2016, 2017] and payload["computed_folds"] == []
    assert {r["orchestrator"] for r in payload["results"]} == set(ORCHESTRATORS)
    # free-tools and buy-and-hold are evaluated: targets d and e (a and c need all-tools, random)
    assert {"d:neutral", "e:neutral"} <= set(payload["targets"])
    assert not {"a:neutral", "c:neutral"} & set(payload["targets"])
    assert payload["report_path"].endswith(f"{first.sweep_id}-2016-2017.html")
    table = CliRunner().invoke(app, [
        "evaluate", "--walk-forward", "--start", "2016", "--end", "2017", "--train-years", "1",
        "--steps", str(STEPS), "--profiles", "neutral", "--orchestrators",
        ",".join(ORCHESTRATORS), "--config", str(config_path), "--db", str(loaded_db),
    ], catch_exceptions=False)
    assert table.exit_code == 0 and "Sharpe of each fold" in table.stdout
    assert "2 reused" in table.stdout
    assert "e:neutral: policy Sharpe" in table.stdout and f"report: {payload['report_path']}" \
        in table.stdout


def test_walk_forward_cli_refuses_bad_options(loaded_db, tmp_path):
    config_path = _config_file(tmp_path)
    common = ["evaluate", "--walk-forward", "--config", str(config_path), "--db", str(loaded_db),
              "--orchestrators", "buy-and-hold", "--profiles", "neutral"]
    cases = [
        (["--start", "2016"], "needs --start and --end"),
        (["--start", "2016", "--end", "2017", "--train-years", "two"], "--train-years"),
        (["--start", "2016", "--end", "2017", "--refit", "monthly"], "--refit"),
        (["--start", "2016", "--end", "2017", "--executor", "ray://x"], "--executor"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(app, [*common, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.stderr
    # walk-forward options without --walk-forward are refused, not silently ignored
    result = CliRunner().invoke(app, [c for c in common if c != "--walk-forward"]
                                + ["--start", "2020", "--train-years", "3", "--workers", "2"])
    assert result.exit_code == 2
    assert "--train-years, --workers only apply with --walk-forward" in result.stderr


@pytest.mark.slow
def test_walk_forward_on_a_local_dask_cluster(loaded_db, tmp_path):
    distributed = pytest.importorskip(
        "dask.distributed", reason="dask.distributed is not installed (quantorch[cluster])")
    config = load_config(_config_file(tmp_path))
    from quantorch.walkforward import make_executor

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None) as cluster:
        # the path `--executor dask://HOST:PORT` takes
        address = cluster.scheduler_address.removeprefix("tcp://")
        executor, client = make_executor(f"dask://{address}", workers=1)
        try:
            result = walk_forward(config, Store(loaded_db), [load_profile("neutral")],
                                  ["policy", "buy-and-hold"], start_year=2016, end_year=2017,
                                  train_years=1, steps=STEPS, executor=executor, threads=1)
        finally:
            client.close()
    assert result.computed_folds == [2016, 2017]
    assert {(r.orchestrator, len(r.returns)) for r in result.rows} == {
        ("policy", 503), ("buy-and-hold", 503)}
    assert sorted(p.name for p in result.sweep_dir.glob("fold-*.json")) == [
        "fold-2016.json", "fold-2017.json"]


def test_the_sweep_key_changes_with_the_code_version(monkeypatch):
    """A fold computed by other code (another reward, say) is never reused as this code's."""
    import quantorch.store
    from quantorch.orchestrator.profiles import load_profile
    from quantorch.walkforward import sweep_key

    args = dict(train_years=None, refit="yearly", steps=1000, orchestrators=["policy"],
                profiles=[load_profile("neutral")], settings={})
    monkeypatch.setattr(quantorch.store, "code_version", lambda: "0.1.0+gaaaaaaaaaaaa")
    first = sweep_key(load_config(), **args)
    assert sweep_key(load_config(), **args) == first
    monkeypatch.setattr(quantorch.store, "code_version", lambda: "0.1.0+gbbbbbbbbbbbb")
    assert sweep_key(load_config(), **args) != first
