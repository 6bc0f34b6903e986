"""Exact reading of the dates, timestamps, tickers and numbers of imported files.

Prices, news and fundamentals read their columns through these functions, so one rule holds
for every import: a value is read exactly as written or the file is refused with one line
naming the file, the data row (counted from 1, the header not counted), the value and the fix.
Nothing is guessed:

- Dates and timestamps are ISO 8601 (``2021-03-01``, ``2021-03-01T14:30:00Z``,
  ``2021-03-01 09:30:00-05:00``) unless a strptime format is given (``--date-format``). A
  day/month value such as ``04/01/2021`` is refused without a format, since its order is
  ambiguous; a column mixing formats is refused at the first row that differs; numbers
  (``20210301``, Excel serials, epoch seconds) are refused unless a format says how to read
  their digits (``%Y%m%d``). Dates before 1900-01-01 or more than a day in the future are
  refused *before* pandas converts them to nanoseconds (which overflows after 2262).
- Tickers are text: a numeric or boolean column, or a value that is only digits, is refused.
- Numbers are plain finite numbers: booleans (which pandas would cast to 1.0/0.0), infinities
  and text such as ``1,234.5`` are refused.

Parsing works on the distinct values of a column (a price file has a few thousand dates for
millions of rows), so it stays vectorised and fast.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quantorch.errors import DataValidationError, UserInputError

__all__ = [
    "EARLIEST",
    "ISO_HINT",
    "Stamps",
    "parse_dates",
    "parse_numbers",
    "parse_tickers",
    "parse_timestamps",
    "row_name",
    "shown",
]

#: The earliest date any import accepts.
EARLIEST = pd.Timestamp("1900-01-01")
ISO_HINT = "use ISO dates such as 2021-03-01 or pass --date-format (strptime codes, e.g. %d.%m.%Y)"

_ISO_DATE = r"\d{4}-\d{1,2}-\d{1,2}"
_ISO_TIME = r"[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?"
_ISO_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)"
_ISO = re.compile(rf"{_ISO_DATE}(?:{_ISO_TIME}{_ISO_OFFSET}?)?")
_ISO_DATE_ONLY = re.compile(_ISO_DATE)
_HAS_OFFSET = re.compile(rf"{_ISO_TIME}{_ISO_OFFSET}$")
_OFFSET_AT_END = re.compile(rf"{_ISO_OFFSET}$")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DAY_MONTH = re.compile(
    r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?:[ T](\d{1,2}:\d{2}(:\d{2})?))?"
)
_YEAR_FIRST = re.compile(r"\d{4}([/.])\d{1,2}\1\d{1,2}")
_TIME_CODES = re.compile(r"%[HIMSfpXcTRrkl]")
_YEAR_CODES = re.compile(r"%[YyG]")


def shown(value) -> str:
    """A value as messages quote it: text in quotes, numbers plain (``inf``, not np.float64)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, str) else str(value)


def row_name(position: int) -> str:
    """How messages name a row: 1-based data rows, the header not counted."""
    return f"data row {position + 1}"


@dataclass(frozen=True)
class Stamps:
    """Parsed timestamps of one column, row by row.

    ``values`` is naive ``datetime64[ns]``: UTC where the value had an offset (``aware``), else
    the wall-clock time as written; ``date_only`` marks values without a time of day. (Read
    for dates, :func:`parse_dates`, aware values keep their own wall clock instead.)
    """

    values: pd.Series
    aware: np.ndarray
    date_only: np.ndarray


def parse_dates(
    values: pd.Series, origin: str, column: str, *, date_format: str | None = None
) -> pd.Series:
    """Calendar dates (naive midnight ``datetime64[ns]``) read exactly, or refuse.

    The date is the one written: a time of day and a UTC offset are dropped, not converted
    (``2021-03-01T00:00:00Z`` is 1 March, not the New York evening before; a tz-aware Parquet
    column gives the dates on its own clock). Dates later than tomorrow are refused.
    """
    latest = pd.Timestamp(dt.datetime.now(dt.UTC).date()) + pd.Timedelta(days=1)
    stamps = _read(values, origin, column, date_format, latest=latest, kind="date")
    return stamps.values.dt.normalize()


