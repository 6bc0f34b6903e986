"""News in the store: file import, validation, UTC timestamps, idempotent writes.

A news file (CSV or Parquet) has one item per row: ``published_at, ticker, headline`` and
optionally ``body`` and ``source``. Other layouts import through a column mapping
(``{"headline": "text"}`` takes the headline from a ``text`` column, as in the StockNet
tweets). The whole file is validated before anything is written, like prices
(:func:`quantorch.data.service.validate_prices`): missing columns, timestamps that are not
ISO 8601 (or do not match ``date_format``, ``--date-format``), numbers as timestamps, times
before 1900 or more than a day ahead, empty or numeric tickers, empty headlines and duplicate
items each stop the import with the first offending row named (see
:mod:`quantorch.data._parsing`).

Time stamps are stored in UTC (naive ``TIMESTAMP``). A value with an offset (``...Z``,
``+02:00``, ``%z`` in the format, a tz-aware Parquet column) is converted; a value without one
is read in the time zone given (``timezone=``, ``--timezone``) or, if none is given, taken as
UTC and said so in the import notes. A date without a time of day is placed at the *end* of
that day (23:59:59.999999 in the time zone): the item might have been published after the
close, so a decision at that day's close must not see it.

Each item's id is a hash of (ticker, published_at, headline, source), so importing the same
file twice writes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from quantorch.data import _parsing as parsing
from quantorch.errors import DataValidationError, UserInputError
from quantorch.store import Store, repository

__all__ = [
    "NEWS_COLUMNS",
    "ImportReport",
    "import_news",
    "load_news",
    "news_id",
    "parse_mapping",
    "parse_timestamps_utc",
    "read_news_file",
    "read_table_file",
    "resolve_columns",
    "validate_news",
]

#: Columns of the ``news`` table, in order.
NEWS_COLUMNS = ("news_id", "published_at", "ticker", "headline", "body", "source")
_REQUIRED = ("published_at", "ticker", "headline")
_TARGETS = ("published_at", "ticker", "headline", "body", "source")
_END_OF_DAY = pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)


@dataclass
class ImportReport:
    """What an import did: rows in the file, rows written, rows already stored, notes."""

    rows: int
    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0
    tickers: int = 0
    notes: list[str] = field(default_factory=list)


def parse_mapping(
    text: str | Mapping[str, str] | None, targets: tuple[str, ...] = _TARGETS
) -> dict[str, str]:
    """``"headline=text,published_at=created"`` -> ``{"headline": "text", ...}``.

    Keys are the table's columns (``targets``), values the file's column names.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        pairs = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "=" not in part:
                raise UserInputError(
                    f"bad --map entry '{part}': use COLUMN=FILE_COLUMN, e.g. headline=text"
                )
            key, _, value = part.partition("=")
            pairs.append((key, value))
    mapping: dict[str, str] = {}
    for key, value in pairs:
        key, value = str(key).strip().lower(), str(value).strip()
        if key not in targets:
            raise UserInputError(
                f"bad --map target '{key}': map one of {', '.join(targets)} to a file column"
            )
        if not value:
            raise UserInputError(f"bad --map entry '{key}=': name the file column after '='")
        mapping[key] = value
    return mapping


def read_table_file(path: str | Path) -> pd.DataFrame:
    """A CSV (optionally compressed) or Parquet file as a frame, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"file {path} not found")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"{path}: cannot read as CSV or Parquet: {exc}") from exc


def resolve_columns(
    frame: pd.DataFrame,
    origin: str,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    mapping: Mapping[str, str] | None,
) -> dict[str, object]:
    """Table column -> the file's column label (case-insensitive; ``mapping`` wins)."""
    lowered: dict[str, object] = {}
    for column in frame.columns:
        lowered.setdefault(str(column).strip().lower(), column)
    resolved: dict[str, object] = {}
    for target in (*required, *optional):
        wanted = (mapping or {}).get(target)
        if wanted is not None:
            label = lowered.get(wanted.strip().lower())
            if label is None:
                raise DataValidationError(
                    f"{origin}: --map {target}={wanted}: the file has no column '{wanted}' "
                    f"(columns: {', '.join(map(str, frame.columns))})"
                )
            resolved[target] = label
        elif target in lowered:
            resolved[target] = lowered[target]
    missing = [c for c in required if c not in resolved]
    if missing:
        raise DataValidationError(
            f"{origin}: missing column(s) {', '.join(missing)}; the file has columns "
            f"{', '.join(map(str, frame.columns))}; name them with --map, e.g. "
            f"--map {missing[0]}=YOUR_COLUMN"
        )
    return resolved


