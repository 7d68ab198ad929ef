"""The storage port: one small interface every adapter implements.

An adapter implements eight methods: :meth:`~ReferralStore.load`,
:meth:`~ReferralStore.find_source`, :meth:`~ReferralStore.save_many`,
:meth:`~ReferralStore.events`, :meth:`~ReferralStore.query` and the three claim operations
:meth:`~ReferralStore.claim`, :meth:`~ReferralStore.renew`, :meth:`~ReferralStore.release`.
Everything else (``save``, ``count``, ``ids_starting_with``, ``export``,
``event_histories``, ``restore_many``) has a default built on those, which an adapter may
replace with something faster.

Every adapter checks its arguments with the helpers here (:func:`check_id`,
:func:`check_query`, :func:`check_change`, :func:`check_claim`...), so a wrong type is the same
:class:`~referralkit.errors.ValidationError`, naming the argument, in every store; and wraps
its public methods in the library's error boundary (see :doc:`/explanation`), so an
error leaves the store with no row, snapshot or argument in its traceback.
"""

from __future__ import annotations

import abc
import datetime as dt
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeAlias, TypeGuard

import attrs

from .. import _validators as v
from .._redaction import Sealed, boundary, boundary_iter
from ..access import (
    GENESIS,
    AccessQuery,
    AccessRecord,
    MemoryAccessLog,
    at_text,
    check_access_query,
    check_records,
    record_fields,
)
from ..errors import ConcurrencyError, DuplicateReferralError, NotFoundError, ValidationError
from ..events import apply_all
from ..model import Priority, Referral, ReferralEvent, Status
from ._snapshot import AuditEvent, AuditSnapshot
from ._versions import RuleVersion

__all__ = [
    "Change",
    "History",
    "Query",
    "ReferralStore",
    "check_change",
    "check_changes",
    "check_claim",
    "check_event_types",
    "check_histories",
    "check_history",
    "check_id",
    "check_owner",
    "check_query",
    "lease_end",
    "resolve_id",
    "worklist_key",
]

Change: TypeAlias = tuple[Referral, Sequence[ReferralEvent], int]
"""One change: the new snapshot, the events that made it, the version it was made from."""

History: TypeAlias = tuple[Referral, Sequence[ReferralEvent]]
"""A referral's current snapshot with its whole history (every event, oldest first)."""

AuditHistory: TypeAlias = tuple[
    Referral | AuditSnapshot, Sequence[ReferralEvent] | Sequence[AuditEvent]
]
"""What the store audit reads of one referral (see :meth:`ReferralStore._audit_histories`)."""


def _statuses(value: Iterable[Status | str] | Status | str | None) -> frozenset[Status] | None:
    """One status or a collection of them (members or their string values) as a set."""
    if value is None:
        return None
    items: Iterable[Any] = (value,) if isinstance(value, str) else value
    names = ", ".join(s.value for s in Status)
    try:
        return frozenset(Status(item) for item in items)
    except (TypeError, ValueError):
        raise ValidationError(
            "status", f"expected a Status or a collection of them ({names})"
        ) from None


@attrs.frozen
class Query:
    """Which referrals to list and in what order.

    Every filter left ``None`` matches everything. ``order`` is ``"worklist"`` (priority rank
    highest first, then due date, then received date, then id) or ``"updated"`` (most
    recently changed first).
    """

    status: frozenset[Status] | None = attrs.field(default=None, converter=_statuses)
    open_only: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))
    priority: Priority | None = attrs.field(default=None, validator=v.optional(v.member(Priority)))
    specialty: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=60)))
    owner: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=200)))
    patient_id: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=100))
    )
    updated_since: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    due_before: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    order: str = attrs.field(default="worklist", validator=v.text(pattern="worklist|updated"))
    limit: int | None = attrs.field(default=None, validator=v.optional(v.row_count))
    offset: int = attrs.field(default=0, validator=v.row_count)

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


def check_id(value: object, name: str = "referral_id") -> str:
    """``value`` if it is an id a store can look up, else a ValidationError naming ``name``
    (a whole :class:`~referralkit.model.Referral` passed by mistake, ``None``, a number)."""
    return v.identifier(value, name)


def check_query(query: object) -> Query:
    """``query`` if it is a :class:`Query`, else a ValidationError naming ``query``."""
    if not isinstance(query, Query):
        raise ValidationError("query", f"expected a Query, got {type(query).__name__}")
    return query


