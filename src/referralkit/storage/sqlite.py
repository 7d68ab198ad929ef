"""The SQLite store: the embedded default, on the standard library's ``sqlite3``.

Durability and concurrency settings, each read back and checked on every connection:

- ``journal_mode=WAL``: readers never block the writer;
- ``synchronous=FULL``: a committed change survives power loss (access-log records are
  committed with ``synchronous=NORMAL``: they survive a crash of the process, and reach the
  disk with the next change; see :meth:`SQLiteStore.append_access`);
- ``isolation_level=None`` with an explicit ``BEGIN IMMEDIATE`` for every write: the write
  lock is taken up front, so two writers queue on the busy timeout instead of deadlocking
  (measured here: deferred ``BEGIN`` under contention cost 247,415 busy retries where
  ``BEGIN IMMEDIATE`` cost none);
- a busy timeout, so a writer waits for the lock instead of failing at once.

One connection per thread (SQLite connections must not be shared across threads). A new
database file is created with mode 0600 (readable by its owner only: it holds PHI), and
SQLite gives its ``-wal`` and ``-shm`` files the same mode; backups are created the same way.
Worklist queries are served by indexes on the columns the :class:`~referralkit.storage.Query`
filters and orders by; snapshots and events are stored as JSON. The schema is versioned in
``PRAGMA user_version`` and moved forward by :meth:`SQLiteStore.upgrade`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.request import pathname2url

from .._redaction import Sealed, boundary, boundary_iter
from ..access import (
    GENESIS,
    RESTORE_CLASH,
    ROW_COLUMNS,
    AccessQuery,
    AccessRecord,
    chained_row,
    check_access_query,
    check_records,
    record_from_row,
)
from ..crypto import KeyProvider, load_keys
from ..errors import (
    ConcurrencyError,
    DuplicateReferralError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from ..model import Referral, ReferralEvent
from ..worklist import rank_entries
from ._base import (
    AuditHistory,
    Change,
    History,
    Query,
    ReferralStore,
    _claim_query,
    _ids,
    check_changes,
    check_claim,
    check_event_types,
    check_histories,
    check_id,
    check_owner,
    check_prefix,
    check_query,
    check_rank_page,
    lease_end,
    prefix_range,
)
from ._chain import CHAIN_VERSION, chain_rows, event_fields, linked
from ._digests import DIGESTS_VERSION, open_digest, seal_digest
from ._directory import DIRECTORY_TABLES
from ._files import create_private, private_replacement
from ._json import RecordCodec, change_sizes, rewrites
from ._snapshot import AUDIT_PATHS, AUDIT_WHEN
from ._versions import (
    RuleVersion,
    check_digest,
    check_policy_use,
    check_rule_version,
    unknown_policy,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION: Final = 9
"""The schema version this code writes; :meth:`SQLiteStore.upgrade` brings older files here."""

_FAR_FUTURE: Final = "9999-12-31T23:59:59.999999"

# The worklist order: priority rank (highest first), due date, received date, id.
_WORKLIST: Final = "priority_rank DESC, due_sort, received_sort, id"

# Rows read per round when streaming every referral out (export): bounded memory for a
# store of any size.
_EXPORT_BATCH: Final = 500
_T = TypeVar("_T")


def _ts(moment: dt.datetime) -> str:
    """A fixed-width UTC timestamp, so text order is time order."""
    utc = moment if moment.tzinfo is dt.UTC else moment.astimezone(dt.UTC)
    if utc.year < 1000:  # strftime writes such a year unpadded: kept as it was written
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%f")
    # the same text as strftime's, at two thirds of its cost
    return utc.isoformat(timespec="microseconds")[:26]


# Decision provenance (schema version 5): rule versions kept once under the SHA-256 of their
# document, and when a desk began deciding with a policy (see storage/_versions.py).
_VERSION_TABLES: Final = (
    """
    CREATE TABLE rule_versions (
        digest TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE policy_uses (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        digest TEXT NOT NULL REFERENCES rule_versions (digest),
        at TEXT NOT NULL
    )
    """,
    "CREATE INDEX policy_uses_in_force ON policy_uses (kind, at, seq)",
)

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        # Never an MRN (or any other PHI) in a unique key: constraint messages can repeat
        # the key. Patients are found by their opaque ``patient.id``.
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
        f"CREATE INDEX referrals_worklist ON referrals (is_open, {_WORKLIST})",
        "CREATE INDEX referrals_status ON referrals (status, priority_rank DESC, due_sort)",
        "CREATE INDEX referrals_specialty ON referrals (specialty, is_open, priority_rank DESC)",
        "CREATE INDEX referrals_owner ON referrals (owner, is_open, priority_rank DESC)",
        "CREATE INDEX referrals_patient ON referrals (patient_id)",
        "CREATE INDEX referrals_updated ON referrals (updated_at)",
        "CREATE INDEX referrals_due ON referrals (due_sort)",
    ),
    2: (
        # Claims: a lease beside the snapshot (claiming is not a change to the referral).
        # The claim query walks referrals_worklist and skips live leases.
        "ALTER TABLE referrals ADD COLUMN lease_owner TEXT",
        "ALTER TABLE referrals ADD COLUMN lease_until TEXT",
        # the "updated" order breaks ties by id: index both, so no sort step remains
        "DROP INDEX referrals_updated",
        "CREATE INDEX referrals_updated ON referrals (updated_at, id)",
        # a specialty's, an owner's or a status's worklist in full worklist order, so its
        # top 50 is read off the index instead of sorting every match (measured with a
        # million referrals stored: a specialty's top 50 took 27 ms at p95 on PostgreSQL
        # with the version 1 indexes; see benchmarks/bench_storage.py)
        "DROP INDEX referrals_specialty",
        f"CREATE INDEX referrals_specialty ON referrals (specialty, is_open, {_WORKLIST})",
        "DROP INDEX referrals_owner",
        f"CREATE INDEX referrals_owner ON referrals (owner, is_open, {_WORKLIST})",
        "DROP INDEX referrals_status",
        f"CREATE INDEX referrals_status ON referrals (status, {_WORKLIST})",
    ),
    3: (
        # The provider directory (referralkit.directory.SqlDirectory) beside the referrals:
        # open_directory(the store's URL) finds its tables there.
        *DIRECTORY_TABLES,
    ),
    4: (
        # The worklist's stored rank keys (referralkit.worklist.rank_entries): the desk reads
        # its ranked head off worklist_keys_rank instead of assessing every open referral.
        # Filled for the existing rows by _fill_rank_keys.
        """
        CREATE TABLE worklist_keys (
            referral_id TEXT NOT NULL REFERENCES referrals (id),
            bucket INTEGER NOT NULL,
            sort_key REAL NOT NULL,
            PRIMARY KEY (referral_id, bucket)
        )
        """,
        "CREATE INDEX worklist_keys_rank ON worklist_keys (bucket, sort_key, referral_id)",
    ),
    5: _VERSION_TABLES,
    6: (
        # The access log (referralkit.access): append-only, refused updates and deletes,
        # so the rowid numbering is never reused (no AUTOINCREMENT: one page less to write
        # per record). The referrals a record names are indexed beside it for a patient's
        # accounting of disclosures; other filters scan (no index on actor or time: each
        # one costs every audited read another page write).
        """
        CREATE TABLE access_log (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            roles TEXT NOT NULL,
            organization TEXT,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            referral_ids TEXT NOT NULL,
            purpose TEXT,
            reason TEXT,
            grant_id TEXT,
            flagged INTEGER NOT NULL,
            chain TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE access_log_referrals (
            referral_id TEXT NOT NULL,
            seq INTEGER NOT NULL REFERENCES access_log (seq),
            PRIMARY KEY (referral_id, seq)
        ) WITHOUT ROWID
        """,
        *(
            f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END"
            for table in ("access_log", "access_log_referrals")
            for verb in ("update", "delete")
        ),
    ),
    7: (
        # The analytics cache (referralkit.analytics): rows computed from histories, kept so
        # a later frame replays only what changed; opaque blocks, rewritten at will.
        """
        CREATE TABLE analytics_blocks (
            name TEXT NOT NULL,
            seq INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (name, seq)
        )
        """,
    ),
    8: (
        # The events' hash chain (storage/_chain.py, referralkit.tamper): each event's
        # position in append order, the digest of its payload as written, its chain value.
        # Filled for the existing rows by _fill_event_chain, in rowid (insertion) order.
        "ALTER TABLE events ADD COLUMN seq INTEGER",
        "ALTER TABLE events ADD COLUMN sealed TEXT",
        "ALTER TABLE events ADD COLUMN chain TEXT",
    ),
    # Version 9 (two changes of one release):
    # - The worklist digests (referralkit.worklist.WorklistDigest, storage/_digests.py):
    #   one per referral, for the version it was computed from; written by the worklist
    #   that first reads the version, so nothing is filled here.
    # - The access log's referral index written in blocks (_ACCESS_INDEX_BLOCK): a record's
    #   index rows are written once its block of the log is full, so an audited read writes
    #   one row (one page) instead of two; the records of the last, unfilled block are found
    #   by scanning them (_access_where). No statement for it: the version marks the files
    #   whose last block may be unindexed, which a referralkit knowing only version 8
    #   (reading the index alone) must not open.
    9: (
        """
        CREATE TABLE worklist_digests (
            referral_id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            digest TEXT NOT NULL
        )
        """,
    ),
}
_RANK_KEYS_VERSION: Final = 4
"""The migration after which _fill_rank_keys computes the rank keys of the stored rows."""

_COLUMNS: Final = (
    "id, version, status, is_open, priority, priority_rank, due_sort, received_sort, "
    "specialty, owner, patient_id, source_id, updated_at, snapshot"
)
_INSERT: Final = f"INSERT INTO referrals ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"  # noqa: S608
_UPDATE: Final = (
    "UPDATE referrals SET version = ?, status = ?, is_open = ?, priority = ?, "
    "priority_rank = ?, due_sort = ?, received_sort = ?, specialty = ?, owner = ?, "
    "patient_id = ?, source_id = ?, updated_at = ?, snapshot = ? WHERE id = ? AND version = ?"
)
_INSERT_EVENT: Final = (
    "INSERT INTO events (referral_id, version, idx, at, actor, type, payload, seq, sealed, chain) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT_UNCHAINED: Final = (
    "INSERT INTO events (referral_id, version, idx, at, actor, type, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_EVENT_COLUMNS: Final = "referral_id, version, idx, at, actor, type, payload"


# Row values that are PHI (the snapshot's JSON, the patient id) travel sealed to the driver, so
# an exception report with the store's frames' locals does not show them; the driver unseals.
sqlite3.register_adapter(Sealed, Sealed.reveal)


def _row(referral: Referral, codec: RecordCodec) -> tuple[Any, ...]:
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
        Sealed(codec.patient_key(referral.patient.id)),
        referral.source_id,
        _ts(referral.updated_at),
        Sealed(codec.snapshot_text(referral)),
    )


def _chain_head(conn: sqlite3.Connection, schema: int) -> list[Any] | None:
    """``[seq, chain]`` of the last event (read in the write transaction: the write lock
    orders the appends), ``None`` when the schema does not chain events yet."""
    if schema < CHAIN_VERSION:
        return None
    head = conn.execute("SELECT seq, chain FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return [0, GENESIS] if head is None else list(head)


def _event_rows(
    events: Sequence[ReferralEvent], codec: RecordCodec, head: list[Any] | None
) -> list[tuple[Any, ...]]:
    """The rows of ``events``; with the chain's ``head`` (moved on), each with its ``seq``,
    ``sealed`` and ``chain``."""
    sizes = change_sizes(events)
    rows = [
        (
            e.referral_id,
            e.version,
            e.index,
            e.at.isoformat(),
            e.actor,
            e.type,
            Sealed(codec.payload_text(e, sizes[e.referral_id, e.version])),
        )
        for e in events
    ]
    return rows if head is None else linked(head, rows, [e.at for e in events])


def _fill_event_chain(conn: sqlite3.Connection) -> None:
    """Chain the events already stored (the version 8 migration), in rowid order (the
    order they were inserted), a batch at a time."""
    seq, last, after = 0, GENESIS, -1
    cursor = conn.cursor()
    cursor.row_factory = _seal_last
    while True:
        rows = cursor.execute(
            f"SELECT rowid, {_EVENT_COLUMNS} FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?",  # noqa: S608 - fixed column names
            (after, _EXPORT_BATCH * 10),
        ).fetchall()
        if not rows:
            break
        links = chain_rows(seq, last, [row[1:] for row in rows])
        conn.executemany(
            "UPDATE events SET seq = ?, sealed = ?, chain = ? WHERE rowid = ?",
            [(*link, row[0]) for row, link in zip(rows, links, strict=True)],
        )
        seq, _, last = links[-1]
        after = rows[-1][0]
    conn.execute("CREATE UNIQUE INDEX events_seq ON events (seq)")


def _seal_last(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row factory: the last column (a snapshot's or a payload's JSON) sealed as it leaves
    the driver, so no frame of the store holds it in the clear."""
    return (*row[:-1], Sealed(row[-1]))


# A damaged file can make sqlite3 fail to decode SQLite's own error message (it quotes the
# damaged schema text): a UnicodeDecodeError, mapped like the driver's errors
_DRIVER_ERRORS: Final = (sqlite3.Error, UnicodeDecodeError)


_LAST_ACCESS_CHAIN: Final = "SELECT chain FROM access_log ORDER BY seq DESC LIMIT 1"
_LOAD_RECORDED: Final = f"SELECT ({_LAST_ACCESS_CHAIN}), snapshot FROM referrals WHERE id = ?"  # noqa: S608 - fixed
_INSERT_ACCESS: Final = f"INSERT INTO access_log ({ROW_COLUMNS}) VALUES ({', '.join('?' * 12)})"  # noqa: S608 - fixed column names
_ACCESS_INDEX_BLOCK: Final = 256
"""Access records per block of the log's referral index (schema version 9): the records
with ``seq`` up to the last multiple of this below the log's last ``seq`` are always in
``access_log_referrals``; the ones after it (the last block, at most this many) are indexed
when it fills, by the transaction that appends its last record, and until then found by a
scan of the block."""
_INDEX_ACCESS_BLOCK: Final = (
    "INSERT OR IGNORE INTO access_log_referrals (referral_id, seq) "
    "SELECT j.value, a.seq FROM access_log AS a, "
    "json_each(iif(json_valid(a.referral_ids), a.referral_ids, '[]')) AS j "
    "WHERE a.seq > ? AND a.seq <= ? AND j.type = 'text'"
)

_ID_CHUNK: Final = 500
"""Ids per ``IN (...)`` list (well under SQLite's limit of bound parameters)."""

_INSERT_RANK: Final = "INSERT INTO worklist_keys (referral_id, bucket, sort_key) VALUES (?, ?, ?)"


def _assembled(
    codec: RecordCodec,
    wanted: Sequence[str],
    rows: Sequence[Sequence[Any]],
    events: Sequence[Sequence[Any]],
    *,
    selected: bool = False,
) -> list[History]:
    """Snapshots ``(id, snapshot)`` and event rows in referral id order as histories, in the
    order of ``wanted``, each verified (and decrypted) by ``codec``; events newer than their
    snapshot are left out. With ``selected``, the rows are a selection by type (the history
    is not checked whole)."""
    snapshots = {rid: codec.referral(snapshot, rid) for rid, snapshot in rows}
    grouped = {k: list(g) for k, g in itertools.groupby(events, key=lambda e: e[0])}
    found: list[History] = []
    for referral_id in wanted:
        referral = snapshots.get(referral_id)
        if referral is not None:
            rows_of = grouped.get(referral_id, ())
            history = (
                codec.selected(rows_of)
                if selected
                else codec.history(rows_of, referral_id, referral.version)
            )
            found.append((referral, [e for e in history if e.version <= referral.version]))
    return found


def _schema_in(conn: sqlite3.Connection) -> int:
    """The schema version of the database (a store opened without migrating may be older):
    read in the write transaction, so an upgrade by another process counts."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _write_rank_keys(
    conn: sqlite3.Connection,
    referral: Referral,
    history: Sequence[ReferralEvent] | None,
    codec: RecordCodec,
) -> None:
    """Replace the referral's stored rank keys (none once closed); ``history`` is its whole
    history (or its events of :data:`~referralkit.clocks.TIMELINE_EVENT_TYPES`) when the
    caller has it, else it is read back (the new events included) and verified (and
    decrypted) by ``codec``."""
    if referral.version > 1 or history is None:
        conn.execute("DELETE FROM worklist_keys WHERE referral_id = ?", (referral.id,))
    if referral.status.is_terminal:
        return
    if history is None:
        cursor = conn.cursor()
        cursor.row_factory = _seal_last
        history = codec.history(
            cursor.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE referral_id = ? ORDER BY version, idx",  # noqa: S608 - fixed column names
                (referral.id,),
            ),
            referral.id,
            referral.version,
        )
    conn.executemany(
        _INSERT_RANK,
        [(referral.id, e.bucket, e.sort_key) for e in rank_entries(referral, history)],
    )


def _fill_rank_keys(conn: sqlite3.Connection, codec: RecordCodec) -> None:
    """Compute the rank keys of every open referral already stored (the version 4
    migration), from the paged history reader :meth:`SQLiteStore.export` uses."""
    for referral, history in _paged_histories(conn, codec, batch=_EXPORT_BATCH, open_only=True):
        conn.executemany(
            _INSERT_RANK,
            [(referral.id, e.bucket, e.sort_key) for e in rank_entries(referral, history)],
        )


def _paged_histories(
    conn: sqlite3.Connection,
    codec: RecordCodec,
    *,
    batch: int,
    open_only: bool = False,
    types: Sequence[str] | None = None,
    latest: bool = False,
    events: bool = True,
) -> Iterator[History]:
    """The stored referrals with their histories, in id order, read ``batch`` referrals at a
    time (-1: all at once): keyset paging on the id, each page's events in one range query,
    every record verified (and decrypted) by ``codec``. ``open_only`` passes over the closed
    referrals (their events are not decoded). With ``types``, only the events of those types
    (each verified, the history not checked whole; :meth:`SQLiteStore.export_selected`), with
    ``latest`` only the last of them; without ``events``, no event row is read (each
    history is empty: :meth:`SQLiteStore.export_referrals`). Each page is fetched whole
    before the first of it is yielded, so the caller may write on ``conn`` meanwhile (the
    rank-key migration does)."""
    last = ""
    cursor = conn.cursor()
    cursor.row_factory = _seal_last
    selection = ""
    extra: tuple[str, ...] = ()
    if types is not None:
        selection = f" AND type IN ({', '.join('?' for _ in types)})"
        extra = tuple(types)
    while True:
        rows = cursor.execute(
            "SELECT id, snapshot FROM referrals WHERE id > ? ORDER BY id LIMIT ?",
            (last, batch),
        ).fetchall()
        if not rows:
            return
        found = (
            cursor.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE referral_id BETWEEN ? AND ?"  # noqa: S608 - fixed column names and placeholders
                f"{selection} ORDER BY referral_id, version, idx",
                (rows[0][0], rows[-1][0], *extra),
            ).fetchall()
            if events
            else []
        )
        grouped = {k: list(g) for k, g in itertools.groupby(found, key=lambda e: e[0])}
        for referral_id, snapshot in rows:
            referral = codec.referral(snapshot, referral_id)
            if open_only and referral.status.is_terminal:
                continue
            if not events:
                yield referral, []
                continue
            if types is None:
                history = codec.history(grouped.get(referral_id, ()), referral_id, referral.version)
            else:
                chosen = grouped.get(referral_id, [])
                history = codec.selected(chosen[-1:] if latest else chosen)
            yield referral, history
        last = rows[-1][0]


def _sql_literal(value: object) -> str:
    if value is True:
        return "1"  # json_extract gives a JSON true as 1
    assert isinstance(value, str)
    assert "'" not in value
    return f"'{value}'"


# The parts of each snapshot the record audit reads, extracted by SQLite from the stored text
# (one parse of it per row: json_extract keeps the parsed text for the row's other calls):
# the always-read parts as one JSON array, the conditional ones as another (None when the
# text is not JSON at all: the row is then read whole, and refused as every read refuses it)
_AUDIT_PARTS: Final = (
    "CASE WHEN json_valid(snapshot) THEN json_extract(snapshot, "
    + ", ".join(f"'$.{path}'" for path in AUDIT_PATHS)
    + ") END, CASE WHEN json_valid(snapshot) THEN json_array("
    + ", ".join(
        f"CASE WHEN json_extract(snapshot, '$.{condition}') IN "
        f"({', '.join(_sql_literal(value) for value in values)}) "
        f"THEN json_extract(snapshot, '$.{path}') END"
        for path, condition, values in AUDIT_WHEN
    )
    + ") END"
)


def _seal_parts(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row factory for :func:`_paged_audit`: ``(id, snapshot, parts, event row or None)``,
    the snapshot, the parts (PHI among them) and the event's payload sealed."""
    event = None if row[4] is None else (*row[4:10], Sealed(row[10]))
    return (row[0], Sealed(row[1]), Sealed(row[2:4]), event)


# Each referral with its audited parts and the last of its events of the selected types
# (found through the events' primary key, newest first; one row per referral)
_AUDIT_PAGE: Final = (
    f"SELECT r.id, r.snapshot, {_AUDIT_PARTS.replace('snapshot', 'r.snapshot')}, "  # noqa: S608 - fixed SQL
    + ", ".join(f"e.{column.strip()}" for column in _EVENT_COLUMNS.split(","))
    + " FROM referrals r LEFT JOIN events e ON e.rowid = (SELECT rowid FROM events "
    "WHERE referral_id = r.id AND type IN ({marks}) ORDER BY version DESC, idx DESC LIMIT 1) "
    "WHERE r.id > ? ORDER BY r.id LIMIT ?"
)


def _paged_audit(
    conn: sqlite3.Connection, codec: RecordCodec, *, batch: int, types: Sequence[str]
) -> Iterator[AuditHistory]:
    """What the store audit reads (:meth:`SQLiteStore._audit_histories`), in id order,
    ``batch`` referrals at a time (-1: all at once), in one query a page: each snapshot's
    seal verified and only the parts the audit reads decoded (:meth:`RecordCodec.audited`),
    with the last of its events of ``types`` (verified), as :func:`_paged_histories` reads
    them with ``types`` and ``latest``."""
    last = ""
    cursor = conn.cursor()
    cursor.row_factory = _seal_parts
    sql = _AUDIT_PAGE.format(marks=", ".join("?" for _ in types))
    while True:
        rows = cursor.execute(sql, (*types, last, batch)).fetchall()
        if not rows:
            return
        for referral_id, snapshot, parts, event in rows:
            referral = codec.audited(snapshot, referral_id, parts.reveal())
            yield referral, codec.audit_events(event)
        last = rows[-1][0]


def _driver_error(error: Exception, doing: str) -> StorageError:
    # sqlite3 messages can quote values (constraint failures); name only the class and code
    code = getattr(error, "sqlite_errorname", "")
    return StorageError(
        f"SQLite failed while {doing} ({type(error).__name__} {code})".rstrip(),
        driver_error=type(error).__name__,
        sqlstate=str(code),
    )


class SQLiteStore(ReferralStore):
    """Referrals in one SQLite file (or ``:memory:``, for tests).

    The schema is created or brought up to date when the store opens, unless ``migrate`` is
    false (then :meth:`upgrade` does it; a schema newer than this code is refused either
    way). A missing file is created (mode 0600) unless ``create`` is false: then a missing
    file, or one without referralkit's tables, raises
    :class:`~referralkit.errors.StorageError` and nothing is created or written (what a
    command that only reads wants when given a mistyped path).

    .. versionchanged:: 0.1
       Schema version 2: claims (leases) and the ``updated`` order fully indexed.
    .. versionchanged:: 0.1
       ``create``; new files are created with mode 0600.
    .. versionchanged:: 0.1
       Schema version 3: the provider directory's tables
       (:func:`~referralkit.directory.open_directory` with the store's URL).
    .. versionchanged:: 0.2
       Schema version 5: the rule versions decisions were made with, and when each policy
       came into use (:mod:`referralkit.rules.provenance`).
    .. versionchanged:: 0.1
       Schema version 6: the append-only access log (:mod:`referralkit.access`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 30.0,
        migrate: bool = True,
        create: bool = True,
        keys: KeyProvider | str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = str(path)
        self._codec = RecordCodec(load_keys(keys))
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        # the connections (by id) left at synchronous=NORMAL by their last write: an
        # access-log write; the next other write sets FULL again first (see _write)
        self._relaxed: set[int] = set()
        self._lock = threading.Lock()
        self._closed = False
        if self.path != ":memory:":
            if create:
                self._create_file()
            else:
                self._check_exists()
        if self.path == ":memory:":
            # one shared connection: every new :memory: connection is a different database
            self._shared: sqlite3.Connection | None = self._connect()
        else:
            self._shared = None
        try:
            if migrate:
                self.upgrade()
            elif self.schema_version() > SCHEMA_VERSION:
                raise self._too_new(self.schema_version())
        except BaseException:
            # a refused store leaves no connection open (Python 3.13 warns about each one
            # the garbage collector has to close)
            self.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # ------------------------------------------------------------------ connections

    def _create_file(self) -> None:
        """Create the database file with mode 0600 before SQLite does (it would use 0644)."""
        try:
            create_private(self.path)
        except OSError as error:
            raise StorageError(
                f"cannot create the SQLite database {self.path} "
                f"({error.strerror or type(error).__name__})",
                driver_error=type(error).__name__,
            ) from None

    def _check_exists(self) -> None:
        """Refuse a missing file, or one without referralkit's tables, writing nothing.

        Opened with ``mode=rw``, which never creates the file, and checked before the WAL
        switch, which would write to an empty one.
        """
        if not os.path.exists(self.path):
            raise StorageError(f"no SQLite database at {self.path}")
        uri = f"file:{pathname2url(os.path.abspath(self.path))}?mode=rw"
        try:
            with closing(sqlite3.connect(uri, uri=True)) as conn:
                found = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'referrals'"
                ).fetchone()[0]
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "opening the database") from None
        if not found:
            raise StorageError(f"{self.path} holds no referralkit database (no referral tables)")

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=self.busy_timeout,
                # each thread uses its own connection; close() may run on another thread
                check_same_thread=False,
            )
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "opening the database") from None
        try:
            if self.path != ":memory:":
                mode = self._wal(conn)
                if mode.lower() != "wal":
                    raise StorageError(f"SQLite refused WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            if conn.execute("PRAGMA synchronous").fetchone()[0] != 2:
                raise StorageError("SQLite did not keep synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except BaseException as error:
            conn.close()  # not yet in _connections: close() would not see it
            if isinstance(error, _DRIVER_ERRORS):
                raise _driver_error(error, "opening the database") from None
            raise
        with self._lock:
            self._connections.append(conn)
        return conn

    def _wal(self, conn: sqlite3.Connection) -> str:
        """Switch ``conn``'s file to WAL (once per file: the mode is persistent).

        Switching takes an exclusive lock and SQLite reports a clash with another process
        doing the same as "busy" at once, without waiting on the busy timeout (seen when
        several processes open a new file together): retry it until the timeout.
        """
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        deadline = time.monotonic() + self.busy_timeout
        while mode.lower() != "wal":
            try:
                mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorname", "") != "SQLITE_BUSY":
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            else:
                break
        return mode

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
            self._relaxed.discard(id(conn))
        conn.close()

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

    def _guard(self) -> AbstractContextManager[Any]:
        """The lock around the shared ``:memory:`` connection; nothing for a file."""
        return self._lock if self._shared is not None else nullcontext()

    @contextmanager
    def _write(self, doing: str, *, relaxed: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error;
        committed with ``synchronous=NORMAL`` when ``relaxed`` (the access log), else
        ``FULL``. The setting is changed only when the connection's last write differed
        (access records one after another cost no ``PRAGMA`` each)."""
        conn = self._conn
        with self._guard():
            try:
                if (id(conn) in self._relaxed) is not relaxed:
                    conn.execute(f"PRAGMA synchronous={'NORMAL' if relaxed else 'FULL'}")
                    if relaxed:
                        self._relaxed.add(id(conn))
                    else:
                        self._relaxed.discard(id(conn))
                conn.execute("BEGIN IMMEDIATE")
            except _DRIVER_ERRORS as error:
                raise _driver_error(error, doing) from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(error, _DRIVER_ERRORS):
                    raise _driver_error(error, doing) from None
                raise

    def _read(self, sql: str, params: Sequence[Any] = (), *, sealed: bool = False) -> list[Any]:
        """The rows ``sql`` selects; with ``sealed``, each row's last column (a snapshot's or
        a payload's JSON) comes back :class:`~referralkit.privacy.Sealed`."""
        try:
            with self._guard():
                cursor = self._conn.cursor()
                if sealed:
                    cursor.row_factory = _seal_last
                return cursor.execute(sql, params).fetchall()
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "reading") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()
            self._relaxed.clear()

    # ------------------------------------------------------------------ schema

    @boundary
    def schema_version(self) -> int:
        """The version of the schema in the database (0 for an empty one)."""
        return int(self._read("PRAGMA user_version")[0][0])

    @staticmethod
    def _too_new(version: int) -> StorageError:
        return StorageError(
            f"the database schema is version {version}, newer than this referralkit "
            f"knows ({SCHEMA_VERSION}); upgrade referralkit"
        )

    @boundary
    def upgrade(self, target: int | None = None) -> int:
        """Apply the forward migrations the database lacks, up to ``target`` (default: the
        latest), in one transaction; returns the schema version now in the database."""
        wanted = SCHEMA_VERSION if target is None else target
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0:
            raise ValidationError("target", "expected a schema version >= 0")
        if wanted > SCHEMA_VERSION:
            raise ValidationError(
                "target", f"this referralkit knows versions up to {SCHEMA_VERSION}"
            )
        with self._write("upgrading the schema") as conn:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise self._too_new(current)
            for version in range(current + 1, wanted + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                if version == _RANK_KEYS_VERSION:
                    _fill_rank_keys(conn, self._codec)
                if version == CHAIN_VERSION:
                    _fill_event_chain(conn)
                conn.execute(f"PRAGMA user_version={version}")
            return max(current, wanted)

    @boundary
    def backup(self, path: str | Path) -> None:
        """Copy the whole database into the file ``path`` with SQLite's online backup API.

        Writers may keep working meanwhile: the copy is one consistent state of the
        database. The copy is written to a new file (mode 0600) beside ``path`` and renamed
        over it when complete, so an existing file at ``path`` is replaced whole or not at
        all.
        """
        target_path = str(path)
        if target_path == self.path:
            raise ValidationError("path", "the backup must go to another file")
        try:
            with (
                private_replacement(target_path) as temporary,
                self._guard(),
                closing(sqlite3.connect(temporary)) as target,
            ):
                self._conn.backup(target)
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "making a backup") from None
        except OSError as error:
            raise StorageError(
                f"cannot write the backup ({error.strerror or type(error).__name__})",
                driver_error=type(error).__name__,
            ) from None

    # ------------------------------------------------------------------ the store

    @boundary
    def load(self, referral_id: str) -> Referral:
        rows = self._read(
            "SELECT snapshot FROM referrals WHERE id = ?", (check_id(referral_id),), sealed=True
        )
        if not rows:
            raise NotFoundError(referral_id)
        return self._codec.referral(rows[0][0], referral_id)

    @boundary
    def ids_starting_with(self, prefix: str, *, limit: int | None = None) -> list[str]:
        """Answered from the primary key: a range in SQLite's BINARY order (the UTF-8
        bytes, which order as the code points do)."""
        check_prefix(prefix, limit)
        return [row[0] for row in self._read(*self._prefix_sql(prefix, limit))]

    @staticmethod
    def _prefix_sql(prefix: str, limit: int | None) -> tuple[str, list[Any]]:
        low, high = prefix_range(prefix)
        sql = "SELECT id FROM referrals WHERE id >= ?"
        params: list[Any] = [low]
        if high is not None:
            sql += " AND id < ?"
            params.append(high)
        return f"{sql} ORDER BY id LIMIT ?", [*params, -1 if limit is None else limit]

    @boundary
    def find_source(self, source_id: str) -> str | None:
        rows = self._read(
            "SELECT id FROM referrals WHERE source_id = ?", (check_id(source_id, "source_id"),)
        )
        return rows[0][0] if rows else None

    @boundary
    def save_many(self, changes: Sequence[Change]) -> None:
        """Save several changes in one transaction (all or none): for bulk intake."""
        check_changes(changes)
        with self._write("saving referrals") as conn:
            schema = _schema_in(conn)
            head = _chain_head(conn, schema)
            if self._save_new(conn, changes, schema=schema, head=head):
                return
            for referral, events, expected in changes:
                self._save_one(conn, referral, events, expected, schema=schema, head=head)

    @boundary
    def _save_swept(
        self, changes: Sequence[Change], timelines: Sequence[Sequence[ReferralEvent] | None]
    ) -> None:
        check_changes(changes)
        with self._write("saving referrals") as conn:
            schema = _schema_in(conn)
            head = _chain_head(conn, schema)
            for (referral, events, expected), timeline in zip(changes, timelines, strict=True):
                self._save_one(
                    conn, referral, events, expected, schema=schema, head=head, timeline=timeline
                )

    def _save_new(
        self,
        conn: sqlite3.Connection,
        changes: Sequence[Change],
        *,
        schema: int,
        head: list[Any] | None,
    ) -> bool:
        """Save a batch of new referrals (bulk intake) with one statement per table instead
        of one per referral: the rows and links are the ones :meth:`_save_one` writes, in
        the same order. ``False``, with nothing written, when the batch is anything else (a
        change to a stored referral, a referral twice, one already stored): the caller then
        saves it a change at a time, with that path's errors."""
        ids = [referral.id for referral, _, expected in changes if expected == 0]
        if len(ids) != len(changes) or len(set(ids)) != len(ids) or self._any_stored(conn, ids):
            return False
        try:
            conn.executemany(_INSERT, [_row(referral, self._codec) for referral, _, _ in changes])
        except sqlite3.IntegrityError as error:
            raise self._refused(conn, changes, error) from None
        rows: list[tuple[Any, ...]] = []
        for _, events, _ in changes:
            rows += _event_rows(events, self._codec, head)
        conn.executemany(_INSERT_EVENT_UNCHAINED if head is None else _INSERT_EVENT, rows)
        if schema >= _RANK_KEYS_VERSION:
            # as _write_rank_keys writes them with the whole history at hand (a new
            # referral is at version 1: check_changes saw to it; no old keys to delete)
            conn.executemany(
                _INSERT_RANK,
                [
                    (referral.id, entry.bucket, entry.sort_key)
                    for referral, events, _ in changes
                    if not referral.status.is_terminal
                    for entry in rank_entries(referral, events)
                ],
            )
        return True

    @staticmethod
    def _any_stored(conn: sqlite3.Connection, ids: Sequence[str]) -> bool:
        """Whether any of ``ids`` is a stored referral (one statement per ``_ID_CHUNK`` ids)."""
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT 1 FROM referrals WHERE id IN ({marks}) LIMIT 1"  # noqa: S608 - only placeholders
            if conn.execute(sql, chunk).fetchone() is not None:
                return True
        return False

    def _refused(
        self, conn: sqlite3.Connection, changes: Sequence[Change], error: sqlite3.Error
    ) -> StorageError | DuplicateReferralError:
        """The error of a batch insert the database refused: the first referral not
        inserted is the one refused, a :class:`DuplicateReferralError` when another
        referral holds its source id (as :meth:`_save_one` reports it)."""
        refused = next(
            (
                referral
                for referral, _, _ in changes
                if conn.execute("SELECT 1 FROM referrals WHERE id = ?", (referral.id,)).fetchone()
                is None
            ),
            changes[-1][0],
        )
        if refused.source_id is not None and self._source_taken(conn, refused):
            return DuplicateReferralError(refused.source_id)
        return _driver_error(error, "saving referrals")

    def _save_one(
        self,
        conn: sqlite3.Connection,
        referral: Referral,
        events: Sequence[ReferralEvent],
        expected: int,
        *,
        schema: int,
        head: list[Any] | None,
        timeline: Sequence[ReferralEvent] | None = None,
    ) -> None:
        row = conn.execute("SELECT version FROM referrals WHERE id = ?", (referral.id,)).fetchone()
        actual = row[0] if row is not None else 0
        if actual != expected:
            raise ConcurrencyError(referral.id, expected, row[0] if row is not None else None)
        values = _row(referral, self._codec)
        try:
            if row is None:
                conn.execute(_INSERT, values)
            else:
                conn.execute(_UPDATE, (*values[1:], referral.id, expected))
        except sqlite3.IntegrityError as error:
            if referral.source_id is not None and self._source_taken(conn, referral):
                raise DuplicateReferralError(referral.source_id) from None
            raise _driver_error(error, "saving referrals") from None
        conn.executemany(
            _INSERT_EVENT_UNCHAINED if head is None else _INSERT_EVENT,
            _event_rows(events, self._codec, head),
        )
        if schema >= _RANK_KEYS_VERSION:
            # the rank keys hold no PHI; a history read back is verified (and decrypted)
            if expected == 0:
                timeline = events
            elif timeline is not None:  # the sweep's (_save_swept): the clocks' events
                timeline = [*timeline, *events]
            _write_rank_keys(conn, referral, timeline, self._codec)

    @staticmethod
    def _source_taken(conn: sqlite3.Connection, referral: Referral) -> bool:
        row = conn.execute(
            "SELECT id FROM referrals WHERE source_id = ?", (referral.source_id,)
        ).fetchone()
        return row is not None and row[0] != referral.id

    @boundary
    def events(self, referral_id: str) -> list[ReferralEvent]:
        check_id(referral_id)
        # the snapshot's version first: the history must reach it (a lost event is seen)
        versions = self._read("SELECT version FROM referrals WHERE id = ?", (referral_id,))
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE referral_id = ? ORDER BY version, idx",  # noqa: S608 - fixed column names
            (referral_id,),
            sealed=True,
        )
        if not rows and not versions:
            raise NotFoundError(referral_id)
        return self._codec.history(rows, referral_id, versions[0][0] if versions else None)

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
            if value is not None and column == "patient_id":
                keys = self._codec.patient_keys(value)
                clauses.append(f"patient_id IN ({', '.join('?' * len(keys))})")
                params.extend(Sealed(key) for key in keys)
            elif value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.updated_since is not None:
            clauses.append("updated_at >= ?")
            params.append(_ts(query.updated_since))
        if query.due_before is not None:
            clauses.append("due_sort < ?")
            params.append(_ts(query.due_before))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    @boundary
    def query(self, query: Query = Query()) -> list[Referral]:
        where, params = self._where(check_query(query))
        if query.order == "updated":
            order = " ORDER BY updated_at DESC, id DESC"
        else:
            order = f" ORDER BY {_WORKLIST}"
        limit = ""
        if query.limit is not None or query.offset:
            limit = " LIMIT ? OFFSET ?"
            params += [-1 if query.limit is None else query.limit, query.offset]
        rows = self._read(
            f"SELECT id, snapshot FROM referrals{where}{order}{limit}",  # noqa: S608 - only fixed column names are interpolated
            params,
            sealed=True,
        )
        return [self._codec.referral(snapshot, referral_id) for referral_id, snapshot in rows]

    @boundary
    def count(self, query: Query = Query()) -> int:
        where, params = self._where(check_query(query))
        return int(self._read(f"SELECT count(*) FROM referrals{where}", params)[0][0])  # noqa: S608

    # ------------------------------------------------------------------ claims

    @boundary
    def claim(
        self,
        owner: str,
        count: int,
        *,
        now: dt.datetime,
        lease: dt.timedelta,
        query: Query | None = None,
    ) -> list[str]:
        """Lease the next ``count`` free open referrals to ``owner`` (see
        :meth:`ReferralStore.claim`). The search and the lease happen under one
        ``BEGIN IMMEDIATE``, so two claims never see the same free referral."""
        now = check_claim(owner, now, lease, count)
        where, params = self._where(_claim_query(query))
        until = _ts(lease_end(now, lease))
        if count == 0:
            return []
        with self._write("claiming referrals") as conn:
            rows = conn.execute(
                f"SELECT id FROM referrals{where} AND (lease_until IS NULL OR lease_until <= ?) "  # noqa: S608 - fixed column names
                f"ORDER BY {_WORKLIST} LIMIT ?",
                [*params, _ts(now), count],
            ).fetchall()
            taken = [r[0] for r in rows]
            conn.executemany(
                "UPDATE referrals SET lease_owner = ?, lease_until = ? WHERE id = ?",
                [(owner, until, referral_id) for referral_id in taken],
            )
        return taken

    @boundary
    def renew(
        self, owner: str, ids: Iterable[str], *, now: dt.datetime, lease: dt.timedelta
    ) -> list[str]:
        now = check_claim(owner, now, lease)
        wanted = _ids(ids)
        until, stamp = _ts(lease_end(now, lease)), _ts(now)
        renewed = []
        with self._write("renewing leases") as conn:
            for referral_id in wanted:
                cursor = conn.execute(
                    "UPDATE referrals SET lease_until = ? "
                    "WHERE id = ? AND lease_owner = ? AND lease_until > ?",
                    (until, referral_id, owner, stamp),
                )
                if cursor.rowcount:
                    renewed.append(referral_id)
        return renewed

    @boundary
    def release(self, owner: str, ids: Iterable[str]) -> list[str]:
        check_owner(owner)
        wanted = _ids(ids)
        released = []
        with self._write("releasing leases") as conn:
            for referral_id in wanted:
                cursor = conn.execute(
                    "UPDATE referrals SET lease_owner = NULL, lease_until = NULL "
                    "WHERE id = ? AND lease_owner = ?",
                    (referral_id, owner),
                )
                if cursor.rowcount:
                    released.append(referral_id)
        return released

    # ------------------------------------------------------------------ whole histories

    @boundary_iter
    def export(self) -> Iterator[History]:
        """Every referral with its history, in id order, from one consistent state of the
        database: a file is read in a private read transaction (writers carry on meanwhile),
        ``:memory:`` in one go under the store's lock."""
        yield from self._consistent(
            lambda conn, batch: _paged_histories(conn, self._codec, batch=batch)
        )

    def _consistent(self, read: Callable[[sqlite3.Connection, int], Iterable[_T]]) -> Iterator[_T]:
        """What ``read(connection, batch)`` yields, from one consistent state of the database:
        a file's in a private read transaction, read in pages of ``batch`` rows (writers carry
        on meanwhile); ``:memory:``'s in one go (``batch`` -1) under the store's lock. The
        bulk readers (:meth:`export`, :meth:`export_referrals`, :meth:`export_selected`, the
        store audit's) are this with their page reader."""
        if self._shared is not None:
            with self._lock:
                everything = list(read(self._shared, -1))
            yield from everything
            return
        if self._closed:
            raise StorageError("the store is closed")
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            yield from read(conn, _EXPORT_BATCH)
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "exporting") from None
        finally:
            self._forget(conn)

    @boundary_iter
    def event_histories(self) -> Iterator[Sequence[ReferralEvent]]:
        """Every referral's events, in referral id order, from one ordered pass over the
        events table (its primary key order) in a private read transaction: no snapshot is
        read, no query per referral, events built from the row without the model's
        validators (see :meth:`ReferralStore.event_histories`)."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY referral_id, version, idx"  # noqa: S608 - fixed column names
        if self._closed:
            raise StorageError("the store is closed")
        if self._shared is not None:
            with self._lock:
                cursor = self._shared.cursor()
                cursor.row_factory = _seal_last
                everything = list(self._codec.histories(cursor.execute(sql)))
            yield from everything
            return
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            cursor = conn.cursor()
            cursor.row_factory = _seal_last
            yield from self._codec.histories(cursor.execute(sql))
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "reading histories") from None
        finally:
            self._forget(conn)

    @boundary_iter
    def export_referrals(self) -> Iterator[Referral]:
        """Every referral's snapshot, in id order, as :meth:`export` reads them (one
        consistent state, in pages): no event row is read (see
        :meth:`ReferralStore.export_referrals`)."""
        for referral, _ in self._consistent(
            lambda conn, batch: _paged_histories(conn, self._codec, batch=batch, events=False)
        ):
            yield referral

    @boundary_iter
    def export_selected(
        self, event_types: Iterable[str], *, latest: bool = False
    ) -> Iterator[History]:
        """:meth:`export` with only the events of ``event_types``: the other event rows are
        never read (see :meth:`ReferralStore.export_selected`)."""
        types = check_event_types(event_types)
        yield from self._consistent(
            lambda conn, batch: _paged_histories(
                conn, self._codec, batch=batch, types=types, latest=latest
            )
        )

    @boundary_iter
    def _audit_histories(self, event_types: Iterable[str]) -> Iterator[AuditHistory]:
        """:meth:`export_selected` with ``latest``, each snapshot's audited parts extracted
        by SQLite (:func:`_paged_audit`); an encrypted store's PHI cannot be read in SQL, so
        its snapshots are read whole (:meth:`export_selected`)."""
        types = check_event_types(event_types)
        if self._codec.encrypted:
            yield from self.export_selected(types, latest=True)
            return
        yield from self._consistent(
            lambda conn, batch: _paged_audit(conn, self._codec, batch=batch, types=types)
        )

    @boundary
    def restore_many(self, histories: Sequence[History]) -> None:
        """Store whole histories directly, in one transaction (see
        :meth:`ReferralStore.restore_many`)."""
        check_histories(histories)
        with self._write("restoring referrals") as conn:
            schema = _schema_in(conn)
            head = _chain_head(conn, schema)
            for referral, events in histories:
                self._save_one(conn, referral, events, 0, schema=schema, head=head)

    # ------------------------------------------------------------------ worklist rank keys

    @property
    def keeps_rank_keys(self) -> bool:  # type: ignore[override]
        """True from schema version 4 on (a store opened without migrating may be older)."""
        return self.schema_version() >= _RANK_KEYS_VERSION

    @boundary
    def rank_buckets(self) -> list[int]:
        """Read off ``worklist_keys_rank`` by skipping from one bucket to the next."""
        rows = self._read(
            "WITH RECURSIVE b(x) AS (SELECT min(bucket) FROM worklist_keys UNION ALL "
            "SELECT (SELECT min(bucket) FROM worklist_keys WHERE bucket > b.x) FROM b "
            "WHERE b.x IS NOT NULL) SELECT x FROM b WHERE x IS NOT NULL"
        )
        return [int(row[0]) for row in rows]

    @boundary
    def rank_page(
        self, bucket: int, after: tuple[float, str] | None, limit: int
    ) -> list[tuple[float, str]]:
        check_rank_page(bucket, after, limit)
        if after is None:
            rows = self._read(
                "SELECT sort_key, referral_id FROM worklist_keys WHERE bucket = ? "
                "ORDER BY sort_key, referral_id LIMIT ?",
                (bucket, limit),
            )
        else:
            rows = self._read(
                "SELECT sort_key, referral_id FROM worklist_keys WHERE bucket = ? "
                "AND (sort_key, referral_id) > (?, ?) ORDER BY sort_key, referral_id LIMIT ?",
                (bucket, float(after[0]), after[1], limit),
            )
        return [(float(key), str(referral_id)) for key, referral_id in rows]

    # ------------------------------------------------------------------ worklist digests

    @property
    def keeps_worklist_digests(self) -> bool:  # type: ignore[override]
        """True from schema version 9 on (a store opened without migrating may be older)."""
        return self.schema_version() >= DIGESTS_VERSION

    @boundary
    def worklist_digests(self, ids: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        """One read: each referral's version beside the digest kept for it."""
        wanted = _ids(ids)
        if not wanted:
            return {}
        if not self.keeps_worklist_digests:
            return super().worklist_digests(wanted)
        marks = ", ".join("?" for _ in wanted)
        rows = self._read(
            "SELECT r.id, r.version, d.digest FROM referrals r LEFT JOIN worklist_digests d "  # noqa: S608 - placeholders only
            f"ON d.referral_id = r.id AND d.version = r.version WHERE r.id IN ({marks})",
            wanted,
        )
        codec = self._codec
        return {
            str(referral_id): (
                int(version),
                None if stored is None else open_digest(codec, referral_id, version, stored),
            )
            for referral_id, version, stored in rows
        }

    @boundary
    def write_worklist_digests(self, digests: Sequence[tuple[str, int, str]]) -> None:
        rows = [
            (
                check_id(referral_id),
                int(version),
                seal_digest(self._codec, referral_id, version, text),
            )
            for referral_id, version, text in digests
        ]
        if not rows or not self.keeps_worklist_digests:
            return
        with self._write("writing the worklist digests", relaxed=True) as conn:
            conn.executemany(
                "INSERT INTO worklist_digests (referral_id, version, digest) VALUES (?, ?, ?) "
                "ON CONFLICT (referral_id) DO UPDATE SET version = excluded.version, "
                "digest = excluded.digest WHERE excluded.version >= worklist_digests.version",
                rows,
            )

    @boundary
    def latest_update(self) -> dt.datetime | None:
        found = self._read("SELECT max(updated_at) FROM referrals")[0][0]
        return None if found is None else dt.datetime.fromisoformat(found).replace(tzinfo=dt.UTC)

    @boundary
    def histories(self, ids: Iterable[str]) -> list[History]:
        """Two reads for the whole batch: the snapshots, then their events (those newer than
        the snapshot read, written in between, left out)."""
        return self._histories(_ids(ids), None)

    @boundary
    def histories_selected(self, ids: Iterable[str], event_types: Iterable[str]) -> list[History]:
        """:meth:`histories` with only the events of ``event_types`` (see
        :meth:`ReferralStore.histories_selected`): two reads for the whole batch."""
        return self._histories(_ids(ids), check_event_types(event_types))

    def _histories(self, wanted: list[str], types: Sequence[str] | None) -> list[History]:
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = self._read(
            f"SELECT id, snapshot FROM referrals WHERE id IN ({marks})",  # noqa: S608 - placeholders only
            wanted,
            sealed=True,
        )
        selection = "" if types is None else f" AND type IN ({', '.join('?' for _ in types)})"
        found = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE referral_id IN ({marks})"  # noqa: S608 - fixed column names and placeholders
            f"{selection} ORDER BY referral_id, version, idx",
            [*wanted, *(types or ())],
            sealed=True,
        )
        return _assembled(self._codec, wanted, rows, found, selected=types is not None)

    @boundary
    def _sweep_reads(
        self, ids: Iterable[str], event_types: Iterable[str]
    ) -> Iterable[tuple[str, int, list[ReferralEvent]]]:
        """Two reads for the whole batch: the open referrals' versions (their column), then
        their events of ``event_types`` (verified; those newer than the version read,
        written in between, left out), decoded a referral at a time as the caller iterates
        (:meth:`RecordCodec.selected_lazily`). No snapshot is read."""
        wanted = _ids(ids)
        types = check_event_types(event_types)
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = self._read(
            f"SELECT id, version FROM referrals WHERE id IN ({marks}) AND is_open = 1",  # noqa: S608 - placeholders only
            wanted,
        )
        found = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE referral_id IN ({marks})"  # noqa: S608 - fixed column names and placeholders
            f" AND type IN ({', '.join('?' for _ in types)}) ORDER BY referral_id, version, idx",
            [*wanted, *types],
            sealed=True,
        )
        versions = {str(referral_id): int(version) for referral_id, version in rows}
        return self._codec.selected_lazily(wanted, versions, found)

    @boundary
    def _load_many(self, ids: Iterable[str]) -> list[Referral]:
        wanted = _ids(ids)
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = self._read(
            f"SELECT id, snapshot FROM referrals WHERE id IN ({marks})",  # noqa: S608 - placeholders only
            wanted,
            sealed=True,
        )
        return [self._codec.referral(snapshot, referral_id) for referral_id, snapshot in rows]

    @boundary
    def versions(self, ids: Iterable[str]) -> dict[str, int]:
        wanted = _ids(ids)
        if not wanted:
            return {}
        marks = ", ".join("?" for _ in wanted)
        rows = self._read(f"SELECT id, version FROM referrals WHERE id IN ({marks})", wanted)  # noqa: S608 - placeholders only
        return {str(referral_id): int(version) for referral_id, version in rows}

    @boundary
    def set_sweep_due(self, items: Iterable[tuple[str, int, float]]) -> int:
        rows = [(float(due), check_id(i), i, version) for i, version, due in items]
        if not rows:
            return 0
        with self._write("recording the sweep") as conn:
            if _schema_in(conn) < _RANK_KEYS_VERSION:
                return 0
            moved = 0
            for row in rows:
                moved += conn.execute(
                    "UPDATE worklist_keys SET sort_key = ? WHERE referral_id = ? AND bucket = -1 "
                    "AND EXISTS (SELECT 1 FROM referrals WHERE id = ? AND version = ?)",
                    row,
                ).rowcount
            return moved

    # ------------------------------------------------------------------ rule versions

    def _keeps_versions(self) -> None:
        """Refuse (as an adapter without them would) while the schema predates the rule
        version tables: a desk over a store opened with ``migrate=False`` still decides."""
        if self.schema_version() < 5:
            raise NotImplementedError("this schema version keeps no rule versions; upgrade it")

    @boundary
    def save_rule_version(self, version: RuleVersion) -> bool:
        check_rule_version(version)
        self._keeps_versions()
        with self._write("saving a rule version") as conn:
            cursor = conn.execute(
                "INSERT INTO rule_versions (digest, kind, name, document, recorded_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
                (
                    version.digest,
                    version.kind,
                    version.name,
                    version.document,
                    _ts(version.recorded_at),
                ),
            )
            return cursor.rowcount == 1

    @boundary
    def find_rule_version(self, digest: str) -> RuleVersion | None:
        self._keeps_versions()
        rows = self._read(
            "SELECT digest, kind, name, document, recorded_at FROM rule_versions WHERE digest = ?",
            (check_digest(digest),),
        )
        if not rows:
            return None
        found, kind, name, document, recorded = rows[0]
        return RuleVersion(
            found, kind, name, document, dt.datetime.fromisoformat(recorded).replace(tzinfo=dt.UTC)
        )

    @boundary
    def record_policy_use(self, kind: str, digest: str, at: dt.datetime) -> bool:
        kind, digest, at = check_policy_use(kind, digest, at)
        self._keeps_versions()
        with self._write("noting a policy use") as conn:
            stored = conn.execute(
                "SELECT kind FROM rule_versions WHERE digest = ?", (digest,)
            ).fetchone()
            if stored is None or stored[0] != f"{kind}-policy":
                raise unknown_policy(kind)
            latest = conn.execute(
                "SELECT digest FROM policy_uses WHERE kind = ? ORDER BY seq DESC LIMIT 1",
                (kind,),
            ).fetchone()
            if latest is not None and latest[0] == digest:
                return False
            conn.execute(
                "INSERT INTO policy_uses (kind, digest, at) VALUES (?, ?, ?)",
                (kind, digest, _ts(at)),
            )
            return True

    @boundary
    def policy_in_force(self, kind: str, at: dt.datetime) -> str | None:
        kind, _, at = check_policy_use(kind, None, at)
        self._keeps_versions()
        rows = self._read(
            "SELECT digest FROM policy_uses WHERE kind = ? AND at <= ? "
            "ORDER BY at DESC, seq DESC LIMIT 1",
            (kind, _ts(at)),
        )
        return str(rows[0][0]) if rows else None

    @boundary
    def rule_versions(self) -> list[RuleVersion]:
        self._keeps_versions()
        rows = self._read(
            "SELECT digest, kind, name, document, recorded_at FROM rule_versions ORDER BY digest"
        )
        return [
            RuleVersion(d, k, n, doc, dt.datetime.fromisoformat(r).replace(tzinfo=dt.UTC))
            for d, k, n, doc, r in rows
        ]

    @boundary
    def policy_uses(self) -> list[tuple[str, str, dt.datetime]]:
        self._keeps_versions()
        rows = self._read("SELECT kind, digest, at FROM policy_uses ORDER BY seq")
        return [
            (str(k), str(d), dt.datetime.fromisoformat(a).replace(tzinfo=dt.UTC))
            for k, d, a in rows
        ]

    # ------------------------------------------------------------------ the access log

    @boundary
    def append_access(self, records: Sequence[AccessRecord]) -> None:
        """Append ``records`` to the access log in one transaction.

        Committed with ``synchronous=NORMAL`` (no flush of the WAL for this transaction
        alone): a record survives the process crashing, and is flushed to disk by the next
        change or checkpoint; a power loss may drop the last records. This keeps an audited
        read about as cheap as the read (one flush per read would cost a millisecond).
        """
        check_records(records)
        if not records:
            return
        with self._access_write() as conn:
            self._append_access_in(conn, records)

    def _access_write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction committed with ``synchronous=NORMAL`` (see
        :meth:`append_access`)."""
        return self._write("recording access", relaxed=True)

    def _append_access_in(
        self, conn: sqlite3.Connection, records: Sequence[AccessRecord], last: str | None = None
    ) -> None:
        """Append ``records`` in the write transaction open on ``conn``, after the chain
        value ``last`` (read here when not given: the log's last one, or the genesis)."""
        if last is None:
            row = conn.execute(_LAST_ACCESS_CHAIN).fetchone()
            last = GENESIS if row is None else row[0]
        first = seq = 0
        for record in records:
            # the fields the chain hashes are the row's columns (flagged as 0 or 1, as
            # SQLite keeps it), the reason as stored (encrypted with a key ring)
            reason = self._codec.reason_text(record.actor, record.action, record.reason)
            row = chained_row(last, record, _ts(record.at), reason)
            last = row[-1]
            seq = conn.execute(_INSERT_ACCESS, row).lastrowid or 0
            first = first or seq
        # the referral index: written for a block of the log once the block is full (one
        # statement for its records), so most records cost one row, not two
        if seq:
            _index_blocks(conn, first, seq)

    @boundary
    def load_recorded(
        self, referral_id: str, record: Callable[[Referral], AccessRecord]
    ) -> Referral:
        """The read and its access record in one write transaction (committed as
        :meth:`append_access` commits): the record is in the log when the referral is
        returned, at the cost of one transaction instead of two."""
        check_id(referral_id)
        if self._shared is not None:  # :memory: (tests): the shared connection's lock
            with self._access_write() as conn:
                return self._load_recorded_in(conn, referral_id, record)
        # _write, unrolled (an audited read runs this for every get: the context manager's
        # frames cost as much as one of its statements)
        conn = self._conn
        try:
            if id(conn) not in self._relaxed:
                conn.execute("PRAGMA synchronous=NORMAL")
                self._relaxed.add(id(conn))
            conn.execute("BEGIN IMMEDIATE")
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "recording access") from None
        try:
            referral = self._load_recorded_in(conn, referral_id, record)
            conn.execute("COMMIT")
        except BaseException as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(error, _DRIVER_ERRORS):
                raise _driver_error(error, "recording access") from None
            raise
        return referral

    def _load_recorded_in(
        self,
        conn: sqlite3.Connection,
        referral_id: str,
        record: Callable[[Referral], AccessRecord],
    ) -> Referral:
        """:meth:`load_recorded` in the write transaction open on ``conn``."""
        cursor = conn.cursor()
        cursor.row_factory = _seal_last
        # the chain's head read with the snapshot: one statement
        row = cursor.execute(_LOAD_RECORDED, (referral_id,)).fetchone()
        if row is None:
            raise NotFoundError(referral_id)
        referral = self._codec.referral(row[1], referral_id)
        made = record(referral)
        if type(made) is not AccessRecord:
            check_records([made])
        self._append_access_in(conn, [made], GENESIS if row[0] is None else row[0])
        return referral

    @boundary
    def restore_access(self, rows: Sequence[tuple[Sequence[Any], str]], after: str) -> None:
        """Append records as another store kept them (see
        :meth:`ReferralStore.restore_access`), in one transaction."""
        with self._write("restoring the access log") as conn:
            row = conn.execute("SELECT chain FROM access_log ORDER BY seq DESC LIMIT 1").fetchone()
            if (GENESIS if row is None else row[0]) != after:
                raise StorageError(RESTORE_CLASH)
            first = last = 0
            for fields, chain in rows:
                cursor = conn.execute(
                    f"INSERT INTO access_log ({ROW_COLUMNS}) VALUES ({', '.join('?' * 12)})",  # noqa: S608 - fixed column names
                    (*fields, chain),
                )
                ids = json.loads(fields[6])
                if ids:
                    conn.executemany(
                        "INSERT OR IGNORE INTO access_log_referrals (referral_id, seq) "
                        "VALUES (?, ?)",
                        [(i, cursor.lastrowid) for i in ids],
                    )
                first = first or cursor.lastrowid or 0
                last = cursor.lastrowid or 0
            if last:  # the records before these in a block they fill
                _index_blocks(conn, first, last)

    @boundary
    def access_records(self, query: AccessQuery = AccessQuery()) -> list[AccessRecord]:
        check_access_query(query)
        where, params = _access_where(query)
        sql = f"SELECT seq, {ROW_COLUMNS} FROM access_log{where} ORDER BY seq"  # noqa: S608 - built from fixed fragments
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return [
            record_from_row(
                self._codec.access_row(row),
                dt.datetime.fromisoformat(row[1]).replace(tzinfo=dt.UTC),
            )
            for row in self._read(sql, params)
        ]

    @boundary_iter
    def access_chain(self) -> Iterator[tuple[int, list[Any], str]]:
        """The access log's rows in ``seq`` order, streamed from a private read transaction."""
        if self._shared is not None:
            with self._lock:
                rows = self._shared.execute(
                    f"SELECT seq, {ROW_COLUMNS} FROM access_log ORDER BY seq"  # noqa: S608 - fixed column names
                ).fetchall()
            for row in rows:
                yield row[0], list(row[1:12]), row[12]
            return
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            cursor = conn.execute(f"SELECT seq, {ROW_COLUMNS} FROM access_log ORDER BY seq")  # noqa: S608 - fixed column names
            while rows := cursor.fetchmany(_EXPORT_BATCH * 10):
                for row in rows:
                    yield row[0], list(row[1:12]), row[12]
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "reading the access log") from None
        finally:
            self._forget(conn)

    @boundary
    def event_head(self) -> tuple[int, str]:
        """The last event's ``seq`` and chain value (one index read)."""
        if self.schema_version() < CHAIN_VERSION:
            return 0, GENESIS
        rows = self._read("SELECT seq, chain FROM events ORDER BY seq DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)

    @boundary_iter
    def event_chain(self) -> Iterator[tuple[int, list[Any], str, Sealed[str]]]:
        """The events in ``seq`` (append) order as their hash chain sees them, streamed from
        a private read transaction (see :meth:`ReferralStore.event_chain`)."""
        sql = (
            f"SELECT seq, {_EVENT_COLUMNS}, sealed, chain FROM events "  # noqa: S608 - fixed column names
            "ORDER BY seq"
        )
        if self._closed:
            raise StorageError("the store is closed")
        if self.schema_version() < CHAIN_VERSION:
            return
        if self._shared is not None:
            with self._lock:
                cursor = self._shared.cursor()
                cursor.row_factory = _chain_row
                rows = cursor.execute(sql).fetchall()
            yield from rows
            return
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            cursor = conn.cursor()
            cursor.row_factory = _chain_row
            cursor.execute(sql)
            while rows := cursor.fetchmany(_EXPORT_BATCH * 10):
                yield from rows
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "reading the events' chain") from None
        finally:
            self._forget(conn)

    # ------------------------------------------------------------------ analytics cache

    @boundary_iter
    def referral_versions(self) -> Iterator[tuple[str, int]]:
        """Every referral's id and version, in id order (one pass over the primary key),
        streamed from a private read transaction: a million of them are never one list."""
        sql = "SELECT id, version FROM referrals ORDER BY id"
        if self._shared is not None:
            yield from self._read(sql)
            return
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            cursor = conn.execute(sql)
            while rows := cursor.fetchmany(_EXPORT_BATCH * 10):
                yield from rows
        except _DRIVER_ERRORS as error:
            raise _driver_error(error, "reading the versions") from None
        finally:
            self._forget(conn)

    @boundary
    def read_analytics_blocks(self, name: str) -> list[bytes] | None:
        """The analytics cache's blocks under ``name`` (see
        :meth:`ReferralStore.read_analytics_blocks`)."""
        rows = self._read("SELECT data FROM analytics_blocks WHERE name = ? ORDER BY seq", (name,))
        return [bytes(row[0]) for row in rows]

    @boundary
    def write_analytics_blocks(
        self, name: str, blocks: Sequence[bytes], *, replace: bool = False
    ) -> bool:
        """Add (or with ``replace``, replace) the analytics cache's blocks under ``name``."""
        if not isinstance(name, str) or not all(isinstance(b, bytes) for b in blocks):
            raise ValidationError("blocks", "expected a name and a sequence of bytes")
        with self._write("writing the analytics cache") as conn:
            if replace:
                conn.execute("DELETE FROM analytics_blocks WHERE name = ?", (name,))
            last = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM analytics_blocks WHERE name = ?", (name,)
            ).fetchone()[0]
            conn.executemany(
                "INSERT INTO analytics_blocks (name, seq, data) VALUES (?, ?, ?)",
                [(name, last + 1 + i, block) for i, block in enumerate(blocks)],
            )
        return True

    # ------------------------------------------------------------------ key rotation

    @property
    def keys(self) -> KeyProvider | None:
        """The key ring the store was opened with (``None``: unencrypted)."""
        cipher = self._codec.cipher
        return cipher.provider if cipher is not None else None

    def _rotate_batch(self, after: str, limit: int) -> tuple[str | None, int]:
        """Move the records of the next ``limit`` referrals after id ``after`` onto the
        primary key, in one write transaction; ``(last id, records rewritten)``, the last
        id ``None`` at the end. The write lock is held from the read to the commit, so no
        change slips between; the updates still check the version read."""
        with self._write("rotating keys") as conn:
            rows = conn.execute(
                "SELECT id, version, snapshot FROM referrals WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
            if not rows:
                return None, 0
            events = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE referral_id BETWEEN ? AND ? "  # noqa: S608 - fixed column names
                "ORDER BY referral_id, version, idx",
                (rows[0][0], rows[-1][0]),
            ).fetchall()
            snapshots, payloads = rewrites(self._codec, rows, events)
            before = conn.total_changes
            conn.executemany(
                "UPDATE referrals SET snapshot = ?, patient_id = ? WHERE id = ? AND version = ?",
                snapshots,
            )
            if conn.total_changes - before != len(snapshots):  # pragma: no cover - locked
                raise ConcurrencyError(snapshots[0][2], snapshots[0][3], None)
            conn.executemany(
                "UPDATE events SET payload = ? WHERE referral_id = ? AND version = ? AND idx = ?",
                payloads,
            )
            if self.keeps_worklist_digests:
                # a digest is a cache, sealed with the key that was primary when it was
                # written: dropped, so no record of the batch stays under a retired key (the
                # worklist computes it again)
                conn.execute(
                    "DELETE FROM worklist_digests WHERE referral_id BETWEEN ? AND ?",
                    (rows[0][0], rows[-1][0]),
                )
            return rows[-1][0], len(snapshots) + len(payloads)


