"""``quantorch data import-news`` and ``quantorch data import-fundamentals``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantorch.cli._common import (
    ConfigOpt,
    DateFormatOpt,
    DbOpt,
    DebugOpt,
    JsonOpt,
    guard,
    load,
    open_store,
    out,
)

__all__ = ["register"]

_MapOpt = Annotated[
    Optional[str],
    typer.Option(
        "--map",
        show_default=False,
        help="Take table columns from other file columns: COLUMN=FILE_COLUMN,... "
        "e.g. headline=text.",
    ),
]
_FeedOpt = Annotated[
    Optional[str],
    typer.Option(
        "--source",
        show_default=False,
        help="Source name for every row (overrides a source column; default: the "
        "file's source column, else 'file').",
    ),
]


def _report(report, file: Path, store_path: Path, what: str, json_output: bool) -> None:
    if json_output:
        payload = {
            "file": str(file),
            "db": str(store_path),
            "rows": report.rows,
            "inserted": report.inserted,
            "replaced": report.replaced,
            "unchanged": report.unchanged,
            "tickers": report.tickers,
            "notes": report.notes,
        }
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    for note in report.notes:
        out.print(f"note: {note}", highlight=False)
    changed = f", {report.replaced:,} replaced" if report.replaced else ""
    out.print(
        f"imported {report.inserted:,} new {what}{changed} ({report.unchanged:,} already stored) "
        f"for {report.tickers} ticker(s) from {file} into {store_path}",
        highlight=False,
    )


def register(data_app: typer.Typer) -> None:
    """Add the news and fundamentals import commands to the ``data`` command group."""

    @data_app.command("import-news")
    def import_news_command(
        file: Annotated[
            Path,
            typer.Argument(help="CSV or Parquet: published_at, ticker, headline [, body, source]."),
        ],
        mapping: _MapOpt = None,
        source: _FeedOpt = None,
        timezone: Annotated[
            Optional[str],
            typer.Option(
                "--timezone",
                show_default=False,
                help="Time zone of timestamps without an offset, e.g. America/New_York "
                "(default: UTC, and the import says so).",
            ),
        ] = None,
        date_format: DateFormatOpt = None,
        json_output: JsonOpt = False,
        config: ConfigOpt = None,
        db: DbOpt = None,
        debug: DebugOpt = False,
    ) -> None:
        """Import news items for the sentiment tool; a bad file writes nothing.

        published_at is read exactly: ISO 8601 with or without an offset, else --date-format.

        Example: quantorch data import-news stocknet_tweets.csv.gz --map headline=text
        """
        with guard(debug):
            from quantorch.data.news import import_news, read_news_file

            cfg = load(config, {})
            frame, notes = read_news_file(
                file, mapping=mapping, source=source, timezone=timezone, date_format=date_format
            )
            store = open_store(cfg, db)
            report = import_news(store, frame, notes)
            _report(report, file, store.path, "items", json_output)

    @data_app.command("import-fundamentals")
    def import_fundamentals_command(
        file: Annotated[
            Path,
            typer.Argument(
                help="CSV or Parquet: ticker, period_end, filed_at, metric, value [, source]."
            ),
        ],
        mapping: _MapOpt = None,
        source: _FeedOpt = None,
        date_format: DateFormatOpt = None,
        json_output: JsonOpt = False,
        config: ConfigOpt = None,
        db: DbOpt = None,
        debug: DebugOpt = False,
    ) -> None:
        """Import point-in-time statement items (usable from filed_at); a bad file writes nothing.

        period_end and filed_at are read exactly: ISO dates, else --date-format.

        Example: quantorch data import-fundamentals sec_fundamentals.csv.gz
        """
        with guard(debug):
            from quantorch.data.fundamentals import import_fundamentals, read_fundamentals_file

            cfg = load(config, {})
            frame = read_fundamentals_file(
                file, mapping=mapping, source=source, date_format=date_format
            )
            store = open_store(cfg, db)
            report = import_fundamentals(store, frame)
            _report(report, file, store.path, "rows", json_output)
