"""`quantorch query` and `quantorch export` cannot destroy a database or reach outside it.

- A query is confined to the database: DuckDB's file functions, URLs, extensions and settings
  are refused with one line (exit 2) naming `--allow-files`, which lets a local user read and
  write local files on purpose (never the open database, never a URL or an extension).
- `--output` never replaces the database, its write-ahead log, any DuckDB file or a folder, and
  is checked before the query runs.
- A read-only command never creates a database file or folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest
import typer
from typer.testing import CliRunner

from quantorch.cli.query_cmd import register
from quantorch.store import Store

runner = CliRunner()
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
register(app)

SECRET = "s3cr3t-token-from-another-file"


def cli(*args: str, env: dict[str, str | None] | None = None):
    return runner.invoke(app, list(args), env={"QUANTORCH_LOCK_TIMEOUT": "2", **(env or {})},
                         catch_exceptions=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "q.duckdb"
    store = Store(path)
    store.migrate()
    with store.transaction() as con:
        con.execute("CREATE TABLE notes AS SELECT 'kept' AS text")
    return path


@pytest.fixture
def db(template, tmp_path) -> Path:
    """A quantorch database holding one row of its own (`notes`) to prove it is intact."""
    path = tmp_path / "q.duckdb"
    shutil.copy(template, path)
    return path


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.csv"
    path.write_text(f"token\n{SECRET}\n")
    return path


@pytest.fixture
def other(tmp_path) -> Path:
    """Someone else's DuckDB database next to ours."""
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE theirs AS SELECT 42 AS answer")
    con.close()
    return path


def _rows(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _one_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


CONFINED = "queries are confined to the database"
ALLOW = "--allow-files to let a query read and write local files on purpose"


# ---- a query stays inside the database ----------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1 AS a) TO '{other}'",
        "COPY (SELECT 1 AS a) TO '{tmp}/answer.csv'",
        "COPY (SELECT 1 AS a) TO '{tmp}/answer.parquet' (FORMAT parquet)",
        "EXPORT DATABASE '{tmp}/dump'",
        "SELECT * FROM read_csv('{secret}')",
        "SELECT * FROM '{secret}'",
        "SELECT * FROM read_text('{secret}')",
        "SELECT * FROM read_blob('{secret}')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM read_parquet('{tmp}/*.parquet')",
        "ATTACH '{other}' AS theirs",
        "SELECT * FROM read_csv('https://example.com/prices.csv')",
        "INSTALL httpfs",
        "LOAD httpfs",
        "FORCE INSTALL httpfs",
        "INSTALL h3 FROM community",
        "UPDATE EXTENSIONS",
        "SELECT 1; INSTALL httpfs",
    ],
)
def test_a_read_only_query_is_confined_to_the_database(db, secret, other, tmp_path, sql):
    before = sorted(p.name for p in tmp_path.iterdir())
    text = sql.format(other=other, tmp=tmp_path, secret=secret)
    result = cli("query", text, "--db", str(db))
    message = _one_line(result)
    assert CONFINED in message and "--allow-files" in message, message
    assert SECRET not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere
    assert _rows(other, "SELECT * FROM theirs") == [(42,)]
    assert _rows(db, "SELECT * FROM notes") == [("kept",)]


def test_the_refusal_names_the_file_and_the_way_out(db, secret):
    message = _one_line(cli("query", f"SELECT * FROM read_csv('{secret}')", "--db", str(db)))
    assert message == f'error: access to "{secret}" is refused: {CONFINED} (no other file, no ' \
                      f"network, no extension); add {ALLOW}"
    install = _one_line(cli("query", "INSTALL httpfs", "--db", str(db)))
    assert install.startswith("error: INSTALL httpfs is refused:")
    assert "not install or load extensions" in install


