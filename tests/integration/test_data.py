import datetime as dt

import pandas as pd
import pytest

from quantorch.data.providers.sample import SampleProvider
from quantorch.data.providers.yfinance import YFinanceProvider
from quantorch.data.service import (
    coverage_table,
    ensure_prices,
    import_prices,
    load_panel,
    read_price_file,
    resolve_window,
)
from quantorch.errors import (
    DataSourceUnavailableError,
    DataValidationError,
    DateRangeError,
    UnknownTickerError,
)
from quantorch.store import Store


class CountingProvider:
    """Wraps a provider and records each request."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.whole_history = inner.whole_history
        self.calls = []

    def available(self):
        return self.inner.available()

    def fetch(self, tickers, start, end):
        self.calls.append((tuple(tickers), start, end))
        return self.inner.fetch(tickers, start, end)


def test_sample_provider_ships_real_prices():
    spans = SampleProvider().available()
    assert spans["AAPL"] == (dt.date(1990, 1, 2), dt.date(2022, 12, 28))
    assert spans["SP500"][1] == dt.date(2022, 12, 28)
    assert spans["MTUM"][0] == dt.date(2014, 1, 2)
    assert spans["^GSPC"] == (dt.date(1999, 1, 4), dt.date(2018, 12, 31))
    bars = SampleProvider().fetch(["^GSPC"], dt.date(2010, 1, 4), dt.date(2010, 1, 8))
    assert len(bars) == 5 and bars["open"].notna().all() and bars["volume"].gt(0).all()


def test_fetch_is_incremental(tmp_path):
    store = Store(tmp_path / "q.duckdb")
    provider = CountingProvider(SampleProvider())
    first = ensure_prices(store, "sample", ["AAPL", "MSFT"], dt.date(2020, 1, 1), dt.date(2020, 6, 30), provider=provider)
    assert len(provider.calls) == 1 and first.rows_written > 0
    again = ensure_prices(store, "sample", ["AAPL", "MSFT"], dt.date(2020, 2, 1), dt.date(2020, 3, 1), provider=provider)
    assert again.cached and len(provider.calls) == 1
    more = ensure_prices(store, "sample", ["AAPL", "KO"], dt.date(2020, 1, 1), dt.date(2020, 6, 30), provider=provider)
    assert len(provider.calls) == 2 and provider.calls[1][0] == ("KO",)
    assert not more.cached


class FakeYahoo:
    """Stands in for yfinance.download: answers from the real sample data."""

    def __init__(self, fail_first=0, empty=()):
        self.calls = []
        self.fail_first = fail_first
        self.empty = set(empty)

    def __call__(self, tickers, start, end, **kwargs):
        from yfinance.exceptions import YFRateLimitError

        self.calls.append((tuple(tickers), start, end))
        if len(self.calls) <= self.fail_first:
            raise YFRateLimitError()
        bars = SampleProvider().fetch(["^GSPC"], pd.Timestamp(start).date(), pd.Timestamp(end).date() - dt.timedelta(days=1))
        frames = {}
        for ticker in tickers:
            one = bars.set_index("date")[["open", "high", "low", "close", "adj_close", "volume"]]
            one.columns = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
            if ticker in self.empty:
                one = one.iloc[0:0]
            frames[ticker] = one
        return pd.concat(frames, axis=1)


def test_yfinance_incremental_and_retry(tmp_path):
    store = Store(tmp_path / "q.duckdb")
    fake = FakeYahoo(fail_first=1)
    provider = YFinanceProvider(backoff=0.01, download=fake)
    ensure_prices(store, "yfinance", ["SPY"], dt.date(2010, 1, 1), dt.date(2010, 3, 31), provider=provider)
    assert len(fake.calls) == 2  # one rate-limited, one retried
    ensure_prices(store, "yfinance", ["SPY"], dt.date(2010, 1, 1), dt.date(2010, 3, 31), provider=provider)
    assert len(fake.calls) == 2  # nothing new asked
    ensure_prices(store, "yfinance", ["SPY"], dt.date(2010, 1, 1), dt.date(2010, 4, 30), provider=provider)
    assert fake.calls[-1][1] == "2010-04-01"
    panel = load_panel(store, "yfinance", ["SPY"], dt.date(2010, 1, 1), dt.date(2010, 4, 30))
    assert panel.close["SPY"].notna().sum() == len(panel.dates)
    assert panel.has_opens()["SPY"]


def test_yfinance_silent_empty_frame_is_an_error(tmp_path):
    store = Store(tmp_path / "q.duckdb")
    provider = YFinanceProvider(backoff=0.01, download=FakeYahoo(empty={"APPL"}))
    with pytest.raises(DataSourceUnavailableError, match="APPL"):
        ensure_prices(store, "yfinance", ["SPY", "APPL"], dt.date(2010, 1, 1), dt.date(2010, 2, 1), provider=provider)
    assert coverage_table(store).empty  # nothing half-written


def test_yfinance_rate_limit_gives_up_clearly(tmp_path):
    provider = YFinanceProvider(retries=2, backoff=0.01, download=FakeYahoo(fail_first=5))
    with pytest.raises(DataSourceUnavailableError, match="rate-limiting"):
        provider.fetch(["SPY"], dt.date(2010, 1, 1), dt.date(2010, 2, 1))


def test_unknown_ticker_suggests_the_closest(tmp_path):
    with pytest.raises(UnknownTickerError, match=r"'APPL'.*did you mean AAPL\?"):
        ensure_prices(Store(tmp_path / "q.duckdb"), "sample", ["APPL"], dt.date(2020, 1, 1), dt.date(2020, 2, 1))


def test_window_checks():
    spans = SampleProvider().available()
    with pytest.raises(DateRangeError, match="after end"):
        resolve_window(spans, ["AAPL"], dt.date(2021, 1, 1), dt.date(2020, 1, 1), "sample")
    with pytest.raises(DateRangeError, match="1990-01-02 to 2022-12-28"):
        resolve_window(spans, ["AAPL"], dt.date(2030, 1, 1), None, "sample")
    assert resolve_window(spans, ["AAPL"], dt.date(2020, 1, 1), None, "sample") == (
        dt.date(2020, 1, 1), dt.date(2022, 12, 28))


def _good_rows() -> pd.DataFrame:
    bars = SampleProvider().fetch(["^GSPC"], dt.date(2015, 1, 1), dt.date(2015, 3, 31))
    return bars.assign(ticker="IDX", date=bars["date"].dt.strftime("%Y-%m-%d"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["adj_close"]), "missing column.*adj_close.*--adjusted"),
        (lambda f: f.drop(columns=["date"]), "missing column.*date"),
        (lambda f: f.assign(date=f["date"].where(f.index != 3, "2015-13-45")), "unparseable date '2015-13-45' in data row 4"),
        (lambda f: pd.concat([f, f.iloc[[5]]]), "duplicate rows for IDX"),
        (lambda f: f.assign(close=f["close"].where(f.index != 2, 0.0)), "non-positive close"),
        (lambda f: f.assign(low=f["low"].where(f.index != 2, -5.0)), "non-positive low"),
        (lambda f: f.assign(close=f["close"].where(f.index != 2, "abc")), "non-numeric close 'abc'"),
    ],
)
def test_import_validation_writes_nothing(tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(_good_rows()).to_csv(path, index=False)
    db = tmp_path / "q.duckdb"
    with pytest.raises(DataValidationError, match=message):
        import_prices(Store(db), read_price_file(path))
    assert not db.exists() or coverage_table(Store(db)).empty


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_import_roundtrip(tmp_path, suffix):
    rows = _good_rows()
    path = tmp_path / f"prices{suffix}"
    rows.to_csv(path, index=False) if suffix == ".csv" else rows.to_parquet(path)
    store = Store(tmp_path / "q.duckdb")
    assert import_prices(store, read_price_file(path)) == len(rows)
    table = coverage_table(store)
    assert table.loc[0, "ticker"] == "IDX" and table.loc[0, "rows"] == len(rows)
    panel = load_panel(store, "file", ["IDX"], dt.date(2015, 1, 1), dt.date(2015, 3, 31))
    assert panel.close["IDX"].notna().sum() == len(rows)
    # ensure_prices on the file source asks nothing and knows the ticker
    assert ensure_prices(store, "file", ["IDX"], dt.date(2015, 1, 1), dt.date(2015, 3, 31)).cached
    with pytest.raises(UnknownTickerError, match="quantorch data import"):
        ensure_prices(store, "file", ["IDY"], dt.date(2015, 1, 1), dt.date(2015, 3, 31))


def test_close_only_file_with_adjusted_flag(tmp_path):
    path = tmp_path / "close.csv"
    _good_rows()[["date", "ticker", "close"]].to_csv(path, index=False)
    with pytest.raises(DataValidationError):
        read_price_file(path)
    frame = read_price_file(path, adjusted=True)
    assert (frame["adj_close"] == frame["close"]).all()
