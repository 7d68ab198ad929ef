"""The directory in SQL tables: SQLite (stdlib ``sqlite3``) or PostgreSQL (psycopg 3).

Four tables, created by :meth:`SqlDirectory.ensure_schema` (idempotent):

- ``directory_entries (kind, id, data)``: every entry as compact JSON (``_codec``);
- ``directory_specialties (kind, code, id)``: the NUCC codes of roles and services;
- ``directory_networks (kind, network, id, source)``: network membership of roles and
  services; ``source`` is the entry that put it there (the entry itself, or an
  OrganizationAffiliation for the services it lists), so replacing that entry removes it;
- ``directory_candidates (kind, id, active, ...)``: one row per role and service with what
  matching screens on (active, languages, new patients, telehealth, interpreter, locations,
  practitioner, organisation, name, codes), so that :meth:`~SqlDirectory.count_found` counts
  on it and :meth:`~SqlDirectory.screen` reads it without decoding any entry. A directory
  made before this table existed gets it filled from its entries by ``ensure_schema``.

:meth:`~SqlDirectory.find` is index lookups joined to the entries, never a scan: the
specialty index selects, the network index is probed per candidate. Writes happen in one
transaction per :meth:`~SqlDirectory.add` call. Driver errors become
:class:`~referralkit.directory.DirectoryError` with the driver's class name and SQL state, not
its message.

The SQLite and PostgreSQL referral stores create the first three tables in their schema
version 3, so the directory lives in the referral database: ``open_directory(url)`` with the
store's URL opens it (``ensure_schema`` then finds the tables there and adds the fourth). On a
connection of your own, call ``ensure_schema()``.
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from ..errors import ValidationError
from ..storage._directory import DIRECTORY_TABLES
from ._codec import decode, encode
from ._model import Entry, HealthcareService, OrganizationAffiliation, PractitionerRole
from ._port import CandidateGroup, DirectoryError, E, M, Matchable, MatchRow
from .memory import MemoryDirectory

__all__ = ["SqlDirectory", "open_directory"]


_SCHEMA = DIRECTORY_TABLES
_CANDIDATES = """CREATE TABLE IF NOT EXISTS directory_candidates (
    kind TEXT NOT NULL, code TEXT NOT NULL, id TEXT{collate} NOT NULL, coded INTEGER NOT NULL,
    active INTEGER NOT NULL, networks TEXT NOT NULL,
    practitioner_id TEXT, organization_id TEXT, name TEXT,
    specialties TEXT NOT NULL, languages TEXT NOT NULL, location_ids TEXT NOT NULL,
    accepting INTEGER, telehealth INTEGER NOT NULL, interpreter INTEGER NOT NULL,
    PRIMARY KEY (kind, code, id)){rowid}"""
"""What matching screens on: one row per role or service and specialty code (``''`` for one
with no code), so that a specialty's candidates are one range of the primary key, read in
order without a lookup per candidate (on SQLite the rows live in that key: WITHOUT ROWID).
``coded`` is how many codes the entry holds: of an entry holding several of the codes asked
for, only the row of the smallest is read (see ``_selection``).
``networks`` are the entry's own, between separators (``\\x1fnet-a\\x1fnet-b\\x1f``), tested
with ``instr``/``strpos``; a service's networks from affiliations are probed in
``directory_networks``. Ids in code-point order on PostgreSQL too, as in the store's tables.
Tuples are :func:`_joined` text."""
_COLUMNS = (
    "kind, code, id, coded, active, networks, practitioner_id, organization_id, name, specialties, "
    "languages, location_ids, accepting, telehealth, interpreter"
)
_MARKS = ", ".join(["?"] * 15)
_INSERT_CANDIDATES = f"INSERT INTO directory_candidates ({_COLUMNS}) VALUES ({_MARKS})"  # noqa: S608
_SEP = "\x1f"  # the ASCII unit separator, between the items of a tuple
_JSON = "\x1e"  # the ASCII record separator, before a tuple stored as JSON (see _joined)
_PROBE = _JSON  # the ``networks`` of an entry whose network ids hold a separator
_first = operator.itemgetter(0)
_SCREEN = (
    "c.id, c.practitioner_id, c.organization_id, c.name, c.specialties, c.languages, "
    "c.location_ids, c.accepting, c.telehealth, c.interpreter"
)
"""The columns a :class:`MatchRow` is made of (with the kind)."""
_PERSON = "CASE WHEN c.languages = '' AND c.practitioner_id IS NOT NULL THEN 1 ELSE 0 END"
"""Whether a row's languages are its practitioner's (it lists none and names one)."""
_KEY = (
    "c.specialties AS k1, c.languages AS k2, coalesce(c.accepting, 2) AS k3, "
    f"c.interpreter AS k4, c.telehealth AS k5, {_PERSON} AS k6"
)
"""What a row's candidate group is made of: the columns matching screens on."""
_MATCHED = frozenset({"PractitionerRole", "HealthcareService"})
_CHUNK = 500  # ids per IN (...) list: well under SQLite's 32,766 bound parameters
_CACHED = 50_000  # decoded entries kept (about 40 MB at most for NPPES-sized entries)
_FILL = 2_000  # entries decoded per batch when filling the candidates of an older directory

