"""What only the SQLite store does: its pragmas, schema migrations, the backup API, index use
and driver errors mapped without row values."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from referralkit import (
    Actor,
    FakeClock,
    Query,
    ReferralDesk,
    ReferralEvent,
    Role,
    StorageError,
    ValidationError,
)
from referralkit.events import apply_all
from referralkit.storage import dump, open_store, upgrade
from referralkit.storage.sqlite import _MIGRATIONS, SCHEMA_VERSION, SQLiteStore
from referralkit.testing import sample_request

ACTOR = Actor("sqlite-test", {Role.COORDINATOR})
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "referrals.db"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask (022), which leaves new files readable by everyone (0644)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def desk_over(store: SQLiteStore) -> ReferralDesk:
    counter = iter(range(1, 1_000_000))
    return ReferralDesk(store, clock=FakeClock(START), new_id=lambda: f"id-{next(counter):06d}")


class TestConnections:
    def test_every_connection_is_wal_and_synchronous_full(self, path: Path) -> None:
        """WAL and synchronous=FULL hold on each thread's connection, not only the first."""
        store = SQLiteStore(path)
        seen: list[tuple[str, int, int]] = []

        def look() -> None:
            conn = store._conn
            seen.append(
                (
                    conn.execute("PRAGMA journal_mode").fetchone()[0],
                    conn.execute("PRAGMA synchronous").fetchone()[0],
                    conn.execute("PRAGMA busy_timeout").fetchone()[0],
                )
            )

        look()
        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
        store.close()
        assert seen == [("wal", 2, 30_000)] * 2

    def test_closed_store_refuses_work(self, path: Path) -> None:
        store = SQLiteStore(path)
        store.close()
        with pytest.raises(StorageError):
            store.load("x")
        with pytest.raises(StorageError):
            list(store.export())

    def test_repr_names_the_file(self, path: Path) -> None:
        with SQLiteStore(path) as store:
            assert repr(store) == f"SQLiteStore({str(path)!r})"


@pytest.mark.usefixtures("open_umask")
class TestPermissions:
    """Files that hold PHI are created readable by their owner only, whatever the umask."""

    def test_database_wal_and_shm_are_private(self, path: Path) -> None:
        """The database file is created 0600, and SQLite gives the -wal and -shm files it
        creates the database's mode."""
        with SQLiteStore(path) as store:
            desk_over(store).intake(ACTOR, sample_request())
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert wal.exists()
            assert shm.exists()
            assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)

    def test_by_url_too(self, path: Path) -> None:
        with open_store(f"sqlite:///{path}"):
            assert mode(path) == 0o600

    def test_an_existing_file_keeps_its_mode(self, path: Path) -> None:
        """A mode its owner chose (group-readable, say) is not changed."""
        SQLiteStore(path).close()
        path.chmod(0o640)
        with SQLiteStore(path) as store:
            desk_over(store).intake(ACTOR, sample_request())
            assert mode(path) == 0o640
            assert mode(Path(f"{path}-wal")) == 0o640

    def test_backup_is_private_and_replaces_whole(self, path: Path, tmp_path: Path) -> None:
        """A backup is written beside its target and renamed over it: 0600, even over a
        file that was 0644, and no temporary file is left."""
        target = tmp_path / "backup.db"
        target.write_bytes(b"old")
        target.chmod(0o644)
        with SQLiteStore(path) as store:
            made = desk_over(store).intake(ACTOR, sample_request())
            store.backup(target)
        assert mode(target) == 0o600
        with SQLiteStore(target) as copy:
            assert copy.load(made.id) == made
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    def test_dump_to_a_path_is_private(self, path: Path, tmp_path: Path) -> None:
        target = tmp_path / "store.dump"
        with SQLiteStore(path) as store:
            desk_over(store).intake(ACTOR, sample_request())
            assert dump(store, target) == 1
            assert dump(store, str(target)) == 1
            buffer = io.StringIO()
            dump(store, buffer)
        assert mode(target) == 0o600
        assert target.read_text(encoding="utf-8") == buffer.getvalue()

    def test_a_failed_dump_leaves_nothing(self, path: Path, tmp_path: Path) -> None:
        """A dump that fails half way (here: the store is closed) leaves neither the target
        nor its temporary file behind."""
        folder = tmp_path / "dumps"
        folder.mkdir()
        store = SQLiteStore(path)
        store.close()
        with pytest.raises(StorageError, match="closed"):
            dump(store, folder / "store.dump")
        assert list(folder.iterdir()) == []

    def test_dump_to_a_missing_directory_is_a_storage_error(
        self, path: Path, tmp_path: Path
    ) -> None:
        with SQLiteStore(path) as store, pytest.raises(StorageError) as info:
            dump(store, tmp_path / "no" / "such" / "dir" / "x.dump")
        assert info.value.driver_error == "FileNotFoundError"
        assert info.value.__cause__ is None