def _zone(timezone: str | None) -> str | None:
    if timezone is None:
        return None
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserInputError(
            f"unknown time zone '{timezone}': use an IANA name such as America/New_York or UTC"
        ) from None
    return timezone


def parse_timestamps_utc(
    values: pd.Series,
    origin: str,
    column: str,
    timezone: str | None,
    *,
    date_format: str | None = None,
) -> tuple[pd.Series, list[str]]:
    """Naive-UTC ``datetime64[ns]`` timestamps and notes; raises on the first bad value.

    Values are read exactly: ISO 8601 with or without an offset, or ``date_format`` (strptime
    codes; see :mod:`quantorch.data._parsing`). See the module docs for offsets, naive values
    and dates without a time of day.
    """
    notes: list[str] = []
    zone = _zone(timezone)
    values = values.reset_index(drop=True)
    read = parsing.parse_timestamps(values, origin, column, date_format=date_format)
    stamps, aware, date_only = read.values, read.aware, read.date_only
    naive = ~aware
    if naive.any():
        offsets = np.where(date_only[naive], _END_OF_DAY.value, 0).astype("timedelta64[ns]")
        shifted = stamps[naive] + offsets
        if zone is None or zone == "UTC":
            utc = shifted
        else:
            localized = shifted.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
            bad = localized.isna().to_numpy()
            if bad.any():
                row = int(np.flatnonzero(naive)[np.flatnonzero(bad)[0]])
                raise DataValidationError(
                    f"{origin}: {column} {parsing.shown(values.iloc[row])} in "
                    f"{parsing.row_name(row)} is ambiguous or does not exist in {zone} (a "
                    "daylight-saving change); give it an offset"
                )
            utc = localized.dt.tz_convert("UTC").dt.tz_localize(None)
        stamps = stamps.copy()
        stamps[naive] = utc.astype("datetime64[ns]")
        if zone is None:
            notes.append(
                f"{int(naive.sum()):,} {column} value(s) had no time zone: taken as UTC "
                "(pass --timezone, e.g. America/New_York, if they are local times)"
            )
        if date_only.any():
            notes.append(
                f"{int(date_only.sum()):,} {column} value(s) are dates without a time: placed at "
                "the end of that day so a decision at its close does not see them"
            )
    return stamps.astype("datetime64[ns]"), notes


def _clean_text(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip()


def news_id(ticker: str, published_at: pd.Timestamp, headline: str, source: str) -> str:
    """Stable id of one item: a hash of (ticker, published_at UTC, headline, source)."""
    stamp = pd.Timestamp(published_at).strftime("%Y-%m-%dT%H:%M:%S.%f")
    blob = "\x1f".join((ticker, stamp, headline, source)).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32]