def _sequence(value: object) -> TypeGuard[Sequence[Any]]:
    """A sequence of items, not text (a string is a sequence of characters)."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _events(events: object, path: str) -> Sequence[ReferralEvent]:
    if not _sequence(events):
        raise ValidationError(path, "expected a sequence of ReferralEvent")
    for index, event in enumerate(events):
        if not isinstance(event, ReferralEvent):
            raise ValidationError(
                f"{path}[{index}]", f"expected a ReferralEvent, got {type(event).__name__}"
            )
    return events


def check_change(
    referral: Referral, events: Sequence[ReferralEvent], expected_version: int
) -> None:
    """Check that ``events`` are one well-formed change taking ``referral`` to its version."""
    if not isinstance(referral, Referral):
        raise ValidationError("referral", f"expected a Referral, got {type(referral).__name__}")
    _events(events, "events")
    if (
        isinstance(expected_version, bool)
        or not isinstance(expected_version, int)
        or not 0 <= expected_version < v.INT32_MAX
    ):
        raise ValidationError("expected_version", "expected a whole number >= 0")
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


def check_changes(changes: Sequence[Change]) -> None:
    """Check every change of a batch, and that no two referrals in it share a source id.

    Two new referrals with one source id in the same batch are refused up front, the same way
    in every adapter (a database would report the clash without saying which rows clashed).
    """
    if not _sequence(changes):
        raise ValidationError("changes", "expected a sequence of (referral, events, version)")
    sources: dict[str, str] = {}
    for position, change in enumerate(changes):
        if not isinstance(change, tuple) or len(change) != 3:
            raise ValidationError(
                f"changes[{position}]", "expected a (referral, events, expected_version) tuple"
            )
        referral, events, expected = change
        try:
            check_change(referral, events, expected)
        except ValidationError as error:
            raise error.at(f"changes[{position}]") from None
        source = referral.source_id
        if source is not None and sources.setdefault(source, referral.id) != referral.id:
            raise DuplicateReferralError(source)


def check_history(referral: Referral, events: Sequence[ReferralEvent]) -> None:
    """Check that ``events`` are a whole history ending at ``referral``'s version.

    Versions run 1, 2, ... ``referral.version`` without a gap, each with at least one event,
    indexes run 0, 1, ... within each version, and every event names the referral. (Whether
    the snapshot *is* the replay of the events is a separate, costlier check:
    :func:`referralkit.events.replay`.)
    """
    if not isinstance(referral, Referral):
        raise ValidationError("referral", f"expected a Referral, got {type(referral).__name__}")
    _events(events, "events")
    if referral.version < 1:
        raise ValidationError("version", "a stored referral has version 1 or more")
    expected_version, expected_index = 1, 0
    for position, event in enumerate(events):
        if event.referral_id != referral.id:
            raise ValidationError(f"events[{position}].referral_id", "names another referral")
        if (event.version, event.index) == (expected_version + 1, 0) and expected_index > 0:
            expected_version, expected_index = expected_version + 1, 0
        if (event.version, event.index) != (expected_version, expected_index):
            raise ValidationError(
                f"events[{position}]",
                "versions must run 1, 2, ... and indexes 0, 1, ... within each version",
            )
        expected_index += 1
    if expected_index == 0 or expected_version != referral.version:
        raise ValidationError("events", "the history does not end at the snapshot's version")


def check_event_types(event_types: Iterable[str]) -> tuple[str, ...]:
    """The event types of a selection, sorted, each checked (a non-empty set of names)."""
    if isinstance(event_types, str):
        raise ValidationError("event_types", "expected a collection of event types")
    try:
        types = tuple(sorted(set(event_types)))
    except TypeError:
        raise ValidationError("event_types", "expected a collection of event types") from None
    if not types or not all(
        isinstance(t, str) and _EVENT_TYPE.fullmatch(t) is not None for t in types
    ):
        raise ValidationError("event_types", "expected event type names ([a-z_]+)")
    return types


_EVENT_TYPE: Final = re.compile(r"[a-z_]{1,60}")


def check_histories(histories: Sequence[History]) -> None:
    """Check every history of a batch to restore; no id or source id may appear twice."""
    if not _sequence(histories):
        raise ValidationError("histories", "expected a sequence of (referral, events)")
    ids: dict[str, int] = {}
    sources: dict[str, str] = {}
    for position, history in enumerate(histories):
        if not isinstance(history, tuple) or len(history) != 2:
            raise ValidationError(f"histories[{position}]", "expected a (referral, events) tuple")
        referral, events = history
        try:
            check_history(referral, events)
        except ValidationError as error:
            raise error.at(f"histories[{position}]") from None
        if referral.id in ids:
            raise ConcurrencyError(referral.id, 0, ids[referral.id])
        ids[referral.id] = referral.version
        source = referral.source_id
        if source is not None and sources.setdefault(source, referral.id) != referral.id:
            raise DuplicateReferralError(source)


def check_owner(owner: str) -> None:
    """Check a claim owner: a coordinator id, a non-blank string every store can keep."""
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 200:
        raise ValidationError("owner", "expected a non-blank string of at most 200 characters")
    v.identifier(owner, "owner")


def check_claim(
    owner: str, now: dt.datetime, lease: dt.timedelta, count: int | None = None
) -> dt.datetime:
    """Check the arguments of a claim or renewal (every adapter calls this); returns ``now``
    in UTC.

    ``now`` is any timezone-aware datetime; a naive one is refused.
    """
    check_owner(owner)
    utc = v.as_utc(now, "now")
    if not isinstance(lease, dt.timedelta) or lease <= dt.timedelta(0):
        raise ValidationError("lease", "expected a positive datetime.timedelta")
    if count is not None and (
        isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= v.INT64_MAX
    ):
        raise ValidationError("count", "expected a whole number >= 0")
    return utc


def lease_end(now: dt.datetime, lease: dt.timedelta) -> dt.datetime:
    """When a lease taken at ``now`` ends."""
    try:
        return now + lease
    except OverflowError:
        raise ValidationError("lease", "ends after the year 9999") from None


def _claim_query(query: Query | None) -> Query:
    """The query a claim serves: its filters, open referrals only."""
    if query is None:
        return Query(open_only=True)
    return attrs.evolve(check_query(query), open_only=True, limit=None, offset=0)


def check_rank_page(bucket: object, after: object, limit: object) -> None:
    """Check the arguments of :meth:`ReferralStore.rank_page`."""
    if isinstance(bucket, bool) or not isinstance(bucket, int):
        raise ValidationError("bucket", "expected a whole number")
    if after is not None and not (
        isinstance(after, tuple)
        and len(after) == 2
        and isinstance(after[0], float | int)
        and isinstance(after[1], str)
    ):
        raise ValidationError("after", "expected a (sort_key, referral_id) pair, or None")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError("limit", "expected a whole number >= 1")


def check_prefix(prefix: str, limit: int | None) -> None:
    """Check the arguments of :meth:`ReferralStore.ids_starting_with`."""
    if not isinstance(prefix, str) or not prefix:
        raise ValidationError("prefix", "expected a non-empty string")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValidationError("limit", "expected a whole number >= 1, or None")


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """The ids starting with ``prefix`` are those from ``low`` (included) to ``high``
    (excluded; ``None``: no end), in code point order: a range an id index answers without
    a pattern to escape. ``high`` is ``prefix`` with its last character raised by one,
    after dropping trailing U+10FFFF (which cannot be raised) and skipping the surrogates
    (which no stored id holds).
    """
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return prefix, None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:
        following = 0xE000
    return prefix, stem[:-1] + chr(following)


def resolve_id(store: ReferralStore, id_or_prefix: str) -> str:
    """The id of the one referral whose id is ``id_or_prefix`` or starts with it.

    What a person types: the first characters of an id, as the demo's worklist prints them.
    An exact id wins even when it is the start of others. No match raises
    :class:`~referralkit.errors.NotFoundError`; a prefix that matches several referrals
    raises a :class:`~referralkit.errors.ValidationError` saying how many.

    >>> from referralkit.storage import MemoryStore
    >>> resolve_id(MemoryStore(), "3fa2")
    Traceback (most recent call last):
    ...
    referralkit.errors.NotFoundError: no referral with id '3fa2'

    .. versionadded:: 0.1
    """
    if not isinstance(store, ReferralStore):
        raise ValidationError("store", "expected a ReferralStore")
    if not isinstance(id_or_prefix, str) or not id_or_prefix:
        raise ValidationError("id", "expected a referral id or the start of one")
    # in id order an exact id comes before every longer id it starts
    found = store.ids_starting_with(id_or_prefix, limit=2)
    if not found:
        raise NotFoundError(id_or_prefix)
    if len(found) == 1 or found[0] == id_or_prefix:
        return found[0]
    count = len(store.ids_starting_with(id_or_prefix))
    raise ValidationError(
        "id", f"{id_or_prefix!r} is the start of {count} referral ids; give more of the id"
    )


def _ids(ids: Iterable[str]) -> list[str]:
    """``ids`` as a list without repeats, in the order given."""
    if isinstance(ids, str) or not isinstance(ids, Iterable):
        raise ValidationError("ids", "expected a collection of referral ids, not one string")
    items = list(ids)
    for index, item in enumerate(items):
        v.identifier(item, f"ids[{index}]")
    return list(dict.fromkeys(items))


class ReferralStore(abc.ABC):
    """Where referrals and their events live.

    A change is one snapshot plus its events, written atomically, guarded by the version the
    writer loaded (optimistic concurrency): :meth:`save` raises
    :class:`~referralkit.errors.ConcurrencyError` and writes nothing when the stored version
    is not ``expected_version``.

    **Claims** share the work among many coordinators: :meth:`claim` hands a coordinator the
    next open referrals in worklist order that nobody holds, each under a *lease* that ends at
    ``now + lease``. A lease is bookkeeping beside the referral, not a change to it: claiming
    writes no event and does not raise the version, and a holder still saves its changes with
    optimistic concurrency like everyone else. A coordinator that crashes simply stops
    renewing, and its referrals come back once their leases end. Time is always passed in
    (``now``); no adapter reads the wall clock.
    """

    @abc.abstractmethod
    def load(self, referral_id: str) -> Referral:
        """The current snapshot; :class:`~referralkit.errors.NotFoundError` if absent."""

    @abc.abstractmethod
    def find_source(self, source_id: str) -> str | None:
        """The id of the referral intaken under the referrer's ``source_id``, if any."""

    @boundary
    def save(
        self, referral: Referral, events: Sequence[ReferralEvent], expected_version: int
    ) -> None:
        """Store ``referral`` and append ``events`` atomically.

        ``expected_version`` is 0 for a new referral. A different stored version raises
        :class:`~referralkit.errors.ConcurrencyError`; nothing is written. Another referral
        with the same ``source_id`` raises :class:`~referralkit.errors.DuplicateReferralError`.
        """
        check_change(referral, events, expected_version)
        self.save_many([(referral, events, expected_version)])

    @abc.abstractmethod
    def save_many(self, changes: Sequence[Change]) -> None:
        """Save several changes in one transaction: all of them, or none.

        Each change follows the rules of :meth:`save`, in order (a batch may create a
        referral and change it again). The first refused change raises and nothing of the
        batch is written. This is the bulk path: one transaction (one disk flush) for many
        referrals.
        """

    def _save_swept(
        self, changes: Sequence[Change], timelines: Sequence[Sequence[ReferralEvent] | None]
    ) -> None:
        """:meth:`save_many` for the sweep (:meth:`referralkit.ReferralDesk.sweep`), whose
        changes each add events to a stored referral: ``timelines[i]``, when not ``None``,
        holds the ``i``-th referral's stored events of
        :data:`~referralkit.clocks.TIMELINE_EVENT_TYPES` up to ``changes[i]``'s expected
        version, in history order (what its clocks read). A store that keeps rank keys
        computes the referral's from them and the change's events instead of reading its
        history back (the expected version, checked in the transaction, guarantees they
        are still its events). This default ignores them."""
        self.save_many(changes)

    @abc.abstractmethod
    def events(self, referral_id: str) -> list[ReferralEvent]:
        """The referral's events, oldest first; :class:`~referralkit.errors.NotFoundError`
        if the referral does not exist."""

    @abc.abstractmethod
    def query(self, query: Query = Query()) -> list[Referral]:
        """The referrals matching ``query``, in its order, paged by limit and offset."""

    @boundary
    def count(self, query: Query = Query()) -> int:
        """How many referrals match ``query`` (ignoring its paging)."""
        return len(self.query(attrs.evolve(check_query(query), limit=None, offset=0)))

    def ids_starting_with(self, prefix: str, *, limit: int | None = None) -> list[str]:
        """The ids of the stored referrals that start with ``prefix``, in id order (code
        point order), at most ``limit`` of them. See :func:`resolve_id`.

        This default scans :meth:`query`; the adapters answer it from their id index.

        .. versionadded:: 0.1
        """
        check_prefix(prefix, limit)
        found = sorted(r.id for r in self.query(Query()) if r.id.startswith(prefix))
        return found if limit is None else found[:limit]

    # ------------------------------------------------------------------ claims

    @abc.abstractmethod
    def claim(
        self,
        owner: str,
        count: int,
        *,
        now: dt.datetime,
        lease: dt.timedelta,
        query: Query | None = None,
    ) -> list[str]:
        """Lease up to ``count`` referrals to ``owner`` until ``now + lease``; their ids.

        The referrals taken are the first open ones in worklist order that match ``query``'s
        filters (its order and paging are not used) and are not under a live lease, the
        owner's own included: a lease is live while ``now`` is before its end. Two
        concurrent claims never return the same referral.
        """

    @abc.abstractmethod
    def renew(
        self, owner: str, ids: Iterable[str], *, now: dt.datetime, lease: dt.timedelta
    ) -> list[str]:
        """Extend ``owner``'s live leases on ``ids`` to ``now + lease``; the ids renewed.

        A lease that another coordinator holds, or that has already ended, is not renewed
        (claim the referral again instead).
        """

    @abc.abstractmethod
    def release(self, owner: str, ids: Iterable[str]) -> list[str]:
        """End ``owner``'s leases on ``ids`` now; the ids released. Others' leases are kept."""

    # ------------------------------------------------------------------ whole histories

    @boundary_iter
    def export(self) -> Iterator[History]:
        """Every referral with its whole history, in id order (what a dump holds)."""
        for referral in sorted(self.query(Query()), key=lambda r: r.id):
            yield referral, self.events(referral.id)

    @boundary_iter
    def export_selected(
        self, event_types: Iterable[str], *, latest: bool = False
    ) -> Iterator[History]:
        """:meth:`export` with, for each referral, only the events whose type is in
        ``event_types`` (in history order), or with ``latest`` only the last of them (none
        when it has none): for a bulk reader that needs part of each history (the record
        audit reads the last status change). Each event read is verified as :meth:`export`
        verifies it; the history is not checked whole, since a selection leaves events out.

        This default filters :meth:`export`; the SQL adapters read only the rows selected.

        .. versionadded:: 0.1
        """
        types = frozenset(check_event_types(event_types))
        for referral, events in self.export():
            chosen = [e for e in events if e.type in types]
            yield referral, chosen[-1:] if latest else chosen

    def _audit_histories(self, event_types: Iterable[str]) -> Iterator[AuditHistory]:
        """What the store audit (:meth:`referralkit.ReferralDesk.audit`) reads:
        :meth:`export_selected` with ``latest``, where a store may give, instead of a
        referral, its :class:`~referralkit.storage._snapshot.AuditSnapshot` (only the parts
        the audit's checks read, extracted in the database: the SQLite adapter). The audit's
        findings are the same either way."""
        return self.export_selected(event_types, latest=True)

    def _sweep_reads(
        self, ids: Iterable[str], event_types: Iterable[str]
    ) -> Iterable[tuple[str, int, list[ReferralEvent]]]:
        """What the sweep (:meth:`referralkit.ReferralDesk.sweep`) reads of the referrals
        ``ids`` to evaluate the event rules: for each open one, in the order of ``ids``, its
        id, its version and its events of ``event_types`` up to that version
        (:meth:`histories_selected` without the snapshots, which only the referrals the
        sweep writes need: :meth:`_load_many`). The SQL adapters read the version from its
        column, decode no snapshot, and decode each referral's events only as the caller
        iterates (iterate it once)."""
        return [
            (referral.id, referral.version, list(events))
            for referral, events in self.histories_selected(ids, event_types)
            if not referral.status.is_terminal
        ]

    def _load_many(self, ids: Iterable[str]) -> list[Referral]:
        """The current snapshots of those of ``ids`` that are stored (:meth:`load` each; the
        SQL adapters read them in one query)."""
        found = []
        for referral_id in ids:
            try:
                found.append(self.load(referral_id))
            except NotFoundError:
                continue
        return found

    @boundary_iter
    def export_referrals(self) -> Iterator[Referral]:
        """Every referral (its current snapshot, verified as :meth:`export` verifies it), in
        id order, without its history: for a bulk reader that needs the referrals only (the
        FHIR export). No event is read, so the history is not checked whole.

        This default drops :meth:`export`'s histories; the adapters read no event row.

        .. versionadded:: 0.1
        """
        for referral, _ in self.export():
            yield referral

    def histories_selected(self, ids: Iterable[str], event_types: Iterable[str]) -> list[History]:
        """:meth:`histories` with, for each referral, only the events whose type is in
        ``event_types`` (see :meth:`export_selected`).

        .. versionadded:: 0.1
        """
        types = frozenset(check_event_types(event_types))
        return [
            (referral, [e for e in events if e.type in types])
            for referral, events in self.histories(ids)
        ]

    def event_histories(self) -> Iterator[Sequence[ReferralEvent]]:
        """Every referral's events (its whole history, oldest first), one list per referral,
        in referral id order: one pass over the store, for analytics that replay histories.

        This default reads :meth:`export` and drops the snapshots; an adapter may read the
        events alone, which is what this is for (analytics rebuild every figure from the
        events, so parsing the snapshots is wasted work).

        .. versionadded:: 0.1
        """
        for _, events in self.export():
            yield events

    @boundary
    def restore_many(self, histories: Sequence[History]) -> None:
        """Store referrals with their whole histories (as a dump holds them), atomically.

        Every referral must be absent (:class:`~referralkit.errors.ConcurrencyError`
        otherwise). This default replays each history version by version through
        :meth:`save_many`, so it also checks that each snapshot is the replay of its events;
        adapters replace it with a direct write and leave that check to the caller
        (:func:`referralkit.storage.load_dump` makes it).
        """
        check_histories(histories)
        changes: list[Change] = []
        for position, (referral, events) in enumerate(histories):
            current: Referral | None = None
            for version, group in itertools.groupby(events, key=lambda e: e.version):
                step = list(group)
                current = apply_all(current, step)
                changes.append((current, step, version - 1))
            if current != referral:
                raise ValidationError(
                    f"histories[{position}]", "the snapshot is not the replay of its events"
                )
        self.save_many(changes)

    # ------------------------------------------------------------------ worklist rank keys

    keeps_rank_keys: bool = False
    """Whether the store writes each open referral's stored rank keys
    (:func:`~referralkit.worklist.rank_entries`, with the default rules) with every change,
    so :meth:`~referralkit.desk.ReferralDesk.worklist` reads its head off an index. The
    defaults below compute them from :meth:`export` on every call (correct, not fast).

    .. versionadded:: 0.1
    """

    keeps_worklist_digests: bool = False
    """Whether the store keeps worklist digests
    (``referralkit.worklist.WorklistDigest``: what the worklist reads of a referral
    version that does not depend on the instant asked), so the ranked worklist reads one
    short record a candidate instead of its snapshot and history. The defaults below keep
    none: the desk computes each one from the history.

    .. versionadded:: 0.2
    """

    def worklist_digests(self, ids: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        """For each of ``ids`` that exists, its current version and the text of the worklist
        digest kept for that version (``None`` when none is: none written yet, or only one
        of an earlier version, which is never returned). One read for the batch.

        .. versionadded:: 0.2
        """
        return {referral_id: (version, None) for referral_id, version in self.versions(ids).items()}

    def write_worklist_digests(self, digests: Sequence[tuple[str, int, str]]) -> None:
        """Keep the worklist digests ``(referral_id, version, text)`` (each replaces the
        referral's digest of an earlier version; one of an earlier version than the kept one
        is dropped). A cache written by readers: it changes no referral and no history, and
        an encrypting store encrypts the text (it can hold PHI). The default keeps nothing.

        .. versionadded:: 0.2
        """
        return

    def rank_buckets(self) -> list[int]:
        """The buckets that hold stored rank keys, ascending.

        .. versionadded:: 0.1
        """
        return sorted({entry.bucket for _, entries in self._rank_keys() for entry in entries})

    def rank_page(
        self, bucket: int, after: tuple[float, str] | None, limit: int
    ) -> list[tuple[float, str]]:
        """The next ``limit`` stored rank keys of ``bucket`` after ``after``, as
        ``(sort_key, referral_id)`` in that order (a keyset page).

        .. versionadded:: 0.1
        """
        check_rank_page(bucket, after, limit)
        found = sorted(
            (entry.sort_key, referral_id)
            for referral_id, entries in self._rank_keys()
            for entry in entries
            if entry.bucket == bucket
        )
        return [key for key in found if after is None or key > after][:limit]

    def rank_heads(self, limit: int) -> dict[int, list[tuple[float, str]]]:
        """The first page of every rank bucket at once: for each bucket of
        :meth:`rank_buckets` but :data:`~referralkit.worklist.SWEEP_BUCKET` (not a rank), its
        first ``limit`` stored rank keys (``rank_page(bucket, None, limit)``). What
        :meth:`~referralkit.desk.ReferralDesk.worklist` starts from; an adapter whose reads
        are round trips makes it one read.

        .. versionadded:: 0.1
        """
        check_rank_page(0, None, limit)
        return {
            bucket: self.rank_page(bucket, None, limit)
            for bucket in self.rank_buckets()
            if bucket >= 0
        }

    def latest_update(self) -> dt.datetime | None:
        """The latest ``updated_at`` of the stored referrals (``None`` when empty).

        .. versionadded:: 0.1
        """
        return max((r.updated_at for r in self.query(Query())), default=None)

    def histories(self, ids: Iterable[str]) -> list[History]:
        """The snapshots and whole histories of those of ``ids`` that exist, in the order
        given: what the worklist reads for the referrals it assesses. Adapters read a batch
        at once.

        .. versionadded:: 0.1
        """
        found: list[History] = []
        for referral_id in _ids(ids):
            try:
                found.append((self.load(referral_id), self.events(referral_id)))
            except NotFoundError:
                continue
        return found

    def set_sweep_due(self, items: Iterable[tuple[str, int, float]]) -> int:
        """For each ``(referral_id, version, due)``, move the referral's
        :data:`~referralkit.worklist.SWEEP_BUCKET` entry to ``due`` (POSIX seconds) if its
        stored version is still ``version``: bookkeeping beside the referral, like a lease
        (no event, no new version), in one transaction. How many were moved. This default,
        for stores that do not keep rank keys, moves nothing.

        .. versionadded:: 0.1
        """
        return 0

    def versions(self, ids: Iterable[str]) -> dict[str, int]:
        """The stored version of each of ``ids`` that exists (a cheap read: what a reader
        that keeps parsed histories checks them against). Adapters read a batch at once.

        .. versionadded:: 0.1
        """
        found = {}
        for referral_id in _ids(ids):
            try:
                found[referral_id] = self.load(referral_id).version
            except NotFoundError:
                continue
        return found

    def _rank_keys(self) -> Iterator[tuple[str, Sequence[Any]]]:
        from ..worklist import rank_entries

        for referral, events in self.export():
            yield referral.id, rank_entries(referral, events)

    # ------------------------------------------------------------------ the access log

    def append_access(self, records: Sequence[AccessRecord]) -> None:
        """Append ``records`` to the store's access log (:mod:`referralkit.access`), in one
        transaction. The log is append-only: nothing updates or deletes a record.

        This default keeps the log in memory (a list per store object): an adapter that
        persists referrals must persist its log too, in the same database. The shipped
        adapters do.

        .. versionadded:: 0.1
        """
        check_records(records)
        self._fallback_access_log().append(records)

    def load_recorded(
        self, referral_id: str, record: Callable[[Referral], AccessRecord]
    ) -> Referral:
        """The referral ``referral_id`` (as :meth:`load`), with the access record
        ``record(referral)`` appended to the log before it is returned: an audited read.

        The SQL stores read the referral and append the record in one transaction (one
        commit instead of a read and then a write transaction of its own); this default
        appends after the read (:meth:`append_access`). Either way nothing is returned whose
        record is not in the log; a referral that is not found appends nothing.

        .. versionadded:: 0.1
        """
        referral = self.load(referral_id)
        self.append_access([record(referral)])
        return referral

    def access_records(self, query: AccessQuery = AccessQuery()) -> list[AccessRecord]:
        """The access-log records ``query`` matches, oldest first, numbered by ``seq``.

        .. versionadded:: 0.1
        """
        return self._fallback_access_log().read(check_access_query(query))

    def access_chain(self) -> Iterator[tuple[int, list[Any], str]]:
        """Every access-log record as the hash chain sees it, in ``seq`` order: its ``seq``,
        the fields the chain hashes (:func:`~referralkit.access.record_fields`) and the chain
        value stored with it. What :func:`referralkit.tamper.verify` reads; the SQL stores
        stream their rows.

        .. versionadded:: 0.1
        """
        for record in self.access_records():
            yield record.seq, record_fields(record, at_text(record.at)), record.chain or ""

    def restore_access(self, rows: Sequence[tuple[Sequence[Any], str]], after: str) -> None:
        """Append access-log records exactly as another store kept them: each row the fields
        its chain hashes (:func:`~referralkit.access.record_fields`, the reason as stored)
        and its chain value, kept as they are (not recomputed), in one transaction. The log
        must end at the chain value ``after`` (:data:`~referralkit.access.GENESIS`: empty),
        else a StorageError: what :func:`~referralkit.storage.load_dump` uses, so a loaded
        log verifies against the checkpoints made in the dumped store.

        .. versionadded:: 0.2
        """
        self._fallback_access_log().restore(rows, after)

    def event_head(self) -> tuple[int, str]:
        """The ``seq`` and chain value of the last event of the events' chain (0 and
        :data:`~referralkit.access.GENESIS` when there is none): what a checkpoint
        records. This default reads the whole chain; the SQL stores read one row.

        .. versionadded:: 0.2
        """
        seq, chain = 0, GENESIS
        for seq, _, chain, _ in self.event_chain():  # noqa: B007 - the last one is the head
            pass
        return seq, chain

    def event_chain(self) -> Iterator[tuple[int, list[Any], str, Sealed[str]]]:
        """Every event in append order as the events' hash chain sees it (see
        :mod:`referralkit.tamper`): its ``seq``, the fields the chain hashes
        (its referral id, version, index, time, actor, type and ``sealed``: the key id
        and digest of its payload as first written), the chain value stored with it, and its
        payload's stored text (sealed: PHI in an unencrypted store). What
        :func:`referralkit.tamper.verify` reads.

        This default, for an adapter that keeps no chain, yields nothing (``verify`` then
        checks the access log alone). The shipped adapters chain their events.

        .. versionadded:: 0.2
        """
        return iter(())

    def _fallback_access_log(self) -> MemoryAccessLog:
        log: MemoryAccessLog | None = self.__dict__.get("_access_log_fallback")
        if log is None:
            log = self.__dict__["_access_log_fallback"] = MemoryAccessLog()
        return log

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:  # noqa: B027 - optional for adapters holding no resources
        """Release connections and files; the store is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ rule versions
    # Decision provenance (referralkit.rules.provenance). Not abstract: an adapter written
    # before 0.2 still works, and a desk over it records decisions without keeping the rule
    # versions (their events still name the policy digest).

    def save_rule_version(self, version: RuleVersion) -> bool:
        """Keep ``version`` unless a document with its digest is kept already; whether it
        was new. Content-addressed: saving the same document twice stores it once.

        .. versionadded:: 0.2
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep rule versions")

    def find_rule_version(self, digest: str) -> RuleVersion | None:
        """The document kept under ``digest``, if any.

        .. versionadded:: 0.2
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep rule versions")

    def record_policy_use(self, kind: str, digest: str, at: dt.datetime) -> bool:
        """Note that from ``at`` on, ``kind`` decisions (coverage, urgency) are made with the
        stored policy ``digest``; whether anything was written (nothing when that policy is
        already the latest one noted for ``kind``).

        .. versionadded:: 0.2
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep rule versions")

    def policy_in_force(self, kind: str, at: dt.datetime) -> str | None:
        """The digest of the ``kind`` policy most recently noted at or before ``at``.

        .. versionadded:: 0.2
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep rule versions")

    def rule_versions(self) -> list[RuleVersion]:
        """Every kept document, in digest order (what a dump carries).

        .. versionadded:: 0.2
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep rule versions")

    def policy_uses(self) -> list[tuple[str, str, dt.datetime]]:
        """Every noted policy use, ``(kind, digest, at)``, in the order they were noted (what
        a dump carries; noting them again in this order restores them).

        .. versionadded:: 0.2
        """
        raise NotImplementedError(f"{type(self).__name__} does not keep rule versions")

    # ------------------------------------------------------------------ analytics cache

    def referral_versions(self) -> Iterator[tuple[str, int]]:
        """Every referral's id and current version, in referral id order: what the
        analytics cache checks its rows against.

        This default reads :meth:`export`; the SQL adapters read the two columns alone.

        .. versionadded:: 0.1
        """
        for referral, _ in self.export():
            yield referral.id, referral.version

    def read_analytics_blocks(self, name: str) -> list[bytes] | None:
        """The blocks stored under ``name`` by :meth:`write_analytics_blocks`, oldest
        first; ``None`` when this store keeps no analytics cache (this default).

        The blocks are opaque to the store: :mod:`referralkit.analytics` keeps in them the
        rows it computed (de-identifiable columns only, never a name, MRN, contact or free
        text), so a later frame replays only the referrals that changed since.

        .. versionadded:: 0.1
        """
        return None

    def write_analytics_blocks(
        self, name: str, blocks: Sequence[bytes], *, replace: bool = False
    ) -> bool:
        """Add ``blocks`` under ``name`` (after the ones there; with ``replace``, instead
        of them), atomically; whether they were kept (this default keeps nothing).

        .. versionadded:: 0.1
        """
        return False
