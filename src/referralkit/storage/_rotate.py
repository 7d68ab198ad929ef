"""Key rotation: every record of a store moved onto its key ring's primary key, in batches,
while the store is in use (re-exported by :mod:`referralkit.storage`).

Each batch is one transaction that reads the next referrals in id order with their events,
verifies and decrypts every record not on the primary key (an unencrypted or unsealed one
too), encrypts it again with the primary key and writes it back with a version check. A
rotation killed half way leaves whole batches done and none half done; running it again
skips what is on the primary key already (each record's seal names its key), so it resumes.
The same pass encrypts a store written without keys: that is the migration to encryption.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs

from .._redaction import boundary
from ..errors import EncryptionKeyError, ValidationError
from ._base import ReferralStore

__all__ = ["Rotation", "rotate_keys"]


@runtime_checkable
class _Rotatable(Protocol):
    def _rotate_batch(self, after: str, limit: int) -> tuple[str | None, int]: ...


@attrs.frozen
class Rotation:
    """What :func:`rotate_keys` did: ``batches`` transactions committed, ``rewritten``
    records (snapshots and events) moved onto the primary key."""

    batches: int
    rewritten: int


@boundary
def rotate_keys(
    store: ReferralStore,
    *,
    batch: int = 500,
    after: str = "",
    progress: Callable[[str, int], None] | None = None,
) -> Rotation:
    """Move every record of ``store`` (opened with its key ring, ``open_store(url,
    keys=...)``) onto the ring's primary key; resumable, safe while the store is in use.

    ``batch`` referrals (with their events) per transaction; ``after`` starts after that id
    (resuming where a report left off; the default, from the start, is always safe);
    ``progress(last_id, rewritten)`` is called after each committed batch. A record that
    fails its integrity check stops the rotation with a
    :class:`~referralkit.errors.CorruptRecordError` naming the referral, after the batches
    before it.
    """
    if not isinstance(store, _Rotatable):
        raise ValidationError("store", "expected a referralkit store")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValidationError("batch", "expected a whole number >= 1")
    if not isinstance(after, str):
        raise ValidationError("after", "expected a referral id")
    if getattr(store, "keys", None) is None:
        raise EncryptionKeyError(
            "key rotation needs the store opened with a key ring (open_store(url, keys=...))"
        )
    batches = rewritten = 0
    last: str | None = after
    while last is not None:
        last, count = store._rotate_batch(last, batch)
        if last is None:
            break
        batches += 1
        rewritten += count
        if progress is not None:
            progress(last, rewritten)
    return Rotation(batches, rewritten)
