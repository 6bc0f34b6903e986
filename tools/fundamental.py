"""Fundamental view of a stock: factor-implied style tilts, or ratios from point-in-time filings.

Providers, from cheap to dear:

``factor`` (offline default): **factor-implied** style exposures, not accounting data.
Over the 252 sessions up to the decision, the stock's daily returns are regressed on the
market (the benchmark) and on the style-factor ETFs' returns in excess of the market
(VLUE value, QUAL quality, MTUM momentum, SIZE size, USMV low volatility):

    r_stock = a + b_mkt * r_mkt + sum_k b_k * (r_k - r_mkt) + e

so ``b_k`` is the stock's tilt towards style k beyond its market beta (regressing on the raw
ETF returns would mostly measure market beta five times over: the ETFs' daily returns have a
0.91-0.99 correlation with the S&P 500's over 2014-2022). The ETFs start in 2014: before
enough overlapping history (126 sessions) the output has no coverage.

``file`` (offline): ratios from the point-in-time statement items stored in the
``fundamentals`` table (``quantorch data import-fundamentals``), each usable only from its
``filed_at`` date. ``sec`` (online): the same ratios from the SEC's XBRL company facts
(``data.sec.gov/api/xbrl/companyfacts``), each fact usable only from its ``filed`` date.
Both use standalone quarters of ``net_income_q``, ``operating_cf_q``, ``capex_q``,
``free_cash_flow_q`` and the balance-sheet items ``total_assets`` and ``equity``:

- TTM net income: the four quarters ending at the latest quarter reported (all four needed);
- TTM cash flows: the four quarters ending at the latest quarter that reports operating cash
  flow (at most ~2 quarters before the latest net income); when some of those quarters are
  not reported (common in XBRL extracts, where Q2/Q3 cash flows are year-to-date figures) the
  sum of the reported ones (at least two) is annualised (x 4 / n), an estimate that is
  seasonal for some firms; accruals and the cash-flow ratios use net income and assets at
  that same quarter;
- balance sheet: the latest one at or before that quarter's end (within ~a quarter);
- a value filed several times (sources, restatements) counts as first filed: it was the
  value known first, and a later restatement must not rewrite what a past decision saw;
- ROA = TTM net income / total assets; ROE = TTM net income / equity; leverage = assets /
  equity (ROE and leverage not defined for equity <= 0); operating and free cash flow over
  assets; accruals = (net income - operating cash flow) / assets (Sloan: low accruals is
  higher earnings quality); TTM net income growth on the TTM a year earlier;
- valuation: without share counts, price levels (P/E, P/B, EV/EBITDA, yields) cannot be
  computed. What can be: the P/E *re-rating* over a year, log(price / TTM net income) now
  minus the same a year (252 sessions) earlier, each with the TTM known then (positive net
  income only). It assumes a constant share count; buybacks bias it upwards by the yearly
  share-count reduction.
- data older than 550 days (latest quarter end) counts as not covered.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
import time
from collections.abc import Iterable
from itertools import pairwise
from typing import ClassVar

import numpy as np
import pandas as pd

from quantorch.errors import ConfigError, DataSourceUnavailableError, UnknownTickerError
from quantorch.redact import redact, redact_url
from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import MarketData, OutputField, ProviderSpec, ToolSpec

WINDOW = 252
MIN_OBS = 126
STYLES = (
    ("value", "VLUE"),
    ("quality", "QUAL"),
    ("momentum", "MTUM"),
    ("size", "SIZE"),
    ("low_volatility", "USMV"),
)

_FACTOR_OUTPUTS = (
    *(
        OutputField(
            name=f"{style}_tilt",
            description=f"factor-implied {style} exposure beyond the market "
            f"({etf} minus market), 252-session regression",
            unit="beta",
        )
        for style, etf in STYLES
    ),
    OutputField(
        name="market_beta", description="beta to the market in the same regression", unit="beta"
    ),
    OutputField(
        name="factor_r2",
        description="share of return variance the factors explain",
        unit="fraction",
    ),
)

_STATEMENT_OUTPUTS = (
    OutputField(
        name="roa_ttm",
        description="return on assets: TTM net income / total assets",
        unit="fraction per year",
    ),
    OutputField(
        name="roe_ttm",
        description="return on equity: TTM net income / shareholders' equity (NaN if equity <= 0)",
        unit="fraction per year",
    ),
    OutputField(
        name="cfo_to_assets",
        description="TTM operating cash flow / total assets (quality)",
        unit="fraction per year",
    ),
    OutputField(
        name="fcf_to_assets",
        description="TTM free cash flow (operating cash flow - capex) / total assets",
        unit="fraction per year",
    ),
    OutputField(
        name="accruals_to_assets",
        description="(TTM net income - operating cash flow) / total "
        "assets; lower means higher earnings quality",
        unit="fraction per year",
    ),
    OutputField(
        name="net_income_growth",
        description="TTM net income vs the TTM a year earlier: (now - then) / |then|",
        unit="fraction",
    ),
    OutputField(
        name="leverage", description="total assets / equity (NaN if equity <= 0)", unit="ratio"
    ),
    OutputField(
        name="pe_rerating",
        description="log change over 252 sessions of price / TTM net income "
        "(share count assumed constant; P/E levels need share counts)",
        unit="log change",
    ),
    OutputField(
        name="filing_age_days",
        description="calendar days since the latest filing used",
        unit="days",
    ),
)
_FACTOR_NAMES = tuple(f.name for f in _FACTOR_OUTPUTS)
_STATEMENT_NAMES = tuple(f.name for f in _STATEMENT_OUTPUTS)

SPEC = ToolSpec(
    name="fundamental",
    description=(
        "Fundamental profile of the stock. Offline default 'factor' is factor-implied: the stock's "
        "value, quality, momentum, size and low-volatility tilts estimated from the style-factor "
        "ETFs' returns over the past year (not accounting data). 'file' and 'sec' compute "
        "quality, growth, leverage and P/E re-rating from quarterly filings known at the decision "
        "(imported filings, or the SEC's XBRL company facts online)."
    ),
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
    outputs=(*_FACTOR_OUTPUTS, *_STATEMENT_OUTPUTS),
    providers=(
        ProviderSpec(
            name="factor",
            description="factor-implied style exposures (offline)",
            usd_per_call=0.002,
            expected_latency_ms=5,
            outputs=_FACTOR_NAMES,
        ),
        ProviderSpec(
            name="file",
            description="ratios from imported point-in-time filings (offline)",
            usd_per_call=0.002,
            expected_latency_ms=10,
            outputs=_STATEMENT_NAMES,
        ),
        ProviderSpec(
            name="sec",
            description="ratios from SEC XBRL company facts (online, ~1.5 s)",
            usd_per_call=0.01,
            expected_latency_ms=1500,
            online=True,
            outputs=_STATEMENT_NAMES,
        ),
    ),
    default_provider="factor",
)


# ---- factor-implied exposures ----------------------------------------------------------------


def _rolling_sum(values: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` rows (axis 0), from cumulative sums."""
    cumulative = np.cumsum(values, axis=0)
    out = cumulative.copy()
    out[window:] = cumulative[window:] - cumulative[:-window]
    return out


