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

``file`` (offline): ratios from the point-in-time statement items imported into the
``fundamentals`` table (``quantorch data import-fundamentals``), each usable only from its
``filed_at`` date: every stored row except those of source ``sec``. ``sec`` (offline): the same
ratios from the SEC's XBRL company facts stored by ``quantorch data fetch-fundamentals`` (rows
of source ``sec``, see :mod:`quantorch.data.providers.sec`), each fact usable only from its
``filed`` date. No provider does network I/O: a call reads only the data it is given. Both
use standalone quarters of ``net_income_q``, ``operating_cf_q``, ``capex_q``,
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

Coverage: every output is NaN without data (``factor`` before 126 overlapping sessions of the
stock and the ETFs; ``file`` and ``sec`` before a usable filing, or with a stale one), so a call
has data when one output is finite (the default rule of
:class:`~quantorch.toolkit.base.PanelTool`); a call without is not covered and not charged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from quantorch.data.providers.sec import SEC_SOURCE
from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import (
    MarketData,
    OutputField,
    ProviderSpec,
    ToolResult,
    ToolSpec,
)

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
        "(imported filings, or the SEC's XBRL company facts fetched into the database)."
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
        # A local read since the SEC client moved to `quantorch data fetch-fundamentals`: the
        # latency is file's; the price stays what it was (the slot price a policy or a cost
        # comparison may have recorded), the premium over `file` standing for the source
        # (the SEC's own complete XBRL facts) rather than for network time.
        ProviderSpec(
            name="sec",
            description="ratios from SEC XBRL company facts stored by quantorch data "
            "fetch-fundamentals (offline)",
            usd_per_call=0.01,
            expected_latency_ms=10,
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


# ---- the tool --------------------------------------------------------------------------------


def _filings(rows: pd.DataFrame | None, provider: str) -> pd.DataFrame | None:
    """The stored statement rows a provider reads: ``sec`` those fetched from the SEC (source
    ``sec``), ``file`` all the others (imported files)."""
    if rows is None:
        return None
    from_sec = (rows["source"] == SEC_SOURCE).to_numpy()
    return rows[from_sec if provider == "sec" else ~from_sec]


class FundamentalTool(PanelTool):
    spec = SPEC

    def series(
        self, data: MarketData, provider: ProviderSpec, tickers: list[str]
    ) -> dict[str, pd.DataFrame]:
        close = data.prices.close.reindex(columns=tickers)
        if provider.name in ("file", "sec"):
            return statement_features(_filings(data.fundamentals, provider.name), close)
        return self._factor_series(data, close, tickers)

    def run_batch(self, requests, data: MarketData, provider: ProviderSpec) -> list[ToolResult]:
        results = super().run_batch(requests, data, provider)
        return [self._say_how_to_fetch(r, data, provider) for r in results]

    def _say_how_to_fetch(self, result: ToolResult, data: MarketData, provider) -> ToolResult:
        if provider.name != "sec" or result.coverage:
            return result
        rows = _filings(data.fundamentals, "sec")
        if rows is not None and (rows["ticker"] == result.ticker).any():
            return result
        ticker = result.ticker
        return result.model_copy(
            update={
                "summary": f"fundamental (SEC XBRL filings) {ticker}: not covered: no SEC filings "
                f"stored for {ticker}: run quantorch data fetch-fundamentals --tickers {ticker} "
                "(counting filings known at this date; XBRL company facts begin in 2009)"
            }
        )

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
    "factor_exposures",
    "statement_features",
    "statement_snapshots",
]
