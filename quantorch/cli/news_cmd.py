"""``quantorch data import-news``, ``quantorch data import-fundamentals`` and
``quantorch data fetch-fundamentals``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantorch.cli._common import (
    BarProgress,
    ConfigOpt,
    DateFormatOpt,
    DbOpt,
    DebugOpt,
    JsonOpt,
    TickersOpt,
    guard,
    load,
    open_store,
    out,
    parse_tickers,
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


def _fetch_report(reports, store_path: Path, source: str, json_output: bool) -> None:
    totals = {
        key: sum(getattr(r.import_report, key) for r in reports)
        for key in ("rows", "inserted", "replaced", "unchanged")
    }
    if json_output:
        payload = {
            "source": source,
            "db": str(store_path),
            **totals,
            "tickers": {
                r.ticker: {
                    "rows": r.import_report.rows,
                    "inserted": r.import_report.inserted,
                    "replaced": r.import_report.replaced,
                    "unchanged": r.import_report.unchanged,
                    "kept_earlier": r.kept_earlier,
                    "dropped": r.dropped,
                    "first_filed": r.first_filed.isoformat() if r.first_filed else None,
                    "last_filed": r.last_filed.isoformat() if r.last_filed else None,
                }
                for r in reports
            },
        }
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    for r in reports:
        counts = r.import_report
        if not counts.rows:
            out.print(f"{r.ticker}: no 10-K/10-Q statement items in the SEC's company facts")
            continue
        changed = f", {counts.replaced:,} replaced" if counts.replaced else ""
        out.print(
            f"{r.ticker}: {counts.inserted:,} new{changed} ({counts.unchanged:,} already stored), "
            f"filed {r.first_filed} to {r.last_filed}",
            highlight=False,
        )
        if r.kept_earlier:
            out.print(
                f"note: {r.ticker}: kept {r.kept_earlier:,} stored value(s) filed earlier than "
                "the SEC lists now (what was known first)",
                highlight=False,
            )
        if r.dropped:
            out.print(
                f"note: {r.ticker}: left out {r.dropped:,} fact(s) filed before their period ended",
                highlight=False,
            )
    out.print(
        f"stored {totals['inserted']:,} new and {totals['replaced']:,} replaced filing rows "
        f"({totals['unchanged']:,} already stored) for {len(reports)} ticker(s) from {source} "
        f"into {store_path}",
        highlight=False,
    )


def register(data_app: typer.Typer) -> None:
    """Add the news and fundamentals commands to the ``data`` command group."""

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

    @data_app.command("fetch-fundamentals")
    def fetch_fundamentals_command(
        tickers: TickersOpt = None,
        source: Annotated[
            str,
            typer.Option(
                "--source",
                metavar="NAME",
                help="Filings source: sec, the SEC's XBRL company facts (online; set "
                "QUANTORCH_SEC_USER_AGENT to your name and e-mail).",
            ),
        ] = "sec",
        json_output: JsonOpt = False,
        config: ConfigOpt = None,
        db: DbOpt = None,
        debug: DebugOpt = False,
    ) -> None:
        """Fetch point-in-time filings into the database, for the fundamental tool's sec provider.

        Each ticker is stored as soon as it is fetched; fetching again adds new filings and
        keeps what was stored (each value from the date it was first filed).

        Example: QUANTORCH_SEC_USER_AGENT='Jane Doe jane@example.com' quantorch data
        fetch-fundamentals --tickers AAPL,MSFT
        """
        with guard(debug):
            from quantorch.data.providers.sec import fetch_fundamentals

            cfg = load(config, {"universe": parse_tickers(tickers)})
            store = open_store(cfg, db)
            wanted = list(cfg.universe)
            with BarProgress() as progress:
                progress.phase(f"fetching filings from {source}", total=len(wanted))
                started: list[str] = []

                def on_ticker(ticker: str) -> None:  # the previous ticker is done
                    progress.advance(1 if started else 0, detail=ticker)
                    started.append(ticker)

                reports = fetch_fundamentals(
                    store, wanted, source=source.strip().lower(), on_ticker=on_ticker
                )
            _fetch_report(reports, store.path, source.strip().lower(), json_output)
