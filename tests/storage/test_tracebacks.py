"""Exception reports with local variables show no PHI.

Error reporters such as Sentry send every frame's local variables with an exception, and
``traceback.TracebackException(..., capture_locals=True)`` prints them. For each error path of
the desk and of each store (memory, SQLite, PostgreSQL) — validation, not found, transition
and guard refusals, concurrency, duplicates, permission denied, corrupt rows, driver errors —
the test below makes the library raise with canary PHI in every argument and stored field it
can, then scans what a report would hold:

- the ``TracebackException`` with ``capture_locals=True`` (every frame's locals as ``repr``,
  ``self`` included), chained causes and contexts too;
- the frames' locals serialized the way Sentry does it (strings, mappings and sequences by
  value, anything else by ``repr``);
- the exception's message, ``repr``, ``args``, notes and attributes.

Frames of this test module are left out of the scan (they hold what the test passed in); every
frame from the library's entry point down is scanned, third-party frames under it included.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import sqlite3
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import pytest
from storage_support import fresh_schema

from phi_canaries import PLANTED_NEEDLES, canary, plant
from referralkit import (
    Actor,
    Attachment,
    AttachmentKind,
    Channel,
    Code,
    ContactPoint,
    ContactSystem,
    Coverage,
    Direction,
    FakeClock,
    FollowUpKind,
    IntakeRequest,
    MemoryStore,
    Patient,
    PlanType,
    Priority,
    Provider,
    Query,
    Referral,
    ReferralDesk,
    ReferralEvent,
    ReferralKitError,
    Role,
    from_dict,
    replay,
    to_dict,
)
from referralkit.storage import ReferralStore, open_store

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
HERE = str(Path(__file__).resolve())

# The request's PHI fields hold the canaries tests/phi_canaries.py plants from the model's
# declaration; the values below are what the paths pass as arguments, or look up by.
PATIENT_ID = canary(Patient, "id")
MRN = canary(Patient, "mrn")
REASON = "CANARY-REASON"
SERVICE_TEXT = canary(Code, "display")
STATUS_REASON = "CANARY-STATUS-REASON"
TITLE = "CANARY-TITLE"
DOCUMENT = "CANARY-DOCUMENT"
COUNTERPART = "CANARY-COUNTERPART"
SUMMARY = "CANARY-SUMMARY"
FOLLOW_UP = "CANARY-FOLLOW-UP"
NOTE = "CANARY-NOTE"
AUTH_NUMBER = "CANARY-AUTH"
AUTH_CODE = "CANARY-AUTH-CODE"

# Every canary shares a prefix; the planted birth date shows in ISO form or as a date's repr;
# pregnancy shows as a flag set in a repr, a dict or JSON.
NEEDLES = PLANTED_NEEDLES

COORDINATOR = Actor("coord-1", {Role.COORDINATOR})
AUDITOR = Actor("audit-1", {Role.AUDITOR})
NAIVE = dt.datetime(2026, 2, 1, 9, 0)
MRI = Code.cpt("70551", SERVICE_TEXT)


def canary_request(source_id: str, *, complete: bool = True, mri: bool = False) -> IntakeRequest:
    """An intake request with a canary in every field declared PHI (planted by
    :func:`phi_canaries.plant`, which finds them from the model); the service keeps a real
    code, an MRI (which needs prior authorization) with ``mri``, with a canary display."""
    added = START - dt.timedelta(hours=1)
    request = IntakeRequest(
        source_id=source_id,
        patient=Patient(
            id="pat-1",
            mrn="MRN-1",
            given_name="Alex",
            family_name="Example",
            birth_date=dt.date(1961, 4, 2),
            contacts=(ContactPoint(ContactSystem.PHONE, "+1-555-0100"),),
        ),
        referring=Provider("prov-pcp", "Riverside", "family-medicine", networks=("net-a",)),
        target=Provider("prov-card", "Harbor", "cardiology", networks=("net-a",)),
        specialty="cardiology",
        reason="chest pain",
        diagnoses=(Code.icd10("R07.9", "Chest pain"),),
        services=(),
        priority=Priority.ROUTINE,
        coverage=Coverage(
            "cov-1",
            "Acme",
            "Acme HMO",
            PlanType.HMO,
            member_id="ACM1",
            period_start=dt.date(2026, 1, 1),
            period_end=dt.date(2026, 12, 31),
            networks=("net-a",),
        ),
        attachments=(
            (Attachment("doc-h", AttachmentKind.MEDICAL_HISTORY, added, title="History"),)
            if complete
            else ()
        ),
    )
    planted = plant(request)
    assert planted.patient.mrn == MRN
    return attrs.evolve(planted, services=(MRI if mri else Code.cpt("99204", SERVICE_TEXT),))


# --------------------------------------------------------------------------- the scan


def _sentry_values(value: Any, memo: set[int], depth: int = 0) -> Iterator[str]:
    """The text Sentry's serializer would send for ``value``: strings, mappings and sequences
    by value (walked), anything else by ``repr``."""
    if depth > 12 or id(value) in memo:
        return
    if isinstance(value, str):
        yield value
        return
    if isinstance(value, bytes | bytearray):
        yield bytes(value).decode("utf-8", "replace")
        return
    memo.add(id(value))
    if isinstance(value, Mapping):
        for key, item in list(value.items()):
            yield from _sentry_values(key, memo, depth + 1)
            yield from _sentry_values(item, memo, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in list(value):
            yield from _sentry_values(item, memo, depth + 1)
    else:
        try:
            yield repr(value)
        except Exception as exc:  # a broken repr is no leak; Sentry shows a placeholder
            yield f"<repr failed: {type(exc).__name__}>"


def _frames(tb: TracebackType | None) -> Iterator[Any]:
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        todo.extend(getattr(current, "exceptions", ()) or ())


def report_texts(error: BaseException) -> Iterator[tuple[str, str]]:
    """(where, text) pairs of everything an exception report with locals would hold."""
    for current in _chain(error):
        name = type(current).__name__
        yield f"{name} message", str(current)
        yield f"{name} repr", repr(current)
        yield from ((f"{name} args", repr(a)) for a in current.args)
        yield from ((f"{name} note", str(n)) for n in getattr(current, "__notes__", ()))
        for key, value in vars(current).items():
            yield from ((f"{name}.{key}", t) for t in _sentry_values(value, set()))
        for frame in _frames(current.__traceback__):
            if frame.f_code.co_filename == HERE:
                continue
            where = f"{name} frame {frame.f_code.co_name} ({frame.f_code.co_filename})"
            for key, value in frame.f_locals.items():
                yield from ((f"{where} local {key}", t) for t in _sentry_values(value, set()))
    summary = traceback.TracebackException.from_exception(error, capture_locals=True)
    for current_summary in _summaries(summary):
        for frame_summary in current_summary.stack:
            if frame_summary.filename == HERE:
                continue
            for key, text in (frame_summary.locals or {}).items():
                yield f"captured locals of {frame_summary.name}: {key}", text
        yield "formatted", "".join(current_summary.format_exception_only())


def _summaries(summary: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    seen: set[int] = set()
    todo = [summary]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(s for s in (current.__cause__, current.__context__) if s is not None)
        todo.extend(getattr(current, "exceptions", None) or ())


def leaks(error: BaseException) -> list[str]:
    """Where a canary shows in the report of ``error`` (empty: nothing leaks)."""
    found = []
    for where, text in report_texts(error):
        for needle in NEEDLES:
            if needle in text:
                at = text.index(needle)
                found.append(f"{where}: ...{text[max(0, at - 40) : at + 40]!r}...")
                break
    return found


# --------------------------------------------------------------------------- the world


class RacingClock(FakeClock):
    """A clock that runs ``hook`` (once) the next time it is read: the desk reads the clock
    after loading a referral and before saving, so the hook is a concurrent writer."""

    hook: Callable[[], Any] | None = None

    def now(self) -> dt.datetime:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return super().now()


@attrs.define
class World:
    """One store of one kind, a desk over it, and a way to change its rows behind its back."""

    kind: str
    store: ReferralStore
    desk: ReferralDesk
    clock: RacingClock
    other: ReferralDesk
    sql: Callable[[str], None] | None
    sources: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    def request(self, **kwargs: Any) -> IntakeRequest:
        return canary_request(f"REQ-{next(self.sources):04d}", **kwargs)

    def draft(self, **kwargs: Any) -> str:
        return self.desk.intake(COORDINATOR, self.request(**kwargs)).id

    def received(self, **kwargs: Any) -> str:
        return self.desk.send(COORDINATOR, self.draft(**kwargs)).id

    def accepted(self) -> str:
        return self.desk.accept(COORDINATOR, self.received()).id

    def auth_requested(self) -> str:
        rid = self.draft(mri=True)
        return self.desk.request_authorization(COORDINATOR, rid).id


def _world(kind: str, store: ReferralStore, sql: Callable[[str], None] | None) -> World:
    clock = RacingClock(START)
    mine, theirs = itertools.count(1), itertools.count(1)
    desk = ReferralDesk(store, clock=clock, new_id=lambda: f"id-{next(mine):04d}")
    other = ReferralDesk(store, clock=FakeClock(START), new_id=lambda: f"ot-{next(theirs):04d}")
    return World(kind, store, desk, clock, other, sql)


# --------------------------------------------------------------------------- the error paths

Path_ = Callable[[World], Any]
PATHS: dict[str, Path_] = {}
SQL_ONLY: set[str] = set()


def path(name: str, *, sql_only: bool = False) -> Callable[[Path_], Path_]:
    def register(function: Path_) -> Path_:
        PATHS[name] = function
        if sql_only:
            SQL_ONLY.add(name)
        return function

    return register


@path("intake: not a request")
def _intake_not_a_request(w: World) -> Any:
    return w.desk.intake(COORDINATOR, {"patient": {"mrn": MRN}, "reason": REASON})  # type: ignore[arg-type]


@path("intake: permission denied")
def _intake_denied(w: World) -> Any:
    return w.desk.intake(AUDITOR, w.request())


@path("intake: duplicate source id (race)")
def _intake_race(w: World) -> Any:
    request = w.request()
    w.clock.hook = lambda: w.other.intake(COORDINATOR, request)
    return w.desk.intake(COORDINATOR, request)


@path("hold: blank reason")
def _hold_blank(w: World) -> Any:
    return w.desk.hold(COORDINATOR, w.accepted(), "   ")


@path("hold: reason not text")
def _hold_not_text(w: World) -> Any:
    return w.desk.hold(COORDINATOR, w.accepted(), [STATUS_REASON])  # type: ignore[arg-type]


@path("hold: permission denied")
def _hold_denied(w: World) -> Any:
    return w.desk.hold(AUDITOR, w.accepted(), STATUS_REASON)


@path("hold: not an actor")
def _hold_not_actor(w: World) -> Any:
    return w.desk.hold(MRN, w.accepted(), STATUS_REASON)  # type: ignore[arg-type]


@path("hold: unknown referral")
def _hold_unknown(w: World) -> Any:
    return w.desk.hold(COORDINATOR, "no-such-referral", STATUS_REASON)


@path("hold: stale expected version")
def _hold_stale(w: World) -> Any:
    return w.desk.hold(COORDINATOR, w.accepted(), STATUS_REASON, expected_version=1)


@path("hold: concurrent change (race)")
def _hold_race(w: World) -> Any:
    rid = w.accepted()
    w.clock.hook = lambda: w.other.assign(COORDINATOR, rid, "coord-9")
    return w.desk.hold(COORDINATOR, rid, STATUS_REASON)


@path("decline: illegal transition")
def _decline_illegal(w: World) -> Any:
    return w.desk.decline(COORDINATOR, w.draft(), STATUS_REASON)


@path("accept: guard (incomplete intake)")
def _accept_guard(w: World) -> Any:
    return w.desk.accept(COORDINATOR, w.received(complete=False))


@path("schedule: naive start")
def _schedule_naive(w: World) -> Any:
    return w.desk.schedule(COORDINATOR, w.accepted(), NAIVE)


@path("schedule: guard (authorization)")
def _schedule_guard(w: World) -> Any:
    rid = w.received(mri=True)
    w.desk.attach(COORDINATOR, rid, AttachmentKind.PRIOR_AUTH_FORM, title=TITLE, text=DOCUMENT)
    w.desk.accept(COORDINATOR, rid)
    return w.desk.schedule(COORDINATOR, rid, START + dt.timedelta(days=3))


@path("complete: illegal transition")
def _complete_illegal(w: World) -> Any:
    return w.desk.complete(COORDINATOR, w.draft(), NOTE, title=TITLE)


@path("add_interim_note: illegal transition")
def _interim_illegal(w: World) -> Any:
    return w.desk.add_interim_note(COORDINATOR, w.draft(), NOTE, title=TITLE)


@path("cancel_appointment: illegal transition")
def _cancel_illegal(w: World) -> Any:
    return w.desk.cancel_appointment(COORDINATOR, w.draft(), STATUS_REASON)


@path("attach: text not text")
def _attach_not_text(w: World) -> Any:
    return w.desk.attach(COORDINATOR, w.draft(), AttachmentKind.LAB, title=TITLE, text=[DOCUMENT])  # type: ignore[arg-type]


@path("attach: title too long")
def _attach_long_title(w: World) -> Any:
    return w.desk.attach(COORDINATOR, w.draft(), AttachmentKind.LAB, title=TITLE * 30, text=NOTE)


@path("attach: unknown kind")
def _attach_kind(w: World) -> Any:
    return w.desk.attach(COORDINATOR, w.draft(), "x-ray", title=TITLE, text=DOCUMENT)  # type: ignore[arg-type]


@path("log_communication: counterpart too long")
def _communication_long(w: World) -> Any:
    return w.desk.log_communication(
        COORDINATOR, w.draft(), Channel.PHONE, Direction.OUTBOUND, COUNTERPART * 20, summary=SUMMARY
    )


@path("log_communication: naive time")
def _communication_naive(w: World) -> Any:
    return w.desk.log_communication(
        COORDINATOR,
        w.draft(),
        Channel.PHONE,
        Direction.OUTBOUND,
        COUNTERPART,
        summary=SUMMARY,
        at=NAIVE,
    )


@path("log_communication: permission denied")
def _communication_denied(w: World) -> Any:
    return w.desk.log_communication(
        AUDITOR, w.draft(), Channel.SMS, Direction.OUTBOUND, COUNTERPART, summary=SUMMARY
    )


@path("add_follow_up: description not text")
def _follow_up_not_text(w: World) -> Any:
    return w.desk.add_follow_up(
        COORDINATOR,
        w.draft(),
        FollowUpKind.TEST,
        dt.date(2026, 2, 1),
        description=(FOLLOW_UP,),  # type: ignore[arg-type]
    )


@path("add_follow_up: due not a date")
def _follow_up_due(w: World) -> Any:
    return w.desk.add_follow_up(
        COORDINATOR,
        w.draft(),
        FollowUpKind.TEST,
        "2026-02-01",
        description=FOLLOW_UP,  # type: ignore[arg-type]
    )


@path("complete_follow_up: unknown follow-up")
def _complete_follow_up(w: World) -> Any:
    return w.desk.complete_follow_up(COORDINATOR, w.draft(), "no-such-follow-up")


@path("request_authorization: guard (not needed)")
def _request_auth_guard(w: World) -> Any:
    return w.desk.request_authorization(COORDINATOR, w.draft())


@path("record_authorization: guard (not requested)")
def _record_auth_guard(w: World) -> Any:
    return w.desk.record_authorization(
        COORDINATOR, w.draft(), approved=True, number=AUTH_NUMBER, service_codes=[AUTH_CODE]
    )


@path("record_authorization: number too long")
def _record_auth_number(w: World) -> Any:
    return w.desk.record_authorization(
        COORDINATOR,
        w.auth_requested(),
        approved=True,
        number=AUTH_NUMBER * 10,
        service_codes=[AUTH_CODE],
    )


@path("assign_specialist: not a provider")
def _assign_not_provider(w: World) -> Any:
    return w.desk.assign_specialist(COORDINATOR, w.draft(), {"name": MRN})  # type: ignore[arg-type]


@path("get: unknown referral")
def _get_unknown(w: World) -> Any:
    return w.desk.get(AUDITOR, "no-such-referral")


@path("history: unknown referral")
def _history_unknown(w: World) -> Any:
    return w.desk.history(AUDITOR, "no-such-referral")


@path("get: a Referral where an id belongs")
def _get_referral_object(w: World) -> Any:
    referral = w.desk.get(AUDITOR, w.draft())
    return w.desk.get(AUDITOR, referral)  # type: ignore[arg-type]


@path("count: unknown filter")
def _count_unknown_filter(w: World) -> Any:
    return w.desk.count(AUDITOR, mrn=MRN)


@path("worklist: naive filter time")
def _worklist_naive(w: World) -> Any:
    return w.desk.worklist(AUDITOR, updated_since=NAIVE, patient_id=PATIENT_ID)


@path("store.save: change out of order")
def _save_bad_change(w: World) -> Any:
    referral = w.desk.get(AUDITOR, w.draft())
    events = w.desk.history(AUDITOR, referral.id)
    return w.store.save(attrs.evolve(referral, version=5), events, 1)


@path("store.save_many: one source id twice in a batch")
def _save_many_duplicate(w: World) -> Any:
    made = w.desk.intake(COORDINATOR, w.request())
    events = w.desk.history(AUDITOR, made.id)
    twin = attrs.evolve(made, id="twin")
    twin_events = [attrs.evolve(e, referral_id="twin") for e in events]
    first = attrs.evolve(made, id="first")
    first_events = [attrs.evolve(e, referral_id="first") for e in events]
    return w.store.save_many([(first, first_events, 0), (twin, twin_events, 0)])


@path("store.restore_many: referral exists")
def _restore_exists(w: World) -> Any:
    rid = w.draft()
    return w.store.restore_many([(w.store.load(rid), w.store.events(rid))])


@path("store.load: a Referral where an id belongs")
def _load_referral_object(w: World) -> Any:
    return w.store.load(w.store.load(w.draft()))  # type: ignore[arg-type]


@path("store.claim: naive now")
def _claim_naive(w: World) -> Any:
    w.draft()
    return w.store.claim(
        "coord-1", 1, now=NAIVE, lease=dt.timedelta(hours=1), query=Query(patient_id=PATIENT_ID)
    )


@path("from_dict: bad stored value")
def _from_dict(w: World) -> Any:
    data = to_dict(w.desk.get(AUDITOR, w.draft()))
    data["patient"]["mrn"] = MRN * 20
    return from_dict(Referral, data)


@path("replay: malformed payload")
def _replay(w: World) -> Any:
    events = w.desk.history(AUDITOR, w.draft())
    broken = ReferralEvent(
        events[0].referral_id,
        2,
        0,
        START,
        "coord-1",
        "attachment_added",
        {"attachment": {"id": "x", "title": TITLE, "text": DOCUMENT, "kind": NOTE}},
    )
    return replay([*events, broken])


@path("load_dump: a line the model refuses")
def _load_dump(w: World) -> Any:
    import io

    from referralkit.storage import dump, load_dump

    w.draft()
    out = io.StringIO()
    dump(w.store, out)
    lines = out.getvalue().splitlines()
    k = next(i for i, line in enumerate(lines) if f'"mrn":"{MRN}"' in line)
    lines[k] = lines[k].replace(f'"mrn":"{MRN}"', '"mrn":"' + MRN * 20 + '"')
    return load_dump(MemoryStore(), lines)


@path("load: corrupt snapshot (bad field)", sql_only=True)
def _corrupt_field(w: World) -> Any:
    rid = w.draft()
    data = to_dict(w.desk.get(AUDITOR, rid))
    data["patient"]["mrn"] = MRN * 20
    assert w.sql is not None
    w.sql(_update_snapshot(w, rid, data))
    return w.desk.get(AUDITOR, rid)


@path("load: corrupt snapshot (not JSON)", sql_only=True)
def _corrupt_json(w: World) -> Any:
    rid = w.draft()
    assert w.sql is not None
    if w.kind == "postgresql":
        # the json column refuses text that is not JSON: a wrong shape instead
        w.sql(f"UPDATE {{s}}.referrals SET snapshot = '[\"{MRN}\"]' WHERE id = '{rid}'")
    else:
        w.sql(f"UPDATE referrals SET snapshot = '{{\"mrn\": \"{MRN}\"' WHERE id = '{rid}'")
    return w.desk.get(AUDITOR, rid)


@path("history: corrupt event payload", sql_only=True)
def _corrupt_payload(w: World) -> Any:
    rid = w.draft()
    assert w.sql is not None
    if w.kind == "postgresql":
        w.sql(f"UPDATE {{s}}.events SET payload = '[\"{MRN}\"]' WHERE referral_id = '{rid}'")
    else:
        w.sql(f"UPDATE events SET payload = '{{\"mrn\": \"{MRN}\"' WHERE referral_id = '{rid}'")
    return w.desk.history(AUDITOR, rid)


@path("intake: driver error (table gone)", sql_only=True)
def _driver_error(w: World) -> Any:
    w.draft()
    assert w.sql is not None
    prefix = "{s}." if w.kind == "postgresql" else ""
    w.sql(f"ALTER TABLE {prefix}events RENAME TO events_gone")
    return w.desk.intake(COORDINATOR, w.request())


@path("get: store closed", sql_only=True)
def _closed(w: World) -> Any:
    rid = w.draft()
    w.store.close()
    return w.desk.get(AUDITOR, rid)


def _update_snapshot(w: World, rid: str, data: dict[str, Any]) -> str:
    import json

    text = json.dumps(data).replace("'", "''")
    table = "{s}.referrals" if w.kind == "postgresql" else "referrals"
    return f"UPDATE {table} SET snapshot = '{text}' WHERE id = '{rid}'"


# --------------------------------------------------------------------------- the stores


def _sqlite_sql(db: Path) -> Callable[[str], None]:
    def run(statement: str) -> None:
        # the connection's context manager commits but does not close (closing does)
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(statement)

    return run


def _postgres_sql(url: str) -> Callable[[str], None]:
    import psycopg

    from referralkit.storage.postgres import connection_settings

    conninfo, schema = connection_settings(url)

    def run(statement: str) -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement.replace("{s}", f'"{schema}"').encode())

    return run


def _attempt(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except Exception as exc:  # non-library errors are measured too: they are leaks as well
        return exc
    raise AssertionError("the path raised nothing")


def run_paths(kind: str, make: Callable[[ExitStack], World]) -> dict[str, list[str]]:
    """Each path in a fresh world: name -> where canaries leaked (empty lists: clean)."""
    found: dict[str, list[str]] = {}
    for name, function in PATHS.items():
        if name in SQL_ONLY and kind == "memory":
            continue
        with ExitStack() as stack:
            world = make(stack)
            error = _attempt(lambda w=world, f=function: f(w))  # type: ignore[misc]
            found[name] = (
                leaks(error)
                if isinstance(error, ReferralKitError)
                else [f"not a library error: {type(error).__name__}", *leaks(error)]
            )
    return found


def _check(kind: str, found: dict[str, list[str]], figures: Callable[..., None]) -> None:
    leaking = {name: where for name, where in found.items() if where}
    figures(f"traceback PHI scan ({kind})", paths=len(found), leaking=len(leaking))
    shown = "\n".join(f"- {name}: {where[:3]}" for name, where in leaking.items())
    assert not leaking, f"{len(leaking)} of {len(found)} error paths leak PHI:\n{shown}"


class TestNoPhiInTracebacksWithLocals:
    def test_memory(self, figures: Callable[..., None]) -> None:
        """Every error path of the desk over a memory store, and of the store itself."""

        def make(stack: ExitStack) -> World:
            return _world("memory", MemoryStore(), None)

        found = run_paths("memory", make)
        assert len(found) >= 38
        _check("memory", found, figures)

    def test_sqlite(self, tmp_path: Path, figures: Callable[..., None]) -> None:
        """Every error path over a SQLite file, corrupt rows and driver errors included."""
        counter = itertools.count()

        def make(stack: ExitStack) -> World:
            db = tmp_path / f"t{next(counter)}.db"
            store = stack.enter_context(open_store(f"sqlite:///{db}"))
            return _world("sqlite", store, _sqlite_sql(db))

        found = run_paths("sqlite", make)
        assert len(found) >= 43
        _check("sqlite", found, figures)

    def test_postgresql(self, postgres_url: str, figures: Callable[..., None]) -> None:
        """Every error path over PostgreSQL (one fresh schema per path)."""

        def make(stack: ExitStack) -> World:
            url = stack.enter_context(fresh_schema(postgres_url))
            store = stack.enter_context(open_store(url))
            return _world("postgresql", store, _postgres_sql(url))

        found = run_paths("postgresql", make)
        assert len(found) >= 43
        _check("postgresql", found, figures)


# --------------------------------------------------------------------------- foreign errors


class ForeignError(RuntimeError):
    """A failure that is not the library's: a bug in a policy, an interrupt, a full disk."""


