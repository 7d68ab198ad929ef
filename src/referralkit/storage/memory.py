"""The in-memory store: the reference semantics every adapter follows."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import ConcurrencyError, DuplicateReferralError, NotFoundError
from ..model import Referral, ReferralEvent
from ._base import Query, ReferralStore, check_change, worklist_key

__all__ = ["MemoryStore"]


class MemoryStore(ReferralStore):
    """Referrals and events in dictionaries, guarded by a lock. Nothing is persisted.

    Thread-safe; values are immutable, so readers share them without copying.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Referral] = {}
        self._events: dict[str, list[ReferralEvent]] = {}
        self._sources: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(<{len(self._snapshots)} referrals>)"

    def load(self, referral_id: str) -> Referral:
        try:
            return self._snapshots[referral_id]
        except KeyError:
            raise NotFoundError(referral_id) from None

    def find_source(self, source_id: str) -> str | None:
        return self._sources.get(source_id)

    def save(
        self, referral: Referral, events: Sequence[ReferralEvent], expected_version: int
    ) -> None:
        check_change(referral, events, expected_version)
        with self._lock:
            current = self._snapshots.get(referral.id)
            actual = current.version if current is not None else 0
            if actual != expected_version:
                raise ConcurrencyError(
                    referral.id, expected_version, actual if current is not None else None
                )
            source = referral.source_id
            if source is not None and self._sources.get(source, referral.id) != referral.id:
                raise DuplicateReferralError(source)
            self._snapshots[referral.id] = referral
            self._events.setdefault(referral.id, []).extend(events)
            if source is not None:
                self._sources[source] = referral.id

    def events(self, referral_id: str) -> list[ReferralEvent]:
        try:
            return list(self._events[referral_id])
        except KeyError:
            raise NotFoundError(referral_id) from None

    def query(self, query: Query = Query()) -> list[Referral]:
        with self._lock:
            found = [r for r in self._snapshots.values() if query.matches(r)]
        if query.order == "updated":
            found.sort(key=lambda r: (r.updated_at, r.id), reverse=True)
        else:
            found.sort(key=worklist_key)
        end = None if query.limit is None else query.offset + query.limit
        return found[query.offset : end]
