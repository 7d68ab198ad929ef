"""Snapshots read back fast: a stored referral's JSON data built into the model without cattrs.

:meth:`RecordCodec.referral <referralkit.storage._json.RecordCodec.referral>` reads every
snapshot a store hands out (``load``, ``query``, ``histories``, ``export``). Through cattrs
(:func:`referralkit.serialization.from_dict`) one referral costs hundreds of microseconds:
the converter's dispatch, its detailed validation, and every field's validators, for data
the store wrote itself from a referral the model had checked (its seal says so). Bulk reads
(the record audit of a whole store, the sweep) spent most of their time there.

:func:`fast_referral` builds the same :class:`~referralkit.model.Referral` from the data
directly: for each model class a builder worked out once from its attrs fields (the
per-class structure hooks), setting each field with the value cattrs would give it (ISO
times parsed to UTC, enums looked up by value, JSON lists to tuples, an integer in a float
field as a float, defaults for missing fields), without running the field validators again.
Anything the builder does not recognise (an unknown or missing field, a value of another JSON
type, an enum value that is not a member, a naive time, a malformed date) makes it give up
(:class:`Slow`), and the caller reads the data the slow way, which accepts it or refuses it
with the usual error naming the field. A differential test holds the two to the same result
on random referrals (``tests/storage/test_bulk_reads.py``).

Only data from a sealed record goes through here (:meth:`RecordCodec.referral` decides): the
seal's checksum shows it is text this store wrote from a checked referral; an unsealed row
(from before sealing, or edited by hand) gets every check.

The record audit reads less still: :class:`AuditSnapshot` holds only the parts of a referral
its checks read (:data:`AUDIT_PATHS`, and the requested services, the communications and the
attachments only when a check will read them: :data:`AUDIT_WHEN`), which a SQL store extracts
from the stored JSON in the database (SQLite's ``json_extract``) so that the rest of the
snapshot is never decoded; :func:`audit_snapshot` builds it with the same conversions the
builders make (its parts that are model values, an authorization or an appointment, *are*
built by them). Anything it does not recognise makes it give up (:class:`Slow`) and the
caller reads the whole snapshot instead.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, Final

import attrs

from ..errors import ReferralKitError
from ..model import (
    Appointment,
    Attachment,
    AttachmentKind,
    Authorization,
    AuthStatus,
    Code,
    Communication,
    FollowUp,
    Referral,
    Status,
)

__all__ = [
    "AUDIT_PATHS",
    "AUDIT_WHEN",
    "AuditEvent",
    "AuditSnapshot",
    "Slow",
    "audit_snapshot",
    "fast_referral",
]

_UTC: Final = dt.UTC
_NOTHING: Final = attrs.NOTHING
_fromiso: Final = dt.datetime.fromisoformat
_datefromiso: Final = dt.date.fromisoformat
_setattr: Final = object.__setattr__
_new: Final = object.__new__


class Slow(ReferralKitError):  # noqa: N818 - a signal, not an error anyone sees
    """The data needs the slow path (cattrs and the validators) to be read or refused
    (caught by the codec: it never leaves the store)."""


_SLOW: Final = Slow()

Convert = Callable[[Any], Any]


def _float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return float(value)
    raise _SLOW


def _datetime(value: Any) -> Any:
    if type(value) is not str:
        raise _SLOW
    try:
        parsed = _fromiso(value)
    except ValueError:
        raise _SLOW from None
    tz = parsed.tzinfo
    if tz is _UTC:  # fromisoformat gives fold 0
        return parsed
    if tz is None:  # naive: the model refuses it
        raise _SLOW
    try:
        return parsed.astimezone(_UTC)
    except (OverflowError, ValueError):
        raise _SLOW from None


def _date(value: Any) -> Any:
    if type(value) is not str:
        raise _SLOW
    try:
        return _datefromiso(value)
    except ValueError:
        raise _SLOW from None


def _enum(kind: type[enum.Enum]) -> Convert:
    members: dict[Any, Any] = {m.value: m for m in kind}

    def convert(value: Any) -> Any:
        if type(value) is str:
            found = members.get(value)
            if found is not None:
                return found
        raise _SLOW

    return convert


def _converter(annotation: Any) -> Convert:
    """The conversion of a JSON value to a field type the generated code does not convert
    inline; ``TypeError`` for a type it does not handle (the class then always takes the
    slow path)."""
    if annotation is float:
        return _float
    if annotation is dt.datetime:
        return _datetime
    if annotation is dt.date:
        return _date
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):
        return _enum(annotation)
    if isinstance(annotation, type) and attrs.has(annotation):
        return _builder(annotation)
    raise TypeError(annotation)


_INLINE: Final = {str: "str", int: "int", bool: "bool"}


def _conversion(annotation: Any, n: int, scope: dict[str, Any]) -> list[str]:
    """The lines that convert ``value`` (present in the data) for a field of ``annotation``:
    the common kinds inline, others through their conversion function."""
    optional = None
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in annotation.__args__ if a is not types.NoneType]
        if len(args) == 1 and len(annotation.__args__) == 2:
            optional = args[0]
    inner = optional if optional is not None else annotation
    test = "    elif value is None:\n        pass\n" if optional is not None else ""
    kind = _INLINE.get(inner)
    if kind is not None:
        return [f"{test}    elif type(value) is not {kind}:", "        raise _SLOW"]
    if isinstance(inner, type) and issubclass(inner, enum.StrEnum):
        scope[f"_members{n}"] = {m.value: m for m in inner}
        return [
            f"{test}    else:",
            f"        value = _members{n}.get(value) if type(value) is str else None",
            "        if value is None:",
            "            raise _SLOW",
        ]
    if typing.get_origin(inner) is tuple and optional is None:
        args = inner.__args__
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
            item_kind = _INLINE.get(item)
            lines = [
                "    elif type(value) is not list:",
                "        raise _SLOW",
            ]
            if item_kind is not None:
                return [
                    *lines,
                    "    else:",
                    "        for item in value:",
                    f"            if type(item) is not {item_kind}:",
                    "                raise _SLOW",
                    "        value = tuple(value)",
                ]
            scope[f"_item{n}"] = _converter(item)
            return [
                *lines,
                "    else:",
                f"        value = tuple([_item{n}(item) for item in value])",
            ]
    scope[f"_convert{n}"] = _converter(inner)
    return [f"{test}    else:", f"        value = _convert{n}(value)"]


@functools.cache
def _builder(cls: type) -> Convert:
    """The builder of an attrs model class, generated once from its fields: straight-line
    code, a string, an integer or a boolean checked inline, other values converted by the
    field's function, defaults for the fields the data leaves out."""
    hints = typing.get_type_hints(cls)
    scope: dict[str, Any] = {
        "_SLOW": _SLOW,
        "_NOTHING": _NOTHING,
        "_new": _new,
        "_setattr": _setattr,
        "_cls": cls,
        "str": str,
        "int": int,
        "bool": bool,
        "dict": dict,
        "type": type,
    }
    lines = ["def build(data):"]
    lines.append("    if type(data) is not dict or not _names.issuperset(data):")
    lines.append("        raise _SLOW")
    lines.append("    self = _new(_cls)")
    lines.append("    get = data.get")
    names = []
    for n, field in enumerate(attrs.fields(cls)):
        if not field.init or field.alias != field.name or not field.name.isidentifier():
            raise TypeError(cls)
        names.append(field.name)
        annotation = hints[field.name]
        default = field.default
        lines.append(f"    value = get({field.name!r}, _NOTHING)")
        lines.append("    if value is _NOTHING:")
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            if default.takes_self:
                raise TypeError(cls)
            scope[f"_factory{n}"] = default.factory
            lines.append(f"        value = _factory{n}()")
        elif default is _NOTHING:
            lines.append("        raise _SLOW")
        else:
            scope[f"_default{n}"] = default
            lines.append(f"        value = _default{n}")
        lines.extend(_conversion(annotation, n, scope))
        slot = cls.__dict__.get(field.name)
        if isinstance(slot, types.MemberDescriptorType):
            # the slot's own setter: what object.__setattr__ finds, without the lookup
            scope[f"_set{n}"] = slot.__set__
            lines.append(f"    _set{n}(self, value)")
        else:
            lines.append(f"    _setattr(self, {field.name!r}, value)")
    lines.append("    return self")
    scope["_names"] = frozenset(names)
    exec(compile("\n".join(lines), f"<referralkit snapshot builder {cls.__name__}>", "exec"), scope)  # noqa: S102 - code generated from the model's own field names
    build: Convert = scope["build"]
    return build


