"""DuckDB storage behind one small module: connections, locking, migrations.

DuckDB allows one read-write process *or* many read-only processes on a file. quantorch never
keeps a write connection open longer than one unit of work, and every open retries a locked
file with exponential backoff before it gives up with :class:`DatabaseLockedError`, which names
the process holding the lock.
"""

from quantorch.store._store import Store, code_version

__all__ = ["Store", "code_version"]
