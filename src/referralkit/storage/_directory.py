"""The provider directory's tables, created by the SQLite store's migration 3 (PostgreSQL's
has its own dialect) and by :meth:`referralkit.directory.SqlDirectory.ensure_schema`.

``IF NOT EXISTS`` throughout: a database may get them from either, in either order.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DIRECTORY_TABLES"]

DIRECTORY_TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS directory_entries (
        kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, id))""",
    """CREATE TABLE IF NOT EXISTS directory_specialties (
        kind TEXT NOT NULL, code TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (kind, code, id))""",
    """CREATE INDEX IF NOT EXISTS directory_specialties_entry
        ON directory_specialties (kind, id)""",
    """CREATE TABLE IF NOT EXISTS directory_networks (
        kind TEXT NOT NULL, network TEXT NOT NULL, id TEXT NOT NULL, source TEXT NOT NULL,
        PRIMARY KEY (kind, network, id, source))""",
    """CREATE INDEX IF NOT EXISTS directory_networks_source ON directory_networks (source)""",
)