def _never(data: Any) -> Any:
    raise _SLOW


@functools.cache
def _referral_builder() -> Convert:
    try:
        return _builder(Referral)
    except TypeError:  # a field of a type the builders do not know: every read is slow
        return _never


def fast_referral(data: Any) -> Referral:
    """The referral stored ``data`` (decoded JSON of a sealed snapshot) holds, built directly;
    :class:`Slow` when it needs cattrs and the validators to be read or refused."""
    built: Referral = _referral_builder()(data)
    return built


# --------------------------------------------------------------------------- the audit's view

AUDIT_PATHS: Final = (
    "id",
    "status",
    "held_from",
    "updated_at",
    "received_at",
    "created_at",
    "closed_at",
    "source_id",
    "specialty",
    "patient.id",
    "patient.interpreter_needed",
    "authorization",
    "appointments",
    "follow_ups",
)
"""The parts of a stored snapshot every audited referral needs, in the order
:func:`audit_snapshot` takes them (JSON paths without the leading ``$.``)."""

# the statuses whose checks read the authorization and the appointments (the open ones and
# completed), and those whose checks read the follow-ups (the closed ones audited)
_AUTHORIZED_BY: Final = frozenset(s for s in Status if s is Status.COMPLETED or not s.is_terminal)
_FOLLOWED_BY: Final = frozenset({Status.COMPLETED, Status.FAILED})

