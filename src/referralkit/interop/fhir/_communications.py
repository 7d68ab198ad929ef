"""The referral's recorded contacts (calls, faxes, portal messages): Communication, both
ways."""

from __future__ import annotations

import datetime as dt

from ...model import Channel, Communication, Direction
from ._bundle import _PARTIES, _Bundle
from ._codesystems import (
    _CHANNEL_FROM_MODE,
    _CHANNEL_MODES,
    CS_CHANNEL,
    EXT_INTERPRETER_USED,
    PARTICIPATION_MODE,
    SID_COMMUNICATION,
    UNSPECIFIED,
)
from ._datatypes import _display_or_name, _ext, _identifier, _instant, _need_id, _ref, _Urls
from ._json import JSON, _build, _enum, _Node


def _write_communication(c: Communication, urls: _Urls) -> JSON:
    codings = [{"system": CS_CHANNEL, "code": c.channel.value}]
    mode = _CHANNEL_MODES.get(c.channel)
    if mode is not None:
        codings.append({"system": PARTICIPATION_MODE, "code": mode})
    communication: JSON = {
        "resourceType": "Communication",
        # Resource.language: the language the communication was held in (BCP 47)
        **({"language": c.language} if c.language is not None else {}),
        "identifier": [_identifier(SID_COMMUNICATION, c.id)],
        "basedOn": [_ref(urls.sr)],
        "status": "completed",
        "subject": _ref(urls.patient),
        "medium": [{"coding": codings}],
    }
    if c.interpreter_used:
        communication["extension"] = [_ext(EXT_INTERPRETER_USED, "Boolean", True)]
    if c.direction is Direction.OUTBOUND:
        communication["sent"] = _instant(c.at)
        communication["recipient"] = [{"display": c.counterpart}]
    else:
        communication["received"] = _instant(c.at)
        communication["sender"] = {"display": c.counterpart}
    if c.summary is not None:
        communication["payload"] = [{"contentString": c.summary}]
    return communication


def _communication(
    resource: _Node, bundle: _Bundle | None = None, default_time: dt.datetime | None = None
) -> Communication:
    """A Communication as referralkit records it. What FHIR makes optional is optional here: no
    ``medium`` (or one referralkit has no name for) is channel ``other``; no ``sent`` nor
    ``received`` is its last update, else ``default_time`` (the referral's creation); no
    sender or recipient named is counterpart ``unspecified``."""
    cid = _need_id(resource, SID_COMMUNICATION, "communication")
    channel: Channel | None = None
    for medium in resource.objs("medium"):
        ours = medium.code_in(CS_CHANNEL)
        if ours is not None:
            channel = _enum(medium, "coding", Channel, ours)
            break
        mode = medium.code_in(PARTICIPATION_MODE)
        if mode in _CHANNEL_FROM_MODE:
            channel = _CHANNEL_FROM_MODE[mode]
            break
    sent = resource.datetime("sent")
    received = resource.datetime("received")
    inbound = (sent is None and received is not None) or (
        sent is None and not resource.objs("recipient") and resource.obj("sender") is not None
    )
    if inbound:
        ref = resource.obj("sender")
        counterpart_refs = [ref] if ref is not None else []
    else:
        counterpart_refs = resource.objs("recipient")
    meta = resource.obj("meta")
    at = sent or received or (meta.datetime("lastUpdated") if meta is not None else None)
    at = at or default_time
    if at is None:
        raise resource.error(
            "sent",
            "no time for the communication (referralkit needs one: sent, received or "
            "meta.lastUpdated)",
        )
    counterpart = None
    for ref in counterpart_refs:
        resolved = bundle.resolve(ref, resource, _PARTIES) if bundle else None
        counterpart = _display_or_name(ref, resolved)
        if counterpart is not None:
            break
    summary = None
    for payload in resource.objs("payload"):
        summary = payload.text("contentString")
        if summary is not None:
            break
    interpreter = resource.extension(EXT_INTERPRETER_USED)
    return _build(
        resource.path,
        Communication,
        id=cid,
        at=at,
        channel=channel or Channel.OTHER,
        direction=Direction.INBOUND if inbound else Direction.OUTBOUND,
        counterpart=counterpart or UNSPECIFIED,
        summary=summary,
        interpreter_used=bool(interpreter is not None and interpreter.flag("valueBoolean")),
        language=resource.text("language"),
    )
