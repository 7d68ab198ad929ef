"""Files that hold PHI (a SQLite database, a backup, a dump) are created readable and
writable by their owner only: mode 0600, whatever the process umask.

A umask can only take permission bits away, so creating the file with mode 0600 up front is
enough; SQLite then gives the ``-wal`` and ``-shm`` files it creates beside a database the
database file's own permissions (its unix VFS copies them, see ``findCreateFileMode`` in
``os_unix.c``; ``tests/storage/test_sqlite.py`` checks it). An existing file keeps the mode
its owner gave it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Final

__all__ = ["PRIVATE_MODE", "create_private", "private_replacement"]

PRIVATE_MODE: Final = 0o600


def create_private(path: str) -> bool:
    """Create an empty file at ``path`` with mode 0600 unless something is there already;
    whether it was created. Raises :class:`OSError` (a missing directory, no permission)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return False
    os.close(descriptor)
    return True


@contextmanager
def private_replacement(path: str | os.PathLike[str]) -> Iterator[str]:
    """A new file (mode 0600) beside ``path`` to write into, renamed over ``path`` when the
    block succeeds and removed when it fails: ``path`` is never seen half written, and
    never with wider permissions."""
    target = os.path.abspath(os.fspath(path))
    descriptor, temporary = tempfile.mkstemp(
        dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.", suffix=".tmp"
    )
    os.close(descriptor)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
