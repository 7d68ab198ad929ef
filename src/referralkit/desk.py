"""The referral desk: the application service every front end calls.

Each operation takes an :class:`~referralkit.privacy.Actor`, checks the actor may perform it,
loads the referral, checks the lifecycle transition (with its guards), turns the change into
events, applies them to get the new snapshot and stores snapshot and events atomically with the
version it loaded. A refused operation raises a typed error and changes nothing.

Arguments are checked after the permission: a wrong type, a naive datetime or text no store can
keep is a :class:`~referralkit.errors.ValidationError` naming the argument. Datetimes in any
zone are taken as the same instant in UTC. Free-text arguments (reasons, notes, summaries) are
PHI: the desk holds them :class:`~referralkit.privacy.Sealed` while it works, and its errors
leave it with a traceback that holds no argument (see :doc:`/explanation`).

>>> import datetime as dt
>>> import referralkit as rk
>>> from referralkit.testing import FakeClock, sample_request
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=FakeClock())
>>> coordinator = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> referral = desk.intake(coordinator, sample_request())
>>> referral.status, referral.version
(<Status.DRAFT: 'draft'>, 1)
>>> desk.send(coordinator, referral.id).status
<Status.RECEIVED: 'received'>
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import operator
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import attrs

from . import _validators as v
from . import lifecycle
from ._redaction import Sealed, boundary, boundary_iter
from .access import AccessBuffer, AccessOutcome, AccessQuery, AccessRecord, actor_record
from .alerts import CLEARED, RAISED, ActiveAlert, SweepReport, cleared_payload, raised_payload
from .alerts import active as active_alerts
from .alerts import changes as alert_changes
from .clock import Clock, SystemClock
from .clocks import DEFAULT_CLOCKS, TIMELINE_EVENT_TYPES, Cause, ClockName
from .discrepancies import AUDIT_EVENT_TYPES, DEFAULT_AUDIT, AuditRules, Finding, audit_all
from .discrepancies import audit as audit_record
from .errors import (
    ConcurrencyError,
    GuardError,
    PermissionDeniedError,
    RulesError,
    StorageError,
    ValidationError,
)
from .events import EventType, apply_all
from .intake import DEFAULT_CHECKLIST, Checklist, IntakeRequest, Requirement
from .model import (
    Appointment,
    AppointmentStatus,
    Attachment,
    AttachmentKind,
    Authorization,
    AuthStatus,
    Channel,
    Communication,
    CoverageDecision,
    Direction,
    FollowUp,
    FollowUpKind,
    Provider,
    Referral,
    ReferralEvent,
    Status,
    SurveyResponse,
    UrgencyAssessment,
)
from .policy import CoverageDecider, UrgencyAssessor
from .privacy import (
    ACCESS_PERMISSIONS,
    COMPATIBLE_SCOPE,
    PERMISSIONS,
    Actor,
    BreakGlass,
    ScopePolicy,
    in_scope,
    in_scope_of,
)
from .rules._patterns import SIGNAL_EVENT_TYPES
from .rules.policies import default_policies
from .rules.provenance import Explanation, Replay, keep_provenance
from .rules.provenance import explain as explain_decisions
from .rules.provenance import replay as replay_decisions
from .serialization import to_dict
from .storage import History, Query, ReferralStore, open_store
from .storage._base import AuditHistory
from .worklist import (
    DEFAULT_WORKLIST,
    NO_CLOCK,
    SWEEP_BUCKET,
    WorklistDigest,
    WorklistFilter,
    WorklistItem,
    WorklistRules,
    rank,
    ranked_head,
)
from .worklist import assess as assess_item

if TYPE_CHECKING:
    from .clocks import Cause
    from .messages import Moment, Money, Notification, Notifier, Renderer
    from .model import ContactPoint
    from .rules.timeline import Alert, EventRules
    from .scheduling import Booking, SchedulingAdapter, Slot

__all__ = ["ReferralDesk", "booking_key"]

logger = logging.getLogger("referralkit.desk")

# CMS-0057-F: payers decide expedited prior-authorization requests within 72 hours and
# standard ones within 7 calendar days.
AUTH_DECISION_WINDOW: Final = {True: dt.timedelta(hours=72), False: dt.timedelta(days=7)}

# Referrals per access-log record when a query or an export streams the store: bounded memory.
_EXPORT_PAGE: Final = 16
# what the access log records a page of: whole histories, or the store audit's reads
_Read = TypeVar("_Read", History, AuditHistory)

# Seconds a buffered access record may wait for the next ones (checked at the next record).
_ACCESS_LOG_AGE: Final = 1.0

# A payload is sealed from the moment it is built until the event is made: it holds PHI, and
# the lists of changes are locals of the frames an exception report shows.
_Record = tuple[EventType, Sealed[dict[str, Any]]]
_Change = list[_Record]


def _flush_quietly(buffer: AccessBuffer) -> None:
    """Write what an abandoned desk still buffers (at garbage collection or exit); a failure
    is logged (a count and an error class: no record), never raised into the interpreter."""
    try:
        buffer.flush()
    except Exception as error:  # a finalizer must not raise
        logger.warning(
            "%d access-log records could not be written: %s", len(buffer), type(error).__name__
        )


def _record(kind: EventType, **payload: Any) -> _Record:
    """An event to record, its payload (model values as JSON data) sealed. Every value is a
    validated model value or a checked argument, so the payload is JSON by construction."""
    return kind, Sealed(v.JsonObject({key: to_dict(value) for key, value in payload.items()}))


def _status_change(
    event: str, source: Status, target: Status, reason: Sealed[str] | None
) -> _Record:
    if reason is None:
        return _record(
            EventType.STATUS_CHANGED, event=event, source=source.value, target=target.value
        )
    return _record(
        EventType.STATUS_CHANGED,
        event=event,
        source=source.value,
        target=target.value,
        reason=reason.reveal(),
    )


def _close_appointments(referral: Referral, target: Status) -> _Change:
    """A referral that closes leaves no appointment booked: the visit is taken as held when
    the loop closes (completed), cancelled otherwise."""
    if not target.is_terminal:
        return []
    outcome = (
        AppointmentStatus.FULFILLED if target is Status.COMPLETED else (AppointmentStatus.CANCELLED)
    )
    return [
        _record(EventType.APPOINTMENT_CHANGED, appointment_id=a.id, status=outcome.value)
        for a in referral.appointments
        if a.status is AppointmentStatus.BOOKED
    ]


def _text(value: object, name: str) -> str:
    """A non-blank argument string every store can keep (not PHI: it may be shown)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, "expected a non-blank string")
    problem = v.storable_text(value)
    if problem is not None:
        raise ValidationError(name, problem)
    return value


def _reason(value: Sealed[Any], name: str = "reason") -> Sealed[str]:
    """A sealed PHI argument, checked as :func:`_text` checks (its errors show no value)."""
    return Sealed(_text(value.reveal(), name))


def _optional(value: Sealed[Any], name: str) -> Sealed[str] | None:
    return None if value.reveal() is None else _reason(value, name)


def _expected_version(value: object) -> int | None:
    # any whole number is a version to compare (one never stored is stale, a
    # ConcurrencyError); anything else is a mistake
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValidationError(
        "expected_version", f"expected None or a version number, got {type(value).__name__}"
    )


def _member(kind: Any, value: object, name: str) -> Any:
    """A member of the enum ``kind``, given as one or by its value."""
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(m.value for m in kind)
        raise ValidationError(name, f"expected one of {names}") from None


def booking_key(referral_id: str, slot_id: str, version: int) -> str:
    """The idempotency key :meth:`ReferralDesk.book` sends with a booking: the same referral,
    slot and referral version always give the same key (a hash: no identifier leaks into a
    scheduling system's logs beyond the one it is given).

    >>> booking_key("ref-1", "slot-9", 3) == booking_key("ref-1", "slot-9", 3)
    True
    >>> booking_key("ref-1", "slot-9", 3) == booking_key("ref-1", "slot-9", 4)
    False
    """
    digest = hashlib.sha256(f"{referral_id}\x1f{slot_id}\x1f{version}".encode()).hexdigest()
    return f"referralkit-{digest[:40]}"


def _slot(value: object) -> Slot:
    from .scheduling import Slot

    if not isinstance(value, Slot):
        raise ValidationError("slot", "expected a scheduling Slot")
    return value


_SCHEDULING_EVENTS: Final = frozenset(
    {
        EventType.STATUS_CHANGED.value,
        EventType.APPOINTMENT_BOOKED.value,
        EventType.APPOINTMENT_CHANGED.value,
    }
)


def _scheduling_version(history: Sequence[ReferralEvent]) -> int:
    """The version of the referral's last status or appointment change: what a booking key
    is derived from, so a note or a call logged between a booking and its retry does not
    change the key."""
    return max((e.version for e in history if e.type in _SCHEDULING_EVENTS), default=0)


def _book_or_move(adapter: SchedulingAdapter, referral: Referral, slot: Slot, key: str) -> Booking:
    """Book ``slot``, moving the referral's booked appointment there when the adapter
    booked it (book first, cancel after: a failure leaves the old one)."""
    from .scheduling import UnknownBookingError

    booked = referral.current_appointment
    if booked is not None and booked.status is AppointmentStatus.BOOKED:
        try:
            return adapter.reschedule(booked.id, slot, idempotency_key=key)
        except UnknownBookingError:
            pass  # booked elsewhere: cancelled on the referral only
    return adapter.book(slot, referral, idempotency_key=key)


def _holds(appointment: Appointment, slot: Slot) -> bool:
    """Whether ``appointment`` is a booking of ``slot`` still held."""
    return (
        appointment.status is AppointmentStatus.BOOKED
        and appointment.start == slot.start
        and appointment.provider_id == slot.target.split("/", 1)[1]
    )


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(name, f"expected True or False, got {type(value).__name__}")
    return value


_QUERY_FIELDS: Final = frozenset(a.name for a in attrs.fields(Query))


def _query(filters: Sealed[dict[str, Any]], **fixed: Any) -> Query:
    """A Query from keyword filters; an unknown or repeated filter is a ValidationError."""
    for name in sorted(filters.reveal()):
        if name not in _QUERY_FIELDS or name in fixed:
            raise ValidationError(name, "not a filter of this query")
    return Query(**filters.reveal(), **fixed)


_SWEEP_PAGE: Final = 500
# what the sweep reads of a history: the events that give the event rules' signals, and the
# alerts already recorded (nothing else changes what it records)
_SWEEP_EVENT_TYPES: Final = SIGNAL_EVENT_TYPES | {RAISED, CLEARED}
# what else the clocks read (the rank keys of the referrals a sweep writes)
_TIMELINE_EXTRA_TYPES: Final = TIMELINE_EVENT_TYPES - _SWEEP_EVENT_TYPES
_TIMELINE_READ_TYPES: Final = TIMELINE_EVENT_TYPES & _SWEEP_EVENT_TYPES
_history_order: Final = operator.attrgetter("version", "index")
# a referral the sweep records alerts for: read, history read, raised, cleared, next due
_SweepWrite: TypeAlias = tuple[
    Referral, list[ReferralEvent], list["Alert"], list[ActiveAlert], float
]
"""Referrals a sweep reads (and whose sweep keys it writes back) at a time."""
# a page of what the sweep reads without snapshots: id, version, the events it reads
_SweepReads: TypeAlias = Iterable[tuple[str, int, list[ReferralEvent]]]
# what _sweep_one reports: raised, cleared, written, retries, left, (version, next due) or None
_SweepOutcome: TypeAlias = tuple[
    list["Alert"], list[ActiveAlert], bool, int, bool, tuple[int, float] | None
]


@attrs.define
class _SweepTally:
    """What a sweep has done so far (its report), and the sweep keys still to write."""

    swept: int = 0
    written: int = 0
    retried: int = 0
    skipped: int = 0
    raised: list[Alert] = attrs.Factory(list)
    cleared: list[ActiveAlert] = attrs.Factory(list)
    pending: list[tuple[str, int, float]] = attrs.Factory(list)

    def one(self, referral_id: str, outcome: _SweepOutcome) -> None:
        """Count one referral recorded on its own (:meth:`ReferralDesk._sweep_one`)."""
        new, gone, wrote, tries, left, after = outcome
        self.retried += tries
        self.skipped += left
        if wrote:
            self.written += 1
            self.raised += new
            self.cleared += gone
        if after is not None:
            self.pending.append((referral_id, *after))


_FAR_FUTURE: Final = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


@functools.cache
def _shipped_event_ruleset() -> tuple[str, str]:
    """The name and version of the shipped event ruleset (the one the sweep keys are for)."""
    from .rules import load
    from .rules.model import Kind
    from .rules.policies import shipped_paths

    [path] = shipped_paths(Kind.EVENT)
    ruleset = load(path)
    return ruleset.name, ruleset.version