class TestReadOnlyOpen:
    """open_store(url, create=False), for code that only reads: nothing is created."""

    def test_a_missing_file_is_refused_and_not_created(self, path: Path) -> None:
        with pytest.raises(StorageError, match=f"no SQLite database at {path}"):
            open_store(f"sqlite:///{path}", create=False)
        assert not path.exists()
        assert list(path.parent.iterdir()) == []

    def test_an_empty_file_is_refused_and_left_empty(self, path: Path) -> None:
        """Not even the WAL switch writes to it."""
        path.touch()
        with pytest.raises(StorageError, match="holds no referralkit database"):
            SQLiteStore(path, create=False)
        assert path.stat().st_size == 0
        assert [p.name for p in path.parent.iterdir()] == [path.name]

    def test_another_applications_database_is_refused(self, path: Path) -> None:
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
        with pytest.raises(StorageError, match="holds no referralkit database"):
            SQLiteStore(path, create=False)

    def test_a_file_that_is_not_a_database_is_a_storage_error(self, path: Path) -> None:
        path.write_bytes(b"PHI-CANARY-" * 1000)
        with pytest.raises(StorageError) as info:
            SQLiteStore(path, create=False)
        assert "PHI-CANARY" not in str(info.value)
        assert info.value.__cause__ is None

    def test_an_existing_store_opens(self, path: Path) -> None:
        with SQLiteStore(path) as store:
            made = desk_over(store).intake(ACTOR, sample_request())
        with open_store(f"sqlite:///{path}", create=False) as store:
            assert store.load(made.id) == made

    def test_in_memory_is_not_a_file(self) -> None:
        with SQLiteStore(":memory:", create=False) as store:
            assert store.count() == 0

    def test_memory_url_is_never_an_existing_store(self) -> None:
        with pytest.raises(ValidationError) as info:
            open_store("memory://", create=False)
        assert info.value.path == "url"
        with pytest.raises(ValidationError):
            open_store("memory://", create=1)  # type: ignore[arg-type]


class TestSchema:
    def test_new_file_is_at_the_latest_version(self, path: Path) -> None:
        with SQLiteStore(path) as store:
            assert store.schema_version() == SCHEMA_VERSION == max(_MIGRATIONS)

    def test_version_1_file_moves_forward_keeping_its_data(self, path: Path) -> None:
        """A file written at version 1 upgrades to the latest, its referrals intact, and
        claims work afterwards; upgrading again changes nothing."""
        store = SQLiteStore(path, migrate=False)
        assert store.schema_version() == 0
        assert store.upgrade(target=1) == 1
        desk = desk_over(store)
        made = desk.send(ACTOR, desk.intake(ACTOR, sample_request()).id)
        store.close()

        assert upgrade(f"sqlite:///{path}") == (1, SCHEMA_VERSION)
        assert upgrade(f"sqlite:///{path}") == (SCHEMA_VERSION, SCHEMA_VERSION)
        with SQLiteStore(path) as store:
            assert store.load(made.id) == made
            assert store.claim("c1", 5, now=START, lease=dt.timedelta(minutes=5)) == [made.id]

    def test_upgrade_target_is_checked(self, path: Path) -> None:
        with SQLiteStore(path, migrate=False) as store:
            for bad in (-1, SCHEMA_VERSION + 1, True, "2"):
                with pytest.raises(ValidationError) as info:
                    store.upgrade(target=bad)  # type: ignore[arg-type]
                assert info.value.path == "target"

    def test_newer_schema_is_refused(self, path: Path) -> None:
        """A file from a newer referralkit is refused, not written to."""
        SQLiteStore(path).close()
        with closing(sqlite3.connect(path)) as conn:  # `with connect()` does not close
            conn.execute("PRAGMA user_version=99")
        with pytest.raises(StorageError, match="newer"):
            open_store(f"sqlite:///{path}")
        with pytest.raises(StorageError, match="newer"):
            SQLiteStore(path, migrate=False)
        with pytest.raises(StorageError, match="newer"):
            upgrade(f"sqlite:///{path}")

    def test_memory_url_has_nothing_to_upgrade(self) -> None:
        with pytest.raises(ValidationError):
            upgrade("memory://")

    def test_concurrent_openers_migrate_once(self, path: Path) -> None:
        """Several threads opening a new file at once: one migrates, none fails."""
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                SQLiteStore(path).close()
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with SQLiteStore(path) as store:
            assert store.schema_version() == SCHEMA_VERSION