def _chain_row(
    cursor: sqlite3.Cursor, row: tuple[Any, ...]
) -> tuple[int, list[Any], str, Sealed[str]]:
    """A row factory: ``(seq, fields, chain, payload text)`` of a row ``seq, <event
    columns>, sealed, chain``, the payload sealed as it leaves the driver."""
    # a row without a link (inserted by hand) comes first, as seq 0: a broken link
    return (
        int(row[0] or 0),
        event_fields(row[1:7], row[8] or ""),
        str(row[9] or ""),
        Sealed(str(row[7])),
    )


def _index_blocks(conn: sqlite3.Connection, first: int, last: int) -> None:
    """Index the referrals of the access log's blocks that the records ``first`` to
    ``last`` (just appended, in the write transaction open on ``conn``) fill: every record
    up to the last multiple of :data:`_ACCESS_INDEX_BLOCK` is then in the index."""
    block = _ACCESS_INDEX_BLOCK
    done, full = (first - 1) // block, last // block
    if full > done:
        conn.execute(_INDEX_ACCESS_BLOCK, (done * block, full * block))


def _access_where(query: AccessQuery) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of an access-log query."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("actor", query.actor),
        ("organization", query.organization),
        ("grant_id", query.grant),
        ("outcome", None if query.outcome is None else query.outcome.value),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.since is not None:
        clauses.append("at >= ?")
        params.append(_ts(query.since))
    if query.until is not None:
        clauses.append("at < ?")
        params.append(_ts(query.until))
    if query.flagged is not None:
        clauses.append("flagged = ?")
        params.append(int(query.flagged))
    if query.referral_ids is not None:
        ids = sorted(query.referral_ids)
        # numbered, so both lists below name the same parameters (the ids bound once; any
        # "?" after them, the LIMIT's, numbers on from the last)
        marks = ", ".join(f"?{n}" for n in range(len(params) + 1, len(params) + 1 + len(ids)))
        # indexed, or in the log's last block, not indexed yet (see _ACCESS_INDEX_BLOCK)
        clauses.append(
            f"seq IN (SELECT seq FROM access_log_referrals WHERE referral_id IN ({marks}) "  # noqa: S608 - placeholders only
            f"UNION ALL SELECT t.seq FROM access_log AS t WHERE t.seq > (SELECT "
            f"coalesce(max(seq), 0) / {_ACCESS_INDEX_BLOCK} * {_ACCESS_INDEX_BLOCK} FROM "
            "access_log) AND EXISTS (SELECT 1 FROM json_each(iif(json_valid(t.referral_ids), "
            "t.referral_ids, '[]')) WHERE value IN "
            f"({marks})))"
        )
        params += ids
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
