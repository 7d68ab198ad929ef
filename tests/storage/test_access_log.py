"""The access log in every store: append, filters, append-only, the upgrade of an old file."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from referralkit import ReferralDesk
from referralkit.access import (
    GENESIS,
    AccessOutcome,
    AccessQuery,
    AccessRecord,
    at_text,
    chain_hash,
    record_fields,
)
from referralkit.errors import StorageError, ValidationError
from referralkit.privacy import Actor, Role
from referralkit.storage import ReferralStore, open_store
from referralkit.storage.postgres import PostgresStore, connection_settings
from referralkit.storage.sqlite import _ACCESS_INDEX_BLOCK as _BLOCK
from referralkit.storage.sqlite import SCHEMA_VERSION, SQLiteStore
from referralkit.tamper import verify
from referralkit.testing import FakeClock, sample_request

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
_WRITES = re.compile(r"(?:INSERT(?: OR \w+)? INTO|UPDATE) (\w+)")
_LOG_TABLES = {"access_log", "access_log_referrals"}


def record(
    minutes: int, actor: str = "u-1", ids: tuple[str, ...] = ("r-1",), **kw: object
) -> AccessRecord:
    return AccessRecord(
        at=T0 + dt.timedelta(minutes=minutes),
        actor=actor,
        action=str(kw.pop("action", "get")),
        outcome=kw.pop("outcome", AccessOutcome.ALLOWED),  # type: ignore[arg-type]
        referral_ids=ids,
        roles=("coordinator",),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReferralStore]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.db'}"
    else:
        url = request.getfixturevalue("postgres_schema")
    with open_store(url) as opened:
        yield opened


class TestEveryStore:
    def test_append_and_read_back_in_order(self, store: ReferralStore) -> None:
        first = record(0, reason="patient in the ED", grant="g-1", flagged=True)
        store.append_access([first, record(1, "u-2", ("r-1", "r-2"), organization="org-a")])
        store.append_access([record(2, "u-1", (), outcome=AccessOutcome.DENIED, flagged=True)])
        found = store.access_records()
        assert [r.seq for r in found] == sorted(r.seq for r in found)
        assert len({r.seq for r in found}) == 3
        assert found[0] == AccessRecord(
            at=T0,
            actor="u-1",
            action="get",
            outcome=AccessOutcome.ALLOWED,
            referral_ids=("r-1",),
            roles=("coordinator",),
            reason="patient in the ED",
            grant="g-1",
            flagged=True,
            seq=found[0].seq,
            chain=chain_hash(GENESIS, record_fields(first, at_text(T0))),
        )
        assert found[1].referral_ids == ("r-1", "r-2")
        assert found[1].organization == "org-a"

    def test_filters(self, store: ReferralStore) -> None:
        store.append_access(
            [
                record(0, "u-1", ("r-1",)),
                record(10, "u-2", ("r-2",), organization="org-b"),
                record(20, "u-1", ("r-2", "r-3"), outcome=AccessOutcome.DENIED, flagged=True),
                record(30, "u-3", (), grant="g-9", outcome=AccessOutcome.BREAK_GLASS, flagged=True),
            ]
        )

        def minutes(query: AccessQuery) -> list[int]:
            return [int((r.at - T0).total_seconds() // 60) for r in store.access_records(query)]

        assert minutes(AccessQuery(actor="u-1")) == [0, 20]
        assert minutes(AccessQuery(referral_ids={"r-2"})) == [10, 20]
        assert minutes(AccessQuery(referral_ids={"r-3", "r-1"})) == [0, 20]
        assert minutes(AccessQuery(since=T0 + dt.timedelta(minutes=10))) == [10, 20, 30]
        assert minutes(AccessQuery(until=T0 + dt.timedelta(minutes=10))) == [0]
        assert minutes(AccessQuery(outcome=AccessOutcome.DENIED)) == [20]
        assert minutes(AccessQuery(flagged=True)) == [20, 30]
        assert minutes(AccessQuery(flagged=False)) == [0, 10]
        assert minutes(AccessQuery(organization="org-b")) == [10]
        assert minutes(AccessQuery(grant="g-9")) == [30]
        assert minutes(AccessQuery(limit=2)) == [0, 10]
        assert minutes(AccessQuery(referral_ids=set())) == []

    def test_bad_arguments(self, store: ReferralStore) -> None:
        with pytest.raises(ValidationError):
            store.append_access([object()])  # type: ignore[list-item]
        with pytest.raises(ValidationError):
            store.access_records("everything")  # type: ignore[arg-type]

    def test_the_desk_records_in_the_store(self, store: ReferralStore) -> None:
        desk = ReferralDesk(store, clock=FakeClock())
        actor = Actor("coord-1", {Role.COORDINATOR})
        referral = desk.intake(actor, sample_request())
        desk.get(actor, referral.id)
        desk.history(actor, referral.id)
        desk.flush_access_log()
        [get, history] = store.access_records()
        assert (get.action, history.action) == ("get", "history")
        assert get.referral_ids == history.referral_ids == (referral.id,)

    def test_referral_filter_across_blocks_of_the_index(self, store: ReferralStore) -> None:
        """Records one at a time and in batches that straddle the SQLite index's blocks:
        the referral filter finds the same records as reading them all (indexed or not)."""
        made: list[AccessRecord] = []
        n = 0
        for size in (1, 1, 7, _BLOCK - 20, 1, 40, 3, _BLOCK, 1):
            batch = []
            for _ in range(size):
                ids = (f"r-{n % 5}",) if n % 9 else (f"r-{n % 5}", f"r-{(n + 2) % 5}", "r-9")
                batch.append(record(n, ids=ids))
                n += 1
            store.append_access(batch)
            made += batch
            every = store.access_records()
            for wanted in ({"r-0"}, {"r-2", "r-9"}, {"r-9"}, {"r-nobody"}):
                found = store.access_records(AccessQuery(referral_ids=wanted))
                assert found == [r for r in every if wanted & set(r.referral_ids)]
        assert [r.referral_ids for r in store.access_records()] == [r.referral_ids for r in made]


class TestReadAndRecord:
    """``load_recorded``: the read and its record in one transaction (SQL stores)."""

    def test_the_record_is_in_the_log_when_the_referral_is_returned(
        self, store: ReferralStore
    ) -> None:
        desk = ReferralDesk(store, clock=FakeClock())
        actor = Actor("coord-1", {Role.COORDINATOR})
        made = desk.intake(actor, sample_request())
        before = len(store.access_records())
        seen: list[int] = []

        def make(referral: object) -> AccessRecord:
            seen.append(len(store.access_records()))
            return record(0, ids=(made.id,))

        assert store.load_recorded(made.id, make) == made
        assert seen == [before]  # made inside the read, before its record was appended
        log = store.access_records()
        assert len(log) == before + 1
        assert log[-1].referral_ids == (made.id,)

    def test_not_found_appends_nothing(self, store: ReferralStore) -> None:
        from referralkit.errors import NotFoundError

        with pytest.raises(NotFoundError):
            store.load_recorded("nope", lambda referral: record(0))
        assert store.access_records() == []

    def test_a_record_that_cannot_be_made_returns_nothing(self, store: ReferralStore) -> None:
        desk = ReferralDesk(store, clock=FakeClock())
        made = desk.intake(Actor("coord-1", {Role.COORDINATOR}), sample_request())

        def broken(referral: object) -> AccessRecord:
            raise RuntimeError("no record")

        with pytest.raises(RuntimeError):
            store.load_recorded(made.id, broken)
        with pytest.raises(ValidationError):
            store.load_recorded(made.id, lambda referral: "not a record")  # type: ignore[arg-type,return-value]
        assert store.access_records() == []

    def test_a_log_that_refuses_the_record_returns_nothing(self, tmp_path: Path) -> None:
        """SQLite: the log refuses the append (a trigger here; a full disk in life): the
        read fails with it, in the same transaction, so nothing unrecorded is returned."""
        path = tmp_path / "log.db"
        with open_store(f"sqlite:///{path}") as store:
            made = ReferralDesk(store, clock=FakeClock()).intake(
                Actor("coord-1", {Role.COORDINATOR}), sample_request()
            )
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON access_log "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        with open_store(f"sqlite:///{path}") as store:
            with pytest.raises(StorageError):
                store.load_recorded(made.id, lambda referral: record(0, ids=(made.id,)))
            desk = ReferralDesk(store, clock=FakeClock())
            with pytest.raises(StorageError):
                desk.get(Actor("coord-1", {Role.COORDINATOR}), made.id)

    def test_sqlite_commits_changes_with_synchronous_full_after_access_records(
        self, tmp_path: Path
    ) -> None:
        """Access records are committed with synchronous=NORMAL, left set for the next
        record; every other write sets FULL again before it begins."""
        with SQLiteStore(tmp_path / "s.db") as store:
            conn = store._conn
            seen: list[str] = []
            conn.set_trace_callback(seen.append)
            desk = ReferralDesk(store, clock=FakeClock())
            actor = Actor("coord-1", {Role.COORDINATOR})
            made = desk.intake(actor, sample_request())
            desk.get(actor, made.id)
            desk.get(actor, made.id)
            desk.assign(actor, made.id, "someone")
            desk.get(actor, made.id)
            conn.set_trace_callback(None)
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        # each write transaction's setting, and what it wrote
        level, current, transactions = "FULL", None, []
        for statement in seen:
            if statement.startswith("PRAGMA synchronous="):
                level = statement.split("=")[1]
            elif statement == "BEGIN IMMEDIATE":
                current = (level, set())
                transactions.append(current)
            elif current is not None and (written := _WRITES.match(statement)):
                current[1].add(written.group(1))
        changes = [lv for lv, tables in transactions if "events" in tables]
        records = [lv for lv, tables in transactions if tables and tables <= _LOG_TABLES]
        assert changes == ["FULL", "FULL"]  # the intake, the assignment
        assert records == ["NORMAL"] * 3  # the three reads
        toggles = sum(1 for q in seen if q.startswith("PRAGMA synchronous="))
        assert toggles < len(records) + len(changes)  # not two per access record

    def test_the_desk_records_a_denied_get_in_the_same_way(self, store: ReferralStore) -> None:
        from referralkit.errors import PermissionDeniedError

        desk = ReferralDesk(store, clock=FakeClock())
        writer = Actor("coord-1", {Role.COORDINATOR})
        made = desk.intake(writer, sample_request())
        other = Actor("coord-2", {Role.COORDINATOR}, organization="org-nobody")
        with pytest.raises(PermissionDeniedError):
            desk.get(other, made.id)
        assert desk.get(writer, made.id) == made
        gets = [r for r in store.access_records() if r.action == "get"]
        assert [(r.actor, r.outcome, r.reason, r.flagged) for r in gets] == [
            ("coord-2", AccessOutcome.DENIED, "scope", True),
            ("coord-1", AccessOutcome.ALLOWED, None, False),
        ]


class TestAppendOnly:
    def test_sqlite_refuses_updates_and_deletes(self, tmp_path: Path) -> None:
        path = tmp_path / "log.db"
        with SQLiteStore(path) as store:
            # a full block of the referral index (its rows are written block by block)
            store.append_access([record(0)] * _BLOCK)
        with closing(sqlite3.connect(path)) as conn, conn:
            assert conn.execute("SELECT count(*) FROM access_log_referrals").fetchone()[0]
            for sql in (
                "UPDATE access_log SET actor = 'someone-else'",
                "DELETE FROM access_log",
                "DELETE FROM access_log_referrals",
                "UPDATE access_log_referrals SET referral_id = 'r-9'",
            ):
                with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                    conn.execute(sql)
        with SQLiteStore(path) as store:
            assert [r.actor for r in store.access_records()] == ["u-1"] * _BLOCK

    def test_postgres_refuses_updates_deletes_and_truncation(self, postgres_schema: str) -> None:
        with PostgresStore(postgres_schema) as store:
            store.append_access([record(0)])
            schema = store.schema
        settings, _ = connection_settings(postgres_schema)
        for sql in (
            "UPDATE {s}.access_log SET actor = 'someone-else'",
            "DELETE FROM {s}.access_log",
            "TRUNCATE {s}.access_log CASCADE",
            "DELETE FROM {s}.access_log_referrals",
        ):
            with (
                psycopg.connect(settings, autocommit=True) as conn,
                pytest.raises(psycopg.errors.RaiseException, match="append-only"),
            ):
                conn.execute(sql.replace("{s}", f'"{schema}"'))  # type: ignore[call-overload]
        with PostgresStore(postgres_schema) as store:
            assert [r.actor for r in store.access_records()] == ["u-1"]


class TestUpgrade:
    def test_an_old_sqlite_file_gets_the_access_log(self, tmp_path: Path) -> None:
        """A version-3 file (before the access log) upgrades; its referrals are kept."""
        path = tmp_path / "old.db"
        with SQLiteStore(path, migrate=False) as old:
            assert old.upgrade(target=3) == 3
            made = ReferralDesk(old, clock=FakeClock()).intake(
                Actor("c", {Role.COORDINATOR}), sample_request()
            )
            with pytest.raises(StorageError):
                old.access_records()
        with SQLiteStore(path) as upgraded:
            assert upgraded.schema_version() == SCHEMA_VERSION >= 6
            desk = ReferralDesk(upgraded, clock=FakeClock())
            assert desk.get(Actor("c", {Role.COORDINATOR}), made.id) == made
            desk.flush_access_log()
            assert [r.action for r in upgraded.access_records()] == ["get"]

    def test_a_version_8_sqlite_file_keeps_its_referral_index(self, tmp_path: Path) -> None:
        """Version 9 writes the access log's referral index a block of records at a time (an
        audited read writes one row, not two): a version 8 file, every record indexed,
        upgrades with its records found by referral as before, and new records are indexed
        once their block is full."""
        path = tmp_path / "v8.db"
        with SQLiteStore(path, migrate=False) as old:
            assert old.upgrade(target=8) == 8
            old.append_access([record(k, ids=(f"r-{k % 3}",)) for k in range(10)])
        with closing(sqlite3.connect(path)) as conn, conn:  # as version 8 kept it
            conn.execute(
                "INSERT OR IGNORE INTO access_log_referrals (referral_id, seq) "
                "SELECT json_extract(referral_ids, '$[0]'), seq FROM access_log"
            )
        with SQLiteStore(path) as upgraded:
            assert upgraded.schema_version() == SCHEMA_VERSION == 9
            assert len(upgraded.access_records(AccessQuery(referral_ids={"r-1"}))) == 3
            upgraded.append_access([record(10 + k, ids=("r-1",)) for k in range(_BLOCK - 11)])
            assert len(upgraded.access_records(AccessQuery(referral_ids={"r-1"}))) == _BLOCK - 8

            def indexed() -> int:
                return int(upgraded._read("SELECT count(*) FROM access_log_referrals")[0][0])

            assert indexed() == 10  # the version 8 rows; the new ones wait for their block
            upgraded.append_access([record(_BLOCK, ids=("r-1",))])  # the block's last record
            assert indexed() == _BLOCK
            assert len(upgraded.access_records(AccessQuery(referral_ids={"r-1"}))) == _BLOCK - 7

    def test_a_damaged_record_neither_stops_the_log_nor_hides_from_verify(
        self, tmp_path: Path
    ) -> None:
        """The block index reads the records' stored ids: a record edited into invalid JSON
        is skipped there (appends go on), and verify still reports the edit."""
        path = tmp_path / "log.db"
        with SQLiteStore(path) as store:
            store.append_access([record(k) for k in range(5)])
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("DROP TRIGGER access_log_no_update")
            conn.execute("UPDATE access_log SET referral_ids = 'not json' WHERE seq = 3")
        with SQLiteStore(path) as store:
            store.append_access([record(5 + k) for k in range(_BLOCK)])
            assert len(store.access_records(AccessQuery(referral_ids={"r-1"}))) == _BLOCK + 4
            assert verify(store).broken_at == 3

    def test_an_old_postgres_schema_gets_the_access_log(self, postgres_schema: str) -> None:
        with PostgresStore(postgres_schema, migrate=False) as old:
            assert old.upgrade(target=3) == 3
            made = ReferralDesk(old, clock=FakeClock()).intake(
                Actor("c", {Role.COORDINATOR}), sample_request()
            )
        with PostgresStore(postgres_schema) as upgraded:
            assert upgraded.schema_version() >= 6
            desk = ReferralDesk(upgraded, clock=FakeClock())
            assert desk.get(Actor("c", {Role.COORDINATOR}), made.id) == made
            desk.flush_access_log()
            assert [r.action for r in upgraded.access_records()] == ["get"]

    def test_a_version_8_postgres_schema_upgrades_to_9_with_its_log(
        self, postgres_schema: str
    ) -> None:
        """Version 9 changes nothing in PostgreSQL (its index rows are written with each
        record): a version 8 schema's access log reads the same after the upgrade."""
        with PostgresStore(postgres_schema, migrate=False) as old:
            assert old.upgrade(target=8) == 8
            old.append_access([record(k, ids=(f"r-{k % 3}",)) for k in range(10)])
            before = old.access_records(AccessQuery(referral_ids={"r-1"}))
        with PostgresStore(postgres_schema) as upgraded:
            assert upgraded.schema_version() == 9
            assert upgraded.access_records(AccessQuery(referral_ids={"r-1"})) == before
            assert len(before) == 3
            upgraded.append_access([record(10, ids=("r-1",))])
            assert len(upgraded.access_records(AccessQuery(referral_ids={"r-1"}))) == 4


def test_a_restore_that_fills_a_block_indexes_the_records_before_it(tmp_path: Path) -> None:
    """Records restored after some appended ones fill their block of the SQLite index: the
    appended ones are indexed with them (a referral filter finds every one either way)."""
    made = [record(k, ids=("r-1",)) for k in range(_BLOCK + 40)]
    with SQLiteStore(tmp_path / "a.db") as source, SQLiteStore(tmp_path / "b.db") as target:
        source.append_access(made)
        target.append_access(made[:10])
        rows = [(fields, chain) for seq, fields, chain in source.access_chain() if seq > 10]
        target.restore_access(rows, after=str(target.access_records()[-1].chain))
        assert target.access_records() == source.access_records()
        assert len(target.access_records(AccessQuery(referral_ids={"r-1"}))) == _BLOCK + 40
        indexed = target._read("SELECT seq FROM access_log_referrals ORDER BY seq")
        assert [s for (s,) in indexed][:10] == list(range(1, 11))
