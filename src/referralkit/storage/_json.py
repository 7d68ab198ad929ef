"""JSON text for the SQL adapters: snapshots and event payloads as they are stored, and read
back.

Reading is where a store meets data it did not check: a row edited by hand, a file from a newer
referralkit, a disk error. A stored value that is not JSON, or that the model refuses, is a
:class:`~referralkit.errors.StorageError` naming the referral and (for a refused value) the
field, never the value: the row is PHI, and ``json.JSONDecodeError`` keeps the whole document
in its ``doc`` attribute.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any, Final, TypeVar

from .._redaction import Sealed
from .._validators import JsonObject, storable_json
from ..errors import StorageError, ValidationError
from ..model import Referral, ReferralEvent
from ..serialization import from_dict, to_dict

__all__ = [
    "event_from_row",
    "events_by_referral",
    "payload_json",
    "referral_from_row",
    "snapshot_json",
]

T = TypeVar("T")


def snapshot_json(value: Any) -> str:
    """A model value (a referral) as compact JSON."""
    return _dumps(to_dict(value), "referral")


def payload_json(payload: Any) -> str:
    """An event payload as compact JSON.

    Payloads are JSON-compatible already (the desk builds them with ``to_dict``), so they are
    encoded directly, with ``to_dict`` only for what the encoder does not know (a datetime, a
    model value): the same text as ``json.dumps(to_dict(payload))`` at a third of the cost
    (walking every payload through the converter was 60% of a bulk intake's time).
    """
    return _dumps(payload, "payload", default=to_dict)


def _dumps(value: Any, path: str, default: Any = None) -> str:
    try:
        # allow_nan=False: NaN and infinity are not JSON, and PostgreSQL's json type refuses
        # them (the model refuses them first; this keeps a value built around it out too)
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=default)
    except (TypeError, ValueError):
        raise ValidationError(path, "is not JSON-compatible (or holds NaN or infinity)") from None


def _stored(cls: type[T], data: Any, what: str) -> T:
    """``cls`` from stored ``data`` (JSON text, or JSON the driver parsed already)."""
    problem = ""
    if isinstance(data, Sealed):
        data = data.reveal()
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError:
            problem = "is not valid JSON"
    if not problem:
        try:
            return from_dict(cls, data)
        except ValidationError as exc:
            problem = f"does not fit the model ({exc})"
    # raised outside the handlers: neither the decoder's error (its ``doc`` is the whole row)
    # nor the data travels with it
    del data
    raise StorageError(f"{what} {problem}", driver_error="")


def referral_from_row(snapshot: Any, referral_id: str) -> Referral:
    """The referral a stored snapshot holds; a corrupt one is a StorageError."""
    return _stored(Referral, snapshot, f"the stored snapshot of referral {referral_id!r}")


def event_from_row(row: tuple[Any, ...]) -> ReferralEvent:
    """The event a row ``(referral_id, version, idx, at, actor, type, payload)`` holds, with
    ``at`` as ISO text or a datetime and the payload as JSON text or parsed JSON."""
    referral_id, version, index, at, actor, kind, payload = row
    what = f"the stored event {version}.{index} of referral {referral_id!r}"
    broken = False
    if isinstance(payload, Sealed):
        payload = payload.reveal()
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError:
            broken = True
    if broken:
        del row, payload
        raise StorageError(f"{what} has a payload that is not valid JSON", driver_error="")
    if isinstance(payload, dict) and storable_json(payload):
        # decoded JSON: no tuples or non-string keys, and its text is storable; anything
        # else goes to the model as it is, to be refused with its path
        payload = JsonObject(payload)
    return _stored(
        ReferralEvent,
        {
            "referral_id": referral_id,
            "version": version,
            "index": index,
            "at": at,
            "actor": actor,
            "type": kind,
            "payload": payload,
        },
        what,
    )


# --------------------------------------------------------------------------- histories, fast

_loads: Final = json.loads
_fromiso: Final = dt.datetime.fromisoformat


def _stored_event(row: tuple[Any, ...]) -> ReferralEvent:
    """The event of a row this store wrote: the model's constructor, its validators and
    all, but not cattrs and not the payload's JSON checks.

    Measured here (``benchmarks/bench_analytics.py``): :func:`event_from_row` spends most of
    its 60 to 80 microseconds an event in cattrs and in checking that the payload survives a
    JSON round trip; the analytics read every event of every referral. A payload decoded by
    ``json.loads`` from text this store wrote (from a payload the model had checked) is JSON
    by construction, so it is marked :class:`~referralkit._validators.JsonObject` and the
    constructor skips that check. Anything else that is wrong with the row (text edited by
    hand) gets the StorageError :func:`event_from_row` gives, naming the row.
    """
    referral_id, version, index, at, actor, kind, payload = row
    if isinstance(payload, Sealed):
        payload = payload.reveal()
    event: ReferralEvent | None = None
    try:
        if isinstance(payload, str | bytes):
            payload = _loads(payload)
        if isinstance(at, str):  # SQLite keeps ISO text; the model takes datetimes
            at = _fromiso(at)
        if type(payload) is dict:
            event = ReferralEvent(referral_id, version, index, at, actor, kind, JsonObject(payload))
    except (ValueError, ValidationError):
        pass
    if event is None:
        del payload
        return event_from_row(row)  # refuses it with the usual StorageError
    return event


def events_by_referral(rows: Iterable[tuple[Any, ...]]) -> Iterator[list[ReferralEvent]]:
    """Rows ``(referral_id, version, idx, at, actor, type, payload)`` in referral id then
    history order, as one list of events per referral: what the SQL adapters'
    ``event_histories`` yield from one ordered pass over their events table."""
    for _, group in itertools.groupby(rows, key=lambda row: row[0]):
        yield [_stored_event(tuple(row)) for row in group]
