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

from quantorch.data import _parsing as parsing
from quantorch.data import calendar
from quantorch.data.panel import PRICE_COLUMNS, PricePanel
from quantorch.data.providers import PriceProvider, get_provider
from quantorch.errors import (
    DataValidationError,
    DateRangeError,
    UnknownTickerError,
    UserInputError,
    did_you_mean,
)
from quantorch.store import Store, repository

__all__ = [
    "FetchReport",
    "JUMP_MAX",
    "PRICE_MAX",
    "ensure_prices",
    "find_bad_bars",
    "import_prices",
    "read_price_file",
    "validate_prices",
    "load_panel",
    "stored_coverage",
    "coverage_table",
    "resolve_window",
    "check_known_tickers",
]

_PRICE_FIELDS = ("open", "high", "low", "close", "adj_close")
#: Prices above this (USD) are refused: no listed share has cost near it (BRK-A: under 1e6).
PRICE_MAX = 1e7
#: A one-row adj_close move by this factor or more is refused in a file import.
JUMP_MAX = 1000.0


@dataclass
class FetchReport:
    """What an :func:`ensure_prices` call did: requests made and rows written."""

    requests: list[tuple[tuple[str, ...], dt.date, dt.date]] = field(default_factory=list)
    rows_written: int = 0

    @property
    def cached(self) -> bool:
        return not self.requests


def validate_prices(
    frame: pd.DataFrame, origin: str, *, date_format: str | None = None
) -> pd.DataFrame:
    """Check and normalise a long price frame; raise :class:`DataValidationError` on any fault.

    Required columns: date, ticker, close, adj_close; optional: open, high, low, volume.
    Every source's rows pass here. Dates are read exactly (ISO, or ``date_format``; see
    :mod:`quantorch.data._parsing`) within 1900-01-01 to tomorrow; tickers must be text; prices
    must be finite numbers in (0, 1e7] (no True/False columns), volumes finite and >= 0; one
    row per (ticker, date). The first offending row is named. A file import adds the checks of
    :func:`read_price_file`.
    """
    out = _normalise_prices(frame, origin, date_format)
    _refuse_duplicates(out, origin)
    return out.sort_values(["ticker", "date"], ignore_index=True)


def _normalise_prices(frame: pd.DataFrame, origin: str, date_format: str | None) -> pd.DataFrame:
    """The frame's columns read and checked one by one, rows in the frame's order."""
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
    n = len(frame)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    out["date"] = parsing.parse_dates(
        frame[columns["date"]], origin, "date", date_format=date_format
    ).astype("datetime64[ns]")
    out["ticker"] = parsing.parse_tickers(frame[columns["ticker"]], origin)
    for column in (*_PRICE_FIELDS, "volume"):
        if column in columns:
            required = column in ("close", "adj_close")
            out[column] = parsing.parse_numbers(
                frame[columns[column]], origin, column, required=required
            )
        else:
            out[column] = np.nan
    for column in _PRICE_FIELDS:
        values = out[column].to_numpy()
        bad = values <= 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                f"{origin}: non-positive {column} {values[row]:g} for {_bar(out, row)}; "
                "prices must be > 0"
            )
        bad = values > PRICE_MAX
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                f"{origin}: {column} {values[row]:g} for {_bar(out, row)} is above "
                f"{PRICE_MAX:,.0f} USD, more than any listed share has cost: a unit or "
                "decimal error (prices in cents? a volume column named as a price?)"
            )
    volume = out["volume"].to_numpy()
    if (volume < 0).any():
        row = int(np.flatnonzero(volume < 0)[0])
        raise DataValidationError(f"{origin}: negative volume {volume[row]:g} for {_bar(out, row)}")
    return out[list(PRICE_COLUMNS)]


def _bar(frame: pd.DataFrame, row: int) -> str:
    """``AAPL on 2021-03-01 (data row 4)``: a row named the way the messages name it."""
    return (
        f"{frame['ticker'].iloc[row]} on {frame['date'].iloc[row].date()} "
        f"({parsing.row_name(int(frame.index[row]))})"
    )


