"""The voice store's lock: one writer at a time, readers never see a write half done.

An advisory `fcntl.flock` on a lock file in the store: writers hold it exclusively,
readers shared. The kernel drops it when the holder dies, so a killed writer never
leaves the store locked. flock has no timeout, so a waiter polls with LOCK_NB.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from avatar.errors import AvatarUserError

POLL_INTERVAL_S = 0.05


class StoreBusyError(AvatarUserError):
    """Another process held the store's lock for longer than the wait allows."""


@contextlib.contextmanager
def store_lock(lock_path: Path, *, exclusive: bool, timeout_s: float) -> Iterator[bool]:
    """Hold the lock on `lock_path` while the block runs; yields whether a lock is held.

    Exclusive: creates the lock file if needed. Shared: where the lock file is missing
    or cannot be opened (a read-only store), reads go ahead without a lock (yields False),
    since then no writer can be at work through this file either.
    Raises StoreBusyError after `timeout_s` of waiting.
    """
    try:
        fd = (
            os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            if exclusive
            else os.open(lock_path, os.O_RDONLY)
        )
    except (FileNotFoundError, PermissionError):
        if exclusive:
            raise
        yield False
        return
    try:
        _acquire(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, lock_path, timeout_s)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, mode: int, lock_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"The voice store is busy: another process has held its lock "
                    f"({lock_path}) for more than {timeout_s:g} s. Another "
                    "`python -m avatar.voice` command is probably still at work; try again "
                    "when it has finished."
                ) from None
            time.sleep(POLL_INTERVAL_S)
