"""pandas DataFrames of a store: one row per referral, one row per event (analytics extra)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .. import _validators as v
from ..clock import SystemClock
from ..clocks import DEFAULT_CLOCKS, ClockRules
from ..errors import ValidationError
from ..model import ReferralEvent
from ..privacy import Actor, authorize
from ..storage import ReferralStore
from ._deid import SESSION, Column, Deidentifier, Rule, columns_kept
from ._extra import require
from ._rows import COLUMNS, read_row

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EVENT_COLUMNS", "events_frame", "referrals_frame"]

logger = logging.getLogger("referralkit.analytics")

CHUNK: Final = 20_000
"""Rows converted to columns at a time: bounds the Python objects alive at once."""

IDENTIFIED_READ: Final = ("get", "history")
"""The desk operations an actor must be allowed to read identified (PHI) frames: reading
referrals and their histories, which is what an identified frame is."""


# --------------------------------------------------------------------------- events


class EventRow(NamedTuple):
    """One event as a flat row; see :data:`EVENT_COLUMNS`."""

    referral_id: str
    patient_key: str
    version: int
    event_index: int
    at: dt.datetime
    actor: str
    type: str
    transition: str | None
    status_from: str | None
    status_to: str | None
    auth_status: str | None
    auth_expedited: bool | None
    appointment_status: str | None
    appointment_start: dt.datetime | None
    attachment_kind: str | None
    channel: str | None
    direction: str | None
    interpreter_used: bool | None
    covered: str | None
    pa_needed: str | None
    network_status: str | None
    urgency_priority: str | None
    target_id: str | None
    owner: str | None
    follow_up_kind: str | None
    survey_score: int | None
    payload: str


_AT: Final = ("ReferralEvent.at",)
EVENT_COLUMNS: Final[tuple[Column, ...]] = (
    Column("referral_id", "string", ("Referral.id",), "the referral", Rule.PSEUDONYM),
    Column("patient_key", "string", ("Referral.patient.id",), "the patient", Rule.PSEUDONYM),
    Column("version", "int", ("ReferralEvent.version",), "the referral version it made"),
    Column("event_index", "int", ("ReferralEvent.index",), "its place within that version"),
    Column("at", "datetime", _AT, "when it was recorded"),
    Column("actor", "category", ("ReferralEvent.actor",), "who recorded it (a user id)"),
    Column("type", "category", ("ReferralEvent.type",), "the event type"),
    Column("transition", "category", ("Referral.status",), "the lifecycle event (send...)"),
    Column("status_from", "category", ("Referral.status",), "the status before"),
    Column("status_to", "category", ("Referral.status",), "the status after"),
    Column("auth_status", "category", ("Referral.authorization.status",), "authorization"),
    Column(
        "auth_expedited",
        "boolean",
        ("Referral.authorization.expedited",),
        "the authorization request is expedited",
    ),
    Column(
        "appointment_status",
        "category",
        ("Referral.appointments.status",),
        "the appointment's status (booked, noshow...)",
    ),
    Column(
        "appointment_start",
        "datetime",
        ("Referral.appointments.start",),
        "when a booked appointment is for",
    ),
    Column("attachment_kind", "category", ("Referral.attachments.kind",), "a document's kind"),
    Column("channel", "category", ("Referral.communications.channel",), "a contact's channel"),
    Column("direction", "category", ("Referral.communications.direction",), "inbound or outbound"),
    Column(
        "interpreter_used",
        "boolean",
        ("Referral.communications.interpreter_used",),
        "an interpreter was used",
    ),
    Column("covered", "category", ("Referral.coverage_decision.covered",), "coverage decided"),
    Column("pa_needed", "category", ("Referral.coverage_decision.pa_needed",), "CRD pa-needed"),
    Column(
        "network_status",
        "category",
        ("Referral.coverage_decision.network_status",),
        "network status decided",
    ),
    Column("urgency_priority", "category", ("Referral.urgency.priority",), "priority assessed"),
    Column("target_id", "category", ("Referral.target.id",), "the specialist assigned"),
    Column("owner", "category", ("Referral.owner",), "the coordinator assigned"),
    Column("follow_up_kind", "category", ("Referral.follow_ups.kind",), "a follow-up's kind"),
    Column("survey_score", "Int64", ("Referral.surveys.score",), "a survey's score"),
    Column("payload", "string", ("ReferralEvent.payload",), "the whole payload, as JSON"),
)
"""Every column of :func:`~referralkit.analytics.events_frame`, in order."""

assert tuple(c.name for c in EVENT_COLUMNS) == EventRow._fields


def _get(payload: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC) if parsed.tzinfo is not None else None


def _event_rows(events: Sequence[ReferralEvent], as_of: dt.datetime) -> Iterator[EventRow]:
    if not events:
        return
    patient = str(_get(events[0].payload, "referral", "patient", "id"))
    for e in events:
        if e.at > as_of:
            return
        p = e.payload
        auth = _get(p, "authorization")
        appointment = _get(p, "appointment")
        communication = _get(p, "communication")
        decision = _get(p, "decision")
        score = _get(p, "survey", "score")
        yield EventRow(
            e.referral_id,
            patient,
            e.version,
            e.index,
            e.at,
            e.actor,
            e.type,
            _str(p.get("event")),
            _str(p.get("source")),
            _str(p.get("target")) if e.type == "status_changed" else None,
            _str(_get(auth, "status")),
            _bool(_get(auth, "expedited")),
            _str(_get(appointment, "status")) or _str(p.get("status")),
            _instant(_get(appointment, "start")),
            _str(_get(p, "attachment", "kind")),
            _str(_get(communication, "channel")),
            _str(_get(communication, "direction")),
            _bool(_get(communication, "interpreter_used")),
            _str(_get(decision, "covered")),
            _str(_get(decision, "pa_needed")),
            _str(_get(decision, "network_status")),
            _str(_get(p, "assessment", "priority")),
            _str(_get(p, "provider", "id")),
            _str(p.get("owner")) if e.type == "owner_assigned" else None,
            _str(_get(p, "follow_up", "kind")),
            score if type(score) is int else None,
            json.dumps(p, sort_keys=True, default=str),
        )


# --------------------------------------------------------------------------- building frames


def _deidentifier(
    deidentify: bool | Deidentifier, actor: Actor | None, what: str
) -> Deidentifier | None:
    """The :class:`Deidentifier` to apply, or ``None`` for an identified frame (after
    checking that ``actor`` may read PHI)."""
    if isinstance(deidentify, Deidentifier):
        return deidentify
    if deidentify is True:
        return SESSION
    if deidentify is not False:
        raise ValidationError("deidentify", "expected True, False or a Deidentifier")
    if actor is None:
        raise ValidationError(
            "actor", "an identified frame (deidentify=False) needs the Actor who reads it"
        )
    for operation in IDENTIFIED_READ:
        authorize(actor, operation)
    logger.info("identified %s read by %s", what, actor.id)
    return None


def _as_of(as_of: dt.datetime | None) -> dt.datetime:
    return SystemClock().now() if as_of is None else v.as_utc(as_of, "as_of")


def _convert(
    records: list[tuple[Any, ...]], columns: Sequence[Column], kept: Sequence[Column]
) -> pd.DataFrame:
    import pandas as pd

    data: dict[str, Any] = {}
    values = list(zip(*records, strict=True)) if records else [()] * len(columns)
    for column, series in zip(columns, values, strict=True):
        if column not in kept:
            continue
        kind = column.dtype
        if kind == "datetime":
            data[column.name] = pd.to_datetime(list(series), utc=True).as_unit("us")
        elif kind == "date":
            data[column.name] = pd.to_datetime(list(series)).as_unit("us")
        elif kind == "category":
            data[column.name] = pd.Categorical(list(series))
        elif kind == "string":
            data[column.name] = pd.array(list(series), dtype="string")
        elif kind == "float":
            data[column.name] = pd.array(
                [float("nan") if x is None else x for x in series], dtype="float64"
            )
        else:
            data[column.name] = pd.array(list(series), dtype=kind)
    return pd.DataFrame(data, index=pd.RangeIndex(len(records)))


def _apply(frame: pd.DataFrame, kept: Sequence[Column], deid: Deidentifier | None) -> None:
    """De-identify ``frame`` in place: pseudonyms, then the date shift."""
    import numpy as np
    import pandas as pd

    if deid is None:
        return
    if deid.date_shift_days:
        patients = frame["patient_key"]
        shift = {p: deid.shift_days(p) for p in patients.unique().tolist()}
        days = pd.to_timedelta(patients.map(shift).astype("int64"), unit="D")
        for column in kept:
            if column.dtype == "datetime":
                frame[column.name] = frame[column.name] + days
    for column in kept:
        if column.rule is Rule.PSEUDONYM:
            # one keyed hash per distinct value, spread back by position (in C)
            codes, distinct = pd.factorize(frame[column.name], use_na_sentinel=False)
            named = np.asarray(deid.pseudonyms(column.name, list(distinct)), dtype=object)
            frame[column.name] = pd.array(named[codes], dtype="string")


def _chunks(
    records: Iterator[tuple[Any, ...]],
    columns: Sequence[Column],
    deid: Deidentifier | None,
    size: int = CHUNK,
) -> Iterator[pd.DataFrame]:
    kept = columns_kept(columns, deidentify=deid is not None)
    while True:
        batch = list(itertools.islice(records, size))
        if not batch and size:
            frame = _convert([], columns, kept)
            _apply(frame, kept, deid)
            yield frame
            return
        frame = _convert(batch, columns, kept)
        _apply(frame, kept, deid)
        yield frame
        if len(batch) < size:
            return


def _alike(columns: list[pd.Series]) -> list[pd.Series]:
    """Categorical chunks whose categories share one dtype: a chunk holding nothing but
    missing values has none (pandas types them ``float64``), which ``union_categoricals``
    refuses beside text categories, so it takes the others' empty dtype."""
    import pandas as pd

    typed = [c for c in columns if len(c.cat.categories)]
    if not typed:
        return columns
    empty = pd.CategoricalDtype(typed[0].cat.categories[:0])
    return [c if len(c.cat.categories) else c.astype(empty) for c in columns]


