"""`quantorch data import-news` and `import-fundamentals`: real files, bad files, idempotence.

Reads the real StockNet tweets and SEC extract through the ``shared_data`` fixture (skipped
when absent); bad files are built from them. The commands are registered on a Typer app built
here, as main.py does with ``news_cmd.register(data_app)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from quantorch.cli import news_cmd
from quantorch.data.fundamentals import read_fundamentals_file
from quantorch.data.news import load_news, news_id, read_news_file
from quantorch.store import Store


@pytest.fixture(scope="module")
def tweets_file(shared_data) -> Path:
    return shared_data("stocknet_tweets.csv.gz")


@pytest.fixture(scope="module")
def sec_file(shared_data) -> Path:
    return shared_data("sec_fundamentals.csv.gz")


def _app() -> typer.Typer:
    app = typer.Typer()
    data_app = typer.Typer()
    app.add_typer(data_app, name="data")
    news_cmd.register(data_app)
    return app


APP = _app()
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(APP, list(args), catch_exceptions=False)


def count(db: Path, table: str) -> int:
    store = Store(db)
    with store.connect(read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


@pytest.fixture(scope="module")
def tweets(tweets_file: Path) -> pd.DataFrame:
    return pd.read_csv(tweets_file, dtype=str)


def test_import_the_real_tweets_with_a_column_mapping_and_again(tmp_path, tweets_file):
    db = tmp_path / "q.duckdb"
    first = invoke(
        "data", "import-news", str(tweets_file), "--map", "headline=text", "--db", str(db)
    )
    assert first.exit_code == 0, first.stderr
    assert "imported 44,481 new items (0 already stored) for 16 ticker(s)" in first.stdout
    again = invoke(
        "data", "import-news", str(tweets_file), "--map", "headline=text", "--db", str(db), "--json"
    )
    report = json.loads(again.stdout)
    assert report["inserted"] == 0 and report["unchanged"] == 44_481 and report["notes"] == []
    assert count(db, "news") == 44_481
    news = load_news(Store(db), ["AAPL"])
    assert len(news) == 20_770 and news["published_at"].min() == pd.Timestamp("2013-12-31 23:10:08")
    first_row = news.iloc[0]
    assert first_row["source"] == "twitter" and first_row["headline"].startswith(
        "RT @philstockworld"
    )


def test_without_a_mapping_the_error_names_the_columns_and_the_fix(tmp_path, tweets_file):
    result = invoke("data", "import-news", str(tweets_file), "--db", str(tmp_path / "q.duckdb"))
    assert result.exit_code == 2
    assert "missing column(s) headline" in result.stderr and "text" in result.stderr
    assert "--map headline=" in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="ticker"), "missing column(s) ticker"),
        (
            lambda f: f.assign(published_at=f["published_at"].where(f.index != 6, "last tuesday")),
            "unparseable published_at 'last tuesday' in data row 7",
        ),
        (
            lambda f: f.assign(text=f["text"].where(f.index != 3, "   ")),
            "empty headline in data row 4",
        ),
        (
            lambda f: pd.concat([f, f.iloc[[2]]], ignore_index=True),
            "data row 11 repeats data row 3",
        ),
        (
            lambda f: f.assign(ticker=f["ticker"].where(f.index != 0, "")),
            "empty ticker in data row 1",
        ),
    ],
)
def test_bad_news_files_write_nothing(tmp_path, tweets, change, message):
    db = tmp_path / "q.duckdb"
    bad = tmp_path / "bad.csv"
    change(tweets.iloc[:10].reset_index(drop=True)).to_csv(bad, index=False)
    result = invoke("data", "import-news", str(bad), "--map", "headline=text", "--db", str(db))
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr
    assert not db.exists() or count(db, "news") == 0


def test_naive_times_are_utc_unless_a_time_zone_is_given(tmp_path, tweets):
    sample = tweets.iloc[:3][["published_at", "ticker", "text"]].copy()
    sample["published_at"] = ["2016-03-01 09:30", "2016-03-01 15:59:59", "2016-03-02"]
    path = tmp_path / "local.parquet"
    sample.rename(columns={"text": "headline"}).to_parquet(path)
    db = tmp_path / "q.duckdb"
    as_utc = invoke("data", "import-news", str(path), "--db", str(db))
    assert (
        as_utc.exit_code == 0
        and "taken as UTC" in as_utc.stdout
        and "end of that day" in as_utc.stdout
    )
    frame, _ = read_news_file(path, timezone="America/New_York")
    assert list(frame["published_at"]) == [
        pd.Timestamp("2016-03-01 14:30"),
        pd.Timestamp("2016-03-01 20:59:59"),
        pd.Timestamp("2016-03-03 04:59:59.999999"),
    ]
    local = invoke(
        "data",
        "import-news",
        str(path),
        "--timezone",
        "America/New_York",
        "--source",
        "desk",
        "--db",
        str(db),
    )
    assert local.exit_code == 0 and "taken as UTC" not in local.stdout
    assert "3 new items" in local.stdout  # other times and source: other items
    assert count(db, "news") == 6
    bad_zone = invoke("data", "import-news", str(path), "--timezone", "New York", "--db", str(db))
    assert bad_zone.exit_code == 2 and "unknown time zone 'New York'" in bad_zone.stderr


def test_offsets_are_converted_and_ids_are_stable(tmp_path):
    frame = pd.DataFrame(
        {
            "published_at": ["2016-03-01T09:30:00-05:00", "2016-03-01T14:30:00Z"],
            "ticker": ["ko", "KO"],
            "headline": ["Coke A", "Coke B"],
        }
    )
    path = tmp_path / "n.csv"
    frame.to_csv(path, index=False)
    rows, notes = read_news_file(path)
    assert notes == [] and (rows["published_at"] == pd.Timestamp("2016-03-01 14:30")).all()
    assert set(rows["ticker"]) == {"KO"} and set(rows["source"]) == {"file"}
    assert rows["news_id"].iloc[0] == news_id(
        "KO", pd.Timestamp("2016-03-01 14:30"), "Coke A", "file"
    )


def test_import_the_real_sec_fundamentals_and_again(tmp_path, sec_file):
    db = tmp_path / "q.duckdb"
    first = invoke("data", "import-fundamentals", str(sec_file), "--db", str(db))
    assert first.exit_code == 0, first.stderr
    assert "imported 4,110 new rows (0 already stored) for 19 ticker(s)" in first.stdout
    again = json.loads(
        invoke("data", "import-fundamentals", str(sec_file), "--db", str(db), "--json").stdout
    )
    assert again["inserted"] == 0 and again["unchanged"] == 4110
    store = Store(db)
    with store.connect(read_only=True) as con:
        aapl = con.execute(
            "SELECT filed_at, value FROM fundamentals WHERE ticker = 'AAPL' AND metric = 'net_income_q' "
            "AND period_end = DATE '2015-12-26'"
        ).fetchall()
    assert aapl == [(pd.Timestamp("2016-01-27").date(), 18_361_000_000.0)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="filed_at"), "missing column(s) filed_at"),
        (
            lambda f: f.assign(filed_at=f["filed_at"].where(f.index != 4, "soon")),
            "unparseable filed_at 'soon' in data row 5",
        ),
        (
            lambda f: f.assign(value=f["value"].where(f.index != 2, "n/a")),
            "non-numeric value 'n/a' in data row 3",
        ),
        (
            lambda f: f.assign(filed_at=f["filed_at"].where(f.index != 1, "2000-01-01")),
            "data row 2 was filed (2000-01-01) before",
        ),
        (
            lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True),
            "data row 9 repeats data row 1",
        ),
    ],
)
def test_bad_fundamentals_files_write_nothing(tmp_path, sec_file, change, message):
    raw = pd.read_csv(sec_file, dtype=str).iloc[:8].reset_index(drop=True)
    bad = tmp_path / "bad.csv"
    change(raw).to_csv(bad, index=False)
    db = tmp_path / "q.duckdb"
    result = invoke("data", "import-fundamentals", str(bad), "--db", str(db))
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr
    assert not db.exists() or count(db, "fundamentals") == 0


def test_a_changed_value_replaces_the_stored_row(tmp_path, sec_file):
    db = tmp_path / "q.duckdb"
    rows = read_fundamentals_file(sec_file)
    path = tmp_path / "f.parquet"
    rows.iloc[:20].to_parquet(path)
    assert invoke("data", "import-fundamentals", str(path), "--db", str(db)).exit_code == 0
    changed = rows.iloc[:20].copy()
    changed.loc[0, "value"] += 1.0
    changed.to_parquet(path)
    result = invoke("data", "import-fundamentals", str(path), "--db", str(db))
    assert "0 new rows, 1 replaced (19 already stored)" in result.stdout
    assert count(db, "fundamentals") == 20


def test_missing_file_and_bad_mapping_are_one_line_errors(tmp_path):
    db = str(tmp_path / "q.duckdb")
    missing = invoke("data", "import-news", str(tmp_path / "nope.csv"), "--db", db)
    assert missing.exit_code == 2 and "not found" in missing.stderr
    path = tmp_path / "n.csv"
    pd.DataFrame({"published_at": ["2016-03-01T14:30Z"], "ticker": ["KO"], "title": ["x"]}).to_csv(
        path, index=False
    )
    for mapping, message in [
        ("headline", "use COLUMN=FILE_COLUMN"),
        ("title=headline", "bad --map target 'title'"),
        ("headline=txt", "the file has no column 'txt'"),
    ]:
        result = invoke("data", "import-news", str(path), "--map", mapping, "--db", db)
        assert result.exit_code == 2 and message in result.stderr, (mapping, result.stderr)
    assert (
        invoke("data", "import-news", str(path), "--map", "headline=title", "--db", db).exit_code
        == 0
    )