def parse_timestamps(
    values: pd.Series, origin: str, column: str, *, date_format: str | None = None
) -> Stamps:
    """Timestamps read exactly (see :class:`Stamps`), or refuse; later than now + 1 day refused."""
    latest = pd.Timestamp(dt.datetime.now(dt.UTC).replace(tzinfo=None)) + pd.Timedelta(days=1)
    return _read(values, origin, column, date_format, latest=latest, kind="timestamp")


def _read(
    values: pd.Series,
    origin: str,
    column: str,
    date_format: str | None,
    *,
    latest: pd.Timestamp,
    kind: str,
) -> Stamps:
    values = values.reset_index(drop=True)
    n = len(values)
    if date_format is not None:
        _check_format(date_format)
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        values.dtype
    ):
        aware = isinstance(values.dtype, pd.DatetimeTZDtype)
        stamps = values
        if aware:  # a date is read on the column's own clock, a timestamp in UTC
            stamps = (
                values.dt.tz_localize(None)
                if kind == "date"
                else values.dt.tz_convert("UTC").dt.tz_localize(None)
            )
        _refuse_missing(stamps.isna().to_numpy(), values, origin, column)
        _check_range(stamps, values, origin, column, latest, kind)
        return Stamps(stamps.astype("datetime64[ns]"), np.full(n, aware), np.zeros(n, dtype=bool))
    if pd.api.types.is_bool_dtype(values.dtype):
        raise DataValidationError(
            f"{origin}: {column} is a True/False column, not dates ({row_name(0)} has "
            f"{shown(values.iloc[0])}); {ISO_HINT}"
        )
    codes, uniques = pd.factorize(values)
    _refuse_missing(codes < 0, values, origin, column)
    text, from_dates = _unique_text(uniques, values, codes, origin, column)
    empty = text == ""
    if empty.any():
        _refuse_missing(empty[codes], values, origin, column)
    if date_format is None or from_dates:  # date objects are exact: no format applies to them
        parsed, aware, date_only = _parse_iso(text, values, codes, origin, column, latest, kind)
    else:
        parsed, aware, date_only = _parse_format(
            text, date_format, values, codes, origin, column, latest, kind
        )
    stamps = pd.Series(parsed[codes], dtype="datetime64[ns]")
    return Stamps(stamps, aware[codes], date_only[codes])


def _check_format(date_format: str) -> None:
    try:
        pd.to_datetime(pd.Series(["x"]), format=date_format, errors="coerce")
    except ValueError as exc:
        raise UserInputError(
            f"bad --date-format {shown(date_format)} ({exc}): use strptime codes such as %d/%m/%Y"
        ) from None
    if not _YEAR_CODES.search(date_format):
        raise UserInputError(
            f"--date-format {shown(date_format)} has no year: include %Y (or %y), e.g. %d/%m/%Y"
        )


def _first_row(codes: np.ndarray, code: int) -> int:
    """The first row holding distinct value ``code`` (factorize numbers them in row order)."""
    return int(np.argmax(codes == code))


def _refuse_missing(mask: np.ndarray, values: pd.Series, origin: str, column: str) -> None:
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        raise DataValidationError(
            f"{origin}: empty {column} in {row_name(row)} (every row needs one)"
        )


def _unique_text(
    uniques, values: pd.Series, codes: np.ndarray, origin: str, column: str
) -> tuple[np.ndarray, bool]:
    """The distinct values as stripped text (numbers as their digits, date objects as ISO),
    and whether they were date objects."""
    uniques = np.asarray(uniques, dtype=object)
    if pd.api.types.is_numeric_dtype(values.dtype):
        return np.array([_number_text(v) for v in uniques], dtype=object), False
    out = np.empty(len(uniques), dtype=object)
    first_kind: tuple[str, int] | None = None  # (kind, distinct value) of the first row
    for i, value in enumerate(uniques):
        if isinstance(value, bool | np.bool_):
            raise DataValidationError(
                f"{origin}: {column} {shown(value)} in {row_name(_first_row(codes, i))} is a "
                f"True/False value, not a date; {ISO_HINT}"
            )
        if isinstance(value, str):
            out[i], kind = value.strip(), "text"
        elif isinstance(value, dt.date):  # datetime, pandas Timestamp and date are exact
            out[i], kind = value.isoformat(), "a date"
        elif isinstance(value, int | float | np.integer | np.floating):
            out[i], kind = _number_text(value), "text"  # refused below unless a format reads it
        else:
            raise DataValidationError(
                f"{origin}: {column} {shown(value)} in {row_name(_first_row(codes, i))} is a "
                f"{type(value).__name__}, not a date; {ISO_HINT}"
            )
        if first_kind is None:
            first_kind = (kind, i)
        elif kind != first_kind[0]:
            raise DataValidationError(
                f"{origin}: mixed types in {column}: {row_name(_first_row(codes, i))} holds "
                f"{shown(value)} but {row_name(_first_row(codes, first_kind[1]))} holds "
                f"{first_kind[0]}; write every {column} the same way"
            )
    return out, first_kind is not None and first_kind[0] == "a date"


