"""PID lock files: an exclusive ``flock`` naming its holder (the scheduler of a job store, the
process running an account's cycles)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

__all__ = ["PidLock", "probe_lock", "read_pid"]


class PidLock:
    """An exclusive ``flock`` on a file holding the owner's PID, kept open while the owner
    works; the kernel drops it if the process dies, so it is never stale."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, *, retry_s: float,
                busy: Callable[[int | None, Path], Exception]) -> PidLock:
        """Take the lock, retrying for ``retry_s``; then raise ``busy(holder_pid, path)``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a program the cycle execs must not inherit (and so keep) the lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + retry_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise busy(read_pid(path), path) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        # the file stays: unlinking it would let a waiting process lock a deleted inode
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_pid(lock: Path) -> int | None:
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def probe_lock(lock: Path) -> tuple[bool, int | None]:
    """(held, PID written in the file) without creating or writing anything."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, read_pid(lock)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, read_pid(lock)
    finally:
        os.close(fd)
