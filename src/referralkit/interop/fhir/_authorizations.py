"""The prior authorization: a ClaimResponse (``use`` preauthorization, Da Vinci PAS review
action), both ways."""

from __future__ import annotations

import datetime as dt

from ...model import Authorization, AuthStatus, Referral
from ._codesystems import (
    _REVIEW_ACTION,
    _STATUS_FROM_REVIEW,
    ADJUDICATION,
    CLAIM_TYPE,
    EXT_AUTHORIZATION,
    PAS_REVIEW_ACTION,
    SID_AUTHORIZATION,
    X12_306,
)
from ._datatypes import _complex, _ext, _firsts, _identifier, _instant, _period, _ref, _Urls
from ._json import JSON, _build, _enum, _Node


def _write_claim_response(r: Referral, urls: _Urls, referring: str) -> JSON:
    a = r.authorization
    created = a.decided_at or a.requested_at or r.created_at
    parts: list[JSON] = [
        _ext("status", "Code", a.status.value),
        _ext("expedited", "Boolean", a.expedited),
    ]
    if a.units is not None:
        parts.append(_ext("units", "Integer", a.units))
    for name, value in (
        ("requested", a.requested_at),
        ("decided", a.decided_at),
        ("decision-due", a.decision_due_by),
    ):
        if value is not None:
            parts.append(_ext(name, "DateTime", _instant(value)))
    decided = a.status in (AuthStatus.APPROVED, AuthStatus.DENIED)
    claim: JSON = {
        "resourceType": "ClaimResponse",
        "extension": [
            _complex(EXT_AUTHORIZATION, parts),
            _complex(
                PAS_REVIEW_ACTION,
                [
                    _ext(
                        "code",
                        "CodeableConcept",
                        {"coding": [{"system": X12_306, "code": _REVIEW_ACTION[a.status]}]},
                    )
                ],
            ),
        ],
        "identifier": [_identifier(SID_AUTHORIZATION, r.id)],
        "status": "active",
        "type": {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]},
        "use": "preauthorization",
        "patient": _ref(urls.patient),
        "created": _instant(created),
        "insurer": {"display": r.coverage.payer if r.coverage else "unknown"},
        "requestor": _ref(referring),
        "outcome": "complete" if decided else "queued",
    }
    if a.number is not None:
        claim["preAuthRef"] = a.number
    period = _period(a.valid_from, a.valid_to)
    if period:
        claim["preAuthPeriod"] = period
    if a.service_codes:
        category = "eligible" if a.status is AuthStatus.APPROVED else "submitted"
        claim["addItem"] = [
            {
                "productOrService": {"coding": [{"code": code}]},
                "adjudication": [
                    {"category": {"coding": [{"system": ADJUDICATION, "code": category}]}}
                ],
            }
            for code in a.service_codes
        ]
    return claim


def _authorization(resource: _Node) -> Authorization:
    if resource.text("use") not in (None, "preauthorization"):
        raise resource.error("use", "not a prior authorization (use 'preauthorization')")
    ext = resource.extension(EXT_AUTHORIZATION)
    sub = _firsts(ext) if ext is not None else {}
    status: AuthStatus
    if "status" in sub:
        status = _enum(sub["status"], "valueCode", AuthStatus, sub["status"].need_text("valueCode"))  # type: ignore[assignment]
    else:
        outcome = resource.text("outcome")
        review = resource.extension(PAS_REVIEW_ACTION)
        actions = [
            concept.code_in(X12_306)
            for part in (review.objs("extension") if review is not None else [])
            if (concept := part.obj("valueCodeableConcept")) is not None
        ]
        action = next((_STATUS_FROM_REVIEW[a] for a in actions if a in _STATUS_FROM_REVIEW), None)
        if action is not None:
            status = action
        elif outcome in ("complete", "partial"):
            status = AuthStatus.APPROVED
        else:
            status = AuthStatus.REQUESTED
    codes = []
    for item in resource.objs("addItem"):
        service = item.obj("productOrService")
        if service is None:
            continue
        code = service.any_code() or service.text("text")
        if code is not None:
            codes.append(code)
    period = resource.obj("preAuthPeriod")

    def when(name: str) -> dt.datetime | None:
        return sub[name].datetime("valueDateTime") if name in sub else None

    decided = when("decided")
    if ext is None and status in (AuthStatus.APPROVED, AuthStatus.DENIED):
        decided = resource.datetime("created")
    expedited = sub["expedited"].flag("valueBoolean") if "expedited" in sub else None
    return _build(
        resource.path,
        Authorization,
        status=status,
        number=resource.text("preAuthRef"),
        service_codes=tuple(codes),
        units=sub["units"].integer("valueInteger") if "units" in sub else None,
        valid_from=period.date("start") if period is not None else None,
        valid_to=period.date("end") if period is not None else None,
        expedited=bool(expedited),
        requested_at=when("requested"),
        decided_at=decided,
        decision_due_by=when("decision-due"),
    )
