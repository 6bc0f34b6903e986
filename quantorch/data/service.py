"""Prices in and out of the store: incremental fetch, file import, validation, panels.

Every provider's rows go through :func:`validate_prices` and are written in one transaction
together with the coverage they extend, so a failed fetch or import writes nothing. A fetch
for a range inside the stored coverage makes no request.

Real files have defects (:func:`find_price_defects`): bars whose prices do not fit together,
one-day decimal-shift glitches of the close, an open, high or low far from the close,
zero-volume rows (the *bad rows*) and missing
sessions inside a ticker's span (*gaps*, reported only). A file import refuses bad rows by
default, or drops them (``skip``) or stores them flagged (``keep``, :data:`BAD_ROW_MODES`);
what was dropped or kept is written to a JSON report, kept rows also to a flags file beside
the database, and :func:`load_panel` warns whenever a panel holds a flagged bar.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
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
    "BAD_ROW_MODES",
    "DEFECT_KINDS",
    "FetchReport",
    "FlaggedBarsWarning",
    "PriceDefects",
    "PriceFile",
    "bad_row_mode",
    "bad_rows_error",
    "find_price_defects",
    "flagged_bars",
    "inspect_price_file",
    "rows_to_import",
    "write_defect_report",
    "FAR_FROM_CLOSE",
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
#: What a file import does with bad rows: refuse the file, drop them, or store them flagged.
BAD_ROW_MODES = ("fail", "skip", "keep")
#: Kinds of bad row, with how messages name them (a row may be of several kinds).
DEFECT_KINDS = {
    "bad_bar": "bar(s) whose prices do not fit together",
    "decimal_shift": "one-day decimal-shift glitch(es) of the close",
    "far_from_close": "bar(s) with an open, high or low over 2x away from the close",
    "zero_volume": "zero-volume row(s)",
}
#: An open, high or low more than this factor away from the close is a bad print (a decimal
#: shift of one field that still fits [low, high], such as an open and low both /10).
FAR_FROM_CLOSE = 2.0
#: A decimal shift: a one-day move within 10**(+-0.1) of x10, x100, /10 or /100 ...
_SHIFT_TOLERANCE = 0.1
#: ... after which the next close is back within this factor of the one before.
_SHIFT_RETURN = 1.25


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


@dataclass(frozen=True)
class PriceDefects:
    """The defects of a price frame: bad rows (with their kinds) and gaps.

    ``rows`` has one row per bad row, indexed by the row's place in the frame (the file's
    data row), with columns ticker, date, open, high, low, close, volume, ``kinds`` (the
    :data:`DEFECT_KINDS` keys it falls under, comma-separated) and ``reason``. ``gaps`` has
    columns ticker, date: each XNYS session inside a ticker's first-to-last span with no bar.
    """

    rows: pd.DataFrame
    gaps: pd.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        """Bad rows per kind (a row of two kinds counts under both)."""
        if self.rows.empty:
            return dict.fromkeys(DEFECT_KINDS, 0)
        kinds = self.rows["kinds"].str.split(", ").explode()
        return {kind: int((kinds == kind).sum()) for kind in DEFECT_KINDS}

    @property
    def high_below_low(self) -> int:
        if self.rows.empty:
            return 0
        return int(self.rows["reason"].str.contains("high < low", regex=False).sum())

    def summary(self) -> str:
        """``43 bar(s) whose prices do not fit together (17 high < low), 284 zero-volume ...``."""
        parts = []
        for kind, n in self.counts.items():
            if n:
                extra = f" ({self.high_below_low} high < low)" if kind == "bad_bar" else ""
                parts.append(f"{n:,} {DEFECT_KINDS[kind]}{extra}")
        return ", ".join(parts)

    def gaps_summary(self) -> str:
        if self.gaps.empty:
            return ""
        return (
            f"{len(self.gaps):,} missing session(s) inside the span of "
            f"{self.gaps['ticker'].nunique():,} ticker(s)"
        )

    def describe_rows(self, n: int = 5) -> list[str]:
        """``n`` bad rows as the messages show them: the first row of each kind, then the
        most serious rows (in the order of :data:`DEFECT_KINDS`) in file order."""
        kinds = self.rows["kinds"].to_numpy()
        first = [int(np.flatnonzero([k in ks for ks in kinds])[0])
                 for k in DEFECT_KINDS if any(k in ks for ks in kinds)]  # fmt: skip
        rank = np.array([min(list(DEFECT_KINDS).index(k) for k in ks.split(", "))
                         for ks in kinds], dtype=np.int64)  # fmt: skip
        rest = [int(i) for i in np.argsort(rank, kind="stable") if int(i) not in first]
        order = sorted(first[:n], key=lambda i: (rank[i], i)) + rest
        shown = self.rows.iloc[order[:n]]
        return [
            f"{r.ticker} {r.date.date()} ({parsing.row_name(int(i))}) {r.reason}: open "
            f"{r.open:g}, high {r.high:g}, low {r.low:g}, close {r.close:g}, volume {r.volume:.0f}"
            for i, r in zip(shown.index, shown.itertuples(index=False), strict=True)
        ]

    def to_dict(self) -> dict:
        """JSON-ready: counts, every bad row and every gap."""
        rows = self.rows.assign(
            data_row=self.rows.index.to_numpy() + 1, date=self.rows["date"].dt.strftime("%Y-%m-%d")
        )
        rows = rows.astype(object).where(rows.notna(), None)
        gaps = self.gaps.assign(date=self.gaps["date"].dt.strftime("%Y-%m-%d"))
        return {
            "counts": {**self.counts, "high_below_low": self.high_below_low,
                       "bad_rows": len(self.rows), "gaps": len(self.gaps),
                       "tickers_with_gaps": int(self.gaps["ticker"].nunique())},
            "bad_rows": rows.to_dict(orient="records"),
            "gaps": gaps.to_dict(orient="records"),
        }  # fmt: skip


def _decimal_shifts(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Rows whose close (or adj_close) is x10, x100, /10 or /100 the day before's and whose
    next close is back near the day before's: a one-day decimal-shift glitch.

    ``frame`` is sorted by ticker and date. A real crash or rebound (the new level holds) and
    a move by another factor (an IPO-day artefact at x2) are not glitches; a glitch on a
    ticker's last row cannot be told from a real move and is not flagged.
    """
    tickers = frame["ticker"].to_numpy()
    n = len(tickers)
    found = np.zeros(n, dtype=bool)
    reasons = np.full(n, "", dtype=object)
    if n < 3:
        return found, list(reasons)
    same = tickers[1:] == tickers[:-1]
    inner = np.zeros(n, dtype=bool)
    inner[1:-1] = same[:-1] & same[1:]  # a row with a previous and a next row of its ticker
    for column in ("close", "adj_close"):
        values = frame[column].to_numpy(dtype=np.float64)
        prev = np.r_[np.nan, values[:-1]]
        after = np.r_[values[1:], np.nan]
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.log10(values / prev)
            back = np.abs(np.log(after / prev))
        digits = np.rint(np.abs(shift))
        hit = (
            inner
            & ~found
            & ((digits == 1) | (digits == 2))
            & (np.abs(np.abs(shift) - digits) < _SHIFT_TOLERANCE)
            & (back < np.log(_SHIFT_RETURN))
        )
        for i in np.flatnonzero(hit):
            factor = f"/{10 ** int(digits[i])}" if shift[i] < 0 else f"x{10 ** int(digits[i])}"
            reasons[i] = (
                f"{column} {factor} for one day ({prev[i]:g} before, {after[i]:g} after)"
            )
        found |= hit
    return found, list(reasons)


