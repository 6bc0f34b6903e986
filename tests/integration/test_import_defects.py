"""`quantorch data import` of imperfect files: each defect is reported, and ``--on-bad-rows``
fail (the default), skip and keep do what they say (issue 13, item 1).

The small files are real ^GSPC bars (Jan-Mar 2015, as ticker IDX) with one defect planted
each; the last test imports the real 1.8M-row S&P 500 file of ../shared/data."""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.data.providers.sample import SampleProvider
from quantorch.data.service import (
    FlaggedBarsWarning,
    find_price_defects,
    flagged_bars,
    load_panel,
    validate_prices,
)
from quantorch.store import Store

runner = CliRunner()
PRICES = ["open", "high", "low", "close", "adj_close"]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def stored(db: Path) -> pd.DataFrame:
    if not db.exists():
        return pd.DataFrame(columns=["ticker", "date"])
    with Store(db).connect(read_only=True) as con:
        return con.execute("SELECT ticker, date, close, volume FROM prices ORDER BY date").df()


def reports(folder: Path) -> list[Path]:
    return sorted((folder / "backtests").glob("import-*.json"))


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    real = SampleProvider().fetch(["^GSPC"], dt.date(2015, 1, 1), dt.date(2015, 3, 31))
    return real.assign(ticker="IDX", date=real["date"].dt.strftime("%Y-%m-%d"))


def with_defects(bars: pd.DataFrame) -> pd.DataFrame:
    """One row of each kind, and a gap: rows 4 (high < low), 8 (close above the high),
    10 (the whole bar /10 for one day: a decimal shift that fits together), 12 (zero
    volume); the session of row 15 is missing."""
    broken = bars.copy()
    broken.loc[4, "high"] = broken.loc[4, "low"] / 10
    broken.loc[8, "close"] = broken.loc[8, "high"] * 1.01
    broken.loc[10, PRICES] = broken.loc[10, PRICES] / 10
    broken.loc[12, "volume"] = 0
    return broken.drop(index=15).reset_index(drop=True)


def write(folder: Path, frame: pd.DataFrame) -> tuple[Path, Path]:
    path = folder / "p.csv"
    frame.to_csv(path, index=False)
    return path, folder / "q.duckdb"


def test_fail_is_the_default_lists_each_kind_and_writes_nothing(tmp_path, bars):
    path, db = write(tmp_path, with_defects(bars))
    result = invoke("data", "import", str(path), "--db", str(db))
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1  # one clear line ...
    line = lines[0]
    assert (
        "4 bad row(s) (2 bar(s) whose prices do not fit together (1 high < low), 1 one-day "
        "decimal-shift glitch(es) of the close, 1 zero-volume row(s)), first 4:" in line
    )
    assert "IDX 2015-01-08 (data row 5) high < low" in line
    assert "IDX 2015-01-14 (data row 9) close outside [low, high]" in line
    assert "IDX 2015-01-16 (data row 11) close /10 for one day" in line
    assert "IDX 2015-01-21 (data row 13) zero volume" in line
    assert "--on-bad-rows skip" in line and "--on-bad-rows keep" in line
    # ... and the details on stdout, one bad row a line
    assert "4 bad row(s)" in result.stdout
    assert sum("(data row" in x for x in result.stdout.splitlines()) == 4
    assert not db.exists() and reports(tmp_path) == []


def _high_below_low(bar: pd.Series) -> None:
    bar["high"] = bar["low"] / 10


def _close_above_high(bar: pd.Series) -> None:
    bar["close"] = bar["high"] * 1.01


def _open_below_low(bar: pd.Series) -> None:
    bar["open"] = bar["low"] * 0.9


def _scaled(factor: float):
    def scale(bar: pd.Series) -> None:
        bar[PRICES] = bar[PRICES] * factor

    return scale


def _low_tenth(bar: pd.Series) -> None:  # still fits the bar: the low is below everything
    bar["low"] = bar["close"] / 10


