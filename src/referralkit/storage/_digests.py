"""Worklist digests at rest (``referralkit.worklist.WorklistDigest``): what the SQL
adapters keep in their ``worklist_digests`` table (schema version 9).

A digest is a cache of one referral version, written by the worklist that first reads it
(never by a change: intake and updates do not pay for it) and read only while that version
is current. It can hold PHI (a coverage decision's reason), so an encrypting store
encrypts its text whole, bound to the referral id and version; a digest that does not open
(a retired key, a copy from another row) reads as missing and is computed again.

.. versionadded:: 0.2
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag

from ..crypto import CIPHER_PREFIX
from ..errors import EncryptionKeyError
from ._json import RecordCodec

__all__ = ["DIGESTS_VERSION", "open_digest", "seal_digest"]

DIGESTS_VERSION: Final = 9
"""The schema version that adds the ``worklist_digests`` table."""


def _aad(referral_id: str, version: int) -> bytes:
    return f"worklist-digest\x00{referral_id}\x00{version}".encode()


def seal_digest(codec: RecordCodec, referral_id: str, version: int, text: str) -> str:
    """The stored form of a digest's ``text``: encrypted when the store is."""
    if codec.cipher is None:
        return text
    return codec.cipher.encrypt(text.encode(), _aad(referral_id, version))


def open_digest(codec: RecordCodec, referral_id: str, version: int, stored: str) -> str | None:
    """The text of a stored digest; ``None`` when it does not open (encrypted with a key the
    store lacks, or for another row) or is encrypted while the store is not (and the other
    way round): the caller computes it again."""
    cipher = codec.cipher
    encrypted = stored.startswith(CIPHER_PREFIX)
    if cipher is None:
        return None if encrypted else stored
    if not encrypted:
        return None
    try:
        return cipher.decrypt(stored, _aad(referral_id, version)).decode()
    except (InvalidTag, EncryptionKeyError, ValueError):
        return None
