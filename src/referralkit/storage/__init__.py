"""Storage adapters behind one interface, chosen by URL.

>>> store = open_store("memory://")
>>> store
MemoryStore(<0 referrals>)

- :class:`MemoryStore` (``memory://``): the reference semantics, nothing persisted;
- :class:`~referralkit.storage.sqlite.SQLiteStore` (``sqlite:///path.db``): the embedded
  default, one file;
- :class:`~referralkit.storage.postgres.PostgresStore` (``postgresql://…``, the ``postgres``
  extra): many coordinators on many machines.

Every adapter passes the one contract suite, :mod:`referralkit.testing.contract`. Schemas move
forward with :func:`upgrade`; :func:`dump` and :func:`load_dump` move a whole store as JSON
lines.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..crypto import KeyProvider, load_keys
from ..errors import ValidationError
from ._base import (
    Change,
    History,
    Query,
    ReferralStore,
    check_change,
    check_changes,
    check_claim,
    check_histories,
    check_history,
    check_id,
    check_owner,
    check_query,
    resolve_id,
    worklist_key,
)
from ._dump import DUMP_FORMAT, DUMP_VERSION, dump, load_dump
from ._rotate import Rotation, rotate_keys
from ._versions import RuleVersion
from .memory import MemoryStore

__all__ = [
    "DUMP_FORMAT",
    "DUMP_VERSION",
    "Change",
    "History",
    "MemoryStore",
    "Query",
    "ReferralStore",
    "Rotation",
    "RuleVersion",
    "check_change",
    "check_changes",
    "check_claim",
    "check_histories",
    "check_history",
    "check_id",
    "check_owner",
    "check_query",
    "dump",
    "load_dump",
    "open_store",
    "resolve_id",
    "rotate_keys",
    "upgrade",
    "worklist_key",
]

_SCHEMES = "memory, sqlite, postgresql"
_POSTGRES_HINT = 'pip install "referralkit[postgres]" (in a checkout: pip install ".[postgres]")'


def open_store(
    url: str,
    *,
    create: bool = True,
    keys: KeyProvider | str | os.PathLike[str] | None = None,
) -> ReferralStore:
    """Open the store ``url`` names, creating or migrating its schema if needed.

    - ``memory://``: a fresh :class:`MemoryStore`;
    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``:
      a :class:`~referralkit.storage.sqlite.SQLiteStore` (a new file is created with mode
      0600: readable by its owner only);
    - ``postgresql://user@host:port/dbname?schema=NAME`` (or ``postgres://``): a
      :class:`~referralkit.storage.postgres.PostgresStore` with its tables in schema ``NAME``
      (default ``public``); a host other than this machine must use TLS and, by default,
      verify the server's certificate (``sslmode=verify-full``).

    With ``create=False`` the store must already exist, for code that only reads: a missing
    SQLite file, a file or PostgreSQL schema without referralkit's tables, raise a
    :class:`~referralkit.errors.StorageError` and nothing is created (``memory://``, always
    new, is a :class:`~referralkit.errors.ValidationError`).

    >>> open_store("sqlite:///no/such/file.db", create=False)
    Traceback (most recent call last):
    ...
    referralkit.errors.StorageError: no SQLite database at no/such/file.db

    With ``keys`` (a :class:`~referralkit.crypto.KeyProvider` such as a
    :class:`~referralkit.crypto.KeyRing`, or the path of a key ring file) the store encrypts
    every PHI field of what it writes, and reads what an older key of the ring wrote (see
    :mod:`referralkit.crypto` and :doc:`/howto-hipaa`). Without them, a record that was
    encrypted raises :class:`~referralkit.errors.EncryptionKeyError` when read. Every record
    is verified when read either way (a corrupt one is a
    :class:`~referralkit.errors.CorruptRecordError`).

    .. versionchanged:: 0.1
       ``create``.
    .. versionchanged:: 0.1
       ``keys``.
    """
    if not isinstance(create, bool):
        raise ValidationError("create", "expected True or False")
    return _open(url, migrate=True, create=create, keys=load_keys(keys))


def _open(
    url: str, *, migrate: bool, create: bool = True, keys: KeyProvider | None = None
) -> ReferralStore:
    if not isinstance(url, str):
        raise ValidationError("url", "expected a store URL string")
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        if not create:
            raise ValidationError(
                "url", "a memory:// store is always new: there is nothing to read"
            )
        return MemoryStore(keys=keys)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(_sqlite_path(url), migrate=migrate, create=create, keys=keys)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError:
            raise ValidationError(
                "url", f"PostgreSQL needs the postgres extra: {_POSTGRES_HINT}"
            ) from None
        return PostgresStore(url, migrate=migrate, create=create, keys=keys)
    # the URL may carry a password: name only its scheme
    raise ValidationError("url", f"unsupported store scheme {scheme!r} (supported: {_SCHEMES})")


def _sqlite_path(url: str) -> str:
    path = url[len("sqlite://") :]
    path = path[1:] if path.startswith("/") else path
    if not path:
        raise ValidationError("url", "a sqlite URL needs a path: sqlite:///file.db")
    return path


def upgrade(url: str) -> tuple[int, int]:
    """Bring the schema of the store ``url`` names up to date; ``(old, new)`` versions.

    What ``referralkit db upgrade URL`` runs. Safe to repeat (``(2, 2)`` the second time)
    and to run while applications use the database: the migrations of one upgrade run in
    one transaction. A schema newer than this referralkit is refused with a
    :class:`~referralkit.errors.StorageError`.
    """
    store = _open(url, migrate=False)
    try:
        if not isinstance(store, _Versioned):
            raise ValidationError("url", "a memory store has no schema to upgrade")
        return store.schema_version(), store.upgrade()
    finally:
        store.close()


@runtime_checkable
class _Versioned(Protocol):
    """A store with a versioned schema (the SQL adapters)."""

    def schema_version(self) -> int: ...

    def upgrade(self, target: int | None = None) -> int: ...