def validate_news(
    frame: pd.DataFrame,
    origin: str,
    *,
    mapping: Mapping[str, str] | None = None,
    source: str | None = None,
    timezone: str | None = None,
    date_format: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Check and normalise a news frame; returns (rows in :data:`NEWS_COLUMNS`, notes).

    ``source`` names the feed for every row (it overrides a ``source`` column); without either
    the source is ``file``. Raises :class:`DataValidationError` naming the first bad row.
    """
    columns = resolve_columns(frame, origin, _REQUIRED, ("body", "source"), mapping)
    if frame.empty:
        raise DataValidationError(f"{origin}: the file holds no rows")
    published, notes = parse_timestamps_utc(
        frame[columns["published_at"]],
        origin,
        "published_at",
        timezone,
        date_format=date_format,
    )
    tickers = parsing.parse_tickers(frame[columns["ticker"]], origin)
    headlines = _clean_text(frame[columns["headline"]].reset_index(drop=True))
    empty = headlines.isna() | (headlines == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataValidationError(
            f"{origin}: empty headline in {parsing.row_name(row)} (every item needs a headline "
            "or text)"
        )
    if "body" in columns:
        body = _clean_text(frame[columns["body"]].reset_index(drop=True))
        body = body.where(body != "")
    else:
        body = pd.Series(pd.NA, index=headlines.index, dtype="string")
    if source is not None:
        if not source.strip():
            raise UserInputError("--source must not be empty")
        sources = pd.Series(source.strip(), index=headlines.index, dtype="string")
    elif "source" in columns:
        sources = _clean_text(frame[columns["source"]].reset_index(drop=True))
        empty = sources.isna() | (sources == "")
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataValidationError(
                f"{origin}: empty source in {parsing.row_name(row)} (fill it or pass --source NAME)"
            )
    else:
        sources = pd.Series("file", index=headlines.index, dtype="string")
    out = pd.DataFrame(
        {
            "published_at": published,
            "ticker": tickers.astype(object),
            "headline": headlines.astype(object),
            "body": body.astype(object).where(body.notna(), None),
            "source": sources.astype(object),
        }
    )
    out.insert(
        0,
        "news_id",
        [
            news_id(t, p, h, s)
            for t, p, h, s in zip(
                out["ticker"], out["published_at"], out["headline"], out["source"], strict=True
            )
        ],
    )
    dup = out.duplicated("news_id", keep="first")
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((out["news_id"] == out["news_id"].iloc[row]).to_numpy())[0])
        raise DataValidationError(
            f"{origin}: {parsing.row_name(row)} repeats {parsing.row_name(first)} (same ticker "
            f"{out['ticker'].iloc[row]}, time {out['published_at'].iloc[row]}, headline and "
            "source); keep one of them"
        )
    return out[list(NEWS_COLUMNS)], notes


def read_news_file(
    path: str | Path,
    *,
    mapping: Mapping[str, str] | str | None = None,
    source: str | None = None,
    timezone: str | None = None,
    date_format: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Read and validate a news file (nothing is written); returns (rows, notes).

    ``date_format`` (strptime codes) reads ``published_at`` values that are not ISO 8601.
    """
    raw = read_table_file(path)
    return validate_news(
        raw,
        str(path),
        mapping=parse_mapping(mapping),
        source=source,
        timezone=timezone,
        date_format=date_format,
    )


def import_news(store: Store, frame: pd.DataFrame, notes: list[str] | None = None) -> ImportReport:
    """Write validated items (see :func:`read_news_file`) in one transaction.

    Items already stored (same id) are left as they are, so a re-import writes nothing.
    """
    if frame.empty:
        raise DataValidationError("the file holds no rows")
    report = ImportReport(
        rows=len(frame), tickers=int(frame["ticker"].nunique()), notes=list(notes or [])
    )
    rows = frame[list(NEWS_COLUMNS)]
    with store.transaction() as con:
        report.inserted = repository.insert_news(con, rows)
    report.unchanged = report.rows - report.inserted
    return report


def load_news(
    store: Store,
    tickers: list[str] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pd.DataFrame:
    """Stored items (published_at UTC in [start, end)), oldest first."""
    clauses, params = [], []
    if tickers is not None:
        clauses.append("ticker IN (SELECT unnest(?))")
        params.append(list(tickers))
    if start is not None:
        clauses.append("published_at >= ?")
        params.append(start)
    if end is not None:
        clauses.append("published_at < ?")
        params.append(end)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    with store.connect(read_only=True) as con:
        return con.execute(
            f"SELECT published_at, ticker, headline, body, source FROM news {where} "
            "ORDER BY ticker, published_at, news_id",
            params,
        ).df()
