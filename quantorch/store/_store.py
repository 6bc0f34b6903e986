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
from quantorch.errors import DatabaseLockedError, UserInputError
from quantorch.store._schema import LATEST_VERSION, MIGRATIONS

_LOCK_PATTERN = re.compile(r"Conflicting lock is held in (?P<proc>.+?) \(PID (?P<pid>\d+)\)")


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
        if lock_timeout is None:
            lock_timeout = float(os.environ.get("QUANTORCH_LOCK_TIMEOUT", "15"))
        self.lock_timeout = lock_timeout
        self._migrated = False

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """One unit of work on the file; the connection is closed (lock released) on exit."""
        self.ensure_current()
        con = self._open(read_only)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection inside BEGIN/COMMIT; any exception rolls everything back."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def ensure_current(self) -> int | None:
        """Create or upgrade the file to the latest schema, once per Store.

        Returns the version the file had when it was upgraded, or None when nothing changed.
        A reader of an older file thus upgrades it first, in one short write.
        """
        if self._migrated:
            return None
        version = self.schema_version()
        if version >= LATEST_VERSION:
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
            return _current_version(con)
        finally:
            con.close()

    def migrate(self) -> int:
        """Apply every pending migration; returns the resulting schema version."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only=False)
        try:
            version = _current_version(con, create=True)
            if version > LATEST_VERSION:
                raise UserInputError(
                    f"{self.path} has schema version {version}, newer than this quantorch "
                    f"({LATEST_VERSION}); upgrade quantorch or use another --db"
                )
            for migration in MIGRATIONS:
                if migration.version <= version:
                    continue
                con.execute("BEGIN TRANSACTION")
                try:
                    for statement in migration.statements:
                        con.execute(statement)
                    con.execute(
                        "INSERT INTO schema_version VALUES (?, ?, ?)",
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
                delay = min(delay * 2, 1.0)


def _current_version(con: duckdb.DuckDBPyConnection, *, create: bool = False) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if exists:
        return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
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
