"""The directory contract on every implementation: memory, SQLite (file and in-memory), and
PostgreSQL (a schema of its own per test, as the storage tests do)."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from storage_support import IN_CI, POSTGRES_URL, fresh_schema, postgres_unavailable

from referralkit.directory import (
    Directory,
    DirectoryError,
    MemoryDirectory,
    Practitioner,
    PractitionerRole,
    SqlDirectory,
    open_directory,
)
from referralkit.testing.directory_contract import DirectoryContract, sample_entries


class TestMemoryDirectory(DirectoryContract):
    @pytest.fixture
    def directory(self) -> Directory:
        return MemoryDirectory()


class TestSqliteDirectory(DirectoryContract):
    @pytest.fixture
    def directory(self, tmp_path: Path) -> Iterator[Directory]:
        directory = open_directory(f"sqlite:///{tmp_path / 'directory.db'}")
        yield directory
        directory.close()


class TestSqliteDirectoryOnYourConnection(DirectoryContract):
    """On a connection the caller opened, in Python's default (implicit transaction) mode."""

    @pytest.fixture
    def directory(self) -> Iterator[Directory]:
        with closing(sqlite3.connect(":memory:")) as conn, closing(SqlDirectory(conn)) as directory:
            directory.ensure_schema()
            yield directory


@pytest.fixture(scope="module")
def postgres() -> str:
    reason = postgres_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
        pytest.skip(f"PostgreSQL tests need a server: {reason}")
    return POSTGRES_URL


class TestPostgresDirectory(DirectoryContract):
    @pytest.fixture
    def directory(self, postgres: str) -> Iterator[Directory]:
        with fresh_schema(postgres) as url, closing(open_directory(url)) as directory:
            yield directory

    def test_a_schema_it_cannot_make_closes_the_connection(self, postgres: str) -> None:
        """A schema PostgreSQL refuses to create (``pg_`` names are reserved) is a
        DirectoryError naming no value, and the connection opened for it is closed."""
        with pytest.raises(DirectoryError, match="cannot open the directory"):
            open_directory(f"{postgres}?schema=pg_referralkit_refused")
        gc.collect()


