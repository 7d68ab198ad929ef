"""The access log: who read, exported or was refused which referrals, when, and why.

HIPAA's audit controls (45 CFR 164.312(b)): the desk (:class:`~referralkit.desk.ReferralDesk`)
appends one :class:`AccessRecord` for every read of a referral or its history, every query
result (worklist, count, record audit), every export, every denial and every break-glass grant
or use. Writes are recorded as events already (:class:`~referralkit.model.ReferralEvent`); a
refused write is recorded here.

The log lives in the same store as the referrals
(:meth:`~referralkit.storage.ReferralStore.append_access`,
:meth:`~referralkit.storage.ReferralStore.access_records`): a table in SQLite and PostgreSQL
that the database refuses to update or delete from (triggers), a list in memory. Records hold
ids, never PHI: the actor's id, roles and organisation, the operation, the referral ids, the
outcome, the purpose of use and, for break-glass, the stated reason (free text, so PHI: never
in ``repr``).

Auditors read it through :meth:`~referralkit.desk.ReferralDesk.access_log` and
``referralkit access-log --db URL``; a patient's accounting of disclosures
(:meth:`~referralkit.desk.ReferralDesk.disclosures`) is the log's records about that
patient's referrals.

>>> import referralkit as rk
>>> from referralkit.testing import FakeClock, sample_request
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=FakeClock())
>>> coordinator = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> referral = desk.intake(coordinator, sample_request())
>>> _ = desk.get(coordinator, referral.id)
>>> auditor = rk.Actor("audit-1", {rk.Role.AUDITOR})
>>> [(r.actor, r.action, r.outcome.value) for r in desk.access_log(auditor)]
[('coord-1', 'get', 'allowed')]
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import attrs

from . import _validators as v
from .errors import StorageError, ValidationError
from .privacy import Actor

__all__ = [
    "GENESIS",
    "AccessBuffer",
    "AccessOutcome",
    "AccessQuery",
    "AccessRecord",
    "MemoryAccessLog",
    "actor_record",
    "at_text",
    "chain_hash",
    "chained_row",
    "chain_values",
    "record_fields",
]


class AccessOutcome(enum.StrEnum):
    """What became of an access: allowed, refused, or allowed under a break-glass grant."""

    ALLOWED = "allowed"
    DENIED = "denied"
    BREAK_GLASS = "break_glass"


def _ids(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("referral_ids", "expected a collection of referral ids")
    return tuple(value)


def _roles(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _id_set(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("referral_ids", "expected a collection of referral ids")
    return frozenset(value)


def _check_ids(_: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        v.identifier(item, attribute.name)


@attrs.frozen
class AccessRecord:
    """One access: ``actor`` (its ``roles`` and ``organization``) did ``action`` on
    ``referral_ids`` at ``at`` with ``outcome``, for ``purpose``.

    ``seq`` is the record's position in the log (assigned by the store: 0 until stored).
    ``grant`` names the break-glass grant the access was made under, or that it created;
    ``flagged`` marks it for review (every break-glass record is). ``reason`` is the
    break-glass reason, or why an access was denied (no PHI: an operation name, a scope).
    """

    at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    actor: str = attrs.field(validator=v.text(max_length=200))
    action: str = attrs.field(validator=v.text(pattern=r"[a-z_-]+", max_length=60))
    outcome: AccessOutcome = attrs.field(validator=v.member(AccessOutcome))
    referral_ids: tuple[str, ...] = attrs.field(default=(), converter=_ids, validator=_check_ids)
    roles: tuple[str, ...] = attrs.field(default=(), converter=_roles)
    organization: str | None = attrs.field(default=None, validator=v.optional(v.text()))
    purpose: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=100)))
    reason: str | None = attrs.field(
        **v.PHI_FIELD, default=None, validator=v.optional(v.text(max_length=2000))
    )
    grant: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=100)))
    flagged: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))
    seq: int = attrs.field(default=0, validator=v.row_count)
    chain: str | None = attrs.field(
        default=None, validator=v.optional(v.text(pattern="[0-9a-f]{64}", max_length=64))
    )
    """The record's link in the log's hash chain (:mod:`referralkit.tamper`), set by the store."""

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data (what ``referralkit access-log --json`` prints)."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "roles": list(self.roles),
            "organization": self.organization,
            "action": self.action,
            "outcome": self.outcome.value,
            "referral_ids": list(self.referral_ids),
            "purpose": self.purpose,
            "reason": self.reason,
            "grant": self.grant,
            "flagged": self.flagged,
            "chain": self.chain,
        }


_CHECKED_ACTIONS: set[str] = set()
"""The actions :func:`actor_record` has seen :class:`AccessRecord` accept."""

_ROLE_TUPLES: dict[frozenset[Any], tuple[str, ...]] = {}
"""An actor's roles as a record lists them, by the actor's set of roles (a few sets)."""

# the slots of AccessRecord in field order, set directly (what its __init__ ends with)
_SLOTS: Final = tuple(
    AccessRecord.__dict__[field.name].__set__ for field in attrs.fields(AccessRecord)
)


def actor_record(
    at: dt.datetime,
    actor: Actor,
    action: str,
    referral_ids: Sequence[str],
    outcome: AccessOutcome = AccessOutcome.ALLOWED,
) -> AccessRecord:
    """The record of ``actor`` doing ``action`` on ``referral_ids`` at ``at`` with
    ``outcome`` (flagged unless allowed; no reason, no grant): equal to the
    :class:`AccessRecord` built from the same values, built without checking again what is
    checked already: the actor's id, roles, organisation and purpose (an
    :class:`~referralkit.privacy.Actor` refuses what a record would refuse), an action
    accepted before, an instant in UTC. The referral ids are checked. Every audited read
    builds one: the validators and converters were most of its cost. Anything else is
    built (and checked) as an :class:`AccessRecord`."""
    roles = _ROLE_TUPLES.get(actor.roles) if type(actor) is Actor else None
    if (
        roles is None
        or type(at) is not dt.datetime
        or at.tzinfo is not dt.UTC
        or at.fold
        or action not in _CHECKED_ACTIONS
        or type(outcome) is not AccessOutcome
    ):
        record = AccessRecord(
            at=at,
            actor=actor.id,
            action=action,
            outcome=outcome,
            referral_ids=tuple(referral_ids),
            roles=tuple(sorted(r.value for r in actor.roles)),
            organization=actor.organization,
            purpose=actor.purpose,
            flagged=outcome is not AccessOutcome.ALLOWED,
        )
        if type(actor) is Actor:
            _CHECKED_ACTIONS.add(action)
            _ROLE_TUPLES[actor.roles] = record.roles
        return record
    ids = _ids(referral_ids)
    for item in ids:
        v.identifier(item, "referral_ids")
    record = object.__new__(AccessRecord)
    for put, value in zip(
        _SLOTS,
        (
            at,
            actor.id,
            action,
            outcome,
            ids,
            roles,
            actor.organization,
            actor.purpose,
            None,
            None,
            outcome is not AccessOutcome.ALLOWED,
            0,
            None,
        ),
        strict=False,  # one value a slot, as written above
    ):
        put(record, value)
    return record


@attrs.frozen
class AccessQuery:
    """Which access records to read: every filter left ``None`` matches everything.

    ``since`` is inclusive, ``until`` exclusive; ``referral_ids`` matches a record naming any
    of them; ``limit`` keeps the first records (oldest first).
    """

    actor: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=200)))
    referral_ids: frozenset[str] | None = attrs.field(default=None, converter=_id_set)
    since: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    until: dt.datetime | None = attrs.field(
        default=None, converter=v.to_utc, validator=v.optional(v.utc_datetime)
    )
    outcome: AccessOutcome | None = attrs.field(
        default=None, validator=v.optional(v.member(AccessOutcome))
    )
    organization: str | None = attrs.field(default=None, validator=v.optional(v.text()))
    grant: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=100)))
    flagged: bool | None = attrs.field(
        default=None, validator=v.optional(v.instance(bool, "a bool"))
    )
    limit: int | None = attrs.field(default=None, validator=v.optional(v.row_count))

    def matches(self, record: AccessRecord) -> bool:
        """Whether ``record`` passes every filter (the semantics every store follows)."""
        return (
            (self.actor is None or record.actor == self.actor)
            and (self.referral_ids is None or not self.referral_ids.isdisjoint(record.referral_ids))
            and (self.since is None or record.at >= self.since)
            and (self.until is None or record.at < self.until)
            and (self.outcome is None or record.outcome is self.outcome)
            and (self.organization is None or record.organization == self.organization)
            and (self.grant is None or record.grant == self.grant)
            and (self.flagged is None or record.flagged is self.flagged)
        )


def check_records(records: object) -> Sequence[AccessRecord]:
    """``records`` if it is a sequence of :class:`AccessRecord`, else a ValidationError."""
    if not isinstance(records, Sequence) or isinstance(records, str):
        raise ValidationError("records", "expected a sequence of AccessRecord")
    for index, record in enumerate(records):
        if not isinstance(record, AccessRecord):
            raise ValidationError(f"records[{index}]", "expected an AccessRecord")
    return records


def check_access_query(query: object) -> AccessQuery:
    """``query`` if it is an :class:`AccessQuery`, else a ValidationError naming it."""
    if not isinstance(query, AccessQuery):
        raise ValidationError("query", f"expected an AccessQuery, got {type(query).__name__}")
    return query


class MemoryAccessLog:
    """An access log kept in a list (the memory store's, and the default of a
    :class:`~referralkit.storage.ReferralStore` adapter that keeps none itself)."""

    def __init__(self) -> None:
        self._records: list[AccessRecord] = []
        self._chains: list[str] = []

    def append(self, records: Sequence[AccessRecord]) -> None:
        """Append ``records``, chained; they are numbered on from the last one when read."""
        last = self._chains[-1] if self._chains else GENESIS
        self._chains += chain_values(last, [record_fields(r, at_text(r.at)) for r in records])
        self._records += records

    def restore(self, rows: Sequence[tuple[Sequence[Any], str]], after: str) -> None:
        """Append records exactly as another log kept them (see
        ``ReferralStore.restore_access``): their chain values are kept, not recomputed."""
        head = self._chains[-1] if self._chains else GENESIS
        if head != after:
            raise StorageError(RESTORE_CLASH)
        for fields, chain in rows:
            self._records.append(record_of_fields(fields))
            self._chains.append(chain)

    def rows(self) -> list[tuple[int, list[Any], str]]:
        """Every record as the hash chain sees it (see ``ReferralStore.access_chain``)."""
        return [
            (seq, record_fields(r, at_text(r.at)), chain)
            for seq, (r, chain) in enumerate(zip(self._records, self._chains, strict=True), 1)
        ]

    def read(self, query: AccessQuery) -> list[AccessRecord]:
        """The records ``query`` matches, oldest first."""
        found = [
            attrs.evolve(r, seq=seq, chain=self._chains[seq - 1])
            for seq, r in enumerate(self._records, 1)
            if query.matches(r)
        ]
        return found if query.limit is None else found[: query.limit]


class AccessBuffer:
    """Access records on their way to a store's log, written ``size`` at a time.

    A record waits until ``size`` records wait, or the oldest has waited ``max_age`` seconds
    (checked when the next record comes), or :meth:`flush` is called (the desk flushes
    before it reads the log, when it closes, and at interpreter exit); an ``urgent`` record
    (a denial, a break-glass grant or use) is written at once with those waiting. With
    ``size`` 1 every record is written when made. A failed write keeps the records for the
    next flush.
    """

    def __init__(
        self, append: Callable[[Sequence[AccessRecord]], None], size: int, max_age: float
    ) -> None:
        self._append = append
        self.size = size
        self.max_age = max_age
        self._pending: list[AccessRecord] = []
        self._first = 0.0
        self._lock = threading.Lock()

    def add(self, record: AccessRecord, *, urgent: bool = False) -> None:
        """Buffer ``record``; write what waits when due."""
        with self._lock:
            if not self._pending:
                self._first = time.monotonic()
            self._pending.append(record)
            due = (
                urgent
                or len(self._pending) >= self.size
                or time.monotonic() - self._first >= self.max_age
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write every waiting record to the log now."""
        with self._lock:
            pending, self._pending = self._pending, []
            if not pending:
                return
            try:
                self._append(pending)
            except BaseException:
                self._pending[:0] = pending
                raise

    def __len__(self) -> int:
        return len(self._pending)