class TestBackup:
    def test_backup_is_an_equal_store(self, path: Path, tmp_path: Path) -> None:
        """SQLiteStore.backup copies the database; the copy dumps to the same lines."""
        store = SQLiteStore(path)
        desk = desk_over(store)
        for k in range(5):
            desk.send(ACTOR, desk.intake(ACTOR, sample_request(f"B-{k}")).id)
        copy_path = tmp_path / "copy.db"
        store.backup(copy_path)
        original, copied = io.StringIO(), io.StringIO()
        dump(store, original)
        with SQLiteStore(copy_path) as copy:
            dump(copy, copied)
            assert copy.schema_version() == SCHEMA_VERSION
        store.close()
        assert copied.getvalue() == original.getvalue()
        # the header and the 5 referrals, beside the decision provenance's lines
        kinds = [next(iter(json.loads(line))) for line in original.getvalue().splitlines()]
        assert len([k for k in kinds if k not in ("rule_version", "policy_use")]) == 6

    def test_backup_of_an_in_memory_store(self, tmp_path: Path) -> None:
        with SQLiteStore(":memory:") as store:
            desk = desk_over(store)
            made = desk.intake(ACTOR, sample_request())
            store.backup(tmp_path / "copy.db")
        with SQLiteStore(tmp_path / "copy.db") as copy:
            assert copy.load(made.id) == made

    def test_backup_onto_itself_is_refused(self, path: Path) -> None:
        with SQLiteStore(path) as store, pytest.raises(ValidationError):
            store.backup(path)

    def test_backup_failure_is_a_storage_error(self, path: Path, tmp_path: Path) -> None:
        with SQLiteStore(path) as store, pytest.raises(StorageError) as info:
            store.backup(tmp_path / "no" / "such" / "dir.db")
        assert info.value.__cause__ is None


