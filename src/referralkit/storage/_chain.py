"""The events' hash chain: what the stores write beside each event, and what
:func:`referralkit.tamper.verify` checks.

One chain per store, in append order: each event row carries ``seq`` (its position: the
store assigns it while it holds the chain's lock), ``sealed`` and ``chain``, the
:func:`~referralkit.access.chain_hash` of the previous event's chain value and the event's
fields (:func:`event_fields`): its referral id, version, index, time, actor, type and
``sealed``, which is ``"<key id>:<SHA-256 of the stored payload text>"`` as it was first
written (the stored bytes: ciphertext in an encrypted store, so ``verify`` needs no key).
The links are computed by the access log's code (:func:`~referralkit.access.chain_values`).

An edited field, a deleted, inserted or reordered event breaks the chain at that event; a
payload whose stored text no longer has the digest ``sealed`` names is a broken link too,
*unless* it has been re-encrypted onto another key since (a key rotation,
:func:`~referralkit.storage.rotate_keys`, rewrites every payload under the primary key): a
re-encrypted payload is bound to its event by its AES-GCM tag (the referral id, version and
index are its associated data), checked whenever it is read, not by the chain. So a
rotation needs no re-chaining and leaves every checkpoint valid. Truncation of the tail is
seen against a checkpoint (:func:`referralkit.tamper.checkpoint` records the head of both
chains).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any, Final

from .._redaction import Sealed
from ..access import chain_values
from ._json import _HEAD, record_key_id

__all__ = ["chain_rows", "event_fields", "payload_problem", "sealed_digest"]

CHAIN_VERSION: Final = 8
"""The schema version from which the SQL stores chain their events."""


def sealed_digest(text: Sealed[str]) -> str:
    """``"<key id>:<SHA-256 hex>"`` of a stored payload text (what the chain hashes). The
    text stays sealed in every frame (it is PHI in an unencrypted store)."""
    return f"{_key_id(text.reveal())}:{_sha256(text.reveal())}"


def _key_id(text: str) -> str:
    return text[_START : text.find(":", _START)] if text.startswith(_HEAD) else ""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_START: Final = len(_HEAD)
_UTC: Final = dt.UTC


def event_fields(row: Sequence[Any], sealed: str, moment: Any = None) -> list[Any]:
    """What the chain hashes of an event row ``(referral_id, version, idx, at, actor,
    type, ...)`` (``at`` a datetime or ISO text, hashed as fixed-width UTC text) whose
    payload ``sealed`` describes; ``moment``, when given, is ``at`` as the datetime it was
    written from (not parsed again)."""
    referral_id, version, index, at, actor, kind = row[:6]
    if moment is None:
        moment = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    if moment.tzinfo is not _UTC:
        moment = moment.astimezone(_UTC)
    # fixed-width UTC text with microseconds (isoformat: a third of strftime's cost)
    text = moment.isoformat(timespec="microseconds")
    return [referral_id, int(version), int(index), text, actor, kind, sealed]


def chain_rows(
    last_seq: int,
    last_chain: str,
    rows: Sequence[Sequence[Any]],
    moments: Sequence[dt.datetime] | None = None,
) -> list[tuple[int, str, str]]:
    """``(seq, sealed, chain)`` of event rows ``(referral_id, version, idx, at, actor, type,
    stored payload text, sealed)`` appended after the head ``(last_seq, last_chain)``;
    ``moments``, when given, the rows' times as datetimes (their ``at`` is then not
    parsed)."""
    sealed = [sealed_digest(row[6]) for row in rows]
    if moments is None:
        fields = [event_fields(row, mark) for row, mark in zip(rows, sealed, strict=True)]
    else:
        fields = [
            event_fields(row, mark, at) for row, mark, at in zip(rows, sealed, moments, strict=True)
        ]
    links = chain_values(last_chain, fields)
    return [
        (last_seq + n, mark, link)
        for n, (mark, link) in enumerate(zip(sealed, links, strict=True), 1)
    ]


def linked(
    head: list[Any],
    rows: Sequence[Sequence[Any]],
    moments: Sequence[dt.datetime] | None = None,
) -> list[tuple[Any, ...]]:
    """``rows`` (as :func:`chain_rows` takes them, with its ``moments``), each followed by
    its ``seq``, ``sealed`` and ``chain`` when appended after ``head`` ``[seq, chain]``,
    which moves on: the rows a bulk writer inserts as the store would have linked them."""
    links = chain_rows(head[0], head[1], rows, moments)
    if links:
        head[:] = links[-1][0], links[-1][2]
    return [(*row, *link) for row, link in zip(rows, links, strict=True)]


def payload_problem(sealed: str, text: Sealed[str]) -> str | None:
    """Why the stored payload ``text`` does not match what the chain recorded (``sealed``),
    or ``None``: the same digest, or re-encrypted onto another key since."""
    key_id, _, digest = sealed.partition(":")
    if _sha256(text.reveal()) == digest:
        return None
    now = record_key_id(text)
    if now and now != key_id:
        return None
    return "the event's payload was changed"
