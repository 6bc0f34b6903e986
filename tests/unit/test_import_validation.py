"""Every import reads values exactly or refuses: one line naming the row and the fix, exit 2.

Each bad file goes through the real CLI (``quantorch.cli.main.app``) with a fresh ``--db``; a
refused import must leave the database without rows (or not create it). Price files are built
from the real ^GSPC bars of the sample source (arch), news and fundamentals rows from the real
StockNet tweet and SEC filing layouts.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.data import _parsing as parsing
from quantorch.data.providers.sample import SampleProvider
from quantorch.data.service import find_bad_bars, read_price_file, validate_prices
from quantorch.errors import DataValidationError
from quantorch.store import Store

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def rows_in(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    with Store(db).connect(read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def refused(result, db: Path, table: str, *fragments: str) -> str:
    """Exit 2, one line on stderr holding every fragment, nothing stored; the line."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert rows_in(db, table) == 0
    return lines[0]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    """Real ^GSPC bars, January-March 2015, dates as ISO text, ticker IDX."""
    real = SampleProvider().fetch(["^GSPC"], dt.date(2015, 1, 1), dt.date(2015, 3, 31))
    return real.assign(ticker="IDX", date=real["date"].dt.strftime("%Y-%m-%d"))


def write(tmp_path: Path, frame: pd.DataFrame, name: str) -> tuple[Path, Path]:
    """The frame as a file in a fresh folder, and a database path there (not created)."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / name
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return path, folder / "q.duckdb"


def import_prices_file(tmp_path: Path, frame: pd.DataFrame, *extra: str, name="p.csv"):
    path, db = write(tmp_path, frame, name)
    return invoke("data", "import", str(path), "--db", str(db), *extra), db


def with_value(frame: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column].astype(object)
    out.loc[row, column] = value
    return out


# ---- dates ----------------------------------------------------------------------------------


def _day_first(frame: pd.DataFrame, fmt: str = "%d/%m/%Y") -> pd.DataFrame:
    return frame.assign(date=pd.to_datetime(frame["date"]).dt.strftime(fmt))


def test_ambiguous_day_month_is_refused_and_read_with_a_format(tmp_path, bars):
    day_first = _day_first(bars)  # 02/01/2015 ... 31/03/2015
    result, db = import_prices_file(tmp_path, day_first)
    line = refused(
        result,
        db,
        "prices",
        "'02/01/2015' in data row 1",
        "ambiguous day/month order: pass --date-format %d/%m/%Y or %m/%d/%Y",
        "probably %d/%m/%Y",
    )
    assert "p.csv" in line
    good, db = import_prices_file(tmp_path, day_first, "--date-format", "%d/%m/%Y")
    assert good.exit_code == 0, good.stderr
    path, _ = write(tmp_path, day_first, "p.csv")
    frame = read_price_file(path, date_format="%d/%m/%Y")
    assert list(frame["date"].dt.strftime("%Y-%m-%d")) == list(bars["date"])


def test_the_issue_example_stores_nothing_instead_of_a_saturday(tmp_path):
    frame = pd.DataFrame(
        {
            "date": ["04/01/2021", "05/01/2021", "13/01/2021"],
            "ticker": ["KO"] * 3,
            "close": [52.76, 52.2, 52.0],
            "adj_close": [52.76, 52.2, 52.0],
        }
    )
    result, db = import_prices_file(tmp_path, frame)
    refused(result, db, "prices", "ambiguous day/month order")
    wrong, db = import_prices_file(tmp_path, frame, "--date-format", "%m/%d/%Y")
    refused(
        wrong,
        db,
        "prices",
        "data row 3",
        "does not match --date-format %m/%d/%Y",
        "try --date-format %d/%m/%Y",
    )
    right, db = import_prices_file(tmp_path, frame, "--date-format", "%d/%m/%Y")
    assert right.exit_code == 0, right.stderr


def test_mixed_date_formats_name_the_first_row_that_differs(tmp_path, bars):
    mixed = with_value(bars, "date", 6, "12/01/2015")
    result, db = import_prices_file(tmp_path, mixed)
    refused(
        result,
        db,
        "prices",
        "mixed date formats in date: data row 7 has '12/01/2015'",
        "data row 1 has '2015-01-02' (ISO)",
    )
    day_first = with_value(_day_first(bars), "date", 9, "2015-01-16")
    result, db = import_prices_file(tmp_path, day_first, "--date-format", "%d/%m/%Y")
    refused(result, db, "prices", "'2015-01-16' in data row 10 does not match --date-format")


def test_integer_dates_need_a_format(tmp_path, bars):
    numbers = _day_first(bars, "%Y%m%d")  # the CSV reader makes them int64
    result, db = import_prices_file(tmp_path, numbers)
    refused(
        result,
        db,
        "prices",
        "date '20150102' in data row 1 is a number, not a date",
        "--date-format %Y%m%d",
    )
    good, db = import_prices_file(tmp_path, numbers, "--date-format", "%Y%m%d")
    assert good.exit_code == 0, good.stderr
    excel = bars.assign(date=np.arange(42006, 42006 + len(bars)) + 0.0)  # Excel serial days
    result, db = import_prices_file(tmp_path, excel)
    refused(result, db, "prices", "is a number, not a date")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1700-01-02", "'1700-01-02' in data row 3 is outside 1900-01-01 to"),
        ("2262-05-01", "'2262-05-01' in data row 3 is outside 1900-01-01 to"),
        ("9999-12-31", "'9999-12-31' in data row 3 is outside"),
        ((dt.date.today() + dt.timedelta(days=7)).isoformat(), "(tomorrow)"),
    ],
)
def test_dates_out_of_range_are_refused_not_overflowed(tmp_path, bars, value, fragment):
    result, db = import_prices_file(tmp_path, with_value(bars, "date", 2, value))
    refused(result, db, "prices", fragment, "check the year")


def test_out_of_range_with_a_format_and_in_parquet(tmp_path, bars):
    day_first = with_value(_day_first(bars), "date", 0, "01/05/2262")
    result, db = import_prices_file(tmp_path, day_first, "--date-format", "%d/%m/%Y")
    refused(result, db, "prices", "'01/05/2262' in data row 1 is outside")
    stamps = bars.assign(date=pd.to_datetime(bars["date"]).astype("datetime64[us]"))
    stamps.loc[4, "date"] = pd.Timestamp("1850-03-01")
    result, db = import_prices_file(tmp_path, stamps, name="p.parquet")
    refused(result, db, "prices", "data row 5 is outside 1900-01-01")


def test_unreal_and_unparseable_dates(tmp_path, bars):
    result, db = import_prices_file(tmp_path, with_value(bars, "date", 3, "2015-13-45"))
    refused(result, db, "prices", "unparseable date '2015-13-45' in data row 4")
    result, db = import_prices_file(tmp_path, with_value(bars, "date", 0, "Jan 2 2015"))
    refused(result, db, "prices", "unparseable date 'Jan 2 2015' in data row 1", "--date-format")
    result, db = import_prices_file(tmp_path, bars, "--date-format", "%Q")
    refused(result, db, "prices", "bad --date-format '%Q'")


def test_bars_on_days_the_nyse_was_closed_are_refused(tmp_path, bars):
    weekend = with_value(bars, "date", 5, "2015-01-10")  # a Saturday
    weekend = with_value(weekend, "date", 11, "2015-01-19")  # Martin Luther King Jr. Day
    result, db = import_prices_file(tmp_path, weekend)
    refused(
        result,
        db,
        "prices",
        "2 bar(s) on days the NYSE was closed (XNYS calendar)",
        "first 2: IDX 2015-01-10 (Saturday, data row 6), "
        "IDX 2015-01-19 (Monday, a holiday, data row 12)",
        "dates were misread",
        "not NYSE data",
    )
    # read with the wrong order, a day-first file lands on weekends: said with the format
    frame = pd.DataFrame(
        {
            "date": ["01/02/2021", "02/02/2021", "03/02/2021"],  # 1-3 February 2021
            "ticker": ["KO"] * 3,
            "close": [49.9, 50.5, 50.8],
            "adj_close": [49.9, 50.5, 50.8],
        }
    )
    result, db = import_prices_file(tmp_path, frame, "--date-format", "%m/%d/%Y")
    refused(
        result,
        db,
        "prices",
        "KO 2021-01-02 (Saturday, data row 1)",
        "is --date-format %m/%d/%Y the order the file uses?",
    )


# ---- prices ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("close", "inf", "infinite close inf in data row 3"),
        ("open", "-inf", "infinite open -inf in data row 3"),
        ("adj_close", "", "missing adj_close in data row 3"),
        ("close", "2,058.20", "non-numeric close '2,058.20' in data row 3"),
        ("high", "12000000", "high 1.2e+07 for IDX on 2015-01-06 (data row 3) is above 10,000,000"),
        ("volume", "inf", "infinite volume inf in data row 3"),
        ("volume", "-5", "negative volume -5 for IDX on 2015-01-06 (data row 3)"),
    ],
)
def test_bad_price_values_are_refused(tmp_path, bars, column, value, fragment):
    result, db = import_prices_file(tmp_path, with_value(bars, column, 2, value))
    refused(result, db, "prices", fragment)


def test_true_false_price_columns_are_refused_before_any_cast(tmp_path, bars):
    flags = bars.assign(volume=bars["close"] > bars["open"])  # pandas reads a bool column
    result, db = import_prices_file(tmp_path, flags)
    refused(result, db, "prices", "volume is a True/False column, not numbers")
    frame = bars.assign(adj_close=True)
    result, db = import_prices_file(tmp_path, frame, name="p.parquet")
    refused(result, db, "prices", "adj_close is a True/False column")


def test_integer_tickers_are_refused(tmp_path, bars):
    numbers = bars.assign(ticker=123)  # read back as int64
    result, db = import_prices_file(tmp_path, numbers)
    refused(result, db, "prices", "ticker 123 in data row 1 is a number: tickers must be text")
    mixed = pd.concat([bars, bars.iloc[:3].assign(ticker="0700")], ignore_index=True)
    result, db = import_prices_file(tmp_path, mixed)
    refused(
        result,
        db,
        "prices",
        f"ticker '0700' in data row {len(bars) + 1} is a number",
        "tickers must be text",
    )
    objects = bars.assign(ticker=pd.Series(["IDX"] * (len(bars) - 1) + [7], dtype=object))
    with pytest.raises(DataValidationError, match=f"ticker 7 in data row {len(bars)} is a num"):
        validate_prices(objects, "frame")


def test_a_ticker_named_na_is_read_as_text(tmp_path, bars):
    result, db = import_prices_file(tmp_path, bars.assign(ticker="NA"))
    assert result.exit_code == 0, result.stderr
    assert rows_in(db, "prices") == len(bars)


def test_bars_whose_prices_do_not_fit_are_reported(tmp_path, bars):
    broken = bars.copy()
    broken.loc[4, "high"] = broken.loc[4, "low"] / 10  # a decimal-shift glitch: high < low
    broken.loc[8, "close"] = broken.loc[8, "high"] * 1.01  # close above the high
    result, db = import_prices_file(tmp_path, broken)
    line = refused(
        result,
        db,
        "prices",
        "2 bar(s) whose prices do not fit together, first 2:",
        "IDX 2015-01-08 (data row 5) high < low",
        "IDX 2015-01-14 (data row 9) close outside [low, high]",
        "fix or drop these rows",
    )
    assert f"high {broken.loc[4, 'high']:g}" in line


def test_find_bad_bars_returns_rows_and_reasons_for_reuse(bars):
    frame = bars.assign(date=pd.to_datetime(bars["date"]))
    frame.loc[2, "open"] = frame.loc[2, "high"] + 1
    frame.loc[3, ["high", "low"]] = frame.loc[3, ["low", "high"]].to_numpy()
    bad = find_bad_bars(frame)
    assert list(bad.index) == [2, 3]
    assert bad.loc[2, "reason"] == "open outside [low, high]"
    assert bad.loc[3, "reason"].startswith("high < low")
    assert list(bad.columns) == ["ticker", "date", "open", "high", "low", "close", "reason"]
    assert find_bad_bars(frame.drop(index=[2, 3])).empty


def test_a_thousandfold_one_row_move_is_refused(tmp_path, bars):
    scaled = bars.copy()
    for column in ("open", "high", "low", "close", "adj_close"):
        scaled.loc[20:, column] = scaled.loc[20:, column] / 10_000  # a units switch
    result, db = import_prices_file(tmp_path, scaled)
    refused(
        result,
        db,
        "prices",
        "adj_close of IDX moves by a factor of",
        "in one row",
        "(data row 21)",
        "a move of 1,000x or more is a unit or decimal error",
    )


def test_good_files_still_import(tmp_path, bars):
    for name in ("p.csv", "p.parquet"):
        result, db = import_prices_file(tmp_path, bars, name=name)
        assert result.exit_code == 0, result.stderr
        assert rows_in(db, "prices") == len(bars)
    zoned = bars.assign(date=pd.to_datetime(bars["date"]).dt.tz_localize("America/New_York"))
    result, db = import_prices_file(tmp_path, zoned)  # 2015-01-02 00:00:00-05:00
    assert result.exit_code == 0, result.stderr


# ---- news -----------------------------------------------------------------------------------


def news_frame() -> pd.DataFrame:
    """Three StockNet-layout rows (published_at UTC to the second, ticker, text)."""
    return pd.DataFrame(
        {
            "published_at": [
                "2014-01-02T14:31:05Z",
                "2014-01-02T15:02:44Z",
                "2014-01-03T09:12:00Z",
            ],
            "ticker": ["AAPL", "AAPL", "KO"],
            "text": ["$AAPL opens lower", "$AAPL iPhone sales in China", "$KO dividend raised"],
        }
    )


def import_news_file(tmp_path: Path, frame: pd.DataFrame, *extra: str, name="n.csv"):
    path, db = write(tmp_path, frame, name)
    args = ("data", "import-news", str(path), "--map", "headline=text", "--db", str(db))
    return invoke(*args, *extra), db


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        (
            ["03/01/2014 10:00"] * 3,
            ["ambiguous day/month order", "%d/%m/%Y %H:%M or %m/%d/%Y %H:%M"],
        ),
        (
            ["2014-01-02T14:31:05Z", "02/01/2014 15:02", "2014-01-03"],
            ["mixed date formats", "data row 2"],
        ),
        (
            ["1388673065", "1388674964", "1388740320"],
            ["'1388673065' in data row 1 is a number", "epoch"],
        ),
        (
            ["2014-01-02T14:31:05Z", "1899-12-31T23:00:00Z", "2014-01-03"],
            ["data row 2 is outside 1900-01-01"],
        ),
        (["2300-01-01T00:00:00Z"] * 3, ["'2300-01-01T00:00:00Z' in data row 1 is outside"]),
    ],
)
def test_bad_news_timestamps_are_refused(tmp_path, values, fragments):
    result, db = import_news_file(tmp_path, news_frame().assign(published_at=values))
    refused(result, db, "news", *fragments)


def test_news_integer_timestamps_and_tickers_from_parquet(tmp_path):
    result, db = import_news_file(
        tmp_path, news_frame().assign(published_at=[20140102, 20140102, 20140103]), name="n.parquet"
    )
    refused(result, db, "news", "'20140102' in data row 1 is a number, not a date")
    result, db = import_news_file(tmp_path, news_frame().assign(ticker=[1, 2, 3]), name="n.parquet")
    refused(result, db, "news", "ticker 1 in data row 1 is a number: tickers must be text")
    result, db = import_news_file(tmp_path, news_frame().assign(ticker=["AAPL", "123", "KO"]))
    refused(result, db, "news", "ticker '123' in data row 2 is a number")
    result, db = import_news_file(tmp_path, news_frame().assign(text=["a", "  ", "c"]))
    refused(result, db, "news", "empty headline in data row 2")


def test_news_with_a_date_format_imports(tmp_path):
    frame = news_frame().assign(
        published_at=["02/01/2014 09:31 -0500", "02/01/2014 15:02 +0000", "03/01/2014 09:12 +0000"]
    )
    result, db = import_news_file(tmp_path, frame, "--date-format", "%d/%m/%Y %H:%M %z")
    assert result.exit_code == 0, result.stderr
    assert rows_in(db, "news") == 3
    days = news_frame().assign(published_at=["02/01/2014", "02/01/2014", "03/01/2014"])
    result, db = import_news_file(tmp_path, days, "--date-format", "%d/%m/%Y")
    assert result.exit_code == 0 and "end of that day" in result.stdout, result.stderr


# ---- fundamentals ---------------------------------------------------------------------------


def filings() -> pd.DataFrame:
    """AAPL rows as in the SEC extract (ticker, period_end, filed_at, metric, value, source)."""
    return pd.DataFrame(
        {
            "ticker": ["AAPL", "AAPL", "AAPL"],
            "period_end": ["2015-12-26", "2015-12-26", "2016-03-26"],
            "filed_at": ["2016-01-27", "2016-01-27", "2016-04-27"],
            "metric": ["net_income_q", "total_assets", "net_income_q"],
            "value": [18_361_000_000.0, 293_284_000_000.0, 10_516_000_000.0],
            "source": ["SEC-XBRL companyfacts"] * 3,
        }
    )


def import_filings(tmp_path: Path, frame: pd.DataFrame, *extra: str, name="f.csv"):
    path, db = write(tmp_path, frame, name)
    return invoke("data", "import-fundamentals", str(path), "--db", str(db), *extra), db


@pytest.mark.parametrize(
    ("change", "fragments", "name"),
    [
        (
            lambda f: f.assign(filed_at=[20160127, 20160127, 20160427]),
            ["filed_at '20160127' in data row 1 is a number"],
            "f.parquet",
        ),
        (
            lambda f: f.assign(period_end=["26/12/2015", "26/12/2015", "26/03/2016"]),
            ["period_end '26/12/2015'", "probably %d/%m/%Y"],
            "f.csv",
        ),
        (
            lambda f: f.assign(filed_at=["2016-01-27", "01/27/2016", "2016-04-27"]),
            ["mixed date formats in filed_at: data row 2"],
            "f.csv",
        ),
        (
            lambda f: f.assign(filed_at=["2016-01-27", "2016-01-27", "2262-04-27"]),
            ["'2262-04-27' in data row 3 is outside"],
            "f.csv",
        ),
        (
            lambda f: f.assign(ticker=[320193, 320193, 320193]),
            ["ticker 320193 in data row 1 is a number"],
            "f.parquet",
        ),
        (
            lambda f: f.assign(value=[True, False, True]),
            ["value is a True/False column"],
            "f.parquet",
        ),
        (
            lambda f: f.assign(value=[1.0, np.inf, 2.0]),
            ["infinite value inf in data row 2"],
            "f.parquet",
        ),
        (
            lambda f: f.assign(value=["1", "-inf", "2"]),
            ["infinite value '-inf' in data row 2"],
            "f.csv",
        ),
        (
            lambda f: f.assign(value=["18,361,000,000", "1", "2"]),
            ["non-numeric value '18,361,000,000'", "no thousands separators"],
            "f.csv",
        ),
        (
            lambda f: f.assign(metric=["net_income_q", " ", "x"]),
            ["empty metric in data row 2"],
            "f.csv",
        ),
    ],
)
def test_bad_fundamentals_are_refused(tmp_path, change, fragments, name):
    result, db = import_filings(tmp_path, change(filings()), name=name)
    refused(result, db, "fundamentals", *fragments)


def test_fundamentals_with_a_date_format_import(tmp_path):
    frame = filings().assign(
        period_end=["26/12/2015", "26/12/2015", "26/03/2016"],
        filed_at=["27/01/2016", "27/01/2016", "27/04/2016"],
    )
    result, db = import_filings(tmp_path, frame, "--date-format", "%d/%m/%Y")
    assert result.exit_code == 0, result.stderr
    with Store(db).connect(read_only=True) as con:
        dates = con.execute("SELECT DISTINCT filed_at FROM fundamentals ORDER BY 1").fetchall()
    assert dates == [(dt.date(2016, 1, 27),), (dt.date(2016, 4, 27),)]


# ---- the parsing functions directly ---------------------------------------------------------


def test_iso_variants_are_read_exactly():
    values = pd.Series(
        ["2016-03-01T09:30:00-05:00", "2016-03-01T14:30Z", "2016-03-01 09:30", "2016-3-2"]
    )
    stamps = parsing.parse_timestamps(values, "x", "published_at")
    assert list(stamps.values) == [
        pd.Timestamp("2016-03-01 14:30"),
        pd.Timestamp("2016-03-01 14:30"),
        pd.Timestamp("2016-03-01 09:30"),
        pd.Timestamp("2016-03-02"),
    ]
    assert list(stamps.aware) == [True, True, False, False]
    assert list(stamps.date_only) == [False, False, False, True]
    # a date is the one written: offsets are dropped, not converted (UTC midnight stays 1 March)
    written = pd.Series(["2016-03-01T23:30:00-05:00", "2016-03-01T00:00:00Z"])
    assert list(parsing.parse_dates(written, "x", "date")) == [pd.Timestamp("2016-03-01")] * 2
    utc_midnight = pd.Series(pd.to_datetime(["2016-03-01"]).tz_localize("UTC"))
    assert parsing.parse_dates(utc_midnight, "x", "date").iloc[0] == pd.Timestamp("2016-03-01")
    with_offset = pd.Series(["01/03/2016 00:00 +0000"])
    dates = parsing.parse_dates(with_offset, "x", "date", date_format="%d/%m/%Y %H:%M %z")
    assert dates.iloc[0] == pd.Timestamp("2016-03-01")


def test_dates_from_python_objects_and_mixed_types():
    dates = parsing.parse_dates(pd.Series([dt.date(2016, 3, 1), dt.date(2016, 3, 2)]), "x", "d")
    assert list(dates) == [pd.Timestamp("2016-03-01"), pd.Timestamp("2016-03-02")]
    formatted = parsing.parse_dates(
        pd.Series([dt.date(2016, 3, 1)]), "x", "d", date_format="%d/%m/%Y"
    )  # a Parquet date column is exact: --date-format is for text
    assert formatted.iloc[0] == pd.Timestamp("2016-03-01")
    with pytest.raises(DataValidationError, match="mixed types in d: data row 2"):
        parsing.parse_dates(pd.Series([dt.date(2016, 3, 1), "2016-03-02"]), "x", "d")
    with pytest.raises(DataValidationError, match="True/False value"):
        parsing.parse_dates(pd.Series(["2016-03-01", True], dtype=object), "x", "d")


def test_numbers_refuse_booleans_held_in_object_columns():
    with pytest.raises(DataValidationError, match="True in data row 2 is a True/False value"):
        parsing.parse_numbers(pd.Series([1.5, True], dtype=object), "x", "close", required=True)
    numbers = parsing.parse_numbers(pd.Series(["1.5", None]), "x", "open", required=False)
    assert numbers.iloc[0] == 1.5 and np.isnan(numbers.iloc[1])
