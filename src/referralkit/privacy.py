"""Who may do what: :class:`Actor`, :class:`Role` and the permission table.

HIPAA's unique-user-identification control (45 CFR 164.312(a)(2)(i)): every desk operation
takes an :class:`Actor` and records its id on the events it writes. Access is denied unless one
of the actor's roles allows the operation (:data:`PERMISSIONS`).

:class:`Sealed` holds a PHI value while library frames pass it on: its ``repr`` and ``str``
are ``<sealed>``, so an exception report with local variables does not show it (see
:doc:`/explanation`, "Exception reports with local variables").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from . import _validators as v
from ._redaction import Sealed
from .errors import PermissionDeniedError, ValidationError

__all__ = ["PERMISSIONS", "READ_OPERATIONS", "Actor", "Role", "Sealed", "authorize"]


class Role(enum.StrEnum):
    COORDINATOR = "coordinator"
    REFERRER = "referrer"
    SPECIALIST = "specialist"
    SCHEDULER = "scheduler"
    AUDITOR = "auditor"
    ADMIN = "admin"


READ_OPERATIONS: Final = frozenset(
    {"get", "history", "assess", "worklist", "audit", "explain", "replay"}
)
"""What every role may do: read referrals, their histories, their clocks and next actions,
the worklist, the record audit, and why decisions were made (explain, replay)."""

_RECORDS: Final = frozenset({"attach", "log_communication", "add_follow_up", "complete_follow_up"})
_REFERRER: Final = (
    frozenset({"intake", "send", "request_cancellation", "mark_entered_in_error"}) | _RECORDS
)
_SPECIALIST: Final = (
    frozenset(
        {
            "accept",
            "decline",
            "hold",
            "resume",
            "record_visit",
            "add_interim_note",
            "complete",
            "confirm_cancellation",
            "fail",
        }
    )
    | _RECORDS
)
_SCHEDULER: Final = frozenset(
    {"schedule", "reschedule", "record_no_show", "cancel_appointment", "log_communication"}
)
_COORDINATOR: Final = (
    _REFERRER
    | _SPECIALIST
    | _SCHEDULER
    | {
        "assign",
        "assign_specialist",
        "reassess",
        "request_authorization",
        "record_authorization",
        "acknowledge_self_pay",
        "record_survey",
        "sweep",
        "claim",
    }
)

PERMISSIONS: Final[Mapping[Role, frozenset[str]]] = {
    Role.COORDINATOR: _COORDINATOR | READ_OPERATIONS,
    Role.REFERRER: _REFERRER | READ_OPERATIONS,
    Role.SPECIALIST: _SPECIALIST | READ_OPERATIONS,
    Role.SCHEDULER: _SCHEDULER | READ_OPERATIONS,
    Role.AUDITOR: READ_OPERATIONS,
    Role.ADMIN: _COORDINATOR | READ_OPERATIONS,
}
"""The operations each role may perform, by :class:`~referralkit.desk.ReferralDesk` method name."""


def _roles(value: object) -> frozenset[Role]:
    if isinstance(value, Role):
        return frozenset({value})
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("roles", "expected a collection of Role members")
    return frozenset(value)


@attrs.frozen
class Actor:
    """A uniquely identified user (or system) acting on referrals.

    >>> Actor("u-17", {Role.COORDINATOR}).may("accept")
    True
    >>> Actor("u-18", {Role.AUDITOR}).may("accept")
    False
    """

    id: str = attrs.field(validator=v.text(max_length=200))
    roles: frozenset[Role] = attrs.field(
        converter=_roles, validator=v.instance(frozenset, "a set of Role")
    )

    @roles.validator
    def _check_roles(
        self, attribute: attrs.Attribute[frozenset[Role]], value: frozenset[Role]
    ) -> None:
        for role in value:
            if not isinstance(role, Role):
                raise ValidationError("roles", f"expected Role members, got {role!r}")

    def may(self, operation: str) -> bool:
        """True when one of the actor's roles allows ``operation``."""
        return any(operation in PERMISSIONS[role] for role in self.roles)


def authorize(actor: Actor, operation: str) -> None:
    """Raise :class:`~referralkit.errors.PermissionDeniedError` unless ``actor`` may."""
    if not isinstance(actor, Actor):
        raise ValidationError("actor", "expected an Actor")
    if not actor.may(operation):
        raise PermissionDeniedError(actor.id, operation)