_HISTORY_CACHE: Final = 256
_RANK_PAGE: Final = 64  # stored rank keys read per bucket at a time (the worklist's head)
"""How many parsed histories a desk keeps for its worklist (see ReferralDesk._histories)."""

# a logged message or a sweep's alert changes nothing the patient is told about
_NOT_FACTS: Final = frozenset(
    {
        EventType.COMMUNICATION_LOGGED.value,
        EventType.ALERT_RAISED.value,
        EventType.ALERT_CLEARED.value,
    }
)


def _message_recorded(history: Sequence[ReferralEvent], key: str) -> bool:
    return any(
        e.type == EventType.COMMUNICATION_LOGGED.value
        and (e.payload.get("message") or {}).get("key") == key
        for e in history
    )


def _reachable(referral: Referral, channels: Sequence[Channel], notifier: Notifier) -> ContactPoint:
    """The patient's first contact the notifier reaches, in the message's channel order."""
    from .errors import DeliveryError

    contacts = [c for c in referral.patient.contacts if c.system in notifier.systems]
    order = {channel.value: index for index, channel in enumerate(channels)}
    contacts.sort(key=lambda c: order.get(c.system.value, len(order)))
    if not contacts:
        raise DeliveryError("none", "the patient has no contact this notifier can reach")
    return contacts[0]


def _access_record(
    at: dt.datetime,
    actor: Actor,
    action: str,
    referral_ids: Sequence[str],
    outcome: AccessOutcome = AccessOutcome.ALLOWED,
    reason: str | None = None,
    grant: BreakGlass | None = None,
) -> AccessRecord:
    """The access record of ``actor`` doing ``action`` (flagged when not simply allowed)."""
    if reason is None and grant is None:  # most records: built without checking again
        return actor_record(at, actor, action, referral_ids, outcome)
    return AccessRecord(
        at=at,
        actor=actor.id,
        action=action,
        outcome=outcome,
        referral_ids=tuple(referral_ids),
        roles=tuple(sorted(r.value for r in actor.roles)),
        organization=actor.organization,
        purpose=actor.purpose,
        reason=reason,
        grant=None if grant is None else grant.grant_id,
        flagged=grant is not None or outcome is not AccessOutcome.ALLOWED,
    )


_Cached = TypeVar("_Cached")


def _in_order(
    cache: collections.OrderedDict[str, _Cached], ids: Sequence[str], current: Mapping[str, int]
) -> list[_Cached]:
    """The entries of ``cache`` for ``ids`` that exist (in ``current``), in the order of
    ``ids``, each marked recently used; then the least recently used dropped down to
    ``_HISTORY_CACHE`` entries (called with the cache's lock held)."""
    found = []
    for referral_id in ids:
        entry = cache.get(referral_id)
        if referral_id in current and entry is not None:
            cache.move_to_end(referral_id)
            found.append(entry)
    while len(cache) > _HISTORY_CACHE:
        cache.popitem(last=False)
    return found


def _digest_matches(query: Query, digest: WorklistDigest) -> bool:
    """:meth:`Query.matches <referralkit.storage.Query.matches>` on a worklist digest's
    facts (a query on the patient is not asked of digests: they do not hold the patient)."""
    f = digest.facts
    due = f.due_by
    return (
        (query.status is None or f.status in query.status)
        and (not query.open_only or not f.status.is_terminal)
        and (query.priority is None or f.priority_value == query.priority.value)
        and (query.specialty is None or f.specialty == query.specialty)
        and (query.owner is None or f.owner == query.owner)
        and query.patient_id is None
        and (query.updated_since is None or f.updated_at >= query.updated_since)
        and (query.due_before is None or (due is not None and due < query.due_before))
    )


