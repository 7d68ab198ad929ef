"""Storage adapters behind one interface, chosen by URL.

>>> store = open_store("memory://")
>>> store
MemoryStore(<0 referrals>)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ValidationError
from ._base import Query, ReferralStore, check_change, worklist_key
from .memory import MemoryStore

__all__ = ["MemoryStore", "Query", "ReferralStore", "check_change", "open_store", "worklist_key"]


def open_store(url: str) -> ReferralStore:
    """Open the store ``url`` names.

    - ``memory://``: a fresh :class:`MemoryStore`;
    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``:
      a :class:`~referralkit.storage.sqlite.SQLiteStore` (created and migrated if needed).
    """
    if not isinstance(url, str):
        raise ValidationError("url", "expected a store URL string")
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        path = url[len("sqlite://") :]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ValidationError("url", "a sqlite URL needs a path: sqlite:///file.db")
        return SQLiteStore(path)
    # the URL may carry a password: name only its scheme
    raise ValidationError("url", f"unsupported store scheme {scheme!r} (supported: memory, sqlite)")
