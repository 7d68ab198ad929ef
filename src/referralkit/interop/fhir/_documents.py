"""The referral's documents (referral letter, history, consult note...): DocumentReference
with the text inline as base64, both ways."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt

from ...model import Attachment, AttachmentKind
from ._codesystems import (
    _DOCUMENT_FROM_LOINC,
    _DOCUMENT_LOINC,
    CS_DOCUMENT_KIND,
    LOINC,
    SID_DOCUMENT,
)
from ._datatypes import _identifier, _instant, _need_id, _ref, _Urls
from ._json import JSON, _build, _enum, _Node


def _write_document(a: Attachment, urls: _Urls) -> JSON:
    codings = [{"system": CS_DOCUMENT_KIND, "code": a.kind.value}]
    loinc = _DOCUMENT_LOINC.get(a.kind)
    if loinc is not None:
        codings.append({"system": LOINC, "code": loinc[0], "display": loinc[1]})
    content: JSON = {"contentType": a.content_type}
    if a.text is not None:
        raw = a.text.encode("utf-8", "surrogatepass")
        content["data"] = base64.b64encode(raw).decode("ascii")
    if a.title is not None:
        content["title"] = a.title
    return {
        "resourceType": "DocumentReference",
        "identifier": [_identifier(SID_DOCUMENT, a.id)],
        "status": "current",
        "type": {"coding": codings},
        "subject": _ref(urls.patient),
        "date": _instant(a.added_at),
        "content": [{"attachment": content}],
        "context": {"related": [_ref(urls.sr)]},
    }


def _document(resource: _Node, default_time: dt.datetime | None = None) -> Attachment:
    """A DocumentReference as an Attachment. ``date`` is 0..1 in FHIR: without it the document
    counts as added at its last update, else at ``default_time`` (the referral's creation)."""
    did = _need_id(resource, SID_DOCUMENT, "document")
    kind = AttachmentKind.OTHER
    concept = resource.obj("type")
    if concept is not None:
        ours = concept.code_in(CS_DOCUMENT_KIND)
        if ours is not None:
            kind = _enum(concept, "coding", AttachmentKind, ours) or kind
        else:
            loinc = concept.code_in(LOINC)
            kind = _DOCUMENT_FROM_LOINC.get(loinc or "", kind)
    meta = resource.obj("meta")
    added = (
        resource.datetime("date")
        or (meta.datetime("lastUpdated") if meta is not None else None)
        or default_time
    )
    if added is None:
        raise resource.error(
            "date", "no time for the document (referralkit needs one: date or meta.lastUpdated)"
        )
    contents = resource.objs("content")
    if not contents:
        raise resource.error("content", "required, missing")
    attachment = contents[0].obj("attachment")
    if attachment is None:
        raise contents[0].error("attachment", "required, missing")
    text: str | None = None
    data = attachment.text("data")
    if data is not None:
        # refused below, without the decoder's error (it quotes the data) as its context
        with contextlib.suppress(binascii.Error, ValueError):
            text = base64.b64decode(data, validate=True).decode("utf-8", "surrogatepass")
        if text is None:
            raise attachment.error(
                "data", "not base64 of UTF-8 text (referralkit keeps documents as text)"
            )
    return _build(
        resource.path,
        Attachment,
        id=did,
        kind=kind,
        added_at=added,
        title=attachment.text("title"),
        content_type=attachment.text("contentType") or "text/plain",
        text=text,
    )
