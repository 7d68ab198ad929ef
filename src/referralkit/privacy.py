"""Who may do what: :class:`Actor`, :class:`Role` and the permission table.

HIPAA's unique-user-identification control (45 CFR 164.312(a)(2)(i)): every desk operation
takes an :class:`Actor` and records its id on the events it writes. Access is denied unless one
of the actor's roles allows the operation (:data:`PERMISSIONS`, :data:`ACCESS_PERMISSIONS`)
*and* the referral is in that role's scope for the actor's organisation (:func:`in_scope`,
:class:`ScopePolicy`): a referrer sees the referrals its organisation sent, a specialist (and a
scheduler) those sent to its organisation, a coordinator, an auditor and an admin those of its
organisation either way. ``admin`` is not a bypass. Break-glass access
(:meth:`~referralkit.desk.ReferralDesk.break_glass`) widens the scope, never the operations,
for a limited time, and every use of it is flagged for review in the access log
(:mod:`referralkit.access`).

:class:`Sealed` holds a PHI value while library frames pass it on: its ``repr`` and ``str``
are ``<sealed>``, so an exception report with local variables does not show it (see
:doc:`/explanation`, "Exception reports with local variables").
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

import attrs

from . import _validators as v
from ._redaction import Sealed
from .errors import PermissionDeniedError, ValidationError

if TYPE_CHECKING:
    from .model import Referral

__all__ = [
    "ACCESS_PERMISSIONS",
    "COMPATIBLE_SCOPE",
    "PERMISSIONS",
    "READ_OPERATIONS",
    "STRICT_SCOPE",
    "Actor",
    "BreakGlass",
    "Role",
    "ScopePolicy",
    "Sealed",
    "authorize",
    "in_scope",
    "in_scope_of",
]


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

ACCESS_PERMISSIONS: Final[Mapping[Role, frozenset[str]]] = {
    Role.COORDINATOR: frozenset({"export", "export_patient", "disclosures", "break_glass"}),
    Role.REFERRER: frozenset({"break_glass"}),
    Role.SPECIALIST: frozenset({"break_glass"}),
    Role.SCHEDULER: frozenset(),
    Role.AUDITOR: frozenset({"access_log", "disclosures", "export"}),
    Role.ADMIN: frozenset({"export", "export_patient", "disclosures"}),
}
"""The privacy operations each role may perform (HIPAA 45 CFR 164.312(a) and (b), 164.524,
164.528), by :class:`~referralkit.desk.ReferralDesk` method name: bulk ``export`` (and the
audited :meth:`~referralkit.desk.ReferralDesk.view` analytics read through), a patient's
records (``export_patient``), the accounting of ``disclosures``, reading the ``access_log``
and asking for ``break_glass`` access. Kept apart from :data:`PERMISSIONS`, which lists the
referral operations. Only the auditor reads the access log; ``admin`` does not, and may not
break the glass (an administrator is not a care provider)."""


def _roles(value: object) -> frozenset[Role]:
    if isinstance(value, Role):
        return frozenset({value})
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("roles", "expected a collection of Role members")
    return frozenset(value)


def _names(value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("providers", "expected a collection of provider or team ids")
    return frozenset(value)


@attrs.frozen
class BreakGlass:
    """An emergency access grant (break-glass), made by
    :meth:`~referralkit.desk.ReferralDesk.break_glass` and recorded in the access log: until
    ``expires_at`` the actor's roles reach every referral of the store. ``reason`` is free
    text (PHI: never in ``repr``); ``grant_id`` names the grant in the access log, where every
    access made under it is flagged for review."""

    grant_id: str = attrs.field(validator=v.text(max_length=100))
    reason: str = attrs.field(**v.PHI_FIELD, validator=v.text(max_length=2000))
    granted_at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)
    expires_at: dt.datetime = attrs.field(converter=v.to_utc, validator=v.utc_datetime)

    def active(self, now: dt.datetime) -> bool:
        """Whether the grant is live at ``now``."""
        return self.granted_at <= now < self.expires_at


@attrs.frozen
class Actor:
    """A uniquely identified user (or system) acting on referrals.

    ``organization`` is the organisation the actor acts for (the
    :attr:`~referralkit.model.Provider.organization` of a referral's referring or target
    provider); ``providers`` optionally narrows it to some providers (their ids) or care
    teams (a referral's :attr:`~referralkit.model.Referral.owner`). ``purpose`` is the
    purpose of use recorded in the access log (``"treatment"``, ``"operations"``...).
    ``emergency`` is a break-glass grant from the desk (never build one yourself: the desk
    checks it against its access log).

    An actor without an organisation is unscoped: under the desk's default
    :data:`COMPATIBLE_SCOPE` it reaches every referral (one organisation per store); under
    :data:`STRICT_SCOPE` it reaches none (unless the policy names it desk-wide).

    >>> Actor("u-17", {Role.COORDINATOR}).may("accept")
    True
    >>> Actor("u-18", {Role.AUDITOR}).may("accept")
    False
    >>> clinician = Actor("u-19", {Role.REFERRER}, organization="clinic-a")
    >>> clinician.organization, clinician.providers
    ('clinic-a', frozenset())
    """

    id: str = attrs.field(validator=v.text(max_length=200))
    roles: frozenset[Role] = attrs.field(
        converter=_roles, validator=v.instance(frozenset, "a set of Role")
    )
    organization: str | None = attrs.field(
        default=None, kw_only=True, validator=v.optional(v.text(max_length=200))
    )
    providers: frozenset[str] = attrs.field(
        default=frozenset(),
        kw_only=True,
        converter=_names,
        validator=v.instance(frozenset, "a set"),
    )
    purpose: str | None = attrs.field(
        default=None, kw_only=True, validator=v.optional(v.text(max_length=100))
    )
    emergency: BreakGlass | None = attrs.field(
        default=None, kw_only=True, validator=v.optional(v.instance(BreakGlass, "a BreakGlass"))
    )

    @providers.validator
    def _check_providers(
        self, attribute: attrs.Attribute[frozenset[str]], value: frozenset[str]
    ) -> None:
        for item in value:
            v.identifier(item, "providers")

    @roles.validator
    def _check_roles(
        self, attribute: attrs.Attribute[frozenset[Role]], value: frozenset[Role]
    ) -> None:
        for role in value:
            if not isinstance(role, Role):
                raise ValidationError("roles", f"expected Role members, got {role!r}")

    def may(self, operation: str) -> bool:
        """True when one of the actor's roles allows ``operation``."""
        return any(
            operation in PERMISSIONS[role] or operation in ACCESS_PERMISSIONS[role]
            for role in self.roles
        )


def authorize(actor: Actor, operation: str) -> None:
    """Raise :class:`~referralkit.errors.PermissionDeniedError` unless ``actor`` may."""
    if not isinstance(actor, Actor):
        raise ValidationError("actor", "expected an Actor")
    if not actor.may(operation):
        raise PermissionDeniedError(actor.id, operation)


# ---------------------------------------------------------------------------- scopes


@attrs.frozen
class ScopePolicy:
    """How a desk scopes actors to referrals.

    An actor *with* an organisation is always scoped (:func:`in_scope`). ``strict`` decides
    what an actor *without* one reaches: every referral when false (the compatible default:
    a store serving one organisation, the demo, scripts), none when true, except the actor
    ids listed in ``desk_wide`` (service accounts such as the scheduled sweep; a list of
    accounts, never a role, so ``admin`` stays no bypass). ``break_glass_limit`` is the
    longest a break-glass grant may last.
    """

    strict: bool = attrs.field(default=False, validator=v.instance(bool, "a bool"))
    desk_wide: frozenset[str] = attrs.field(
        default=frozenset(), converter=_names, validator=v.instance(frozenset, "a set")
    )
    break_glass_limit: dt.timedelta = attrs.field(
        default=dt.timedelta(hours=4), validator=v.instance(dt.timedelta, "a timedelta")
    )

    @break_glass_limit.validator
    def _check_limit(self, attribute: attrs.Attribute[dt.timedelta], value: dt.timedelta) -> None:
        if value <= dt.timedelta(0):
            raise ValidationError("break_glass_limit", "expected a positive duration")

    def unscoped(self, actor: Actor) -> bool:
        """Whether ``actor`` reaches every referral (no organisation, as the policy allows)."""
        if actor.organization is not None:
            return False
        return not self.strict or actor.id in self.desk_wide


COMPATIBLE_SCOPE: Final = ScopePolicy()
"""The desk's default: actors with an organisation are scoped, actors without one reach every
referral (as before scopes existed)."""

STRICT_SCOPE: Final = ScopePolicy(strict=True)
"""Every actor needs an organisation to reach a referral (a multi-organisation store)."""


def _side(referral: Referral, sent: bool) -> tuple[str | None, str | None]:
    """The organisation and provider id of the referral's sending or receiving side."""
    provider = referral.referring if sent else referral.target
    if provider is None:
        return None, None
    return provider.organization, provider.id


_SIDES: Final[Mapping[Role, tuple[bool, ...]]] = {
    Role.REFERRER: (True,),
    Role.SPECIALIST: (False,),
    Role.SCHEDULER: (False,),
    Role.COORDINATOR: (True, False),
    Role.AUDITOR: (True, False),
    Role.ADMIN: (True, False),
}
"""Which side of a referral each role acts for: the sender (True), the receiver (False)."""


def in_scope(actor: Actor, role: Role, referral: Referral) -> bool:
    """Whether ``referral`` is in ``role``'s scope for the scoped ``actor``: the referral's
    sending organisation is the actor's (a referrer), its target's organisation is (a
    specialist, a scheduler), either (a coordinator, an auditor, an admin); and, when the
    actor names ``providers``, the provider on that side, or the referral's owner (a care
    team), is one of them.
    """
    return in_scope_of(actor, role, (_side(referral, True), _side(referral, False)), referral.owner)


def in_scope_of(
    actor: Actor,
    role: Role,
    sides: tuple[tuple[str | None, str | None], tuple[str | None, str | None]],
    owner: str | None,
) -> bool:
    """:func:`in_scope` on what it reads of a referral: its sending and receiving ``sides``
    (each its organisation and provider id) and its ``owner`` (a worklist digest holds
    these, not the referral).

    .. versionadded:: 0.2
    """
    if actor.organization is None:
        return False
    for sent in _SIDES[role]:
        organization, provider_id = sides[0] if sent else sides[1]
        if organization != actor.organization:
            continue
        if not actor.providers or provider_id in actor.providers:
            return True
        if owner is not None and owner in actor.providers:
            return True
    return False