CandidateRow = tuple[
    str,
    str,
    str,
    int,
    int,
    str,
    "str | None",
    "str | None",
    "str | None",
    str,
    str,
    str,
    "int | None",
    int,
    int,
]


def _joined(items: tuple[str, ...]) -> str:
    """A tuple as text: its items joined by the unit separator; as JSON after the record
    separator when an item holds either separator or the tuple is one empty string (both
    rare: codes, ids and language tags hold neither)."""
    if items == ("",) or any(_SEP in i or _JSON in i for i in items):
        return _JSON + json.dumps(list(items))
    return _SEP.join(items)


def _split(text: str) -> tuple[str, ...]:
    """The tuple :func:`_joined` stored as ``text``."""
    if not text:
        return ()
    if text[0] == _JSON:
        return tuple(json.loads(text[1:]))
    return tuple(text.split(_SEP))


def _networks(ids: tuple[str, ...]) -> str:
    if any(_SEP in n or _JSON in n for n in ids):
        return _PROBE
    return f"{_SEP}{_SEP.join(ids)}{_SEP}" if ids else ""


def candidate_rows(entry: Matchable) -> list[CandidateRow]:
    """The ``directory_candidates`` rows of a role or service: one per code."""
    accepting = entry.accepting_new_patients
    codes = tuple(dict.fromkeys(entry.specialties))
    rest = (
        entry.id,
        len(codes),
        int(entry.active),
        _networks(entry.network_ids),
        getattr(entry, "practitioner_id", None),
        entry.organization_id,
        entry.name,
        _joined(entry.specialties),
        _joined(entry.languages),
        _joined(entry.location_ids),
        None if accepting is None else int(accepting),
        int(entry.telehealth),
        int(entry.interpreter_available),
    )
    return [(entry.KIND, code, *rest) for code in codes or ("",)]


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
        ``find`` and :meth:`get_many` (what matching reads, again and again). Keyed by
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
        """Create the directory's tables and indexes where they do not exist; when the
        ``directory_candidates`` table is new (a directory made by an earlier version), fill
        it from the roles and services stored, in the same transaction."""
        with self._errors("schema"), self._transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            if not self._has_candidates(conn):
                conn.execute(
                    _CANDIDATES.format(collate="", rowid=" WITHOUT ROWID")
                    if self._sqlite
                    else _CANDIDATES.format(collate=' COLLATE "C"', rowid="")
                )
                self._fill_candidates(conn)

    def _has_candidates(self, conn: Any) -> bool:
        if self._sqlite:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return conn.execute(query, ("directory_candidates",)).fetchone() is not None
        row = conn.execute("SELECT to_regclass(%s)", ("directory_candidates",)).fetchone()
        return row[0] is not None

    def _fill_candidates(self, conn: Any) -> None:
        """The candidate rows of every stored role and service, decoded ``_FILL`` at a time
        (read first, then written: one cursor reads while another writes)."""
        insert = self._sql(_INSERT_CANDIDATES)
        for kind in ("PractitionerRole", "HealthcareService"):
            last = ""
            while True:
                rows = conn.execute(
                    self._sql(
                        "SELECT id, data FROM directory_entries WHERE kind = ? AND id > ? "
                        "ORDER BY id LIMIT ?"
                    ),
                    (kind, last, _FILL),
                ).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                entries = [cast(Matchable, decode(kind, data)) for _, data in rows]
                conn.cursor().executemany(insert, [r for e in entries for r in candidate_rows(e)])

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
        candidates: list[CandidateRow] = []
        for e in unique:
            if isinstance(e, PractitionerRole | HealthcareService):
                candidates += candidate_rows(e)
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
        self._write_rows(rows, specialties, networks, candidates)
        return len(batch)

    def _write_rows(
        self,
        rows: Sequence[tuple[str, str, str]],
        specialties: Sequence[tuple[str, str, str]] = (),
        networks: Sequence[tuple[str, str, str, str]] = (),
        candidates: Sequence[CandidateRow] = (),
        more: Sequence[tuple[str, Sequence[tuple[Any, ...]]]] = (),
    ) -> None:
        """Write encoded entries and their index rows in one transaction, replacing the
        entries with the same kind and id (and their index rows), as :meth:`add` does.

        For bulk loaders that check every value themselves and encode as ``_codec`` does
        (:func:`~referralkit.directory.load_nppes`): ``rows`` are ``(kind, id, data)``,
        unique by kind and id; ``specialties`` ``(kind, code, id)``; ``networks``
        ``(kind, network, id, source)``; ``candidates`` the :func:`candidate_rows` of every
        role and service among ``rows`` (what matching screens on); ``more`` further
        ``(statement, rows)`` in the connection's own placeholder style, executed last (a
        loader's candidate rows with their constant columns in the statement). One prepared
        statement per table, executed over the whole batch.
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
            if candidates:
                cur.executemany(self._sql(_INSERT_CANDIDATES), candidates)
            for statement, values in more:
                if values:
                    cur.executemany(statement, values)

    def _existing(self, conn: Any, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        by_kind: dict[str, list[str]] = {}
        for kind, id in keys:
            by_kind.setdefault(kind, []).append(id)
        for kind, ids in by_kind.items():
            for query, params in self._id_lists("SELECT id FROM directory_entries", kind, ids):
                found += [(kind, row[0]) for row in conn.execute(query, params).fetchall()]
        return found

    def _id_lists(
        self, select: str, kind: str, ids: list[str]
    ) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """``select`` restricted to ``kind`` and ``ids``, with its parameters: on PostgreSQL
        one query, the ids as one array (``= ANY``: one round trip however many); on SQLite
        one per ``_CHUNK`` ids (its bound-parameter limit); none for no ids."""
        if not ids:
            return
        if not self._sqlite:
            yield f"{select} WHERE kind = %s AND id = ANY(%s)", (kind, ids)
            return
        for k in range(0, len(ids), _CHUNK):
            chunk = ids[k : k + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            yield f"{select} WHERE kind = ? AND id IN ({marks})", (kind, *chunk)

    def _forget(self, conn: Any, keys: Sequence[tuple[str, str]]) -> None:
        cur = conn.cursor()
        sql = self._sql
        cur.executemany(sql("DELETE FROM directory_entries WHERE kind = ? AND id = ?"), keys)
        matched = [(kind, kind, id, id) for kind, id in keys if kind in _MATCHED]
        if matched:
            # by the primary key: the entry's codes are its rows in directory_specialties
            # (before they go), '' when it has none; no second index to keep on every write
            # (SQLite's planner, without statistics, would rather scan the kind's codes)
            hint = " INDEXED BY directory_specialties_entry" if self._sqlite else ""
            cur.executemany(
                sql(
                    "DELETE FROM directory_candidates WHERE kind = ? AND code IN "  # noqa: S608
                    f"(SELECT s.code FROM directory_specialties s{hint} "
                    "WHERE s.kind = ? AND s.id = ? UNION ALL SELECT '') AND id = ?"
                ),
                matched,
            )
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
    ) -> tuple[str, list[Any]] | None:
        """The condition on ``directory_candidates c`` and its parameters selecting the
        active entries of ``kind``, one row each; None when it can match nothing. Only
        placeholders and fixed conditions are formatted into it."""
        selection = self._selection(kind, specialties)
        if selection is None:
            return None
        where, params = selection
        if networks is not None:
            test = self._network_test(kind, networks)
            if test is None:
                return None
            where = f"{where} AND {test[0]}"
            params = [*params, *test[1]]
        return where, params

    def _selection(
        self, kind: str, specialties: Iterable[str] | None
    ) -> tuple[str, list[Any]] | None:
        """The active entries of ``kind`` with one of ``specialties``: a range of the
        primary key per code, and of an entry holding several of them the row of the
        smallest only (probed only for entries with several codes: no DISTINCT, which,
        measured, cost seven times the scan)."""
        p = self._p
        where = [f"c.kind = {p}", "c.active = 1"]
        params: list[Any] = [kind]
        if specialties is None:
            where.append(
                "(c.coded <= 1 OR NOT EXISTS (SELECT 1 FROM directory_candidates o "
                "WHERE o.kind = c.kind AND o.id = c.id AND o.code < c.code))"
            )
            return " AND ".join(where), params
        codes: list[str] = list(dict.fromkeys(specialties))
        if not codes:
            return None
        marks = ", ".join([p] * len(codes))
        where.append(f"c.code IN ({marks})")
        if "" in codes:  # '' is also the code of the row of an entry without any
            where.append("c.coded > 0")
        where.append(
            "(c.coded <= 1 OR NOT EXISTS (SELECT 1 FROM directory_candidates o "  # noqa: S608
            f"WHERE o.kind = c.kind AND o.id = c.id AND o.code IN ({marks}) "
            "AND o.code < c.code))"
        )
        return " AND ".join(where), [*params, *codes, *codes]

    def _network_test(self, kind: str, networks: Iterable[str]) -> tuple[str, list[Any]] | None:
        """Whether the row's entry is in one of ``networks``: tested on the row (the
        entry's own networks), and probed in ``directory_networks`` only for services
        (affiliations) and entries with odd network ids (measured: selecting through
        ``directory_networks`` cost most of a query over 100,000 roles)."""
        p = self._p
        wanted: list[str] = list(dict.fromkeys(networks))
        if not wanted:
            return None
        has = "instr(c.networks, {}) > 0" if self._sqlite else "strpos(c.networks, {}) > 0"
        simple = [n for n in wanted if _SEP not in n and _JSON not in n]
        tests = [has.format(p) for _ in simple]
        params: list[Any] = [f"{_SEP}{n}{_SEP}" for n in simple]
        probe = (
            f"EXISTS (SELECT 1 FROM directory_networks n WHERE n.kind = {p} "  # noqa: S608
            f"AND n.network IN ({', '.join([p] * len(wanted))}) AND n.id = c.id)"
        )
        if kind == HealthcareService.KIND:
            tests.append(probe)
        else:
            tests.append(f"(c.networks = {p} AND {probe})")
            params.append(_PROBE)
        params += [kind, *wanted]
        return f"({' OR '.join(tests)})", params

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
        condition: str = selection[0]
        wanted: list[Any] = selection[1]
        query = (
            f"SELECT e.data FROM directory_entries e WHERE e.kind = {self._p} AND e.id IN "  # noqa: S608
            f"(SELECT c.id FROM directory_candidates c WHERE {condition}) ORDER BY e.id"
        )
        with self._errors("read"):
            rows = self._conn.execute(query, [kind.KIND, *wanted]).fetchall()
        read = self._decoded
        found = (cast(M, read(kind.KIND, row[0])) for row in rows)
        return [entry for entry in found if entry.active]

    def screen(
        self,
        kind: type[M],
        *,
        specialties: Iterable[str] | None = None,
        networks: Iterable[str] | None = None,
    ) -> list[MatchRow]:
        """What ``find`` finds, as :class:`~referralkit.directory.MatchRow` values
        read from ``directory_candidates``, without reading or decoding an entry (what
        matching screens on; measured, decoding the entries was most of a match). In id
        order.

        """
        selection = self._where(kind.KIND, specialties, networks)
        if selection is None:
            return []
        condition, params = selection
        query = f"SELECT {_SCREEN} FROM directory_candidates c WHERE {condition}"  # noqa: S608
        with self._errors("read"):
            rows = self._conn.execute(query, params).fetchall()
        rows = list({row[0]: row for row in rows}.values())  # an entry holding two codes
        rows.sort(key=_first)
        return self._rows(kind.KIND, rows)

    def screen_groups(
        self,
        kind: type[M],
        *,
        specialties: Iterable[str] | None = None,
        networks: Iterable[str] | None = None,
    ) -> list[CandidateGroup]:
        """What ``find`` finds without ``networks``, grouped by what matching screens on
        (all but the id, names and locations) and by whether they are in one of
        ``networks``, in one pass of the database; with the keys (code and id) of the rows
        in network, but not the rows; the others are one group, counted. A hundred-odd
        groups where :meth:`screen` ships thousands of rows (measured at 100,000 roles: a
        specialty's 3,400 in-network candidates are 128 groups); matching reads with
        :meth:`screen_rows` only the rows of the groups that can rank. In no particular
        order."""
        selection = self._selection(kind.KIND, specialties)
        if selection is None:
            return []
        condition: str = selection[0]
        params: list[Any] = selection[1]
        inside = "TRUE"
        tested: list[Any] = []
        if networks is not None:
            test = self._network_test(kind.KIND, networks)
            inside = "FALSE" if test is None else test[0]
            tested = [] if test is None else test[1]
        if self._sqlite:
            # the rows in network grouped, the others counted: two passes, cheaper here
            # than grouping them all (measured); one pass computes both aggregates, in
            # the same order
            query = (
                f"SELECT {_KEY}, 1, count(*), json_group_array(c.code), "  # noqa: S608
                f"json_group_array(c.id) FROM directory_candidates c WHERE {condition} "
                f"AND {inside} GROUP BY 1, 2, 3, 4, 5, 6"
            )
            count = f"SELECT count(*) FROM directory_candidates c WHERE {condition}"  # noqa: S608
            with self._errors("read"):
                rows = self._conn.execute(query, [*params, *tested]).fetchall()
                if networks is not None:
                    every = self._conn.execute(count, params).fetchone()[0]
                    left = every - sum(row[7] for row in rows)
                    if left:
                        rows.append((None, None, None, None, None, None, 0, left, None, None))
        else:
            # the pass kept once (MATERIALIZED), and only the rows in network grouped: the
            # others counted (measured: PostgreSQL sorts to group, and sorting them all
            # was most of the query); the texts grouped by bytes, not the locale's rules
            key = _KEY.replace(" AS k1", ' COLLATE "C" AS k1').replace(
                " AS k2", ' COLLATE "C" AS k2'
            )
            inner = (
                f"SELECT {key}, CASE WHEN {inside} THEN 1 ELSE 0 END AS inside, "  # noqa: S608
                f"c.code AS code, c.id AS id FROM directory_candidates c WHERE {condition}"
            )
            query = (
                f"WITH s AS MATERIALIZED ({inner}) "  # noqa: S608
                "SELECT k1, k2, k3, k4, k5, k6, 1, count(*), array_agg(code), array_agg(id) "
                "FROM s WHERE inside = 1 GROUP BY 1, 2, 3, 4, 5, 6 UNION ALL "
                "SELECT NULL, NULL, NULL, NULL, NULL, NULL, 0, count(*), NULL, NULL "
                "FROM s WHERE inside = 0 HAVING count(*) > 0"
            )
            with self._errors("read"):
                rows = self._conn.execute(query, [*tested, *params]).fetchall()
        out: list[CandidateGroup] = []
        for (
            codes,
            spoken,
            accepting,
            interpreter,
            telehealth,
            person,
            member,
            size,
            held,
            ids,
        ) in rows:
            keys: tuple[tuple[str, str], ...] = ()
            if member == 1:
                if self._sqlite:
                    held, ids = json.loads(held), json.loads(ids)
                keys = tuple(zip(held, ids, strict=True))
            out.append(
                CandidateGroup(
                    kind.KIND,
                    _split(codes),
                    _split(spoken),
                    None if accepting == 2 else accepting == 1,
                    interpreter == 1,
                    telehealth == 1,
                    person == 1,
                    member == 1,
                    int(size),
                    keys,
                )
            )
        return out

    def screen_rows(self, kind: type[M], keys: Iterable[tuple[str, str]]) -> list[MatchRow]:
        """The :meth:`screen` rows of ``keys`` (code and id, as :meth:`screen_groups` gives
        them), in id order: primary-key lookups, not a pass over the specialty; on
        PostgreSQL in one statement, on SQLite one per code and ``_CHUNK`` ids."""
        by_code: dict[str, list[str]] = {}
        for code, id in keys:
            by_code.setdefault(code, []).append(id)
        rows: list[Any] = []
        p = self._p
        with self._errors("read"):
            if not self._sqlite and by_code:
                # one statement, driven by the keys: a primary-key probe each (measured:
                # with the keys as conditions, the planner read the whole kind's index)
                query = (
                    f"SELECT {_SCREEN} FROM unnest(%s::text[], %s::text[]) AS k(code, id) "  # noqa: S608
                    "JOIN directory_candidates c ON c.kind = %s AND c.code = k.code "
                    "AND c.id = k.id"
                )
                codes = [code for code, ids in by_code.items() for _ in ids]
                ids = [id for found in by_code.values() for id in found]
                rows = self._conn.execute(query, [codes, ids, kind.KIND]).fetchall()
                by_code = {}
            for code, ids in by_code.items():
                step = _CHUNK if self._sqlite else len(ids)  # PostgreSQL: one array
                for k in range(0, len(ids), step):
                    chunk: list[str] = ids[k : k + step]
                    params: list[Any] = [chunk]
                    test = "= ANY(%s)"
                    if self._sqlite:
                        test, params = f"IN ({', '.join('?' * len(chunk))})", chunk
                    query = (
                        f"SELECT {_SCREEN} FROM directory_candidates c WHERE c.kind = {p} "  # noqa: S608
                        f"AND c.code = {p} AND c.id {test}"
                    )
                    rows += self._conn.execute(query, [kind.KIND, code, *params]).fetchall()
        rows = list({row[0]: row for row in rows}.values())
        rows.sort(key=_first)
        return self._rows(kind.KIND, rows)

    def _rows(self, name: str, rows: list[Any]) -> list[MatchRow]:
        """Screen rows (:data:`_SCREEN` columns, one per entry, in id order) as
        :class:`MatchRow` values, in the same order.

        One is made per candidate of every match: the joined columns are split once per
        distinct text (the specialties and languages of a specialty's candidates repeat a
        handful of values, so most rows share their tuples), and only the locations, which
        differ per row, are split per row."""
        new = tuple.__new__
        split = _split
        sep = _SEP
        tuples: dict[str, tuple[str, ...]] = {}
        made = tuples.get
        prefix = f"{name}/"
        out: list[MatchRow] = []
        append = out.append
        for (
            id,
            person,
            org,
            label,
            codes,
            spoken,
            places,
            accepting,
            telehealth,
            interpreter,
        ) in rows:
            held = made(codes)
            if held is None:
                held = tuples[codes] = split(codes)
            languages = made(spoken)
            if languages is None:
                languages = tuples[spoken] = split(spoken)
            append(
                new(
                    MatchRow,
                    (
                        name,
                        id,
                        prefix + id,
                        person,
                        org,
                        label,
                        held,
                        languages,
                        (tuple(places.split(sep)) if places[0] != _JSON else split(places))
                        if places
                        else (),
                        None if accepting is None else accepting == 1,
                        telehealth == 1,
                        interpreter == 1,
                    ),
                )
            )
        return out

    def count_found(
        self,
        kind: type[M],
        *,
        specialties: Iterable[str] | None = None,
        networks: Iterable[str] | None = None,
    ) -> int:
        """``len(find(kind, ...))``, counted by the database on ``directory_candidates``,
        without reading the entries."""
        selection = self._where(kind.KIND, specialties, networks)
        if selection is None:
            return 0
        condition, params = selection
        query = f"SELECT count(*) FROM directory_candidates c WHERE {condition}"  # noqa: S608
        with self._errors("read"):
            row = self._conn.execute(query, params).fetchone()
        return int(row[0])

    def get_many(self, kind: type[E], ids: Iterable[str]) -> dict[str, E]:
        """The entries of ``kind`` among ``ids`` that exist, by id: one query (on SQLite
        one per 500 ids; what matching reads), not one per id."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, E] = {}
        with self._errors("read"):
            lists = self._id_lists("SELECT id, data FROM directory_entries", kind.KIND, wanted)
            for query, params in lists:
                for id, data in self._conn.execute(query, params).fetchall():
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