class FailingPolicy:
    """A coverage decider and urgency assessor that fail, as a buggy policy would."""

    def decide(self, referral: Referral, at: dt.datetime) -> Any:
        raise ForeignError("policy failed")

    def assess(self, referral: Referral, at: dt.datetime) -> Any:
        raise ForeignError("policy failed")


class FailingClock(FakeClock):
    def now(self) -> dt.datetime:
        raise ForeignError("clock failed")


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise ForeignError("failed while writing")


Foreign = Callable[[World, pytest.MonkeyPatch], Any]
FOREIGN: dict[str, Foreign] = {}


def foreign(name: str) -> Callable[[Foreign], Foreign]:
    def register(function: Foreign) -> Foreign:
        FOREIGN[name] = function
        return function

    return register


@foreign("a coverage policy fails during intake")
def _policy_at_intake(w: World, patch: pytest.MonkeyPatch) -> Any:
    desk = ReferralDesk(w.store, clock=FakeClock(START), coverage=FailingPolicy())
    return desk.intake(COORDINATOR, w.request())


@foreign("an urgency policy fails while assigning a specialist")
def _policy_at_assign(w: World, patch: pytest.MonkeyPatch) -> Any:
    rid = w.received()
    desk = ReferralDesk(w.store, clock=FakeClock(START), urgency=FailingPolicy())
    return desk.assign_specialist(COORDINATOR, rid, Provider("prov-2", "Bayview", "cardiology"))