class TestIndexes:
    """The queries a worklist runs are answered from an index, without a sort step."""

    @staticmethod
    def plan(store: SQLiteStore, sql: str, params: tuple[object, ...] = ()) -> str:
        rows = store._read(f"EXPLAIN QUERY PLAN {sql}", params)
        return " | ".join(str(r[-1]) for r in rows)

    @pytest.mark.parametrize("prefix", ["3fa2", "a\U0010ffff"])
    def test_ids_by_prefix(self, path: Path, prefix: str) -> None:
        """ids_starting_with is a range on the primary key, in its order."""
        with SQLiteStore(path) as store:
            sql, params = store._prefix_sql(prefix, 2)
            plan = self.plan(store, sql, tuple(params))
        assert "sqlite_autoindex_referrals_1 (id>? AND id<?)" in plan
        assert "TEMP B-TREE" not in plan

    def test_worklist_top(self, path: Path) -> None:
        with SQLiteStore(path) as store:
            where, params = store._where(Query(open_only=True))
            plan = self.plan(
                store,
                "SELECT snapshot FROM referrals" + where + " ORDER BY priority_rank DESC, "
                "due_sort, received_sort, id LIMIT 50",
                tuple(params),
            )
        assert "USING INDEX referrals_worklist" in plan
        assert "TEMP B-TREE" not in plan

    def test_updated_order(self, path: Path) -> None:
        with SQLiteStore(path) as store:
            plan = self.plan(
                store,
                "SELECT snapshot FROM referrals WHERE updated_at >= ? "
                "ORDER BY updated_at DESC, id DESC LIMIT 50",
                ("2026-01-01",),
            )
        assert "referrals_updated" in plan
        assert "TEMP B-TREE" not in plan

    @pytest.mark.parametrize(
        ("query", "index"),
        [
            (Query(specialty="cardiology", open_only=True), "referrals_specialty"),
            (Query(owner="coord-1", open_only=True), "referrals_owner"),
            (Query(status="received"), "referrals_status"),
        ],
    )
    def test_one_worklist_in_order(self, path: Path, query: Query, index: str) -> None:
        """A specialty's, an owner's or a status's worklist comes in order off its index."""
        with SQLiteStore(path) as store:
            where, params = store._where(query)
            plan = self.plan(
                store,
                "SELECT snapshot FROM referrals" + where + " ORDER BY priority_rank DESC, "
                "due_sort, received_sort, id LIMIT 50",
                tuple(params),
            )
        assert index in plan
        assert "TEMP B-TREE" not in plan

    @pytest.mark.parametrize(
        ("query", "index"),
        [
            (Query(specialty="cardiology", open_only=True), "referrals_specialty"),
            (Query(owner="coord-1", open_only=True), "referrals_owner"),
            (Query(patient_id="pat-1"), "referrals_patient"),
            (Query(status="received"), "referrals_status"),
        ],
    )
    def test_filters_use_their_index(self, path: Path, query: Query, index: str) -> None:
        with SQLiteStore(path) as store:
            where, params = store._where(query)
            plan = self.plan(store, "SELECT snapshot FROM referrals" + where, tuple(params))
        assert index in plan


class TestPayloads:
    def test_payload_that_is_not_json_is_refused(self, path: Path) -> None:
        """NaN is not JSON (PostgreSQL's json type refuses it): the model refuses it, and a
        payload changed after the event was made is still refused when it is written, with
        nothing written, the same in every SQL adapter."""
        with SQLiteStore(path) as store:
            desk = desk_over(store)
            made = desk.intake(ACTOR, sample_request())
            with pytest.raises(ValidationError) as refused:
                ReferralEvent(made.id, 2, 0, START, "x", "owner_assigned", {"x": float("nan")})
            assert refused.value.path == "payload.x"
            event = ReferralEvent(made.id, 2, 0, START, "x", "owner_assigned", {"owner": "a"})
            changed = apply_all(made, [event])
            event.payload["x"] = float("nan")  # type: ignore[index]
            with pytest.raises(ValidationError) as info:
                store.save(changed, [event], 1)
            assert info.value.path == "payload"
            assert store.load(made.id) == made

    def test_payload_with_model_values_is_refused(self, path: Path) -> None:
        """A payload holding a datetime would read back as text from a JSON store (and as a
        datetime from memory): the model refuses it, naming the key."""
        with pytest.raises(ValidationError) as info:
            ReferralEvent("r-1", 2, 0, START, "x", "owner_assigned", {"owner": "a", "when": START})
        assert info.value.path == "payload.when"