def _gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """Each XNYS session inside a ticker's span without a bar (``frame`` sorted by ticker,
    date; bars off the sessions were refused before)."""
    empty = pd.DataFrame({"ticker": pd.Series(dtype=object),
                          "date": pd.Series(dtype="datetime64[ns]")})  # fmt: skip
    if len(frame) < 2:
        return empty
    every = calendar.sessions(frame["date"].min(), frame["date"].max())
    if len(every) == 0:
        return empty
    dates = frame["date"].to_numpy()
    position = np.searchsorted(every.to_numpy(), dates)
    position = np.where(every.to_numpy()[np.minimum(position, len(every) - 1)] == dates,
                        position, -1)  # fmt: skip
    tickers = frame["ticker"].to_numpy()
    step = np.diff(position)
    at = np.flatnonzero((tickers[1:] == tickers[:-1]) & (position[:-1] >= 0) & (step > 1))
    if len(at) == 0:
        return empty
    missing = step[at] - 1
    starts = np.repeat(position[at], missing) + 1
    offsets = np.arange(missing.sum()) - np.repeat(np.cumsum(missing) - missing, missing)
    return pd.DataFrame(
        {"ticker": np.repeat(tickers[at], missing), "date": every[starts + offsets]}
    )


def find_price_defects(frame: pd.DataFrame) -> PriceDefects:
    """Bad rows and gaps of a normalised price frame sorted by ticker and date.

    Bad rows are of four kinds (:data:`DEFECT_KINDS`): ``bad_bar`` (:func:`find_bad_bars`),
    ``decimal_shift`` (a close x10, x100, /10 or /100 the previous one that comes back the
    next day), ``far_from_close`` (an open, high or low more than :data:`FAR_FROM_CLOSE`
    times away from the close: a one-field decimal shift that still fits the bar, or a bad
    print such as the 2010-05-06 flash-crash lows) and ``zero_volume``. Gaps are the XNYS
    sessions inside a ticker's span with no bar (reported, not refused).
    """
    masks: dict[str, np.ndarray] = {}
    reasons: dict[str, np.ndarray] = {}
    bad = find_bad_bars(frame)
    where = np.isin(frame.index.to_numpy(), bad.index.to_numpy())
    masks["bad_bar"] = where
    reasons["bad_bar"] = np.full(len(frame), "", dtype=object)
    reasons["bad_bar"][np.flatnonzero(where)] = bad["reason"].reindex(
        frame.index[where]
    ).to_numpy()
    shifted, shift_reasons = _decimal_shifts(frame)
    masks["decimal_shift"], reasons["decimal_shift"] = shifted, np.array(shift_reasons, object)
    close = frame["close"].to_numpy()
    far_reasons = np.full(len(frame), "", dtype=object)
    far = np.zeros(len(frame), dtype=bool)
    # a high below the close, or a low above it, is a bad bar already: only the outer side
    for column, above, below in (("open", True, True), ("high", True, False),
                                 ("low", False, True)):  # fmt: skip
        values = frame[column].to_numpy()
        with np.errstate(invalid="ignore"):
            ratio = values / close
            off = (above & (ratio > FAR_FROM_CLOSE)) | (below & (ratio < 1 / FAR_FROM_CLOSE))
        for i in np.flatnonzero(off):
            sep = ", " if far_reasons[i] else ""
            far_reasons[i] += f"{sep}{column} {values[i]:g} is {ratio[i]:.3g}x the close"
        far |= off
    masks["far_from_close"], reasons["far_from_close"] = far, far_reasons
    zero = frame["volume"].to_numpy() == 0
    masks["zero_volume"] = zero
    reasons["zero_volume"] = np.where(zero, "zero volume", "").astype(object)
    any_bad = np.logical_or.reduce(list(masks.values()))
    at = np.flatnonzero(any_bad)
    rows = frame.iloc[at][["ticker", "date", "open", "high", "low", "close", "volume"]].copy()
    rows["kinds"] = pd.Series(
        [", ".join(k for k in DEFECT_KINDS if masks[k][i]) for i in at], index=rows.index,
        dtype=object,
    )
    rows["reason"] = pd.Series(
        ["; ".join(reasons[k][i] for k in DEFECT_KINDS if masks[k][i]) for i in at],
        index=rows.index, dtype=object,
    )
    return PriceDefects(rows=rows.sort_index(), gaps=_gaps(frame))  # rows in file order


