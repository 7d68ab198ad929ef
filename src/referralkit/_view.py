"""The audited, scoped, read-only store a desk hands out (:meth:`ReferralDesk.view
<referralkit.desk.ReferralDesk.view>`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from ._redaction import boundary, boundary_iter
from .access import AccessQuery, AccessRecord
from .errors import NotFoundError, PermissionDeniedError
from .model import Referral, ReferralEvent
from .privacy import Actor
from .storage import Change, History, Query, ReferralStore
from .storage._base import check_id, check_query

if TYPE_CHECKING:
    from .desk import ReferralDesk

__all__ = ["AuditedView"]


class AuditedView(ReferralStore):
    """A :class:`~referralkit.storage.ReferralStore` that reads through a desk as one actor:
    scoped, recorded in the access log, and read-only (a write, a claim, an access-log
    append raise :class:`~referralkit.errors.PermissionDeniedError`)."""

    def __init__(self, desk: ReferralDesk, actor: Actor) -> None:
        self._desk = desk
        self._actor = actor

    def __repr__(self) -> str:
        return f"AuditedView({self._desk.store!r}, actor={self._actor.id!r})"

    def _refuse(self, what: str) -> PermissionDeniedError:
        return PermissionDeniedError(self._actor.id, f"{what} through a read-only view")

    @boundary
    def load(self, referral_id: str) -> Referral:
        return self._desk.get(self._actor, referral_id)

    @boundary
    def find_source(self, source_id: str) -> str | None:
        found = self._desk.store.find_source(source_id)
        if found is None:
            return None
        try:
            return self._desk.get(self._actor, found).id
        except PermissionDeniedError:
            return None

    def save_many(self, changes: Sequence[Change]) -> None:
        raise self._refuse("save")

    @boundary
    def events(self, referral_id: str) -> list[ReferralEvent]:
        return self._desk.history(self._actor, check_id(referral_id))

    @boundary
    def query(self, query: Query = Query()) -> list[Referral]:
        return self._desk.query(self._actor, check_query(query))

    @boundary
    def count(self, query: Query = Query()) -> int:
        return len(self.query(query))

    @boundary_iter
    def export(self) -> Iterator[History]:
        yield from self._desk.export(self._actor)

    def claim(
        self,
        owner: str,
        count: int,
        *,
        now: dt.datetime,
        lease: dt.timedelta,
        query: Query | None = None,
    ) -> list[str]:
        raise self._refuse("claim")

    def renew(
        self, owner: str, ids: Iterable[str], *, now: dt.datetime, lease: dt.timedelta
    ) -> list[str]:
        raise self._refuse("renew")

    def release(self, owner: str, ids: Iterable[str]) -> list[str]:
        raise self._refuse("release")

    def restore_many(self, histories: Sequence[History]) -> None:
        raise self._refuse("restore")

    def append_access(self, records: Sequence[AccessRecord]) -> None:
        raise self._refuse("append to the access log")

    def access_records(self, query: AccessQuery = AccessQuery()) -> list[AccessRecord]:
        raise self._refuse("read the access log")

    def ids_starting_with(self, prefix: str, *, limit: int | None = None) -> list[str]:
        found = sorted(r.id for r in self.query(Query()) if r.id.startswith(prefix))
        if not found and self._desk.store.ids_starting_with(prefix, limit=1):
            raise NotFoundError(prefix)
        return found if limit is None else found[:limit]