def _number_text(value) -> str:
    number = float(value)
    if np.isfinite(number) and number == int(number):
        return str(int(number))
    return repr(number)


def _parse_iso(
    text: np.ndarray,
    values: pd.Series,
    codes: np.ndarray,
    origin: str,
    column: str,
    latest: pd.Timestamp,
    kind: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    series = pd.Series(text, dtype=object)
    iso = series.str.fullmatch(_ISO).to_numpy(dtype=bool)
    if not iso.all():
        bad = int(np.flatnonzero(~iso)[0])
        _explain_not_iso(text, iso, bad, codes, origin, column, kind)
    # the year is checked as text first: pandas' nanoseconds overflow after 2262
    years = series.str.slice(0, 4).astype(int).to_numpy()
    out_of_range = (years < EARLIEST.year) | (years > latest.year)
    if out_of_range.any():
        bad = int(np.flatnonzero(out_of_range)[0])
        _refuse_range(text[bad], _first_row(codes, bad), origin, column, latest, kind)
    aware = series.str.contains(_HAS_OFFSET).to_numpy(dtype=bool)
    date_only = series.str.fullmatch(_ISO_DATE_ONLY).to_numpy(dtype=bool)
    parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
    if aware.any() and kind == "date":  # the date as written: drop the offset, convert nothing
        wall = series[aware].str.replace(_OFFSET_AT_END, "", regex=True)
        parsed[aware] = pd.to_datetime(wall, format="ISO8601", errors="coerce").astype(
            "datetime64[ns]"
        )
    elif aware.any():
        utc = pd.to_datetime(series[aware], format="ISO8601", utc=True, errors="coerce")
        parsed[aware] = utc.dt.tz_localize(None).astype("datetime64[ns]")
    if (~aware).any():
        naive = pd.to_datetime(series[~aware], format="ISO8601", errors="coerce")
        parsed[~aware] = naive.astype("datetime64[ns]")
    failed = parsed.isna().to_numpy()
    if failed.any():
        bad = int(np.flatnonzero(failed)[0])
        raise DataValidationError(
            f"{origin}: unparseable {column} {shown(text[bad])} in "
            f"{row_name(_first_row(codes, bad))}: not a real date or time; {ISO_HINT}"
        )
    _check_range(parsed, pd.Series(text), origin, column, latest, kind, codes=codes)
    return parsed.to_numpy(), aware, date_only


def _parse_format(
    text: np.ndarray,
    date_format: str,
    values: pd.Series,
    codes: np.ndarray,
    origin: str,
    column: str,
    latest: pd.Timestamp,
    kind: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    series = pd.Series(text, dtype=object)
    with_offset = "%z" in date_format or "%Z" in date_format
    parsed = pd.to_datetime(series, format=date_format, errors="coerce", utc=with_offset)
    if with_offset:
        parsed = parsed.dt.tz_localize(None)
    failed = parsed.isna().to_numpy()
    if failed.any():
        bad = int(np.flatnonzero(failed)[0])
        row = _first_row(codes, bad)
        try:  # pandas gives NaT for dates it cannot hold: say that, not "does not match"
            dt.datetime.strptime(text[bad], date_format)
        except ValueError:
            pass
        else:
            _refuse_range(text[bad], row, origin, column, latest, kind)
        where = (
            f"{column} {shown(text[bad])} in {row_name(row)} does not match --date-format "
            f"{date_format}"
        )
        if bad > 0:  # distinct values are in row order: the first one parsed
            raise DataValidationError(
                f"{origin}: {where} while {row_name(0)} ({shown(text[0])}) does: the format is "
                f"wrong for this file or the column mixes formats"
                f"{_swap_hint(text[bad], date_format)}; "
                f"write every {column} the same way"
            )
        raise DataValidationError(
            f"{origin}: {where} (or is not a real date){_swap_hint(text[bad], date_format)}; "
            "pass the format the file uses (strptime codes) or write ISO dates such as "
            "2021-03-01 without --date-format"
        )
    if with_offset and kind == "date":  # the date as written, on the value's own clock
        parsed = pd.Series(
            [dt.datetime.strptime(v, date_format).replace(tzinfo=None) for v in text],
            dtype="datetime64[us]",  # range-checked below, before any nanoseconds
        )
    _check_range(parsed, series, origin, column, latest, kind, codes=codes)
    n = len(text)
    date_only = np.full(n, not _TIME_CODES.search(date_format))
    return parsed.astype("datetime64[ns]").to_numpy(), np.full(n, with_offset), date_only


def _swap_hint(value: str, date_format: str) -> str:
    """`` (try %d/%m/%Y)`` when the value reads with day and month swapped."""
    swapped = date_format.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")
    if swapped == date_format:
        return ""
    try:
        dt.datetime.strptime(value, swapped)
    except ValueError:
        return ""
    return f" (try --date-format {swapped})"


def _explain_not_iso(
    text: np.ndarray,
    iso: np.ndarray,
    bad: int,
    codes: np.ndarray,
    origin: str,
    column: str,
    kind: str,
) -> None:
    value = text[bad]
    row = _first_row(codes, bad)
    where = f"{column} {shown(value)} in {row_name(row)}"
    other_format = any(p.fullmatch(value) for p in (_NUMBER, _DAY_MONTH, _YEAR_FIRST))
    if other_format and iso[:bad].any():
        first = int(np.flatnonzero(iso)[0])
        raise DataValidationError(
            f"{origin}: mixed date formats in {column}: {row_name(row)} has {shown(value)} but "
            f"{row_name(_first_row(codes, first))} has {shown(text[first])} (ISO); write every "
            f"{column} the same way"
        )
    if _NUMBER.fullmatch(value):
        raise DataValidationError(
            f"{origin}: {where} is a number, not a date (YYYYMMDD? an Excel serial? epoch "
            "seconds?): write ISO dates such as 2021-03-01, or pass --date-format %Y%m%d if the "
            "numbers are YYYYMMDD"
        )
    match = _DAY_MONTH.fullmatch(value)
    if match:
        sep, year = match.group(2), "%Y" if len(match.group(4)) == 4 else "%y"
        clock = ""
        if match.group(5):
            clock = " %H:%M:%S" if match.group(6) else " %H:%M"
        day_first = f"%d{sep}%m{sep}{year}{clock}"
        month_first = f"%m{sep}%d{sep}{year}{clock}"
        hint = _order_evidence(text, codes, day_first, month_first)
        raise DataValidationError(
            f"{origin}: {where} is not ISO (YYYY-MM-DD): ambiguous day/month order: pass "
            f"--date-format {day_first} or {month_first}{hint}"
        )
    if _YEAR_FIRST.fullmatch(value):
        sep = _YEAR_FIRST.fullmatch(value).group(1)
        raise DataValidationError(
            f"{origin}: {where} is not ISO (YYYY-MM-DD): pass --date-format %Y{sep}%m{sep}%d "
            "or write 2021-03-01"
        )
    example = "2021-03-01T14:30:00Z" if kind == "timestamp" else "2021-03-01"
    raise DataValidationError(
        f"{origin}: unparseable {where}: use ISO 8601 such as {example} or pass --date-format "
        "with strptime codes (e.g. %d %b %Y)"
    )


def _order_evidence(text: np.ndarray, codes: np.ndarray, day_first: str, month_first: str) -> str:
    """A row that only reads one way, if the column has one (said as a hint, never applied)."""
    for i, value in enumerate(text):
        match = _DAY_MONTH.fullmatch(value)
        if match is None:
            continue
        first, second = int(match.group(1)), int(match.group(3))
        if first > 12 >= second:
            return (
                f" ({row_name(_first_row(codes, i))} has {shown(value)}, so probably {day_first})"
            )
        if second > 12 >= first:
            return (
                f" ({row_name(_first_row(codes, i))} has {shown(value)}, so probably {month_first})"
            )
    return ""


def _check_range(
    parsed: pd.Series,
    shown: pd.Series,
    origin: str,
    column: str,
    latest: pd.Timestamp,
    kind: str,
    *,
    codes: np.ndarray | None = None,
) -> None:
    outside = ((parsed < EARLIEST) | (parsed > latest)).to_numpy()
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        row = bad if codes is None else _first_row(codes, bad)
        _refuse_range(shown.iloc[bad], row, origin, column, latest, kind)


def _refuse_range(value, row: int, origin: str, column: str, latest: pd.Timestamp, kind: str):
    limit = latest.date() if kind == "date" else f"{latest:%Y-%m-%d %H:%M} UTC"
    raise DataValidationError(
        f"{origin}: {column} {shown(str(value))} in {row_name(row)} is outside "
        f"{EARLIEST.date()} to {limit} (tomorrow): a misread or placeholder date; check the "
        "year (and --date-format)"
    )


def parse_tickers(values: pd.Series, origin: str, column: str = "ticker") -> pd.Series:
    """Upper-cased, stripped tickers (object dtype); numbers, booleans and empties refused."""
    values = values.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        present = values.notna().to_numpy()
        if present.any():  # an all-empty column reads as float NaN: that is empty, not a number
            row = int(np.flatnonzero(present)[0])
            _refuse_number_ticker(values.iloc[row], row, origin, column)
        _refuse_empty_ticker(~present, origin, column)
        return pd.Series([], dtype=object)
    codes, uniques = pd.factorize(values)
    _refuse_empty_ticker(codes < 0, origin, column)
    uniques = np.asarray(uniques, dtype=object)
    text = np.empty(len(uniques), dtype=object)
    for i, value in enumerate(uniques):
        if not isinstance(value, str):
            _refuse_number_ticker(value, _first_row(codes, i), origin, column)
        text[i] = value.strip().upper()
    series = pd.Series(text, dtype=object)
    numeric = series.str.fullmatch(_NUMBER).to_numpy(dtype=bool)
    if numeric.any():
        bad = int(np.flatnonzero(numeric)[0])
        _refuse_number_ticker(uniques[bad], _first_row(codes, bad), origin, column)
    empty = (series == "").to_numpy()
    if empty.any():
        _refuse_empty_ticker(empty[codes], origin, column)
    return pd.Series(text[codes], dtype=object)


def _refuse_empty_ticker(mask: np.ndarray, origin: str, column: str) -> None:
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        raise DataValidationError(f"{origin}: empty {column} in {row_name(row)}")


def _refuse_number_ticker(value, row: int, origin: str, column: str) -> None:
    what = "a number" if isinstance(value, str | int | float | np.number) else "not text"
    raise DataValidationError(
        f"{origin}: {column} {shown(value)} in {row_name(row)} is {what}: tickers must be text "
        "such as AAPL or BRK-B (a column of numbers is not a ticker column; check the header)"
    )


def parse_numbers(values: pd.Series, origin: str, column: str, *, required: bool) -> pd.Series:
    """Finite ``float64`` numbers, NaN where empty (refused if ``required``), or refuse.

    Checked before any cast: a True/False column is refused (pandas would read 1.0/0.0), so are
    infinities and text such as ``1,234.5`` or ``$12``.
    """
    values = values.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(values.dtype):
        raise DataValidationError(
            f"{origin}: {column} is a True/False column, not numbers ({row_name(0)} has "
            f"{shown(values.iloc[0])}); check the header and the column order"
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.astype("float64")
    else:
        if values.dtype == object:
            is_bool = values.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
            if is_bool.any():
                row = int(np.flatnonzero(is_bool)[0])
                raise DataValidationError(
                    f"{origin}: {column} {shown(values.iloc[row])} in {row_name(row)} is a "
                    "True/False value, not a number"
                )
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        unparsed = (numbers.isna() & values.notna()).to_numpy()
        if unparsed.any():
            row = int(np.flatnonzero(unparsed)[0])
            if str(values.iloc[row]).strip() != "":
                raise DataValidationError(
                    f"{origin}: non-numeric {column} {shown(values.iloc[row])} in {row_name(row)}: "
                    "write plain numbers such as 1234.5 (no thousands separators, currency signs "
                    "or units)"
                )
    array = numbers.to_numpy()
    infinite = np.isinf(array)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise DataValidationError(
            f"{origin}: infinite {column} {shown(values.iloc[row])} in {row_name(row)}: every "
            f"{column} must be a finite number"
        )
    if required:
        missing = np.isnan(array)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataValidationError(f"{origin}: missing {column} in {row_name(row)}")
    return numbers