def _inverse(xtx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverses of a stack of X'X matrices and whether each is well conditioned.

    X'X is symmetric positive semi-definite: its condition number is the ratio of its extreme
    eigenvalues. Ill-conditioned (or empty) windows get an identity placeholder and False.
    """
    eigen = np.linalg.eigvalsh(xtx)
    good = eigen[:, 0] > np.maximum(eigen[:, -1], 1e-300) * 1e-10
    safe = np.where(good[:, None, None], xtx, np.eye(xtx.shape[1]))
    return np.linalg.inv(safe), good


def factor_exposures(
    stock_returns: pd.DataFrame, market_returns: pd.Series, factor_returns: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Rolling OLS of each stock on [1, market, factor - market] (see module docs)."""
    index = stock_returns.index
    mkt = market_returns.reindex(index).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf in bad data: that row is left out below
        styles = factor_returns.reindex(index).to_numpy(dtype=np.float64) - mkt[:, None]
    design = np.column_stack([np.ones(len(index)), mkt, styles])  # (n, 7)
    x_ok = np.isfinite(design).all(axis=1)
    names = [f"{style}_tilt" for style, _ in STYLES]
    out = {
        name: np.full(stock_returns.shape, np.nan) for name in [*names, "market_beta", "factor_r2"]
    }
    # The design is shared by every stock: X'X, its conditioning and its inverse are computed
    # once. A stock's window uses them when the stock has a return on every session of the
    # window where the factors have one; otherwise (a gap in the stock's data) its own X'X.
    # Which path a row takes depends only on data up to that row, so a single call on data
    # truncated at t takes the same path and gives the same bits as the panel.
    x = np.where(x_ok[:, None], design, 0.0)
    shared_count = _rolling_sum(x_ok.astype(np.float64), WINDOW)
    shared_inverse, shared_good = _inverse(_rolling_sum(np.einsum("ni,nj->nij", x, x), WINDOW))
    for j, ticker in enumerate(stock_returns.columns):
        y = stock_returns[ticker].to_numpy(dtype=np.float64)
        finite = np.isfinite(y)
        ok = x_ok & finite
        yy = np.where(ok, y, 0.0)
        missing = _rolling_sum((x_ok & ~finite).astype(np.float64), WINDOW)
        count = shared_count - missing
        xty = _rolling_sum(x * yy[:, None], WINDOW)
        yty = _rolling_sum(yy * yy, WINDOW)
        ysum = _rolling_sum(yy, WINDOW)
        usable = (count >= MIN_OBS) & finite
        inverse = shared_inverse
        good = shared_good
        if (usable & (missing > 0)).any():  # gaps in this stock's data: its own X'X there
            xs = np.where(ok[:, None], design, 0.0)
            own_inverse, own_good = _inverse(_rolling_sum(np.einsum("ni,nj->nij", xs, xs), WINDOW))
            gap = missing > 0
            inverse = np.where(gap[:, None, None], own_inverse, shared_inverse)
            good = np.where(gap, own_good, shared_good)
        rows = np.flatnonzero(usable & good)
        if len(rows) == 0:
            continue
        beta = np.einsum("nij,nj->ni", inverse[rows], xty[rows])
        sse = yty[rows] - np.einsum("ni,ni->n", beta, xty[rows])
        sst = yty[rows] - ysum[rows] ** 2 / count[rows]
        r2 = np.where(sst > 0, 1 - sse / sst, np.nan)
        out["market_beta"][rows, j] = beta[:, 1]
        for k, name in enumerate(names):
            out[name][rows, j] = beta[:, 2 + k]
        out["factor_r2"][rows, j] = r2
    return {k: pd.DataFrame(v, index=index, columns=stock_returns.columns) for k, v in out.items()}


# ---- ratios from point-in-time statements ----------------------------------------------------

#: Quarter-length tolerances (days) for building trailing-twelve-month sums.
_QUARTER_DAYS = (75, 105)
_TTM_SPAN_DAYS = 300  # quarter ends within (P - 300, P] make the trailing year ending at P
_STALE_DAYS = 550
_FLOW_METRICS = ("net_income_q", "operating_cf_q", "capex_q", "free_cash_flow_q")
_STOCK_METRICS = ("total_assets", "equity")
_SNAPSHOT = (
    "ni_ttm",
    "ni_ttm_prev",
    "assets",
    "equity",
    "ocf_ttm",
    "fcf_ttm",
    "ni_ttm_cf",
    "assets_cf",
    "period_end",
)


def _trailing(series: dict[int, float], end: int, *, need: int) -> float:
    """Sum of the standalone quarters ending in (end - 300, end], annualised when fewer than
    four are reported (``need`` at least); NaN if the latest is not ``end``."""
    quarters = sorted(p for p in series if end - _TTM_SPAN_DAYS < p <= end + 7)
    if not quarters or abs(quarters[-1] - end) > 7 or len(quarters) < need:
        return math.nan
    if len(quarters) > 4:  # a fiscal-calendar change: keep the four most recent
        quarters = quarters[-4:]
    total = sum(series[p] for p in quarters)
    return total * 4 / len(quarters)


def _balance(series: dict[int, float], end: int) -> float:
    """The latest balance-sheet value at or before ``end`` (within about a quarter)."""
    candidates = [p for p in series if end - _QUARTER_DAYS[1] <= p <= end + 7]
    return series[max(candidates)] if candidates else math.nan


def _snapshot(known: dict[str, dict[int, float]]) -> tuple[float, ...] | None:
    """TTM figures from what is known; cash flows at the latest quarter that reports them
    (within ~2 quarters of the latest net income), with net income and assets at that quarter."""
    income = known.get("net_income_q", {})
    if not income:
        return None
    end = max(income)
    ni_ttm = _trailing(income, end, need=4)
    previous = [p for p in income if end - 400 <= p <= end - 330]
    ni_prev = _trailing(income, max(previous), need=4) if previous else math.nan
    assets = _balance(known.get("total_assets", {}), end)
    equity = _balance(known.get("equity", {}), end)
    ocf = known.get("operating_cf_q", {})
    fcf = dict(known.get("free_cash_flow_q", {}))
    capex = known.get("capex_q", {})
    for period, value in ocf.items():
        if period not in fcf and period in capex:
            fcf[period] = value - capex[period]
    recent = [p for p in ocf if end - 200 <= p <= end + 7]
    ocf_ttm = fcf_ttm = ni_cf = assets_cf = math.nan
    if recent:
        cf_end = max(recent)
        ocf_ttm = _trailing(ocf, cf_end, need=2)
        fcf_ttm = _trailing(fcf, cf_end, need=2) if fcf else math.nan
        ni_cf = _trailing(income, cf_end, need=4)
        assets_cf = _balance(known.get("total_assets", {}), cf_end)
    return (ni_ttm, ni_prev, assets, equity, ocf_ttm, fcf_ttm, ni_cf, assets_cf, float(end))


def statement_snapshots(rows: pd.DataFrame) -> pd.DataFrame:
    """Per filing date of one ticker, the TTM figures known at that date's close.

    ``rows`` is long (period_end, filed_at, metric, value); a value is known from its
    ``filed_at``; for a (metric, period) reported several times (sources, restatements) the
    first filed is kept, as it was the one known first. Indexed by filing date (ascending).
    """
    if rows is None or rows.empty:
        return pd.DataFrame(columns=list(_SNAPSHOT), dtype="float64")
    wanted = rows[rows["metric"].isin((*_FLOW_METRICS, *_STOCK_METRICS))]
    wanted = wanted[np.isfinite(wanted["value"].to_numpy(dtype=np.float64))]
    filed = pd.to_datetime(wanted["filed_at"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    period = (
        pd.to_datetime(wanted["period_end"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    )
    order = np.lexsort((period, filed))
    metrics = wanted["metric"].to_numpy()[order]
    values = wanted["value"].to_numpy(dtype=np.float64)[order]
    filed, period = filed[order], period[order]
    known: dict[str, dict[int, float]] = {}
    index, snapshots = [], []
    i = 0
    while i < len(filed):
        day = filed[i]
        while i < len(filed) and filed[i] == day:
            known.setdefault(metrics[i], {}).setdefault(int(period[i]), float(values[i]))
            i += 1
        snap = _snapshot(known)
        if snap is not None:
            index.append(day)
            snapshots.append(snap)
    frame = pd.DataFrame(snapshots, columns=list(_SNAPSHOT), dtype="float64")
    frame.index = pd.DatetimeIndex(np.array(index, dtype="datetime64[D]").astype("datetime64[ns]"))
    return frame


def _ratio(num: np.ndarray, den: np.ndarray, positive_den: bool = True) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = den > 0 if positive_den else den != 0
        return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def statement_features(rows: pd.DataFrame | None, close: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The statement ratios (see module docs) on the dates of ``close``, for its tickers.

    The row for date d uses only filings with ``filed_at <= d`` and closes up to d.
    """
    dates = pd.DatetimeIndex(close.index).as_unit("ns")
    tickers = list(close.columns)
    out = {name: np.full((len(dates), len(tickers)), np.nan) for name in _STATEMENT_NAMES}
    if rows is not None and len(rows):
        by_ticker = dict(tuple(rows.groupby("ticker", sort=False)))
        day_numbers = dates.to_numpy().astype("datetime64[D]").astype(np.int64).astype(np.float64)
        for j, ticker in enumerate(tickers):
            mine = by_ticker.get(ticker)
            if mine is None:
                continue
            snaps = statement_snapshots(mine)
            if snaps.empty:
                continue
            daily = snaps.reindex(dates, method="ffill")
            filed_day = pd.Series(snaps.index, index=snaps.index).reindex(dates, method="ffill")
            age = (dates - pd.DatetimeIndex(filed_day)).days.to_numpy(dtype=np.float64)
            fresh = (day_numbers - daily["period_end"].to_numpy()) <= _STALE_DAYS
            ni = daily["ni_ttm"].to_numpy()
            ni_prev = daily["ni_ttm_prev"].to_numpy()
            ocf = daily["ocf_ttm"].to_numpy()
            fcf = daily["fcf_ttm"].to_numpy()
            ni_cf = daily["ni_ttm_cf"].to_numpy()
            assets_cf = daily["assets_cf"].to_numpy()
            assets = daily["assets"].to_numpy()
            equity = daily["equity"].to_numpy()
            price = close[ticker].to_numpy(dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                earnings_yield_log = np.where(
                    (ni > 0) & (price > 0),
                    np.log(price) - np.log(np.where(ni > 0, ni, 1.0)),
                    np.nan,
                )
                lagged = np.full_like(earnings_yield_log, np.nan)
                lagged[WINDOW:] = earnings_yield_log[:-WINDOW]
                values = {
                    "roa_ttm": _ratio(ni, assets),
                    "roe_ttm": _ratio(ni, equity),
                    "cfo_to_assets": _ratio(ocf, assets_cf),
                    "fcf_to_assets": _ratio(fcf, assets_cf),
                    "accruals_to_assets": _ratio(ni_cf - ocf, assets_cf),
                    "net_income_growth": _ratio(ni - ni_prev, np.abs(ni_prev)),
                    "leverage": np.where(equity > 0, _ratio(assets, equity), np.nan),
                    "pe_rerating": earnings_yield_log - lagged,
                }
            anything = np.zeros(len(dates), dtype=bool)
            for value in values.values():
                anything |= np.isfinite(value)
            values["filing_age_days"] = np.where(anything, age, np.nan)
            for name, value in values.items():
                out[name][:, j] = np.where(fresh, value, np.nan)
    return {name: pd.DataFrame(v, index=close.index, columns=tickers) for name, v in out.items()}


# ---- the SEC XBRL company-facts adapter ------------------------------------------------------

SEC_USER_AGENT_ENV = "QUANTORCH_SEC_USER_AGENT"
SEC_BASE_URL_ENV = "QUANTORCH_SEC_BASE_URL"
SEC_TICKERS_URL_ENV = "QUANTORCH_SEC_TICKERS_URL"
SEC_TIMEOUT_ENV = "QUANTORCH_SEC_TIMEOUT"
_SEC_BASE_URL = "https://data.sec.gov"
_SEC_TICKERS_URL = "https://www.sec.gov/files/company_tickers.json"

#: CIKs of the sample universe, so the common case needs no ticker look-up.
SAMPLE_CIKS = {
    "AAPL": 320193, "AMD": 2488, "BAC": 70858, "BBY": 764478, "CVX": 93410, "GE": 40545,
    "HD": 354950, "JNJ": 200406, "JPM": 19617, "KO": 21344, "LLY": 59478, "MRK": 310158,
    "MSFT": 789019, "PEP": 77476, "PFE": 78003, "PG": 80424, "RRC": 315852, "UNH": 731766,
    "WMT": 104169, "XOM": 34088,
}  # fmt: skip

#: us-gaap concepts per item, most specific first.
SEC_CONCEPTS = {
    "net_income": (
        "NetIncomeLoss",
        "ProfitLoss",
        "NetIncomeLossAvailableToCommonStockholdersBasic",
    ),
    "operating_cf": (
        "NetCashProvidedByUsedInOperatingActivities",
        "NetCashProvidedByUsedInOperatingActivitiesContinuingOperations",
    ),
    "capex": ("PaymentsToAcquirePropertyPlantAndEquipment", "PaymentsToAcquireProductiveAssets"),
    "total_assets": ("Assets",),
    "equity": (
        "StockholdersEquity",
        "StockholdersEquityIncludingPortionAttributableToNoncontrollingInterest",
    ),
}
_SEC_FORMS = {"10-Q", "10-K", "10-Q/A", "10-K/A", "10-KT", "10-QT"}


def _sec_facts(payload: dict, concepts: Iterable[str]) -> list[dict]:
    facts = []
    gaap = (payload.get("facts") or {}).get("us-gaap") or {}
    for rank, concept in enumerate(concepts):
        units = (gaap.get(concept) or {}).get("units") or {}
        for fact in units.get("USD", []):
            if fact.get("form") not in _SEC_FORMS or "end" not in fact or "filed" not in fact:
                continue
            try:
                value = float(fact["val"])
                end = dt.date.fromisoformat(fact["end"]).toordinal()
                filed = dt.date.fromisoformat(fact["filed"]).toordinal()
                start = (
                    dt.date.fromisoformat(fact["start"]).toordinal() if fact.get("start") else None
                )
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                facts.append(
                    {"start": start, "end": end, "filed": filed, "value": value, "rank": rank}
                )
    return facts


def _first_filed(facts: list[dict], key) -> dict:
    """Per key, the fact filed first (then the preferred concept)."""
    best: dict = {}
    for fact in facts:
        k = key(fact)
        current = best.get(k)
        if current is None or (fact["filed"], fact["rank"]) < (current["filed"], current["rank"]):
            best[k] = fact
    return best


def _standalone_quarters(facts: list[dict]) -> dict[int, tuple[float, int]]:
    """Quarter end -> (value, filed) from 3-month facts and differences of year-to-date facts."""
    durations = _first_filed(
        [f for f in facts if f["start"] is not None], key=lambda f: (f["start"], f["end"])
    )
    candidates: dict[int, list[tuple[int, int, float]]] = {}
    by_start: dict[int, list[dict]] = {}
    lo, hi = _QUARTER_DAYS
    for fact in durations.values():
        length = fact["end"] - fact["start"] + 1
        if lo <= length <= hi:
            candidates.setdefault(fact["end"], []).append((fact["filed"], 0, fact["value"]))
        by_start.setdefault(fact["start"], []).append(fact)
    for group in by_start.values():
        group.sort(key=lambda f: f["end"])
        for earlier, later in pairwise(group):
            if lo <= later["end"] - earlier["end"] <= hi:
                filed = max(earlier["filed"], later["filed"])
                candidates.setdefault(later["end"], []).append(
                    (filed, 1, later["value"] - earlier["value"])
                )
    return {end: (min(c)[2], min(c)[0]) for end, c in candidates.items()}


def parse_company_facts(payload: dict, ticker: str, source: str = "sec") -> pd.DataFrame:
    """Long point-in-time rows (ticker, period_end, filed_at, metric, value, source) from an
    SEC companyfacts JSON document.

    Flows become standalone quarters (a Q4 or a cash-flow quarter is a difference of
    year-to-date figures, available from the later of the two filings); each period keeps the
    value filed first.
    """
    rows: list[tuple] = []

    def add(metric: str, period: int, filed: int, value: float) -> None:
        rows.append(
            (ticker, dt.date.fromordinal(period), dt.date.fromordinal(filed), metric, value, source)
        )

    flows = {}
    for item in ("net_income", "operating_cf", "capex"):
        flows[item] = _standalone_quarters(_sec_facts(payload, SEC_CONCEPTS[item]))
        for end, (value, filed) in flows[item].items():
            add(f"{item}_q", end, filed, value)
    for end, (ocf, ocf_filed) in flows["operating_cf"].items():
        if end in flows["capex"]:
            capex, capex_filed = flows["capex"][end]
            add("free_cash_flow_q", end, max(ocf_filed, capex_filed), ocf - capex)
    for item in ("total_assets", "equity"):
        instants = _first_filed(_sec_facts(payload, SEC_CONCEPTS[item]), key=lambda f: f["end"])
        for end, fact in instants.items():
            add(item, end, fact["filed"], fact["value"])
    frame = pd.DataFrame(
        rows, columns=["ticker", "period_end", "filed_at", "metric", "value", "source"]
    )
    for column in ("period_end", "filed_at"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[ns]")
    return frame.sort_values(["metric", "period_end"], ignore_index=True)


class SecClient:
    """Fetches SEC XBRL company facts over httpx (ports and adapters: pass a ``transport``).

    Settings come from the environment: ``QUANTORCH_SEC_USER_AGENT`` (required by the SEC: your
    name and e-mail), ``QUANTORCH_SEC_BASE_URL`` (default https://data.sec.gov),
    ``QUANTORCH_SEC_TICKERS_URL`` and ``QUANTORCH_SEC_TIMEOUT`` (seconds, default 20).
    Documents are cached in-process for ``ttl_s`` and requests are spaced to stay under the
    SEC's 10 requests per second.
    """

    _cache: ClassVar[dict[str, tuple[float, object]]] = {}
    _lock = threading.Lock()
    _last_request = 0.0

    def __init__(
        self,
        user_agent: str | None = None,
        base_url: str | None = None,
        tickers_url: str | None = None,
        timeout_s: float | None = None,
        transport=None,
        ttl_s: float = 6 * 3600,
    ) -> None:
        self.user_agent = user_agent or os.environ.get(SEC_USER_AGENT_ENV, "").strip()
        self.base_url = (base_url or os.environ.get(SEC_BASE_URL_ENV) or _SEC_BASE_URL).rstrip("/")
        self.tickers_url = tickers_url or os.environ.get(SEC_TICKERS_URL_ENV) or _SEC_TICKERS_URL
        self.timeout_s = timeout_s or float(os.environ.get(SEC_TIMEOUT_ENV, "20"))
        self.transport = transport
        self.ttl_s = ttl_s

    def _get_json(self, url: str, what: str) -> object:
        import httpx

        if not self.user_agent:
            raise ConfigError(
                f"the SEC requires a User-Agent with your name and e-mail: set {SEC_USER_AGENT_ENV}="
                "'Jane Doe jane@example.com' (or use --provider file or factor offline)"
            )
        with self._lock:
            hit = self._cache.get(url)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
            wait = SecClient._last_request + 0.11 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            SecClient._last_request = time.monotonic()
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"}
        # messages show the URLs without credentials (a mirror's user:password@, a key param)
        shown = redact(redact_url(url))
        try:
            with httpx.Client(
                timeout=self.timeout_s, transport=self.transport, headers=headers
            ) as client:
                response = client.get(url)
        except httpx.TimeoutException as exc:
            raise DataSourceUnavailableError(
                f"SEC unreachable: no answer from {shown} within {self.timeout_s:g}s; retry later, or "
                "use --provider file (imported filings) or factor offline"
            ) from exc
        except httpx.TransportError as exc:
            raise DataSourceUnavailableError(
                f"SEC unreachable at {redact(redact_url(self.base_url))} "
                f"({type(exc).__name__}: {redact(str(exc))}); "
                "fundamental:sec needs the internet: use --provider file (after quantorch data "
                "import-fundamentals) or factor offline"
            ) from exc
        if response.status_code == 404:
            raise UnknownTickerError(f"the SEC has no {what} at {shown}")
        if response.status_code == 403:
            raise ConfigError(
                f"the SEC refused the request (HTTP 403) for {shown}: it requires a User-Agent with "
                f"your name and e-mail in {SEC_USER_AGENT_ENV}"
            )
        if response.status_code != 200:
            raise DataSourceUnavailableError(
                f"SEC answered HTTP {response.status_code} for {shown}; retry later"
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise DataSourceUnavailableError(
                f"SEC returned a non-JSON {what} from {shown}"
            ) from exc
        with self._lock:
            self._cache[url] = (time.monotonic(), payload)
        return payload

    def cik(self, ticker: str) -> int:
        """The SEC's company id for ``ticker`` (built in for the sample universe)."""
        ticker = ticker.upper()
        if ticker in SAMPLE_CIKS:
            return SAMPLE_CIKS[ticker]
        table = self._get_json(self.tickers_url, "ticker table")
        for entry in table.values() if isinstance(table, dict) else []:
            if str(entry.get("ticker", "")).upper() == ticker:
                return int(entry["cik_str"])
        raise UnknownTickerError(f"ticker '{ticker}' is not in the SEC's ticker table")

    def company_facts(self, ticker: str) -> pd.DataFrame:
        """Point-in-time statement rows for ``ticker`` (see :func:`parse_company_facts`)."""
        url = f"{self.base_url}/api/xbrl/companyfacts/CIK{self.cik(ticker):010d}.json"
        payload = self._get_json(url, f"XBRL company facts for {ticker}")
        if not isinstance(payload, dict) or "facts" not in payload:
            raise DataSourceUnavailableError(
                f"SEC company facts for {ticker} have no 'facts' ({redact(redact_url(url))})"
            )
        return parse_company_facts(payload, ticker)

    @classmethod
    def clear_cache(cls) -> None:
        with cls._lock:
            cls._cache.clear()


# ---- the tool --------------------------------------------------------------------------------


class FundamentalTool(PanelTool):
    spec = SPEC

    def series(
        self, data: MarketData, provider: ProviderSpec, tickers: list[str]
    ) -> dict[str, pd.DataFrame]:
        close = data.prices.close.reindex(columns=tickers)
        if provider.name == "file":
            return statement_features(data.fundamentals, close)
        if provider.name == "sec":
            client = data.extras.get("sec_client") or SecClient()
            rows = pd.concat([client.company_facts(t) for t in tickers], ignore_index=True)
            return statement_features(rows, close)
        return self._factor_series(data, close, tickers)

    def _factor_series(
        self, data: MarketData, close: pd.DataFrame, tickers: list[str]
    ) -> dict[str, pd.DataFrame]:
        empty = {
            f.name: pd.DataFrame(np.nan, index=close.index, columns=tickers)
            for f in _FACTOR_OUTPUTS
        }
        if data.factors is None or data.benchmark is None:
            return empty
        etfs = [etf for _, etf in STYLES]
        if not set(etfs) <= set(data.factors.columns):
            return empty
        returns = close.pct_change(fill_method=None)
        market = data.benchmark.reindex(close.index).pct_change(fill_method=None)
        factors = data.factors.reindex(close.index)[etfs].pct_change(fill_method=None)
        return factor_exposures(returns, market, factors)

    def summarise(self, ticker: str, features: dict[str, float], provider: ProviderSpec) -> str:
        if provider.name == "factor":
            return self._summarise_factor(ticker, features)
        label = "imported filings" if provider.name == "file" else "SEC XBRL filings"
        shown = [(name, features.get(name, math.nan)) for name in _STATEMENT_NAMES]
        if not any(math.isfinite(v) for _, v in shown):
            return (
                f"fundamental ({label}) {ticker}: not covered (no filing known at this date, "
                "or the latest is over 18 months old)"
            )
        parts = []
        for name, text in (
            ("roa_ttm", "ROA"),
            ("roe_ttm", "ROE"),
            ("cfo_to_assets", "CFO/assets"),
            ("accruals_to_assets", "accruals/assets"),
            ("net_income_growth", "NI growth"),
        ):
            value = features.get(name, math.nan)
            if math.isfinite(value):
                parts.append(f"{text} {value:+.1%}")
        leverage = features.get("leverage", math.nan)
        if math.isfinite(leverage):
            parts.append(f"leverage {leverage:.1f}x")
        rerating = features.get("pe_rerating", math.nan)
        if math.isfinite(rerating):
            parts.append(f"P/E re-rating over a year {rerating:+.2f} (log)")
        age = features.get("filing_age_days", math.nan)
        age_text = f"; latest filing {age:.0f} days old" if math.isfinite(age) else ""
        return (
            f"fundamental ({label}, point-in-time) {ticker}: {', '.join(parts) or 'partial data'}"
            f"{age_text}; P/E and P/B levels need share counts (not in this source)"
        )

    def _summarise_factor(self, ticker: str, features: dict[str, float]) -> str:
        tilts = [(s, features.get(f"{s}_tilt", float("nan"))) for s, _ in STYLES]
        tilts = [(s, v) for s, v in tilts if math.isfinite(v)]
        if not tilts:
            return f"fundamental (factor-implied) {ticker}: not covered (factor ETFs start in 2014)"
        strongest = sorted(tilts, key=lambda sv: -abs(sv[1]))[:2]
        text = ", ".join(f"{s} {v:+.2f}" for s, v in strongest)
        return (
            f"fundamental (factor-implied, not accounting data) {ticker}: strongest tilts {text}; "
            f"market beta {features.get('market_beta', float('nan')):.2f}"
        )


TOOL = FundamentalTool()

__all__ = [
    "SPEC",
    "TOOL",
    "FundamentalTool",
    "SecClient",
    "factor_exposures",
    "parse_company_facts",
    "statement_features",
    "statement_snapshots",
]
