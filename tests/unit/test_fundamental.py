"""The fundamental tool: factor-implied tilts, ratios from point-in-time filings.

Real data throughout: prices, the S&P 500 index and the style-factor ETFs shipped in skfolio,
and the SEC extract in ../shared/data (skipped when absent), which also stands in for rows
fetched from the SEC (source ``sec``). Each provider gets the poisoned-future check (garbage
after t, in prices and filings, changes nothing at t) and the property that a panel value at t
is bit-identical to a single call on data truncated at t. Fetching from the SEC itself (the
adapter, the CLI, loopback HTTP) is tested in tests/integration/test_sec_fundamentals.py.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quantorch.tools import fundamental
from quantorch.tools.fundamental import TOOL

from quantorch.data.fundamentals import read_fundamentals_file
from quantorch.data.panel import PricePanel
from quantorch.toolkit.spec import MarketData, ToolRequest

FACTOR_NAMES = (
    "value_tilt",
    "quality_tilt",
    "momentum_tilt",
    "size_tilt",
    "low_volatility_tilt",
    "market_beta",
    "factor_r2",
)
STATEMENT_NAMES = TOOL.spec.provider_outputs("file")


# ---- data ------------------------------------------------------------------------------------


def _ns(index) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(index).as_unit("ns").rename("date")


@functools.cache
def _skfolio():
    from skfolio.datasets import load_factors_dataset, load_sp500_dataset, load_sp500_index

    close = load_sp500_dataset().astype("float64")
    close.index = _ns(close.index)
    close.columns = [str(c) for c in close.columns]
    index = load_sp500_index().astype("float64").iloc[:, 0]
    index.index = _ns(index.index)
    factors = load_factors_dataset().astype("float64")
    factors.index = _ns(factors.index)
    factors.columns = [str(c) for c in factors.columns]
    return close, index, factors


@functools.cache
def factor_market() -> MarketData:
    """AAPL, JNJ, XOM, JPM 2012-2018 with the index and the factor ETFs (from 2014)."""
    close, index, factors = _skfolio()
    close = close.loc["2012":"2018", ["AAPL", "JNJ", "XOM", "JPM"]]
    return MarketData(
        prices=PricePanel.from_close(close),
        benchmark=index.reindex(close.index),
        factors=factors.reindex(close.index),
    )


@functools.cache
def _filings_market(sec_file: Path) -> MarketData:
    close, _, _ = _skfolio()
    close = close.loc["2009":"2022"]
    return MarketData(
        prices=PricePanel.from_close(close), fundamentals=read_fundamentals_file(sec_file)
    )


@pytest.fixture
def filings(shared_data) -> MarketData:
    """The 20 stocks 2009-2022 with the SEC filings (point-in-time by filed_at; ../shared/data)."""
    return _filings_market(shared_data("sec_fundamentals.csv.gz"))


_FETCHED: dict[int, MarketData] = {}


def as_fetched(data: MarketData) -> MarketData:
    """The same filings as if ``quantorch data fetch-fundamentals`` had stored them (source
    ``sec``); one copy per data set, so panels cached by identity stay cached."""
    if id(data) not in _FETCHED:
        _FETCHED[id(data)] = dataclasses.replace(
            data, fundamentals=data.fundamentals.assign(source="sec")
        )
    return _FETCHED[id(data)]


@pytest.fixture
def sec_filings(filings) -> MarketData:
    return as_fetched(filings)


def _garbage(shape, rng: np.random.Generator) -> np.ndarray:
    kinds = rng.integers(0, 6, size=shape)
    return np.select(
        [kinds == 0, kinds == 1, kinds == 2, kinds == 3, kinds == 4],
        [
            rng.uniform(1e6, 1e12, size=shape),
            rng.uniform(1e-9, 1e-6, size=shape),
            -rng.uniform(1, 1e6, size=shape),
            np.zeros(shape),
            np.full(shape, np.nan),
        ],
        default=np.inf,
    )


def poison_after(data: MarketData, t: pd.Timestamp, seed: int = 0) -> MarketData:
    """Garbage in every price, benchmark and factor value after t and every filing filed after
    t; plus a later 'restatement' of every filing known at t (garbage, filed after t)."""
    rng = np.random.default_rng(seed)

    def spoil(frame):
        if frame is None:
            return None
        values = frame.to_numpy(dtype=np.float64, copy=True)
        later = frame.index > t
        values[later] = _garbage(values[later].shape, rng)
        return type(frame)(
            values, index=frame.index, **({"columns": frame.columns} if values.ndim == 2 else {})
        )

    prices = PricePanel(
        *(spoil(getattr(data.prices, f)) for f in ("close", "open", "high", "low", "volume"))
    )
    fundamentals = data.fundamentals
    if fundamentals is not None:
        fundamentals = fundamentals.copy()
        later = (pd.to_datetime(fundamentals["filed_at"]) > t).to_numpy()
        fundamentals.loc[later, "value"] = _garbage(int(later.sum()), rng)
        restated = fundamentals[~later].copy()
        restated["source"] = "restated"
        restated["filed_at"] = t + pd.Timedelta(days=1)
        restated["value"] = _garbage(len(restated), rng)
        fundamentals = pd.concat([fundamentals, restated], ignore_index=True)
    return dataclasses.replace(
        data,
        prices=prices,
        benchmark=spoil(data.benchmark),
        factors=spoil(data.factors),
        fundamentals=fundamentals,
    )


def same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def call(data: MarketData, ticker: str, day: str | pd.Timestamp, provider: str):
    asof = pd.Timestamp(day)
    request = ToolRequest(
        tool="fundamental", ticker=ticker, asof=asof.to_pydatetime(), provider=provider
    )
    return TOOL.run(request, data.truncate(asof), TOOL.spec.provider(provider))


def panel(data: MarketData, provider: str, dates=None) -> dict[str, pd.DataFrame]:
    dates = data.prices.dates if dates is None else dates
    return TOOL.panel(data, TOOL.spec.provider(provider), data.prices.tickers, dates)


# ---- spec ------------------------------------------------------------------------------------


def test_providers_priced_cheap_to_dear_and_factor_outputs_unchanged():
    spec = TOOL.spec
    assert spec.default_provider == "factor"
    # the shipped policy checkpoints were trained on these factor features, in this order
    assert spec.provider_outputs("factor") == FACTOR_NAMES
    prices = [spec.provider(p).expected_cost_usd for p in ("factor", "file", "sec")]
    assert prices[0] <= prices[1] < prices[2]
    assert spec.provider("sec").usd_per_call == 0.01  # the price it always had: slots keep it
    # every provider is a local computation: sec reads what fetch-fundamentals stored
    assert not any(spec.provider(p).online for p in ("factor", "file", "sec"))
    assert spec.provider("sec").expected_latency_ms == spec.provider("file").expected_latency_ms
    assert all("factor-implied" in f.description for f in spec.outputs if f.name.endswith("_tilt"))
    assert set(spec.provider_outputs("file")) == set(spec.provider_outputs("sec"))


def test_the_tool_module_does_no_network_io():
    """No tool does network I/O itself: the SEC client lives in quantorch.data.providers.sec."""
    tree = ast.parse(Path(fundamental.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    network = {"httpx", "requests", "urllib", "urllib3", "http", "socket", "aiohttp"}
    assert not imported & network, imported & network
    assert "quantorch.data.providers.sec" in imported  # only for the name of the source
    assert not hasattr(fundamental, "SecClient") and not hasattr(fundamental, "parse_company_facts")


# ---- factor ----------------------------------------------------------------------------------


def test_factor_is_not_covered_before_the_etfs_have_history():
    data = factor_market()
    early = call(data, "AAPL", "2013-06-28", "factor")
    young = call(data, "AAPL", "2014-03-03", "factor")  # ETFs start 2014-01-02: 40 sessions
    later = call(data, "AAPL", "2015-06-30", "factor")
    assert not early.coverage and not young.coverage
    assert "not covered" in early.summary
    assert later.coverage and "factor-implied" in later.summary
    assert all(np.isfinite(later.features[n]) for n in FACTOR_NAMES)
    assert all(np.isnan(later.features[n]) for n in STATEMENT_NAMES)  # not this provider's


def test_factor_recovers_the_tilts_of_a_stock_built_from_the_etfs():
    """A stock whose returns are market + 0.7 (VLUE - market) - 0.4 (USMV - market) + noise."""
    data = factor_market()
    market = data.benchmark.pct_change(fill_method=None)
    etf = data.factors.pct_change(fill_method=None)
    noise = np.random.default_rng(7).normal(0, 0.002, len(market))
    returns = market + 0.7 * (etf["VLUE"] - market) - 0.4 * (etf["USMV"] - market) + noise
    returns = returns.where(returns.index >= pd.Timestamp("2014-01-03"), market)
    close = data.prices.close.assign(SYN=100 * (1 + returns.fillna(0)).cumprod())
    built = dataclasses.replace(data, prices=PricePanel.from_close(close))
    result = call(built, "SYN", "2016-06-30", "factor")
    f = result.features
    assert f["value_tilt"] == pytest.approx(0.7, abs=0.1)
    assert f["low_volatility_tilt"] == pytest.approx(-0.4, abs=0.1)
    assert f["market_beta"] == pytest.approx(1.0, abs=0.05)
    assert abs(f["momentum_tilt"]) < 0.1 and f["factor_r2"] > 0.9


@pytest.mark.parametrize("day", ["2015-08-24", "2016-06-30", "2018-03-29"])
def test_factor_poisoned_future_changes_nothing_at_t(day):
    t = pd.Timestamp(day)
    data = factor_market()
    poisoned = poison_after(data, t, seed=1)
    assert not np.isfinite(poisoned.factors.loc[poisoned.factors.index > t].to_numpy()).all()
    _assert_unchanged_at(data, poisoned, t, "factor")


@settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(pick=st.data())
def test_factor_panel_equals_single_call(pick):
    _assert_panel_equals_single(factor_market(), "factor", pick)


# ---- file: ratios from point-in-time filings ---------------------------------------------------


def test_file_ratios_equal_an_independent_computation_from_what_was_filed(filings):
    data = filings
    t = pd.Timestamp("2016-03-01")
    rows = data.fundamentals
    known = rows[(rows["ticker"] == "AAPL") & (rows["filed_at"] <= t)]
    income = known[known["metric"] == "net_income_q"].sort_values("period_end")
    last4 = income.tail(4)
    latest = last4["period_end"].iloc[-1]
    assert (latest - last4["period_end"].iloc[0]).days in range(250, 290)
    ni_ttm = last4["value"].sum()
    year_ago = (
        income[income["period_end"] <= latest - pd.Timedelta(days=330)].tail(4)["value"].sum()
    )
    assets = known[(known["metric"] == "total_assets") & (known["period_end"] == latest)][
        "value"
    ].item()
    equity = known[(known["metric"] == "equity") & (known["period_end"] == latest)]["value"].item()
    result = call(data, "AAPL", t, "file")
    f = result.features
    assert result.coverage
    assert f["roa_ttm"] == pytest.approx(ni_ttm / assets, rel=1e-12)
    assert f["roe_ttm"] == pytest.approx(ni_ttm / equity, rel=1e-12)
    assert f["leverage"] == pytest.approx(assets / equity, rel=1e-12)
    assert f["net_income_growth"] == pytest.approx((ni_ttm - year_ago) / abs(year_ago), rel=1e-12)
    assert f["filing_age_days"] == (t - known["filed_at"].max()).days
    assert "P/E and P/B levels need share counts" in result.summary
    assert all(np.isnan(f[n]) for n in FACTOR_NAMES)


def test_file_cash_flows_annualise_the_quarters_reported(filings):
    """The SEC extract reports operating cash flow only for fiscal Q1 and Q4: two quarters in
    the trailing year, annualised (x 2)."""
    data = filings
    t = pd.Timestamp("2016-03-01")
    rows = data.fundamentals
    known = rows[(rows["ticker"] == "KO") & (rows["filed_at"] <= t)]
    ocf = known[known["metric"] == "operating_cf_q"].sort_values("period_end")
    latest = ocf["period_end"].iloc[-1]
    trailing = ocf[ocf["period_end"] > latest - pd.Timedelta(days=300)]
    assert len(trailing) == 2
    assets = known[(known["metric"] == "total_assets") & (known["period_end"] == latest)][
        "value"
    ].item()
    f = call(data, "KO", t, "file").features
    assert f["cfo_to_assets"] == pytest.approx(trailing["value"].sum() * 2 / assets, rel=1e-12)


def test_file_uses_a_filing_only_from_its_filed_at_date(filings):
    data = filings
    rows = data.fundamentals
    quarter = rows[
        (rows["ticker"] == "AAPL")
        & (rows["metric"] == "net_income_q")
        & (rows["period_end"] == pd.Timestamp("2015-12-26"))
    ]
    filed = quarter["filed_at"].item()
    before = data.prices.dates[data.prices.dates < filed][-1]
    at = call(data, "AAPL", filed, "file").features
    day_before = call(data, "AAPL", before, "file").features
    assert at["filing_age_days"] == 0 and day_before["filing_age_days"] > 60
    assert at["roa_ttm"] != day_before["roa_ttm"]
    # the day before, the result is the same as if that filing did not exist at all
    without = dataclasses.replace(data, fundamentals=rows[rows["filed_at"] != filed])
    same_day_before = call(without, "AAPL", before, "file").features
    assert all(same(day_before[n], same_day_before[n]) for n in STATEMENT_NAMES)


def test_file_without_filings_is_not_covered(filings):
    result = call(filings, "RRC", "2016-03-01", "file")  # RRC is not in the extract
    assert not result.coverage and "not covered" in result.summary
    assert all(np.isnan(v) for v in result.features.values())


@pytest.mark.parametrize("day", ["2012-05-15", "2016-03-01", "2020-03-16"])
def test_file_poisoned_future_changes_nothing_at_t(day, filings):
    t = pd.Timestamp(day)
    data = filings
    poisoned = poison_after(data, t, seed=2)
    assert (poisoned.fundamentals["source"] == "restated").any()
    _assert_unchanged_at(data, poisoned, t, "file")


@settings(
    max_examples=15, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(pick=st.data())
def test_file_panel_equals_single_call(pick, filings):
    _assert_panel_equals_single(filings, "file", pick)


# ---- sec: the same ratios from the rows fetched from the SEC ---------------------------------


def test_sec_ratios_are_the_file_ratios_of_the_same_filings(filings, sec_filings):
    for ticker, day in (("AAPL", "2016-03-01"), ("KO", "2016-03-01"), ("XOM", "2020-03-16")):
        from_file = call(filings, ticker, day, "file")
        from_sec = call(sec_filings, ticker, day, "sec")
        assert from_sec.coverage and "SEC XBRL filings" in from_sec.summary
        assert from_sec.cost_usd == TOOL.spec.provider("sec").usd_per_call
        for name in STATEMENT_NAMES:
            assert same(from_file.features[name], from_sec.features[name]), (ticker, name)


def test_each_statement_provider_reads_only_its_own_rows(filings, sec_filings):
    """``file`` reads the imported rows, ``sec`` the fetched ones: storing both keeps them
    apart (a ticker can have an imported extract and the SEC's facts side by side)."""
    imported = filings.fundamentals
    fetched = imported[imported["ticker"] == "AAPL"].assign(source="sec")
    both = dataclasses.replace(filings, fundamentals=pd.concat([imported, fetched]))
    day = "2016-03-01"

    def features(data, ticker, provider):
        return call(data, ticker, day, provider).features

    fetched_only, alone = features(both, "AAPL", "sec"), features(sec_filings, "AAPL", "sec")
    assert all(same(fetched_only[n], alone[n]) for n in STATEMENT_NAMES)
    for ticker in ("AAPL", "KO"):
        mixed, alone = features(both, ticker, "file"), features(filings, ticker, "file")
        assert all(same(mixed[n], alone[n]) for n in STATEMENT_NAMES), ticker
    sec_ko = call(both, "KO", day, "sec")  # KO was imported, not fetched
    assert not sec_ko.coverage
    hint = "no SEC filings stored for KO: run quantorch data fetch-fundamentals --tickers KO"
    assert hint in sec_ko.summary
    assert not call(sec_filings, "AAPL", day, "file").coverage  # nothing imported


def test_sec_without_stored_filings_says_how_to_fetch_them(filings):
    nothing = dataclasses.replace(filings, fundamentals=None)
    result = call(nothing, "AAPL", "2016-03-01", "sec")
    assert not result.coverage and all(np.isnan(v) for v in result.features.values())
    hint = "no SEC filings stored for AAPL: run quantorch data fetch-fundamentals --tickers AAPL"
    assert hint in result.summary
    early = call(as_fetched(filings), "AAPL", "2009-03-02", "sec")  # before any XBRL filing
    assert not early.coverage and hint in early.summary


def _poison_fetched(data: MarketData, t: pd.Timestamp, seed: int) -> MarketData:
    """``poison_after``, with the later 'restatements' under the sec source too (a second
    fetch keeps the first-filed row in the table, but the tool must not depend on that)."""
    poisoned = poison_after(data, t, seed=seed)
    rows = poisoned.fundamentals.assign(source="sec")
    return dataclasses.replace(poisoned, fundamentals=rows)


@pytest.mark.parametrize("day", ["2012-05-15", "2016-03-01", "2020-03-16"])
def test_sec_poisoned_future_changes_nothing_at_t(day, sec_filings):
    t = pd.Timestamp(day)
    poisoned = _poison_fetched(sec_filings, t, seed=3)
    later = poisoned.fundamentals["filed_at"] > t
    assert later.any() and (poisoned.fundamentals["source"] == "sec").all()
    _assert_unchanged_at(sec_filings, poisoned, t, "sec")


@settings(
    max_examples=10, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(pick=st.data())
def test_sec_panel_equals_single_call(pick, sec_filings):
    _assert_panel_equals_single(sec_filings, "sec", pick)


# ---- shared checks -------------------------------------------------------------------------------


def _assert_unchanged_at(
    data: MarketData, poisoned: MarketData, t: pd.Timestamp, provider: str
) -> None:
    names = TOOL.spec.provider_outputs(provider)
    dates = data.prices.dates
    clean, spoiled = panel(data, provider), panel(poisoned, provider)
    for name in names:
        before, after = clean[name].loc[:t].to_numpy(), spoiled[name].loc[:t].to_numpy()
        assert ((before == after) | (np.isnan(before) & np.isnan(after))).all(), f"{name} changed"
    day = dates[dates <= t][-1]
    computed = [n for n in names if np.isfinite(clean[n].loc[day].to_numpy()).any()]
    assert len(computed) >= len(names) // 2, f"too little computed at t: {computed}"
    for ticker in data.prices.tickers:
        honest, fooled = call(data, ticker, t, provider), call(poisoned, ticker, t, provider)
        for name in names:
            assert same(honest.features[name], fooled.features[name]), (ticker, name)
            assert same(honest.features[name], clean[name].at[day, ticker]), (ticker, name)


def _assert_panel_equals_single(data: MarketData, provider: str, pick) -> None:
    dates = data.prices.dates
    asof = dates[pick.draw(st.integers(0, len(dates) - 1), label="row")]
    ticker = pick.draw(st.sampled_from(data.prices.tickers), label="ticker")
    frames = _cached_panel(id(data), provider, data)
    result = call(data, ticker, asof, provider)
    for name in TOOL.spec.provider_outputs(provider):
        assert same(result.features[name], frames[name].at[asof, ticker]), (name, asof, ticker)


_PANELS: dict = {}


def _cached_panel(key: int, provider: str, data: MarketData) -> dict[str, pd.DataFrame]:
    if (key, provider) not in _PANELS:
        _PANELS.clear()
        _PANELS[(key, provider)] = panel(data, provider)
    return _PANELS[(key, provider)]


def test_decision_dates_between_sessions_and_tz_aware_asof():
    """An aware asof is read in UTC; the features are those of the last session before it."""
    data = factor_market()
    friday = call(data, "AAPL", "2016-07-01", "factor")
    aware = pd.Timestamp("2016-07-02 12:00", tz="America/New_York")
    request = ToolRequest(
        tool="fundamental", ticker="AAPL", asof=aware.to_pydatetime(), provider="factor"
    )
    saturday = TOOL.run(request, data.truncate(aware), TOOL.spec.provider("factor"))
    assert saturday.features == friday.features or all(
        same(saturday.features[n], friday.features[n]) for n in FACTOR_NAMES
    )
    assert dt.datetime(2016, 7, 2) <= saturday.asof.replace(tzinfo=None)
