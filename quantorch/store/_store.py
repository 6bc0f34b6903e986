from __future__ import annotations

import datetime as dt
import functools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from quantorch import __version__
from quantorch.errors import ConfigError, DatabaseLockedError, StorageError, UserInputError
from quantorch.store._schema import LATEST_VERSION, MIGRATIONS

_LOCK_PATTERN = re.compile(r"Conflicting lock is held in (?P<proc>.+?) \(PID (?P<pid>\d+)\)")
LOCK_TIMEOUT_ENV = "QUANTORCH_LOCK_TIMEOUT"
_DEFAULT_LOCK_TIMEOUT = 15.0


def lock_timeout_from_env() -> float:
    """Seconds to retry a locked file: ``QUANTORCH_LOCK_TIMEOUT`` (default 15)."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return _DEFAULT_LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value < 86_400):
        raise ConfigError(
            f"{LOCK_TIMEOUT_ENV}={text!r} is not a number of seconds: set it to e.g. 15, or unset it"
        )
    return value


#: A process waiting for the file retries at least this often (seconds), so it gets in during
#: the short gaps a long writer leaves for readers (the paper replay's).
_RETRY_CAP_S = 0.1


class Store:
    """The quantorch DuckDB file.

    Parameters
    ----------
    path
        The database file; created (with its parent folder) on the first write.
    lock_timeout
        Seconds to keep retrying a file locked by another process (default: the
        ``QUANTORCH_LOCK_TIMEOUT`` environment variable, else 15).
    """

    def __init__(self, path: str | Path, *, lock_timeout: float | None = None) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout_from_env() if lock_timeout is None else lock_timeout
        self._migrated = False
        self._held: duckdb.DuckDBPyConnection | None = None

    @property
    def exists(self) -> bool:
        """Whether the database file has been created (readers never create it)."""
        return self.path.is_file()

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """One unit of work on the file; the connection is closed (lock released) on exit.

        A read-only unit of work never creates the file: on a missing file it raises
        :class:`UserInputError` naming the path (callers that can do without the data check
        :attr:`exists` first).
        """
        if read_only and not self.exists:
            raise UserInputError(
                f"no database at {self.path}: check --db (or QUANTORCH_DB); a database is "
                "created by `quantorch data fetch`, `quantorch data import` or `quantorch backtest`"
            )
        self.ensure_current()
        # while the file is held, a unit of work is a cursor on the held database: a new
        # connection in all but the cost of opening (and checkpointing) the file again
        con = self._held.cursor() if self._held is not None else self._open(read_only)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the file open for the units of work inside (each still commits on its own).

        For a run of short units of work in a row (a paper cycle): opening the file costs ~15
        ms and closing it a checkpoint. Other processes wait for the file meanwhile, so hold
        it for seconds, never across a network call. Re-entrant.
        """
        if self._held is not None:
            yield
            return
        self.ensure_current()
        self._held = self._open(read_only=False)
        try:
            yield
        finally:
            con, self._held = self._held, None
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection inside BEGIN/COMMIT; any exception rolls everything back.

        A write the file system refuses (a full disk, a read-only folder) raises
        :class:`StorageError`: nothing of the transaction is kept.
        """
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException as exc:
                _rollback(con)
                if _file_system_refused(exc):
                    raise StorageError(
                        f"cannot write to database {self.path}: {_first_line(exc)} (free disk "
                        "space or fix the folder's permissions, then run again); nothing of "
                        "this unit of work was stored"
                    ) from exc
                raise

    def ensure_current(self) -> int | None:
        """Create or upgrade the file to the latest schema, once per Store.

        Returns the version the file had when it was upgraded, or None when nothing changed.
        A reader of an older file thus upgrades it first, in one short write. A file written by
        a newer quantorch is refused (:class:`UserInputError`), never read or written.
        """
        if self._migrated:
            return None
        version = self.schema_version()
        if version > LATEST_VERSION:
            raise _newer_schema(self.path, version)
        if version == LATEST_VERSION:
            self._migrated = True
            return None
        self.migrate()
        return version if self.path.exists() and version > 0 else None

    def schema_version(self) -> int:
        """The schema version of the file (0 for an empty or missing file)."""
        if not self.path.exists():
            return 0
        con = self._open(read_only=True)
        try:
            return _current_version(con, self.path)
        finally:
            con.close()

    def migrate(self) -> int:
        """Apply every pending migration; returns the resulting schema version."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only=False)
        try:
            version = _current_version(con, self.path, create=True)
            if version > LATEST_VERSION:
                raise _newer_schema(self.path, version)
            for migration in MIGRATIONS:
                if migration.version <= version:
                    continue
                con.execute("BEGIN TRANSACTION")
                try:
                    for statement in migration.statements:
                        con.execute(statement)
                    con.execute(
                        "INSERT INTO schema_version (version, description, applied_at) "
                        "VALUES (?, ?, ?)",
                        [migration.version, migration.description, _utcnow()],
                    )
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            self._migrated = True
            return max(version, LATEST_VERSION)
        finally:
            con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        delay, deadline = 0.05, time.monotonic() + self.lock_timeout
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                holder = _lock_holder(str(exc))
                if holder is None:
                    raise UserInputError(f"cannot open database {self.path}: {exc}") from exc
                if time.monotonic() + delay > deadline:
                    raise DatabaseLockedError(
                        f"database {self.path} is locked by {holder} for more than "
                        f"{self.lock_timeout:.0f}s; wait for it to finish, stop it, or use "
                        "another --db"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_CAP_S)


def _newer_schema(path: Path, version: int) -> UserInputError:
    return UserInputError(
        f"{path} has schema version {version}, newer than this quantorch {__version__} "
        f"understands ({LATEST_VERSION}): upgrade quantorch (pip install -U quantorch) or use "
        "another --db; the file was not changed"
    )


_FILE_SYSTEM_FAULTS = re.compile(
    r"No space left|Could not write|Read-only file system|Permission denied|Disk quota", re.I
)


def _file_system_refused(exc: BaseException) -> bool:
    """A write the file system refused, however DuckDB wraps it (IO, fatal, a failed commit)."""
    if isinstance(exc, duckdb.IOException | duckdb.FatalException):
        return True
    return isinstance(exc, duckdb.Error) and bool(_FILE_SYSTEM_FAULTS.search(str(exc)))


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # a failed COMMIT has already ended the transaction


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _current_version(con: duckdb.DuckDBPyConnection, path: Path, *, create: bool = False) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if exists:
        return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    foreign = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND NOT internal"
    ).fetchone()[0] + con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE database_name = current_database() "
        "AND NOT internal"
    ).fetchone()[0]
    if foreign:  # someone else's database: never add quantorch's tables to it
        raise UserInputError(
            f"{path} is a DuckDB database that quantorch did not create (it has tables but no "
            "schema_version): point --db at a quantorch database or a new file; it was not changed"
        )
    if create:
        con.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
            "description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        con.execute("COMMENT ON TABLE schema_version IS 'Migrations applied to this file, in order'")
    return 0


def _lock_holder(message: str) -> str | None:
    if "lock" not in message.lower():
        return None
    match = _LOCK_PATTERN.search(message)
    if match:
        return f"process {match['pid']} ({Path(match['proc']).name})"
    return "another process"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@functools.cache
def code_version() -> str:
    """The quantorch version, plus the git commit when running from a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