def _open_and_low_tenth(bar: pd.Series) -> None:  # ARE 2010-11-24 in the real file
    bar["open"] = bar["low"] = bar["close"] / 10


def _no_volume(bar: pd.Series) -> None:
    bar["volume"] = 0


@pytest.mark.parametrize(
    ("row", "change", "fragment"),
    [
        (4, _high_below_low, "1 bar(s) whose prices do not fit together, first 1: "
                             "IDX 2015-01-08 (data row 5) high < low"),
        (8, _close_above_high, "(data row 9) close outside [low, high]"),
        (3, _open_below_low, "(data row 4) open outside [low, high]"),
        (10, _scaled(0.01), "1 bad row(s) (1 one-day decimal-shift glitch(es) of the close)"),
        (10, _scaled(10), "(data row 11) close x10 for one day"),
        (6, _low_tenth, "1 bad row(s) (1 bar(s) with an open, high or low over 2x away from "
                        "the close), first 1: IDX 2015-01-12 (data row 7) low"),
        (6, _open_and_low_tenth, "(data row 7) open 202.826 is 0.1x the close, low 202.826 is "
                                 "0.1x the close"),
        (12, _no_volume, "1 bad row(s) (1 zero-volume row(s)), first 1: IDX 2015-01-21"),
    ],
)  # fmt: skip
def test_each_kind_alone_is_refused_and_named(tmp_path, bars, row, change, fragment):
    broken = bars.copy()
    bar = broken.loc[row].copy()
    change(bar)
    broken.loc[row] = bar
    path, db = write(tmp_path, broken)
    result = invoke("data", "import", str(path), "--db", str(db))
    assert result.exit_code == 2
    assert fragment in result.stderr.strip().splitlines()[0]
    assert not db.exists()


def test_skip_drops_the_bad_rows_and_records_them(tmp_path, bars):
    broken = with_defects(bars)
    path, db = write(tmp_path, broken)
    result = invoke("data", "import", str(path), "--db", str(db), "--on-bad-rows", "skip")
    assert result.exit_code == 0, result.stderr
    kept = stored(db)
    assert len(kept) == len(broken) - 4
    bad_days = {"2015-01-08", "2015-01-14", "2015-01-16", "2015-01-21"}
    assert not bad_days & set(pd.to_datetime(kept["date"]).dt.strftime("%Y-%m-%d"))
    assert "skipped 4 bad row(s)" in result.stdout
    # the gap is reported (it cannot be skipped), on stderr as a warning
    assert "warning: 1 missing session(s) inside the span of 1 ticker(s) (e.g. IDX 2015-01-26)" in (
        " ".join(result.stderr.split())
    )
    (report,) = reports(tmp_path)
    assert str(report.name) in " ".join(result.stdout.split())
    payload = json.loads(report.read_text())
    assert payload["on_bad_rows"] == "skip" and payload["bad_rows_action"] == "skipped"
    assert payload["rows_read"] == len(broken) and payload["rows_imported"] == len(broken) - 4
    assert payload["counts"] == {
        "bad_bar": 2, "decimal_shift": 1, "far_from_close": 0, "zero_volume": 1,
        "high_below_low": 1,
        "bad_rows": 4, "gaps": 1, "tickers_with_gaps": 1,
    }  # fmt: skip
    assert [r["date"] for r in payload["bad_rows"]] == sorted(bad_days)
    assert [r["data_row"] for r in payload["bad_rows"]] == [5, 9, 11, 13]
    assert payload["bad_rows"][2]["kinds"] == "decimal_shift"
    assert payload["gaps"] == [{"ticker": "IDX", "date": "2015-01-26"}]
    assert flagged_bars(Store(db), "file").empty


