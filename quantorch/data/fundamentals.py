"""Point-in-time statement items in the store: file import and validation.

A fundamentals file (CSV or Parquet) is long: one row per (ticker, period_end, filed_at,
metric, value) and optionally ``source``. ``period_end`` is the last day of the fiscal period
reported; ``filed_at`` is the date the filing became public, from which the value may be used
(the ``fundamental`` tool reads a row only at decisions on or after ``filed_at``). Metric names
are lower-cased; the ``fundamental`` tool's ``file`` provider reads ``net_income_q``,
``operating_cf_q``, ``capex_q``, ``free_cash_flow_q`` (standalone quarters), ``total_assets``
and ``equity`` (USD), as in the SEC extract ``sec_fundamentals.csv.gz``.

The whole file is validated before anything is written: missing columns, dates that are not ISO
(or do not match ``date_format``, ``--date-format``), numbers as dates, dates before 1900 or
after tomorrow, a filing dated before the end of its period, empty or numeric tickers, empty
metrics, missing, non-numeric, True/False or infinite values and duplicate (ticker,
period_end, metric, source) rows each stop the import with the first offending row named (see
:mod:`quantorch.data._parsing`). Re-importing the same file changes nothing; a row whose value or
filing date changed replaces the stored one (the report counts it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from quantorch.data import _parsing as parsing
from quantorch.data.news import ImportReport, parse_mapping, read_table_file, resolve_columns
from quantorch.errors import DataValidationError, UserInputError
from quantorch.store import Store, repository

__all__ = [
    "FUNDAMENTAL_COLUMNS",
    "import_fundamentals",
    "read_fundamentals_file",
    "validate_fundamentals",
]

#: Columns of the ``fundamentals`` table, in order.
FUNDAMENTAL_COLUMNS = ("ticker", "period_end", "filed_at", "metric", "value", "source")
_REQUIRED = ("ticker", "period_end", "filed_at", "metric", "value")
_KEY = ["ticker", "period_end", "metric", "source"]


def _text(values: pd.Series, origin: str, column: str) -> pd.Series:
    text = values.astype("string").str.strip()
    empty = text.isna() | (text == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataValidationError(f"{origin}: empty {column} in {parsing.row_name(row)}")
    return text


def validate_fundamentals(
    frame: pd.DataFrame,
    origin: str,
    *,
    mapping: Mapping[str, str] | None = None,
    source: str | None = None,
    date_format: str | None = None,
) -> pd.DataFrame:
    """Check and normalise a long fundamentals frame (see module docs).

    ``source`` names the provenance of every row (it overrides a ``source`` column); without
    either the source is ``file``. ``date_format`` (strptime codes) reads ``period_end`` and
    ``filed_at`` values that are not ISO dates.
    """
    columns = resolve_columns(frame, origin, _REQUIRED, ("source",), mapping)
    if frame.empty:
        raise DataValidationError(f"{origin}: the file holds no rows")
    raw = frame.reset_index(drop=True)
    tickers = parsing.parse_tickers(raw[columns["ticker"]], origin)
    metrics = _text(raw[columns["metric"]], origin, "metric").str.lower()
    period_end = parsing.parse_dates(
        raw[columns["period_end"]], origin, "period_end", date_format=date_format
    ).astype("datetime64[ns]")
    filed_at = parsing.parse_dates(
        raw[columns["filed_at"]], origin, "filed_at", date_format=date_format
    ).astype("datetime64[ns]")
    early = (filed_at < period_end).to_numpy()
    if early.any():
        row = int(np.flatnonzero(early)[0])
        raise DataValidationError(
            f"{origin}: {parsing.row_name(row)} was filed ({filed_at.iloc[row].date()}) before "
            f"its period ended ({period_end.iloc[row].date()}); are period_end and filed_at "
            "swapped?"
        )
    values = parsing.parse_numbers(raw[columns["value"]], origin, "value", required=False)
    missing = values.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataValidationError(
            f"{origin}: missing value in {parsing.row_name(row)} (drop rows without a value)"
        )
    if source is not None:
        if not source.strip():
            raise UserInputError("--source must not be empty")
        sources = pd.Series(source.strip(), index=raw.index)
    elif "source" in columns:
        sources = _text(raw[columns["source"]], origin, "source")
    else:
        sources = pd.Series("file", index=raw.index)
    out = pd.DataFrame(
        {
            "ticker": tickers.astype(object),
            "period_end": period_end,
            "filed_at": filed_at,
            "metric": metrics.astype(object),
            "value": values,
            "source": sources.astype(object),
        }
    )
    dup = out.duplicated(_KEY, keep="first")
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        key = out.loc[row, _KEY]
        first = int(np.flatnonzero((out[_KEY] == key.to_numpy()).all(axis=1).to_numpy())[0])
        raise DataValidationError(
            f"{origin}: {parsing.row_name(row)} repeats {parsing.row_name(first)} "
            f"({key['ticker']} {key['metric']} for the period ending "
            f"{key['period_end'].date()}); keep one value per ticker, period, metric and source "
            "(the first filed, for point-in-time use)"
        )
    return out.sort_values(["ticker", "metric", "period_end"], ignore_index=True)


def read_fundamentals_file(
    path: str | Path,
    *,
    mapping: Mapping[str, str] | str | None = None,
    source: str | None = None,
    date_format: str | None = None,
) -> pd.DataFrame:
    """Read and validate a fundamentals file (nothing is written)."""
    raw = read_table_file(path)
    targets = (*_REQUIRED, "source")
    return validate_fundamentals(
        raw,
        str(path),
        mapping=parse_mapping(mapping, targets),
        source=source,
        date_format=date_format,
    )


def import_fundamentals(store: Store, frame: pd.DataFrame) -> ImportReport:
    """Write validated rows (see :func:`read_fundamentals_file`) in one transaction."""
    if frame.empty:
        raise DataValidationError("the file holds no rows")
    report = ImportReport(rows=len(frame), tickers=int(frame["ticker"].nunique()))
    rows = frame[list(FUNDAMENTAL_COLUMNS)]
    with store.transaction() as con:
        report.inserted, report.replaced = repository.upsert_fundamentals(con, rows)
    report.unchanged = report.rows - report.inserted - report.replaced
    return report
