"""The in-memory store: the reference semantics every adapter follows."""

from __future__ import annotations

import datetime as dt
import heapq
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .._redaction import boundary, boundary_iter
from ..access import AccessQuery, AccessRecord, check_access_query, check_records
from ..crypto import KeyProvider
from ..errors import ConcurrencyError, DuplicateReferralError, NotFoundError
from ..model import Referral, ReferralEvent
from ..worklist import RankEntry, rank_entries
from ._base import (
    Change,
    History,
    Query,
    ReferralStore,
    _claim_query,
    _ids,
    check_changes,
    check_claim,
    check_histories,
    check_id,
    check_owner,
    check_prefix,
    check_query,
    lease_end,
    worklist_key,
)
from ._versions import (
    RuleVersion,
    check_digest,
    check_policy_use,
    check_rule_version,
    unknown_policy,
)

__all__ = ["MemoryStore"]


class MemoryStore(ReferralStore):
    """Referrals and events in dictionaries, guarded by a lock. Nothing is persisted.

    Thread-safe; values are immutable, so readers share them without copying. Writes are
    staged and applied only once the whole batch is accepted, so a refused change leaves
    nothing behind, as a rolled-back transaction would.
    """

    def __init__(self, *, keys: KeyProvider | None = None) -> None:
        # nothing is at rest here: the key ring is kept for what leaves the store (a dump)
        self.keys = keys
        self._lock = threading.Lock()
        self._snapshots: dict[str, Referral] = {}
        self._events: dict[str, list[ReferralEvent]] = {}
        self._sources: dict[str, str] = {}
        self._leases: dict[str, tuple[str, dt.datetime]] = {}
        self._rank: dict[str, tuple[RankEntry, ...]] = {}
        self._versions: dict[str, RuleVersion] = {}
        self._policy_uses: list[tuple[str, str, dt.datetime]] = []

    def __repr__(self) -> str:
        return f"MemoryStore(<{len(self._snapshots)} referrals>)"

    @boundary
    def load(self, referral_id: str) -> Referral:
        try:
            return self._snapshots[check_id(referral_id)]
        except KeyError:
            raise NotFoundError(referral_id) from None

    @boundary
    def ids_starting_with(self, prefix: str, *, limit: int | None = None) -> list[str]:
        check_prefix(prefix, limit)
        with self._lock:
            found = sorted(i for i in self._snapshots if i.startswith(prefix))
        return found if limit is None else found[:limit]

    @boundary
    def find_source(self, source_id: str) -> str | None:
        check_id(source_id, "source_id")
        with self._lock:
            return self._holder(source_id, {})

    def _holder(self, source_id: str, staged: dict[str, Referral]) -> str | None:
        """Which referral holds ``source_id``, counting the ``staged`` snapshots.

        The index may name a referral whose source id has since changed: that is no holder.
        """
        referral_id = self._sources.get(source_id)
        if referral_id is None:
            return None
        current = staged.get(referral_id) or self._snapshots.get(referral_id)
        return referral_id if current is not None and current.source_id == source_id else None

    @boundary
    def save_many(self, changes: Sequence[Change]) -> None:
        check_changes(changes)
        with self._lock:
            staged: dict[str, Referral] = {}
            appended: dict[str, list[ReferralEvent]] = {}
            for referral, events, expected in changes:
                current = staged.get(referral.id) or self._snapshots.get(referral.id)
                actual = current.version if current is not None else 0
                if actual != expected:
                    raise ConcurrencyError(
                        referral.id, expected, current.version if current is not None else None
                    )
                # (check_changes refused two referrals of the batch with one source id)
                source = referral.source_id
                if source is not None and self._holder(source, staged) not in (None, referral.id):
                    raise DuplicateReferralError(source)
                staged[referral.id] = referral
                appended.setdefault(referral.id, []).extend(events)
            self._apply(staged, appended)

    def _apply(self, staged: dict[str, Referral], appended: dict[str, list[ReferralEvent]]) -> None:
        for referral_id, referral in staged.items():
            self._snapshots[referral_id] = referral
            if referral.source_id is not None:
                self._sources[referral.source_id] = referral_id
        for referral_id, events in appended.items():
            self._events.setdefault(referral_id, []).extend(events)
        for referral_id, referral in staged.items():
            self._rank[referral_id] = rank_entries(referral, self._events[referral_id])

    @boundary
    def events(self, referral_id: str) -> list[ReferralEvent]:
        try:
            return list(self._events[check_id(referral_id)])
        except KeyError:
            raise NotFoundError(referral_id) from None

    @boundary
    def query(self, query: Query = Query()) -> list[Referral]:
        check_query(query)
        with self._lock:
            found = [r for r in self._snapshots.values() if query.matches(r)]
        if query.order == "updated":
            found.sort(key=lambda r: (r.updated_at, r.id), reverse=True)
        else:
            found.sort(key=worklist_key)
        end = None if query.limit is None else query.offset + query.limit
        return found[query.offset : end]

    # ------------------------------------------------------------------ claims

    def _live(self, referral_id: str, now: dt.datetime) -> bool:
        lease = self._leases.get(referral_id)
        return lease is not None and lease[1] > now

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
        now = check_claim(owner, now, lease, count)
        wanted = _claim_query(query)
        with self._lock:
            free = (
                r
                for r in self._snapshots.values()
                if wanted.matches(r) and not self._live(r.id, now)
            )
            until = lease_end(now, lease)
            taken = [r.id for r in heapq.nsmallest(count, free, key=worklist_key)]
            for referral_id in taken:
                self._leases[referral_id] = (owner, until)
        return taken

    @boundary
    def renew(
        self, owner: str, ids: Iterable[str], *, now: dt.datetime, lease: dt.timedelta
    ) -> list[str]:
        now = check_claim(owner, now, lease)
        until = lease_end(now, lease)
        renewed = []
        with self._lock:
            for referral_id in _ids(ids):
                held = self._leases.get(referral_id)
                if held is not None and held[0] == owner and held[1] > now:
                    self._leases[referral_id] = (owner, until)
                    renewed.append(referral_id)
        return renewed

    @boundary
    def release(self, owner: str, ids: Iterable[str]) -> list[str]:
        check_owner(owner)
        released = []
        with self._lock:
            for referral_id in _ids(ids):
                held = self._leases.get(referral_id)
                if held is not None and held[0] == owner:
                    del self._leases[referral_id]
                    released.append(referral_id)
        return released

    # ------------------------------------------------------------------ whole histories

    @boundary_iter
    def export(self) -> Iterator[History]:
        with self._lock:
            items = [(r, list(self._events[i])) for i, r in sorted(self._snapshots.items())]
        yield from items

    @boundary
    def restore_many(self, histories: Sequence[History]) -> None:
        check_histories(histories)
        with self._lock:
            for referral, _ in histories:
                current = self._snapshots.get(referral.id)
                if current is not None:
                    raise ConcurrencyError(referral.id, 0, current.version)
                if referral.source_id is not None and self._holder(referral.source_id, {}):
                    raise DuplicateReferralError(referral.source_id)
            self._apply(
                {r.id: r for r, _ in histories}, {r.id: list(events) for r, events in histories}
            )

    # ------------------------------------------------------------------ worklist rank keys

    keeps_rank_keys = True

    def _rank_keys(self) -> Iterator[tuple[str, Sequence[RankEntry]]]:
        with self._lock:
            return iter(list(self._rank.items()))

    @boundary
    def latest_update(self) -> dt.datetime | None:
        with self._lock:
            return max((r.updated_at for r in self._snapshots.values()), default=None)

    # ------------------------------------------------------------------ rule versions

    @boundary
    def save_rule_version(self, version: RuleVersion) -> bool:
        check_rule_version(version)
        with self._lock:
            if version.digest in self._versions:
                return False
            self._versions[version.digest] = version
            return True

    @boundary
    def find_rule_version(self, digest: str) -> RuleVersion | None:
        with self._lock:
            return self._versions.get(check_digest(digest))

    @boundary
    def record_policy_use(self, kind: str, digest: str, at: dt.datetime) -> bool:
        kind, digest, at = check_policy_use(kind, digest, at)
        with self._lock:
            stored = self._versions.get(digest)
            if stored is None or stored.kind != f"{kind}-policy":
                raise unknown_policy(kind)
            latest = [d for k, d, _ in self._policy_uses if k == kind][-1:]
            if latest == [digest]:
                return False
            self._policy_uses.append((kind, digest, at))
            return True

    @boundary
    def policy_in_force(self, kind: str, at: dt.datetime) -> str | None:
        kind, _, at = check_policy_use(kind, None, at)
        with self._lock:
            # the latest noted at or before ``at``; among equal times, the last noted
            found = [
                (when, n, d)
                for n, (k, d, when) in enumerate(self._policy_uses)
                if k == kind and when <= at
            ]
        return max(found)[2] if found else None

    # ------------------------------------------------------------------ the access log

    @boundary
    def append_access(self, records: Sequence[AccessRecord]) -> None:
        check_records(records)
        with self._lock:
            self._fallback_access_log().append(records)

    @boundary
    def access_records(self, query: AccessQuery = AccessQuery()) -> list[AccessRecord]:
        check_access_query(query)
        with self._lock:
            return self._fallback_access_log().read(query)

    @boundary_iter
    def access_chain(self) -> Iterator[tuple[int, list[Any], str]]:
        with self._lock:
            rows = self._fallback_access_log().rows()
        yield from rows

    def _rotate_batch(self, after: str, limit: int) -> tuple[str | None, int]:
        """Nothing is at rest in memory: nothing to rotate."""
        return None, 0