def test_keep_stores_them_flagged_and_a_panel_over_them_warns(tmp_path, bars):
    broken = with_defects(bars)
    path, db = write(tmp_path, broken)
    result = invoke("data", "import", str(path), "--db", str(db), "--on-bad-rows", "keep")
    assert result.exit_code == 0, result.stderr
    assert len(stored(db)) == len(broken)
    assert "warning: kept 4 bad row(s), flagged" in " ".join(result.stderr.split())
    (report,) = reports(tmp_path)
    assert json.loads(report.read_text())["bad_rows_action"] == "kept, flagged"
    store = Store(db)
    flags = flagged_bars(store, "file")
    assert list(flags["date"].dt.strftime("%m-%d")) == ["01-08", "01-14", "01-16", "01-21"]
    with pytest.warns(FlaggedBarsWarning, match=r"4 file bar\(s\) in this window were flagged"):
        load_panel(store, "file", ["IDX"], dt.date(2015, 1, 1), dt.date(2015, 3, 31))
    with warnings.catch_warnings():  # a window without flagged bars is silent
        warnings.simplefilter("error", FlaggedBarsWarning)
        load_panel(store, "file", ["IDX"], dt.date(2015, 2, 1), dt.date(2015, 3, 31))
    # importing the ticker again, skipping, replaces its flags: nothing flagged is stored
    again = invoke("data", "import", str(path), "--db", str(db), "--on-bad-rows", "skip")
    assert again.exit_code == 0, again.stderr
    assert flagged_bars(store, "file").empty


def test_a_backtest_over_kept_rows_warns(tmp_path, bars):
    path, db = write(tmp_path, with_defects(bars))
    kept = invoke("data", "import", str(path), "--db", str(db), "--on-bad-rows", "keep")
    assert kept.exit_code == 0, kept.stderr
    result = invoke("backtest", "--source", "file", "--tickers", "IDX", "--strategy",
                    "buy_and_hold", "--start", "2015-01-02", "--end", "2015-03-31",
                    "--benchmark", "none", "--db", str(db))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "4 file bar(s) in this window were flagged as bad at import and kept" in " ".join(
        result.stderr.split()
    )


def test_a_clean_file_imports_silently_and_real_moves_are_not_glitches(tmp_path, bars):
    moved = bars.copy()
    moved.loc[30:, PRICES] = moved.loc[30:, PRICES] / 2  # a crash that holds
    moved.loc[45:, PRICES] = moved.loc[45:, PRICES] * 10  # a x10 level change that holds
    path, db = write(tmp_path, moved)
    result = invoke("data", "import", str(path), "--db", str(db))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "" and reports(tmp_path) == []
    assert len(stored(db)) == len(moved)


def test_an_unknown_mode_is_refused_with_a_suggestion(tmp_path, bars):
    path, db = write(tmp_path, bars)
    result = invoke("data", "import", str(path), "--db", str(db), "--on-bad-rows", "skp")
    assert result.exit_code == 2
    assert "unknown --on-bad-rows 'skp' (did you mean skip?)" in result.stderr
    assert not db.exists()


def test_gaps_are_every_missing_session_inside_a_span(bars):
    frame = validate_prices(bars.drop(index=[5, 6, 20]), "t")
    other = validate_prices(bars.assign(ticker="ZZZ").iloc[10:], "t")
    frame = pd.concat([frame, other], ignore_index=True)  # ZZZ starts later: no gap before
    gaps = find_price_defects(frame).gaps
    assert list(gaps["ticker"]) == ["IDX"] * 3
    expected = pd.to_datetime(bars.loc[[5, 6, 20], "date"]).tolist()
    assert list(gaps["date"]) == expected


README_GLITCHES = {
    ("AVB", "2010-09-16"), ("AVB", "2012-12-21"), ("BXP", "2007-05-02"), ("EIX", "2009-09-01"),
    ("EIX", "2012-03-08"), ("EIX", "2012-03-22"), ("FITB", "2002-07-02"), ("HST", "2009-11-12"),
    ("NUE", "2007-01-16"), ("PXD", "2006-03-16"), ("PXD", "2013-08-05"), ("SLG", "2014-03-04"),
}  # fmt: skip


