"""The fundamental tool: factor-implied tilts, ratios from point-in-time filings, SEC facts.

Real data throughout: prices, the S&P 500 index and the style-factor ETFs shipped in skfolio,
and the SEC extract in ../shared/data (skipped when absent). Each provider gets the poisoned-
future check (garbage after t, in prices and filings, changes nothing at t) and the property
that a panel value at t is bit-identical to a single call on data truncated at t.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quantorch.tools.fundamental import (
    TOOL,
    SecClient,
    parse_company_facts,
    statement_features,
)

from quantorch.data.fundamentals import read_fundamentals_file
from quantorch.data.panel import PricePanel
from quantorch.errors import ConfigError, DataSourceUnavailableError, UnknownTickerError
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
    assert spec.provider("sec").online and spec.provider("sec").expected_latency_ms >= 500
    assert not spec.provider("factor").online and not spec.provider("file").online
    assert all("factor-implied" in f.description for f in spec.outputs if f.name.endswith("_tilt"))
    assert set(spec.provider_outputs("file")) == set(spec.provider_outputs("sec"))


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


# ---- sec: XBRL company facts -------------------------------------------------------------------

# Apple's fiscal quarters FY2015-FY2016: net income, assets, equity and filing dates as in the
# SEC extract; the operating cash-flow facts are year-to-date only, as in real 10-Qs (their
# values are illustrative).
_QUARTERS = [  # (start, end, filed, net income)
    ("2014-09-28", "2014-12-27", "2015-01-28", 18_024_000_000),
    ("2014-12-28", "2015-03-28", "2015-04-28", 13_569_000_000),
    ("2015-03-29", "2015-06-27", "2015-07-22", 10_677_000_000),
    ("2015-06-28", "2015-09-26", "2015-10-28", 11_124_000_000),
    ("2015-09-27", "2015-12-26", "2016-01-27", 18_361_000_000),
    ("2015-12-27", "2016-03-26", "2016-04-27", 10_516_000_000),
    ("2016-03-27", "2016-06-25", "2016-07-27", 7_796_000_000),
    ("2016-06-26", "2016-09-24", "2016-10-26", 9_014_000_000),
]
_OCF_YTD = [
    33_722_000_000,
    52_500_000_000,
    67_000_000_000,
    81_266_000_000,
    27_463_000_000,
    39_000_000_000,
    55_000_000_000,
    65_824_000_000,
]
_ASSETS = [
    261_894_000_000,
    261_194_000_000,
    273_151_000_000,
    290_479_000_000,
    293_284_000_000,
    305_277_000_000,
    305_602_000_000,
    321_686_000_000,
]
_EQUITY = [
    123_328_000_000,
    129_006_000_000,
    125_677_000_000,
    119_355_000_000,
    128_267_000_000,
    130_457_000_000,
    126_541_000_000,
    128_249_000_000,
]


def _fact(start, end, value, filed, form, fy, fp):
    fact = {
        "end": end,
        "val": value,
        "accn": f"0000320193-{filed}",
        "fy": fy,
        "fp": fp,
        "form": form,
        "filed": filed,
    }
    if start is not None:
        fact = {"start": start, **fact}
    return fact


def companyfacts(poison_after_day: str | None = None) -> dict:
    """A companyfacts-shaped document: 3-month and year-to-date 10-Q facts, annual 10-K facts,
    balance-sheet instants, and (like the real API) prior-period comparatives re-reported a
    year later with a restated value, which point-in-time use must ignore."""
    income, cash, assets, equity = [], [], [], []
    for year in range(2):
        quarters = _QUARTERS[4 * year : 4 * year + 4]
        fy, fy_start = 2015 + year, quarters[0][0]
        ytd = 0
        for q, (start, end, filed, value) in enumerate(quarters):
            ytd += value
            form, fp = ("10-K", "FY") if q == 3 else ("10-Q", f"Q{q + 1}")
            if q < 3:
                income.append(_fact(start, end, value, filed, form, fy, fp))
            if q > 0:
                income.append(_fact(fy_start, end, ytd, filed, form, fy, fp))
            cash.append(_fact(fy_start, end, _OCF_YTD[4 * year + q], filed, form, fy, fp))
            assets.append(_fact(None, end, _ASSETS[4 * year + q], filed, form, fy, fp))
            equity.append(_fact(None, end, _EQUITY[4 * year + q], filed, form, fy, fp))
            if year == 0:  # the comparative in next year's filing, restated
                later = _QUARTERS[4 + q][2]
                if q < 3:
                    income.append(_fact(start, end, round(value * 1.05), later, form, fy + 1, fp))
                assets.append(_fact(None, end, _ASSETS[q] + 1_000_000_000, later, form, fy + 1, fp))
    income.append(
        {**_fact("2014-09-28", "2014-12-27", 1, "2015-02-01", "8-K", 2015, "Q1")}
    )  # not a 10-Q/K
    if poison_after_day is not None:
        cut = poison_after_day
        rng = np.random.default_rng(5)
        for facts in (income, cash, assets, equity):
            for fact in facts:
                if fact["filed"] > cut:
                    fact["val"] = float(rng.choice([1e15, -1e15, 0.0, 3.0]))
            facts.append({**facts[0], "val": -7e14, "filed": "2016-12-01"})  # a late restatement
    usd = lambda facts: {"units": {"USD": facts}}
    return {
        "cik": 320193,
        "entityName": "Apple Inc.",
        "facts": {
            "dei": {"EntityCommonStockSharesOutstanding": {"units": {"shares": []}}},
            "us-gaap": {
                "NetIncomeLoss": usd(income),
                "NetCashProvidedByUsedInOperatingActivities": usd(cash),
                "Assets": usd(assets),
                "StockholdersEquity": usd(equity),
            },
        },
    }


def test_parse_company_facts_gives_first_filed_standalone_quarters():
    rows = parse_company_facts(companyfacts(), "AAPL")
    income = rows[rows["metric"] == "net_income_q"].set_index("period_end")
    assert len(income) == 8
    for start, end, filed, value in _QUARTERS:
        row = income.loc[pd.Timestamp(end)]
        assert row["value"] == value  # Q4 = annual - nine months, restatements ignored
        assert row["filed_at"] == pd.Timestamp(filed)
    cash = rows[rows["metric"] == "operating_cf_q"].set_index("period_end")["value"]
    expected = np.diff([0, *_OCF_YTD[:4]]).tolist() + np.diff([0, *_OCF_YTD[4:]]).tolist()
    assert cash.tolist() == expected
    assets = rows[rows["metric"] == "total_assets"].set_index("period_end")["value"]
    assert assets.loc[pd.Timestamp("2014-12-27")] == _ASSETS[0]  # first filed, not the restated
    assert set(rows["source"]) == {"sec"}


class _SecHandler(BaseHTTPRequestHandler):
    documents: ClassVar[dict[str, bytes]] = {}
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self):
        type(self).seen.append(
            {"path": self.path, "user-agent": self.headers.get("User-Agent", "")}
        )
        body = self.documents.get(self.path)
        if self.path.endswith("forbidden.json"):
            self.send_response(403)
            self.end_headers()
            return
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def sec_server(monkeypatch):
    _SecHandler.documents = {
        "/api/xbrl/companyfacts/CIK0000320193.json": json.dumps(companyfacts()).encode(),
    }
    _SecHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SecHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("QUANTORCH_SEC_BASE_URL", base)
    monkeypatch.setenv("QUANTORCH_SEC_USER_AGENT", "quantorch tests tests@example.com")
    SecClient.clear_cache()
    yield base
    server.shutdown()
    server.server_close()
    SecClient.clear_cache()


def _aapl_market() -> MarketData:
    close, _, _ = _skfolio()
    return MarketData(prices=PricePanel.from_close(close.loc["2014":"2017", ["AAPL"]]))


def test_sec_over_loopback_http_with_a_user_agent(sec_server):
    data = _aapl_market()
    result = call(data, "AAPL", "2016-03-01", "sec")
    assert result.coverage and result.cost_usd == TOOL.spec.provider("sec").usd_per_call
    assert "SEC XBRL" in result.summary
    expected = statement_features(
        parse_company_facts(companyfacts(), "AAPL"), data.prices.close.loc[:"2016-03-01"]
    )
    for name in STATEMENT_NAMES:
        assert same(result.features[name], expected[name]["AAPL"].iloc[-1]), name
    assert result.features["roa_ttm"] == pytest.approx(
        sum(q[3] for q in _QUARTERS[1:5]) / _ASSETS[4]
    )
    call(data, "AAPL", "2016-06-01", "sec")  # served from the in-process cache
    assert len(_SecHandler.seen) == 1
    assert _SecHandler.seen[0]["user-agent"] == "quantorch tests tests@example.com"


def test_sec_errors_are_clear(sec_server, monkeypatch):
    client = SecClient()
    with pytest.raises(UnknownTickerError, match="no XBRL company facts"):
        client.company_facts("MSFT")  # 404 from the server
    forbidden = SecClient(base_url=sec_server)
    with pytest.raises(ConfigError, match="User-Agent"):
        forbidden._get_json(f"{sec_server}/forbidden.json", "test")
    monkeypatch.delenv("QUANTORCH_SEC_USER_AGENT")
    with pytest.raises(ConfigError, match="QUANTORCH_SEC_USER_AGENT"):
        SecClient().company_facts("AAPL")


def test_sec_offline_says_unreachable(monkeypatch):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("QUANTORCH_SEC_USER_AGENT", "quantorch tests tests@example.com")
    monkeypatch.setenv("QUANTORCH_SEC_BASE_URL", f"http://127.0.0.1:{port}")
    SecClient.clear_cache()
    with pytest.raises(DataSourceUnavailableError, match="SEC unreachable"):
        call(_aapl_market(), "AAPL", "2016-03-01", "sec")


def _mock_client(document: dict) -> SecClient:
    body = json.dumps(document).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    SecClient.clear_cache()
    return SecClient(
        user_agent="quantorch tests tests@example.com",
        base_url=f"http://mock-{id(document)}",
        transport=transport,
    )


@pytest.mark.parametrize("day", ["2015-11-02", "2016-03-01"])
def test_sec_poisoned_future_changes_nothing_at_t(day):
    t = pd.Timestamp(day)
    data = _aapl_market()
    clean = dataclasses.replace(data, extras={"sec_client": _mock_client(companyfacts())})
    spoiled = poison_after(data, t, seed=3)
    spoiled = dataclasses.replace(
        spoiled, extras={"sec_client": _mock_client(companyfacts(poison_after_day=day))}
    )
    _assert_unchanged_at(clean, spoiled, t, "sec")


@settings(
    max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(pick=st.data())
def test_sec_panel_equals_single_call(pick):
    data = dataclasses.replace(_aapl_market(), extras={"sec_client": _mock_client(companyfacts())})
    _assert_panel_equals_single(data, "sec", pick)


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