# ---------------------------------------------------------------------------- the hash chain

GENESIS: Final = "0" * 64
"""The chain value before the first record."""


def at_text(at: dt.datetime) -> str:
    """An instant as the chain hashes it (fixed-width UTC, microseconds)."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def record_fields(record: AccessRecord, at: str) -> list[Any]:
    """What the chain hashes of ``record`` (every field but ``seq`` and ``chain``)."""
    return [
        at,
        record.actor,
        ",".join(record.roles),
        record.organization,
        record.action,
        record.outcome.value,
        _ids_json(record.referral_ids),
        record.purpose,
        record.reason,
        record.grant,
        int(record.flagged),
    ]


_CANONICAL: Final = json.JSONEncoder(separators=(",", ":"))

# The C encoders behind ``json.dumps(ids)`` and ``_CANONICAL.encode``, built once (each of
# those calls builds one: most of the cost of encoding a short list); the same text
_C_ENCODER: Final = getattr(json.encoder, "c_make_encoder", None)


def _c_encoder(item_separator: str, key_separator: str) -> Any:
    if _C_ENCODER is None:  # pragma: no cover - CPython has the C encoder
        return None
    # no circularity markers: the values are flat lists of text, numbers and None
    return _C_ENCODER(
        None,
        _CANONICAL.default,
        json.encoder.encode_basestring_ascii,
        None,
        key_separator,
        item_separator,
        False,
        False,
        True,
    )


_IDS_ENCODE: Final = _c_encoder(", ", ": ")
_CHAIN_ENCODE: Final = _c_encoder(",", ":")


def _ids_json(ids: Sequence[str]) -> str:
    """``json.dumps(list(ids))``."""
    if len(ids) == 1:  # one read's record: an id JSON writes as it is, quoted
        only = ids[0]
        if only.isascii() and only.isprintable() and '"' not in only and "\\" not in only:
            return f'["{only}"]'
    if _IDS_ENCODE is None:  # pragma: no cover - CPython has the C encoder
        return json.dumps(list(ids))
    return "".join(_IDS_ENCODE(list(ids), 0))


def chain_hash(previous: str, fields: Sequence[Any]) -> str:
    """The chain value of a record: SHA-256 of the previous value and the record's fields
    (as compact JSON)."""
    values = [previous, *fields]
    text = (
        "".join(_CHAIN_ENCODE(values, 0))
        if _CHAIN_ENCODE is not None
        else _CANONICAL.encode(values)  # pragma: no cover - CPython has the C encoder
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def chained_row(previous: str, record: AccessRecord, at: str, reason: str | None) -> list[Any]:
    """The SQL row of ``record`` after the chain value ``previous``: its fields as
    :func:`record_fields` gives them, with ``at`` and ``reason`` as the store keeps them,
    then its chain value (:func:`chain_hash` of the same fields), built in one list (every
    audited read appends one)."""
    values = [
        previous,
        at,
        record.actor,
        ",".join(record.roles),
        record.organization,
        record.action,
        record.outcome.value,
        _ids_json(record.referral_ids),
        record.purpose,
        reason,
        record.grant,
        int(record.flagged),
    ]
    text = (
        "".join(_CHAIN_ENCODE(values, 0))
        if _CHAIN_ENCODE is not None
        else _CANONICAL.encode(values)  # pragma: no cover - CPython has the C encoder
    )
    values[0] = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    values.append(values.pop(0))
    return values


def chain_values(last: str, rows: Iterable[Sequence[Any]]) -> list[str]:
    """The chain values of ``rows`` (each the fields the chain hashes of one record),
    appended after the chain value ``last``: what every store writes with its records, for
    the access log and for the events (:mod:`referralkit.tamper`)."""
    values = []
    for fields in rows:
        last = chain_hash(last, fields)
        values.append(last)
    return values


def record_of_fields(fields: Sequence[Any]) -> AccessRecord:
    """The record whose chain fields (:func:`record_fields`) are ``fields`` (not yet stored:
    no ``seq``, no ``chain``)."""
    at = dt.datetime.fromisoformat(fields[0]).replace(tzinfo=dt.UTC)
    return record_from_row((0, fields[0], *fields[1:], None), at)


RESTORE_CLASH: Final = (
    "the access log does not end where the restored records begin: restore a dump's "
    "access log into a store whose log is empty"
)


# ---------------------------------------------------------------------------- SQL rows

ROW_COLUMNS: Final = (
    "at, actor, roles, organization, action, outcome, referral_ids, purpose, reason, grant_id, "
    "flagged, chain"
)


def record_row(record: AccessRecord, at: Any, chain: str) -> tuple[Any, ...]:
    """The SQL row of ``record`` (``at`` as the store keeps instants)."""
    return (
        at,
        record.actor,
        ",".join(record.roles),
        record.organization,
        record.action,
        record.outcome.value,
        _ids_json(record.referral_ids),
        record.purpose,
        record.reason,
        record.grant,
        record.flagged,
        chain,
    )


def record_from_row(row: Sequence[Any], at: dt.datetime) -> AccessRecord:
    """The record of a SQL row ``seq, <ROW_COLUMNS>`` (``at`` already parsed)."""
    (
        seq,
        _,
        actor,
        roles,
        organization,
        action,
        outcome,
        ids,
        purpose,
        reason,
        grant,
        flag,
        chain,
    ) = row
    return AccessRecord(
        seq=int(seq),
        at=at,
        actor=actor,
        roles=tuple(roles.split(",")) if roles else (),
        organization=organization,
        action=action,
        outcome=AccessOutcome(outcome),
        referral_ids=tuple(json.loads(ids)),
        purpose=purpose,
        reason=reason,
        grant=grant,
        flagged=bool(flag),
        chain=chain,
    )
