import json

import pandas as pd
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.data.providers.sample import SampleProvider

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_fetch_then_fetch_again_makes_no_request(tmp_path):
    db = str(tmp_path / "q.duckdb")
    first = invoke("data", "fetch", "--tickers", "AAPL,KO", "--start", "2020", "--db", db)
    assert first.exit_code == 0, first.stderr
    assert "stored" in first.stdout and "1 request" in first.stdout
    again = invoke("data", "fetch", "--tickers", "AAPL,KO", "--start", "2021", "--end", "2021-06", "--db", db)
    assert again.exit_code == 0 and "no request made" in again.stdout
    listing = invoke("data", "list", "--json", "--db", db)
    rows = json.loads(listing.stdout)
    assert {r["ticker"] for r in rows} == {"AAPL", "KO"}
    assert rows[0]["first_date"].startswith("1990-01-02") and rows[0]["rows"] == 8313


def test_list_available_and_empty(tmp_path):
    available = invoke("data", "list", "--available")
    assert available.exit_code == 0 and "SP500" in available.stdout
    empty = invoke("data", "list", "--db", str(tmp_path / "e.duckdb"))
    assert "no database at" in empty.stdout and not (tmp_path / "e.duckdb").exists()


def test_import_good_and_bad_files(tmp_path):
    db = str(tmp_path / "q.duckdb")
    bars = SampleProvider().fetch(["^IXIC"], pd.Timestamp("2012-01-01").date(), pd.Timestamp("2012-12-31").date())
    good = tmp_path / "ixic.parquet"
    bars.assign(ticker="NDX_FILE").to_parquet(good)
    result = invoke("data", "import", str(good), "--db", db)
    assert result.exit_code == 0 and "imported 250 rows for 1 ticker" in result.stdout

    bad = tmp_path / "bad.csv"
    bars.assign(ticker="OTHER").assign(close=-1.0).to_csv(bad, index=False)
    failed = invoke("data", "import", str(bad), "--db", db)
    assert failed.exit_code == 2 and "non-positive close" in failed.stderr
    listing = json.loads(invoke("data", "list", "--json", "--db", db).stdout)
    assert [r["ticker"] for r in listing] == ["NDX_FILE"]  # the bad file wrote nothing

    backtest = invoke("backtest", "--source", "file", "--universe", "NDX_FILE", "--benchmark", "none",
                      "--start", "2012", "--json", "--db", db)
    assert backtest.exit_code == 0, backtest.stderr
    payload = json.loads(backtest.stdout)
    assert payload["benchmark"] is None and payload["metrics"]["fees_paid"] > 0


def test_fetch_from_file_source_is_refused(tmp_path):
    result = invoke("data", "fetch", "--source", "file", "--db", str(tmp_path / "q.duckdb"))
    assert result.exit_code == 2 and "quantorch data import" in result.stderr


def test_the_real_sp500_file_is_refused_for_its_bad_bars_quickly(tmp_path, shared_data):
    """The 1.8M-row OHLCV file has 43 bars whose prices do not fit (README: 17 with high < low,
    on ARE ... SLG), 12 one-day decimal-shift glitches (all among those bars), 63 bars with
    an open, high or low over 2x away from the close and 284 zero-volume rows: by default the
    import counts them on one line, stores nothing, and validating all of it stays well inside
    the 30 s a full import of it may take (the --on-bad-rows modes:
    tests/integration/test_import_defects.py)."""
    import time

    from quantorch.data.service import find_bad_bars, validate_prices

    path = shared_data("sp500_ohlcv_2000_2017_adj.csv.gz")
    db = tmp_path / "q.duckdb"
    started = time.perf_counter()
    result = invoke("data", "import", str(path), "--adjusted", "--db", str(db))
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert (
        "362 bad row(s) (43 bar(s) whose prices do not fit together (17 high < low), 12 one-day "
        "decimal-shift glitch(es) of the close, 63 bar(s) with an open, high or low over 2x "
        "away from the close, 284 zero-volume row(s)), first 5: ARE 2006-06-06"
    ) in lines[0]
    assert "high < low" in lines[0] and "fix or drop these rows" in lines[0]
    assert not db.exists()
    assert elapsed < 30, f"reading and validating took {elapsed:.1f} s"

    raw = pd.read_csv(path)
    bars = validate_prices(raw.assign(adj_close=raw["close"]), str(path))
    bad = find_bad_bars(bars)
    assert len(bars) == 1_845_739 and len(bad) == 43
    assert bad["reason"].str.contains("high < low").sum() == 17
    assert sorted(bad["ticker"].unique()) == [
        "ARE", "AVB", "BEN", "BXP", "EIX", "FITB", "HST", "HUM", "NUE", "PCG", "PXD", "SLG",
    ]  # fmt: skip
