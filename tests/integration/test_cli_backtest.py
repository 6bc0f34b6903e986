"""The backtest command end to end on the real sample data, and every error it promises."""

import json
import subprocess
import sys
import textwrap

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from quantorch.cli.main import app

runner = CliRunner()


def backtest(db, tmp_path, *args, env=None):
    return runner.invoke(
        app,
        ["backtest", "--db", str(db), *args],
        env={"QUANTORCH_LOCK_TIMEOUT": "1", **(env or {})},
        catch_exceptions=False,
    )


def test_json_contract_and_storage(loaded_db, tmp_path):
    # 2021-2022: no 30% drawdown, so neutral's kill switch never sells the holdings
    result = backtest(loaded_db, tmp_path, "--start", "2021", "--strategy", "buy-and-hold", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    keys = {"total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar",
            "turnover", "fees_paid"}
    assert keys <= payload["metrics"].keys() and keys <= payload["benchmark"].keys()
    assert payload["period"] == {"start": "2021-01-04", "end": "2022-12-28"}
    assert payload["metrics"]["max_drawdown"] < 0 and payload["benchmark"]["max_drawdown"] < 0
    assert -1 < payload["metrics"]["total_return"] < 5  # a fraction, not percent
    assert payload["metrics"]["fees_paid"] > 0
    report = tmp_path / "backtests" / f"{payload['run_id']}.html"
    assert report.exists() and str(report) == payload["report_path"]
    con = duckdb.connect(str(loaded_db), read_only=True)
    run = con.execute("SELECT strategy, seed, config_hash, code_version, metrics FROM runs").fetchall()
    assert len(run) == 1 and run[0][0] == "buy-and-hold"
    assert json.loads(run[0][4])["sharpe"] == pytest.approx(payload["metrics"]["sharpe"])
    n_equity = con.execute("SELECT count(*) FROM equity WHERE run_id = ?", [payload["run_id"]]).fetchone()[0]
    fills = con.execute("SELECT fill_date, side FROM fills WHERE run_id = ? ORDER BY fill_id",
                        [payload["run_id"]]).fetchall()
    con.close()
    assert n_equity == 501 and len(fills) == payload["fills"]
    # one buy per stock at the first fill; after it only the RiskGuard trims a winner that grew
    # past the profile's 10% max position (rule strategies pass the same guard)
    first = [f for f in fills if f[0] == fills[0][0]]
    assert len(first) == 20 and {side for _, side in first} == {"buy"}
    assert {side for _, side in fills[20:]} <= {"sell"}


def test_table_output(loaded_db, tmp_path):
    result = backtest(loaded_db, tmp_path, "--start", "2021", "--end", "2021-06", "--strategy", "sma-cross")
    assert result.exit_code == 0, result.stderr
    assert "Sharpe" in result.stdout and "report:" in result.stdout


def test_same_config_and_seed_same_metrics(loaded_db, tmp_path):
    args = ("--start", "2020", "--strategy", "sma-cross", "--rebalance", "weekly", "--seed", "7", "--json")
    first = json.loads(backtest(loaded_db, tmp_path, *args).stdout)
    second = json.loads(backtest(loaded_db, tmp_path, *args).stdout)
    assert first["run_id"] != second["run_id"]
    assert first["metrics"] == second["metrics"] and first["config_hash"] == second["config_hash"]


def test_higher_fees_strictly_lower_return(loaded_db, tmp_path):
    returns = []
    for fee in ("0", "5", "50"):
        out = backtest(loaded_db, tmp_path, "--start", "2020", "--rebalance", "monthly",
                       "--strategy", "sma-cross", "--fee-bps", fee, "--json")
        returns.append(json.loads(out.stdout)["metrics"]["total_return"])
    assert returns[0] > returns[1] > returns[2]


def _assert_nothing_stored(db, tmp_path):
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    con.close()
    assert not list((tmp_path / "backtests").glob("*.html")) if (tmp_path / "backtests").exists() else True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2020", "--universe", "APPL,MSFT"], "unknown ticker 'APPL' for source sample (did you mean AAPL?)"),
        (["--start", "2021", "--end", "2020"], "is after end"),
        (["--start", "2030"], "runs from 1990-01-02 to 2022-12-28"),
        (["--start", "20x0"], "bad date '20x0' for --start"),
        (["--start", "2020", "--strategy", "sma-crosss"], "did you mean sma-cross"),
        (["--start", "2020", "--source", "bloomberg"], "source"),
        (["--start", "2020", "--fee-bps", "-3"], "bad --fee-bps -3.0"),
    ],
)
def test_bad_input_one_line_exit_2(loaded_db, tmp_path, args, message):
    result = backtest(loaded_db, tmp_path, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    _assert_nothing_stored(loaded_db, tmp_path)


def test_malformed_yaml(loaded_db, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("universe: [AAPL\n")
    result = backtest(loaded_db, tmp_path, "--start", "2020", "--config", str(bad))
    assert result.exit_code == 2 and "malformed YAML at line" in result.stderr


def test_debug_shows_traceback(loaded_db, tmp_path):
    result = backtest(loaded_db, tmp_path, "--start", "2030", "--debug")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_unreachable_yfinance(loaded_db, tmp_path, monkeypatch):
    yfinance = pytest.importorskip("yfinance")
    monkeypatch.setattr(yfinance, "download", lambda *a, **k: pd.DataFrame())
    result = backtest(loaded_db, tmp_path, "--start", "2023", "--source", "yfinance", "--universe", "AAPL")
    assert result.exit_code == 3
    assert "yfinance returned no prices for AAPL" in result.stderr
    _assert_nothing_stored(loaded_db, tmp_path)


def test_locked_database(loaded_db, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, time
            con = duckdb.connect({str(loaded_db)!r})
            print("locked", flush=True)
            time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = backtest(loaded_db, tmp_path, "--start", "2020")
        assert result.exit_code == 3
        assert f"locked by process {holder.pid}" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    _assert_nothing_stored(loaded_db, tmp_path)


@pytest.mark.slow
def test_console_script_fresh_database(tmp_path):
    """The real entry point on an empty database: loads the sample itself, JSON on stdout."""
    db = tmp_path / "fresh.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "quantorch.cli.main", "backtest", "--start", "2020", "--json", "--db", str(db)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["period"]["start"] == "2020-01-02"
    bad = subprocess.run(
        [sys.executable, "-m", "quantorch.cli.main", "backtest", "--start", "2020", "--universe", "APPL", "--db", str(db)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "AAPL" in bad.stderr