def test_write_queries_are_confined_too(db, secret):
    script = f"CREATE TABLE tokens AS SELECT * FROM read_csv('{secret}')"
    refused = cli("query", script, "--write", "--db", str(db))
    assert CONFINED in _one_line(refused)
    tables = "SELECT table_name FROM duckdb_tables() WHERE table_name = 'tokens'"
    assert _rows(db, tables) == []  # the transaction rolled back
    done = cli("query", script, "--write", "--allow-files", "--db", str(db))
    assert done.exit_code == 0, done.stderr
    assert _rows(db, "SELECT * FROM tokens") == [(SECRET,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        "SET allowed_directories = ['/']",
        "SET autoinstall_known_extensions = true",
        "SET allow_community_extensions = true",
        "SET threads = 1",
        "PRAGMA enable_profiling",
    ],
)
@pytest.mark.parametrize("allow_files", [False, True])
def test_settings_are_locked(db, sql, allow_files):
    flags = ("--allow-files",) if allow_files else ()
    message = _one_line(cli("query", sql, *flags, "--db", str(db)))
    assert "is refused: settings are locked in queries" in message, message
    assert CONFINED.replace("queries are", "which are") in message


def test_the_database_stays_fully_queryable_in_the_sandbox(db):
    script = """
        SET VARIABLE floor = 0;
        CREATE TEMP TABLE scratch AS SELECT 1 AS one;
        SELECT (SELECT count(*) FROM v_runs) AS runs,
               (SELECT count(*) FROM duckdb_views() WHERE view_name = 'v_decisions') AS views,
               (SELECT count(*) FROM pragma_table_info('runs')) > 10 AS described,
               json_extract_string('{"a": 2}', '$.a') AS from_json,
               timezone('America/New_York', TIMESTAMPTZ '2021-03-05 21:00:00+00') AS new_york,
               (SELECT one FROM scratch) + getvariable('floor') AS scratch
    """
    result = cli("query", script, "--format", "csv", "--db", str(db))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1] == "0,1,true,2,2021-03-05 16:00:00,1"


def test_a_function_of_an_extension_is_never_installed(db):
    message = _one_line(cli("query", "SELECT * FROM read_xlsx('prices.xlsx')", "--allow-files",
                            "--db", str(db)))
    assert "read_xlsx needs DuckDB's excel extension" in message
    assert "queries load no extension" in message


# ---- --allow-files: local files on purpose, never the database ----------------------------------