@foreign("the clock fails while completing with a note")
def _clock(w: World, patch: pytest.MonkeyPatch) -> Any:
    rid = w.accepted()
    desk = ReferralDesk(w.store, clock=FailingClock(START))
    return desk.complete(COORDINATOR, rid, NOTE, title=TITLE)


@foreign("writing fails in the store (hold with a reason)")
def _store_write(w: World, patch: pytest.MonkeyPatch) -> Any:
    rid = w.accepted()
    if w.kind == "memory":
        patch.setattr(MemoryStore, "_apply", _boom)
    else:
        # the SQL stores write their rows through the record codec (sealing, encryption)
        patch.setattr("referralkit.storage._json.RecordCodec.payload_text", _boom)
    return w.desk.hold(COORDINATOR, rid, STATUS_REASON)


@foreign("writing fails in the store (intake)")
def _store_intake(w: World, patch: pytest.MonkeyPatch) -> Any:
    if w.kind == "memory":
        patch.setattr(MemoryStore, "_apply", _boom)
    else:
        # the SQL stores write their rows through the record codec (sealing, encryption)
        patch.setattr("referralkit.storage._json.RecordCodec.payload_text", _boom)
    return w.desk.intake(COORDINATOR, w.request())


@foreign("writing fails in the store (communication, queried by patient)")
def _store_query(w: World, patch: pytest.MonkeyPatch) -> Any:
    rid = w.draft()
    w.desk.log_communication(
        COORDINATOR, rid, Channel.PHONE, Direction.INBOUND, COUNTERPART, summary=SUMMARY
    )
    if w.kind in ("sqlite", "postgresql"):
        patch.setattr("referralkit.storage._json.RecordCodec.referral", _boom)
    if w.kind == "memory":
        patch.setattr(MemoryStore, "_live", _boom)
        return w.store.claim(
            "c1", 1, now=START, lease=dt.timedelta(hours=1), query=Query(patient_id=PATIENT_ID)
        )
    return w.desk.worklist(AUDITOR, patient_id=PATIENT_ID)


