"""The directory in SQL tables: SQLite (stdlib ``sqlite3``) or PostgreSQL (psycopg 3).

Three tables, created by :meth:`SqlDirectory.ensure_schema` (idempotent):

- ``directory_entries (kind, id, data)``: every entry as compact JSON (``_codec``);
- ``directory_specialties (kind, code, id)``: the NUCC codes of roles and services;
- ``directory_networks (kind, network, id, source)``: network membership of roles and
  services; ``source`` is the entry that put it there (the entry itself, or an
  OrganizationAffiliation for the services it lists), so replacing that entry removes it.

:meth:`~SqlDirectory.find` is two index lookups joined to the entries, never a scan. Writes
happen in one transaction per :meth:`~SqlDirectory.add` call. Driver errors become
:class:`~referralkit.directory.DirectoryError` with the driver's class name and SQL state, not
its message.

The SQLite and PostgreSQL referral stores create these tables in their schema version 3, so
the directory lives in the referral database: ``open_directory(url)`` with the store's URL
opens it (``ensure_schema`` then finds the tables there). On a connection of your own, call
``ensure_schema()``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from ..errors import ValidationError
from ..storage._directory import DIRECTORY_TABLES
from ._codec import decode, encode
from ._model import Entry, HealthcareService, OrganizationAffiliation, PractitionerRole
from ._port import DirectoryError, E, M
from .memory import MemoryDirectory

__all__ = ["SqlDirectory", "open_directory"]


_SCHEMA = DIRECTORY_TABLES
_CHUNK = 500  # ids per IN (...) list: well under SQLite's 32,766 bound parameters
_CACHED = 50_000  # decoded entries kept (about 40 MB at most for NPPES-sized entries)


class SqlDirectory:
    """A :class:`~referralkit.directory.Directory` in SQL tables, on a connection you give:
    a ``sqlite3.Connection`` or a ``psycopg.Connection`` (its search path decides the
    schema). Not thread-safe: use one per thread, as the connection itself.

    >>> import sqlite3
    >>> from referralkit.directory import PractitionerRole
    >>> conn = sqlite3.connect(":memory:")
    >>> d = SqlDirectory(conn)
    >>> d.ensure_schema()
    >>> d.add([PractitionerRole("r1", specialties=("207RC0000X",))])
    1
    >>> [r.id for r in d.find(PractitionerRole, specialties=["207RC0000X"])]
    ['r1']
    >>> conn.close()  # the connection is yours to close
    """

    def __init__(self, connection: Any, *, owns_connection: bool = False) -> None:
        self._conn = connection
        self._sqlite = isinstance(connection, sqlite3.Connection)
        self._owns = owns_connection
        self._p = "?" if self._sqlite else "%s"
        self._cache: dict[tuple[str, str], Entry] = {}

    def _decoded(self, kind: str, data: str) -> Entry:
        """``decode(kind, data)``, remembered for the last ``_CACHED`` texts read by
        :meth:`find` and :meth:`get_many` (what matching reads, again and again). Keyed by
        the stored text itself, so a changed row is decoded afresh, never served stale;
        entries are frozen, so sharing one is safe. Measured: decoding (JSON and the
        validators) was half the cost of a match over 100,000 roles in SQLite."""
        key = (kind, data)
        entry = self._cache.get(key)
        if entry is None:
            entry = decode(kind, data)
            if len(self._cache) >= _CACHED:
                del self._cache[next(iter(self._cache))]  # the oldest first
            self._cache[key] = entry
        return entry

    @property
    def connection(self) -> Any:
        """The connection the directory uses."""
        return self._conn

    # ------------------------------------------------------------------ plumbing

    def _sql(self, text: str) -> str:
        return text if self._sqlite else text.replace("?", "%s")

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except DirectoryError:
            raise
        except ValidationError:
            raise
        except Exception as error:
            if not self._is_driver_error(error):
                raise
            sqlstate = getattr(error, "sqlstate", None) or ""
            raise DirectoryError(
                f"directory {operation} failed ({type(error).__name__}"
                + (f", SQLSTATE {sqlstate}" if sqlstate else "")
                + ")"
            ) from None

    def _is_driver_error(self, error: Exception) -> bool:
        if isinstance(error, sqlite3.Error):
            return True
        module = type(error).__module__
        return module.startswith("psycopg")

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self._sqlite:
            conn = self._conn
            if conn.isolation_level is None and not conn.in_transaction:
                # autocommit mode: take the write lock up front, as the store does (DESIGN §6)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                with conn:
                    yield conn
        else:
            with self._conn.transaction():
                yield self._conn

    def ensure_schema(self) -> None:
        """Create the directory's tables and indexes where they do not exist."""
        with self._errors("schema"), self._transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    # ------------------------------------------------------------------ writes

    def add(self, entries: Iterable[Entry]) -> int:
        batch = list(entries)
        if not batch:
            return 0
        # the last of several entries with one kind and id wins, as in memory
        unique = list({(e.KIND, e.id): e for e in batch}.values())
        rows = [(e.KIND, e.id, encode(e)) for e in unique]
        specialties: list[tuple[str, str, str]] = []
        networks: list[tuple[str, str, str, str]] = []
        for e in unique:
            if isinstance(e, PractitionerRole | HealthcareService):
                specialties += [(e.KIND, code, e.id) for code in dict.fromkeys(e.specialties)]
                source = f"{e.KIND}/{e.id}"
                networks += [(e.KIND, n, e.id, source) for n in dict.fromkeys(e.network_ids)]
            elif isinstance(e, OrganizationAffiliation) and e.active:
                source = f"{e.KIND}/{e.id}"
                networks += [
                    (HealthcareService.KIND, n, s, source)
                    for n in dict.fromkeys(e.network_ids)
                    for s in dict.fromkeys(e.healthcare_service_ids)
                ]
        self._write_rows(rows, specialties, networks)
        return len(batch)

    def _write_rows(
        self,
        rows: Sequence[tuple[str, str, str]],
        specialties: Sequence[tuple[str, str, str]] = (),
        networks: Sequence[tuple[str, str, str, str]] = (),
    ) -> None:
        """Write encoded entries and their index rows in one transaction, replacing the
        entries with the same kind and id (and their index rows), as :meth:`add` does.

        For bulk loaders that check every value themselves and encode as ``_codec`` does
        (:func:`~referralkit.directory.load_nppes`): ``rows`` are ``(kind, id, data)``,
        unique by kind and id; ``specialties`` ``(kind, code, id)``; ``networks``
        ``(kind, network, id, source)``. One prepared statement per table, executed over the
        whole batch.
        """
        with self._errors("write"), self._transaction() as conn:
            existing = self._existing(conn, [(kind, id) for kind, id, _ in rows])
            if existing:
                self._forget(conn, existing)
            cur = conn.cursor()
            cur.executemany(
                self._sql("INSERT INTO directory_entries (kind, id, data) VALUES (?, ?, ?)"), rows
            )
            if specialties:
                cur.executemany(
                    self._sql(
                        "INSERT INTO directory_specialties (kind, code, id) VALUES (?, ?, ?)"
                    ),
                    specialties,
                )
            if networks:
                cur.executemany(
                    self._sql(
                        "INSERT INTO directory_networks (kind, network, id, source) "
                        "VALUES (?, ?, ?, ?)"
                    ),
                    networks,
                )

    def _existing(self, conn: Any, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        by_kind: dict[str, list[str]] = {}
        for kind, id in keys:
            by_kind.setdefault(kind, []).append(id)
        for kind, ids in by_kind.items():
            for k in range(0, len(ids), _CHUNK):
                chunk = ids[k : k + _CHUNK]
                marks = ", ".join([self._p] * len(chunk))
                where = f"kind = {self._p} AND id IN ({marks})"
                query = f"SELECT id FROM directory_entries WHERE {where}"  # noqa: S608 - placeholders
                rows = conn.execute(
                    query,
                    (kind, *chunk),
                ).fetchall()
                found += [(kind, row[0]) for row in rows]
        return found

    def _forget(self, conn: Any, keys: Sequence[tuple[str, str]]) -> None:
        cur = conn.cursor()
        sql = self._sql
        cur.executemany(sql("DELETE FROM directory_entries WHERE kind = ? AND id = ?"), keys)
        cur.executemany(sql("DELETE FROM directory_specialties WHERE kind = ? AND id = ?"), keys)
        cur.executemany(
            sql("DELETE FROM directory_networks WHERE source = ?"),
            [(f"{kind}/{id}",) for kind, id in keys],
        )

    # ------------------------------------------------------------------ reads

    def get(self, kind: type[E], id: str) -> E | None:
        with self._errors("read"):
            row = self._conn.execute(
                self._sql("SELECT data FROM directory_entries WHERE kind = ? AND id = ?"),
                (kind.KIND, id),
            ).fetchone()
        return None if row is None else cast(E, decode(kind.KIND, row[0]))

    def _where(
        self,
        kind: str,
        specialties: Iterable[str] | None,
        networks: Iterable[str] | None,
    ) -> tuple[str, list[str]] | None:
        """The condition and parameters selecting ``kind`` by the indexes; None when it can
        match nothing. Only placeholders and fixed conditions are formatted into it."""
        p = self._p
        where = [f"e.kind = {p}"]
        params: list[str] = [kind]
        if specialties is not None:
            codes: list[str] = list(dict.fromkeys(specialties))
            if not codes:
                return None
            marks = ", ".join([p] * len(codes))
            where.append(
                f"e.id IN (SELECT id FROM directory_specialties WHERE kind = {p} "  # noqa: S608
                f"AND code IN ({marks}))"
            )
            params += [kind, *codes]
        if networks is not None:
            wanted: list[str] = list(dict.fromkeys(networks))
            if not wanted:
                return None
            marks = ", ".join([p] * len(wanted))
            where.append(
                f"e.id IN (SELECT id FROM directory_networks WHERE kind = {p} "  # noqa: S608
                f"AND network IN ({marks}))"
            )
            params += [kind, *wanted]
        return " AND ".join(where), params

    def find(
        self,
        kind: type[M],
        *,
        specialties: Iterable[str] | None = None,
        networks: Iterable[str] | None = None,
    ) -> list[M]:
        selection = self._where(kind.KIND, specialties, networks)
        if selection is None:
            return []
        condition, params = selection
        query = f"SELECT data FROM directory_entries e WHERE {condition} ORDER BY e.id"  # noqa: S608
        with self._errors("read"):
            rows = self._conn.execute(query, params).fetchall()
        read = self._decoded
        found = (cast(M, read(kind.KIND, row[0])) for row in rows)
        return [entry for entry in found if entry.active]

    def count_found(
        self,
        kind: type[M],
        *,
        specialties: Iterable[str] | None = None,
        networks: Iterable[str] | None = None,
    ) -> int:
        """``len(find(kind, ...))``, counted by the database without reading the entries."""
        selection = self._where(kind.KIND, specialties, networks)
        if selection is None:
            return 0
        condition, params = selection
        params.append('%"active":false}')
        # an inactive entry is the only one whose JSON ends with "active":false (``active``
        # is the last field of roles and services, and ``encode`` writes it only when false)
        query = (
            f"SELECT count(*) FROM directory_entries e WHERE {condition} "  # noqa: S608
            f"AND e.data NOT LIKE {self._p}"
        )
        with self._errors("read"):
            row = self._conn.execute(query, params).fetchone()
        return int(row[0])

    def get_many(self, kind: type[E], ids: Iterable[str]) -> dict[str, E]:
        """The entries of ``kind`` among ``ids`` that exist, by id: one query per 500 ids
        (what matching reads), not one per id."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, E] = {}
        with self._errors("read"):
            for k in range(0, len(wanted), _CHUNK):
                chunk = wanted[k : k + _CHUNK]
                marks = ", ".join([self._p] * len(chunk))
                query = (
                    "SELECT id, data FROM directory_entries "  # noqa: S608 - placeholders
                    f"WHERE kind = {self._p} AND id IN ({marks})"
                )
                for id, data in self._conn.execute(query, (kind.KIND, *chunk)).fetchall():
                    found[id] = cast(E, self._decoded(kind.KIND, data))
        return found

    def entries(self, kind: type[E]) -> Iterator[E]:
        with self._errors("read"):
            rows = self._conn.execute(
                self._sql("SELECT data FROM directory_entries WHERE kind = ? ORDER BY id"),
                (kind.KIND,),
            ).fetchall()
        return iter([cast(E, decode(kind.KIND, row[0])) for row in rows])

    def count(self, kind: type[Entry] | None = None) -> int:
        with self._errors("read"):
            if kind is None:
                row = self._conn.execute("SELECT count(*) FROM directory_entries").fetchone()
            else:
                row = self._conn.execute(
                    self._sql("SELECT count(*) FROM directory_entries WHERE kind = ?"),
                    (kind.KIND,),
                ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection if the directory opened it (:func:`open_directory`)."""
        if self._owns:
            with self._errors("close"):
                self._conn.close()


def open_directory(url: str) -> MemoryDirectory | SqlDirectory:
    """A directory by URL, with its schema ensured: ``memory://``,
    ``sqlite:///path/to/file.db`` (``sqlite:///:memory:`` for a private in-memory database)
    or ``postgresql://user@host/db?schema=NAME`` (the ``postgres`` extra; the schema is
    created when missing).

    >>> open_directory("memory://").count()
    0
    """
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return MemoryDirectory()
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ValidationError("url", "a sqlite URL names a file: sqlite:///path.db")
        conn = None
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as error:
            if conn is not None:
                conn.close()
            raise DirectoryError(f"cannot open the directory ({type(error).__name__})") from None
        return _ensured(SqlDirectory(conn, owns_connection=True))
    if parts.scheme in ("postgresql", "postgres"):
        return _open_postgres(url)
    raise ValidationError("url", "expected memory://, sqlite:///PATH or postgresql://...")


def _open_postgres(url: str) -> SqlDirectory:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the postgres extra is installed for the tests
        raise DirectoryError("PostgreSQL needs the 'postgres' extra (psycopg)") from None
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = (query.pop("schema", [None]) or [None])[0]
    rest = "&".join(f"{k}={v}" for k, values in query.items() for v in values)
    dsn = parts._replace(query=rest).geturl()
    conn = None
    try:
        conn = psycopg.connect(dsn, autocommit=True)
        if schema:
            conn.execute(
                psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    psycopg.sql.Identifier(schema)
                )
            )
            conn.execute(
                psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema))
            )
    except psycopg.Error as error:
        if conn is not None:
            conn.close()
        raise DirectoryError(f"cannot open the directory ({type(error).__name__})") from None
    return _ensured(SqlDirectory(conn, owns_connection=True))


def _ensured(directory: SqlDirectory) -> SqlDirectory:
    """``directory`` with its schema ensured; closed (with its connection) if that fails."""
    try:
        directory.ensure_schema()
    except BaseException:
        directory.close()
        raise
    return directory