AUDIT_WHEN: Final = (
    ("services", "authorization.status", (AuthStatus.APPROVED.value,)),
    ("communications", "patient.interpreter_needed", (True,)),
    ("attachments", "status", (Status.SEEN.value, Status.ON_HOLD.value)),
)
"""The parts read only when a check reads them: ``(path, path of the condition, the values
it must hold)``: the requested services when the authorization is approved (the services
check), the communications when the patient needs an interpreter, the attachments when the
referral is seen or on hold (the consult note check). In this order after
:data:`AUDIT_PATHS`; ``None`` where the condition does not hold."""


class AuditEvent(typing.NamedTuple):
    """What the record audit reads of a referral's last status change (the age of its
    status): the event's type and time, from a row whose seal was verified; its payload,
    which no check reads, is not decoded."""

    type: str
    at: dt.datetime


class AuditPatient:
    """What the audit reads of the patient: the id (grouping likely duplicates, never shown)
    and whether an interpreter is needed."""

    __slots__ = ("id", "interpreter_needed")

    def __init__(self, patient_id: str, interpreter_needed: bool) -> None:
        self.id = patient_id
        self.interpreter_needed = interpreter_needed

    def __repr__(self) -> str:
        return "AuditPatient(<redacted>)"


class AuditSnapshot:
    """The parts of a stored referral the record audit reads
    (:mod:`referralkit.discrepancies`), under the names the :class:`~referralkit.model.Referral`
    gives them; the services, communications and attachments are empty where no check reads
    them (see :data:`AUDIT_WHEN`). Built by :func:`audit_snapshot`; only the audit sees it."""

    __slots__ = (
        "appointments",
        "attachments",
        "authorization",
        "closed_at",
        "communications",
        "created_at",
        "follow_ups",
        "held_from",
        "id",
        "patient",
        "received_at",
        "services",
        "source_id",
        "specialty",
        "status",
        "updated_at",
    )

    id: str
    status: Status
    held_from: Status | None
    updated_at: dt.datetime
    received_at: dt.datetime | None
    created_at: dt.datetime
    closed_at: dt.datetime | None
    source_id: str | None
    specialty: str
    patient: AuditPatient
    authorization: Authorization
    appointments: tuple[Appointment, ...]
    follow_ups: tuple[FollowUp, ...]
    services: tuple[Code, ...]
    communications: tuple[Communication, ...]
    attachments: tuple[Attachment, ...]

    def attachment_kinds(self) -> frozenset[AttachmentKind]:
        return frozenset(a.kind for a in self.attachments)

    def __repr__(self) -> str:
        return f"AuditSnapshot({self.id!r}, {self.status.value})"