def test_allow_files_reads_and_writes_local_files(db, secret, other, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    read = cli("query", f"SELECT * FROM read_csv('{secret.name}')", "--format", "csv",
               "--allow-files", "--db", str(db))
    assert read.exit_code == 0, read.stderr
    assert read.stdout == f"token\n{SECRET}\n"
    wrote = cli("query", "COPY (SELECT text FROM notes) TO 'notes.csv'", "--allow-files",
                "--db", str(db))
    assert wrote.exit_code == 0, wrote.stderr
    assert (tmp_path / "notes.csv").read_text() == "text\nkept\n"
    attached = cli("query", f"ATTACH '{other}' AS theirs (READ_ONLY); "
                   "SELECT answer FROM theirs.theirs", "--format", "csv", "--allow-files",
                   "--db", str(db))
    assert attached.stdout == "answer\n42\n", attached.stderr


def test_allow_files_opens_no_url(db):
    message = _one_line(cli("query", "SELECT * FROM read_csv('https://example.com/p.csv')",
                            "--allow-files", "--db", str(db)))
    assert message.startswith('error: access to "https://example.com/p.csv" is refused: '
                              "--allow-files opens local files only")


@pytest.mark.parametrize("target", ["{db}", "{db}.wal", "q.duckdb", "./q.duckdb.wal", "{link}"])
@pytest.mark.parametrize("write", [False, True])
def test_allow_files_never_copies_onto_the_open_database(db, tmp_path, monkeypatch, target,
                                                         write):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.duckdb").symlink_to(db)
    path = target.format(db=db, link=tmp_path / "link.duckdb")
    flags = ("--write",) if write else ()
    message = _one_line(cli("query", f"COPY (SELECT 1 AS a) TO '{path}'", "--allow-files",
                            *flags, "--db", str(db)))
    assert f'writing to "{path}" is refused: it is the open database' in message
    assert _rows(db, "SELECT * FROM notes") == [("kept",)]
    assert not Path(f"{db}.wal").exists()


# ---- --output never replaces a database ---------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("{db}", "is the database itself"),
        ("q.duckdb", "is the database itself"),  # relative to the working folder
        ("{tmp}/sub/../q.duckdb", "is the database itself"),
        ("{link}", "is the database itself"),  # a symlink to it
        ("{hard}", "is the database itself"),  # a hard link to it
        ("{db}.wal", "is the write-ahead log of the database"),  # even before it exists
        ("{other}", "is a DuckDB database"),
        ("{disguised}", "is a DuckDB database"),  # any name: the header tells
        ("{tmp}/new.duckdb", ".duckdb names are kept for DuckDB databases"),
        ("{tmp}/new.duckdb?", ".duckdb names are kept for DuckDB databases"),  # no --format
        ("{other}.wal", ".wal names are kept"),
        ("{tmp}/NEW.DDB", ".ddb names are kept"),
        ("{tmp}", "is a folder"),
        ("{tmp}/sub", "is a folder"),
    ],
)
@pytest.mark.parametrize("command", ["query", "schema", "export"])
def test_output_never_replaces_a_database(db, other, tmp_path, monkeypatch, target, words,
                                          command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.duckdb").symlink_to(db)
    os.link(db, tmp_path / "hard.csv")
    disguised = tmp_path / "results.csv"
    disguised.write_bytes(other.read_bytes())
    path = target.format(db=db, tmp=tmp_path, other=other, link=tmp_path / "link.duckdb",
                         hard=tmp_path / "hard.csv", disguised=disguised)
    fmt = ("--format", "csv")
    if path.endswith("?"):  # the name is refused before its suffix is read as a format
        path, fmt = path[:-1], ()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    # error() proves the check comes first: the query never runs
    args = {
        "query": ("query", "SELECT error('the query ran')", *fmt, "-o", path),
        "schema": ("query", "--schema", *fmt, "-o", path),
        "export": ("export", "runs", *fmt, "-o", path),
    }[command]
    message = _one_line(cli(*args, "--db", str(db)))
    assert words in message and "the query ran" not in message, message
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert _rows(db, "SELECT * FROM notes") == [("kept",)]
    assert _rows(disguised, "SELECT * FROM theirs") == [(42,)]


def test_a_refused_output_leaves_a_write_query_uncommitted(db):
    result = cli("query", "CREATE TABLE made AS SELECT 1 AS one", "--write", "--format", "csv",
                 "-o", str(db), "--db", str(db))
    assert "is the database itself" in _one_line(result)
    assert _rows(db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'made'") == [(0,)]


def test_an_ordinary_file_is_replaced_atomically(db, tmp_path):
    target = tmp_path / "notes.csv"
    target.write_text("old\n")
    result = cli("query", "SELECT text FROM notes", "-o", str(target), "--db", str(db))
    assert result.exit_code == 0, result.stderr
    assert target.read_text() == "text\nkept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv", "q.duckdb"]


# ---- read-only commands create nothing ----------------------------------------------------------


def test_read_only_commands_never_create_a_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    no_db = {"QUANTORCH_DB": None}  # the configured default: quantorch.duckdb here
    schema = cli("query", "--schema", env=no_db)
    assert schema.exit_code == 0 and "showing the schema a new database gets" in schema.stderr
    assert cli("query", "--schema", "--format", "json", env=no_db).exit_code == 0
    assert cli("query", "--schema", "-o", "schema.csv", env=no_db).exit_code == 0
    for args in (("query", "SELECT 1"), ("query", "SELECT 1", "--allow-files"),
                 ("query", "SELECT 1", "-o", "one.csv"), ("export", "runs", "-o", "runs.csv"),
                 ("query", "SELECT 1", "--db", "missing/x.duckdb"),
                 ("export", "fills", "-o", "fills.csv", "--db", "missing/x.duckdb")):
        result = cli(*args, env=no_db)
        assert result.exit_code == 2 and "no database at" in result.stderr, (args, result.stderr)
    assert cli("query", "--schema", "--db", "missing/x.duckdb").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schema.csv"]
