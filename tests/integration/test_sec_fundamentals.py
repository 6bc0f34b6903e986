"""Filings from the SEC's XBRL company facts: the adapter, the fetch command, the tool's read.

``quantorch data fetch-fundamentals`` runs through the real CLI against a loopback HTTP server
(``http.server`` in a thread, found through ``QUANTORCH_SEC_BASE_URL``) that serves a
companyfacts document of the real API's shape; then ``quantorch tools run fundamental
--provider sec`` reads what it stored. Nothing here reaches the internet.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import numpy as np
import pandas as pd
import pytest
from quantorch.tools.fundamental import TOOL, statement_features
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.data.providers.sec import SecClient, parse_company_facts
from quantorch.errors import ConfigError, DataSourceUnavailableError, UnknownTickerError
from quantorch.store import Store
from quantorch.toolkit.market import load_ticker_history

runner = CliRunner()
STATEMENT_NAMES = TOOL.spec.provider_outputs("sec")
USER_AGENT = "quantorch tests tests@example.com"
AAPL_FACTS = "/api/xbrl/companyfacts/CIK0000320193.json"


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


# ---- a companyfacts document of the real API's shape ----------------------------------------

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


def filed_by(document: dict, cut: str) -> dict:
    """The document as the SEC served it on ``cut``: only the facts filed by then."""
    gaap = {
        concept: {"units": {"USD": [f for f in body["units"]["USD"] if f["filed"] <= cut]}}
        for concept, body in document["facts"]["us-gaap"].items()
    }
    return {**document, "facts": {**document["facts"], "us-gaap": gaap}}


# ---- the loopback SEC --------------------------------------------------------------------------


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


def serve(document: dict, path: str = AAPL_FACTS) -> None:
    _SecHandler.documents[path] = json.dumps(document).encode()


@pytest.fixture
def sec_server(monkeypatch):
    _SecHandler.documents = {}
    serve(companyfacts())
    _SecHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SecHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("QUANTORCH_SEC_BASE_URL", base)
    monkeypatch.setenv("QUANTORCH_SEC_TICKERS_URL", f"{base}/files/company_tickers.json")
    monkeypatch.setenv("QUANTORCH_SEC_USER_AGENT", USER_AGENT)
    yield base
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- the client --------------------------------------------------------------------------------


def test_client_over_loopback_http_sends_the_user_agent(sec_server):
    rows = SecClient().company_facts("aapl")
    pd.testing.assert_frame_equal(rows, parse_company_facts(companyfacts(), "AAPL"))
    assert _SecHandler.seen == [{"path": AAPL_FACTS, "user-agent": USER_AGENT}]


def test_client_looks_up_tickers_outside_the_sample_once(sec_server):
    table = {"0": {"cik_str": 1045810, "ticker": "NVDA", "title": "NVIDIA CORP"}}
    serve(table, "/files/company_tickers.json")
    serve(companyfacts(), "/api/xbrl/companyfacts/CIK0001045810.json")
    client = SecClient()
    assert client.cik("NVDA") == 1045810 and client.cik("nvda") == 1045810
    assert len(client.company_facts("NVDA")) == len(parse_company_facts(companyfacts(), "NVDA"))
    with pytest.raises(UnknownTickerError, match="'ZZZZ' is not in the SEC's ticker table"):
        client.cik("ZZZZ")
    assert [s["path"] for s in _SecHandler.seen].count("/files/company_tickers.json") == 1


def test_client_errors_are_quantorch_errors(sec_server, monkeypatch):
    client = SecClient()
    with pytest.raises(UnknownTickerError, match="no XBRL company facts"):
        client.company_facts("MSFT")  # 404 from the server
    with pytest.raises(ConfigError, match="User-Agent"):
        client._get_json(f"{sec_server}/forbidden.json", "test")
    monkeypatch.delenv("QUANTORCH_SEC_USER_AGENT")
    with pytest.raises(ConfigError, match="QUANTORCH_SEC_USER_AGENT"):
        SecClient().company_facts("AAPL")


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (httpx.Response(503), DataSourceUnavailableError, "HTTP 503 .* retry later"),
        (httpx.Response(200, content=b"<html>"), DataSourceUnavailableError, "non-JSON"),
        (httpx.Response(200, json={"cik": 320193}), DataSourceUnavailableError, "no 'facts'"),
        (httpx.ConnectError("refused"), DataSourceUnavailableError, "SEC unreachable"),
        (httpx.ReadTimeout("slow"), DataSourceUnavailableError, "within 20s"),
    ],
)
def test_transport_failures_are_translated_at_the_boundary(answer, error, message):
    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = SecClient(
        user_agent=USER_AGENT,
        base_url="https://user:hunter2-pw@sec.example",
        timeout_s=20,
        transport=httpx.MockTransport(handle),
    )
    with pytest.raises(error, match=message) as raised:
        client.company_facts("AAPL")
    assert "hunter2-pw" not in str(raised.value)
    if isinstance(answer, Exception):
        assert raised.value.__cause__ is answer  # raise ... from exc


def test_a_base_url_without_a_scheme_is_a_setting_to_fix():
    client = SecClient(user_agent=USER_AGENT, base_url="data.sec.gov")
    with pytest.raises(ConfigError, match="QUANTORCH_SEC_BASE_URL"):
        client.company_facts("AAPL")


# ---- the command, then the tool ------------------------------------------------------------------


def _sec_rows(db) -> pd.DataFrame:
    with Store(db).connect(read_only=True) as con:
        return con.execute(
            "SELECT ticker, period_end, filed_at, metric, value, source FROM fundamentals "
            "WHERE source = 'sec' ORDER BY metric, period_end"
        ).df()


def _run_sec(db, ticker: str, asof: str) -> dict:
    args = ["--provider", "sec", "--ticker", ticker, "--asof", asof, "--db", str(db), "--json"]
    result = invoke("tools", "run", "fundamental", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_fetch_fundamentals_through_the_cli_then_the_tool_reads_the_table(sec_server, loaded_db):
    fetched = invoke("data", "fetch-fundamentals", "--tickers", "AAPL", "--db", str(loaded_db))
    assert fetched.exit_code == 0, fetched.stderr
    expected_rows = parse_company_facts(companyfacts(), "AAPL")
    assert f"AAPL: {len(expected_rows)} new (0 already stored), filed 2015-01-28 to 2016-10-26" in (
        fetched.stdout
    )
    stored = _sec_rows(loaded_db)
    assert len(stored) == len(expected_rows)
    merged = stored.assign(
        period_end=pd.to_datetime(stored["period_end"]), filed_at=pd.to_datetime(stored["filed_at"])
    ).merge(
        expected_rows, on=["ticker", "period_end", "metric", "source"], suffixes=("", "_parsed")
    )
    assert len(merged) == len(expected_rows)
    assert (merged["value"] == merged["value_parsed"]).all()
    assert (merged["filed_at"] == merged["filed_at_parsed"]).all()

    # the tool: a local read, the same figures as the ratios computed on the parsed rows
    requests_before = len(_SecHandler.seen)
    result = _run_sec(loaded_db, "AAPL", "2016-03-01")
    assert len(_SecHandler.seen) == requests_before  # no request during a tool call
    assert result["coverage"] and "SEC XBRL filings" in result["summary"]
    assert result["cost_usd"] == TOOL.spec.provider("sec").usd_per_call
    close = load_ticker_history(Store(loaded_db), "sample", "AAPL").prices.close
    expected = statement_features(expected_rows, close.loc[:"2016-03-01"])
    for name in STATEMENT_NAMES:
        value = expected[name]["AAPL"].iloc[-1]
        got = result["features"][name]
        assert (got is None and np.isnan(value)) or got == value, name
    assert result["features"]["roa_ttm"] == pytest.approx(
        sum(q[3] for q in _QUARTERS[1:5]) / _ASSETS[4]
    )
    # what the tool saw at an earlier decision did not include later filings
    early = _run_sec(loaded_db, "AAPL", "2015-06-01")
    assert (
        early["features"]["filing_age_days"]
        == (pd.Timestamp("2015-06-01") - pd.Timestamp("2015-04-28")).days
    )


def _fetch_json(db) -> dict:
    result = invoke("data", "fetch-fundamentals", "--tickers", "AAPL", "--db", str(db), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_fetching_again_is_idempotent_and_extends_the_stored_filings(sec_server, tmp_path):
    db = str(tmp_path / "q.duckdb")
    serve(filed_by(companyfacts(), "2015-10-28"))  # the SEC as of FY2015's 10-K
    first = _fetch_json(db)
    assert first["inserted"] == first["rows"] > 0 and first["replaced"] == 0
    again = _fetch_json(db)
    assert again["inserted"] == 0 and again["unchanged"] == first["rows"]
    serve(companyfacts())  # a year later: FY2016's filings, with restated comparatives
    later = _fetch_json(db)
    everything = parse_company_facts(companyfacts(), "AAPL")
    assert later["rows"] == len(everything) and later["replaced"] == 0
    assert later["inserted"] == len(everything) - first["rows"]
    assert later["tickers"]["AAPL"]["last_filed"] == "2016-10-26"
    assert len(_sec_rows(db)) == len(everything)


def test_a_later_restatement_never_rewrites_what_was_stored(sec_server, tmp_path):
    """If the SEC drops an original fact and lists only its later restatement, the stored
    first-filed value stays: a past decision saw it."""
    db = str(tmp_path / "q.duckdb")
    assert invoke("data", "fetch-fundamentals", "--tickers", "AAPL", "--db", db).exit_code == 0
    document = companyfacts()
    assets = document["facts"]["us-gaap"]["Assets"]["units"]["USD"]
    originals = {(f["end"], f["filed"]) for f in assets if f["fy"] == 2015}
    document["facts"]["us-gaap"]["Assets"]["units"]["USD"] = [
        f for f in assets if (f["end"], f["filed"]) not in originals
    ]
    serve(document)
    result = invoke("data", "fetch-fundamentals", "--tickers", "AAPL", "--db", db, "--json")
    report = json.loads(result.stdout)["tickers"]["AAPL"]
    assert report["kept_earlier"] == 4 and report["replaced"] == 0 and report["inserted"] == 0
    stored = _sec_rows(db)
    assets_stored = stored[stored["metric"] == "total_assets"].set_index("period_end")["value"]
    assert assets_stored.iloc[:4].tolist() == _ASSETS[:4]  # not the restated values
    text = invoke("data", "fetch-fundamentals", "--tickers", "AAPL", "--db", db)
    assert "kept 4 stored value(s) filed earlier" in text.stdout


def test_the_sec_provider_says_how_to_fetch_what_is_not_stored(loaded_db):
    result = _run_sec(loaded_db, "KO", "2016-03-01")
    assert not result["coverage"]
    assert (
        "no SEC filings stored for KO: run quantorch data fetch-fundamentals --tickers KO"
        in (result["summary"])
    )


def test_fetch_errors_are_one_line_with_the_right_exit_code(sec_server, tmp_path, monkeypatch):
    db = tmp_path / "q.duckdb"

    def fetch(*extra):
        return invoke("data", "fetch-fundamentals", "--db", str(db), *extra)

    unknown = fetch("--tickers", "MSFT")  # 404: the SEC has no such document
    assert unknown.exit_code == 2 and "no XBRL company facts for MSFT" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    partly = fetch("--tickers", "AAPL,MSFT")  # AAPL is stored before MSFT fails
    assert partly.exit_code == 2 and "already stored: AAPL; running again keeps them" in (
        partly.stderr
    )
    assert set(_sec_rows(db)["ticker"]) == {"AAPL"}
    db.unlink()
    source = fetch("--tickers", "AAPL", "--source", "edgr")
    assert source.exit_code == 2
    assert "unknown filings source 'edgr'; available: sec" in source.stderr
    monkeypatch.setenv(
        "QUANTORCH_SEC_BASE_URL", f"http://mirror:s3cret-pw-9@127.0.0.1:{_closed_port()}"
    )
    down = fetch("--tickers", "AAPL")
    assert down.exit_code == 3 and "SEC unreachable" in down.stderr
    assert "s3cret-pw-9" not in down.stderr and "Traceback" not in down.stderr
    monkeypatch.delenv("QUANTORCH_SEC_USER_AGENT")
    anonymous = fetch("--tickers", "AAPL")
    assert anonymous.exit_code == 2 and "QUANTORCH_SEC_USER_AGENT" in anonymous.stderr
    assert not db.exists() or _sec_rows(db).empty  # nothing was written


def test_the_fundamental_tool_runs_without_httpx(tmp_path):
    """No tool does network I/O: with httpx impossible to import, the tool module loads and
    its sec provider computes from stored rows."""
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(companyfacts()))
    script = f"""
import importlib.abc, json, sys

class NoHttpx(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "httpx" or name.startswith("httpx."):
            raise ImportError("httpx is blocked in this test")

sys.meta_path.insert(0, NoHttpx())
import pandas as pd
from quantorch.data.panel import PricePanel
from quantorch.data.providers.sec import parse_company_facts
from quantorch.toolkit.spec import MarketData, ToolRequest
from quantorch.tools.fundamental import TOOL

facts = parse_company_facts(json.load(open({str(rows)!r})), "AAPL")
dates = pd.bdate_range("2014-01-01", "2016-12-30")
close = pd.DataFrame({{"AAPL": 100.0}}, index=dates)
data = MarketData(prices=PricePanel.from_close(close), fundamentals=facts).truncate(
    pd.Timestamp("2016-03-01"))
request = ToolRequest(tool="fundamental", ticker="AAPL", asof=pd.Timestamp("2016-03-01"),
                      provider="sec")
result = TOOL.run(request, data, TOOL.spec.provider("sec"))
print(json.dumps({{"coverage": result.coverage, "httpx": "httpx" in sys.modules}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"coverage": True, "httpx": False}