class TestSqlSpecifics:
    def test_a_failed_batch_writes_nothing(self, tmp_path: Path) -> None:
        """A batch the database refuses half-way leaves the directory as it was."""
        directory = open_directory(f"sqlite:///{tmp_path / 'd.db'}")
        assert isinstance(directory, SqlDirectory)
        directory.add([Practitioner("p-1", "Dr One")])
        directory.connection.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON directory_entries "
            "WHEN NEW.id = 'p-bad' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        with pytest.raises(DirectoryError) as caught:
            directory.add([Practitioner("p-2", "Dr Two"), Practitioner("p-bad", "Dr Bad")])
        assert "IntegrityError" in str(caught.value)
        assert "refused" not in str(caught.value)  # the driver's message is not repeated
        assert caught.value.__cause__ is None
        assert directory.count() == 1
        directory.close()

    def test_a_hand_edited_row_is_refused_on_read(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """A stored entry that breaks a rule is a ValidationError when read, not trusted."""
        directory = open_directory(f"sqlite:///{tmp_path / 'd.db'}")
        assert isinstance(directory, SqlDirectory)
        request.addfinalizer(directory.close)
        directory.add(sample_entries())
        directory.connection.execute(
            'UPDATE directory_entries SET data = \'{"id": "p-1", "name": " "}\' '
            "WHERE kind = 'Practitioner'"
        )
        with pytest.raises(ValueError, match="name"):
            directory.get(Practitioner, "p-1")
        directory.connection.execute(
            "UPDATE directory_entries SET data = 'nonsense' WHERE kind = 'PractitionerRole'"
        )
        with pytest.raises(ValueError, match="not JSON"):
            directory.find(PractitionerRole)

    def test_urls(self, tmp_path: Path) -> None:
        """open_directory knows memory, sqlite and postgresql URLs and refuses others."""
        assert isinstance(open_directory("memory://"), MemoryDirectory)
        with pytest.raises(ValueError, match="expected memory"):
            open_directory("mysql://x")
        with pytest.raises(ValueError, match="names a file"):
            open_directory("sqlite:///")
        with pytest.raises(DirectoryError, match="cannot open"):
            open_directory(f"sqlite:///{tmp_path}/missing/dir/d.db")

    def test_a_schema_it_cannot_make_closes_the_connection(self, tmp_path: Path) -> None:
        """A file whose tables the directory cannot create (here a view holds a table's name)
        is a DirectoryError, and the connection opened for it is closed (Python 3.13 warns
        about one left to the garbage collector; the warning is an error here)."""
        path = tmp_path / "d.db"
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("CREATE VIEW directory_specialties AS SELECT 1 AS kind, 2 AS id")
        with pytest.raises(DirectoryError, match="schema failed"):
            open_directory(f"sqlite:///{path}")
        gc.collect()

    def test_schema_is_idempotent(self, tmp_path: Path) -> None:
        """ensure_schema twice, and reopening a file, keep what is there."""
        url = f"sqlite:///{tmp_path / 'd.db'}"
        first = open_directory(url)
        first.add(sample_entries())
        first.close()
        again = open_directory(url)
        assert isinstance(again, SqlDirectory)
        again.ensure_schema()
        assert again.count() == len(sample_entries())
        again.close()


class TestSqliteDirectoryInTheReferralStore(DirectoryContract):
    """The directory in a referral store's SQLite file, whose migrations created its tables."""

    @pytest.fixture
    def directory(self, tmp_path: Path) -> Iterator[Directory]:
        from referralkit import open_store

        url = f"sqlite:///{tmp_path / 'referrals.db'}"
        open_store(url).close()
        directory = open_directory(url)
        yield directory
        directory.close()


class TestPostgresDirectoryInTheReferralStore(DirectoryContract):
    """The directory in a referral store's PostgreSQL schema, created by its migrations."""

    @pytest.fixture
    def directory(self, postgres: str) -> Iterator[Directory]:
        from referralkit import open_store

        with fresh_schema(postgres) as url:
            open_store(url).close()
            directory = open_directory(url)
            yield directory
            directory.close()


class TestDirectoryInTheStore:
    def _tables(self, path: Path) -> set[str]:
        from contextlib import closing

        with closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows}

    def test_the_store_migration_creates_the_directory_tables(self, tmp_path: Path) -> None:
        """Opening a referral store (schema version 3) creates the directory's tables, and an
        older store gets them from upgrade(), with its referrals kept."""
        from referralkit.storage.sqlite import SCHEMA_VERSION, SQLiteStore

        path = tmp_path / "r.db"
        with SQLiteStore(path, migrate=False) as store:
            assert store.upgrade(target=2) == 2
        assert "directory_entries" not in self._tables(path)
        with SQLiteStore(path) as store:
            assert store.schema_version() == SCHEMA_VERSION >= 3
        assert {"directory_entries", "directory_specialties", "directory_networks"} <= (
            self._tables(path)
        )

    def test_directory_and_referrals_share_the_file(self, tmp_path: Path) -> None:
        """A directory loaded into a store's URL is there the next time it is opened, and the
        referral store still opens and counts its referrals."""
        from referralkit import open_store

        url = f"sqlite:///{tmp_path / 'r.db'}"
        with open_store(url) as store:
            assert store.count() == 0
        directory = open_directory(url)
        directory.add([PractitionerRole("r1", specialties=("207RC0000X",))])
        directory.close()
        again = open_directory(url)
        assert [r.id for r in again.find(PractitionerRole, specialties=["207RC0000X"])] == ["r1"]
        again.close()
        with open_store(url, create=False) as store:
            assert store.count() == 0

    def test_a_directory_made_first_is_kept_by_the_store_migration(self, tmp_path: Path) -> None:
        """open_directory on a new file, then the store on it: the migration keeps the entries."""
        from referralkit import open_store

        url = f"sqlite:///{tmp_path / 'r.db'}"
        directory = open_directory(url)
        directory.add([PractitionerRole("r1", specialties=("207RC0000X",))])
        directory.close()
        open_store(url).close()
        again = open_directory(url)
        assert again.count(PractitionerRole) == 1
        again.close()

    def test_decoded_entries_are_remembered_by_their_text(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
    ) -> None:
        """find reads a stored text once; a row changed behind the directory's back is read
        afresh (the cache is keyed by the text, never stale); the cache is bounded."""
        from referralkit.directory import _sql

        monkeypatch.setattr(_sql, "_CACHED", 3)
        directory = open_directory(f"sqlite:///{tmp_path / 'd.db'}")
        assert isinstance(directory, SqlDirectory)
        request.addfinalizer(directory.close)
        directory.add([PractitionerRole(f"r-{k}", specialties=("207RC0000X",)) for k in range(5)])
        first = list(directory.get_many(PractitionerRole, ["r-0", "r-1"]).values())
        again = list(directory.get_many(PractitionerRole, ["r-0", "r-1"]).values())
        assert all(a is b for a, b in zip(first, again, strict=True))  # read once
        assert len(directory.find(PractitionerRole)) == 5
        assert len(directory._cache) == 3  # bounded: the oldest go first
        directory.connection.execute(
            'UPDATE directory_entries SET data = \'{"id":"r-4","telehealth":true}\' '
            "WHERE id = 'r-4'"
        )
        changed = directory.get_many(PractitionerRole, ["r-4"])["r-4"]
        assert changed.telehealth
        assert directory.find(PractitionerRole)[-1].telehealth


_CODES = ["207RC0000X", "207RI0011X", "207N00000X"]
_NETS = ["net-a", "net-b", "net-c"]
_roles = st.builds(
    lambda k, codes, nets, active: PractitionerRole(
        f"r-{k}", specialties=tuple(codes), network_ids=tuple(nets), active=active
    ),
    st.integers(0, 6),
    st.lists(st.sampled_from(_CODES), max_size=2),
    st.lists(st.sampled_from(_NETS), max_size=2),
    st.booleans(),
)


@given(
    st.lists(st.lists(_roles, max_size=4), min_size=1, max_size=6),
    st.lists(st.sampled_from(_CODES), max_size=3),
    st.one_of(st.none(), st.lists(st.sampled_from(_NETS), max_size=2)),
)
def test_memory_find_follows_every_change(
    batches: list[list[PractitionerRole]], codes: list[str], networks: list[str] | None
) -> None:
    """The memory directory keeps each code's members in order between calls; after any
    sequence of adds and replacements (codes, networks, active changing), ``find`` by
    specialty is what filtering every entry gives."""
    directory = MemoryDirectory()
    for batch in batches:
        directory.add(batch)
        found = directory.find(PractitionerRole, specialties=codes, networks=networks)
        expected = [
            r
            for r in directory.entries(PractitionerRole)
            if r.active
            and set(r.specialties) & set(codes)
            and (networks is None or set(r.network_ids) & set(networks))
        ]
        assert found == expected
