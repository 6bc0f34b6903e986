"""Research queries over the quantorch database: SQL, schema, exports.

Everything here opens the DuckDB file through :class:`~quantorch.store.Store`, one connection
per call, **read-only unless asked to write**, so a backtest or a paper trader writing at the
same time is never blocked for longer than one query: opening a file another process holds is
retried with backoff and, past the store's lock timeout, fails with
:class:`~quantorch.errors.DatabaseLockedError` naming the process that holds it. A result is
read into memory (Arrow) and the file is released *before* anything is written out.

Every connection is **confined to the database** (:func:`_confine`): DuckDB's file functions
(``read_csv``, ``read_text``, ``glob``, ``COPY``, ``EXPORT DATABASE``, ``ATTACH``), the network
and extensions are off, and the settings are locked, so a query can neither read a file the user
did not mean to share nor write over one. ``allow_files=True`` (``--allow-files``) lets a local
user read and write local files on purpose; even then no extension is installed or loaded, no
URL is read, and DuckDB refuses a ``COPY`` onto the open database or its write-ahead log. Result
files are written by quantorch itself (:func:`write_result`), never over a DuckDB file or a
folder (:func:`check_output`).

A file with an older schema is upgraded (one short write) before it is read, so the views of
the current version always exist. The views and every column are described with ``COMMENT ON``
in :mod:`quantorch.store._schema`; :func:`schema` reads those descriptions back and
:func:`render_schema_markdown` turns them into ``docs/schema.md``::

    python -m quantorch.query --write-docs docs/schema.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, get_args

import duckdb
import pyarrow as pa

from quantorch.errors import UserInputError, closest
from quantorch.store import Store
from quantorch.store._schema import LATEST_VERSION

__all__ = [
    "DEFAULT_TABLE_LIMIT",
    "ColumnInfo",
    "ExportKind",
    "ObjectInfo",
    "OutputFormat",
    "QueryResult",
    "check_output",
    "export",
    "format_for",
    "render_schema_markdown",
    "run_query",
    "schema",
    "schema_json",
    "schema_rows",
    "write_result",
]

#: Rows a terminal table shows unless told otherwise (files get every row).
DEFAULT_TABLE_LIMIT = 200

OutputFormat = Literal["table", "csv", "json", "parquet"]
ExportKind = Literal["runs", "tool_calls", "decisions", "fills", "equity", "prices"]

#: What each export reads, and its order. Views are supersets of their table (same columns plus
#: derived ones), so an export loses nothing and saves a join.
_EXPORTS: dict[str, tuple[str, str]] = {
    "runs": ("v_runs", "created_at, run_id"),
    "tool_calls": ("tool_calls", "run_id, as_of, ticker, created_at, call_id"),
    "decisions": ("v_decisions", "run_id, decision_id"),
    "fills": ("fills", "run_id, fill_id"),
    "equity": ("v_equity", "run_id, date"),
    "prices": ("prices", "source, ticker, date"),
}
_FILE_SUFFIXES = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_ARROW_COPY_WARNING = "Arrow output on a DB-API result"

#: Names a result file never gets: DuckDB databases and their write-ahead logs. A CSV written at
#: ``X.duckdb.wal`` would be replayed into the database X the next time it opens.
_DATABASE_SUFFIXES = (".duckdb", ".ddb", ".wal")
_DUCKDB_MAGIC = b"DUCK"  # at byte 8 of every DuckDB database file

#: Settings of every query connection, in order. Extensions are neither installed nor loaded
#: (network, code from outside), external access is switched off (DuckDB then refuses every
#: file and URL but the database's own, and cannot switch it back on while the connection is
#: open), and the configuration is locked last so no statement of the query can undo any of it.
#: ``errors_as_json`` comes first: after the lock nothing may be SET.
_SANDBOX_BEFORE = (
    "SET errors_as_json = true",
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
)
_SANDBOX_AFTER = (
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)
_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_CONFINED = (
    "queries are confined to the database (no other file, no network, no extension); add "
    "--allow-files to let a query read and write local files on purpose"
)


@dataclass(frozen=True)
class QueryResult:
    """The rows of the last statement of a query, cut to ``limit`` rows when one was given.

    Attributes
    ----------
    table
        The rows kept, as an Arrow table (column names as DuckDB gave them).
    types
        DuckDB type of each column, e.g. ``DOUBLE``, ``JSON``, ``VARCHAR[]``.
    total_rows
        Rows the statement returned before the cut.
    notices
        Things the caller should tell the user (e.g. the file's schema was upgraded).
    """

    table: pa.Table
    types: tuple[str, ...]
    total_rows: int
    notices: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    @property
    def truncated(self) -> bool:
        return self.total_rows > self.table.num_rows

    def rows(self) -> list[tuple]:
        """The kept rows as Python tuples (duplicate column names are fine)."""
        return list(zip(*(column.to_pylist() for column in self.table.columns), strict=True))


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    description: str | None


@dataclass(frozen=True)
class ObjectInfo:
    """A table or view of the database with its documented columns."""

    name: str
    kind: Literal["table", "view"]
    description: str | None
    columns: tuple[ColumnInfo, ...] = field(default_factory=tuple)


# ---- running SQL --------------------------------------------------------------------------------


def run_query(
    store: Store,
    sql: str,
    *,
    write: bool = False,
    limit: int | None = None,
    allow_files: bool = False,
) -> QueryResult:
    """Run ``sql`` (one or more statements) and return the rows of the last one.

    Parameters
    ----------
    store
        The database. It must exist unless ``write`` is set.
    sql
        DuckDB SQL; several statements separated by ``;`` run in order.
    write
        Open the file read-write and run everything in one transaction (rolled back on any
        error). Without it the connection is read-only and a statement that would change the
        file is refused with a :class:`UserInputError` that suggests ``--write``.
    limit
        Keep at most this many rows (``total_rows`` still counts them all); None keeps all.
    allow_files
        Let the SQL read and write local files with DuckDB's own functions (``read_csv``,
        ``COPY ... TO``, ``ATTACH``, ...). Without it the query is confined to the database.
        Either way no extension is installed or loaded, no URL is read, settings cannot be
        changed, and DuckDB refuses a ``COPY`` onto the open database or its write-ahead log.

    Raises
    ------
    UserInputError
        Bad SQL (one line: DuckDB's message with line and column), a write without ``write``,
        a file, URL, extension or setting outside the sandbox, a missing database file.
    DatabaseLockedError
        Another process held the file past the store's lock timeout; the message names it.
    """
    text = sql.strip()
    if not text or not _has_statement(text):
        raise UserInputError("no SQL statement given: pass a query, e.g. \"SELECT * FROM v_runs\"")
    if limit is not None and limit < 0:
        raise UserInputError(f"--limit must be 0 or more, got {limit}")
    _refuse_extension_statements(text)
    if write:
        notices = _require_file(store, create=True)
        with store.transaction() as con:  # the store upgrades an older schema first
            _confine(con, allow_files=allow_files)
            result = _execute(con, text, limit, allow_files=allow_files)
    else:
        with _reader(store, allow_files=allow_files) as (con, notices):
            result = _execute(con, text, limit, allow_files=allow_files)
    return QueryResult(result.table, result.types, result.total_rows, notices)


@contextmanager
def _reader(
    store: Store, *, allow_files: bool = False
) -> Iterator[tuple[duckdb.DuckDBPyConnection, tuple[str, ...]]]:
    """A confined read-only connection on a file of the current schema: one open in the usual
    case (each open may wait for a writer), an upgrade first when the file is older."""
    notices = _require_file(store, create=False)
    upgraded_from = store.ensure_current()
    if upgraded_from is not None:
        notices = (
            *notices,
            f"upgraded {store.path} from schema version {upgraded_from} to {LATEST_VERSION}",
        )
    with store.connect(read_only=True) as con:
        _confine(con, allow_files=allow_files)
        yield con, notices


def _confine(con: duckdb.DuckDBPyConnection, *, allow_files: bool) -> None:
    """Switch the sandbox on for this connection's database (see ``_SANDBOX_BEFORE``).

    DuckDB settings are per database instance, not per connection: every connection this
    process has open on the same file shares them until the last one closes. The store opens
    one connection per unit of work, so in the CLI nothing else sees them.
    """
    for statement in _SANDBOX_BEFORE:
        con.execute(statement)
    if allow_files:
        # With external access off DuckDB still opens the paths listed here, and only local
        # paths: URLs (http, s3, ...) and extension loading stay refused.
        con.execute(f"SET allowed_directories = [{_literal(os.path.abspath(os.sep))}]")
    for statement in _SANDBOX_AFTER:
        con.execute(statement)


def _refuse_extension_statements(sql: str) -> None:
    """INSTALL, LOAD and UPDATE EXTENSIONS fetch or run code from outside: never in a query.

    Checked before anything runs, so a script is refused whole. (Confined, DuckDB refuses them
    too; with --allow-files an INSTALL from DuckDB's default repository would reach the
    network.)
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return  # the run reports the syntax error; nothing of an unparsable script runs
    for statement in statements:
        words = _LEADING_COMMENTS.sub("", statement.query).replace(";", " ").split()
        try:
            refused = statement.type == duckdb.StatementType.LOAD  # INSTALL, FORCE INSTALL, LOAD
        except ValueError:  # a type this duckdb's Python enum has no name for, UPDATE EXTENSIONS
            refused = [w.upper() for w in words[:2]] == ["UPDATE", "EXTENSIONS"]
        if refused:
            first = " ".join(words[: 3 if words[0].upper() == "FORCE" else 2])
            raise UserInputError(
                f"{first} is refused: queries are confined to the database and load no DuckDB "
                "extension (no network); --allow-files lets a query read and write local "
                "files, not install or load extensions"
            )


def _has_statement(sql: str) -> bool:
    try:
        return bool(duckdb.extract_statements(sql))
    except duckdb.Error:
        return True  # let the real run report the syntax error with its position


def _require_file(store: Store, *, create: bool) -> tuple[str, ...]:
    """Refuse a missing file unless creating it: a typo in --db must not look like an empty
    database. Returns the notices for the user."""
    if store.path.exists():
        return ()
    if create:
        store.migrate()
        return (f"created database {store.path} (schema version {LATEST_VERSION})",)
    raise UserInputError(
        f"no database at {store.path}: check --db (or QUANTORCH_DB); a database is created "
        "by `quantorch data fetch` or `quantorch backtest`"
    )


def _execute(
    con: duckdb.DuckDBPyConnection, sql: str, limit: int | None, *, allow_files: bool = False
) -> QueryResult:
    # The connection reports errors as JSON (``_confine``): structured errors carry the byte
    # position of the fault in the whole text, for every statement of a script (the plain text
    # only shows it for some errors).
    try:
        con.execute(sql)
        types = tuple(str(d[1]) for d in con.description or ())
        if con.description is None:
            table = pa.table({})
        else:
            with warnings.catch_warnings():
                # DuckDB suggests the relational API, which loses error positions; the copy it
                # warns about is the price of keeping them.
                warnings.filterwarnings("ignore", message=_ARROW_COPY_WARNING)
                table = con.to_arrow_table()
    except duckdb.Error as exc:
        raise _sql_error(exc, sql, allow_files=allow_files) from exc
    total = table.num_rows
    if limit is not None and total > limit:
        table = table.slice(0, limit)
    return QueryResult(table, types, total)


def _sql_error(exc: duckdb.Error, sql: str, *, allow_files: bool = False) -> UserInputError:
    """DuckDB's message on one line, with the line and column of the fault when known; a
    refusal of the sandbox says why and what to do instead."""
    kind, _, detail = str(exc).partition(": ")
    info: dict = {}
    try:
        parsed = json.loads(detail)
        if isinstance(parsed, dict):
            info = parsed
    except ValueError:
        pass
    message = str(info.get("exception_message") or detail.split("\n\nLINE ")[0])
    message = " ".join(message.split())
    if "read-only mode" in message:
        statement = message.split('"')[1] if message.count('"') >= 2 else "this statement"
        return UserInputError(
            f"{statement} changes the database, and queries are read-only by default: add "
            "--write to run it (it takes the database's write lock for the query's duration)"
        )
    refusal = _sandbox_refusal(kind, message, allow_files=allow_files)
    if refusal is not None:
        return UserInputError(refusal)
    where = ""
    if str(info.get("position", "")).isdigit():
        line, column = _line_column(sql, int(info["position"]))
        where = f" at line {line}, column {column}"
        span = _span(sql, str(info.get("location", "")))
        if span:
            where += f" (near {span!r})"
    hint = ""
    if kind.startswith("Catalog"):
        hint = "; `quantorch query --schema` lists the tables and views"
    return UserInputError(f"SQL {kind.lower()}{where}: {message}{hint}")


def _sandbox_refusal(kind: str, message: str, *, allow_files: bool) -> str | None:
    """One line for an error the sandbox caused (see ``_confine``), None for any other error."""
    quoted = re.search(r'"([^"]*)"', message)
    name = quoted.group(1) if quoted else None
    if "belongs to an attached database" in message:
        return (
            f'writing to "{name}" is refused: it is the open database (or its write-ahead log), '
            "which a query never writes over; COPY to another file"
        )
    if "configuration has been locked" in message:
        return (
            f'changing the setting "{name}" is refused: settings are locked in queries, which '
            "are confined to the database; use a function where one exists (e.g. "
            "timezone('America/New_York', as_of) rather than SET TimeZone)"
        )
    extension = re.search(r"exists in the (\w+) extension", message)
    if kind.startswith("Catalog") and extension:
        return (
            f"{name or 'this function'} needs DuckDB's {extension.group(1)} extension, and "
            "queries load no extension (they are confined to the database and DuckDB's "
            "built-in functions); --allow-files does not change that"
        )
    if not kind.startswith("Permission"):
        return None
    if "extension" in message.lower():
        subject = "loading a DuckDB extension"
    elif name is not None:
        subject = f'access to "{name}"'
    else:
        subject = "this statement"
    if allow_files:
        return (
            f"{subject} is refused: --allow-files opens local files only, not URLs or "
            "extensions; download the file first, then read it by its path"
        )
    return f"{subject} is refused: {_CONFINED}"


def _line_column(sql: str, byte_offset: int) -> tuple[int, int]:
    before = sql.encode()[:byte_offset].decode(errors="ignore")
    line = before.count("\n") + 1
    return line, len(before) - (before.rfind("\n") + 1) + 1


def _span(sql: str, location: str) -> str | None:
    """The text DuckDB points at, from its ``[start,length]`` byte location."""
    try:
        start, length = (int(p) for p in location.strip("[]").split(","))
    except ValueError:
        return None
    text = sql.encode()[start : start + length].decode(errors="ignore").strip()
    return text[:40] or None


# ---- writing results ----------------------------------------------------------------------------


def format_for(output: Path | None, fmt: str | None) -> OutputFormat:
    """The output format: ``fmt`` when given, else from the file's suffix, else ``table``."""
    if fmt is not None:
        if fmt not in get_args(OutputFormat):
            raise UserInputError(f"unknown format {fmt!r}: use table, csv, json or parquet")
        return fmt  # type: ignore[return-value]
    if output is None:
        return "table"
    guessed = _FILE_SUFFIXES.get(output.suffix.lower())
    if guessed is None:
        raise UserInputError(
            f"cannot tell the format of {output} from its suffix: add --format csv, json or parquet"
        )
    return guessed  # type: ignore[return-value]


def write_result(
    result: QueryResult,
    fmt: Literal["csv", "json", "parquet"],
    output: Path | None = None,
    *,
    stream: IO[str] | None = None,
    store: Store | None = None,
) -> None:
    """Write the rows as CSV (with a header), JSON (an array of objects) or Parquet.

    ``output`` is written atomically (a temporary file in the same folder renamed into place,
    so a failed write leaves what was there) and never over a DuckDB file or a folder (see
    :func:`check_output`; ``store`` names the database the rows came from). Without ``output``
    the text formats go to ``stream`` (default stdout). JSON columns stay JSON in JSON output,
    and NaN or infinite numbers become ``null`` there (JSON has no NaN).
    """
    if fmt not in ("csv", "json", "parquet"):
        raise UserInputError(f"cannot write format {fmt!r} to a file: use csv, json or parquet")
    if output is None and fmt == "parquet":
        raise UserInputError("parquet is a binary format: add --output FILE.parquet")
    if output is not None:
        check_output(output, store)
        target = output
    else:
        folder = tempfile.mkdtemp(prefix="quantorch-query-")
        target = Path(folder) / f"result.{fmt}"
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        _copy(result, fmt, partial)
        if output is not None:
            os.replace(partial, target)
        else:
            out = stream if stream is not None else sys.stdout
            with open(partial, encoding="utf-8") as handle:
                for chunk in iter(lambda: handle.read(1 << 16), ""):
                    out.write(chunk)
            out.flush()
    finally:
        partial.unlink(missing_ok=True)
        if output is None:
            target.parent.rmdir()


def check_output(output: Path, store: Store | None = None) -> None:
    """Refuse an output path a result file must not replace; call it before running the query.

    The path is resolved first (relative to the working folder, symlinks followed). Refused:
    the database of ``store`` itself or its write-ahead log (``<database>.wal``, also when it
    does not exist yet), any existing DuckDB database (its header carries ``DUCK`` at byte 8,
    whatever its name), a name ending in ``.duckdb``, ``.ddb`` or ``.wal`` even when no such
    file exists yet (a result file is named after its format, and a CSV at ``X.duckdb.wal``
    would be replayed into X), an existing folder, and a folder that does not exist.

    Raises
    ------
    UserInputError
        One line naming the fix.
    """
    resolved = Path(output).resolve()
    if store is not None:
        database = store.path.resolve()
        if _same_file(resolved, database):
            raise UserInputError(
                f"--output {output} is the database itself ({store.path}): a result never "
                "replaces it; write to another file, e.g. result.csv"
            )
        logs = {Path(f"{database}.wal"), Path(f"{Path(store.path).absolute()}.wal").resolve()}
        if any(_same_file(resolved, log) for log in logs):
            raise UserInputError(
                f"--output {output} is the write-ahead log of the database {store.path}: "
                "writing there would corrupt it; write to another file, e.g. result.csv"
            )
    if resolved.is_dir():
        raise UserInputError(f"--output {output} is a folder: give a file name")
    if not resolved.parent.is_dir():
        raise UserInputError(f"folder {output.parent} does not exist: create it or fix --output")
    if _is_duckdb_file(resolved):
        raise UserInputError(
            f"--output {output} is a DuckDB database: a result never replaces one; write to "
            "another file, e.g. result.csv"
        )
    suffix = next((s for s in _DATABASE_SUFFIXES if resolved.name.lower().endswith(s)), None)
    if suffix is not None:
        raise UserInputError(
            f"--output {output}: {suffix} names are kept for DuckDB databases and their logs; "
            "name the file after its format, e.g. result.csv or result.parquet"
        )


def _same_file(path: Path, other: Path) -> bool:
    """Same path, or two names (e.g. hard links) of one existing file."""
    if path == other:
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist
        return False


def _is_duckdb_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(12)[8:12] == _DUCKDB_MAGIC
    except OSError:  # missing, or unreadable: nothing of ours to protect there
        return False


def _copy(result: QueryResult, fmt: str, path: Path) -> None:
    """Write with DuckDB's own writers (lists, structs, decimals, dates all handled)."""
    table = result.table
    names = _unique(table.column_names)
    table = table.rename_columns(names)
    select = []
    for name, kind in zip(names, result.types or ("",) * len(names), strict=False):
        column = _ident(name)
        if fmt == "json" and kind == "JSON":
            select.append(f"CAST({column} AS JSON) AS {column}")
        elif fmt == "json" and kind in ("DOUBLE", "FLOAT"):
            select.append(f"CASE WHEN isfinite({column}) THEN {column} END AS {column}")
        else:
            select.append(column)
    options = {
        "csv": "FORMAT csv, HEADER true",
        "json": "FORMAT json, ARRAY true",
        "parquet": "FORMAT parquet, COMPRESSION zstd",
    }[fmt]
    con = duckdb.connect()
    try:
        con.register("query_result", table)
        columns = ", ".join(select) if select else "*"
        con.execute(
            f"COPY (SELECT {columns} FROM query_result) TO {_literal(str(path))} ({options})"
        )
    except duckdb.Error as exc:
        raise UserInputError(f"cannot write {fmt} to {path.name}: {exc}") from exc
    finally:
        con.close()


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---- export -------------------------------------------------------------------------------------


def export(
    store: Store,
    kind: ExportKind,
    fmt: Literal["csv", "json", "parquet"],
    output: Path,
    *,
    run_id: str | None = None,
) -> QueryResult:
    """Write every row of one kind of record (optionally of one run) to ``output``.

    ``runs``, ``decisions`` and ``equity`` come from their views (``v_runs``, ``v_decisions``,
    ``v_equity``): every column of the table plus the derived ones (flattened metrics, forward
    returns, drawdowns). ``tool_calls``, ``fills`` and ``prices`` are the tables as stored.
    ``output`` is checked (:func:`check_output`) before anything is read. Returns the rows
    written (``total_rows``).
    """
    if kind not in _EXPORTS:
        raise UserInputError(f"unknown export {kind!r}: use one of {', '.join(_EXPORTS)}")
    source, order = _EXPORTS[kind]
    where = ""
    if run_id is not None:
        if kind == "prices":
            raise UserInputError("prices are shared by every run: drop --run-id to export them")
        where = f" WHERE run_id = {_literal(run_id)}"
    check_output(output, store)
    result = run_query(store, f"SELECT * FROM {source}{where} ORDER BY {order}")
    if run_id is not None and result.total_rows == 0:
        _check_run_exists(store, run_id, source)
    write_result(result, fmt, output, store=store)
    return result


def _check_run_exists(store: Store, run_id: str, source: str) -> None:
    """A run with no rows of this kind exports an empty file; an unknown run id is an error."""
    known = run_query(
        store,
        f"SELECT run_id FROM runs UNION SELECT run_id FROM {source} WHERE run_id IS NOT NULL",
    )
    ids = [str(row[0]) for row in known.rows()]
    if run_id in ids:
        return
    guess = closest(run_id, ids)
    tip = f"did you mean {guess}?" if guess else "`SELECT run_id FROM v_runs` lists them"
    raise UserInputError(f"no run {run_id!r} in the database ({tip})")


# ---- schema -------------------------------------------------------------------------------------

_OBJECTS_SQL = """
SELECT table_name, 'table', comment FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal AND NOT temporary
UNION ALL
SELECT view_name, 'view', comment FROM duckdb_views()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal AND NOT temporary
ORDER BY 2, 1
"""
_COLUMNS_SQL = """
SELECT table_name, column_name, data_type, comment FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
ORDER BY table_name, column_index
"""


def schema(store: Store | None = None) -> list[ObjectInfo]:
    """Tables then views (each alphabetical), with their columns, types and descriptions.

    With ``store`` None, the schema of a new database of this version (what the docs show);
    otherwise that file's, read-only (upgraded first if its schema is older).
    """
    if store is None:
        with tempfile.TemporaryDirectory(prefix="quantorch-schema-") as folder:
            fresh = Store(Path(folder) / "schema.duckdb")
            fresh.migrate()
            with fresh.connect(read_only=True) as con:
                return _read_schema(con)
    with _reader(store) as (con, _notices):
        return _read_schema(con)


#: The table whose rows each view extends: a view column passed through unchanged has no comment
#: of its own and is described by the table's column of the same name.
_VIEW_BASES = {
    "v_runs": "runs",
    "v_equity": "equity",
    "v_tool_usage": "tool_calls",
    "v_decisions": "decisions",
    "v_pnl_attribution": "decisions",
}


def _read_schema(con: duckdb.DuckDBPyConnection) -> list[ObjectInfo]:
    comments: dict[tuple[str, str], str | None] = {}
    rows = con.execute(_COLUMNS_SQL).fetchall()
    for table, name, _kind, comment in rows:
        comments[(table, name)] = comment or None
    columns: dict[str, list[ColumnInfo]] = {}
    for table, name, kind, comment in rows:
        description = comment or comments.get((_VIEW_BASES.get(table, ""), name))
        columns.setdefault(table, []).append(ColumnInfo(name, kind, description))
    return [
        ObjectInfo(name, kind, comment or None, tuple(columns.get(name, ())))
        for name, kind, comment in con.execute(_OBJECTS_SQL).fetchall()
    ]


def schema_rows(objects: Sequence[ObjectInfo]) -> QueryResult:
    """The schema flattened to one row per column (object, kind, column, type, description)."""
    rows = [
        (o.name, o.kind, o.description, c.name, c.type, c.description)
        for o in objects
        for c in o.columns
    ]
    names = ["object", "kind", "object_description", "column", "type", "description"]
    table = pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)},
                     schema=pa.schema([(n, pa.string()) for n in names]))
    return QueryResult(table, ("VARCHAR",) * len(names), len(rows))


