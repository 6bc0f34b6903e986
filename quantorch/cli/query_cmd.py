"""``quantorch query`` and ``quantorch export``: SQL over the database, read-only by default.

Thin commands: they parse, call :mod:`quantorch.query`, and print. ``register(app)`` adds both
to the main typer app.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from quantorch.cli._common import ConfigOpt, DbOpt, DebugOpt, err, guard, load, open_store, out
from quantorch.errors import UserInputError

__all__ = ["register"]

_CELL_WIDTH = 60  # longer values are cut in a terminal table (files get them whole)


class QueryFormat(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


class ExportFormat(str, enum.Enum):
    parquet = "parquet"
    csv = "csv"


class ExportKind(str, enum.Enum):
    runs = "runs"
    tool_calls = "tool_calls"
    decisions = "decisions"
    fills = "fills"
    equity = "equity"
    prices = "prices"


OutputOpt = Annotated[
    Optional[Path],
    typer.Option("--output", "-o", show_default=False,
                 help="Write the result to this file (format from --format or its suffix; never a "
                      "DuckDB database or a folder)."),
]


def query(
    sql: Annotated[
        Optional[str],
        typer.Argument(show_default=False,
                       help="DuckDB SQL, e.g. \"SELECT * FROM v_runs ORDER BY sharpe DESC\"."),
    ] = None,
    file: Annotated[
        Optional[Path],
        typer.Option("--file", "-f", show_default=False, exists=True, dir_okay=False,
                     help="Read the SQL from this file (several statements run in order; the "
                          "last one's rows are shown)."),
    ] = None,
    fmt: Annotated[
        Optional[QueryFormat],
        typer.Option("--format", show_default=False, case_sensitive=False,
                     help="table (default on a terminal), csv, json or parquet (needs --output)."),
    ] = None,
    output: OutputOpt = None,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", show_default=False, min=0,
                     help="Rows to keep: default 200 for a table and all for csv/json/parquet; "
                          "0 keeps every row."),
    ] = None,
    write: Annotated[
        bool,
        typer.Option("--write", help="Open the database read-write (one transaction) so "
                                     "INSERT, UPDATE, CREATE ... may run."),
    ] = False,
    allow_files: Annotated[
        bool,
        typer.Option("--allow-files",
                     help="Let the SQL read and write local files with DuckDB's own functions "
                          "(read_csv, COPY ... TO, ATTACH, ...). Without it a query is confined "
                          "to the database; URLs, extensions and the database file itself stay "
                          "off limits either way."),
    ] = False,
    show_schema: Annotated[
        bool,
        typer.Option("--schema", help="List the tables and views with their columns, types and "
                                      "descriptions instead of running SQL."),
    ] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run SQL on the database, read-only unless --write, confined to the database unless
    --allow-files; safe while a backtest writes (a locked file is retried,
    then the process holding it is named).

    Views: v_runs, v_equity, v_tool_usage, v_decisions, v_pnl_attribution (see --schema and
    docs/research.md).

    Examples: quantorch query "SELECT run_id, sharpe FROM v_runs ORDER BY sharpe DESC";
    quantorch query --file q.sql --format csv --output out.csv; quantorch query --schema;
    quantorch query --allow-files "SELECT * FROM read_csv('signals.csv')"
    """
    from quantorch import query as core

    with guard(debug):
        store = open_store(load(config, {}), db)
        if output is not None:
            core.check_output(output, store)  # before the query runs: nothing computed for nothing
            if file is not None and output.resolve() == file.resolve():
                raise UserInputError(
                    f"--output {output} is the --file holding the SQL: write the result elsewhere"
                )
        chosen = core.format_for(output, fmt.value if fmt is not None else None)
        if chosen == "table" and output is not None:
            raise UserInputError(
                "a table is for the terminal: use --format csv, json or parquet with --output"
            )
        if chosen == "parquet" and output is None:
            raise UserInputError("parquet is a binary format: add --output FILE.parquet")
        if show_schema:
            if sql is not None or file is not None:
                raise UserInputError("--schema runs no SQL: drop the query or the --file")
            _print_schema(core, store, chosen, output)
            return
        text = _sql_text(sql, file)
        if limit is None:
            limit = core.DEFAULT_TABLE_LIMIT if chosen == "table" else 0
        result = core.run_query(store, text, write=write, limit=limit or None,
                                allow_files=allow_files)
        for notice in result.notices:
            err.print(notice, highlight=False, soft_wrap=True)
        if chosen == "table":
            _print_table(result)
        else:
            core.write_result(result, chosen, output, store=store)
            if output is not None:
                err.print(f"wrote {_rows(result.table.num_rows)} to {output}", highlight=False,
                          soft_wrap=True)
        if result.truncated:
            err.print(
                f"showing {result.table.num_rows:,} of {result.total_rows:,} rows "
                f"({result.total_rows - result.table.num_rows:,} cut): raise --limit, use "
                "--limit 0 for all, or write a file with --output",
                highlight=False, soft_wrap=True,
            )