def _concat(chunks: Iterator[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd
    from pandas.api.types import union_categoricals

    parts = list(chunks)
    if len(parts) == 1:
        return parts[0]
    categorical = [
        c for c in parts[0].columns if isinstance(parts[0][c].dtype, pd.CategoricalDtype)
    ]
    unions = {
        c: union_categoricals(_alike([p[c] for p in parts]), sort_categories=True)
        for c in categorical
    }
    frame = pd.concat([p.drop(columns=categorical) for p in parts], ignore_index=True)
    for name in categorical:
        frame[name] = pd.Categorical(unions[name])
    return frame[parts[0].columns]


def referral_chunks(
    store: ReferralStore,
    as_of: dt.datetime,
    deid: Deidentifier | None,
    rules: ClockRules = DEFAULT_CLOCKS,
    size: int = CHUNK,
    *,
    cache: bool = True,
) -> Iterator[pd.DataFrame]:
    """:func:`referrals_frame` a chunk at a time (for writers that stream); through the
    analytics cache (one chunk) when it applies."""
    if cache and deid is not None:
        from ._cache import cached_columns, cached_referrals_table, columns_of, deidentified
        from ._cache import to_pandas as arrow_to_pandas

        table = cached_referrals_table(store, as_of, rules)
        if table is not None:
            columns = cached_columns()
            # de-identified in Arrow, then each column converted and its Arrow copy dropped
            data = columns_of(deidentified(table, columns, deid))
            del table
            return iter([arrow_to_pandas(data, columns)])
    found = (read_row(events, as_of, rules) for events in store.event_histories())
    return _chunks((r for r in found if r is not None), COLUMNS, deid, size)


def event_chunks(
    store: ReferralStore,
    as_of: dt.datetime,
    deid: Deidentifier | None,
    size: int = CHUNK,
    *,
    cache: bool = True,
) -> Iterator[pd.DataFrame]:
    """:func:`events_frame` a chunk at a time; through the analytics cache (one chunk)
    when it applies."""
    if cache and deid is not None:
        from ._cache import cached_event_columns, cached_events_table, columns_of, deidentified
        from ._cache import to_pandas as arrow_to_pandas

        table = cached_events_table(store, as_of)
        if table is not None:
            columns = cached_event_columns()
            data = columns_of(deidentified(table, columns, deid))
            del table
            return iter([arrow_to_pandas(data, columns)])
    found = (row for events in store.event_histories() for row in _event_rows(events, as_of))
    return _chunks(found, EVENT_COLUMNS, deid, size)


def _check_store(store: object) -> ReferralStore:
    if not isinstance(store, ReferralStore):
        raise ValidationError("store", "expected a ReferralStore")
    return store


def referrals_frame(
    store: ReferralStore,
    *,
    as_of: dt.datetime | None = None,
    deidentify: bool | Deidentifier = True,
    actor: Actor | None = None,
    rules: ClockRules = DEFAULT_CLOCKS,
    cache: bool = True,
) -> pd.DataFrame:
    """One row per referral as it stood at ``as_of`` (default: now), with flat typed columns
    (:data:`~referralkit.analytics.COLUMNS`: ids, specialty, payer, plan type, priority,
    status, every lifecycle timestamp, durations, clock breaches, coverage, authorization,
    counts of appointments, no-shows and communications, satisfaction).

    Enumerations are ``category`` columns, timestamps ``datetime64[us, UTC]``, optional
    flags pandas' nullable ``boolean``. Referrals recorded after ``as_of`` are left out and
    each one is replayed up to ``as_of``. One streaming pass over the store.

    ``deidentify=True`` (the default) applies HIPAA Safe Harbor as the model's PHI
    declaration says (:mod:`referralkit.analytics`): no names, MRN, member id, contacts,
    birth date or free text, an age band instead of the birth date, pseudonyms for the
    referral and patient ids; pass a :class:`Deidentifier` to choose the key or to shift
    dates. ``deidentify=False`` returns every column, PHI included, and needs the ``actor``
    reading it, who must be allowed to read referrals and their histories.

    A de-identified frame goes through the store's analytics cache (see the analytics
    how-to) unless ``cache=False``: rows computed before are
    reused while the referral has not changed and ``as_of`` lies within the span the row
    holds for, and only the other referrals are replayed (their rows are then kept). The
    frame is the same either way; ``cache=False`` replays every history and writes nothing.

    ``df.attrs`` holds ``as_of`` and ``deidentified``.
    """
    require("pandas")
    store = _check_store(store)
    moment = _as_of(as_of)
    deid = _deidentifier(deidentify, actor, "referrals frame")
    frame = _concat(referral_chunks(store, moment, deid, rules, cache=cache))
    frame.attrs.update(as_of=moment, deidentified=deid is not None)
    return frame


def events_frame(
    store: ReferralStore,
    *,
    as_of: dt.datetime | None = None,
    deidentify: bool | Deidentifier = True,
    actor: Actor | None = None,
    cache: bool = True,
) -> pd.DataFrame:
    """One row per event recorded up to ``as_of`` (default: now), in referral id then
    history order (:data:`~referralkit.analytics.EVENT_COLUMNS`).

    A de-identified frame goes through the store's analytics cache as
    :func:`referrals_frame` does (an event's row never changes: a referral's rows are read
    again only when it has changed); ``cache=False`` reads every history.

    An event's payload can hold PHI, so its values are read field by field, each column
    naming the model field it comes from; the PHI declaration decides as for
    :func:`referrals_frame`. The whole ``payload`` (JSON) is a column only when
    ``deidentify=False``.
    """
    require("pandas")
    store = _check_store(store)
    moment = _as_of(as_of)
    deid = _deidentifier(deidentify, actor, "events frame")
    frame = _concat(event_chunks(store, moment, deid, cache=cache))
    frame.attrs.update(as_of=moment, deidentified=deid is not None)
    return frame
