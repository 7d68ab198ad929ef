"""The storage port: one small interface every adapter implements."""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterable, Sequence
from types import TracebackType

import attrs

from .. import _validators as v
from ..errors import ValidationError
from ..model import Priority, Referral, ReferralEvent, Status

__all__ = ["Query", "ReferralStore", "check_change", "worklist_key"]


def _statuses(value: Iterable[Status] | Status | None) -> frozenset[Status] | None:
    if value is None:
        return None
    if isinstance(value, Status):
        return frozenset({value})
    return frozenset(value)


@attrs.frozen
class Query:
    """Which referrals to list and in what order.

    Every filter left ``None`` matches everything. ``order`` is ``"worklist"`` (priority rank
    highest first, then due date, then received date, then id) or ``"updated"`` (most
    recently changed first).
    """

    status: frozenset[Status] | None = attrs.field(default=None, converter=_statuses)
    open_only: bool = False
    priority: Priority | None = attrs.field(default=None, validator=v.optional(v.member(Priority)))
    specialty: str | None = None
    owner: str | None = None
    patient_id: str | None = None
    updated_since: dt.datetime | None = attrs.field(
        default=None, validator=v.optional(v.utc_datetime)
    )
    due_before: dt.datetime | None = attrs.field(default=None, validator=v.optional(v.utc_datetime))
    order: str = attrs.field(default="worklist", validator=v.text(pattern="worklist|updated"))
    limit: int | None = attrs.field(default=None, validator=v.optional(v.non_negative))
    offset: int = attrs.field(default=0, validator=v.non_negative)

    def matches(self, r: Referral) -> bool:
        """Whether ``r`` passes every filter (the reference semantics adapters follow)."""
        due = r.due_by
        return (
            (self.status is None or r.status in self.status)
            and (not self.open_only or not r.status.is_terminal)
            and (self.priority is None or r.effective_priority is self.priority)
            and (self.specialty is None or r.specialty == self.specialty)
            and (self.owner is None or r.owner == self.owner)
            and (self.patient_id is None or r.patient.id == self.patient_id)
            and (self.updated_since is None or r.updated_at >= self.updated_since)
            and (self.due_before is None or (due is not None and due < self.due_before))
        )


_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.UTC)


def worklist_key(r: Referral) -> tuple[int, dt.datetime, dt.datetime, str]:
    """Sort key of the worklist order: priority rank (highest first), due date, received."""
    return (
        -r.effective_priority.rank,
        r.due_by or _FAR_FUTURE,
        r.received_at or r.created_at,
        r.id,
    )


def check_change(
    referral: Referral, events: Sequence[ReferralEvent], expected_version: int
) -> None:
    """Check that ``events`` are one well-formed change taking ``referral`` to its version."""
    if referral.version != expected_version + 1:
        raise ValidationError("version", "a change must raise the version by exactly one")
    if not events:
        raise ValidationError("events", "a change needs at least one event")
    for index, event in enumerate(events):
        if (event.referral_id, event.version, event.index) != (
            referral.id,
            referral.version,
            index,
        ):
            raise ValidationError(
                f"events[{index}]", "referral id, version or index does not match the change"
            )


class ReferralStore(abc.ABC):
    """Where referrals and their events live.

    A change is one snapshot plus its events, written atomically, guarded by the version the
    writer loaded (optimistic concurrency): :meth:`save` raises
    :class:`~referralkit.errors.ConcurrencyError` and writes nothing when the stored version
    is not ``expected_version``.
    """

    @abc.abstractmethod
    def load(self, referral_id: str) -> Referral:
        """The current snapshot; :class:`~referralkit.errors.NotFoundError` if absent."""

    @abc.abstractmethod
    def find_source(self, source_id: str) -> str | None:
        """The id of the referral intaken under the referrer's ``source_id``, if any."""

    @abc.abstractmethod
    def save(
        self, referral: Referral, events: Sequence[ReferralEvent], expected_version: int
    ) -> None:
        """Store ``referral`` and append ``events`` atomically.

        ``expected_version`` is 0 for a new referral. A different stored version raises
        :class:`~referralkit.errors.ConcurrencyError`; nothing is written.
        """

    @abc.abstractmethod
    def events(self, referral_id: str) -> list[ReferralEvent]:
        """The referral's events, oldest first; :class:`~referralkit.errors.NotFoundError`
        if the referral does not exist."""

    @abc.abstractmethod
    def query(self, query: Query = Query()) -> list[Referral]:
        """The referrals matching ``query``, in its order, paged by limit and offset."""

    def count(self, query: Query = Query()) -> int:
        """How many referrals match ``query`` (ignoring its paging)."""
        return len(self.query(attrs.evolve(query, limit=None, offset=0)))

    def close(self) -> None:  # noqa: B027 - optional for adapters holding no resources
        """Release connections and files; the store is unusable afterwards."""

    def __enter__(self) -> ReferralStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
