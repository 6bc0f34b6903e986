"""Prices in and out of the store: incremental fetch, file import, validation, panels.

Every provider's rows go through :func:`validate_prices` and are written in one transaction
together with the coverage they extend, so a failed fetch or import writes nothing. A fetch
for a range inside the stored coverage makes no request.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from quantorch.data import calendar
from quantorch.data.panel import PRICE_COLUMNS, PricePanel
from quantorch.data.providers import PriceProvider, get_provider
from quantorch.errors import (
    DataValidationError,
    DateRangeError,
    UnknownTickerError,
    UserInputError,
    closest,
)
from quantorch.store import Store

__all__ = [
    "FetchReport",
    "ensure_prices",
    "import_prices",
    "read_price_file",
    "validate_prices",
    "load_panel",
    "stored_coverage",
    "coverage_table",
    "resolve_window",
    "check_known_tickers",
]

_OPTIONAL = ("open", "high", "low", "volume")
_PRICE_FIELDS = ("open", "high", "low", "close", "adj_close")


@dataclass
class FetchReport:
    """What an :func:`ensure_prices` call did: requests made and rows written."""

    requests: list[tuple[tuple[str, ...], dt.date, dt.date]] = field(default_factory=list)
    rows_written: int = 0

    @property
    def cached(self) -> bool:
        return not self.requests


def validate_prices(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check and normalise a long price frame; raise :class:`DataValidationError` on any fault.

    Required columns: date, ticker, close, adj_close; optional: open, high, low, volume.
    Refuses unparseable dates, empty tickers, duplicate (ticker, date) rows, missing or
    non-positive prices and negative volumes, naming the first offending row.
    """
    columns = {str(c).strip().lower(): c for c in frame.columns}
    missing = [c for c in ("date", "ticker", "close", "adj_close") if c not in columns]
    if missing:
        hint = ""
        if missing == ["adj_close"]:
            hint = " (if your closes are already adjusted, pass --adjusted to use close)"
        raise DataValidationError(
            f"{origin}: missing column(s) {', '.join(missing)}; expected date, ticker, close, "
            f"adj_close and optionally open, high, low, volume{hint}"
        )
    out = pd.DataFrame({c: frame[columns[c]] for c in PRICE_COLUMNS if c in columns})
    for column in _OPTIONAL:
        if column not in out:
            out[column] = np.nan

    dates = pd.to_datetime(out["date"], errors="coerce", format="mixed")
    bad = dates.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValidationError(
            f"{origin}: unparseable date {out['date'].iloc[row]!r} in row {row + 1} "
            "(use ISO dates such as 2021-03-01)"
        )
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_convert("America/New_York").dt.tz_localize(None)
    out["date"] = dates.dt.normalize().astype("datetime64[ns]")

    tickers = out["ticker"].astype("string").str.strip().str.upper()
    if tickers.isna().any() or (tickers == "").any():
        row = int(np.flatnonzero((tickers.isna() | (tickers == "")).to_numpy())[0])
        raise DataValidationError(f"{origin}: empty ticker in row {row + 1}")
    out["ticker"] = tickers.astype(object)

    for column in (*_PRICE_FIELDS, "volume"):
        values = pd.to_numeric(out[column], errors="coerce")
        unparsed = values.isna() & out[column].notna()
        if unparsed.any():
            row = int(np.flatnonzero(unparsed.to_numpy())[0])
            raise DataValidationError(
                f"{origin}: non-numeric {column} {out[column].iloc[row]!r} in row {row + 1}"
            )
        out[column] = values.astype("float64")
    for column in ("close", "adj_close"):
        if out[column].isna().any():
            row = int(np.flatnonzero(out[column].isna().to_numpy())[0])
            raise DataValidationError(f"{origin}: missing {column} in row {row + 1}")
    for column in _PRICE_FIELDS:
        bad = out[column] <= 0
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataValidationError(
                f"{origin}: non-positive {column} {out[column].iloc[row]} for "
                f"{out['ticker'].iloc[row]} on {out['date'].iloc[row].date()} (row {row + 1}); "
                "prices must be > 0"
            )
    if (out["volume"] < 0).any():
        row = int(np.flatnonzero((out["volume"] < 0).to_numpy())[0])
        raise DataValidationError(f"{origin}: negative volume in row {row + 1}")
    dup = out.duplicated(["ticker", "date"], keep=False)
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataValidationError(
            f"{origin}: duplicate rows for {out['ticker'].iloc[row]} on "
            f"{out['date'].iloc[row].date()} (first at row {row + 1}); keep one row per "
            "ticker and date"
        )
    return out[list(PRICE_COLUMNS)].sort_values(["ticker", "date"], ignore_index=True)