class ReferralDesk:
    """The application service over a :class:`~referralkit.storage.ReferralStore`.

    ``clock`` defaults to the system clock, ``coverage`` and ``urgency`` to the rule-based
    policies of the shipped example rule files on the python engine
    (:func:`~referralkit.rules.policies.default_policies`), ``checklist`` to
    :data:`~referralkit.intake.DEFAULT_CHECKLIST`, and ``new_id`` (which names referrals,
    appointments, documents...) to random UUIDs. ``scheduler`` is the
    :class:`~referralkit.scheduling.SchedulingAdapter` :meth:`book` books through (none by
    default: :meth:`schedule` records appointments booked elsewhere).

    The coordination reads use ``worklist_rules`` (clocks, checklist, thresholds;
    :data:`~referralkit.worklist.DEFAULT_WORKLIST`) and ``audit_rules``
    (:data:`~referralkit.discrepancies.DEFAULT_AUDIT`); :meth:`sweep` runs ``event_rules``
    (default: the shipped CMS-0057-F example ruleset, ``engine="auto"``, built on first use).

    Each access record is written with the read it records (``access_log_batch=1``, the
    default: a read costs one more, unflushed, write transaction). With
    ``access_log_batch=64``, read records are written 64 at a time, or once the oldest has
    waited a second (checked at the next record), before the log is read, when the desk
    closes (:meth:`close`, :meth:`flush_access_log`) and at interpreter exit; denials and
    break-glass records are still written at once. A process killed meanwhile loses the
    buffered *read* records, and so does a store closed under a desk that was not closed:
    the price of the cheaper read (see ``benchmarks/bench_security_access.py``).

    **Scopes and the access log** (HIPAA 45 CFR 164.312(a) and (b)): every operation checks
    that one of the actor's roles allows it *and* reaches the referral under ``scope``
    (:class:`~referralkit.privacy.ScopePolicy`, default
    :data:`~referralkit.privacy.COMPATIBLE_SCOPE`: actors without an organisation reach every
    referral; :data:`~referralkit.privacy.STRICT_SCOPE` for a store shared by several
    organisations). Queries (:meth:`worklist`, :meth:`count`, :meth:`audit`, :meth:`sweep`,
    :meth:`export`) see only the referrals in scope. Every read, query result, export,
    denial and break-glass grant or use is appended to the store's access log
    (:mod:`referralkit.access`), which auditors read with :meth:`access_log`.

    ``store`` is the raw, unaudited port: reads through it are neither scoped nor recorded.
    Hand it to trusted code only (migrations, backups, the integrator's jobs); give anything
    acting for a user :meth:`view` (an audited, scoped, read-only store) or the desk itself.
    """

    def __init__(
        self,
        store: ReferralStore,
        *,
        clock: Clock | None = None,
        coverage: CoverageDecider | None = None,
        urgency: UrgencyAssessor | None = None,
        checklist: Checklist = DEFAULT_CHECKLIST,
        new_id: Callable[[], str] | None = None,
        worklist_rules: WorklistRules = DEFAULT_WORKLIST,
        audit_rules: AuditRules = DEFAULT_AUDIT,
        event_rules: EventRules | None = None,
        scheduler: SchedulingAdapter | None = None,
        scope: ScopePolicy = COMPATIBLE_SCOPE,
        access_log_batch: int = 1,
    ) -> None:
        self.store = store
        if not isinstance(scope, ScopePolicy):
            raise ValidationError("scope", "expected a ScopePolicy")
        self.scope = scope
        self._grants: dict[str, BreakGlass] = {}
        if isinstance(access_log_batch, bool) or not isinstance(access_log_batch, int):
            raise ValidationError("access_log_batch", "expected a whole number >= 1")
        if access_log_batch < 1:
            raise ValidationError("access_log_batch", "expected a whole number >= 1")
        self._access = AccessBuffer(store.append_access, access_log_batch, _ACCESS_LOG_AGE)
        weakref.finalize(self, _flush_quietly, self._access)
        self.scheduler = scheduler
        self.clock: Clock = clock or SystemClock()
        if coverage is None or urgency is None:
            shipped_coverage, shipped_urgency = default_policies()
            coverage = coverage or shipped_coverage
            urgency = urgency or shipped_urgency
        self.coverage: CoverageDecider = coverage
        self.urgency: UrgencyAssessor = urgency
        self.checklist = checklist
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self.worklist_rules = worklist_rules
        self.audit_rules = audit_rules
        self._event_rules = event_rules
        self._history_cache: collections.OrderedDict[str, tuple[Referral, list[ReferralEvent]]] = (
            collections.OrderedDict()
        )
        self._history_lock = threading.Lock()
        self._digest_cache: collections.OrderedDict[str, WorklistDigest] = collections.OrderedDict()
        # the provenance each kind of decision records, per decider (kept in the store once)
        self._provenances: dict[str, tuple[object, dict[str, Any]]] = {}

    @classmethod
    @boundary
    def open(cls, url: str = "memory://", *, keys: Any = None, **kwargs: Any) -> ReferralDesk:
        """A desk over the store ``url`` names (see :func:`~referralkit.storage.open_store`),
        encrypted with the key ring ``keys`` when given.

        .. versionchanged:: 0.1
           ``keys``.
        """
        return cls(open_store(url, keys=keys), **kwargs)

    @boundary
    def close(self) -> None:
        """Write the access records still buffered, then close the store."""
        try:
            self.flush_access_log()
        finally:
            self.store.close()

    @boundary
    def flush_access_log(self) -> None:
        """Write the access records the desk still buffers to the store's log now (see
        ``access_log_batch``).

        .. versionadded:: 0.1
        """
        self._access.flush()

    def __enter__(self) -> ReferralDesk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReferralDesk({self.store!r})"

    def _now(self) -> dt.datetime:
        """The clock's reading in UTC (a clock may answer in any zone, never naive)."""
        return v.as_utc(self.clock.now(), "clock.now()")

    # ------------------------------------------------------------------ reads

    @boundary
    def get(self, actor: Actor, referral_id: str) -> Referral:
        """The referral's current snapshot."""
        self._authorize(actor, "get", referral_id)
        wanted = v.identifier(referral_id, "referral_id")
        if self._access.size != 1 or len(self._access) or actor.emergency is not None:
            # records batched (or waiting), or a break-glass grant to look up: the read,
            # then its record through the buffer
            return self._read(actor, "get", self.store.load(wanted))
        denied: list[str] = []

        def record(referral: Referral) -> AccessRecord:
            if self._reaches(actor, "get", referral):
                outcome, reason = AccessOutcome.ALLOWED, None
            else:
                outcome, reason = AccessOutcome.DENIED, "scope"
                denied.append(referral.id)
            return _access_record(self._now(), actor, "get", (referral.id,), outcome, reason)

        # the read and its record in one transaction (a denial is recorded too)
        referral = self.store.load_recorded(wanted, record)
        if denied:
            raise PermissionDeniedError(
                actor.id, f"get referral {referral.id!r} (out of its scope)"
            )
        return referral

    @boundary
    def history(self, actor: Actor, referral_id: str) -> list[ReferralEvent]:
        """Every event recorded for the referral, oldest first."""
        self._authorize(actor, "history", referral_id)
        wanted = v.identifier(referral_id, "referral_id")
        self._read(actor, "history", self.store.load(wanted))
        return self.store.events(wanted)

    @boundary
    def count(self, actor: Actor, **filters: Any) -> int:
        """How many referrals match ``filters`` (:class:`~referralkit.storage.Query` fields)."""
        sealed = Sealed(filters)  # a filter may be PHI (patient_id)
        del filters
        self._authorize(actor, "get")
        query = _query(sealed)
        if self.scope.unscoped(actor):
            found = self.store.count(query)
        else:
            reaches = self._reach(actor, "get")
            found = sum(1 for r in self.store.query(query) if reaches(r))
        self._log(actor, "count", ())
        return found

    @boundary
    def missing(self, actor: Actor, referral_id: str) -> tuple[Requirement, ...]:
        """What the referral still lacks before it can be accepted."""
        return self.checklist.missing(self.get(actor, referral_id))

    # ------------------------------------------------------------------ intake

    @boundary
    def intake(self, actor: Actor, request: IntakeRequest) -> Referral:
        """Record a referral request as a draft, with its coverage decision and urgency.

        Idempotent by ``request.source_id``: a request already taken in returns the existing
        referral unchanged.
        """
        self._authorize(actor, "intake")
        if not isinstance(request, IntakeRequest):
            raise ValidationError("request", "expected an IntakeRequest")
        existing = self.store.find_source(request.source_id)
        if existing is not None:
            return self._read(actor, "intake", self.store.load(existing))
        now = self._now()
        draft = request.referral(self._new_id(), now)
        self._admit(actor, "intake", draft)
        changes: _Change = [_record(EventType.CREATED, referral=draft)]
        changes += self._assessments(draft, now)
        return self._commit(actor, None, changes, now)

    def _assessments(self, referral: Referral, now: dt.datetime) -> _Change:
        """Events recording fresh coverage and urgency decisions for ``referral``."""
        decision = self.coverage.decide(referral, now)
        if not isinstance(decision, CoverageDecision):
            # _record trusts its values to be model values: say which policy broke that
            raise RulesError(f"the coverage decider returned {type(decision).__name__}")
        changes: _Change = [
            _record(
                EventType.COVERAGE_DECIDED,
                decision=decision,
                provenance=self._provenance("coverage", self.coverage, now),
            )
        ]
        auth = referral.authorization
        if decision.needs_authorization and auth.status is AuthStatus.NOT_REQUIRED:
            auth = Authorization(status=AuthStatus.NEEDED)
        elif not decision.needs_authorization and auth.status is AuthStatus.NEEDED:
            auth = Authorization()
        if auth != referral.authorization:
            changes.append(_record(EventType.AUTHORIZATION_CHANGED, authorization=auth))
        # urgency windows may depend on the decision just made
        decided = attrs.evolve(referral, coverage_decision=decision)
        assessment = self._assess(decided, now)
        changes.append(self._urgency_record(assessment, now))
        return changes

    def _assess(self, referral: Referral, now: dt.datetime) -> UrgencyAssessment:
        assessment = self.urgency.assess(referral, now)
        if not isinstance(assessment, UrgencyAssessment):
            raise RulesError(f"the urgency assessor returned {type(assessment).__name__}")
        return assessment

    @boundary
    def reassess(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Ask the coverage and urgency policies again (after coverage or codes changed)."""
        return self._change(
            actor,
            "reassess",
            referral_id,
            expected_version,
            lambda r, now: self._assessments(r, now),
        )

    # ------------------------------------------------------------------ lifecycle

    @boundary
    def send(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Send a draft: it becomes ``received`` (lifecycle event ``submit``), and its urgency
        is assessed again, since waiting times count from receipt."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            target = lifecycle.TABLE.next_status(r, "submit")
            received = attrs.evolve(r, status=target, received_at=now)
            assessment = self._assess(received, now)
            return [
                _status_change("submit", r.status, target, None),
                self._urgency_record(assessment, now),
            ]

        return self._change(actor, "send", referral_id, expected_version, build)

    @boundary
    def accept(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Accept a received referral; refused while intake is incomplete."""
        return self._transition(actor, "accept", referral_id, "accept", expected_version)

    @boundary
    def decline(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """Decline the referral (terminal), saying why."""
        sealed: Sealed[Any] = Sealed(reason)
        del reason
        return self._transition(
            actor,
            "decline",
            referral_id,
            "decline",
            expected_version,
            reason=sealed,
            needs_reason=True,
        )

    @boundary
    def hold(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """Put the referral on hold (waiting for information, authorization, the patient)."""
        sealed: Sealed[Any] = Sealed(reason)
        del reason
        return self._transition(
            actor, "hold", referral_id, "hold", expected_version, reason=sealed, needs_reason=True
        )

    @boundary
    def resume(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Take the referral off hold, back to the state it was held from."""
        return self._transition(actor, "resume", referral_id, "resume", expected_version)

    @boundary
    def schedule(
        self,
        actor: Actor,
        referral_id: str,
        start: dt.datetime,
        *,
        provider_id: str | None = None,
        minutes: int = 30,
        location: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Book an appointment: the first one for an accepted referral, or a further visit
        after the patient was seen (BSeR STU2 TID 26).

        Refused unless authorization is satisfied for the appointment date and coverage is not
        ``not-covered`` (or self-pay was acknowledged). ``provider_id`` defaults to the target
        specialist's id.
        """
        return self._book(
            actor, "schedule", referral_id, start, provider_id, minutes, location, expected_version
        )

    @boundary
    def reschedule(
        self,
        actor: Actor,
        referral_id: str,
        start: dt.datetime,
        *,
        provider_id: str | None = None,
        minutes: int = 30,
        location: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Book a new appointment after a booking, a no-show or a cancelled appointment; a
        still-booked appointment is cancelled."""
        return self._book(
            actor,
            "reschedule",
            referral_id,
            start,
            provider_id,
            minutes,
            location,
            expected_version,
        )

    def _book(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        start: dt.datetime,
        provider_id: str | None,
        minutes: int,
        location: str | None,
        expected_version: int | None,
    ) -> Referral:
        def build(r: Referral, now: dt.datetime) -> _Change:
            when = v.as_utc(start, "start")
            provider = (
                v.identifier(provider_id, "provider_id")
                if provider_id is not None
                else (r.target.id if r.target is not None else None)
            )
            if provider is None:
                raise ValidationError("provider_id", "no target specialist; name a provider")
            appointment = Appointment(
                id=self._new_id(),
                start=when,
                provider_id=provider,
                minutes=minutes,
                location=location,
                booked_at=now,
            )
            target = lifecycle.TABLE.next_status(r, operation, appointment=appointment)
            changes: _Change = [
                _record(EventType.APPOINTMENT_CHANGED, appointment_id=a.id, status="cancelled")
                for a in r.appointments
                if a.status is AppointmentStatus.BOOKED
            ]
            changes.append(_record(EventType.APPOINTMENT_BOOKED, appointment=appointment))
            changes.append(_status_change(operation, r.status, target, None))
            return changes

        return self._change(actor, operation, referral_id, expected_version, build)

    # ------------------------------------------------------------------ booking (issue 14)

    @boundary
    def book(
        self,
        actor: Actor,
        referral_id: str,
        slot: Slot,
        *,
        scheduler: SchedulingAdapter | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Book ``slot`` through the scheduling adapter, then record the appointment.

        The adapter is ``scheduler`` or, by default, the one the desk was built with. The
        operation is :meth:`schedule` (an accepted or seen referral) or :meth:`reschedule`
        (a booked appointment, a no-show or a cancelled appointment), with their permissions
        and guards, checked *before* the adapter is called: a referral that may not be
        scheduled books nothing. A booked appointment is moved with the adapter's
        :meth:`~referralkit.scheduling.SchedulingAdapter.reschedule` (the new slot is booked
        before the old one is cancelled); one the adapter does not know (recorded with
        :meth:`schedule`) is cancelled on the referral only. The recorded
        :class:`~referralkit.model.Appointment` has the booking's id; its event also records
        the slot id and the idempotency key.

        A booking the adapter refuses (:class:`~referralkit.scheduling.SchedulingError`)
        leaves the referral unchanged. The booking carries an idempotency key derived from the
        referral id, the slot id and the referral's version as of its last status or appointment
        change (:func:`booking_key`), so when the
        adapter booked but the desk could not record it (a store failure), calling ``book``
        again with the same slot finds the same remote booking and records it: never lost,
        never booked twice. A referral already holding that booking answers as it is.
        """
        from .scheduling import BookingStatus, SchedulingError

        adapter = self.scheduler if scheduler is None else scheduler
        if adapter is None:
            raise ValidationError("scheduler", "the desk has no scheduling adapter; pass one")
        wanted = v.identifier(referral_id, "referral_id")
        current = self.store.load(wanted)
        operation = (
            "reschedule"
            if current.status in (Status.SCHEDULED, Status.NO_SHOW, Status.APPOINTMENT_CANCELLED)
            else "schedule"
        )
        self._authorize(actor, operation, wanted)
        self._admit(actor, operation, current)
        expected = _expected_version(expected_version)
        if expected is not None and expected != current.version:
            raise ConcurrencyError(wanted, expected, current.version)
        checked = _slot(slot)
        if any(_holds(a, checked) for a in current.appointments):
            return current  # booked and recorded already (a retry after a lost answer)
        key = booking_key(current.id, checked.id, _scheduling_version(self.store.events(wanted)))
        provisional = Appointment(
            id="pending",
            start=checked.start,
            provider_id=checked.target.split("/", 1)[1],
            minutes=checked.minutes,
            location=checked.location_id,
        )
        # guards first (authorization for the date, coverage): a refused booking books nothing
        lifecycle.TABLE.next_status(current, operation, appointment=provisional)
        booking = _book_or_move(adapter, current, checked, key)
        if booking.status not in (BookingStatus.BOOKED, BookingStatus.PENDING):
            # a booking made with this key and cancelled since, in the scheduling system
            raise SchedulingError(
                f"the booking of slot {checked.id!r} for this referral is "
                f"{booking.status.value}; find slots again and choose another"
            )
        appointment = booking.to_appointment(booked_at=self._now())

        def build(r: Referral, now: dt.datetime) -> _Change:
            target = lifecycle.TABLE.next_status(r, operation, appointment=appointment)
            changes: _Change = [
                _record(EventType.APPOINTMENT_CHANGED, appointment_id=a.id, status="cancelled")
                for a in r.appointments
                if a.status is AppointmentStatus.BOOKED
            ]
            return [
                *changes,
                _record(
                    EventType.APPOINTMENT_BOOKED,
                    appointment=appointment,
                    slot_id=checked.id,
                    idempotency_key=key,
                ),
                _status_change(operation, r.status, target, None),
            ]

        # booked already: record it even if someone changed the referral meanwhile (a store
        # failure propagates; calling book again records the same booking)
        latest = current
        for _ in range(3):
            if any(a.id == appointment.id for a in latest.appointments):
                return latest
            now = self._now()
            try:
                return self._commit(actor, latest, build(latest, now), now)
            except ConcurrencyError:
                latest = self.store.load(wanted)
        raise ConcurrencyError(wanted, current.version, latest.version)

    @boundary
    def record_no_show(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """The patient missed the booked appointment."""
        return self._appointment_outcome(
            actor,
            "record_no_show",
            referral_id,
            AppointmentStatus.NOSHOW,
            Sealed(None),
            expected_version,
        )

    @boundary
    def cancel_appointment(
        self,
        actor: Actor,
        referral_id: str,
        reason: str | None = None,
        *,
        expected_version: int | None = None,
    ) -> Referral:
        """Cancel the booked appointment; the referral stays open for a new one.

        Also after a no-show or a visit (BSeR STU2 TIDs 19 and 27), when no further
        appointment will be booked for now; there is then no booked appointment to cancel and
        only the status (and the reason) is recorded.
        """
        sealed: Sealed[Any] = Sealed(reason)
        del reason
        return self._appointment_outcome(
            actor,
            "cancel_appointment",
            referral_id,
            AppointmentStatus.CANCELLED,
            sealed,
            expected_version,
        )

    @boundary
    def record_visit(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """The patient was seen at the booked appointment."""
        return self._appointment_outcome(
            actor,
            "record_visit",
            referral_id,
            AppointmentStatus.FULFILLED,
            Sealed(None),
            expected_version,
        )

    def _appointment_outcome(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        outcome: AppointmentStatus,
        reason: Sealed[Any],
        expected_version: int | None,
    ) -> Referral:
        def build(r: Referral, now: dt.datetime) -> _Change:
            why = _optional(reason, "reason")
            target = lifecycle.TABLE.next_status(r, operation)
            booked = [a for a in r.appointments if a.status is AppointmentStatus.BOOKED]
            changes: _Change = [
                _record(EventType.APPOINTMENT_CHANGED, appointment_id=a.id, status=outcome.value)
                for a in booked[-1:]
            ]
            changes.append(_status_change(operation, r.status, target, why))
            return changes

        return self._change(actor, operation, referral_id, expected_version, build)

    @boundary
    def add_interim_note(
        self,
        actor: Actor,
        referral_id: str,
        text: str,
        *,
        title: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Add an interim note after the visit: the referral is, or stays, ``seen``.

        From ``accepted`` the note says the specialist saw the patient at a visit not booked
        through the desk (BSeR STU2 TID 08).
        """
        sealed: tuple[Sealed[Any], Sealed[Any]] = (Sealed(text), Sealed(title))
        del text, title
        return self._note(
            actor,
            "add_interim_note",
            referral_id,
            AttachmentKind.INTERIM_NOTE,
            *sealed,
            expected_version,
        )

    @boundary
    def complete(
        self,
        actor: Actor,
        referral_id: str,
        consult_note: str,
        *,
        title: str | None = "Consult note",
        expected_version: int | None = None,
    ) -> Referral:
        """Close the loop: record the specialist's consult note; the referral is completed."""
        sealed: tuple[Sealed[Any], Sealed[Any]] = (Sealed(consult_note), Sealed(title))
        del consult_note, title
        return self._note(
            actor,
            "complete",
            referral_id,
            AttachmentKind.CONSULT_NOTE,
            *sealed,
            expected_version,
        )

    def _note(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        kind: AttachmentKind,
        text: Sealed[Any],
        title: Sealed[Any],
        expected_version: int | None,
    ) -> Referral:
        def build(r: Referral, now: dt.datetime) -> _Change:
            target = lifecycle.TABLE.next_status(r, operation)
            note = Attachment(
                id=self._new_id(),
                kind=kind,
                added_at=now,
                title=title.reveal(),
                text=_reason(text, "text").reveal(),
            )
            return [
                _record(EventType.ATTACHMENT_ADDED, attachment=note),
                *_close_appointments(r, target),
                _status_change(operation, r.status, target, None),
            ]

        return self._change(actor, operation, referral_id, expected_version, build)

    @boundary
    def request_cancellation(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """The initiator asks to cancel the referral."""
        sealed: Sealed[Any] = Sealed(reason)
        del reason
        return self._transition(
            actor,
            "request_cancellation",
            referral_id,
            "request_cancellation",
            expected_version,
            reason=sealed,
            needs_reason=True,
        )

    @boundary
    def confirm_cancellation(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """The recipient confirms a requested cancellation (terminal)."""
        return self._transition(
            actor, "confirm_cancellation", referral_id, "confirm_cancellation", expected_version
        )

    @boundary
    def fail(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """The referral could not be fulfilled (terminal)."""
        sealed: Sealed[Any] = Sealed(reason)
        del reason
        return self._transition(
            actor, "fail", referral_id, "fail", expected_version, reason=sealed, needs_reason=True
        )

    @boundary
    def mark_entered_in_error(
        self, actor: Actor, referral_id: str, reason: str, *, expected_version: int | None = None
    ) -> Referral:
        """The referral was created by mistake (terminal)."""
        sealed: Sealed[Any] = Sealed(reason)
        del reason
        return self._transition(
            actor,
            "mark_entered_in_error",
            referral_id,
            "mark_entered_in_error",
            expected_version,
            reason=sealed,
            needs_reason=True,
        )

    def _transition(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        event: str,
        expected_version: int | None,
        *,
        reason: Sealed[Any] | None = None,
        needs_reason: bool = False,
    ) -> Referral:
        def build(r: Referral, now: dt.datetime) -> _Change:
            # validated here, after the permission check: a refused actor learns nothing more
            why = _reason(reason) if needs_reason and reason is not None else None
            target = lifecycle.TABLE.next_status(r, event, checklist=self.checklist)
            return [*_close_appointments(r, target), _status_change(event, r.status, target, why)]

        return self._change(actor, operation, referral_id, expected_version, build)

    # ------------------------------------------------------------------ records

    @boundary
    def attach(
        self,
        actor: Actor,
        referral_id: str,
        kind: AttachmentKind,
        *,
        title: str | None = None,
        text: str | None = None,
        content_type: str = "text/plain",
        expected_version: int | None = None,
    ) -> Referral:
        """Attach a document (medical history, prior-auth form, imaging, lab...)."""
        sealed: tuple[Sealed[Any], Sealed[Any]] = (Sealed(title), Sealed(text))
        del title, text

        def build(r: Referral, now: dt.datetime) -> _Change:
            attachment = Attachment(
                id=self._new_id(),
                kind=kind,
                added_at=now,
                title=sealed[0].reveal(),
                text=sealed[1].reveal(),
                content_type=content_type,
            )
            return [_record(EventType.ATTACHMENT_ADDED, attachment=attachment)]

        return self._change(actor, "attach", referral_id, expected_version, build)

    @boundary
    def log_communication(
        self,
        actor: Actor,
        referral_id: str,
        channel: Channel,
        direction: Direction,
        counterpart: str,
        *,
        summary: str | None = None,
        interpreter_used: bool = False,
        at: dt.datetime | None = None,
        expected_version: int | None = None,
        language: str | None = None,
    ) -> Referral:
        """Document a contact with the patient, the referrer, the payer or the specialist.

        ``at`` (default: now) is any timezone-aware datetime; ``language`` the language the
        contact was held in (a BCP 47 tag such as ``es``), when known.

        .. versionchanged:: 0.1
           ``language``.
        """
        sealed: tuple[Sealed[Any], Sealed[Any]] = (Sealed(counterpart), Sealed(summary))
        del counterpart, summary

        def build(r: Referral, now: dt.datetime) -> _Change:
            communication = Communication(
                id=self._new_id(),
                at=now if at is None else v.as_utc(at, "at"),
                channel=channel,
                direction=direction,
                counterpart=sealed[0].reveal(),
                summary=sealed[1].reveal(),
                interpreter_used=interpreter_used,
                language=language,
            )
            return [_record(EventType.COMMUNICATION_LOGGED, communication=communication)]

        return self._change(actor, "log_communication", referral_id, expected_version, build)

    @boundary
    def notify(
        self,
        actor: Actor,
        referral_id: str,
        moment: Moment | str,
        notifier: Notifier,
        *,
        renderer: Renderer | None = None,
        contact: ContactPoint | None = None,
        language: str | None = None,
        cause: Cause | str | None = None,
        new_date: dt.date | None = None,
        estimate: Money | None = None,
    ) -> Notification:
        """Tell the patient (or, for the consult note, the referrer) about ``moment``: render
        the message (:mod:`referralkit.messages`), send it through ``notifier`` and record it
        as an outbound :class:`~referralkit.model.Communication` in the message's language.

        Idempotent per (referral, moment, version): the version is that of the referral's
        last change other than a logged communication or a sweep's alert, so a retry after a
        crash, or a second call, finds the message recorded and sends nothing
        (``duplicate``). ``contact`` defaults to the patient's first contact the notifier can
        reach, in the order of the message's channel hints; the consult note needs one. A
        failed delivery raises :class:`~referralkit.errors.DeliveryError` and records
        nothing. The communication's
        ``interpreter_used`` stays false: a written message that promises an interpreter does
        not provide one; the event's ``message`` entry records the language, the promise and
        the key.
        """
        # imported here: Jinja2 and Babel load only for a desk that sends messages
        from .errors import DeliveryError
        from .messages import Audience, Moment, Notification, Renderer

        self._authorize(actor, "log_communication", referral_id)
        current = self.store.load(referral_id)
        self._admit(actor, "log_communication", current)
        history = self.store.events(referral_id)
        facts_version = max(
            (e.version for e in history if e.type not in _NOT_FACTS),
            default=current.version,
        )
        if renderer is None:
            # built once per desk, on first use: it compiles every template (about a second)
            renderer = getattr(self, "_renderer", None) or Renderer()
            self._renderer = renderer
        message = renderer.render(
            current,
            moment,
            language=language,
            version=facts_version,
            cause=cause,
            new_date=new_date,
            estimate=estimate,
        )
        if _message_recorded(history, message.key):
            return Notification(current, message, duplicate=True)
        if contact is None:
            if message.moment is Moment.CONSULT_NOTE:
                raise ValidationError("contact", "the consult note needs the referrer's contact")
            contact = _reachable(current, message.channels, notifier)
        receipt = notifier.send(message, contact)
        counterpart = "patient" if message.audience is Audience.PATIENT else current.referring.name
        record = {
            "moment": message.moment.value,
            "key": message.key,
            "language": message.language,
            "requested_language": message.requested_language,
            "complete": message.complete,
            "interpreter_promised": message.interpreter,
            "transport_id": receipt.transport_id,
        }

        def build(r: Referral, now: dt.datetime) -> _Change:
            communication = Communication(
                id=self._new_id(),
                at=receipt.at,
                channel=receipt.channel,
                direction=Direction.OUTBOUND,
                counterpart=counterpart,
                summary=f"{message.moment.value} message sent in {message.language}",
                interpreter_used=False,
                language=message.language,
            )
            return [
                _record(EventType.COMMUNICATION_LOGGED, communication=communication, message=record)
            ]

        # sent already: record it even if someone changed the referral meanwhile
        for _ in range(3):
            try:
                return Notification(
                    self._change(actor, "log_communication", referral_id, None, build),
                    message,
                    receipt,
                )
            except ConcurrencyError:
                if _message_recorded(self.store.events(referral_id), message.key):
                    return Notification(self.store.load(referral_id), message, receipt, True)
        raise DeliveryError(
            receipt.channel.value, "sent, but could not be recorded: the referral kept changing"
        )

    @boundary
    def add_follow_up(
        self,
        actor: Actor,
        referral_id: str,
        kind: FollowUpKind,
        due: dt.date,
        *,
        description: str | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Add something to follow up on by ``due``."""
        sealed: Sealed[Any] = Sealed(description)
        del description

        def build(r: Referral, now: dt.datetime) -> _Change:
            follow_up = FollowUp(id=self._new_id(), kind=kind, due=due, description=sealed.reveal())
            return [_record(EventType.FOLLOW_UP_ADDED, follow_up=follow_up)]

        return self._change(actor, "add_follow_up", referral_id, expected_version, build)

    @boundary
    def complete_follow_up(
        self,
        actor: Actor,
        referral_id: str,
        follow_up_id: str,
        *,
        expected_version: int | None = None,
    ) -> Referral:
        """Mark a follow-up done."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            wanted = v.identifier(follow_up_id, "follow_up_id")
            match = [f for f in r.follow_ups if f.id == wanted]
            if not match:
                raise ValidationError("follow_up_id", f"no follow-up {wanted!r}")
            if match[0].done:
                raise ValidationError("follow_up_id", f"follow-up {wanted!r} is done")
            return [_record(EventType.FOLLOW_UP_COMPLETED, follow_up_id=wanted)]

        return self._change(actor, "complete_follow_up", referral_id, expected_version, build)

    @boundary
    def request_authorization(
        self,
        actor: Actor,
        referral_id: str,
        *,
        expedited: bool = False,
        expected_version: int | None = None,
    ) -> Referral:
        """Record that prior authorization was requested; the decision is due in 72 hours
        (expedited) or 7 calendar days (standard), per CMS-0057-F.

        Allowed when authorization is needed, after a denial (an appeal or a new request),
        and after an approval (to extend or renew one that does not cover a new date).
        """

        def build(r: Referral, now: dt.datetime) -> _Change:
            fast = _flag(expedited, "expedited")
            if r.authorization.status not in (
                AuthStatus.NEEDED,
                AuthStatus.DENIED,
                AuthStatus.APPROVED,
            ):
                raise GuardError(
                    r.id,
                    r.status.value,
                    "request_authorization",
                    f"authorization is {r.authorization.status.value}",
                )
            auth = attrs.evolve(
                r.authorization,
                status=AuthStatus.REQUESTED,
                expedited=fast,
                requested_at=now,
                decided_at=None,
                decision_due_by=now + AUTH_DECISION_WINDOW[fast],
            )
            return [_record(EventType.AUTHORIZATION_CHANGED, authorization=auth)]

        return self._change(actor, "request_authorization", referral_id, expected_version, build)

    @boundary
    def record_authorization(
        self,
        actor: Actor,
        referral_id: str,
        *,
        approved: bool,
        number: str | None = None,
        valid_from: dt.date | None = None,
        valid_to: dt.date | None = None,
        service_codes: Sequence[str] = (),
        units: int | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Record the payer's decision on a requested authorization."""
        sealed: tuple[Sealed[Any], Sealed[Any]] = (Sealed(number), Sealed(service_codes))
        del number, service_codes

        def build(r: Referral, now: dt.datetime) -> _Change:
            verdict = _flag(approved, "approved")
            codes = sealed[1].reveal()
            if isinstance(codes, str) or not isinstance(codes, Sequence):
                raise ValidationError("service_codes", "expected a sequence of code strings")
            if r.authorization.status is not AuthStatus.REQUESTED:
                raise GuardError(
                    r.id,
                    r.status.value,
                    "record_authorization",
                    f"authorization is {r.authorization.status.value}, not requested",
                )
            auth = attrs.evolve(
                r.authorization,
                status=AuthStatus.APPROVED if verdict else AuthStatus.DENIED,
                number=sealed[0].reveal(),
                valid_from=valid_from,
                valid_to=valid_to,
                service_codes=tuple(codes),
                units=units,
                decided_at=now,
            )
            return [_record(EventType.AUTHORIZATION_CHANGED, authorization=auth)]

        return self._change(actor, "record_authorization", referral_id, expected_version, build)

    @boundary
    def acknowledge_self_pay(
        self, actor: Actor, referral_id: str, *, expected_version: int | None = None
    ) -> Referral:
        """Record that the patient agreed to pay for a service that is not covered."""
        return self._change(
            actor,
            "acknowledge_self_pay",
            referral_id,
            expected_version,
            lambda r, now: [_record(EventType.SELF_PAY_ACKNOWLEDGED)],
        )

    @boundary
    def assign(
        self,
        actor: Actor,
        referral_id: str,
        owner: str | None,
        *,
        expected_version: int | None = None,
    ) -> Referral:
        """Make ``owner`` (a coordinator id) responsible, or nobody with ``None``."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            checked = None if owner is None else _text(owner, "owner")
            return [_record(EventType.OWNER_ASSIGNED, owner=checked)]

        return self._change(actor, "assign", referral_id, expected_version, build)

    @boundary
    def assign_specialist(
        self,
        actor: Actor,
        referral_id: str,
        provider: Provider,
        *,
        expected_version: int | None = None,
    ) -> Referral:
        """Choose the specialist; coverage and urgency are decided again for them."""

        def build(r: Referral, now: dt.datetime) -> _Change:
            if not isinstance(provider, Provider):
                raise ValidationError("provider", "expected a Provider")
            changes: _Change = [_record(EventType.TARGET_ASSIGNED, provider=provider)]
            return changes + self._assessments(attrs.evolve(r, target=provider), now)

        return self._change(actor, "assign_specialist", referral_id, expected_version, build)

    @boundary
    def record_survey(
        self,
        actor: Actor,
        referral_id: str,
        score: int,
        *,
        comment: str | None = None,
        at: dt.datetime | None = None,
        expected_version: int | None = None,
    ) -> Referral:
        """Record the patient's satisfaction survey answer: ``score`` from 1 to 5 and an
        optional ``comment`` (PHI). ``at`` is when the patient answered (default: now).

        .. versionadded:: 0.1
        """
        sealed: Sealed[Any] = Sealed(comment)
        del comment

        def build(r: Referral, now: dt.datetime) -> _Change:
            survey = SurveyResponse(
                id=self._new_id(), at=at or now, score=score, comment=sealed.reveal()
            )
            return [_record(EventType.SURVEY_RECORDED, survey=survey)]

        return self._change(actor, "record_survey", referral_id, expected_version, build)

    # ------------------------------------------------------------------ coordination

    def _as_of(self, as_of: dt.datetime | None) -> dt.datetime:
        return self._now() if as_of is None else v.as_utc(as_of, "as_of")

    @boundary
    def assess(
        self, actor: Actor, referral_id: str, *, as_of: dt.datetime | None = None
    ) -> WorklistItem:
        """The referral's clocks, delays with their causes, next action (and the open actions
        behind it) and flags as of ``as_of`` (default: now), by
        :func:`~referralkit.worklist.assess` with the desk's ``worklist_rules``.

        .. versionadded:: 0.1
        """
        self._authorize(actor, "assess", referral_id)
        wanted = v.identifier(referral_id, "referral_id")
        when = self._as_of(as_of)
        referral = self._read(actor, "assess", self.store.load(wanted))
        return assess_item(referral, self.store.events(wanted), when, rules=self.worklist_rules)

    @boundary
    def worklist(
        self,
        actor: Actor,
        *,
        as_of: dt.datetime | None = None,
        limit: int | None = 50,
        owner: str | None = None,
        unassigned: bool = False,
        cause: Cause | str | None = None,
        clock: ClockName | str | None = None,
        specialty: str | None = None,
        **filters: Any,
    ) -> list[WorklistItem]:
        """The open referrals most at risk first, as :class:`~referralkit.worklist.WorklistItem`
        rows (next action, clocks, flags), at most ``limit`` of them (``None``: all).

        The order is :func:`~referralkit.worklist.rank`'s: a breached clock first, then the
        least time left relative to the clock's window, then priority. ``owner``,
        ``unassigned``, ``cause``, ``clock`` and ``specialty`` select rows
        (:class:`~referralkit.worklist.WorklistFilter`); further ``filters`` are
        :class:`~referralkit.storage.Query` fields (``status=``, ``priority=``...) that narrow
        what is read from the store. ``as_of`` (default: now) is the instant the clocks are
        read at; referrals created after it are left out.

        .. versionchanged:: 0.1
           Rows are :class:`~referralkit.worklist.WorklistItem` values ranked by risk (they
           were snapshots in priority order; :meth:`count` and the store's
           :meth:`~referralkit.storage.ReferralStore.query` still list snapshots).

        .. versionchanged:: 0.2
           The ranked head reads each candidate's worklist digest
           (``referralkit.worklist.WorklistDigest``, kept by the SQL stores) instead of
           its snapshot and history, and writes those missing (the first call after an
           upgrade, or after a change, fills them): the same rows.
        """
        sealed = Sealed(filters)  # a filter may be PHI (patient_id)
        del filters
        self._authorize(actor, "worklist")
        when = self._as_of(as_of)
        where = WorklistFilter(
            owner=owner,
            unassigned=_flag(unassigned, "unassigned"),
            cause=None if cause is None else _member(Cause, cause, "cause"),
            clock=None if clock is None else _member(ClockName, clock, "clock"),
            specialty=specialty,
        )
        narrow: dict[str, Any] = {"open_only": True}
        if owner is not None:
            narrow["owner"] = owner
        if specialty is not None:
            narrow["specialty"] = specialty
        query = _query(sealed, **narrow)
        reaches = self._reach(actor, "worklist")
        if limit is not None and self._keys_usable(when):
            digests = (
                self.worklist_rules.checklist == DEFAULT_CHECKLIST and query.patient_id is None
            )
            reaches_facts = self._reach_sides(actor, "worklist") if digests else None
            rows = self._ranked(when, limit, where, query, reaches, reaches_facts)
        else:
            items = (
                assess_item(r, self.store.events(r.id), when, rules=self.worklist_rules)
                for r in self.store.query(query)
                if r.created_at <= when and reaches(r)
            )
            rows = rank(items, where=where, limit=limit)
        self._log(actor, "worklist", [row.referral_id for row in rows])
        return rows

    def _keys_usable(self, when: dt.datetime) -> bool:
        """Whether the store's rank keys can serve a worklist as of ``when``: the store keeps
        them, they were computed with the desk's clock rules, and no referral changed after
        ``when`` (they are lower bounds from their last change on)."""
        if not self.store.keeps_rank_keys or self.worklist_rules.clocks != DEFAULT_CLOCKS:
            return False
        latest = self.store.latest_update()
        return latest is None or latest <= when

    def _ranked(
        self,
        when: dt.datetime,
        limit: int,
        where: WorklistFilter,
        query: Query,
        reaches: Callable[[Referral], bool],
        reaches_facts: Callable[[WorklistDigest], bool] | None = None,
    ) -> list[WorklistItem]:
        """The worklist's head from the stored rank keys
        (:func:`~referralkit.worklist.ranked_head`): only the referrals that may belong in it
        (and that the actor reaches) are read and assessed.

        With ``reaches_facts`` (the scope test on a digest; given for the default rules and
        no filter on the patient), each candidate is read from its worklist digest (see
        :meth:`_digests`) instead of its snapshot and history: the same item, a fraction of
        the reading."""
        store, rules = self.store, self.worklist_rules

        def read(ids: Sequence[str]) -> Iterator[WorklistItem]:
            for referral, events in self._histories(ids):
                if query.matches(referral) and reaches(referral):
                    yield assess_item(referral, events, when, rules=rules)

        in_reach = reaches_facts or (lambda digest: True)

        def read_digests(ids: Sequence[str]) -> Iterator[WorklistItem]:
            late = []
            for digest in self._digests(ids):
                if not _digest_matches(query, digest) or not in_reach(digest):
                    continue
                if digest.until > when:  # changed since the keys were checked: read it all
                    late.append(digest.facts.referral_id)
                else:
                    yield digest.item(when, rules)
            if late:
                yield from read(late)

        heads = store.rank_heads(_RANK_PAGE)  # every bucket's first page in one read
        return ranked_head(
            heads,
            store.rank_page,
            read if reaches_facts is None else read_digests,
            when,
            limit,
            where=where,
            page_size=_RANK_PAGE,
            first_pages=heads,
        )

    def _histories(self, ids: Sequence[str]) -> list[tuple[Referral, list[ReferralEvent]]]:
        """The snapshots and histories of ``ids`` (those that exist; of each history, the
        events of :data:`~referralkit.clocks.TIMELINE_EVENT_TYPES`, all that ``assess`` reads
        of a referral not changed after the instant asked), through a small cache
        of parsed histories checked against the stored versions: a version never changes, so
        a cached one that is current is what the store holds, and a worklist refreshed again
        and again parses only what changed (parsing is most of the cost of reading)."""
        store, cache = self.store, self._history_cache
        with self._history_lock:
            cached = any(i in cache for i in ids)
        if cached:
            current = store.versions(ids)
            with self._history_lock:
                stale = [i for i in current if i not in cache or cache[i][0].version < current[i]]
            fresh = store.histories_selected(stale, TIMELINE_EVENT_TYPES) if stale else []
        else:  # nothing to check: read them all (one read fewer; their versions come along)
            fresh = store.histories_selected(ids, TIMELINE_EVENT_TYPES)
            current = {referral.id: referral.version for referral, _ in fresh}
        with self._history_lock:
            for referral, events in fresh:
                cache[referral.id] = (referral, list(events))
            return _in_order(cache, ids, current)

    def _digests(self, ids: Sequence[str]) -> list[WorklistDigest]:
        """The worklist digests (``referralkit.worklist.WorklistDigest``) of ``ids``
        (those that exist) at their current versions, in the order of ``ids``.

        Read from the store (:meth:`~referralkit.storage.ReferralStore.worklist_digests`,
        one read); one missing, of an earlier version or of another format (a store built
        before digests, a referral changed since) is computed from the history and written
        back, so the first worklist after an upgrade fills the digests of the referrals it
        reads, and later ones read them. Writing is best effort (a cache: a store that
        refuses the write leaves it to the next worklist). Parsed digests are kept in a
        small cache checked against the stored versions, as :meth:`_histories` keeps
        histories."""
        store, cache, rules = self.store, self._digest_cache, self.worklist_rules
        with self._history_lock:
            cached = any(i in cache for i in ids)
        if cached:
            current = store.versions(ids)
            with self._history_lock:
                stale = [i for i in current if i not in cache or cache[i].version != current[i]]
            stored = store.worklist_digests(stale) if stale else {}
        else:  # nothing to check: read them all (their versions come along)
            stored = store.worklist_digests(ids)
            current = {i: version for i, (version, _) in stored.items()}
        fresh: dict[str, WorklistDigest] = {}
        missing = []
        for referral_id, (version, text) in stored.items():
            digest = None if text is None else WorklistDigest.loads(text)
            if (
                digest is None
                or digest.version != version
                or digest.facts.referral_id != referral_id
            ):
                missing.append(referral_id)
            else:
                fresh[referral_id] = digest
        if missing:
            written = []
            for referral, events in store.histories_selected(missing, TIMELINE_EVENT_TYPES):
                digest = WorklistDigest.of(referral, events, rules)
                fresh[referral.id] = digest
                written.append((referral.id, digest.version, digest.dumps()))
            if written and store.keeps_worklist_digests:
                # a cache: a busy or read-only store leaves it to the next worklist
                with contextlib.suppress(StorageError):
                    store.write_worklist_digests(written)
        with self._history_lock:
            cache.update(fresh)
            return _in_order(cache, ids, current)

    @boundary
    def claim(
        self,
        actor: Actor,
        count: int = 1,
        *,
        lease: dt.timedelta = dt.timedelta(minutes=30),
        **filters: Any,
    ) -> list[WorklistItem]:
        """Lease up to ``count`` open referrals that nobody holds to ``actor`` (the lease's
        owner is the actor's id) until ``lease`` from now; the claimed referrals as worklist
        rows, most at risk first.

        The store picks them (:meth:`~referralkit.storage.ReferralStore.claim`: the first
        free ones in its indexed order, priority then due date, so two coordinators claiming
        at once never get the same referral); ``filters`` are
        :class:`~referralkit.storage.Query` fields (``specialty=``, ``owner=``...) that narrow
        what may be claimed. A claim writes nothing to the referral's history. Requires the
        ``claim`` permission (coordinators).

        .. versionadded:: 0.1
        """
        sealed = Sealed(filters)
        del filters
        self._authorize(actor, "claim")
        query = _query(sealed)
        now = self._now()
        reaches = self._reach(actor, "claim")
        taken: list[str] = []
        aside: list[str] = []
        try:
            while len(taken) < count:
                got = self.store.claim(
                    actor.id, count - len(taken), now=now, lease=lease, query=query
                )
                if not got:
                    break
                for rid in got:
                    (taken if reaches(self.store.load(rid)) else aside).append(rid)
        finally:
            if aside:
                # out of the actor's scope: held only for the moment of the claim
                self.store.release(actor.id, aside)
        self._log(actor, "claim", taken)
        items = (
            assess_item(referral, events, now, rules=self.worklist_rules)
            for referral, events in self.store.histories(taken)
        )
        return rank(items)

    @boundary
    def renew(
        self, actor: Actor, ids: Sequence[str], *, lease: dt.timedelta = dt.timedelta(minutes=30)
    ) -> list[str]:
        """Extend ``actor``'s own live leases on ``ids`` to ``lease`` from now; the ids
        renewed (a lease another coordinator holds, or one that has ended, is not).

        .. versionadded:: 0.1
        """
        self._authorize(actor, "claim")
        return self.store.renew(actor.id, ids, now=self._now(), lease=lease)

    @boundary
    def release(self, actor: Actor, ids: Sequence[str]) -> list[str]:
        """Give back ``actor``'s own leases on ``ids``; the ids released (others' leases are
        kept).

        .. versionadded:: 0.1
        """
        self._authorize(actor, "claim")
        return self.store.release(actor.id, ids)

    @boundary
    def audit(
        self,
        actor: Actor,
        referral_id: str | None = None,
        *,
        as_of: dt.datetime | None = None,
    ) -> Iterator[Finding]:
        """The record audit's findings (:mod:`referralkit.discrepancies`, with the desk's
        ``audit_rules``) as of ``as_of`` (default: now): for one referral, or, without
        ``referral_id``, for the whole store, likely duplicates included, streamed as the
        store's histories are read (:meth:`~referralkit.storage.ReferralStore.export`).

        The permission is checked when called, not when the findings are first read.

        .. versionadded:: 0.1
        """
        self._authorize(actor, "audit", referral_id)
        when = self._as_of(as_of)
        if referral_id is None:
            # each referral's snapshot and its last status change: all the audit reads of a
            # history (AUDIT_EVENT_TYPES), so the other events are never decoded
            if self._reaches_all(actor):
                # a SQL store decodes only the parts of each snapshot the checks read
                audited = self.store._audit_histories(AUDIT_EVENT_TYPES)
                return self._audit_store(when, self._recorded_all(actor, "audit", audited))
            histories = self.store.export_selected(AUDIT_EVENT_TYPES, latest=True)
            return self._audit_store(when, self._recorded(actor, "audit", histories))
        wanted = v.identifier(referral_id, "referral_id")
        referral = self._read(actor, "audit", self.store.load(wanted))
        events = self.store.events(wanted)
        return iter(audit_record(referral, when, events=events, rules=self.audit_rules))

    @boundary_iter
    def _audit_store(
        self, when: dt.datetime, histories: Iterator[History] | Iterator[AuditHistory]
    ) -> Iterator[Finding]:
        yield from audit_all(histories, when, rules=self.audit_rules)

    @property
    def event_rules(self) -> EventRules:
        """The event rules :meth:`sweep` runs (built on first use when not given)."""
        if self._event_rules is None:
            from .rules import load
            from .rules.model import Kind
            from .rules.policies import shipped_paths
            from .rules.timeline import EventRules

            [path] = shipped_paths(Kind.EVENT)
            self._event_rules = EventRules(load(path), engine="auto")
        return self._event_rules

    @boundary
    def sweep(self, actor: Actor, as_of: dt.datetime | None = None) -> SweepReport:
        """Run the event rules over every open referral as of ``as_of`` (default: now) and
        record each alert raised or cleared since the last sweep, once, as an
        :attr:`~referralkit.events.EventType.ALERT_RAISED` or
        :attr:`~referralkit.events.EventType.ALERT_CLEARED` event (:mod:`referralkit.alerts`).

        What a scheduler calls (every few minutes: deadlines pass with no change to the
        referral, so nothing else would notice them). Idempotent: a second sweep with
        nothing new writes nothing. Each referral's alerts are written with the version they
        were computed from (optimistic concurrency), so a sweep that races another sweep, or
        any change, in another thread or process reads the referral again and records only
        what is still missing; a referral that keeps changing is left to the next sweep
        (``skipped``). The desk's other operations do not run the event rules: the sweep is
        the mechanism.

        **What it reads.** With the shipped event ruleset on a store that keeps rank keys,
        each open referral has a sweep key (:data:`~referralkit.worklist.SWEEP_BUCKET`): every
        change sets it to the change's time, and the sweep, after evaluating the referral,
        moves it to when its rules next have something to record with no further change (the
        earliest alert still to come, or the day a rule comes into force). The sweep then
        reads only the referrals whose key is due by ``as_of``, in keyset pages of the key's
        index; the others have nothing new, and ``swept`` counts the referrals read. With
        other rules (or a rule that ends, ``valid_to``), an ``as_of`` before a stored
        referral's last change, or a store without rank keys, it reads every open referral.

        **How it reads.** A page of referrals at a time: their snapshots and, of their
        histories, only the events the event rules read (status changes, authorization
        changes, urgency assessments, and the alerts already recorded); the alerts of a
        page's referrals are written in one transaction (one disk flush), or, when another
        change got there first, referral by referral as above. The rank keys of the
        referrals written are computed from their events of
        :data:`~referralkit.clocks.TIMELINE_EVENT_TYPES` (the rest read in one read a page).

        .. versionadded:: 0.1
        """
        return self._sweep(actor, as_of)

    def _sweep(
        self, actor: Actor, as_of: dt.datetime | None, *, reference: bool = False
    ) -> SweepReport:
        """:meth:`sweep`; with ``reference``, the plain way the paged one is tested against:
        referral by referral, each whole history read and each referral's alerts written
        in a transaction of their own."""
        self._authorize(actor, "sweep")
        when = self._as_of(as_of)
        rules = self.event_rules
        keyed = self._sweep_keys_usable(rules, when)
        if not reference:
            return self._sweep_paged(actor, rules, when, keyed)
        swept = written = retried = skipped = 0
        raised: list[Alert] = []
        cleared: list[ActiveAlert] = []
        reaches = self._reach(actor, "sweep")
        pending: list[tuple[str, int, float]] = []
        for current, history in self._sweep_due(when) if keyed else self._sweep_all(when):
            if not reaches(current):
                continue
            swept += 1
            outcome = self._sweep_one(actor, rules, current, history, when, upcoming=keyed)
            new, gone, wrote, tries, left, after = outcome
            retried += tries
            skipped += left
            if wrote:
                written += 1
                raised += new
                cleared += gone
            if after is not None:
                pending.append((current.id, *after))
            if len(pending) >= _SWEEP_PAGE:
                self.store.set_sweep_due(pending)
                pending = []
        if pending:
            self.store.set_sweep_due(pending)
        return SweepReport(when, swept, tuple(raised), tuple(cleared), written, retried, skipped)

    def _sweep_paged(
        self, actor: Actor, rules: EventRules, when: dt.datetime, keyed: bool
    ) -> SweepReport:
        """The sweep a page at a time (see :meth:`sweep`): the same alerts recorded, the same
        report, as the reference way (:meth:`_sweep` with ``reference``). With the sweep keys
        and an actor who reaches every referral, the rules are evaluated over the events
        alone, and only the referrals with alerts to write have their snapshots read
        (:meth:`_sweep_light`)."""
        tally = _SweepTally()
        reaches = self._reach(actor, "sweep")
        pending = tally.pending
        if keyed and self._reaches_all(actor):
            pages: Iterator[list[_SweepWrite]] = (
                self._sweep_light(actor, rules, when, page, tally)
                for page in self._sweep_read_pages(when)
            )
        else:
            pages = (
                self._sweep_evaluated(rules, when, page, reaches, keyed, tally)
                for page in (self._sweep_due_pages(when) if keyed else self._sweep_all_pages(when))
            )
        for writes in pages:
            if writes and self._sweep_write(actor, writes):
                for current, _, new, gone, upcoming_at in writes:
                    tally.written += 1
                    tally.raised += new
                    tally.cleared += gone
                    pending.append((current.id, current.version + 1, upcoming_at))
            else:
                # another change came first (nothing of the page was written): referral by
                # referral, as the reference does (a write refused, a read again, a retry)
                for current, history, *_ in writes:
                    tally.one(
                        current.id,
                        self._sweep_one(actor, rules, current, history, when, upcoming=keyed),
                    )
            if len(pending) >= _SWEEP_PAGE:
                self.store.set_sweep_due(pending)
                pending.clear()
        if pending:
            self.store.set_sweep_due(pending)
        return SweepReport(
            when,
            tally.swept,
            tuple(tally.raised),
            tuple(tally.cleared),
            tally.written,
            tally.retried,
            tally.skipped,
        )

    def _sweep_evaluated(
        self,
        rules: EventRules,
        when: dt.datetime,
        page: Sequence[tuple[Referral, list[ReferralEvent]]],
        reaches: Callable[[Referral], bool],
        keyed: bool,
        tally: _SweepTally,
    ) -> list[_SweepWrite]:
        """The writes a page of snapshots and histories needs (the others' sweep keys
        noted in ``tally``)."""
        writes: list[_SweepWrite] = []
        for current, history in page:
            if not reaches(current):
                continue
            tally.swept += 1
            new, gone, upcoming_at = self._alert_changes(
                rules, current.id, history, when, upcoming=keyed
            )
            if new or gone:
                writes.append((current, history, new, gone, upcoming_at))
            else:
                tally.pending.append((current.id, current.version, upcoming_at))
        return writes

    def _sweep_light(
        self,
        actor: Actor,
        rules: EventRules,
        when: dt.datetime,
        page: _SweepReads,
        tally: _SweepTally,
    ) -> list[_SweepWrite]:
        """:meth:`_sweep_evaluated` over a page of events alone (the rules read nothing
        else): only the referrals with alerts to write have their snapshots read, in one
        read; one changed since its events were read is read again and recorded on its own,
        as the reference does when a write loses a race."""
        due = []
        for referral_id, version, history in page:
            tally.swept += 1
            new, gone, upcoming_at = self._alert_changes(
                rules, referral_id, history, when, upcoming=True
            )
            if new or gone:
                due.append((referral_id, version, history, new, gone, upcoming_at))
            else:
                tally.pending.append((referral_id, version, upcoming_at))
        writes: list[_SweepWrite] = []
        loaded = {r.id: r for r in self.store._load_many([d[0] for d in due])} if due else {}
        for referral_id, version, history, new, gone, upcoming_at in due:
            current = loaded.get(referral_id)
            if current is not None and current.version == version:
                writes.append((current, history, new, gone, upcoming_at))
                continue
            tally.retried += 1
            if current is not None and not current.status.is_terminal:
                outcome = self._sweep_one(actor, rules, current, None, when, upcoming=True)
                tally.one(referral_id, outcome)
        return writes

    def _sweep_write(self, actor: Actor, writes: Sequence[_SweepWrite]) -> bool:
        """Record the alert changes of a page's referrals in one transaction; False (nothing
        written) when one of them changed since it was read."""
        batch: list[tuple[Referral, list[ReferralEvent], int]] = []
        for current, _, new, gone, _ in writes:
            changes: _Change = [(EventType.ALERT_RAISED, Sealed(raised_payload(a))) for a in new]
            changes += [
                (EventType.ALERT_CLEARED, Sealed(cleared_payload(a, "no longer due"))) for a in gone
            ]
            batch.append(self._prepared(actor, current, changes, self._now()))
        try:
            self.store._save_swept(batch, self._sweep_timelines(writes))
        except ConcurrencyError:
            return False
        for referral, events, _ in batch:
            logger.debug(
                "referral %s v%d by %s: %s",
                referral.id,
                referral.version,
                actor.id,
                ", ".join(e.type for e in events),
            )
        return True

    def _sweep_timelines(self, writes: Sequence[_SweepWrite]) -> list[list[ReferralEvent] | None]:
        """For each referral the sweep writes, its events the clocks read (what its stored
        rank keys are computed from: :meth:`ReferralStore._save_swept`): those the sweep read
        and the rest of :data:`~referralkit.clocks.TIMELINE_EVENT_TYPES`, read for the whole
        page at once, in history order; ``None`` for one changed since it was read (its
        write is refused)."""
        if not self.store.keeps_rank_keys:
            return [None] * len(writes)
        extra = {
            referral_id: (version, events)
            for referral_id, version, events in self.store._sweep_reads(
                [current.id for current, *_ in writes], _TIMELINE_EXTRA_TYPES
            )
        }
        timelines: list[list[ReferralEvent] | None] = []
        for current, history, *_ in writes:
            version, events = extra.get(current.id, (None, []))
            if version != current.version:
                timelines.append(None)
                continue
            events += [e for e in history if e.type in _TIMELINE_READ_TYPES]
            events.sort(key=_history_order)
            timelines.append(events)
        return timelines

    def _sweep_due_pages(
        self, when: dt.datetime
    ) -> Iterator[list[tuple[Referral, list[ReferralEvent]]]]:
        """:meth:`_sweep_due` a page at a time, each history selected to the events the
        sweep reads."""
        limit, after, seen = when.timestamp(), None, set()
        while True:
            page = self.store.rank_page(SWEEP_BUCKET, after, _SWEEP_PAGE)
            due = [referral_id for key, referral_id in page if key <= limit]
            fresh = [i for i in due if i not in seen]
            seen.update(fresh)
            found = self.store.histories_selected(fresh, _SWEEP_EVENT_TYPES) if fresh else []
            yield [(r, list(events)) for r, events in found if not r.status.is_terminal]
            if len(due) < len(page) or len(page) < _SWEEP_PAGE:
                return
            after = page[-1]

    def _sweep_read_pages(self, when: dt.datetime) -> Iterator[_SweepReads]:
        """:meth:`_sweep_due_pages` without the snapshots: each due open referral's id,
        version and the events the sweep reads (:meth:`ReferralStore._sweep_reads`)."""
        limit, after, seen = when.timestamp(), None, set()
        while True:
            page = self.store.rank_page(SWEEP_BUCKET, after, _SWEEP_PAGE)
            due = [referral_id for key, referral_id in page if key <= limit]
            fresh = [i for i in due if i not in seen]
            seen.update(fresh)
            yield self.store._sweep_reads(fresh, _SWEEP_EVENT_TYPES) if fresh else []
            if len(due) < len(page) or len(page) < _SWEEP_PAGE:
                return
            after = page[-1]

    def _sweep_all_pages(
        self, when: dt.datetime
    ) -> Iterator[list[tuple[Referral, list[ReferralEvent]]]]:
        """Every open referral created by ``when`` (:meth:`_sweep_all`) a page at a time,
        each history selected to the events the sweep reads."""
        ids = [r.id for r in self.store.query(Query(open_only=True)) if r.created_at <= when]
        for start in range(0, len(ids), _SWEEP_PAGE):
            found = self.store.histories_selected(
                ids[start : start + _SWEEP_PAGE], _SWEEP_EVENT_TYPES
            )
            yield [
                (r, list(events))
                for r, events in found
                if not r.status.is_terminal and r.created_at <= when
            ]

    def _sweep_keys_usable(self, rules: EventRules, when: dt.datetime) -> bool:
        """Whether the sweep can read only the referrals its stored keys say are due: the
        store keeps them, the rules are the shipped ruleset the keys were set with, no rule
        ends (``valid_to``: an alert would be cleared with no change), and no referral changed
        after ``when``."""
        if not self.store.keeps_rank_keys or any(r.valid_to for r in rules.ruleset.rules):
            return False
        if (rules.ruleset.name, rules.ruleset.version) != _shipped_event_ruleset():
            return False
        latest = self.store.latest_update()
        return latest is None or latest <= when

    def _sweep_all(self, when: dt.datetime) -> Iterator[tuple[Referral, None]]:
        for current in self.store.query(Query(open_only=True)):
            if current.created_at <= when:
                yield current, None

    def _sweep_due(self, when: dt.datetime) -> Iterator[tuple[Referral, list[ReferralEvent]]]:
        """The open referrals whose sweep key is due at ``when`` (changed since their last
        sweep, or with an alert to record by then), in keyset pages of the key's index."""
        limit, after, seen = when.timestamp(), None, set()
        while True:
            page = self.store.rank_page(SWEEP_BUCKET, after, _SWEEP_PAGE)
            due = [referral_id for key, referral_id in page if key <= limit]
            fresh = [i for i in due if i not in seen]
            seen.update(fresh)
            for referral, events in self.store.histories(fresh):
                if not referral.status.is_terminal:
                    yield referral, list(events)
            if len(due) < len(page) or len(page) < _SWEEP_PAGE:
                return
            after = page[-1]

    def _sweep_one(
        self,
        actor: Actor,
        rules: EventRules,
        current: Referral,
        history: list[ReferralEvent] | None,
        when: dt.datetime,
        *,
        upcoming: bool,
    ) -> tuple[list[Alert], list[ActiveAlert], bool, int, bool, tuple[int, float] | None]:
        """Record one referral's alert changes: (raised, cleared, written, retries, left for
        the next sweep, (the version now stored, when its sweep is next due) or None)."""
        retried = 0
        for attempt in range(4):
            if attempt:
                retried += 1
                current = self.store.load(current.id)
                if current.status.is_terminal:
                    return [], [], False, retried, False, None
                history = None
            if history is None:
                history = self.store.events(current.id)
            new, gone, upcoming_at = self._alert_changes(
                rules, current.id, history, when, upcoming=upcoming
            )
            if not new and not gone:
                return [], [], False, retried, False, (current.version, upcoming_at)
            changes: _Change = [(EventType.ALERT_RAISED, Sealed(raised_payload(a))) for a in new]
            changes += [
                (EventType.ALERT_CLEARED, Sealed(cleared_payload(a, "no longer due"))) for a in gone
            ]
            try:
                self._commit(actor, current, changes, self._now())
            except ConcurrencyError:
                continue
            return new, gone, True, retried, False, (current.version + 1, upcoming_at)
        return [], [], False, retried, True, None

    @staticmethod
    def _alert_changes(
        rules: EventRules,
        referral_id: str,
        history: Sequence[ReferralEvent],
        when: dt.datetime,
        *,
        upcoming: bool = False,
    ) -> tuple[list[Alert], list[ActiveAlert], float]:
        """What the sweep records for one referral: the rules due at ``when`` over the events
        up to then, against the alerts its history already holds; and (with ``upcoming``)
        when, with no further change, the next alert would be due, in POSIX seconds
        (:data:`~referralkit.worklist.NO_CLOCK` for never)."""
        try:
            rules.observe(referral_id, [e for e in history if e.at <= when])
            if upcoming:
                due, later = rules.due_now_and_later(referral_id, when, _FAR_FUTURE)
            else:
                due, later = rules.due(referral_id, when), []
        finally:
            rules.close(referral_id)
        new, gone = alert_changes(due, history, ruleset=rules.ruleset.name, as_of=when)
        if not upcoming:
            return new, gone, NO_CLOCK
        standing = set(active_alerts(history))
        standing |= {(a.ruleset, a.rule_id) for a in new}
        standing -= {(a.ruleset, a.rule_id) for a in gone}
        times = [
            a.at.timestamp()
            for a in later
            if (a.ruleset, a.rule_id) not in standing and a.at > when
        ]
        # a rule that comes into force later: its alert is due from its first day
        times += [
            start.timestamp()
            for rule in rules.ruleset.rules
            if rule.valid_from is not None
            and (start := dt.datetime.combine(rule.valid_from, dt.time(), dt.UTC)) > when
        ]
        return new, gone, min(times, default=NO_CLOCK)

    # ------------------------------------------------------------------ the one write path

    def _change(
        self,
        actor: Actor,
        operation: str,
        referral_id: str,
        expected_version: int | None,
        build: Callable[[Referral, dt.datetime], _Change],
    ) -> Referral:
        self._authorize(actor, operation, referral_id)
        wanted = v.identifier(referral_id, "referral_id")
        expected = _expected_version(expected_version)
        current = self.store.load(wanted)
        self._admit(actor, operation, current)
        if expected is not None and expected != current.version:
            raise ConcurrencyError(wanted, expected, current.version)
        now = self._now()
        return self._commit(actor, current, build(current, now), now)

    def _prepared(
        self, actor: Actor, current: Referral | None, changes: _Change, now: dt.datetime
    ) -> tuple[Referral, list[ReferralEvent], int]:
        """A change to save: the referral after it, its events, the version it expects."""
        version = 1 if current is None else current.version + 1
        referral_id = (
            current.id if current is not None else changes[0][1].reveal()["referral"]["id"]
        )
        events = [
            ReferralEvent(referral_id, version, index, now, actor.id, kind.value, payload.reveal())
            for index, (kind, payload) in enumerate(changes)
        ]
        return apply_all(current, events), events, version - 1

    def _commit(
        self, actor: Actor, current: Referral | None, changes: _Change, now: dt.datetime
    ) -> Referral:
        referral, events, expected = self._prepared(actor, current, changes, now)
        referral_id, version = referral.id, expected + 1
        self.store.save(referral, events, expected)
        logger.debug(
            "referral %s v%d by %s: %s",
            referral_id,
            version,
            actor.id,
            ", ".join(e.type for e in events),
        )
        return referral

    # ------------------------------------------------------------------ provenance (issue 11)

    def _provenance(self, kind: str, decider: object, now: dt.datetime) -> dict[str, Any]:
        """The ``provenance`` payload of a ``kind`` decision by ``decider``: worked out, and
        its rule versions kept in the store, on the first decision it makes for this desk."""
        cached = self._provenances.get(kind)
        if cached is not None and cached[0] is decider:
            return cached[1]
        payload = keep_provenance(self.store, kind, decider, now).to_payload()
        self._provenances[kind] = (decider, payload)
        return payload

    def _urgency_record(self, assessment: UrgencyAssessment, now: dt.datetime) -> _Record:
        return _record(
            EventType.URGENCY_ASSESSED,
            assessment=assessment,
            provenance=self._provenance("urgency", self.urgency, now),
        )

    @boundary
    def explain(self, actor: Actor, referral_id: str) -> Explanation:
        """Why the referral got its stored coverage decision and urgency assessment: the
        policy version each was made with, the rules that fired and why the others did not,
        and whether the stored rules still give the stored outputs
        (:func:`referralkit.rules.provenance.explain`). Reads only.

        .. versionadded:: 0.2
        """
        self._authorize(actor, "explain", referral_id)
        wanted = v.identifier(referral_id, "referral_id")
        self._read(actor, "explain", self.store.load(wanted))
        return explain_decisions(self.store, wanted)

    @boundary
    def replay(self, actor: Actor, referral_id: str, *, as_of: dt.datetime | None = None) -> Replay:
        """Decide the referral again with the policy version that made each stored decision
        (or, with ``as_of``, the version in use on that date) and report any difference from
        the stored decisions (:func:`referralkit.rules.provenance.replay`). Reads only.

        .. versionadded:: 0.2
        """
        self._authorize(actor, "replay", referral_id)
        wanted = v.identifier(referral_id, "referral_id")
        self._read(actor, "replay", self.store.load(wanted))
        when = None if as_of is None else v.as_utc(as_of, "as_of")
        return replay_decisions(self.store, wanted, as_of=when)

    # ------------------------------------------------------------------ scopes and the access log

    def _authorize(self, actor: Actor, operation: str, referral_id: object = None) -> None:
        """Check that one of ``actor``'s roles allows ``operation``; a refusal is recorded in
        the access log (with the referral named, when it is a valid id) and raised."""
        if not isinstance(actor, Actor):
            raise ValidationError("actor", "expected an Actor")
        if actor.may(operation):
            return
        named = (
            (referral_id,)
            if isinstance(referral_id, str) and v.storable_text(referral_id) is None
            else ()
        )
        self._log(actor, operation, named, AccessOutcome.DENIED, reason="role")
        raise PermissionDeniedError(actor.id, operation)

    def _emergency(self, actor: Actor) -> BreakGlass | None:
        """The actor's break-glass grant when it is one this desk's access log holds and it
        is live now; else None (an expired, forged or unknown grant counts for nothing)."""
        grant = actor.emergency
        if grant is None:
            return None
        known = self._grants.get(grant.grant_id)
        if known is None:
            self._access.flush()
            found = self.store.access_records(
                AccessQuery(actor=actor.id, grant=grant.grant_id, outcome=AccessOutcome.BREAK_GLASS)
            )
            if not any(
                r.action == "break_glass"
                and r.at == grant.granted_at
                and grant.expires_at - grant.granted_at <= self.scope.break_glass_limit
                for r in found
            ):
                return None
            known = self._grants[grant.grant_id] = grant
        return known if known == grant and known.active(self._now()) else None

    def _reaches(self, actor: Actor, operation: str, referral: Referral) -> bool:
        """Whether a role of ``actor`` that allows ``operation`` has ``referral`` in scope."""
        if self.scope.unscoped(actor):
            return True
        return any(
            (operation in PERMISSIONS[role] or operation in ACCESS_PERMISSIONS[role])
            and in_scope(actor, role, referral)
            for role in actor.roles
        )

    def _reach(self, actor: Actor, operation: str) -> Callable[[Referral], bool]:
        """The scope test of ``actor`` doing ``operation``, for a query over many referrals."""
        if self._reaches_all(actor):
            return lambda r: True
        return lambda r: self._reaches(actor, operation, r)

    def _reach_sides(self, actor: Actor, operation: str) -> Callable[[WorklistDigest], bool]:
        """:meth:`_reach` on worklist digests (they hold the sides and owner a scope reads)."""
        if self._reaches_all(actor):
            return lambda digest: True
        roles = [
            role
            for role in actor.roles
            if operation in PERMISSIONS[role] or operation in ACCESS_PERMISSIONS[role]
        ]
        return lambda digest: any(
            in_scope_of(actor, role, digest.facts.sides, digest.facts.owner) for role in roles
        )

    def _reaches_all(self, actor: Actor) -> bool:
        """Whether ``actor`` reaches every referral (unscoped, or under break-glass), so a
        query over many need not test each (:meth:`_reach`)."""
        return self._emergency(actor) is not None or self.scope.unscoped(actor)

    def _admit(
        self, actor: Actor, operation: str, referral: Referral, *, write: bool = True
    ) -> BreakGlass | None:
        """Check that ``referral`` is in ``actor``'s scope for ``operation`` (already allowed
        by a role); return the live break-glass grant, if any. A refusal is recorded and
        raised; a write under a grant is recorded, flagged (its events record the change)."""
        grant = None if actor.emergency is None else self._emergency(actor)
        if grant is None and not self._reaches(actor, operation, referral):
            self._log(actor, operation, (referral.id,), AccessOutcome.DENIED, reason="scope")
            raise PermissionDeniedError(
                actor.id, f"{operation} referral {referral.id!r} (out of its scope)"
            )
        if grant is not None and write:
            self._log(actor, operation, (referral.id,), grant=grant)
        return grant

    def _read(self, actor: Actor, operation: str, referral: Referral) -> Referral:
        """``referral`` once admitted, its read recorded."""
        grant = self._admit(actor, operation, referral, write=False)
        self._log(actor, operation, (referral.id,), grant=grant)
        return referral

    def _recorded(
        self, actor: Actor, operation: str, histories: Iterator[History] | None = None
    ) -> Iterator[History]:
        """The store's histories (its export, or ``histories`` read from it) that ``actor``
        reaches for ``operation``, streamed: each page of them recorded in the access log
        before it is handed on (memory stays bounded; a reader that stops early has
        disclosed only what was recorded)."""
        reaches = self._reach(actor, operation)
        source = self.store.export() if histories is None else histories
        yield from self._recorded_all(actor, operation, (h for h in source if reaches(h[0])))

    def _recorded_all(
        self, actor: Actor, operation: str, histories: Iterable[_Read]
    ) -> Iterator[_Read]:
        """:meth:`_recorded` without the reach test, for histories the actor reaches
        (:meth:`_reaches_all`: the store audit's reads): a page at a time, each recorded in
        the access log before it is handed on."""
        page: list[_Read] = []
        for history in histories:
            page.append(history)
            if len(page) >= _EXPORT_PAGE:
                self._log(actor, operation, [r.id for r, _ in page])
                yield from page
                page = []
        if page:
            self._log(actor, operation, [r.id for r, _ in page])
            yield from page

    def _log(
        self,
        actor: Actor,
        action: str,
        referral_ids: Sequence[str],
        outcome: AccessOutcome = AccessOutcome.ALLOWED,
        *,
        reason: str | None = None,
        grant: BreakGlass | None = None,
    ) -> None:
        """Append one record to the store's access log (flagged, with the grant, when the
        actor holds a live break-glass grant)."""
        if grant is None and actor.emergency is not None:
            grant = self._emergency(actor)
        if grant is not None and outcome is AccessOutcome.ALLOWED:
            outcome = AccessOutcome.BREAK_GLASS
        self._access.add(
            _access_record(self._now(), actor, action, referral_ids, outcome, reason, grant),
            urgent=outcome is not AccessOutcome.ALLOWED,
        )

    @boundary
    def break_glass(
        self, actor: Actor, reason: str, *, duration: dt.timedelta = dt.timedelta(hours=1)
    ) -> Actor:
        """Emergency access: ``actor`` with a break-glass grant that, for ``duration`` (at
        most the scope policy's ``break_glass_limit``), lets its roles reach every referral.

        The grant and every access made under it are recorded in the access log, flagged
        for review, with ``reason`` (required: why the usual scope is not enough). The grant
        widens the scope only: the roles still decide the operations. An expired grant
        counts for nothing.

        .. versionadded:: 0.1
        """
        sealed = Sealed(reason)
        del reason
        self._authorize(actor, "break_glass")
        why = sealed.reveal()
        if not isinstance(why, str) or not why.strip() or v.storable_text(why) is not None:
            raise ValidationError("reason", "expected a non-blank reason")
        if not isinstance(duration, dt.timedelta) or duration <= dt.timedelta(0):
            raise ValidationError("duration", "expected a positive timedelta")
        if duration > self.scope.break_glass_limit:
            raise ValidationError(
                "duration", f"longer than the policy allows ({self.scope.break_glass_limit})"
            )
        now = self._now()
        grant = BreakGlass(self._new_id(), why[:2000], now, now + duration)
        self._access.add(
            AccessRecord(
                at=now,
                actor=actor.id,
                action="break_glass",
                outcome=AccessOutcome.BREAK_GLASS,
                roles=tuple(sorted(r.value for r in actor.roles)),
                organization=actor.organization,
                purpose=actor.purpose,
                reason=grant.reason,
                grant=grant.grant_id,
                flagged=True,
            ),
            urgent=True,
        )
        self._grants[grant.grant_id] = grant
        return attrs.evolve(actor, emergency=grant)

    @boundary
    def access_log(
        self,
        actor: Actor,
        *,
        actor_id: str | None = None,
        referral_id: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        outcome: AccessOutcome | str | None = None,
        flagged: bool | None = None,
        limit: int | None = None,
    ) -> list[AccessRecord]:
        """The access log's records (:mod:`referralkit.access`), oldest first: those of
        ``actor_id``, naming ``referral_id``, from ``since`` (inclusive) to ``until``
        (exclusive), with ``outcome``, ``flagged`` for review (break-glass, denials).

        Only an auditor may read it. A scoped auditor reads the records of its own
        organisation's actors; an unscoped one (see :class:`~referralkit.privacy.ScopePolicy`)
        every record. The read is itself recorded (after it is made).

        .. versionadded:: 0.1
        """
        self._authorize(actor, "access_log", referral_id)
        query = AccessQuery(
            actor=actor_id,
            referral_ids=None if referral_id is None else {referral_id},
            since=None if since is None else v.as_utc(since, "since"),
            until=None if until is None else v.as_utc(until, "until"),
            outcome=None if outcome is None else _member(AccessOutcome, outcome, "outcome"),
            organization=None if self.scope.unscoped(actor) else actor.organization,
            flagged=flagged,
            limit=limit,
        )
        self._access.flush()
        if query.organization is None and not self.scope.unscoped(actor):
            found: list[AccessRecord] = []  # a strict policy, an auditor of no organisation
        else:
            found = self.store.access_records(query)
        self._log(actor, "access_log", () if referral_id is None else (referral_id,))
        return found

    @boundary
    def query(self, actor: Actor, query: Query = Query()) -> list[Referral]:
        """The referrals matching ``query`` (a :class:`~referralkit.storage.Query`) that
        ``actor`` reaches, in its order and paged by its limit and offset; recorded as one
        access naming them.

        .. versionadded:: 0.1
        """
        self._authorize(actor, "get")
        if not isinstance(query, Query):
            raise ValidationError("query", "expected a Query")
        reaches = self._reach(actor, "get")
        found = [
            r for r in self.store.query(attrs.evolve(query, limit=None, offset=0)) if reaches(r)
        ]
        end = None if query.limit is None else query.offset + query.limit
        found = found[query.offset : end]
        self._log(actor, "query", [r.id for r in found])
        return found

    @boundary
    def export(self, actor: Actor) -> Iterator[History]:
        """Every referral ``actor`` reaches with its whole history, in id order (as
        :meth:`~referralkit.storage.ReferralStore.export`): the audited path for analytics
        and bulk exports. The referrals exported are recorded in the access log a page at a
        time (one record per 16 referrals), each page before it is handed on.

        .. versionadded:: 0.1
        """
        self._authorize(actor, "export")
        return self._export(actor)

    @boundary_iter
    def _export(self, actor: Actor) -> Iterator[History]:
        yield from self._recorded(actor, "export")

    @boundary
    def export_referrals(self, actor: Actor) -> Iterator[Referral]:
        """Every referral ``actor`` reaches, in id order, without its history: :meth:`export`
        for a reader of the referrals only (the FHIR export), recorded in the access log in
        the same way, reading no event
        (:meth:`~referralkit.storage.ReferralStore.export_referrals`).

        .. versionadded:: 0.1
        """
        self._authorize(actor, "export")
        return self._export_referrals(actor)

    @boundary_iter
    def _export_referrals(self, actor: Actor) -> Iterator[Referral]:
        histories: Iterator[History] = ((r, ()) for r in self.store.export_referrals())
        for referral, _ in self._recorded(actor, "export", histories):
            yield referral

    def view(self, actor: Actor) -> ReferralStore:
        """A read-only :class:`~referralkit.storage.ReferralStore` acting as ``actor``
        through this desk: every read is scoped and recorded, every write refused. Give it
        to the analytics (``referrals_frame(desk.view(actor), deidentify=False,
        actor=actor)``) and to anything else that reads referrals for a user.

        .. versionadded:: 0.1
        """
        from ._view import AuditedView

        if not isinstance(actor, Actor):
            raise ValidationError("actor", "expected an Actor")
        return AuditedView(self, actor)

    def _patient_referrals(self, actor: Actor, operation: str, patient_id: object) -> list[str]:
        """The ids of the patient's referrals ``actor`` reaches; a patient whose referrals
        are all out of scope is a recorded denial."""
        wanted = Sealed(v.identifier(patient_id, "patient_id"))
        reaches = self._reach(actor, operation)
        held = self.store.query(Query(patient_id=wanted.reveal(), order="updated"))
        found = [r.id for r in held if reaches(r)]
        if held and not found:
            self._log(actor, operation, [r.id for r in held], AccessOutcome.DENIED, reason="scope")
            raise PermissionDeniedError(actor.id, f"{operation} (no referral of it in scope)")
        return found

    @boundary
    def export_patient(
        self, actor: Actor, patient_id: str, *, format: str = "json"
    ) -> dict[str, Any]:
        """Everything the store holds about one patient that ``actor`` reaches (HIPAA right
        of access, 45 CFR 164.524): each referral's snapshot and whole history, and the
        accounting of disclosures (:meth:`disclosures`), as JSON data (``format="json"``);
        or as FHIR R4 (``format="fhir"``): a ``collection`` Bundle of each referral's
        resources (:func:`~referralkit.interop.fhir.to_fhir`). Recorded in the access log.

        .. versionadded:: 0.1
        """
        sealed = Sealed(patient_id)
        del patient_id
        self._authorize(actor, "export_patient")
        if format not in ("json", "fhir"):
            raise ValidationError("format", "expected 'json' or 'fhir'")
        ids = sorted(self._patient_referrals(actor, "export_patient", sealed.reveal()))
        self._access.flush()
        disclosed = self.store.access_records(AccessQuery(referral_ids=ids)) if ids else []
        self._log(actor, "export_patient", ids)
        now = self._now()
        if format == "fhir":
            from .interop.fhir import to_fhir

            entries = [entry for i in ids for entry in to_fhir(self.store.load(i)).get("entry", [])]
            unique = {e["fullUrl"]: e for e in entries}
            return {
                "resourceType": "Bundle",
                "type": "collection",
                "timestamp": now.isoformat(),
                "entry": [{"fullUrl": url, "resource": e["resource"]} for url, e in unique.items()],
            }
        return {
            "exported_at": now.isoformat(),
            "referrals": [
                {
                    "referral": to_dict(self.store.load(i)),
                    "history": [to_dict(e) for e in self.store.events(i)],
                }
                for i in ids
            ],
            "disclosures": [r.to_json() for r in disclosed],
        }

    @boundary
    def disclosures(
        self, actor: Actor, patient_id: str, *, since: dt.datetime | None = None
    ) -> list[AccessRecord]:
        """The accounting of disclosures for one patient (45 CFR 164.528; and the access
        report of HIPAA's audit controls): every access-log record naming one of the
        patient's referrals that ``actor`` reaches, from ``since``, oldest first. Every
        access is listed, reads for treatment and operations included; the application
        selects what its accounting must hold (by ``purpose``). Recorded in the access log.

        .. versionadded:: 0.1
        """
        sealed = Sealed(patient_id)
        del patient_id
        self._authorize(actor, "disclosures")
        ids = self._patient_referrals(actor, "disclosures", sealed.reveal())
        query = AccessQuery(
            referral_ids=ids, since=None if since is None else v.as_utc(since, "since")
        )
        self._access.flush()
        found = self.store.access_records(query) if ids else []
        self._log(actor, "disclosures", ids)
        return found
