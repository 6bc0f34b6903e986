"""SEC XBRL company facts: the adapter that feeds the point-in-time ``fundamentals`` table.

``quantorch data fetch-fundamentals`` fetches each ticker's company facts from
``data.sec.gov/api/xbrl/companyfacts`` (:class:`SecClient`, over httpx), turns them into the
table's long rows (:func:`parse_company_facts`: ``ticker, period_end, filed_at, metric, value,
source='sec'``) and writes them through :func:`quantorch.data.fundamentals.import_fundamentals`
(:func:`fetch_fundamentals`). The ``fundamental`` tool's ``sec`` provider then reads the rows
whose source is ``sec``: no tool call touches the network.

Point in time
-------------
- Flows (net income, operating cash flow, capex) become standalone quarters: a 3-month fact,
  or the difference of two year-to-date facts of the same fiscal year one quarter apart (a
  Q4, or a cash-flow quarter of a 10-Q that reports only year-to-date figures), available
  from the later of the two filings. Balance-sheet items (total assets, equity) are instants.
- A period reported several times (later filings repeat it as a comparative, often
  restated) keeps the value filed first, from its ``filed`` date: that is what was known.
- Fetching again is idempotent and incremental: new periods are added, a stored row is
  replaced only by an earlier or equal filing of the same period, and a stored row the SEC no
  longer lists is kept (a past decision saw it).

Settings come from the environment: ``QUANTORCH_SEC_USER_AGENT`` (required by the SEC: your
name and e-mail), ``QUANTORCH_SEC_BASE_URL`` (default https://data.sec.gov),
``QUANTORCH_SEC_TICKERS_URL`` (the ticker-to-CIK table, needed only for tickers outside the
sample universe) and ``QUANTORCH_SEC_TIMEOUT`` (seconds, default 20). Errors are quantorch's:
an unreachable or failing SEC is temporary (:class:`DataSourceUnavailableError`, exit 3); a
missing User-Agent, a refused request, a bad base URL or an unknown ticker is input to fix
(:class:`UserInputError`, exit 2). Every URL in a message is shown without credentials.
httpx is imported on the first request, so reading stored rows never loads it.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import pandas as pd

from quantorch.errors import (
    ConfigError,
    DataSourceUnavailableError,
    QuantorchError,
    UnknownTickerError,
    UserInputError,
    did_you_mean,
)
from quantorch.redact import redact, redact_url

if TYPE_CHECKING:
    import httpx

    from quantorch.data.news import ImportReport
    from quantorch.store import Store

__all__ = [
    "SAMPLE_CIKS",
    "SEC_CONCEPTS",
    "SEC_SOURCE",
    "SOURCES",
    "FetchReport",
    "SecClient",
    "fetch_fundamentals",
    "parse_company_facts",
]

#: The ``source`` of the rows this adapter writes, and the one the ``fundamental:sec`` tool reads.
SEC_SOURCE = "sec"
#: Filings sources ``quantorch data fetch-fundamentals`` can fetch from.
SOURCES = (SEC_SOURCE,)

SEC_USER_AGENT_ENV = "QUANTORCH_SEC_USER_AGENT"
SEC_BASE_URL_ENV = "QUANTORCH_SEC_BASE_URL"
SEC_TICKERS_URL_ENV = "QUANTORCH_SEC_TICKERS_URL"
SEC_TIMEOUT_ENV = "QUANTORCH_SEC_TIMEOUT"
_SEC_BASE_URL = "https://data.sec.gov"
_SEC_TICKERS_URL = "https://www.sec.gov/files/company_tickers.json"
#: The SEC asks for at most 10 requests per second.
_REQUEST_SPACING_S = 0.11

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
#: A fact (or a difference of two year-to-date facts) this many days long is one quarter.
_QUARTER_DAYS = (75, 105)
_COLUMNS = ["ticker", "period_end", "filed_at", "metric", "value", "source"]


# ---- parsing: companyfacts JSON -> long point-in-time rows ----------------------------------


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


def parse_company_facts(payload: dict, ticker: str, source: str = SEC_SOURCE) -> pd.DataFrame:
    """Long point-in-time rows (ticker, period_end, filed_at, metric, value, source) from an
    SEC companyfacts JSON document.

    Flows become standalone quarters (a Q4 or a cash-flow quarter is a difference of
    year-to-date figures, available from the later of the two filings); each period keeps the
    value filed first. Metrics: ``net_income_q``, ``operating_cf_q``, ``capex_q``,
    ``free_cash_flow_q`` (operating cash flow - capex, where both are reported),
    ``total_assets`` and ``equity`` (USD).
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
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    for column in ("period_end", "filed_at"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[ns]")
    return frame.sort_values(["metric", "period_end"], ignore_index=True)


# ---- the client: httpx behind a swappable transport -----------------------------------------


class SecClient:
    """Fetches SEC XBRL company facts over httpx (ports and adapters: pass a ``transport``).

    Parameters
    ----------
    user_agent, base_url, tickers_url, timeout_s
        Default to the environment settings (see the module docstring).
    transport
        An ``httpx.BaseTransport`` (``httpx.MockTransport`` in tests); None: the network.

    Requests are spaced to stay under the SEC's 10 per second (process-wide); the ticker
    table, needed only for tickers outside the sample universe, is fetched once per client.
    """

    _lock = threading.Lock()
    _last_request = 0.0

    def __init__(
        self,
        user_agent: str | None = None,
        base_url: str | None = None,
        tickers_url: str | None = None,
        timeout_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.user_agent = user_agent or os.environ.get(SEC_USER_AGENT_ENV, "").strip()
        self.base_url = (base_url or os.environ.get(SEC_BASE_URL_ENV) or _SEC_BASE_URL).rstrip("/")
        self.tickers_url = tickers_url or os.environ.get(SEC_TICKERS_URL_ENV) or _SEC_TICKERS_URL
        self.timeout_s = timeout_s or float(os.environ.get(SEC_TIMEOUT_ENV, "20"))
        self.transport = transport
        self._ticker_table: object | None = None

    def _get_json(self, url: str, what: str) -> object:
        import httpx

        if not self.user_agent:
            raise ConfigError(
                f"the SEC requires a User-Agent with your name and e-mail: set {SEC_USER_AGENT_ENV}="
                "'Jane Doe jane@example.com' and run again"
            )
        with self._lock:
            wait = SecClient._last_request + _REQUEST_SPACING_S - time.monotonic()
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
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ConfigError(
                f"bad SEC address {shown} ({redact(str(exc))}): check {SEC_BASE_URL_ENV} and "
                f"{SEC_TICKERS_URL_ENV} (an http:// or https:// URL)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise DataSourceUnavailableError(
                f"SEC unreachable: no answer from {shown} within {self.timeout_s:g}s; retry "
                f"later (or raise {SEC_TIMEOUT_ENV})"
            ) from exc
        except httpx.TransportError as exc:
            raise DataSourceUnavailableError(
                f"SEC unreachable at {redact(redact_url(self.base_url))} "
                f"({type(exc).__name__}: {redact(str(exc))}); fetching filings needs the "
                "internet: retry later, or offline import a filings file with quantorch data "
                "import-fundamentals (--provider file) or use --provider factor"
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
            return response.json()
        except ValueError as exc:
            raise DataSourceUnavailableError(
                f"SEC returned a non-JSON {what} from {shown}"
            ) from exc

    def cik(self, ticker: str) -> int:
        """The SEC's company id for ``ticker`` (built in for the sample universe)."""
        ticker = ticker.upper()
        if ticker in SAMPLE_CIKS:
            return SAMPLE_CIKS[ticker]
        if self._ticker_table is None:
            self._ticker_table = self._get_json(self.tickers_url, "ticker table")
        table = self._ticker_table
        for entry in table.values() if isinstance(table, dict) else []:
            if str(entry.get("ticker", "")).upper() == ticker:
                return int(entry["cik_str"])
        raise UnknownTickerError(f"ticker '{ticker}' is not in the SEC's ticker table")

    def company_facts(self, ticker: str) -> pd.DataFrame:
        """Point-in-time statement rows for ``ticker`` (see :func:`parse_company_facts`)."""
        ticker = ticker.upper()
        url = f"{self.base_url}/api/xbrl/companyfacts/CIK{self.cik(ticker):010d}.json"
        payload = self._get_json(url, f"XBRL company facts for {ticker}")
        if not isinstance(payload, dict) or "facts" not in payload:
            raise DataSourceUnavailableError(
                f"SEC company facts for {ticker} have no 'facts' ({redact(redact_url(url))})"
            )
        return parse_company_facts(payload, ticker)


# ---- into the store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchReport:
    """What a fetch did for one ticker: the import's counts and what was left out."""

    ticker: str
    import_report: ImportReport
    #: Stored rows kept because they were filed earlier than what the SEC lists now.
    kept_earlier: int = 0
    #: Rows refused because their filing date is before the end of their period.
    dropped: int = 0
    first_filed: dt.date | None = None
    last_filed: dt.date | None = None


def _stored_filing_dates(store: Store, ticker: str, source: str) -> pd.DataFrame:
    if not store.exists:
        return pd.DataFrame(columns=["period_end", "metric", "stored_filed_at"])
    with store.connect(read_only=True) as con:
        return con.execute(
            "SELECT period_end, metric, filed_at AS stored_filed_at FROM fundamentals "
            "WHERE ticker = ? AND source = ?",
            [ticker, source],
        ).df()


def _point_in_time(rows: pd.DataFrame, stored: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Rows to write: not filed before their period ended, and not later than a stored row of
    the same period (the value known first stays). Returns (rows, kept earlier, dropped)."""
    valid = rows["filed_at"] >= rows["period_end"]
    rows = rows[valid]
    if stored.empty:
        return rows.reset_index(drop=True), 0, int((~valid).sum())
    stored = stored.assign(
        period_end=pd.to_datetime(stored["period_end"]).astype("datetime64[ns]"),
        stored_filed_at=pd.to_datetime(stored["stored_filed_at"]).astype("datetime64[ns]"),
    )
    merged = rows.merge(stored, on=["period_end", "metric"], how="left")
    later = (merged["stored_filed_at"] < merged["filed_at"]).to_numpy()
    kept = rows[~later].reset_index(drop=True)
    return kept, int(later.sum()), int((~valid).sum())


def fetch_fundamentals(
    store: Store,
    tickers: Sequence[str],
    *,
    source: str = SEC_SOURCE,
    client: SecClient | None = None,
    on_ticker: Callable[[str], None] | None = None,
) -> list[FetchReport]:
    """Fetch the filings of ``tickers`` and store them in the ``fundamentals`` table.

    Each ticker is fetched, parsed and written in its own transaction (through
    :func:`quantorch.data.fundamentals.import_fundamentals`), so an interruption keeps the
    tickers already done and running again completes the rest; nothing is duplicated (see
    the module docstring for what a second fetch replaces).

    Raises
    ------
    UserInputError
        An unknown ``source``, a missing User-Agent, a ticker the SEC does not know.
    DataSourceUnavailableError
        The SEC cannot be reached or fails (try again later).
    """
    from quantorch.data.fundamentals import FUNDAMENTAL_COLUMNS, import_fundamentals
    from quantorch.data.news import ImportReport

    if source not in SOURCES:
        suggestion = did_you_mean(source, SOURCES)
        raise UserInputError(
            f"unknown filings source '{source}'{suggestion}; available: {', '.join(SOURCES)}"
        )
    client = client or SecClient()
    reports = []
    for ticker in dict.fromkeys(t.strip().upper() for t in tickers if t.strip()):
        if on_ticker is not None:
            on_ticker(ticker)
        try:
            rows = client.company_facts(ticker)
        except QuantorchError as exc:
            if not reports:
                raise
            done = ", ".join(r.ticker for r in reports)
            raise type(exc)(
                f"{exc} (already stored: {done}; running again keeps them and fetches the rest)"
            ) from exc
        fresh, kept, dropped = _point_in_time(rows, _stored_filing_dates(store, ticker, source))
        if len(fresh):
            report = import_fundamentals(store, fresh[list(FUNDAMENTAL_COLUMNS)])
        else:
            report = ImportReport(rows=0, tickers=0)
        report.rows += kept
        report.unchanged += kept
        report.tickers = 1 if len(rows) else 0
        filed = rows["filed_at"]
        reports.append(
            FetchReport(
                ticker=ticker,
                import_report=report,
                kept_earlier=kept,
                dropped=dropped,
                first_filed=filed.min().date() if len(filed) else None,
                last_filed=filed.max().date() if len(filed) else None,
            )
        )
    return reports