def export(
    kind: Annotated[ExportKind, typer.Argument(help="What to export.", case_sensitive=False)],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (replaced atomically; never a "
                                                  "DuckDB database or a folder).")
    ],
    fmt: Annotated[
        Optional[ExportFormat],
        typer.Option("--format", show_default=False, case_sensitive=False,
                     help="parquet or csv (default from the --output suffix, else parquet)."),
    ] = None,
    run_id: Annotated[
        Optional[str], typer.Option("--run-id", show_default=False, help="Only this run's rows.")
    ] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Export runs, tool calls, decisions, fills, equity or prices to Parquet or CSV.

    runs, decisions and equity come with their derived columns (flattened metrics, forward
    returns, drawdowns: the v_runs, v_decisions and v_equity views).

    Example: quantorch export decisions --format parquet --output decisions.parquet
    """
    from quantorch import query as core

    with guard(debug):
        if fmt is not None:
            chosen = fmt.value
        else:
            chosen = {".csv": "csv"}.get(output.suffix.lower(), "parquet")
        store = open_store(load(config, {}), db)
        result = core.export(store, kind.value, chosen, output, run_id=run_id)
        for notice in result.notices:
            err.print(notice, highlight=False, soft_wrap=True)
        out.print(f"wrote {_rows(result.total_rows)} of {kind.value} to {output}",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``query`` and ``export`` to ``app``."""
    app.command("query")(query)
    app.command("export")(export)


def _sql_text(sql: str | None, file: Path | None) -> str:
    if sql is not None and file is not None:
        raise UserInputError("give the SQL either as an argument or with --file, not both")
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserInputError(f"cannot read --file {file}: {exc}") from exc
    if sql is None:
        raise UserInputError(
            "no SQL given: quantorch query \"SELECT * FROM v_runs\", --file q.sql, or --schema"
        )
    return sql


def _print_schema(core, store, chosen: str, output: Path | None) -> None:
    if store.path.exists():
        objects = core.schema(store)
    else:
        err.print(f"no database at {store.path}: showing the schema a new database gets",
                  highlight=False, soft_wrap=True)
        objects = core.schema()
    if chosen == "json" and output is None:
        sys.stdout.write(core.schema_json(objects) + "\n")
        return
    if chosen != "table":
        core.write_result(core.schema_rows(objects), chosen, output, store=store)
        return
    for obj in objects:
        title = f"[bold]{obj.name}[/] ({obj.kind})"
        table = Table(title=title, caption=Text(obj.description or ""), title_justify="left",
                      caption_justify="left", expand=False)
        table.add_column("column")
        table.add_column("type")
        table.add_column("description")
        for column in obj.columns:
            table.add_row(Text(column.name), Text(column.type), Text(column.description or ""))
        out.print(table)


def _print_table(result) -> None:
    if not result.columns:
        out.print("ok (the statement returned no rows)")
        return
    numeric = [t.split("(")[0] in _NUMERIC for t in result.types] or [False] * len(result.columns)
    table = Table(show_lines=False)
    for name, is_number in zip(result.columns, numeric, strict=False):
        if is_number:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold")
    for row in result.rows():
        table.add_row(*(Text(_cell(v)) for v in row))
    out.print(table)
    if not result.truncated:  # a cut table is followed by the notice on stderr instead
        out.print(_rows(result.total_rows), style="dim", highlight=False)


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


_NUMERIC = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
    "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
}  # fmt: skip


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        text = format(value, ".10g")
    elif isinstance(value, dt.datetime | dt.date | dt.time):
        text = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    elif isinstance(value, decimal.Decimal | int | str | bool):
        text = str(value)
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 1] + "…"