def read_price_file(path: str | Path, *, adjusted: bool = False) -> pd.DataFrame:
    """Read a CSV or Parquet price file and validate it (nothing is written)."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"file {path} not found")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            raw = pd.read_parquet(path)
        else:
            raw = pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"{path}: cannot read as CSV or Parquet: {exc}") from exc
    if adjusted:
        lowered = {str(c).strip().lower() for c in raw.columns}
        if "adj_close" not in lowered and "close" in lowered:
            raw = raw.assign(adj_close=raw[[c for c in raw.columns if c.lower() == "close"][0]])
    return validate_prices(raw, origin=str(path))


def _write(con, frame: pd.DataFrame, source: str) -> None:
    """Upsert bars and extend each ticker's coverage to include them."""
    rows = frame.assign(source=source)
    con.register("_incoming", rows)
    try:
        con.execute(
            "INSERT OR REPLACE INTO prices "
            "SELECT ticker, CAST(date AS DATE), source, open, high, low, close, adj_close, volume "
            "FROM _incoming"
        )
    finally:
        con.unregister("_incoming")


def _extend_coverage(con, source: str, spans: dict[str, tuple[dt.date, dt.date]]) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for ticker, (first, last) in spans.items():
        con.execute(
            """
            INSERT INTO price_coverage VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (ticker, source) DO UPDATE SET
                first_date = least(price_coverage.first_date, excluded.first_date),
                last_date = greatest(price_coverage.last_date, excluded.last_date),
                fetched_at = excluded.fetched_at
            """,
            [ticker, source, first, last, now],
        )


def import_prices(store: Store, frame: pd.DataFrame, source: str = "file") -> int:
    """Write a validated frame (see :func:`read_price_file`) in one transaction; rows written."""
    if frame.empty:
        raise DataValidationError("the file holds no rows")
    spans = {
        str(t): (g["date"].min().date(), g["date"].max().date())
        for t, g in frame.groupby("ticker")
    }
    with store.transaction() as con:
        _write(con, frame, source)
        _extend_coverage(con, source, spans)
    return len(frame)


def stored_coverage(store: Store, source: str) -> dict[str, tuple[dt.date, dt.date]]:
    """First and last stored date per ticker for ``source``."""
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT ticker, first_date, last_date FROM price_coverage WHERE source = ?", [source]
        ).fetchall()
    return {t: (first, last) for t, first, last in rows}


def coverage_table(store: Store) -> pd.DataFrame:
    """Ticker, source, first and last date, rows: what ``quantorch data list`` prints."""
    with store.connect(read_only=True) as con:
        return con.execute(
            """
            SELECT ticker, source, min(date) AS first_date, max(date) AS last_date,
                   count(*) AS rows
            FROM prices GROUP BY ticker, source ORDER BY source, ticker
            """
        ).df()


def check_known_tickers(tickers: Sequence[str], known: Sequence[str], source: str) -> None:
    for ticker in tickers:
        if ticker not in known:
            hint = closest(ticker, known)
            suggestion = f" (did you mean {hint}?)" if hint else ""
            if source == "file":
                fix = "import it first with `quantorch data import FILE`"
            else:
                fix = "run `quantorch data list --available` to see what it has"
            raise UnknownTickerError(
                f"unknown ticker '{ticker}' for source {source}{suggestion}; {fix}"
            )


def resolve_window(
    available: dict[str, tuple[dt.date, dt.date]] | None,
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date | None,
    source: str,
) -> tuple[dt.date, dt.date]:
    """Validate a [start, end] window against the data a source holds for ``tickers``.

    ``end=None`` means the latest date available. Raises :class:`DateRangeError` saying the
    range available when the window is reversed or has no overlap with the data.
    """
    if available is None:  # online source: bounded by the clock
        last = calendar.last_completed_session().date()
        first = dt.date(1970, 1, 1)
    else:
        spans = [available[t] for t in tickers if t in available]
        first = min(s[0] for s in spans)
        last = max(s[1] for s in spans)
    if end is not None and start > end:
        raise DateRangeError(f"start {start} is after end {end}; pass --start before --end")
    if start > last or (end is not None and end < first):
        asked = f"{start} to {end}" if end is not None else f"{start} onwards"
        raise DateRangeError(
            f"no {source} data for {asked}: the data available for these tickers "
            f"runs from {first} to {last}"
        )
    end = end or last
    return max(start, first), min(end, last)