def run_foreign(kind: str, make: Callable[[ExitStack], World]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, function in FOREIGN.items():
        with ExitStack() as stack, pytest.MonkeyPatch.context() as patch:
            world = make(stack)
            error = _attempt(lambda w=world, f=function, p=patch: f(w, p))  # type: ignore[misc]
            assert isinstance(error, ForeignError), f"{name}: {type(error).__name__}: {error}"
            found[name] = leaks(error)
    return found


class TestNoPhiInFramesOfForeignErrors:
    """An exception that is not the library's passes through the desk's and the stores'
    frames with its whole traceback (a bug must stay findable): the PHI those frames hold is
    sealed, so the report shows none."""

    def test_memory(self, figures: Callable[..., None]) -> None:
        found = run_foreign("memory", lambda stack: _world("memory", MemoryStore(), None))
        _check("memory, foreign errors", found, figures)

    def test_sqlite(self, tmp_path: Path, figures: Callable[..., None]) -> None:
        counter = itertools.count()

        def make(stack: ExitStack) -> World:
            db = tmp_path / f"f{next(counter)}.db"
            store = stack.enter_context(open_store(f"sqlite:///{db}"))
            return _world("sqlite", store, _sqlite_sql(db))

        _check("sqlite, foreign errors", run_foreign("sqlite", make), figures)

    def test_postgresql(self, postgres_url: str, figures: Callable[..., None]) -> None:
        def make(stack: ExitStack) -> World:
            url = stack.enter_context(fresh_schema(postgres_url))
            store = stack.enter_context(open_store(url))
            return _world("postgresql", store, _postgres_sql(url))

        _check("postgresql, foreign errors", run_foreign("postgresql", make), figures)