_GENERATED_NOTE = (
    "<!-- Generated by `python -m quantorch.query --write-docs docs/schema.md`; do not edit. -->"
)


def render_schema_markdown(objects: Sequence[ObjectInfo] | None = None) -> str:
    """``docs/schema.md``: every table and view with its columns, types and descriptions."""
    objects = schema() if objects is None else objects
    lines = [
        "# Database schema",
        "",
        _GENERATED_NOTE,
        "",
        (
            f"Schema version {LATEST_VERSION}. The descriptions are the `COMMENT ON` text stored "
            "in the database, so `quantorch query --schema` prints the same. Views are defined "
            "in `quantorch/store/_schema.py`; worked questions are in `docs/research.md`."
        ),
        "",
        "Tables: " + ", ".join(f"`{o.name}`" for o in objects if o.kind == "table") + ".",
        "",
        "Views: " + ", ".join(f"`{o.name}`" for o in objects if o.kind == "view") + ".",
    ]
    for obj in objects:
        lines += ["", f"## {obj.name} ({obj.kind})", ""]
        if obj.description:
            lines += [_md(obj.description), ""]
        lines += ["| column | type | description |", "| --- | --- | --- |"]
        lines += [
            f"| `{c.name}` | `{c.type}` | {_md(c.description or '')} |" for c in obj.columns
        ]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def schema_json(objects: Sequence[ObjectInfo]) -> str:
    """The schema as JSON: a list of objects, each with its columns."""
    payload = [
        {
            "name": o.name,
            "kind": o.kind,
            "description": o.description,
            "columns": [{"name": c.name, "type": c.type, "description": c.description}
                        for c in o.columns],
        }
        for o in objects
    ]
    return json.dumps(payload, indent=2)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quantorch.query",
        description="Print (or write) docs/schema.md, generated from the database schema.",
    )
    parser.add_argument("--write-docs", type=Path, metavar="PATH",
                        help="write the markdown to PATH instead of stdout")
    args = parser.parse_args(argv)
    text = render_schema_markdown()
    if args.write_docs is None:
        sys.stdout.write(text)
    else:
        args.write_docs.write_text(text, encoding="utf-8")
        print(f"wrote {args.write_docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