def test_the_real_sp500_file_with_skip_reports_the_readme_defects(tmp_path, shared_data):
    """The shared data README: 17 rows with high < low, 43 bars in all whose prices do not
    fit (12 tickers), the 12 decimal-shift glitches it names, 63 rows with a high/close > 2,
    low/close < 0.5 or open/close outside [0.5, 2], 284 zero-volume rows (the CMG and UAA
    IPO-day rows among them), 604 missing ticker-days on 350 tickers; the real crashes
    it lists are not glitches. The import of 1.8M rows takes <= 30 s."""
    path = shared_data("sp500_ohlcv_2000_2017_adj.csv.gz")
    db = tmp_path / "q.duckdb"
    started = time.perf_counter()
    result = invoke("data", "import", str(path), "--adjusted", "--on-bad-rows", "skip",
                    "--db", str(db))  # fmt: skip
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.stderr
    (report,) = reports(tmp_path)
    payload = json.loads(report.read_text())
    assert payload["counts"] == {
        "bad_bar": 43, "decimal_shift": 12, "far_from_close": 63, "zero_volume": 284,
        "high_below_low": 17, "bad_rows": 362, "gaps": 604, "tickers_with_gaps": 350,
    }  # fmt: skip
    rows = pd.DataFrame(payload["bad_rows"])
    shifts = rows[rows["kinds"].str.contains("decimal_shift")]
    assert set(zip(shifts["ticker"], shifts["date"], strict=True)) == README_GLITCHES
    bad_bar = rows[rows["kinds"].str.contains("bad_bar")]
    assert sorted(bad_bar["ticker"].unique()) == [
        "ARE", "AVB", "BEN", "BXP", "EIX", "FITB", "HST", "HUM", "NUE", "PCG", "PXD", "SLG",
    ]  # fmt: skip
    zero = set(zip(rows.loc[rows["kinds"].str.contains("zero_volume"), "ticker"],
                   rows.loc[rows["kinds"].str.contains("zero_volume"), "date"], strict=True))
    assert {("CMG", "2006-01-25"), ("UAA", "2005-11-17")} <= zero
    crashes = {("AIG", "2008-09-15"), ("AAPL", "2000-09-29"), ("MS", "2008-10-13")}
    assert not crashes & set(zip(rows["ticker"], rows["date"], strict=True))
    # one-field decimal shifts that still fit the bar (ARE's open and low both 5.3498 with a
    # close of 54.559: a fill at that open would be poisoned) and the flash-crash prints
    far = rows[rows["kinds"].str.contains("far_from_close")]
    assert ("ARE", "2010-11-24") in set(zip(far["ticker"], far["date"], strict=True))
    assert (far["date"] == "2010-05-06").any() and (far["date"] == "2008-09-19").any()
    assert payload["rows_imported"] == 1_845_739 - 362
    with Store(db).connect(read_only=True) as con:
        n, tickers = con.execute("SELECT count(*), count(DISTINCT ticker) FROM prices").fetchone()
    assert (n, tickers) == (1_845_739 - 362, 503)
    assert "skipped 362 bad row(s)" in result.stdout
    assert "604 missing session(s) inside the span of 350 ticker(s)" in " ".join(
        result.stderr.split()
    )
    assert elapsed <= 30, f"the import took {elapsed:.1f} s"


def test_gaps_alone_do_not_refuse_the_file_but_are_reported(tmp_path, bars):
    path, db = write(tmp_path, bars.drop(index=[15, 16]))
    result = invoke("data", "import", str(path), "--db", str(db))
    assert result.exit_code == 0, result.stderr
    line = " ".join(result.stderr.split())
    assert "warning: 2 missing session(s) inside the span of 1 ticker(s) (e.g. IDX 2015-01-26)" in (
        line
    )
    (report,) = reports(tmp_path)
    payload = json.loads(report.read_text())
    assert payload["bad_rows"] == [] and payload["bad_rows_action"] == "none"
    assert [g["date"] for g in payload["gaps"]] == ["2015-01-26", "2015-01-27"]
