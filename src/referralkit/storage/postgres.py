"""The PostgreSQL store: many coordinators on many machines, one database.

Needs the ``postgres`` extra (psycopg 3 and psycopg_pool). Open it by URL::

    open_store("postgresql://app@db.example.org/referrals?schema=clinic_a")

- **Connections** come from a ``psycopg_pool`` pool; every write runs in an explicit
  transaction (``BEGIN`` ... ``COMMIT`` on an autocommit connection), and is retried from the
  start when PostgreSQL reports a serialization failure or a deadlock (SQLSTATE 40001,
  40P01), with a short randomised back-off.
- **Optimistic concurrency** as in every adapter: an update is
  ``UPDATE ... WHERE id = %s AND version = %s``; a concurrent writer waits for the row lock
  and then finds the version moved, so it raises
  :class:`~referralkit.errors.ConcurrencyError` and writes nothing. A duplicate referrer
  source id raises :class:`~referralkit.errors.DuplicateReferralError`; the two are told apart
  by the violated constraint's name (``referrals_pkey``, ``referrals_source_id_key``), never
  by the message.
- **Errors** from the driver become :class:`~referralkit.errors.StorageError` naming the
  driver's exception class and SQLSTATE only, not chained: a PostgreSQL duplicate-key
  message repeats the key, and row values may be PHI. For the same reason no PHI is ever in
  a unique key (patients are found by their opaque ``patient.id``).
- **Claims** use ``SELECT ... ORDER BY <worklist> LIMIT n FOR UPDATE SKIP LOCKED`` and a
  lease that ends (DESIGN §6 measured a naive select-then-update claiming 1,935 of 2,000
  items twice; SKIP LOCKED none).
- **Transport**: a host other than the local machine (``localhost``, ``127.0.0.1``, ``::1``
  or a Unix socket) must use TLS: ``sslmode`` defaults to ``verify-full`` there (the
  server's certificate and name are checked), and ``disable``, ``allow`` and ``prefer``
  are refused (DESIGN §9, HIPAA 45 CFR 164.312(e)); a connection service is held to the
  same rule (:func:`connection_settings`).
- **Lost connections**: opening connects once outside the pool, so a wrong host, port or
  password fails at once with libpq's reason; a connection lent out is checked first and a
  dropped one replaced without a pause; a read that loses its connection is retried once.
- **Schemas**: the ``schema`` URL parameter puts the tables in that PostgreSQL schema
  (created if needed), so applications and test runs can share a database. The schema
  version is kept in a ``schema_version`` table and moved forward by
  :meth:`PostgresStore.upgrade`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import Buffer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row
from psycopg.types.string import StrDumperUnknown
from psycopg_pool import ConnectionPool, PoolTimeout

from .._redaction import Sealed, boundary, boundary_iter
from ..access import (
    GENESIS,
    RESTORE_CLASH,
    ROW_COLUMNS,
    AccessQuery,
    AccessRecord,
    at_text,
    chain_hash,
    check_access_query,
    check_records,
    record_fields,
    record_from_row,
    record_row,
)
from ..crypto import KeyProvider, load_keys
from ..errors import (
    ConcurrencyError,
    DuplicateReferralError,
    NotFoundError,
    ReferralKitError,
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
from ._json import RecordCodec, change_sizes, rewrites
from ._snapshot import AUDIT_PATHS, AUDIT_WHEN
from ._versions import (
    RuleVersion,
    check_digest,
    check_policy_use,
    check_rule_version,
    unknown_policy,
)

__all__ = ["SCHEMA_VERSION", "PostgresStore", "connection_settings"]

T = TypeVar("T")

SCHEMA_VERSION: Final = 9
"""The schema version this code writes (the same numbering as the SQLite store's)."""

_FAR_FUTURE: Final = dt.datetime.max.replace(tzinfo=dt.UTC)
_WORKLIST: Final = "priority_rank DESC, due_sort, received_sort, id"
_EXPORT_BATCH: Final = 500
# One advisory lock for schema migrations: processes opening the store at the same moment
# (eight coordinators starting together) migrate one after another, not on top of each other.
_MIGRATION_LOCK: Final = 0x52464B31
# and one (with the kind's hash) for noting which policy a desk decides with
_USE_LOCK: Final = 0x52464B35
# The advisory locks that order appends to the access log's and the events' hash chains.
_ACCESS_CHAIN_LOCK: Final = 0x52464B41
_EVENT_CHAIN_LOCK: Final = 0x52464B45
_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LOCAL_HOSTS: Final = frozenset({"localhost", ""})
_TLS_MODES: Final = frozenset({"require", "verify-ca", "verify-full"})
# Seconds to wait for a server to answer: libpq waits forever by default (then the kernel's
# TCP timeout, minutes), psycopg 130 s.
_CONNECT_TIMEOUT: Final = 5

# ``{s}`` is replaced by the quoted schema name, which is checked against _SCHEMA_NAME.
#
# Ids are ``COLLATE "C"``: code-point order, as Python and SQLite sort strings, so the worklist
# tie-break and the id order of an export are the same in every adapter; and an id range
# (``BETWEEN``) in events means the same as in referrals. Snapshots and payloads are ``json``,
# not ``jsonb``: stored as written (cheaper to insert; nothing reads inside them in SQL), and
# ``json`` accepts the escaped NUL character that ``jsonb`` refuses, so a free-text field
# stores the same here as in SQLite.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """
        CREATE TABLE {s}.referrals (
            id text COLLATE "C" NOT NULL CONSTRAINT referrals_pkey PRIMARY KEY,
            version integer NOT NULL,
            status text NOT NULL,
            is_open boolean NOT NULL,
            priority text NOT NULL,
            priority_rank smallint NOT NULL,
            due_sort timestamptz NOT NULL,
            received_sort timestamptz NOT NULL,
            specialty text NOT NULL,
            owner text,
            patient_id text NOT NULL,
            source_id text CONSTRAINT referrals_source_id_key UNIQUE,
            updated_at timestamptz NOT NULL,
            snapshot json NOT NULL
        )
        """,
        """
        CREATE TABLE {s}.events (
            referral_id text COLLATE "C" NOT NULL
                CONSTRAINT events_referral_fkey REFERENCES {s}.referrals (id),
            version integer NOT NULL,
            idx integer NOT NULL,
            at timestamptz NOT NULL,
            actor text NOT NULL,
            type text NOT NULL,
            payload json NOT NULL,
            CONSTRAINT events_pkey PRIMARY KEY (referral_id, version, idx)
        )
        """,
        f"CREATE INDEX referrals_worklist ON {{s}}.referrals (is_open, {_WORKLIST})",
        "CREATE INDEX referrals_status ON {s}.referrals (status, priority_rank DESC, due_sort)",
        "CREATE INDEX referrals_specialty ON {s}.referrals "
        "(specialty, is_open, priority_rank DESC)",
        "CREATE INDEX referrals_owner ON {s}.referrals (owner, is_open, priority_rank DESC)",
        "CREATE INDEX referrals_patient ON {s}.referrals (patient_id)",
        "CREATE INDEX referrals_updated ON {s}.referrals (updated_at)",
        "CREATE INDEX referrals_due ON {s}.referrals (due_sort)",
    ),
    2: (
        "ALTER TABLE {s}.referrals ADD COLUMN lease_owner text, ADD COLUMN lease_until timestamptz",
        "DROP INDEX {s}.referrals_updated",
        "CREATE INDEX referrals_updated ON {s}.referrals (updated_at, id)",
        # a specialty's, an owner's, a status's worklist in full worklist order (see sqlite.py)
        "DROP INDEX {s}.referrals_specialty",
        f"CREATE INDEX referrals_specialty ON {{s}}.referrals (specialty, is_open, {_WORKLIST})",
        "DROP INDEX {s}.referrals_owner",
        f"CREATE INDEX referrals_owner ON {{s}}.referrals (owner, is_open, {_WORKLIST})",
        "DROP INDEX {s}.referrals_status",
        f"CREATE INDEX referrals_status ON {{s}}.referrals (status, {_WORKLIST})",
    ),
    3: (
        # the provider directory's tables (referralkit.directory.SqlDirectory, opened with
        # open_directory(the store's URL); the same as storage/_directory.py, with ids in
        # code-point order as everywhere here). IF NOT EXISTS: open_directory may have
        # created them before the store was upgraded.
        """CREATE TABLE IF NOT EXISTS {s}.directory_entries (
            kind text NOT NULL, id text COLLATE "C" NOT NULL, data text NOT NULL,
            PRIMARY KEY (kind, id))""",
        """CREATE TABLE IF NOT EXISTS {s}.directory_specialties (
            kind text NOT NULL, code text NOT NULL, id text COLLATE "C" NOT NULL,
            PRIMARY KEY (kind, code, id))""",
        "CREATE INDEX IF NOT EXISTS directory_specialties_entry "
        "ON {s}.directory_specialties (kind, id)",
        """CREATE TABLE IF NOT EXISTS {s}.directory_networks (
            kind text NOT NULL, network text NOT NULL, id text COLLATE "C" NOT NULL,
            source text NOT NULL, PRIMARY KEY (kind, network, id, source))""",
        "CREATE INDEX IF NOT EXISTS directory_networks_source ON {s}.directory_networks (source)",
    ),
    4: (
        # the worklist's stored rank keys (see sqlite.py), filled by _fill_rank_keys
        """CREATE TABLE {s}.worklist_keys (
            referral_id text COLLATE "C" NOT NULL
                CONSTRAINT worklist_keys_referral_fkey REFERENCES {s}.referrals (id),
            bucket integer NOT NULL,
            sort_key double precision NOT NULL,
            CONSTRAINT worklist_keys_pkey PRIMARY KEY (referral_id, bucket))""",
        "CREATE INDEX worklist_keys_rank ON {s}.worklist_keys (bucket, sort_key, referral_id)",
    ),
    5: (
        # decision provenance: rule versions kept once under the SHA-256 of their document,
        # and when a desk began deciding with a policy (see storage/_versions.py)
        """CREATE TABLE {s}.rule_versions (
            digest text COLLATE "C" NOT NULL CONSTRAINT rule_versions_pkey PRIMARY KEY,
            kind text NOT NULL,
            name text NOT NULL,
            document text NOT NULL,
            recorded_at timestamptz NOT NULL)""",
        """CREATE TABLE {s}.policy_uses (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind text NOT NULL,
            digest text COLLATE "C" NOT NULL
                CONSTRAINT policy_uses_digest_fkey REFERENCES {s}.rule_versions (digest),
            at timestamptz NOT NULL)""",
        "CREATE INDEX policy_uses_in_force ON {s}.policy_uses (kind, at, seq)",
    ),
    6: (
        # the access log (referralkit.access; see sqlite.py): append-only, a trigger refuses
        # updates, deletes and truncation
        """
        CREATE TABLE {s}.access_log (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,
            actor text NOT NULL,
            roles text NOT NULL,
            organization text,
            action text NOT NULL,
            outcome text NOT NULL,
            referral_ids text NOT NULL,
            purpose text,
            reason text,
            grant_id text,
            flagged boolean NOT NULL,
            chain text NOT NULL
        )
        """,
        "CREATE INDEX access_log_at ON {s}.access_log (at)",
        "CREATE INDEX access_log_actor ON {s}.access_log (actor, seq)",
        """
        CREATE TABLE {s}.access_log_referrals (
            referral_id text COLLATE "C" NOT NULL,
            seq bigint NOT NULL REFERENCES {s}.access_log (seq),
            PRIMARY KEY (referral_id, seq)
        )
        """,
        """
        CREATE FUNCTION {s}.access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the access log is append-only'; END $$
        """,
        *(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            f"ON {{s}}.{table} FOR EACH STATEMENT EXECUTE FUNCTION {{s}}.access_log_append_only()"
            for table in ("access_log", "access_log_referrals")
        ),
    ),
    7: (
        # The analytics cache (referralkit.analytics): rows computed from histories, kept so
        # a later frame replays only what changed; opaque blocks, rewritten at will.
        """CREATE TABLE {s}.analytics_blocks (
            name text NOT NULL, seq integer NOT NULL, data bytea NOT NULL,
            PRIMARY KEY (name, seq))""",
    ),
    8: (
        # the events' hash chain (storage/_chain.py; see sqlite.py), filled for the existing
        # rows by _fill_event_chain
        "ALTER TABLE {s}.events ADD COLUMN seq bigint, ADD COLUMN sealed text, "
        "ADD COLUMN chain text",
    ),
    # Version 9: the worklist digests (storage/_digests.py; see sqlite.py), written by the
    # worklist. (SQLite's version 9 also writes its access log's referral index a block of
    # records at a time; here each record's index rows are written with it, as a sequence's
    # numbers may have gaps, so no block of seq values is known to be whole.)
    9: (
        """CREATE TABLE {s}.worklist_digests (
            referral_id text PRIMARY KEY, version integer NOT NULL, digest text NOT NULL)""",
    ),
}
_RANK_KEYS_VERSION: Final = 4
"""The migration after which _fill_rank_keys computes the rank keys of the stored rows."""

_COLUMNS: Final = (
    "id, version, status, is_open, priority, priority_rank, due_sort, received_sort, "
    "specialty, owner, patient_id, source_id, updated_at, snapshot"
)
_EVENT_COLUMNS: Final = "referral_id, version, idx, at, actor, type, payload"
_EVENT_COLUMNS_TEXT: Final = "referral_id, version, idx, at, actor, type, payload::text"
_HISTORY_ROWS: Final = 5_000
"""Rows a server-side cursor fetches at a time when ``event_histories`` streams the events."""


# --------------------------------------------------------------------------- connection URL


def _is_local(host: str) -> bool:
    """A Unix socket (a path, or libpq's default when no host is named) or loopback."""
    if host in _LOCAL_HOSTS or host.startswith(("/", "@")):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _service_entries(path: str, name: str) -> dict[str, str] | None:
    """The settings of service ``name`` in the libpq service file ``path``; ``None`` when
    the file or the service is not there.

    Read as libpq reads it (``parseServiceFile`` in ``fe-connect.c``): lines stripped, ``#``
    comments, ``[name]`` sections, the first section of that name only, ``key=value`` with
    nothing trimmed around ``=``, the first value of a key wins.
    """
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        raise ValidationError("service", f"cannot read the service file {path}") from None
    found: dict[str, str] | None = None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if found is not None:
                break
            if line[1:].startswith(f"{name}]"):
                found = {}
            continue
        if found is None:
            continue
        if line.startswith("ldap"):
            # an LDAP lookup happens inside libpq, after this check: its answer is unknown here
            raise ValidationError(
                "service", f"service {name!r} is looked up over LDAP, which cannot be checked"
            )
        key, sep, value = line.partition("=")
        if not sep or key == "service":
            raise ValidationError(
                "service", f"syntax error in the service file {path}, line {number}"
            )
        found.setdefault(key, value)
    return found


def _service(name: str) -> dict[str, str]:
    """The settings libpq takes from service ``name``: the per-user file (``PGSERVICEFILE``
    or ``~/.pg_service.conf``) first, then ``pg_service.conf`` in ``PGSYSCONFDIR``.

    libpq would then look in the system directory compiled into it, which cannot be read
    from here: a service found in neither file is refused rather than left unchecked.
    """
    user_file = os.environ.get("PGSERVICEFILE") or os.path.join(
        os.path.expanduser("~"), ".pg_service.conf"
    )
    found = _service_entries(user_file, name)
    system = os.environ.get("PGSYSCONFDIR")
    if found is None and system:
        found = _service_entries(os.path.join(system, "pg_service.conf"), name)
    if found is None:
        raise ValidationError(
            "service",
            f"service {name!r} is not defined in {user_file}"
            + (f" or {system}/pg_service.conf" if system else "")
            + "; name its file with PGSERVICEFILE or its directory with PGSYSCONFDIR",
        )
    return found


def connection_settings(url: str) -> tuple[str, str]:
    """The libpq connection string and the schema name a PostgreSQL URL means.

    The ``schema`` query parameter (default ``public``) is taken out: libpq does not know it.

    A host other than the local machine must use TLS and, unless told otherwise, verify the
    server's certificate and name: ``sslmode`` is set to ``verify-full`` when neither the
    URL, its service nor ``PGSSLMODE`` asks for ``require``, ``verify-ca`` or
    ``verify-full``; ``disable``, ``allow`` or ``prefer`` in the URL or in its service is
    refused with a :class:`~referralkit.errors.ValidationError`. The rule applies to the
    settings libpq will use: a ``service`` (in the URL or ``PGSERVICE``) is read from its
    connection service file, its host and TLS mode are checked and written into the
    connection string (which takes precedence over the file), and a service that cannot be
    read is refused. ``connect_timeout`` defaults to 5 seconds, so a host that does not
    answer is an error within seconds. Messages never repeat the URL (it may hold a
    password).

    >>> connection_settings("postgresql://app@127.0.0.1/referrals?schema=clinic_a")
    ('user=app dbname=referrals host=127.0.0.1 connect_timeout=5', 'clinic_a')
    >>> connection_settings("postgresql://app@db.example.org/referrals")[0]
    'user=app dbname=referrals host=db.example.org sslmode=verify-full connect_timeout=5'

    .. versionchanged:: 0.1
       ``verify-full`` by default (was ``require``, which does not check who answers);
       services are checked; ``connect_timeout`` defaults to 5 seconds.
    """
    if not isinstance(url, str):
        raise ValidationError("url", "expected a PostgreSQL URL or connection string")
    schema = "public"
    if "://" in url:
        # split by hand: urllib would turn "postgresql:///db" (a Unix socket) into
        # "postgresql:/db", and re-encode spaces in ``options`` as "+", which libpq keeps
        base, _, query = url.partition("?")
        kept = []
        for item in query.split("&") if query else ():
            key, _, value = item.partition("=")
            if unquote(key) == "schema":
                schema = unquote(value)
            else:
                kept.append(item)
        url = f"{base}?{'&'.join(kept)}" if kept else base
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        raise ValidationError("url", "not a valid PostgreSQL connection URL") from None
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValidationError("schema", "expected letters, digits and _ (at most 63)")
    # libpq's order: the connection string, then the service file, then PG* variables
    name = params.get("service") or os.environ.get("PGSERVICE")
    service = _service(str(name)) if name else {}
    for key in ("host", "hostaddr", "port"):
        if params.get(key) is None and key in service:
            params[key] = service[key]

    def setting(key: str, variable: str) -> str:
        value = params.get(key)
        return str(value if value is not None else os.environ.get(variable, ""))

    hosts = setting("host", "PGHOST").split(",")
    addresses = setting("hostaddr", "PGHOSTADDR").split(",")
    if not all(_is_local(h.strip()) for h in (*hosts, *addresses)):
        mode = params.get("sslmode")
        source = "the URL"
        if mode is None and "sslmode" in service:
            mode = params["sslmode"] = service["sslmode"]
            source = f"service {name!r}"
        if mode is None:
            if os.environ.get("PGSSLMODE") not in _TLS_MODES:
                params["sslmode"] = "verify-full"
        elif mode not in _TLS_MODES:
            raise ValidationError(
                "sslmode",
                f"a host other than this machine needs TLS; sslmode={mode} in {source} is "
                "refused (use verify-full, verify-ca or require)",
            )
    if params.get("connect_timeout") is None and not os.environ.get("PGCONNECT_TIMEOUT"):
        params["connect_timeout"] = _CONNECT_TIMEOUT
    return make_conninfo("", **params), schema


# --------------------------------------------------------------------------- rows and errors


class _SealedDumper(StrDumperUnknown):
    """Row values that are PHI (a snapshot's or payload's JSON, the patient id) travel
    :class:`~referralkit.privacy.Sealed` to the driver, so an exception report with the store's
    frames' locals does not show them; this dumper unseals them as the text they hold."""

    def dump(self, obj: str | Sealed[str]) -> Buffer | None:
        return super().dump(obj.reveal() if isinstance(obj, Sealed) else obj)


psycopg.adapters.register_dumper(Sealed, _SealedDumper)


def _row(referral: Referral, codec: RecordCodec) -> tuple[Any, ...]:
    urgency = referral.effective_priority
    return (
        referral.id,
        referral.version,
        referral.status.value,
        not referral.status.is_terminal,
        urgency.value,
        urgency.rank,
        referral.due_by or _FAR_FUTURE,
        referral.received_at or referral.created_at,
        referral.specialty,
        referral.owner,
        Sealed(codec.patient_key(referral.patient.id)),
        referral.source_id,
        referral.updated_at,
        Sealed(codec.snapshot_text(referral)),
    )


def _json_path(path: str) -> str:
    """The SQL of the JSON value at ``path`` (``a.b``) of the snapshot's top-level columns
    ``x`` (:data:`_AUDIT_PAGE`)."""
    head, *rest = path.split(".")
    return f'x."{head}"' + "".join(f"->'{key}'" for key in rest)


def _sql_value(value: object) -> str:
    if value is True:
        return "'true'"
    assert isinstance(value, str)
    assert "'" not in value
    return f"'{value}'"


_AUDIT_TOP: Final = sorted(
    {path.split(".")[0] for path in AUDIT_PATHS} | {p for p, _, _ in AUDIT_WHEN}
)
# Each referral with the parts of its snapshot the record audit reads, parsed once by
# json_to_record (a snapshot that is not a JSON object gives none: it is then read whole and
# refused as every read refuses it), and the last of its events of the selected types
_AUDIT_PAGE: Final = (
    "SELECT r.id, r.snapshot::text, json_build_array("
    + ", ".join(_json_path(path) for path in AUDIT_PATHS)
    + ")::text, json_build_array("
    + ", ".join(
        f"CASE WHEN ({_json_path(condition)} #>> '{{}}') IN "
        f"({', '.join(_sql_value(value) for value in values)}) THEN {_json_path(path)} END"
        for path, condition, values in AUDIT_WHEN
    )
    + ")::text, e.referral_id, e.version, e.idx, e.at, e.actor, e.type, e.payload::text "
    "FROM {s}.referrals r LEFT JOIN LATERAL json_to_record(CASE WHEN "
    "json_typeof(r.snapshot) = 'object' THEN r.snapshot END) AS x("
    + ", ".join(f'"{name}" json' for name in _AUDIT_TOP)
    + ") ON true LEFT JOIN LATERAL (SELECT referral_id, version, idx, at, actor, type, payload "
    "FROM {s}.events WHERE referral_id = r.id AND type = ANY(%s) "
    "ORDER BY version DESC, idx DESC LIMIT 1) e ON true "
    "WHERE r.id > %s ORDER BY r.id LIMIT %s"
)


def _seal_parts(cursor: Any) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A psycopg row factory for :data:`_AUDIT_PAGE`: ``(id, snapshot, parts, event row or
    None)``, the snapshot, the parts (PHI among them) and the event's payload sealed."""

    def make(values: Sequence[Any]) -> tuple[Any, ...]:
        event = None if values[4] is None else (*values[4:10], Sealed(values[10]))
        return (values[0], Sealed(values[1]), Sealed(tuple(values[2:4])), event)

    return make


def _seal_last(cursor: Any) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A psycopg row factory: the last column (a snapshot's or a payload's JSON) sealed as it
    leaves the driver, so no frame of the store holds it in the clear."""

    def make(values: Sequence[Any]) -> tuple[Any, ...]:
        return (*values[:-1], Sealed(values[-1]))

    return make


def _chain_row(cursor: Any) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A psycopg row factory: ``(seq, fields, chain, payload text)`` of a row ``seq, <event
    columns>, sealed, chain``, the payload sealed as it leaves the driver."""

    def make(row: Sequence[Any]) -> tuple[Any, ...]:
        # a row without a link (inserted by hand) comes first, as seq 0: a broken link
        return (
            int(row[0] or 0),
            event_fields(row[1:7], row[8] or ""),
            str(row[9] or ""),
            Sealed(str(row[7])),
        )

    return make


def _connection_lost(error: psycopg.Error) -> bool:
    """Whether ``error`` says the connection is gone (SQLSTATE class 08, an administrator
    or crash shutdown 57P01-57P03, or no SQLSTATE: the socket closed under libpq)."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = error.sqlstate
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


def _driver_error(error: psycopg.Error, doing: str) -> StorageError:
    # the driver's message may repeat row values (a duplicate key, a bad value): keep only
    # the exception's class and SQLSTATE, and do not chain it
    name = type(error).__name__
    sqlstate = error.sqlstate or ""
    return StorageError(
        f"PostgreSQL failed while {doing} ({name} {sqlstate})".rstrip(),
        driver_error=name,
        sqlstate=sqlstate,
    )


# --------------------------------------------------------------------------- the store


class PostgresStore(ReferralStore):
    """Referrals in PostgreSQL, through a connection pool.

    ``conninfo`` is a ``postgresql://`` URL (with an optional ``schema`` parameter) or a
    libpq ``key=value`` string; see :func:`connection_settings` for the TLS rule. The schema
    is created or brought up to date when the store opens, unless ``migrate`` is false.
    With ``create`` false a schema without referralkit's tables is refused with a
    :class:`~referralkit.errors.StorageError` and nothing is created.
    ``min_size``/``max_size`` bound the pool, ``timeout`` is how long to wait for a free
    connection, ``retries`` how many times a transaction is retried after a serialization
    failure or a deadlock.

    Opening makes one connection first, outside the pool: a wrong host, port, password or
    TLS setting is then one :class:`~referralkit.errors.StorageError` with libpq's reason,
    within ``connect_timeout`` (5 s by default), instead of the pool retrying until
    ``timeout``. Every connection lent out is checked first (one round trip); one the server
    dropped (a restart, a failover, ``pg_terminate_backend``) is discarded and the next
    taken at once, and a read that loses its connection is retried once.

    .. versionchanged:: 0.1
       ``create``; a failed first connection reports its reason at once; dropped
       connections are replaced without a pause.
    .. versionchanged:: 0.2
       Schema version 5: the rule versions decisions were made with, and when each policy
       came into use (:mod:`referralkit.rules.provenance`).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        retries: int = 5,
        migrate: bool = True,
        create: bool = True,
        keys: KeyProvider | str | os.PathLike[str] | None = None,
    ) -> None:
        self._codec = RecordCodec(load_keys(keys))
        settings, schema = connection_settings(conninfo)
        params = conninfo_to_dict(settings)
        self.schema = schema
        self.retries = retries
        self.retried = 0
        """How many transactions were retried after a serialization failure or deadlock."""
        self._where_to = (
            f"{params.get('host') or 'local socket'}:{params.get('port') or 5432}"
            f"/{params.get('dbname') or ''}"
        )
        self._s = f'"{schema}"'
        self._first_connection(settings)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            settings,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            # no ``check``: after a failed check psycopg_pool sleeps 1 s (doubling on the
            # next failure) before trying another connection; _connection checks instead
            name=f"referralkit-{schema}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise StorageError(
                f"could not connect to PostgreSQL at {self._where_to}", driver_error="PoolTimeout"
            ) from None
        try:
            version = self.schema_version()
            if not create and version == 0:
                raise StorageError(
                    f"no referralkit tables in schema {schema!r} at {self._where_to}"
                )
            if migrate:
                self.upgrade()
            elif version > SCHEMA_VERSION:
                raise self._too_new(version)
        except BaseException:
            self._pool.close()
            raise

    def _first_connection(self, settings: str) -> None:
        """Connect once, outside the pool, so that a failure is one clear error now."""
        try:
            psycopg.connect(settings, autocommit=True).close()
        except psycopg.Error as error:
            # libpq's reason names the host, port, user or database, never a password
            lines = str(error).removeprefix("connection failed: ").strip().splitlines()
            reason = lines[0].strip()[:300] if lines else type(error).__name__
            raise StorageError(
                f"could not connect to PostgreSQL at {self._where_to}: {reason}",
                driver_error=type(error).__name__,
                sqlstate=error.sqlstate or "",
            ) from None

    def __repr__(self) -> str:
        return f"PostgresStore({self._where_to!r}, schema={self.schema!r})"

    def close(self) -> None:
        self._pool.close()

    # ------------------------------------------------------------------ plumbing

    def _sql(self, template: str) -> str:
        return template.replace("{s}", self._s)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection that has just answered a check (one empty query).

        A connection that fails it is handed back (the pool discards it and opens a
        replacement in the background) and the next one is taken at once. Every pooled
        connection may be dead after a server restart, hence ``max_size + 1`` tries; the
        last waits for a new connection, up to the pool's timeout.
        """
        for _ in range(self._pool.max_size + 1):
            conn = self._pool.getconn()
            try:
                ConnectionPool.check_connection(conn)
            except psycopg.Error:
                self._pool.putconn(conn)
                continue
            try:
                yield conn
            finally:
                self._pool.putconn(conn)
            return
        raise StorageError(
            f"every PostgreSQL connection to {self._where_to} was dropped",
            driver_error="OperationalError",
        )

    def _transact(
        self,
        doing: str,
        work: Callable[[psycopg.Connection[Any]], T],
        *,
        clash: Callable[[str], ReferralKitError] | None = None,
    ) -> T:
        """Run ``work`` in one transaction, retried on serialization failure and deadlock.

        A library error raised by ``work`` rolls the transaction back and propagates; a
        driver error becomes a :class:`~referralkit.errors.StorageError`, except that a
        violated unique constraint is handed to ``clash`` (run after the rollback) when given.
        """
        for attempt in itertools.count():
            try:
                with self._connection() as conn, conn.transaction():
                    return work(conn)
            except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as error:
                if attempt >= self.retries:
                    raise _driver_error(error, doing) from None
                self.retried += 1
                # back off a little, randomised so the retried transactions do not meet again
                time.sleep(0.005 * 2**attempt * (0.5 + random.random()))  # noqa: S311 - jitter
            except pg_errors.UniqueViolation as error:
                constraint = error.diag.constraint_name or ""
                if clash is None:
                    raise _driver_error(error, doing) from None
                raise clash(constraint) from None
            except PoolTimeout:
                raise StorageError(
                    f"no PostgreSQL connection free within {self._pool.timeout} s while {doing}",
                    driver_error="PoolTimeout",
                ) from None
            except psycopg.Error as error:
                raise _driver_error(error, doing) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(
        self, doing: str, sql: str, params: Sequence[Any] = (), *, sealed: bool = False
    ) -> list[tuple[Any, ...]]:
        """One read, outside any explicit transaction (a single statement is atomic); with
        ``sealed``, each row's last column (a snapshot or payload) comes back sealed.

        Retried once on a fresh connection when its connection is lost (the backend was
        terminated between the check and the read): a read can be repeated.
        """
        return self._fetch_all(doing, [(sql, params, sealed)])[0]

    def _fetch_all(
        self, doing: str, reads: Sequence[tuple[str, Sequence[Any], bool]]
    ) -> list[list[tuple[Any, ...]]]:
        """Several reads ``(sql, params, sealed)`` on one checked connection: one check
        (a round trip) for all of them, where :meth:`_fetch` makes one per read. Each
        statement is atomic on its own, as with :meth:`_fetch`; retried as it is."""
        for attempt in (1, 2):
            try:
                with self._connection() as conn:
                    found = []
                    for sql, params, sealed in reads:
                        rows = conn.cursor(row_factory=_seal_last if sealed else tuple_row)
                        found.append(rows.execute(self._sql(sql), params).fetchall())
                    return found
            except PoolTimeout:
                raise StorageError(
                    f"no PostgreSQL connection free within {self._pool.timeout} s while {doing}",
                    driver_error="PoolTimeout",
                ) from None
            except psycopg.Error as error:
                if attempt == 1 and _connection_lost(error):
                    continue
                raise _driver_error(error, doing) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ schema

    @boundary
    def schema_version(self) -> int:
        """The version of the schema in the database (0 when it has no tables yet)."""
        rows = self._fetch(
            "reading the schema version",
            "SELECT to_regclass(%s) IS NOT NULL",
            [f"{self._s}.schema_version"],
        )
        if not rows[0][0]:
            return 0
        found = self._fetch(
            "reading the schema version", "SELECT coalesce(max(version), 0) FROM {s}.schema_version"
        )
        return int(found[0][0])

    @staticmethod
    def _too_new(version: int) -> StorageError:
        return StorageError(
            f"the database schema is version {version}, newer than this referralkit "
            f"knows ({SCHEMA_VERSION}); upgrade referralkit"
        )

    @boundary
    def upgrade(self, target: int | None = None) -> int:
        """Create the schema if needed and apply the forward migrations it lacks, up to
        ``target`` (default: the latest), in one transaction; returns the version now in the
        database."""
        wanted = SCHEMA_VERSION if target is None else target
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0:
            raise ValidationError("target", "expected a schema version >= 0")
        if wanted > SCHEMA_VERSION:
            raise ValidationError(
                "target", f"this referralkit knows versions up to {SCHEMA_VERSION}"
            )

        def work(conn: psycopg.Connection[Any]) -> int:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            # look before creating: CREATE SCHEMA IF NOT EXISTS still needs the CREATE
            # privilege on the database, which an application role often lacks
            if not conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]
            ).fetchone():
                conn.execute(self._sql("CREATE SCHEMA {s}"))
            conn.execute(
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {s}.schema_version ("
                    "version integer NOT NULL PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            row = conn.execute(
                self._sql("SELECT coalesce(max(version), 0) FROM {s}.schema_version")
            ).fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise self._too_new(current)
            for version in range(current + 1, wanted + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(self._sql(statement))
                if version == _RANK_KEYS_VERSION:
                    self._fill_rank_keys(conn)
                if version == CHAIN_VERSION:
                    self._fill_event_chain(conn)
                conn.execute(
                    self._sql("INSERT INTO {s}.schema_version (version) VALUES (%s)"), [version]
                )
            return max(current, wanted)

        return self._transact("upgrading the schema", work)

    # ------------------------------------------------------------------ the store

    @boundary
    def load(self, referral_id: str) -> Referral:
        rows = self._fetch(
            "loading a referral",
            "SELECT snapshot FROM {s}.referrals WHERE id = %s",
            [check_id(referral_id)],
            sealed=True,
        )
        if not rows:
            raise NotFoundError(referral_id)
        return self._codec.referral(rows[0][0], referral_id)

    @boundary
    def ids_starting_with(self, prefix: str, *, limit: int | None = None) -> list[str]:
        """Answered from the primary key: ids are ``COLLATE "C"``, so a range in byte order
        (UTF-8 bytes order as the code points do)."""
        check_prefix(prefix, limit)
        sql, params = self._prefix_sql(prefix, limit)
        return [str(row[0]) for row in self._fetch("finding ids", sql, params)]

    @staticmethod
    def _prefix_sql(prefix: str, limit: int | None) -> tuple[str, list[Any]]:
        low, high = prefix_range(prefix)
        sql = "SELECT id FROM {s}.referrals WHERE id >= %s"
        params: list[Any] = [low]
        if high is not None:
            sql += " AND id < %s"
            params.append(high)
        return f"{sql} ORDER BY id LIMIT %s", [*params, limit]

    @boundary
    def find_source(self, source_id: str) -> str | None:
        rows = self._fetch(
            "finding a source id",
            "SELECT id FROM {s}.referrals WHERE source_id = %s",
            [check_id(source_id, "source_id")],
        )
        return str(rows[0][0]) if rows else None

    @boundary
    def save_many(self, changes: Sequence[Change]) -> None:
        check_changes(changes)
        if not changes:
            return
        self._transact(
            "saving referrals",
            lambda conn: self._save(conn, changes),
            clash=lambda constraint: self._clash(constraint, [c[0] for c in changes]),
        )

    @boundary
    def _save_swept(
        self, changes: Sequence[Change], timelines: Sequence[Sequence[ReferralEvent] | None]
    ) -> None:
        check_changes(changes)
        if not changes:
            return
        known = {
            c[0].id: [*timeline, *c[1]]
            for c, timeline in zip(changes, timelines, strict=True)
            if timeline is not None and c[2] > 0
        }
        self._transact(
            "saving referrals",
            lambda conn: self._save(conn, changes, known),
            clash=lambda constraint: self._clash(constraint, [c[0] for c in changes]),
        )

    def _save(
        self,
        conn: psycopg.Connection[Any],
        changes: Sequence[Change],
        known: dict[str, list[ReferralEvent]] | None = None,
    ) -> None:
        if len({c[0].id for c in changes}) < len(changes):
            # one referral changed twice in the batch: each change sees the one before (the
            # events go in after every row lock is held: the chain's lock is taken last)
            for referral, _, expected in changes:
                self._save_in_order(conn, referral, expected)
            with conn.cursor() as cursor:
                self._insert_events(cursor, [e for c in changes for e in c[1]])
            self._write_rank_keys(conn, changes)
            return
        # Rows are written in id order, so two batches touching the same referrals lock them
        # in the same order and cannot deadlock each other.
        creates = sorted((c for c in changes if c[2] == 0), key=lambda c: c[0].id)
        updates = sorted((c for c in changes if c[2] > 0), key=lambda c: c[0].id)
        with conn.cursor() as cursor:
            if creates:
                self._insert(cursor, [c[0] for c in creates])
            if updates:
                cursor.executemany(
                    self._sql(
                        "UPDATE {s}.referrals SET version = %s, status = %s, is_open = %s, "
                        "priority = %s, priority_rank = %s, due_sort = %s, received_sort = %s, "
                        "specialty = %s, owner = %s, patient_id = %s, source_id = %s, "
                        "updated_at = %s, snapshot = %s WHERE id = %s AND version = %s "
                        "RETURNING id"
                    ),
                    [(*_row(r, self._codec)[1:], r.id, expected) for r, _, expected in updates],
                    returning=True,
                )
                done = set()
                while True:
                    for row in cursor.fetchall():
                        done.add(row[0])
                    if not cursor.nextset():
                        break
                for referral, _, expected in changes:
                    if expected > 0 and referral.id not in done:
                        raise ConcurrencyError(
                            referral.id, expected, self._version(cursor, referral.id)
                        )
            self._insert_events(cursor, [e for c in changes for e in c[1]])
        self._write_rank_keys(conn, changes, known)

    def _save_in_order(
        self, conn: psycopg.Connection[Any], referral: Referral, expected: int
    ) -> None:
        with conn.cursor() as cursor:
            if expected == 0:
                self._insert(cursor, [referral])
            else:
                cursor.execute(
                    self._sql(
                        "UPDATE {s}.referrals SET version = %s, status = %s, is_open = %s, "
                        "priority = %s, priority_rank = %s, due_sort = %s, received_sort = %s, "
                        "specialty = %s, owner = %s, patient_id = %s, source_id = %s, "
                        "updated_at = %s, snapshot = %s WHERE id = %s AND version = %s"
                    ),
                    [*_row(referral, self._codec)[1:], referral.id, expected],
                )
                if cursor.rowcount != 1:
                    raise ConcurrencyError(
                        referral.id, expected, self._version(cursor, referral.id)
                    )

    def _insert(self, cursor: psycopg.Cursor[Any], referrals: Sequence[Referral]) -> None:
        """Insert new referrals; one that exists already is a conflict (expected version 0).

        Looking first gives the same error as the other adapters; a referral created
        concurrently between the look and the insert violates ``referrals_pkey`` instead,
        which :meth:`_clash` turns into the same error.
        """
        cursor.execute(
            self._sql("SELECT id, version FROM {s}.referrals WHERE id = ANY(%s)"),
            [[r.id for r in referrals]],
        )
        found = dict(cursor.fetchall())
        for referral in referrals:
            if referral.id in found:
                raise ConcurrencyError(referral.id, 0, found[referral.id])
        self._copy(
            cursor, f"{{s}}.referrals ({_COLUMNS})", [_row(r, self._codec) for r in referrals]
        )

    def _insert_events(self, cursor: psycopg.Cursor[Any], events: Sequence[ReferralEvent]) -> None:
        """Insert ``events`` chained: the chain's lock is taken here, late in the transaction
        (held to its end: one writer at a time extends the chain, as for the access log)."""
        codec, sizes = self._codec, change_sizes(events)
        rows = [
            (
                e.referral_id,
                e.version,
                e.index,
                e.at,
                e.actor,
                e.type,
                Sealed(codec.payload_text(e, sizes[e.referral_id, e.version])),
            )
            for e in events
        ]
        if not rows:
            return
        if not self._chained(cursor.connection):
            self._copy(
                cursor,
                f"{{s}}.events ({_EVENT_COLUMNS})",
                rows,
            )
            return
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_EVENT_CHAIN_LOCK])
        head = cursor.execute(
            self._sql(
                "SELECT seq, chain FROM {s}.events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
            )
        ).fetchone()
        self._copy(
            cursor,
            f"{{s}}.events ({_EVENT_COLUMNS}, seq, sealed, chain)",
            linked([0, GENESIS] if head is None else list(head), rows),
        )

    def _chained(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the schema chains events (read until it does, as :meth:`_ranked`)."""
        if not getattr(self, "_chains_events", False):
            row = conn.execute(
                self._sql("SELECT coalesce(max(version), 0) FROM {s}.schema_version")
            ).fetchone()
            self._chains_events = bool(row and int(row[0]) >= CHAIN_VERSION)
        return self._chains_events

    def _fill_event_chain(self, conn: psycopg.Connection[Any]) -> None:
        """Chain the events already stored (the version 8 migration), in time order (then
        referral id, version, index: the order they were written in, as far as the rows
        tell), streamed with a server-side cursor."""
        seq, last = 0, GENESIS
        update = self._sql(
            "UPDATE {s}.events SET seq = %s, sealed = %s, chain = %s "
            "WHERE referral_id = %s AND version = %s AND idx = %s"
        )
        with (
            conn.cursor(name="referralkit_fill_chain", row_factory=_seal_last) as reading,
            conn.cursor() as writing,
        ):
            reading.itersize = _HISTORY_ROWS
            reading.execute(
                self._sql(
                    "SELECT referral_id, version, idx, at, actor, type, payload::text "
                    "FROM {s}.events ORDER BY at, referral_id, version, idx"
                )
            )
            while rows := reading.fetchmany(_HISTORY_ROWS):
                links = chain_rows(seq, last, rows)
                writing.executemany(
                    update,
                    [(*link, *row[:3]) for row, link in zip(rows, links, strict=True)],
                )
                seq, _, last = links[-1]
        conn.execute(self._sql("CREATE UNIQUE INDEX events_seq ON {s}.events (seq)"))

    def _copy(
        self, cursor: psycopg.Cursor[Any], target: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` with ``COPY``: one stream for a whole batch instead of a statement
        per row. Constraints hold as for ``INSERT``: a clash raises the same
        UniqueViolation, naming the constraint."""
        with cursor.copy(self._sql(f"COPY {target} FROM STDIN")) as copy:
            for row in rows:
                copy.write_row(row)

    def _version(self, cursor: psycopg.Cursor[Any], referral_id: str) -> int | None:
        cursor.execute(self._sql("SELECT version FROM {s}.referrals WHERE id = %s"), [referral_id])
        row = cursor.fetchone()
        return int(row[0]) if row else None

    def _clash(self, constraint: str, referrals: Sequence[Referral]) -> ReferralKitError:
        """The library error for a violated unique constraint, by the constraint's name."""
        if constraint == "referrals_pkey":
            for referral in referrals:
                rows = self._fetch(
                    "saving referrals",
                    "SELECT version FROM {s}.referrals WHERE id = %s",
                    [referral.id],
                )
                if rows:
                    return ConcurrencyError(referral.id, 0, int(rows[0][0]))
        elif constraint == "referrals_source_id_key":
            for referral in referrals:
                source = referral.source_id
                if source is not None and self.find_source(source) not in (None, referral.id):
                    return DuplicateReferralError(source)
        return StorageError(
            f"PostgreSQL refused the change (UniqueViolation 23505 on {constraint or 'a key'})",
            driver_error="UniqueViolation",
            sqlstate="23505",
        )

    @boundary
    def events(self, referral_id: str) -> list[ReferralEvent]:
        check_id(referral_id)
        # the snapshot's version first: the history must reach it (a lost event is seen)
        versions = self._fetch(
            "loading events", "SELECT version FROM {s}.referrals WHERE id = %s", [referral_id]
        )
        rows = self._fetch(
            "loading events",
            f"SELECT {_EVENT_COLUMNS} FROM {{s}}.events WHERE referral_id = %s "  # noqa: S608 - fixed column names
            "ORDER BY version, idx",
            [referral_id],
            sealed=True,
        )
        if not rows and not versions:
            raise NotFoundError(referral_id)
        return self._codec.history(rows, referral_id, int(versions[0][0]) if versions else None)

    def _where(self, query: Query) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.open_only:
            clauses.append("is_open")
        if query.status is not None:
            values = sorted(s.value for s in query.status)
            if len(values) == 1:
                # "= ANY" of one value is not an equality to the planner: it would sort what
                # the status index already holds in worklist order
                clauses.append("status = %s")
                params.append(values[0])
            else:
                clauses.append("status = ANY(%s)")
                params.append(values)
        for column, value in (
            ("priority", query.priority.value if query.priority else None),
            ("specialty", query.specialty),
            ("owner", query.owner),
            ("patient_id", query.patient_id),
        ):
            if value is not None and column == "patient_id":
                keys = self._codec.patient_keys(value)
                clauses.append("patient_id = %s" if len(keys) == 1 else "patient_id IN (%s, %s)")
                params.extend(Sealed(key) for key in keys)
            elif value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if query.updated_since is not None:
            clauses.append("updated_at >= %s")
            params.append(query.updated_since)
        if query.due_before is not None:
            clauses.append("due_sort < %s")
            params.append(query.due_before)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    @boundary
    def query(self, query: Query = Query()) -> list[Referral]:
        where, params = self._where(check_query(query))
        if query.order == "updated":
            order = " ORDER BY updated_at DESC, id DESC"
        else:
            order = f" ORDER BY {_WORKLIST}"
        paging = ""
        if query.limit is not None or query.offset:
            paging = " LIMIT %s OFFSET %s"
            params += [query.limit, query.offset]
        rows = self._fetch(
            "querying referrals",
            f"SELECT id, snapshot FROM {{s}}.referrals{where}{order}{paging}",  # noqa: S608 - fixed column names
            params,
            sealed=True,
        )
        return [self._codec.referral(snapshot, referral_id) for referral_id, snapshot in rows]

    @boundary
    def count(self, query: Query = Query()) -> int:
        where, params = self._where(check_query(query))
        rows = self._fetch(
            "counting referrals",
            f"SELECT count(*) FROM {{s}}.referrals{where}",  # noqa: S608 - fixed column names
            params,
        )
        return int(rows[0][0])

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
        :meth:`ReferralStore.claim`), with ``FOR UPDATE SKIP LOCKED``: concurrent claims
        pass over each other's rows instead of waiting for them or taking them twice."""
        now = check_claim(owner, now, lease, count)
        where, params = self._where(_claim_query(query))
        until = lease_end(now, lease)
        if count == 0:
            return []
        pick = self._sql(
            f"SELECT id FROM {{s}}.referrals{where} "  # noqa: S608 - fixed column names
            f"AND (lease_until IS NULL OR lease_until <= %s) "
            f"ORDER BY {_WORKLIST} LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        take = self._sql(
            "UPDATE {s}.referrals SET lease_owner = %s, lease_until = %s WHERE id = ANY(%s)"
        )

        def work(conn: psycopg.Connection[Any]) -> list[str]:
            taken = [str(r[0]) for r in conn.execute(pick, [*params, now, count]).fetchall()]
            if taken:
                conn.execute(take, [owner, until, taken])
            return taken

        return self._transact("claiming referrals", work)

    @boundary
    def renew(
        self, owner: str, ids: Iterable[str], *, now: dt.datetime, lease: dt.timedelta
    ) -> list[str]:
        now = check_claim(owner, now, lease)
        wanted = _ids(ids)
        until = lease_end(now, lease)
        renew = self._sql(
            "UPDATE {s}.referrals SET lease_until = %s "
            "WHERE id = ANY(%s) AND lease_owner = %s AND lease_until > %s RETURNING id"
        )

        def work(conn: psycopg.Connection[Any]) -> set[str]:
            return {r[0] for r in conn.execute(renew, [until, wanted, owner, now]).fetchall()}

        done = self._transact("renewing leases", work) if wanted else set()
        return [i for i in wanted if i in done]

    @boundary
    def release(self, owner: str, ids: Iterable[str]) -> list[str]:
        check_owner(owner)
        wanted = _ids(ids)
        release = self._sql(
            "UPDATE {s}.referrals SET lease_owner = NULL, lease_until = NULL "
            "WHERE id = ANY(%s) AND lease_owner = %s RETURNING id"
        )

        def work(conn: psycopg.Connection[Any]) -> set[str]:
            return {r[0] for r in conn.execute(release, [wanted, owner]).fetchall()}

        done = self._transact("releasing leases", work) if wanted else set()
        return [i for i in wanted if i in done]

    # ------------------------------------------------------------------ whole histories

    @boundary_iter
    def export(self) -> Iterator[History]:
        """Every referral with its history, in id order, from one snapshot of the database
        (a ``REPEATABLE READ READ ONLY`` transaction held while the iterator runs)."""
        return self._export(None, latest=False)

    @boundary_iter
    def export_selected(
        self, event_types: Iterable[str], *, latest: bool = False
    ) -> Iterator[History]:
        """:meth:`export` with only the events of ``event_types``: the other event rows are
        never read (see :meth:`ReferralStore.export_selected`)."""
        return self._export(check_event_types(event_types), latest=latest)

    @boundary_iter
    def _audit_histories(self, event_types: Iterable[str]) -> Iterator[AuditHistory]:
        """:meth:`export_selected` with ``latest``, each snapshot's audited parts extracted
        by PostgreSQL (``json_to_record``; its seal still verified here), and its last
        event of ``event_types`` found by the events' primary key, in one query a page; an
        encrypted store's PHI cannot be read in SQL, so its snapshots are read whole."""
        types = check_event_types(event_types)
        if self._codec.encrypted:
            yield from self.export_selected(types, latest=True)
            return
        sql = self._sql(_AUDIT_PAGE)
        codec = self._codec
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor = conn.cursor(row_factory=_seal_parts)
                last = ""
                while True:
                    rows = cursor.execute(sql, [list(types), last, _EXPORT_BATCH]).fetchall()
                    if not rows:
                        return
                    for referral_id, snapshot, parts, event in rows:
                        referral = codec.audited(snapshot, referral_id, parts.reveal())
                        yield referral, codec.audit_events(event)
                    last = rows[-1][0]
        except PoolTimeout:
            raise StorageError(
                "no PostgreSQL connection free while exporting", driver_error="PoolTimeout"
            ) from None
        except psycopg.Error as error:
            raise _driver_error(error, "exporting") from None

    @boundary_iter
    def export_referrals(self) -> Iterator[Referral]:
        """Every referral's snapshot, in id order, from one snapshot of the database as
        :meth:`export` reads them: no event row is read (see
        :meth:`ReferralStore.export_referrals`)."""
        for referral, _ in self._export(None, latest=False, events=False):
            yield referral

    def _export(
        self, types: Sequence[str] | None, *, latest: bool, events: bool = True
    ) -> Iterator[History]:
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield from self._paged_histories(conn, types=types, latest=latest, events=events)
        except PoolTimeout:
            raise StorageError(
                "no PostgreSQL connection free while exporting", driver_error="PoolTimeout"
            ) from None
        except psycopg.Error as error:
            raise _driver_error(error, "exporting") from None

    @boundary_iter
    def event_histories(self) -> Iterator[Sequence[ReferralEvent]]:
        """Every referral's events, in referral id order, from one ordered pass over the
        events table through a server-side cursor (rows arrive ``_HISTORY_ROWS`` at a time)
        in a ``REPEATABLE READ READ ONLY`` transaction: no snapshot is read, no query per
        referral, events built from the row without the model's validators (see
        :meth:`ReferralStore.event_histories`)."""
        sql = self._sql(
            f"SELECT {_EVENT_COLUMNS} FROM {{s}}.events ORDER BY referral_id, version, idx"  # noqa: S608 - fixed column names
        )
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                with conn.cursor("referralkit_histories", row_factory=_seal_last) as cursor:
                    cursor.itersize = _HISTORY_ROWS
                    cursor.execute(sql)
                    yield from self._codec.histories(cursor)
        except PoolTimeout:
            raise StorageError(
                "no PostgreSQL connection free while reading histories", driver_error="PoolTimeout"
            ) from None
        except psycopg.Error as error:
            raise _driver_error(error, "reading histories") from None

    @boundary
    def restore_many(self, histories: Sequence[History]) -> None:
        """Store whole histories directly, in one transaction (see
        :meth:`ReferralStore.restore_many`)."""
        check_histories(histories)
        if not histories:
            return

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cursor:
                self._insert(cursor, sorted((h[0] for h in histories), key=lambda r: r.id))
                self._insert_events(cursor, [e for h in histories for e in h[1]])
            if self._ranked(conn):
                self._copy_rank_keys(conn, histories)

        self._transact(
            "restoring referrals",
            work,
            clash=lambda constraint: self._clash(constraint, [h[0] for h in histories]),
        )

    # ------------------------------------------------------------------ worklist rank keys

    def _ranked(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the schema has the rank keys' table (read until it has: a store opened
        without migrating may be older; schemas only move forward)."""
        if not getattr(self, "_has_rank_keys", False):
            row = conn.execute(
                self._sql("SELECT coalesce(max(version), 0) FROM {s}.schema_version")
            ).fetchone()
            self._has_rank_keys = bool(row and int(row[0]) >= _RANK_KEYS_VERSION)
        return self._has_rank_keys

    def _write_rank_keys(
        self,
        conn: psycopg.Connection[Any],
        changes: Sequence[Change],
        known: dict[str, list[ReferralEvent]] | None = None,
    ) -> None:
        """Replace the rank keys of the referrals ``changes`` leave behind: from the change's
        events when they are the whole history (a new referral), from ``known`` (a
        referral's events of :data:`~referralkit.clocks.TIMELINE_EVENT_TYPES` and the
        change's: :meth:`_save_swept`), else from the stored ones."""
        if not self._ranked(conn):
            return
        final = {referral.id: referral for referral, _, _ in changes}
        whole = {
            referral.id: events
            for referral, events, expected in changes
            if expected == 0 and sum(1 for c in changes if c[0].id == referral.id) == 1
        }
        with conn.cursor() as cursor:
            stale = sorted(i for i in final if i not in whole)
            whole.update(known or {})
            read = [i for i in stale if i not in whole]
            if stale:
                cursor.execute(
                    self._sql("DELETE FROM {s}.worklist_keys WHERE referral_id = ANY(%s)"),
                    [stale],
                )
            wanted = [i for i in read if not final[i].status.is_terminal]
            if wanted:
                cursor.row_factory = _seal_last
                cursor.execute(
                    self._sql(
                        f"SELECT {_EVENT_COLUMNS} FROM {{s}}.events "  # noqa: S608 - fixed column names
                        "WHERE referral_id = ANY(%s) ORDER BY referral_id, version, idx"
                    ),
                    [wanted],
                )
                for referral_id, group in itertools.groupby(cursor.fetchall(), key=lambda e: e[0]):
                    # verified (and decrypted): the rank keys are computed from the history
                    whole[referral_id] = self._codec.history(
                        group, referral_id, final[referral_id].version
                    )
            self._copy(
                cursor,
                "{s}.worklist_keys (referral_id, bucket, sort_key)",
                [
                    (referral_id, e.bucket, e.sort_key)
                    for referral_id, events in whole.items()
                    for e in rank_entries(final[referral_id], events)
                ],
            )

    def _copy_rank_keys(self, conn: psycopg.Connection[Any], histories: Sequence[History]) -> None:
        with conn.cursor() as cursor:
            self._copy(
                cursor,
                "{s}.worklist_keys (referral_id, bucket, sort_key)",
                [
                    (referral.id, e.bucket, e.sort_key)
                    for referral, events in histories
                    for e in rank_entries(referral, events)
                ],
            )

    def _fill_rank_keys(self, conn: psycopg.Connection[Any]) -> None:
        """Compute the rank keys of every open referral already stored (the version 4
        migration), from the paged history reader :meth:`export` uses, a page at a time."""
        histories = self._paged_histories(conn, open_only=True)
        while page := list(itertools.islice(histories, _EXPORT_BATCH)):
            self._copy_rank_keys(conn, page)

    def _paged_histories(
        self,
        conn: psycopg.Connection[Any],
        *,
        open_only: bool = False,
        types: Sequence[str] | None = None,
        latest: bool = False,
        events: bool = True,
    ) -> Iterator[History]:
        """The stored referrals with their histories, in id order, read ``_EXPORT_BATCH``
        referrals at a time: keyset paging on the id, each page's events in one query, every
        record verified (and decrypted) as every other read of the records. ``open_only``
        reads only the open referrals (``is_open``) and their events. Each page is fetched
        whole before the first of it is yielded, so the caller may write on ``conn``
        meanwhile (the rank-key migration does). With ``types``, only the events of those
        types (each verified, the history not checked whole; :meth:`export_selected`), with
        ``latest`` only the last of them; without ``events``, no event row is read (each
        history is empty: :meth:`export_referrals`)."""
        selection = "" if types is None else " AND type = ANY(%s)"
        extra: list[Any] = [] if types is None else [list(types)]
        if open_only:
            referrals = self._sql(
                "SELECT id, snapshot FROM {s}.referrals WHERE id > %s AND is_open "
                "ORDER BY id LIMIT %s"
            )
            by_id = self._sql(
                f"SELECT {_EVENT_COLUMNS} FROM {{s}}.events WHERE referral_id = ANY(%s)"  # noqa: S608 - fixed column names and placeholders
                f"{selection} ORDER BY referral_id, version, idx"
            )
        else:
            referrals = self._sql(
                "SELECT id, snapshot FROM {s}.referrals WHERE id > %s ORDER BY id LIMIT %s"
            )
            by_id = self._sql(
                f"SELECT {_EVENT_COLUMNS} FROM {{s}}.events WHERE referral_id BETWEEN %s AND %s"  # noqa: S608 - fixed column names and placeholders
                f"{selection} ORDER BY referral_id, version, idx"
            )
        last = ""
        cursor = conn.cursor(row_factory=_seal_last)
        while True:
            rows = cursor.execute(referrals, [last, _EXPORT_BATCH]).fetchall()
            if not rows:
                return
            # the open referrals of a page are not a range of ids: their events by id
            bounds = [[r[0] for r in rows]] if open_only else [rows[0][0], rows[-1][0]]
            found = cursor.execute(by_id, [*bounds, *extra]).fetchall() if events else []
            grouped = {k: list(g) for k, g in itertools.groupby(found, key=lambda e: e[0])}
            codec = self._codec
            for referral_id, snapshot in rows:
                referral = codec.referral(snapshot, referral_id)
                if not events:
                    yield referral, []
                    continue
                if types is None:
                    history = codec.history(
                        grouped.get(referral_id, ()), referral_id, referral.version
                    )
                else:
                    chosen = grouped.get(referral_id, [])
                    history = codec.selected(chosen[-1:] if latest else chosen)
                yield referral, history
            last = rows[-1][0]

    @property
    def keeps_rank_keys(self) -> bool:  # type: ignore[override]
        """True from schema version 4 on (a store opened without migrating may be older).
        Once true it is remembered: a schema is only ever moved forward."""
        if not getattr(self, "_has_rank_keys", False):
            self._has_rank_keys = self.schema_version() >= _RANK_KEYS_VERSION
        return self._has_rank_keys

    @boundary
    def rank_buckets(self) -> list[int]:
        """Read off ``worklist_keys_rank`` by skipping from one bucket to the next."""
        rows = self._fetch(
            "reading the worklist keys",
            "WITH RECURSIVE b(x) AS (SELECT min(bucket) FROM {s}.worklist_keys UNION ALL "
            "SELECT (SELECT min(bucket) FROM {s}.worklist_keys WHERE bucket > b.x) FROM b "
            "WHERE b.x IS NOT NULL) SELECT x FROM b WHERE x IS NOT NULL",
        )
        return [int(row[0]) for row in rows]

    @boundary
    def rank_heads(self, limit: int) -> dict[int, list[tuple[float, str]]]:
        """One read: the rank buckets off ``worklist_keys_rank`` (skipping from one to the
        next), and the first ``limit`` keys of each through a lateral join on the same
        index."""
        check_rank_page(0, None, limit)
        rows = self._fetch(
            "reading the worklist keys",
            "WITH RECURSIVE b(x) AS (SELECT min(bucket) FROM {s}.worklist_keys WHERE bucket >= 0 "
            "UNION ALL "
            "SELECT (SELECT min(bucket) FROM {s}.worklist_keys WHERE bucket > b.x) FROM b "
            "WHERE b.x IS NOT NULL) SELECT b.x, k.sort_key, k.referral_id FROM b CROSS JOIN "
            "LATERAL (SELECT sort_key, referral_id FROM {s}.worklist_keys WHERE bucket = b.x "
            "ORDER BY sort_key, referral_id LIMIT %s) k WHERE b.x IS NOT NULL "
            "ORDER BY b.x, k.sort_key, k.referral_id",
            [limit],
        )
        heads: dict[int, list[tuple[float, str]]] = {}
        for bucket, key, referral_id in rows:
            heads.setdefault(int(bucket), []).append((float(key), str(referral_id)))
        return heads

    @boundary
    def rank_page(
        self, bucket: int, after: tuple[float, str] | None, limit: int
    ) -> list[tuple[float, str]]:
        check_rank_page(bucket, after, limit)
        if after is None:
            rows = self._fetch(
                "reading the worklist keys",
                "SELECT sort_key, referral_id FROM {s}.worklist_keys WHERE bucket = %s "
                "ORDER BY sort_key, referral_id LIMIT %s",
                [bucket, limit],
            )
        else:
            rows = self._fetch(
                "reading the worklist keys",
                "SELECT sort_key, referral_id FROM {s}.worklist_keys WHERE bucket = %s "
                "AND (sort_key, referral_id) > (%s, %s) ORDER BY sort_key, referral_id "
                "LIMIT %s",
                [bucket, float(after[0]), after[1], limit],
            )
        return [(float(key), str(referral_id)) for key, referral_id in rows]

    # ------------------------------------------------------------------ worklist digests

    @property
    def keeps_worklist_digests(self) -> bool:  # type: ignore[override]
        """True from schema version 9 on (a store opened without migrating may be older).
        Once true it is remembered: a schema is only ever moved forward."""
        if not getattr(self, "_has_digests", False):
            self._has_digests = self.schema_version() >= DIGESTS_VERSION
        return self._has_digests

    @boundary
    def worklist_digests(self, ids: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        """One read: each referral's version beside the digest kept for it."""
        wanted = _ids(ids)
        if not wanted:
            return {}
        if not self.keeps_worklist_digests:
            return super().worklist_digests(wanted)
        rows = self._fetch(
            "reading the worklist digests",
            "SELECT r.id, r.version, d.digest FROM {s}.referrals r "
            "LEFT JOIN {s}.worklist_digests d ON d.referral_id = r.id AND d.version = r.version "
            "WHERE r.id = ANY(%s)",
            [wanted],
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

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO {s}.worklist_digests AS d (referral_id, version, digest) "
                        "VALUES (%s, %s, %s) ON CONFLICT (referral_id) DO UPDATE SET "
                        "version = excluded.version, digest = excluded.digest "
                        "WHERE excluded.version >= d.version"
                    ),
                    rows,
                )

        self._transact("writing the worklist digests", work)

    @boundary
    def latest_update(self) -> dt.datetime | None:
        found = self._fetch(
            "reading the latest change", "SELECT max(updated_at) FROM {s}.referrals"
        )
        value = found[0][0]
        return None if value is None else value.astimezone(dt.UTC)

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
        # one connection (one check) for both reads; the records as their stored text (a
        # json column keeps it as written), which the codec verifies and parses once, where
        # the driver would parse it and the codec write it back out to verify it
        selection = "" if types is None else " AND type = ANY(%s)"
        rows, found = self._fetch_all(
            "loading histories",
            [
                (
                    "SELECT id, snapshot::text FROM {s}.referrals WHERE id = ANY(%s)",
                    [wanted],
                    True,
                ),
                (
                    f"SELECT {_EVENT_COLUMNS_TEXT} FROM {{s}}.events WHERE referral_id = ANY(%s)"  # noqa: S608 - fixed column names and placeholders
                    f"{selection} ORDER BY referral_id, version, idx",
                    [wanted] if types is None else [wanted, list(types)],
                    True,
                ),
            ],
        )
        snapshots = {rid: self._codec.referral(snapshot, rid) for rid, snapshot in rows}
        grouped = {k: list(g) for k, g in itertools.groupby(found, key=lambda e: e[0])}
        histories: list[History] = []
        for referral_id in wanted:
            referral = snapshots.get(referral_id)
            if referral is not None:
                rows_of = grouped.get(referral_id, ())
                events = (
                    self._codec.history(rows_of, referral_id, referral.version)
                    if types is None
                    else self._codec.selected(rows_of)
                )
                histories.append((referral, [e for e in events if e.version <= referral.version]))
        return histories

    @boundary
    def _sweep_reads(
        self, ids: Iterable[str], event_types: Iterable[str]
    ) -> Iterable[tuple[str, int, list[ReferralEvent]]]:
        """One connection, two reads: the open referrals' versions (their column), then
        their events of ``event_types`` (verified; those newer than the version read left
        out), decoded a referral at a time as the caller iterates
        (:meth:`RecordCodec.selected_lazily`). No snapshot is read."""
        wanted = _ids(ids)
        types = check_event_types(event_types)
        if not wanted:
            return []
        rows, found = self._fetch_all(
            "reading the sweep's referrals",
            [
                (
                    "SELECT id, version FROM {s}.referrals WHERE id = ANY(%s) AND is_open",
                    [wanted],
                    False,
                ),
                (
                    f"SELECT {_EVENT_COLUMNS_TEXT} FROM {{s}}.events WHERE referral_id = ANY(%s)"  # noqa: S608 - fixed column names and placeholders
                    " AND type = ANY(%s) ORDER BY referral_id, version, idx",
                    [wanted, list(types)],
                    True,
                ),
            ],
        )
        versions = {str(referral_id): int(version) for referral_id, version in rows}
        return self._codec.selected_lazily(wanted, versions, list(found))

    @boundary
    def _load_many(self, ids: Iterable[str]) -> list[Referral]:
        wanted = _ids(ids)
        if not wanted:
            return []
        rows = self._fetch(
            "loading referrals",
            "SELECT id, snapshot::text FROM {s}.referrals WHERE id = ANY(%s)",
            [wanted],
            sealed=True,
        )
        return [self._codec.referral(snapshot, referral_id) for referral_id, snapshot in rows]

    @boundary
    def versions(self, ids: Iterable[str]) -> dict[str, int]:
        wanted = _ids(ids)
        if not wanted:
            return {}
        rows = self._fetch(
            "reading versions",
            "SELECT id, version FROM {s}.referrals WHERE id = ANY(%s)",
            [wanted],
        )
        return {str(referral_id): int(version) for referral_id, version in rows}

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

        def work(conn: psycopg.Connection[Any]) -> bool:
            cursor = conn.execute(
                self._sql(
                    "INSERT INTO {s}.rule_versions (digest, kind, name, document, recorded_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (digest) DO NOTHING"
                ),
                [
                    version.digest,
                    version.kind,
                    version.name,
                    version.document,
                    version.recorded_at,
                ],
            )
            return cursor.rowcount == 1

        return self._transact("saving a rule version", work)

    @boundary
    def find_rule_version(self, digest: str) -> RuleVersion | None:
        self._keeps_versions()
        rows = self._fetch(
            "reading a rule version",
            "SELECT digest, kind, name, document, recorded_at FROM {s}.rule_versions "
            "WHERE digest = %s",
            [check_digest(digest)],
        )
        if not rows:
            return None
        found, kind, name, document, recorded = rows[0]
        return RuleVersion(found, kind, name, document, recorded)

    @boundary
    def record_policy_use(self, kind: str, digest: str, at: dt.datetime) -> bool:
        kind, digest, at = check_policy_use(kind, digest, at)
        self._keeps_versions()

        def work(conn: psycopg.Connection[Any]) -> bool:
            # desks starting together note their policies one after another
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_USE_LOCK, kind])
            stored = conn.execute(
                self._sql("SELECT kind FROM {s}.rule_versions WHERE digest = %s"), [digest]
            ).fetchone()
            if stored is None or stored[0] != f"{kind}-policy":
                raise unknown_policy(kind)
            latest = conn.execute(
                self._sql(
                    "SELECT digest FROM {s}.policy_uses WHERE kind = %s ORDER BY seq DESC LIMIT 1"
                ),
                [kind],
            ).fetchone()
            if latest is not None and latest[0] == digest:
                return False
            conn.execute(
                self._sql("INSERT INTO {s}.policy_uses (kind, digest, at) VALUES (%s, %s, %s)"),
                [kind, digest, at],
            )
            return True

        return self._transact("noting a policy use", work)

    @boundary
    def policy_in_force(self, kind: str, at: dt.datetime) -> str | None:
        kind, _, at = check_policy_use(kind, None, at)
        self._keeps_versions()
        rows = self._fetch(
            "reading the policy in force",
            "SELECT digest FROM {s}.policy_uses WHERE kind = %s AND at <= %s "
            "ORDER BY at DESC, seq DESC LIMIT 1",
            [kind, at],
        )
        return str(rows[0][0]) if rows else None

    @boundary
    def rule_versions(self) -> list[RuleVersion]:
        self._keeps_versions()
        rows = self._fetch(
            "reading the rule versions",
            "SELECT digest, kind, name, document, recorded_at FROM {s}.rule_versions "
            'ORDER BY digest COLLATE "C"',
        )
        return [RuleVersion(*row) for row in rows]

    @boundary
    def policy_uses(self) -> list[tuple[str, str, dt.datetime]]:
        self._keeps_versions()
        rows = self._fetch(
            "reading the policy uses", "SELECT kind, digest, at FROM {s}.policy_uses ORDER BY seq"
        )
        return [(str(k), str(d), a.astimezone(dt.UTC)) for k, d, a in rows]

    # ------------------------------------------------------------------ the access log

    @boundary
    def append_access(self, records: Sequence[AccessRecord]) -> None:
        """Append ``records`` to the access log in one transaction, committed with
        ``synchronous_commit = off`` (as the SQLite store: a record survives the process, and
        is flushed with the next change; a server crash may lose the last ones)."""
        check_records(records)
        if not records:
            return

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SET LOCAL synchronous_commit TO OFF")
            self._append_access_in(conn, records)

        self._transact("recording access", work)

    def _append_access_in(
        self, conn: psycopg.Connection[Any], records: Sequence[AccessRecord]
    ) -> None:
        """Append ``records`` in the transaction open on ``conn``."""
        insert = self._sql(
            f"INSERT INTO {{s}}.access_log ({ROW_COLUMNS}) "  # noqa: S608 - fixed column names
            f"VALUES ({', '.join(['%s'] * 12)}) RETURNING seq"
        )
        last_chain = self._sql("SELECT chain FROM {s}.access_log ORDER BY seq DESC LIMIT 1")
        link = self._sql("INSERT INTO {s}.access_log_referrals (referral_id, seq) VALUES (%s, %s)")
        # one writer at a time extends the chain (held to the end of the transaction)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_ACCESS_CHAIN_LOCK])
        with conn.cursor() as cursor:
            found = cursor.execute(last_chain).fetchone()
            last = GENESIS if found is None else str(found[0])
            for record in records:
                # the reason as stored (encrypted with a key ring): what the chain hashes
                reason = self._codec.reason_text(record.actor, record.action, record.reason)
                fields = record_fields(record, at_text(record.at))
                fields[8] = reason
                last = chain_hash(last, fields)
                values = record_row(record, record.at, last)
                row = cursor.execute(insert, (*values[:8], reason, *values[9:])).fetchone()
                ids = sorted(set(record.referral_ids))
                if ids and row is not None:
                    cursor.executemany(link, [(i, row[0]) for i in ids])

    @boundary
    def load_recorded(
        self, referral_id: str, record: Callable[[Referral], AccessRecord]
    ) -> Referral:
        """The read and its access record in one transaction (committed as
        :meth:`append_access` commits): the record is in the log when the referral is
        returned, at the cost of one transaction instead of two."""
        check_id(referral_id)
        select = self._sql("SELECT snapshot FROM {s}.referrals WHERE id = %s")

        def work(conn: psycopg.Connection[Any]) -> Referral:
            conn.execute("SET LOCAL synchronous_commit TO OFF")
            with conn.cursor(row_factory=_seal_last) as cursor:
                rows = cursor.execute(select, [referral_id]).fetchall()
            if not rows:
                raise NotFoundError(referral_id)
            referral = self._codec.referral(rows[0][0], referral_id)
            made = record(referral)
            check_records([made])
            self._append_access_in(conn, [made])
            return referral

        return self._transact("reading a referral", work)

    @boundary
    def restore_access(self, rows: Sequence[tuple[Sequence[Any], str]], after: str) -> None:
        """Append records as another store kept them (see
        :meth:`ReferralStore.restore_access`), in one transaction."""
        insert = self._sql(
            f"INSERT INTO {{s}}.access_log ({ROW_COLUMNS}) "  # noqa: S608 - fixed column names
            f"VALUES ({', '.join(['%s'] * 12)}) RETURNING seq"
        )
        last_chain = self._sql("SELECT chain FROM {s}.access_log ORDER BY seq DESC LIMIT 1")
        link = self._sql("INSERT INTO {s}.access_log_referrals (referral_id, seq) VALUES (%s, %s)")

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_ACCESS_CHAIN_LOCK])
            with conn.cursor() as cursor:
                found = cursor.execute(last_chain).fetchone()
                if (GENESIS if found is None else str(found[0])) != after:
                    raise StorageError(RESTORE_CLASH)
                for fields, chain in rows:
                    at = dt.datetime.fromisoformat(fields[0]).replace(tzinfo=dt.UTC)
                    values = (at, *fields[1:10], bool(fields[10]), chain)
                    row = cursor.execute(insert, values).fetchone()
                    ids = sorted(set(json.loads(fields[6])))
                    if ids and row is not None:
                        cursor.executemany(link, [(i, row[0]) for i in ids])

        self._transact("restoring the access log", work)

    @boundary
    def access_records(self, query: AccessQuery = AccessQuery()) -> list[AccessRecord]:
        check_access_query(query)
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("actor", query.actor),
            ("organization", query.organization),
            ("grant_id", query.grant),
            ("outcome", None if query.outcome is None else query.outcome.value),
            ("flagged", query.flagged),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if query.since is not None:
            clauses.append("at >= %s")
            params.append(query.since)
        if query.until is not None:
            clauses.append("at < %s")
            params.append(query.until)
        if query.referral_ids is not None:
            clauses.append(
                "seq IN (SELECT seq FROM {s}.access_log_referrals WHERE referral_id = ANY(%s))"
            )
            params.append(sorted(query.referral_ids))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        sql = f"SELECT seq, {ROW_COLUMNS} FROM {{s}}.access_log{where} ORDER BY seq"  # noqa: S608 - built from fixed fragments
        if query.limit is not None:
            sql += " LIMIT %s"
            params.append(query.limit)
        rows = self._fetch("reading the access log", sql, params)
        return [
            record_from_row(self._codec.access_row(row), row[1].astimezone(dt.UTC)) for row in rows
        ]

    @boundary_iter
    def access_chain(self) -> Iterator[tuple[int, list[Any], str]]:
        """The access log's rows in ``seq`` order, streamed with a server-side cursor."""
        sql = self._sql(f"SELECT seq, {ROW_COLUMNS} FROM {{s}}.access_log ORDER BY seq")  # noqa: S608 - fixed column names
        try:
            with (
                self._connection() as conn,
                conn.transaction(),
                conn.cursor(name="referralkit_access_chain") as cursor,
            ):
                cursor.itersize = _HISTORY_ROWS
                cursor.execute(sql)
                for row in cursor:
                    fields = list(row[1:12])
                    fields[0] = at_text(fields[0])
                    fields[10] = int(fields[10])
                    yield row[0], fields, row[12]
        except psycopg.Error as error:
            raise _driver_error(error, "reading the access log") from None

    @boundary
    def event_head(self) -> tuple[int, str]:
        """The last event's ``seq`` and chain value (one index read)."""
        if self.schema_version() < CHAIN_VERSION:
            return 0, GENESIS
        rows = self._fetch(
            "reading the events' chain",
            "SELECT seq, chain FROM {s}.events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
            [],
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)

    @boundary_iter
    def event_chain(self) -> Iterator[tuple[int, list[Any], str, Sealed[str]]]:
        """The events in ``seq`` (append) order as their hash chain sees them, streamed with a
        server-side cursor (see :meth:`ReferralStore.event_chain`)."""
        if self.schema_version() < CHAIN_VERSION:
            return
        sql = self._sql(
            f"SELECT seq, {_EVENT_COLUMNS.replace('payload', 'payload::text')}, sealed, chain "  # noqa: S608 - fixed column names
            "FROM {s}.events ORDER BY seq NULLS FIRST"
        )
        try:
            with (
                self._connection() as conn,
                conn.transaction(),
                conn.cursor(name="referralkit_event_chain", row_factory=_chain_row) as cursor,
            ):
                cursor.itersize = _HISTORY_ROWS
                cursor.execute(sql)
                yield from cursor
        except psycopg.Error as error:
            raise _driver_error(error, "reading the events' chain") from None

    @boundary
    def set_sweep_due(self, items: Iterable[tuple[str, int, float]]) -> int:
        rows = [(check_id(i), version, float(due)) for i, version, due in items]
        if not rows:
            return 0

        def work(conn: psycopg.Connection[Any]) -> int:
            if not self._ranked(conn):
                return 0
            cursor = conn.execute(
                self._sql(
                    "UPDATE {s}.worklist_keys AS k SET sort_key = v.due "
                    "FROM unnest(%s::text[], %s::integer[], %s::double precision[]) "
                    "AS v (id, version, due), {s}.referrals AS r "
                    "WHERE k.referral_id = v.id AND k.bucket = -1 "
                    "AND r.id = v.id AND r.version = v.version"
                ),
                [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
            )
            return int(cursor.rowcount)

        return self._transact("recording the sweep", work)

    # ------------------------------------------------------------------ analytics cache

    @boundary_iter
    def referral_versions(self) -> Iterator[tuple[str, int]]:
        """Every referral's id and version, in id order (one pass over the primary key)."""
        yield from self._fetch(
            "reading versions", "SELECT id, version FROM {s}.referrals ORDER BY id"
        )

    @boundary
    def read_analytics_blocks(self, name: str) -> list[bytes] | None:
        """The analytics cache's blocks under ``name`` (see
        :meth:`ReferralStore.read_analytics_blocks`)."""
        rows = self._fetch(
            "reading the analytics cache",
            "SELECT data FROM {s}.analytics_blocks WHERE name = %s ORDER BY seq",
            [name],
        )
        return [bytes(row[0]) for row in rows]

    @boundary
    def write_analytics_blocks(
        self, name: str, blocks: Sequence[bytes], *, replace: bool = False
    ) -> bool:
        """Add (or with ``replace``, replace) the analytics cache's blocks under ``name``."""
        if not isinstance(name, str) or not all(isinstance(b, bytes) for b in blocks):
            raise ValidationError("blocks", "expected a name and a sequence of bytes")

        def work(conn: psycopg.Connection[Any]) -> None:
            table = self._sql("{s}.analytics_blocks")
            # one writer at a time per name: the next sequence number is read, then used
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table + name])
            if replace:
                conn.execute(self._sql("DELETE FROM {s}.analytics_blocks WHERE name = %s"), [name])
            row = conn.execute(
                self._sql("SELECT coalesce(max(seq), 0) FROM {s}.analytics_blocks WHERE name = %s"),
                [name],
            ).fetchone()
            last = int(row[0]) if row else 0
            with conn.cursor() as cursor:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO {s}.analytics_blocks (name, seq, data) VALUES (%s, %s, %s)"
                    ),
                    [(name, last + 1 + i, block) for i, block in enumerate(blocks)],
                )

        self._transact("writing the analytics cache", work)
        return True

    # ------------------------------------------------------------------ key rotation

    @property
    def keys(self) -> KeyProvider | None:
        """The key ring the store was opened with (``None``: unencrypted)."""
        cipher = self._codec.cipher
        return cipher.provider if cipher is not None else None

    def _rotate_batch(self, after: str, limit: int) -> tuple[str | None, int]:
        """Move the records of the next ``limit`` referrals after id ``after`` onto the
        primary key, in one transaction; ``(last id, records rewritten)``, the last id
        ``None`` at the end. The referral rows are locked (``FOR UPDATE``) from the read to
        the commit, so a concurrent change waits; the updates check the version read."""

        def work(conn: psycopg.Connection[Any]) -> tuple[str | None, int]:
            with conn.cursor() as cursor:
                rows = cursor.execute(
                    self._sql(
                        "SELECT id, version, snapshot::text FROM {s}.referrals WHERE id > %s "
                        "ORDER BY id LIMIT %s FOR UPDATE"
                    ),
                    [after, limit],
                ).fetchall()
                if not rows:
                    return None, 0
                events = cursor.execute(
                    self._sql(
                        "SELECT referral_id, version, idx, at, actor, type, payload::text "
                        "FROM {s}.events WHERE referral_id BETWEEN %s AND %s "
                        "ORDER BY referral_id, version, idx"
                    ),
                    [rows[0][0], rows[-1][0]],
                ).fetchall()
                snapshots, payloads = rewrites(self._codec, rows, events)
                for update in snapshots:
                    cursor.execute(
                        self._sql(
                            "UPDATE {s}.referrals SET snapshot = %s, patient_id = %s "
                            "WHERE id = %s AND version = %s"
                        ),
                        update,
                    )
                    if cursor.rowcount != 1:  # pragma: no cover - the row is locked
                        raise ConcurrencyError(update[2], update[3], None)
                if payloads:
                    cursor.executemany(
                        self._sql(
                            "UPDATE {s}.events SET payload = %s "
                            "WHERE referral_id = %s AND version = %s AND idx = %s"
                        ),
                        payloads,
                    )
                if self.keeps_worklist_digests:
                    # a digest is a cache sealed with the key primary when it was written:
                    # dropped, so nothing of the batch stays under a retired key
                    cursor.execute(
                        self._sql(
                            "DELETE FROM {s}.worklist_digests WHERE referral_id BETWEEN %s AND %s"
                        ),
                        [rows[0][0], rows[-1][0]],
                    )
                return str(rows[-1][0]), len(snapshots) + len(payloads)

        return self._transact("rotating keys", work)
