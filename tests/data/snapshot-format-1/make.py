"""Writes this folder's store with the code of a referralkit checkout whose encrypted
snapshots are in format 1 (one ciphertext per PHI field: ``main`` at 1d89cf3 made the
committed files). Run once, from the repository root, with that checkout's ``src``:

    PYTHONPATH=<old checkout>/src python tests/data/snapshot-format-1/make.py

``store.db`` is the SQLite store ``fill`` of ``tests/storage/test_encryption.py`` writes
(three full referrals with a canary in every PHI field, restored with their histories, and
one taken in and changed through the desk), encrypted with the test key ring ``keys.json``
(a key made for this fixture only: it protects nothing else).
"""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1] / "storage"))
sys.path.insert(0, str(HERE.parents[1]))

from test_encryption import fill  # noqa: E402

from referralkit import KeyRing  # noqa: E402
from referralkit.storage import open_store  # noqa: E402


def main() -> None:
    store_path, keys_path = HERE / "store.db", HERE / "keys.json"
    for path in (store_path, keys_path):
        path.unlink(missing_ok=True)
    ring = KeyRing.generate()
    ring.save(keys_path)
    with open_store(f"sqlite:///{store_path}", keys=ring) as store:
        fill(store, 3)
    with closing(sqlite3.connect(store_path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")  # one file, no WAL beside it
        conn.execute("VACUUM")


if __name__ == "__main__":
    main()