def ensure_prices(
    store: Store,
    source: str,
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    provider: PriceProvider | None = None,
    on_request: Callable[[str], None] | None = None,
) -> FetchReport:
    """Make sure the store holds ``source`` bars for ``tickers`` over [start, end].

    Only the gaps outside the stored coverage are requested, grouped into one request per
    distinct gap. Unknown tickers raise :class:`UnknownTickerError` with a suggestion.
    """
    report = FetchReport()
    tickers = list(dict.fromkeys(tickers))
    if provider is None:
        provider = get_provider(source)
    coverage = stored_coverage(store, source)
    if provider is None:  # file: nothing to fetch, the rows must be there already
        check_known_tickers(tickers, list(coverage), source)
        return report
    available = provider.available()
    if available is not None:
        check_known_tickers(tickers, list(available), source)

    gaps: dict[tuple[dt.date, dt.date], list[str]] = defaultdict(list)
    for ticker in tickers:
        lo, hi = start, end
        if available is not None:
            first, last = available[ticker]
            lo, hi = (first, last) if provider.whole_history else (max(lo, first), min(hi, last))
        else:
            hi = min(hi, calendar.last_completed_session().date())
        if lo > hi:
            continue
        stored = coverage.get(ticker)
        if stored is None:
            gaps[(lo, hi)].append(ticker)
            continue
        if lo < stored[0]:
            gaps[(lo, stored[0] - dt.timedelta(days=1))].append(ticker)
        if hi > stored[1]:
            gaps[(stored[1] + dt.timedelta(days=1), hi)].append(ticker)

    fetched: list[pd.DataFrame] = []
    spans: dict[str, tuple[dt.date, dt.date]] = {}
    for (lo, hi), group in sorted(gaps.items()):
        if len(calendar.sessions(lo, hi)) == 0:  # only weekends or holidays: nothing to ask
            for ticker in group:
                spans[ticker] = _union(spans.get(ticker), (lo, hi))
            continue
        if on_request:
            on_request(f"fetching {len(group)} ticker(s) from {source}: {lo} to {hi}")
        frame = provider.fetch(group, lo, hi)
        report.requests.append((tuple(group), lo, hi))
        fetched.append(validate_prices(frame, origin=f"{source} response"))
        for ticker in group:
            spans[ticker] = _union(spans.get(ticker), (lo, hi))
    if spans:
        rows = pd.concat(fetched, ignore_index=True) if fetched else None
        with store.transaction() as con:
            if rows is not None and not rows.empty:
                _write(con, rows, source)
            _extend_coverage(con, source, spans)
        report.rows_written = 0 if rows is None else len(rows)
    return report


def _union(
    a: tuple[dt.date, dt.date] | None, b: tuple[dt.date, dt.date]
) -> tuple[dt.date, dt.date]:
    return b if a is None else (min(a[0], b[0]), max(a[1], b[1]))


def load_panel(
    store: Store, source: str, tickers: Sequence[str], start: dt.date, end: dt.date
) -> PricePanel:
    """The stored bars of ``tickers`` on the XNYS sessions in [start, end] as a panel."""
    tickers = list(tickers)
    with store.connect(read_only=True) as con:
        frame = con.execute(
            f"""
            SELECT {", ".join(PRICE_COLUMNS)} FROM prices
            WHERE source = ? AND ticker IN (SELECT unnest(?)) AND date BETWEEN ? AND ?
            ORDER BY ticker, date
            """,
            [source, tickers, start, end],
        ).df()
    index = calendar.sessions(start, end)
    extra = pd.DatetimeIndex(pd.to_datetime(frame["date"]).unique()).difference(index)
    if len(extra):
        index = index.union(extra)  # a source trading on a non-XNYS day keeps its bars
    index.name = "date"
    return PricePanel.from_long(frame, index, tickers)
