"""``SQLiteStore.referral_versions`` streams (issue 16): the ids and versions of every referral
come from a private read transaction a batch at a time, so the analytics cache's check of a
million referrals never holds them as one list of Python rows (about 130 MB at 1,000,000),
and the rows are those of one snapshot of the store."""

from __future__ import annotations

import sqlite3
import tracemalloc
from contextlib import closing
from pathlib import Path

import pytest

from referralkit.storage import sqlite as sqlite_module
from referralkit.storage.sqlite import SQLiteStore

ROWS = 4_000


def _filled(path: Path) -> None:
    """``ROWS`` referral rows written directly (the versions read only ids and versions)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.executemany(
            "INSERT INTO referrals (id, version, status, is_open, priority, priority_rank, "
            "due_sort, received_sort, specialty, owner, patient_id, source_id, updated_at, "
            "snapshot) VALUES (?, ?, 'draft', 1, 'routine', 3, '', '', 'x', NULL, 'p', NULL, "
            "'', '{}')",
            [(f"ref-{k:06d}", k % 7 + 1) for k in range(ROWS)],
        )
        conn.commit()


def test_the_versions_are_read_a_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v.db"
    SQLiteStore(path).close()
    _filled(path)
    monkeypatch.setattr(sqlite_module, "_EXPORT_BATCH", 5)  # batches of 50 rows
    with SQLiteStore(path) as store:
        tracemalloc.start()
        try:
            count = 0
            for referral_id, version in store.referral_versions():
                assert version == int(referral_id[4:]) % 7 + 1
                count += 1
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert count == ROWS
    # one list of 4,000 rows is over 400 KB of tuples and strings; a batch of 50, a few KB
    assert peak < 150_000


def test_the_versions_are_one_snapshot(tmp_path: Path) -> None:
    """A write while the versions are read is not seen half way: the read holds its own
    transaction from its first row to its last."""
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    _filled(path)
    with SQLiteStore(path) as store:
        rows = store.referral_versions()
        first = next(rows)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("UPDATE referrals SET version = version + 100")
            conn.commit()
        rest = list(rows)
        assert [first, *rest] == [(f"ref-{k:06d}", k % 7 + 1) for k in range(ROWS)]
        assert dict(store.referral_versions())["ref-000000"] == 101