def bad_rows_error(defects: PriceDefects, origin: str) -> DataValidationError:
    """The one-line refusal of a file with bad rows: how many of each kind, the first five."""
    counts = {k: n for k, n in defects.counts.items() if n}
    shown = defects.describe_rows(5)
    if list(counts) == ["bad_bar"]:
        what = f"{len(defects.rows):,} {DEFECT_KINDS['bad_bar']}"
    else:
        what = f"{len(defects.rows):,} bad row(s) ({defects.summary()})"
    fix = "fix or drop these rows"
    if "bad_bar" in counts:
        fix += " (high >= low, with open and close within [low, high])"
    return DataValidationError(
        f"{origin}: {what}, first {len(shown)}: {'; '.join(shown)}; {fix}, or pass "
        "--on-bad-rows skip (drop them, recorded in a report) or --on-bad-rows keep (store "
        "them, flagged)"
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


@dataclass(frozen=True)
class PriceFile:
    """A price file read and checked for format (:func:`inspect_price_file`), bad rows not
    yet acted on: ``frame`` sorted by ticker and date, indexed by each row's place in the
    file; ``defects`` what :func:`find_price_defects` found in it."""

    frame: pd.DataFrame
    defects: PriceDefects
    origin: str


def inspect_price_file(
    path: str | Path, *, adjusted: bool = False, date_format: str | None = None
) -> PriceFile:
    """Read a CSV or Parquet price file, refuse format errors, and find its defects.

    Format errors are always refused (:func:`validate_prices`'s checks, bars off the XNYS
    sessions, duplicates); bad rows and gaps are found, not acted on: see
    :func:`rows_to_import`. Nothing is written.
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
    out = out.sort_values(["ticker", "date"], kind="stable")
    return PriceFile(out, find_price_defects(out), origin)


def rows_to_import(price_file: PriceFile, on_bad_rows: str = "fail") -> pd.DataFrame:
    """The rows to store under ``on_bad_rows`` (:data:`BAD_ROW_MODES`).

    ``fail`` refuses a file with any bad row (:func:`bad_rows_error`), ``skip`` drops them,
    ``keep`` keeps them (the caller records them as flagged). A one-row adj_close move of
    :data:`JUMP_MAX` times or more among the rows kept is refused in every mode.
    """
    mode = bad_row_mode(on_bad_rows)
    frame, bad = price_file.frame, price_file.defects.rows
    if mode == "fail" and not bad.empty:
        raise bad_rows_error(price_file.defects, price_file.origin)
    if mode == "skip" and not bad.empty:
        frame = frame.drop(index=bad.index)
    _refuse_jumps(frame, price_file.origin)
    return frame.reset_index(drop=True)


def bad_row_mode(on_bad_rows: str) -> str:
    """``on_bad_rows`` checked against :data:`BAD_ROW_MODES` (case-insensitive), or refuse."""
    mode = str(on_bad_rows).strip().lower()
    if mode not in BAD_ROW_MODES:
        raise UserInputError(
            f"unknown --on-bad-rows {on_bad_rows!r}{did_you_mean(mode, BAD_ROW_MODES)}; "
            f"use one of {', '.join(BAD_ROW_MODES)}"
        )
    return mode


def read_price_file(
    path: str | Path,
    *,
    adjusted: bool = False,
    date_format: str | None = None,
    on_bad_rows: str = "fail",
) -> pd.DataFrame:
    """Read a CSV or Parquet price file and validate it (nothing is written).

    On top of :func:`validate_prices` a file must have its bars on XNYS sessions, no bad rows
    (:func:`find_price_defects`: bars whose prices do not fit together, one-day decimal-shift
    glitches, zero volume) unless ``on_bad_rows`` is ``skip`` or ``keep``, and no one-row
    adj_close move of :data:`JUMP_MAX` times or more.
    """
    price_file = inspect_price_file(path, adjusted=adjusted, date_format=date_format)
    return rows_to_import(price_file, on_bad_rows)


def write_defect_report(
    price_file: PriceFile, on_bad_rows: str, folder: str | Path, *, rows_imported: int
) -> Path:
    """Write what an import found and did with it as JSON in ``folder``; the file's path.

    Holds the file, the mode, the counts per kind, every bad row (skipped or kept) and every
    gap. Named ``import-<file stem>-<UTC time>.json``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    stem = Path(price_file.origin).name.split(".")[0] or "prices"
    path = folder / f"import-{stem}-{now:%Y%m%dT%H%M%S%fZ}.json"
    mode = bad_row_mode(on_bad_rows)
    payload = {
        "file": str(Path(price_file.origin).resolve()),
        "created_at": now.isoformat(),
        "on_bad_rows": mode,
        "rows_read": len(price_file.frame),
        "rows_imported": rows_imported,
        "bad_rows_action": {"skip": "skipped", "keep": "kept, flagged"}.get(mode, "none"),
        **price_file.defects.to_dict(),
    }
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def _flags_path(store: Store) -> Path:
    return Path(store.path).with_name(Path(store.path).name + ".flagged.json")


def _update_flags(
    store: Store, source: str, tickers: Sequence[str], flagged: pd.DataFrame | None
) -> None:
    """Replace the flagged bars of ``tickers`` for ``source`` by ``flagged`` (kept bad rows).

    The flags file sits beside the database (``<db>.flagged.json``): no schema change, and
    :func:`load_panel` reads it to warn about a panel holding kept bad rows.
    """
    path = _flags_path(store)
    if not path.exists() and (flagged is None or flagged.empty):
        return
    entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    replaced = set(tickers)
    entries = [e for e in entries if not (e["source"] == source and e["ticker"] in replaced)]
    if flagged is not None and not flagged.empty:
        entries += [
            {"source": source, "ticker": str(r.ticker), "date": f"{r.date:%Y-%m-%d}",
             "kinds": r.kinds, "reason": r.reason}
            for r in flagged.itertuples(index=False)
        ]  # fmt: skip
    path.write_text(json.dumps(entries, indent=0) + "\n", encoding="utf-8")


def flagged_bars(
    store: Store,
    source: str,
    tickers: Sequence[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> pd.DataFrame:
    """Stored bars kept with ``--on-bad-rows keep`` (ticker, date, kinds, reason), optionally
    only those of ``tickers`` within [start, end]."""
    columns = ["ticker", "date", "kinds", "reason"]
    path = _flags_path(store)
    if not path.exists():
        return pd.DataFrame(columns=columns)
    entries = [e for e in json.loads(path.read_text(encoding="utf-8")) if e["source"] == source]
    frame = pd.DataFrame(entries, columns=["source", *columns])[columns]
    frame["date"] = pd.to_datetime(frame["date"])
    keep = np.ones(len(frame), dtype=bool)
    if tickers is not None:
        keep &= frame["ticker"].isin(list(tickers)).to_numpy()
    if start is not None:
        keep &= (frame["date"] >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        keep &= (frame["date"] <= pd.Timestamp(end)).to_numpy()
    return frame[keep].reset_index(drop=True)


def _write(con, frame: pd.DataFrame, source: str) -> None:
    """Upsert bars (each ticker's coverage is extended by :func:`_extend_coverage`)."""
    repository.upsert_prices(con, frame, source)


def _extend_coverage(con, source: str, spans: dict[str, tuple[dt.date, dt.date]]) -> None:
    repository.extend_coverage(con, source, spans)


def import_prices(
    store: Store,
    frame: pd.DataFrame,
    source: str = "file",
    *,
    flagged: pd.DataFrame | None = None,
) -> int:
    """Write a validated frame (see :func:`read_price_file`) in one transaction; rows written.

    ``flagged``: the bad rows kept in ``frame`` (``--on-bad-rows keep``; columns ticker, date,
    kinds, reason), recorded beside the database so a panel holding one warns. Importing a
    ticker again replaces its flags.
    """
    if frame.empty:
        raise DataValidationError("the file holds no rows")
    spans = {
        str(t): (g["date"].min().date(), g["date"].max().date())
        for t, g in frame.groupby("ticker")
    }
    with store.transaction() as con:
        _write(con, frame, source)
        _extend_coverage(con, source, spans)
    _update_flags(store, source, list(spans), flagged)
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
    _warn_flagged(store, source, tickers, start, end)
    index = calendar.sessions(start, end)
    extra = pd.DatetimeIndex(pd.to_datetime(frame["date"]).unique()).difference(index)
    if len(extra):
        index = index.union(extra)  # a source trading on a non-XNYS day keeps its bars
    index.name = "date"
    return PricePanel.from_long(frame, index, tickers)


class FlaggedBarsWarning(UserWarning):
    """A panel holds bars that an import flagged as bad and kept (``--on-bad-rows keep``)."""


def _warn_flagged(
    store: Store, source: str, tickers: Sequence[str], start: dt.date, end: dt.date
) -> None:
    flagged = flagged_bars(store, source, tickers, start, end)
    if flagged.empty:
        return
    kinds = flagged["kinds"].str.split(", ").explode().value_counts()
    first = "; ".join(f"{r.ticker} {r.date.date()} {r.reason}"
                      for r in flagged.head(3).itertuples(index=False))  # fmt: skip
    warnings.warn(
        f"{len(flagged):,} {source} bar(s) in this window were flagged as bad at import and "
        f"kept ({', '.join(f'{n:,} {k}' for k, n in kinds.items())}), e.g. {first}: results "
        "use them as stored; re-import with --on-bad-rows skip to drop them",
        FlaggedBarsWarning,
        stacklevel=3,
    )