class TestEventHistories:
    """The adapter's own event_histories: one ordered pass over the events table."""

    def test_one_state_while_writers_carry_on(self, path: Path) -> None:
        """The pass reads one state of the file: a change made meanwhile does not show."""
        with SQLiteStore(path) as store:
            desk = desk_over(store)
            made = [desk.intake(ACTOR, sample_request(f"R-{k}")) for k in range(3)]
            before = list(store.event_histories())
            reading = store.event_histories()
            first = next(reading)
            desk.assign(ACTOR, made[-1].id, "late")
            assert [first, *reading] == before
            assert len(list(store.event_histories())[-1]) == len(before[-1]) + 1

    @pytest.mark.parametrize(
        ("column", "value", "message"),
        [
            ("payload", "{not json CANARY", "has a payload that is not valid JSON"),
            ("payload", "[1, 2]", "does not fit the model"),
            # the row's other columns are under its seal's checksum (issue 13 item 5)
            ("at", "CANARY yesterday", "is corrupt"),
            ("at", "2026-01-05T09:00:00", "is corrupt"),
            ("version", "two", "is corrupt"),
        ],
    )
    def test_a_row_edited_by_hand_is_a_storage_error(
        self, path: Path, column: str, value: object, message: str
    ) -> None:
        """A row the store did not write that way is refused as export refuses it: a
        StorageError naming the referral, not repeating the value."""
        with SQLiteStore(path) as store:
            made = desk_over(store).intake(ACTOR, sample_request())
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(f"UPDATE events SET {column} = ?", (value,))
        with SQLiteStore(path) as store:
            with pytest.raises(StorageError, match=message) as info:
                list(store.event_histories())
            assert made.id in str(info.value)
            assert "CANARY" not in str(info.value)

    def test_an_in_memory_store_and_a_closed_one(self) -> None:
        """sqlite:///:memory: reads under the store's lock; a closed store refuses."""
        store = SQLiteStore(":memory:")
        made = desk_over(store).intake(ACTOR, sample_request())
        assert [h[0].type for h in store.event_histories()] == ["created"]
        assert store.events(made.id) == next(store.event_histories())
        store.close()
        with pytest.raises(StorageError, match="closed"):
            list(store.event_histories())


class TestDriverErrors:
    def test_uncreatable_file(self, tmp_path: Path) -> None:
        """A file that cannot be created is a StorageError naming the OS error, not chained."""
        with pytest.raises(StorageError, match="cannot create the SQLite database") as info:
            SQLiteStore(tmp_path / "missing-dir" / "x.db")
        error = info.value
        assert error.driver_error == "FileNotFoundError"
        assert error.__cause__ is None
        assert error.__suppress_context__

    def test_unopenable_file(self, tmp_path: Path) -> None:
        """A path SQLite cannot open (a directory) is a StorageError naming the driver
        class, not chained."""
        with pytest.raises(StorageError) as info:
            SQLiteStore(tmp_path)
        error = info.value
        assert error.driver_error == "OperationalError"
        assert error.__cause__ is None
        assert error.__suppress_context__

    def test_not_a_database(self, tmp_path: Path) -> None:
        bogus = tmp_path / "bogus.db"
        bogus.write_bytes(b"PHI-CANARY-" * 1000)
        with pytest.raises(StorageError) as info:
            SQLiteStore(bogus)
        assert "PHI-CANARY" not in str(info.value)
        assert info.value.__cause__ is None

    def test_constraint_failure_holds_no_values(self, path: Path) -> None:
        """An integrity failure other than a duplicate source id (an event row already
        there) is a StorageError without the row's values."""
        store = SQLiteStore(path)
        desk = desk_over(store)
        made = desk.intake(ACTOR, sample_request())
        with store._write("test") as conn:
            conn.execute(
                "INSERT INTO events (referral_id, version, idx, at, actor, type, payload) "
                "VALUES (?, 2, 0, '2026-03-02T09:00:00+00:00', 'x', "
                "'owner_assigned', '{\"owner\": \"PHI-CANARY\"}')",
                (made.id,),
            )
        with pytest.raises(StorageError) as info:
            desk.assign(ACTOR, made.id, "PHI-CANARY-2")
        assert "PHI-CANARY" not in str(info.value)
        assert info.value.driver_error == "IntegrityError"
        assert info.value.__cause__ is None
        assert store.load(made.id).version == 1
        store.close()


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 9, 30, 0, 7, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=9))),
        dt.datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ],
)
def test_timestamps_are_the_text_strftime_wrote(moment: dt.datetime) -> None:
    """The stored instants (row columns, the access log's ``at``, which its chain hashes)
    keep the text they always had, years below 1000 (unpadded) included."""
    from referralkit.storage.sqlite import _ts

    assert _ts(moment) == moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
