"""The referral's visits: Appointment, both ways."""

from __future__ import annotations

import datetime as dt

from ...model import Appointment, Provider, Referral
from ._bundle import _PARTIES, _Bundle
from ._codesystems import _APPOINTMENT_FROM, SID_APPOINTMENT, SID_PROVIDER
from ._datatypes import (
    _display_id,
    _identifier,
    _instant,
    _need_id,
    _ref,
    _ref_tail,
    _ref_type,
    _Urls,
)
from ._json import JSON, _build, _Node
from ._providers import _provider


def _write_appointment(a: Appointment, r: Referral, urls: _Urls, target: str | None) -> JSON:
    provider: JSON = {"identifier": _identifier(SID_PROVIDER, a.provider_id)}
    if target is not None and r.target is not None and r.target.id == a.provider_id:
        provider["reference"] = target
    participants: list[JSON] = [
        {"actor": _ref(urls.patient), "status": "accepted"},
        {"actor": provider, "status": "accepted"},
    ]
    if a.location is not None:
        participants.append(
            {"actor": {"type": "Location", "display": a.location}, "status": "accepted"}
        )
    appointment: JSON = {
        "resourceType": "Appointment",
        "identifier": [_identifier(SID_APPOINTMENT, a.id)],
        "status": a.status.value,
        "start": _instant(a.start),
        **_end(a),
        "basedOn": [_ref(urls.sr)],
        "participant": participants,
    }
    if a.minutes > 0:
        appointment["minutesDuration"] = a.minutes
    if a.booked_at is not None:
        appointment["created"] = _instant(a.booked_at)
    return appointment


def _end(a: Appointment) -> JSON:
    try:
        return {"end": _instant(a.start + dt.timedelta(minutes=a.minutes))}
    except OverflowError:  # ends after year 9999: minutesDuration says how long
        return {}


def _appointment(
    resource: _Node, bundle: _Bundle | None = None, target: Provider | None = None
) -> Appointment:
    aid = _need_id(resource, SID_APPOINTMENT, "appointment")
    raw_status = resource.need_text("status")
    status = _APPOINTMENT_FROM.get(raw_status)
    if status is None:
        raise resource.error(
            "status",
            "not a booked, arrived, checked-in, fulfilled, cancelled or noshow appointment",
        )
    start = resource.datetime("start")
    if start is None:  # FHIR (app-3) allows no start only on proposed or cancelled ones
        raise resource.error("start", "required, missing (the appointment is not proposed)")
    minutes = resource.integer("minutesDuration")
    if minutes is None:
        end = resource.datetime("end")
        minutes = int((end - start).total_seconds() // 60) if end is not None else 30
    provider_id: str | None = None
    named: str | None = None  # a non-patient actor known only by its display
    location: str | None = None
    for participant in resource.objs("participant"):
        actor = participant.obj("actor")
        if actor is None:
            continue
        resolved = bundle.resolve(actor, resource, (*_PARTIES, "Location")) if bundle else None
        kind = actor.text("type") or (resolved.type if resolved else None) or _ref_type(actor)
        if kind == "Location":
            if location is None:
                location = (resolved.text("name") if resolved else None) or actor.text("display")
            continue
        if kind == "Patient":
            continue
        if provider_id is None:
            ident = actor.obj("identifier")
            if ident is not None and ident.data.get("system") == SID_PROVIDER:
                provider_id = ident.text("value")
            elif resolved is not None and kind in (
                "Practitioner",
                "PractitionerRole",
                "Organization",
            ):
                provider_id = _provider(resolved, bundle).id
            elif kind in ("Practitioner", "PractitionerRole", "Organization"):
                provider_id = _ref_tail(actor)
            elif kind is None and actor.text("reference") is None:
                named = named or actor.text("display")
    if provider_id is None and named is not None:
        provider_id = _display_id("provider", named)
    if provider_id is None and target is not None:  # the referral's target is who sees them
        provider_id = target.id
    if provider_id is None:
        raise resource.error("participant", "no practitioner taking part")
    return _build(
        resource.path,
        Appointment,
        id=aid,
        start=start,
        provider_id=provider_id,
        status=status,
        minutes=minutes,
        location=location,
        booked_at=resource.datetime("created"),
    )
