"""The Tasks: the one that tracks the referral through its lifecycle (HL7 BSeR
``businessStatus``), and the follow-up Tasks, both ways."""

from __future__ import annotations

from ...lifecycle import FHIR_TASK
from ...model import FollowUp, FollowUpKind, Referral, Status
from ._bundle import _Bundle
from ._codesystems import (
    _BSER_CODES,
    _BSER_STU1,
    _BSER_STU1_AMBIGUOUS,
    _STATUS_FROM_SR,
    _STATUS_FROM_TASK,
    BSER_BUSINESS_STATUS,
    CS_FOLLOW_UP,
    EXT_HELD_FROM,
    SID_COORDINATOR,
    SID_FOLLOW_UP,
    SID_TASK,
    TASK_CODE,
)
from ._datatypes import _ext, _identifier, _instant, _need_id, _ref, _ref_tail, _Urls
from ._decisions import _urgency_extension
from ._json import JSON, _build, _enum, _Node

# --------------------------------------------------------------------------- writing


def _write_main_task(r: Referral, urls: _Urls, referring: str) -> JSON:
    fhir = FHIR_TASK[r.status]
    task: JSON = {
        "resourceType": "Task",
        "identifier": [_identifier(SID_TASK, r.id)],
        "basedOn": [_ref(urls.sr)],
        "status": fhir.status,
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "focus": _ref(urls.sr),
        "for": _ref(urls.patient),
        "authoredOn": _instant(r.created_at),
        "lastModified": _instant(r.updated_at),
        "requester": _ref(referring),
    }
    if fhir.business_status is not None:
        task["businessStatus"] = {
            "coding": [
                {
                    "system": BSER_BUSINESS_STATUS,
                    "code": fhir.business_status,
                    "display": fhir.business_status_display,
                }
            ]
        }
    extensions: list[JSON] = []
    if r.held_from is not None:
        extensions.append(_ext(EXT_HELD_FROM, "Code", r.held_from.value))
    if r.urgency is not None:
        u = r.urgency
        task["priority"] = u.priority.value
        if u.due_by is not None:
            task["restriction"] = {"period": {"end": _instant(u.due_by)}}
        extensions.append(_urgency_extension(u))
    if extensions:
        task["extension"] = extensions
    if r.status_reason is not None:
        task["statusReason"] = {"text": r.status_reason}
    if r.owner is not None:
        task["owner"] = {"identifier": _identifier(SID_COORDINATOR, r.owner)}
    if r.received_at is not None or r.closed_at is not None:
        period: JSON = {}
        if r.received_at is not None:
            period["start"] = _instant(r.received_at)
        if r.closed_at is not None:
            period["end"] = _instant(r.closed_at)
        task["executionPeriod"] = period
    return task


def _write_follow_up(f: FollowUp, urls: _Urls) -> JSON:
    task: JSON = {
        "resourceType": "Task",
        "identifier": [_identifier(SID_FOLLOW_UP, f.id)],
        "basedOn": [_ref(urls.sr)],
        "partOf": [_ref(urls.task)],
        "status": "completed" if f.done_at is not None else "requested",
        "intent": "plan",
        "code": {"coding": [{"system": CS_FOLLOW_UP, "code": f.kind.value}]},
        "for": _ref(urls.patient),
        "restriction": {"period": {"end": f.due.isoformat()}},
    }
    if f.description is not None:
        task["description"] = f.description
    if f.done_at is not None:
        task["executionPeriod"] = {"end": _instant(f.done_at)}
    return task


# --------------------------------------------------------------------------- reading


def _main_task(bundle: _Bundle, sr: _Node) -> _Node | None:
    """The Task that tracks the referral: its ``focus`` is the ServiceRequest and it is not
    ``partOf`` another Task (a review or scheduling sub-task, whatever its place in the
    Bundle, does not give the referral's state). Without one, a top-level Task ``basedOn`` the
    ServiceRequest. Two such Tasks make the state ambiguous: refused."""
    focused: list[_Node] = []
    based: list[_Node] = []
    for task in bundle.of_type("Task"):
        code = task.obj("code")
        if code is not None and code.code_in(CS_FOLLOW_UP) is not None:
            continue
        if task.objs("partOf"):
            continue
        if bundle.resolve(task.obj("focus"), task, ("ServiceRequest",), strict=False) is sr:
            focused.append(task)
        elif any(
            bundle.resolve(b, task, ("ServiceRequest",), strict=False) is sr
            for b in task.objs("basedOn")
        ):
            based.append(task)
    tasks = focused or based
    if len(tasks) > 1:
        raise tasks[1].error(
            "", "a second top-level Task for the ServiceRequest: which gives its state is ambiguous"
        )
    return tasks[0] if tasks else None


def _status(sr: _Node, task: _Node | None) -> Status:
    if task is not None:
        raw = task.need_text("status")
        business = task.obj("businessStatus")
        code = _business_status(business) if business is not None else None
        found = _STATUS_FROM_TASK.get((raw, code)) or _STATUS_FROM_TASK.get((raw, None))
        if found is not None:
            return found
        if raw == "in-progress":
            return Status.ACCEPTED
        if raw in ("requested", "ready"):
            return Status.RECEIVED
        raise task.error("status", "not a Task status referralkit knows")
    raw = sr.need_text("status")
    found = _STATUS_FROM_SR.get(raw)
    if found is None:
        raise sr.error("status", "not a ServiceRequest status")
    return found


def _business_status(concept: _Node) -> str | None:
    """The BSeR STU2 business status of a Task, read from STU2 or STU1 codes; ``None`` when the
    concept has no BSeR coding (a local status: Task.status decides)."""
    for coding in concept.objs("coding"):
        if coding.data.get("system") != BSER_BUSINESS_STATUS:
            continue
        code = coding.text("code")
        if code is None:
            continue
        if code in _BSER_STU1_AMBIGUOUS:
            raise coding.error(
                "code",
                "BSeR STU1 5.x (fulfillment initiated) does not say which event happened: send "
                "the BSeR STU2 code (5.1.1 scheduled, 5.1.2 unattended, 5.1.3 cancelled, 5.1.4 "
                "completed)",
            )
        code = _BSER_STU1.get(code, code)
        if code not in _BSER_CODES:
            raise coding.error(
                "code", "not a BSeR business status (" + ", ".join(sorted(_BSER_CODES)) + ")"
            )
        return code
    return None


def _owner(ref: _Node) -> str | None:
    ident = ref.obj("identifier")
    return (
        (ident.text("value") if ident is not None else None)
        or ref.text("display")
        or _ref_tail(ref)
    )


def _follow_up(resource: _Node) -> FollowUp:
    fid = _need_id(resource, SID_FOLLOW_UP, "follow-up")
    concept = resource.obj("code")
    kind = (
        _enum(concept, "coding", FollowUpKind, concept.code_in(CS_FOLLOW_UP)) if concept else None
    )
    restriction = resource.obj("restriction")
    period = restriction.obj("period") if restriction is not None else None
    due = period.date("end") if period is not None else None
    if due is None:
        raise resource.error("restriction.period.end", "required, missing (the due date)")
    execution = resource.obj("executionPeriod")
    done = execution.datetime("end") if execution is not None else None
    return _build(
        resource.path,
        FollowUp,
        id=fid,
        kind=kind or FollowUpKind.OTHER,
        due=due,
        description=resource.text("description"),
        done_at=done,
    )
