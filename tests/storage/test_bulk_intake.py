"""SQLite's bulk intake: a batch of new referrals is written with one statement per table
(``SQLiteStore._save_new``), and what it writes is what the change-at-a-time path writes."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import pytest

import referralkit as rk
from referralkit import synth
from referralkit.clock import FakeClock
from referralkit.errors import ConcurrencyError, DuplicateReferralError, StorageError
from referralkit.storage import MemoryStore
from referralkit.storage.sqlite import SQLiteStore

ACTOR = rk.Actor("bulk-test", {rk.Role.COORDINATOR})
START = synth.DEFAULT_START
TABLES = {
    "referrals": "SELECT * FROM referrals ORDER BY id",
    "events": "SELECT * FROM events ORDER BY seq",
    "worklist_keys": "SELECT * FROM worklist_keys ORDER BY referral_id, bucket",
}


def intake_changes(count: int, seed: int = 5) -> list[Any]:
    """``count`` referrals as the desk takes them in, as new changes to save."""
    memory = MemoryStore()
    desk = rk.ReferralDesk(memory, clock=FakeClock(START), new_id=synth.id_factory(seed))
    for request in synth.population(count, seed, START):
        desk.intake(ACTOR, request)
    return [(referral, events, 0) for referral, events in memory.export()]


def one_at_a_time(store: SQLiteStore, changes: list[Any]) -> None:
    """The change-at-a-time path, in one transaction, as ``save_many`` ran it before."""
    with store._write("test") as conn:
        schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
        head = [0, "0" * 64]
        for referral, events, expected in changes:
            store._save_one(conn, referral, events, expected, schema=schema, head=head)


def rows(path: Path) -> dict[str, list[Any]]:
    with closing(sqlite3.connect(path)) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in TABLES.items()}


@pytest.fixture(scope="module")
def changes() -> list[Any]:
    return intake_changes(12)


def test_a_batch_writes_the_rows_the_change_at_a_time_path_writes(
    tmp_path: Path, changes: list[Any]
) -> None:
    """Every column of every table, the events' chain included, is the same (unencrypted:
    the stored text is then deterministic)."""
    with SQLiteStore(tmp_path / "batch.db") as store:
        store.save_many(changes)
    with SQLiteStore(tmp_path / "single.db") as store:
        one_at_a_time(store, changes)
    batch, single = rows(tmp_path / "batch.db"), rows(tmp_path / "single.db")
    assert batch == single
    assert len(batch["referrals"]) == len(changes)
    assert batch["worklist_keys"]


def test_an_encrypted_batch_reads_back_and_verifies(tmp_path: Path, changes: list[Any]) -> None:
    from referralkit.tamper import verify

    with SQLiteStore(tmp_path / "enc.db", keys=rk.KeyRing.generate()) as store:
        store.save_many(changes)
        for referral, events, _ in changes:
            assert store.load(referral.id) == referral
            assert store.events(referral.id) == list(events)
        assert verify(store).ok


def test_a_referral_stored_already_is_a_concurrency_error(
    tmp_path: Path, changes: list[Any]
) -> None:
    """Found by the batch's existence check (in the second list of ids): nothing written."""
    with SQLiteStore(tmp_path / "c.db") as store:
        store.save_many(changes[-1:])
        with pytest.raises(ConcurrencyError) as info:
            store.save_many(changes)
        assert info.value.referral_id == changes[-1][0].id
        assert store.count() == 1


def test_the_existence_check_reads_every_list_of_ids(
    tmp_path: Path, changes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("referralkit.storage.sqlite._ID_CHUNK", 5)
    with SQLiteStore(tmp_path / "c.db") as store:
        store.save_many(changes[-1:])
        with pytest.raises(ConcurrencyError):
            store.save_many(changes)
        store.save_many(changes[:-1])
        assert store.count() == len(changes)


def test_a_batch_with_a_change_to_its_own_new_referral(tmp_path: Path) -> None:
    """One referral twice (taken in, then assigned): saved a change at a time."""
    memory = MemoryStore()
    desk = rk.ReferralDesk(memory, clock=FakeClock(START), new_id=synth.id_factory(8))
    made = desk.intake(ACTOR, next(iter(synth.population(1, 8, START))))
    first = memory.events(made.id)
    assigned = desk.assign(ACTOR, made.id, "nurse-1")
    later = [e for e in memory.events(made.id) if e.version == assigned.version]
    with SQLiteStore(tmp_path / "t.db") as store:
        store.save_many([(made, first, 0), (assigned, later, made.version)])
        assert store.load(made.id) == assigned
        assert store.events(made.id) == memory.events(made.id)


def test_a_source_id_held_by_a_stored_referral(tmp_path: Path, changes: list[Any]) -> None:
    """The referral refused is the first one not inserted: a DuplicateReferralError naming
    its source id, and nothing of the batch is written."""
    taken = changes[3][0]
    assert taken.source_id is not None
    with SQLiteStore(tmp_path / "d.db") as store:
        other = intake_changes(1, seed=6)[0]
        clash = attrs.evolve(other[0], source_id=taken.source_id)
        store.save_many([(clash, other[1], 0)])
        with pytest.raises(DuplicateReferralError) as info:
            store.save_many(changes)
        assert info.value.source_id == taken.source_id
        assert store.count() == 1


def test_another_integrity_failure_is_a_storage_error(tmp_path: Path, changes: list[Any]) -> None:
    """An insert refused for anything but a source id: a StorageError without values."""
    with SQLiteStore(tmp_path / "e.db") as store:
        with store._write("test") as conn:
            conn.execute(
                "CREATE TRIGGER no_more BEFORE INSERT ON referrals WHEN "
                f"NEW.id = '{changes[2][0].id}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        with pytest.raises(StorageError) as info:
            store.save_many(changes)
        assert not isinstance(info.value, DuplicateReferralError)
        assert info.value.driver_error == "IntegrityError"
        assert changes[2][0].patient.family_name not in str(info.value)
        assert store.count() == 0