def _refuse_duplicates(frame: pd.DataFrame, origin: str) -> None:
    dup = frame.duplicated(["ticker", "date"], keep=False).to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise DataValidationError(
            f"{origin}: duplicate rows for {frame['ticker'].iloc[row]} on "
            f"{frame['date'].iloc[row].date()} (first at {parsing.row_name(row)}); keep one row "
            "per ticker and date"
        )


def find_bad_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Bars whose prices do not fit together, each with its reason; the others are fine.

    A bar is bad when ``high < low`` or its open or close lies outside ``[low, high]``
    (missing fields are not compared). ``frame`` is a normalised price frame; the result keeps
    its index and columns ticker, date, open, high, low, close, plus ``reason``, so a caller
    can refuse, drop or keep them.
    """
    high, low = frame["high"].to_numpy(), frame["low"].to_numpy()
    checks = {
        "high < low": high < low,
        "open outside [low, high]": (frame["open"].to_numpy() < low)
        | (frame["open"].to_numpy() > high),
        "close outside [low, high]": (frame["close"].to_numpy() < low)
        | (frame["close"].to_numpy() > high),
    }
    any_bad = np.logical_or.reduce(list(checks.values()))
    rows = np.flatnonzero(any_bad)
    bad = frame.iloc[rows][["ticker", "date", "open", "high", "low", "close"]].copy()
    masks = [(reason, mask[rows]) for reason, mask in checks.items()]
    bad["reason"] = [
        ", ".join(reason for reason, mask in masks if mask[i]) for i in range(len(rows))
    ]
    return bad


def _refuse_bad_bars(frame: pd.DataFrame, origin: str) -> None:
    bad = find_bad_bars(frame)
    if bad.empty:
        return
    shown = [
        f"{r.ticker} {r.date.date()} ({parsing.row_name(int(i))}) {r.reason}: open {r.open:g}, "
        f"high {r.high:g}, low {r.low:g}, close {r.close:g}"
        for i, r in zip(bad.index[:5], bad.head(5).itertuples(index=False), strict=True)
    ]
    raise DataValidationError(
        f"{origin}: {len(bad):,} bar(s) whose prices do not fit together, first "
        f"{len(shown)}: {'; '.join(shown)}; fix or drop these rows (high >= low, with open "
        "and close within [low, high])"
    )


def _refuse_non_sessions(frame: pd.DataFrame, origin: str, date_format: str | None) -> None:
    """Bars on weekends or NYSE holidays mean misread dates or a non-NYSE file: refuse them.

    Outside the span of the exchange calendar (it starts in 1985) only weekends are known.
    """
    if frame.empty:
        return
    every = calendar.sessions(parsing.EARLIEST, frame["date"].max())
    days = pd.DatetimeIndex(frame["date"].unique())
    covered = (days >= every[0]) & (days <= every[-1]) if len(every) else np.zeros(len(days), bool)
    closed = (covered & ~days.isin(every)) | (~covered & (days.day_of_week >= 5))
    if not closed.any():
        return
    rows = np.flatnonzero(frame["date"].isin(days[closed]).to_numpy())
    shown = []
    for row in rows[:5]:
        day = frame["date"].iloc[row]
        kind = day.day_name() if day.day_of_week >= 5 else f"{day.day_name()}, a holiday"
        shown.append(
            f"{frame['ticker'].iloc[row]} {day.date()} ({kind}, {parsing.row_name(int(row))})"
        )
    misread = f" (is --date-format {date_format} the order the file uses?)" if date_format else ""
    raise DataValidationError(
        f"{origin}: {len(rows):,} bar(s) on days the NYSE was closed (XNYS calendar), first "
        f"{len(shown)}: {', '.join(shown)}; a bar on a weekend or holiday means the dates were "
        f"misread{misread} or the file is not NYSE data; fix the dates or drop those rows"
    )


def _refuse_jumps(frame: pd.DataFrame, origin: str) -> None:
    """A one-row adj_close move of JUMP_MAX times or more is a unit or decimal error.

    ``frame`` is sorted by ticker and date; its index holds the rows' places in the file.
    """
    close = frame["adj_close"].to_numpy()
    tickers = frame["ticker"].to_numpy()
    if len(close) < 2:
        return
    same = tickers[1:] == tickers[:-1]
    ratio = close[1:] / close[:-1]
    jumps = same & ((ratio >= JUMP_MAX) | (ratio <= 1 / JUMP_MAX))
    if not jumps.any():
        return
    at = int(np.flatnonzero(jumps)[0]) + 1
    before, after = frame.iloc[at - 1], frame.iloc[at]
    factor = ratio[at - 1] if ratio[at - 1] >= 1 else 1 / ratio[at - 1]
    raise DataValidationError(
        f"{origin}: adj_close of {after['ticker']} moves by a factor of {factor:,.0f} in one "
        f"row, from {before['adj_close']:g} on {before['date'].date()} to "
        f"{after['adj_close']:g} on {after['date'].date()} "
        f"({parsing.row_name(int(frame.index[at]))}): a move of {JUMP_MAX:,.0f}x or more is a "
        "unit or decimal error; fix the file"
    )


#: Text that means "no value" in a price column of a CSV (a ticker or date column keeps it).
_NA_TEXT = ["", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None", "#N/A"]


def _read_price_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    header = pd.read_csv(path, nrows=0).columns
    text = {c for c in header if str(c).strip().lower() in ("date", "ticker")}
    na_values = {c: [""] if c in text else _NA_TEXT for c in header}  # ticker NA stays NA
    return pd.read_csv(path, keep_default_na=False, na_values=na_values)


def read_price_file(
    path: str | Path, *, adjusted: bool = False, date_format: str | None = None
) -> pd.DataFrame:
    """Read a CSV or Parquet price file and validate it (nothing is written).

    On top of :func:`validate_prices` a file must have its bars on XNYS sessions, bars whose
    prices fit together (:func:`find_bad_bars`), and no one-row adj_close move of
    :data:`JUMP_MAX` times or more.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"file {path} not found")
    try:
        raw = _read_price_table(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"{path}: cannot read as CSV or Parquet: {exc}") from exc
    if adjusted:
        lowered = {str(c).strip().lower(): c for c in raw.columns}
        if "adj_close" not in lowered and "close" in lowered:
            raw = raw.assign(adj_close=raw[lowered["close"]])
    origin = str(path)
    out = _normalise_prices(raw, origin, date_format)
    _refuse_non_sessions(out, origin, date_format)
    _refuse_duplicates(out, origin)
    _refuse_bad_bars(out, origin)
    out = out.sort_values(["ticker", "date"])
    _refuse_jumps(out, origin)
    return out.reset_index(drop=True)


def _write(con, frame: pd.DataFrame, source: str) -> None:
    """Upsert bars (each ticker's coverage is extended by :func:`_extend_coverage`)."""
    repository.upsert_prices(con, frame, source)


def _extend_coverage(con, source: str, spans: dict[str, tuple[dt.date, dt.date]]) -> None:
    repository.extend_coverage(con, source, spans)


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
    """First and last stored date per ticker for ``source`` (nothing for a missing file)."""
    if not store.exists:
        return {}
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT ticker, first_date, last_date FROM price_coverage WHERE source = ?", [source]
        ).fetchall()
    return {t: (first, last) for t, first, last in rows}


def coverage_table(store: Store) -> pd.DataFrame:
    """Ticker, source, first and last date, rows: what ``quantorch data list`` prints (no rows
    for a missing file, which is not created)."""
    if not store.exists:
        return pd.DataFrame(columns=["ticker", "source", "first_date", "last_date", "rows"])
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
            suggestion = did_you_mean(ticker, known)
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