_status: Final = _enum(Status)


def _text(value: Any) -> str:
    if type(value) is not str:
        raise _SLOW
    return value


def _optional(convert: Convert, value: Any) -> Any:
    return None if value is None else convert(value)


def _many(cls: type, value: Any) -> tuple[Any, ...]:
    if type(value) is not list:
        raise _SLOW
    build = _builder(cls)
    return tuple([build(item) for item in value])


def audit_snapshot(referral_id: str, parts: Any, when: Any) -> AuditSnapshot:
    """The :class:`AuditSnapshot` of referral ``referral_id`` from ``parts`` (the decoded
    values at :data:`AUDIT_PATHS`, a list) and ``when`` (those at :data:`AUDIT_WHEN`);
    :class:`Slow` for anything another read of the whole snapshot must decide (a missing
    part, whose default only the whole read gives; a value of another type; another id)."""
    if type(parts) is not list or len(parts) != len(AUDIT_PATHS):
        raise _SLOW
    if type(when) is not list or len(when) != len(AUDIT_WHEN):
        raise _SLOW
    (
        found_id,
        status,
        held_from,
        updated_at,
        received_at,
        created_at,
        closed_at,
        source_id,
        specialty,
        patient_id,
        interpreter,
        authorization,
        appointments,
        follow_ups,
    ) = parts
    if found_id != referral_id or type(found_id) is not str or type(interpreter) is not bool:
        raise _SLOW
    view = _new(AuditSnapshot)
    view.id = found_id
    status = view.status = _status(status)
    view.held_from = _optional(_status, held_from)
    view.updated_at = _datetime(updated_at)
    view.received_at = _optional(_datetime, received_at)
    view.created_at = _datetime(created_at)
    view.closed_at = _optional(_datetime, closed_at)
    view.source_id = _optional(_text, source_id)
    view.specialty = _text(specialty)
    view.patient = AuditPatient(_text(patient_id), interpreter)
    services, communications, attachments = when
    # each conditional part is there exactly when its condition holds (and a check reads
    # it); the parts no check reads of a referral of this status are not built, and stay
    # unset (reading one fails loudly): a cancelled, declined or entered-in-error referral
    # is not checked at all, a failed one only for its follow-ups and its interpreter, an
    # open one never for its follow-ups
    if status in _AUTHORIZED_BY:
        if type(authorization) is not dict:
            raise _SLOW
        auth = view.authorization = _builder(Authorization)(authorization)
        view.appointments = _many(Appointment, appointments)
        approved = auth.status is AuthStatus.APPROVED
        view.services = _many(Code, services) if approved else ()
    view.follow_ups = _many(FollowUp, follow_ups) if status in _FOLLOWED_BY else ()
    view.communications = _many(Communication, communications) if interpreter else ()
    seen = status is Status.SEEN or status is Status.ON_HOLD
    view.attachments = _many(Attachment, attachments) if seen else ()
    return view
