"""Rule versions kept beside the referrals: what a decision's provenance points at.

A :class:`RuleVersion` is a content-addressed document (a ruleset, or a policy listing its
rulesets' digests) that a store keeps once, under the SHA-256 of its text; a decision event
names the policy digest it was made with. The store also keeps when a desk began deciding
with a policy (:meth:`~referralkit.storage.ReferralStore.record_policy_use`), so a referral
can be decided again with the policy that was in force on a past date. The documents are
built and read by :mod:`referralkit.rules.provenance`; to a store they are opaque text.

.. versionadded:: 0.2
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Final

import attrs

from .. import _validators as v
from ..errors import ValidationError

__all__ = [
    "POLICY_KINDS",
    "VERSION_KINDS",
    "RuleVersion",
    "check_digest",
    "check_policy_kind",
    "check_policy_use",
    "check_rule_version",
    "unknown_policy",
]

POLICY_KINDS: Final = frozenset({"coverage", "urgency"})
"""The kinds of decision a policy makes (and :meth:`record_policy_use` takes)."""

VERSION_KINDS: Final = POLICY_KINDS | {f"{kind}-policy" for kind in POLICY_KINDS}
"""What a stored document is: a ruleset of a kind, or a policy of a kind (``…-policy``)."""

_DIGEST: Final = re.compile(r"[0-9a-f]{64}")


def check_digest(value: object, path: str = "digest") -> str:
    """``value`` if it is a SHA-256 digest in lowercase hex; a ValidationError otherwise."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise ValidationError(path, "expected a SHA-256 digest (64 lowercase hex digits)")
    return value


def check_policy_kind(value: object) -> str:
    """``value`` if it names a kind of policy (coverage, urgency)."""
    if value not in POLICY_KINDS:
        raise ValidationError("kind", "expected 'coverage' or 'urgency'")
    return str(value)


def _kind(instance: object, attribute: object, value: str) -> None:
    if value not in VERSION_KINDS:
        raise ValidationError("kind", f"expected one of {', '.join(sorted(VERSION_KINDS))}")


def _digest(instance: object, attribute: object, value: str) -> None:
    check_digest(value)


def _recorded_at(value: object) -> dt.datetime:
    return v.as_utc(value, "recorded_at")


@attrs.frozen
class RuleVersion:
    """One stored document: a ruleset or a policy, under the SHA-256 ``digest`` of its text.

    The digest must be that of ``document`` (UTF-8): a store can check what it is given, and
    two documents never share a key. ``recorded_at`` is when it was first stored. Rule files
    are policy, not PHI: nothing here describes a patient.
    """

    digest: str = attrs.field(validator=_digest)
    kind: str = attrs.field(validator=_kind)
    name: str = attrs.field(validator=v.text(max_length=2_000, blank=True))
    document: str = attrs.field(validator=v.text(max_length=50_000_000), repr=False)
    recorded_at: dt.datetime = attrs.field(converter=_recorded_at)

    def __attrs_post_init__(self) -> None:
        if hashlib.sha256(self.document.encode()).hexdigest() != self.digest:
            raise ValidationError("digest", "is not the SHA-256 of the document")


def check_rule_version(value: object) -> RuleVersion:
    """``value`` if it is a :class:`RuleVersion`."""
    if not isinstance(value, RuleVersion):
        raise ValidationError("version", "expected a RuleVersion")
    return value


def check_policy_use(kind: object, digest: object, at: object) -> tuple[str, str, dt.datetime]:
    """The checked arguments of ``record_policy_use`` and ``policy_in_force`` (``digest``
    may be ``None`` for the latter)."""
    return (
        check_policy_kind(kind),
        digest if digest is None else check_digest(digest),  # type: ignore[return-value]
        v.as_utc(at, "at"),
    )


def unknown_policy(kind: str) -> ValidationError:
    """The error for a policy use naming no stored policy of its kind."""
    return ValidationError("digest", f"the store keeps no {kind} policy with this digest")
