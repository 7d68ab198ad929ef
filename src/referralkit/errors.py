"""One exception hierarchy for everything referralkit raises.

Every error the library raises on purpose derives from :class:`ReferralKitError`, so an
application can catch the library's failures with one ``except`` clause and still tell them
apart::

    ReferralKitError
    ├── ValidationError          a value was rejected; ``path`` names the field
    ├── TransitionError          the lifecycle does not allow this event in this state
    │   └── GuardError           allowed in principle, but a condition is not met
    ├── ConcurrencyError         the referral changed since it was loaded (stale version)
    │   └── DuplicateReferralError  another referral already has this source id
    ├── NotFoundError            no referral with that id
    ├── PermissionDeniedError    the actor's roles do not allow the operation
    ├── RulesError               a rule or ruleset is malformed or cannot be evaluated
    ├── StorageError             the storage backend failed; driver errors are mapped here
    │   ├── CorruptRecordError   a stored record failed its integrity check; names the referral
    │   └── EncryptionKeyError   an encrypted store opened without (or with the wrong) keys
    ├── TemplateError            a message template is broken; names the template and line
    └── DeliveryError            a notifier could not deliver a message

Messages never contain protected health information (PHI): they name fields, states, events
and identifiers, never the values of fields declared as PHI on the model. Nor do attributes
or chained exceptions: an error leaves a public method of the desk or a store with no
``__cause__`` or ``__context__`` and with its traceback stopping at that method, so an error
report that includes local variables holds no PHI either (see :doc:`/explanation`).
"""

from __future__ import annotations

__all__ = [
    "ConcurrencyError",
    "CorruptRecordError",
    "DeliveryError",
    "DuplicateReferralError",
    "EncryptionKeyError",
    "GuardError",
    "NotFoundError",
    "PermissionDeniedError",
    "ReferralKitError",
    "RulesError",
    "StorageError",
    "TemplateError",
    "TransitionError",
    "ValidationError",
]


class ReferralKitError(Exception):
    """Base class of every error referralkit raises on purpose."""


class ValidationError(ReferralKitError, ValueError):
    """A value was rejected.

    ``path`` names the offending field, for example ``"patient.birth_date"`` or
    ``"diagnoses[1].code"``; ``reason`` says what is wrong without repeating a PHI value.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)

    def at(self, prefix: str) -> ValidationError:
        """Return the same error with ``prefix`` prepended to its path."""
        path = (
            f"{prefix}.{self.path}"
            if self.path and not self.path.startswith("[")
            else (f"{prefix}{self.path}")
        )
        return type(self)(path, self.reason)


class TransitionError(ReferralKitError):
    """The lifecycle does not allow ``event`` while the referral is in ``state``."""

    def __init__(self, referral_id: str, state: str, event: str, detail: str = "") -> None:
        self.referral_id = referral_id
        self.state = state
        self.event = event
        self.detail = detail
        message = f"referral {referral_id}: cannot {event!r} while {state!r}"
        super().__init__(f"{message}: {detail}" if detail else message)


class GuardError(TransitionError):
    """The transition exists, but a guard (a business condition) refuses it."""


class ConcurrencyError(ReferralKitError):
    """The referral was changed by someone else since it was loaded.

    Nothing was written; reload the referral and try again.
    """

    def __init__(self, referral_id: str, expected: int, actual: int | None) -> None:
        self.referral_id = referral_id
        self.expected = expected
        self.actual = actual
        found = "absent" if actual is None else f"at version {actual}"
        super().__init__(f"referral {referral_id}: expected version {expected}, but it is {found}")


class DuplicateReferralError(ConcurrencyError):
    """Another referral was already intaken under the same referrer identifier."""

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.referral_id = ""
        self.expected = 0
        self.actual = None
        ReferralKitError.__init__(self, f"a referral with source id {source_id!r} exists")


class NotFoundError(ReferralKitError, LookupError):
    """No referral with that id exists in the store."""

    def __init__(self, referral_id: str) -> None:
        self.referral_id = referral_id
        super().__init__(f"no referral with id {referral_id!r}")


class PermissionDeniedError(ReferralKitError):
    """The actor's roles do not allow the operation."""

    def __init__(self, actor_id: str, operation: str) -> None:
        self.actor_id = actor_id
        self.operation = operation
        super().__init__(f"actor {actor_id!r} may not {operation}")


class RulesError(ReferralKitError):
    """A rule or ruleset is malformed, or a policy could not decide."""


class StorageError(ReferralKitError):
    """The storage backend failed.

    Driver exceptions are not chained (their messages can repeat row values, which may be
    PHI); ``driver_error`` keeps the driver exception's class name and ``sqlstate`` its SQL
    state code where the driver gives one.
    """

    def __init__(self, message: str, *, driver_error: str = "", sqlstate: str = "") -> None:
        self.driver_error = driver_error
        self.sqlstate = sqlstate
        super().__init__(message)


class CorruptRecordError(StorageError):
    """A stored snapshot or event failed its integrity check when read: its checksum does
    not match, or an encrypted field's GCM tag does not verify (a flipped bit, a truncated
    ciphertext, a ciphertext moved from another referral or field, a wrong key).

    ``referral_id`` names the referral and ``record`` the record (``"snapshot"``,
    ``"event 3.0"``); the message never holds a stored value. Never wrong data instead.
    """

    def __init__(self, referral_id: str, record: str, reason: str) -> None:
        self.referral_id = referral_id
        self.record = record
        self.reason = reason
        super().__init__(f"the stored {record} of referral {referral_id!r} is corrupt: {reason}")


class EncryptionKeyError(StorageError):
    """An encrypted store was opened without its key ring, or the ring lacks a key a record
    was encrypted with; also a key ring file that cannot be read."""


class TemplateError(ReferralKitError):
    """A message template (:mod:`referralkit.messages`) cannot be loaded or rendered.

    ``template`` names the template file and ``line`` the line in it (``None`` when the
    error is about the template as a whole); ``reason`` says what is wrong. Raised when the
    templates are loaded (bad syntax, an unknown placeholder, a missing include) rather than
    when a message is sent, wherever that can be known in advance.
    """

    def __init__(self, template: str, line: int | None, reason: str) -> None:
        self.template = template
        self.line = line
        self.reason = reason
        where = template if line is None else f"{template}, line {line}"
        super().__init__(f"{where}: {reason}")


class DeliveryError(ReferralKitError):
    """A notifier could not deliver a message.

    The message never repeats the recipient's address or the message text (both PHI);
    ``channel`` names the channel and ``retry`` says whether trying again later may succeed
    (a server that was down) or not (an address the notifier cannot use).
    """

    def __init__(self, channel: str, reason: str, *, retry: bool = False) -> None:
        self.channel = channel
        self.reason = reason
        self.retry = retry
        super().__init__(f"{channel}: {reason}")
