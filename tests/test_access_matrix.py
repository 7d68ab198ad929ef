"""The authorization matrix (issue 13): every desk operation of the permission tables x every
role x a referral its organisation sent / received / had nothing to do with x with and
without break-glass, asserted against the explicit tables below: no unexpected allow, no
unexpected denial, every denial recorded in the access log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final

import attrs
import pytest

from referralkit import ReferralDesk
from referralkit.access import AccessOutcome
from referralkit.errors import PermissionDeniedError, ReferralKitError
from referralkit.model import AttachmentKind, Channel, Direction, FollowUpKind, Provider
from referralkit.privacy import ACCESS_PERMISSIONS, PERMISSIONS, Actor, Role, ScopePolicy
from referralkit.storage import MemoryStore
from referralkit.testing import FakeClock, sample_request

ORG: Final = "org-a"
KINDS: Final = ("sent", "received", "other")
"""The referral's relation to the actor's organisation: it sent it, it is its target, none."""


def ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


EXPECTED_OPERATIONS: Final[dict[Role, frozenset[str]]] = {
    Role.REFERRER: ops(
        "get history assess explain replay worklist audit intake send request_cancellation "
        "mark_entered_in_error attach log_communication add_follow_up complete_follow_up "
        "break_glass"
    ),
    Role.SPECIALIST: ops(
        "get history assess explain replay worklist audit accept decline hold resume record_visit "
        "add_interim_note complete confirm_cancellation fail attach log_communication "
        "add_follow_up complete_follow_up break_glass"
    ),
    Role.SCHEDULER: ops(
        "get history assess explain replay worklist audit schedule reschedule record_no_show "
        "cancel_appointment log_communication"
    ),
    Role.COORDINATOR: ops(
        "get history assess explain replay worklist audit intake send request_cancellation "
        "mark_entered_in_error attach log_communication add_follow_up complete_follow_up "
        "accept decline hold resume record_visit add_interim_note complete "
        "confirm_cancellation fail schedule reschedule record_no_show cancel_appointment "
        "assign assign_specialist reassess request_authorization record_authorization "
        "acknowledge_self_pay record_survey sweep export export_patient disclosures "
        "claim break_glass"
    ),
    Role.AUDITOR: ops(
        "get history assess explain replay worklist audit access_log disclosures export"
    ),
    Role.ADMIN: ops(
        "get history assess explain replay worklist audit intake send request_cancellation "
        "mark_entered_in_error attach log_communication add_follow_up complete_follow_up "
        "accept decline hold resume record_visit add_interim_note complete "
        "confirm_cancellation fail schedule reschedule record_no_show cancel_appointment "
        "assign assign_specialist reassess request_authorization record_authorization "
        "acknowledge_self_pay record_survey sweep export export_patient disclosures claim"
    ),
}
"""Which operations each role may perform (written out, not derived from the tables)."""

EXPECTED_SIDES: Final[dict[Role, frozenset[str]]] = {
    Role.REFERRER: frozenset({"sent"}),
    Role.SPECIALIST: frozenset({"received"}),
    Role.SCHEDULER: frozenset({"received"}),
    Role.COORDINATOR: frozenset({"sent", "received"}),
    Role.AUDITOR: frozenset({"sent", "received"}),
    Role.ADMIN: frozenset({"sent", "received"}),
}
"""Which referrals each role reaches for its organisation (admin: no bypass)."""

START: Final = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
WHEN: Final = START + dt.timedelta(days=7)


def _provider(provider: Provider, organization: str, suffix: str) -> Provider:
    return attrs.evolve(provider, id=f"{provider.id}-{suffix}", organization=organization)


def request(kind: str, source: str) -> Any:
    """An intake request of ``kind`` relative to ORG."""
    base = sample_request(source)
    assert base.target is not None
    sender, receiver = {
        "sent": (ORG, "org-x"),
        "received": ("org-x", ORG),
        "other": ("org-x", "org-y"),
    }[kind]
    return attrs.evolve(
        base,
        patient=attrs.evolve(base.patient, id=f"pat-{kind}"),
        referring=_provider(base.referring, sender, sender),
        target=_provider(base.target, receiver, receiver),
    )


def _same_org_specialist(d: ReferralDesk, r: str) -> Provider:
    target = d.store.load(r).target
    assert target is not None
    return attrs.evolve(target, id=target.id + "-2")


Call = Callable[[ReferralDesk, Actor, str], Any]

REFERRAL_CALLS: Final[dict[str, Call]] = {
    "get": lambda d, a, r: d.get(a, r),
    "history": lambda d, a, r: d.history(a, r),
    "assess": lambda d, a, r: d.assess(a, r, as_of=WHEN),
    "explain": lambda d, a, r: d.explain(a, r),
    "replay": lambda d, a, r: d.replay(a, r),
    "audit": lambda d, a, r: list(d.audit(a, r, as_of=WHEN)),
    "send": lambda d, a, r: d.send(a, r),
    "accept": lambda d, a, r: d.accept(a, r),
    "decline": lambda d, a, r: d.decline(a, r, "not ours"),
    "hold": lambda d, a, r: d.hold(a, r, "need labs"),
    "resume": lambda d, a, r: d.resume(a, r),
    "schedule": lambda d, a, r: d.schedule(a, r, WHEN),
    "reschedule": lambda d, a, r: d.reschedule(a, r, WHEN),
    "record_no_show": lambda d, a, r: d.record_no_show(a, r),
    "cancel_appointment": lambda d, a, r: d.cancel_appointment(a, r, "clinic closed"),
    "record_visit": lambda d, a, r: d.record_visit(a, r),
    "add_interim_note": lambda d, a, r: d.add_interim_note(a, r, "echo booked"),
    "complete": lambda d, a, r: d.complete(a, r, "plan agreed"),
    "request_cancellation": lambda d, a, r: d.request_cancellation(a, r, "patient request"),
    "confirm_cancellation": lambda d, a, r: d.confirm_cancellation(a, r),
    "fail": lambda d, a, r: d.fail(a, r, "unreachable"),
    "mark_entered_in_error": lambda d, a, r: d.mark_entered_in_error(a, r, "duplicate"),
    "attach": lambda d, a, r: d.attach(a, r, AttachmentKind.LAB, title="CBC", text="normal"),
    "log_communication": lambda d, a, r: d.log_communication(
        a, r, Channel.PHONE, Direction.OUTBOUND, "patient", summary="left message"
    ),
    "add_follow_up": lambda d, a, r: d.add_follow_up(a, r, FollowUpKind.TEST, WHEN.date()),
    "complete_follow_up": lambda d, a, r: d.complete_follow_up(a, r, "no-such-follow-up"),
    "request_authorization": lambda d, a, r: d.request_authorization(a, r, expedited=True),
    "record_authorization": lambda d, a, r: d.record_authorization(
        a, r, approved=True, number="PA-1", service_codes=["70551"], units=1
    ),
    "acknowledge_self_pay": lambda d, a, r: d.acknowledge_self_pay(a, r),
    "assign": lambda d, a, r: d.assign(a, r, "coord-2"),
    "assign_specialist": lambda d, a, r: d.assign_specialist(a, r, _same_org_specialist(d, r)),
    "reassess": lambda d, a, r: d.reassess(a, r),
    "record_survey": lambda d, a, r: d.record_survey(a, r, 4, comment="kind"),
    # the privacy operations that concern one referral's patient
    "export_patient": lambda d, a, r: d.export_patient(a, d.store.load(r).patient.id),
    "disclosures": lambda d, a, r: d.disclosures(a, d.store.load(r).patient.id),
}
"""Each operation on one referral (its arguments are plausible; an operation the lifecycle
refuses after the checks still counts as allowed: only PermissionDeniedError is a denial)."""

STORE_CALLS: Final[dict[str, Callable[[ReferralDesk, Actor], Any]]] = {
    "worklist": lambda d, a: d.worklist(a, as_of=WHEN, limit=None),
    "sweep": lambda d, a: d.sweep(a, as_of=WHEN),
    "export": lambda d, a: list(d.export(a)),
    "access_log": lambda d, a: d.access_log(a),
    "claim": lambda d, a: d.claim(a, 5, lease=dt.timedelta(minutes=5)),
}
"""The operations over the whole store (their scope is checked on what they read)."""

INTAKE: Final = "intake"
BREAK_GLASS: Final = "break_glass"


def every_operation() -> set[str]:
    return {
        op for table in (PERMISSIONS, ACCESS_PERMISSIONS) for ops in table.values() for op in ops
    }


def test_every_operation_has_a_case_and_an_expectation() -> None:
    """The matrix covers every operation the permission tables name, and the explicit table
    agrees with them role by role (a new operation or role must be added to both)."""
    cases = set(REFERRAL_CALLS) | set(STORE_CALLS) | {INTAKE, BREAK_GLASS}
    assert every_operation() <= cases
    assert set(EXPECTED_OPERATIONS) == set(Role)
    for role in Role:
        assert PERMISSIONS[role] | ACCESS_PERMISSIONS[role] == EXPECTED_OPERATIONS[role], role


@attrs.define
class World:
    desk: ReferralDesk
    clock: FakeClock
    ids: dict[str, str]


def world() -> World:
    clock = FakeClock(START)
    counter = iter(range(10**6))
    desk = ReferralDesk(
        MemoryStore(),
        clock=clock,
        new_id=lambda: f"id-{next(counter):05d}",
        scope=ScopePolicy(strict=True, desk_wide={"setup"}),
        access_log_batch=1,
    )
    setup = Actor("setup", {Role.COORDINATOR})
    ids = {}
    for kind in KINDS:
        referral = desk.intake(setup, request(kind, f"REQ-{kind}"))
        ids[kind] = desk.send(setup, referral.id).id
    return World(desk, clock, ids)


def _denials(desk: ReferralDesk, actor: str, since: int) -> list[Any]:
    return [
        r
        for r in desk.store.access_records()[since:]
        if r.actor == actor and r.outcome is AccessOutcome.DENIED
    ]


def _attempt(desk: ReferralDesk, actor: Actor, call: Callable[[], Any]) -> bool:
    """Whether the call got past the checks (True) or was denied (False, and recorded)."""
    before = len(desk.store.access_records())
    try:
        call()
    except PermissionDeniedError:
        assert _denials(desk, actor.id, before), "a denial left no record"
        return False
    except ReferralKitError:
        pass  # a lifecycle guard or a bad argument after the checks: allowed
    assert not _denials(desk, actor.id, before), "an allowed call recorded a denial"
    return True


def _actor(role: Role, glass: bool, w: World) -> tuple[Actor, bool]:
    """The actor of ``role`` at ORG, with a break-glass grant when asked and allowed."""
    actor = Actor(f"{role.value}-user", {role}, organization=ORG, purpose="treatment")
    if not glass:
        return actor, False
    granted = _attempt(
        w.desk, actor, lambda: w.desk.break_glass(actor, "patient unconscious in the ED")
    )
    assert granted == (BREAK_GLASS in EXPECTED_OPERATIONS[role])
    if granted:
        actor = w.desk.break_glass(actor, "patient unconscious in the ED")
    return actor, granted


@pytest.mark.parametrize("glass", [False, True], ids=["usual", "break-glass"])
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_referral_operations(role: Role, glass: bool) -> None:
    """Every operation on a referral: allowed exactly when the explicit tables say so."""
    unexpected: list[tuple[str, str, bool]] = []
    for operation, call in sorted(REFERRAL_CALLS.items()):
        for kind in KINDS:
            w = world()  # a fresh store: an allowed write must not change the next case
            actor, granted = _actor(role, glass, w)
            rid = w.ids[kind]
            allowed = _attempt(w.desk, actor, lambda: call(w.desk, actor, rid))  # noqa: B023
            expected = operation in EXPECTED_OPERATIONS[role] and (
                kind in EXPECTED_SIDES[role] or granted
            )
            if allowed != expected:
                unexpected.append((operation, kind, allowed))
            if allowed and granted:
                flagged = [
                    r
                    for r in w.desk.store.access_records()
                    if r.actor == actor.id and rid in r.referral_ids
                ]
                assert flagged, operation
                assert all(r.flagged and r.grant for r in flagged), operation
    assert unexpected == []


@pytest.mark.parametrize("glass", [False, True], ids=["usual", "break-glass"])
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_intake(role: Role, glass: bool) -> None:
    """Intake: allowed for a request the actor's organisation may send (or under the glass)."""
    unexpected = []
    for kind in KINDS:
        w = world()
        actor, granted = _actor(role, glass, w)
        allowed = _attempt(
            w.desk,
            actor,
            lambda: w.desk.intake(actor, request(kind, "REQ-new")),  # noqa: B023
        )
        expected = INTAKE in EXPECTED_OPERATIONS[role] and (kind in EXPECTED_SIDES[role] or granted)
        if allowed != expected:
            unexpected.append((kind, allowed))
    assert unexpected == []


@pytest.mark.parametrize("glass", [False, True], ids=["usual", "break-glass"])
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("operation", sorted(STORE_CALLS))
def test_store_operations(operation: str, role: Role, glass: bool) -> None:
    """Worklist, sweep, export, access log: denied by role as the table says; when allowed,
    what is read (the referrals the access log records) is exactly the actor's scope."""
    w = world()
    actor, granted = _actor(role, glass, w)
    before = len(w.desk.store.access_records())
    allowed = _attempt(w.desk, actor, lambda: STORE_CALLS[operation](w.desk, actor))
    assert allowed == (operation in EXPECTED_OPERATIONS[role])
    if not allowed or operation in ("access_log", "sweep"):
        return
    named = {
        i
        for r in w.desk.store.access_records()[before:]
        if r.actor == actor.id and r.action == operation
        for i in r.referral_ids
    }
    scope = {w.ids[k] for k in KINDS if k in EXPECTED_SIDES[role] or granted}
    assert named == scope


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_sweep_writes_only_in_scope(role: Role) -> None:
    """The sweep records alerts on the referrals in scope only."""
    w = world()
    actor, _ = _actor(role, False, w)
    w.clock.advance(days=30)
    allowed = _attempt(w.desk, actor, lambda: w.desk.sweep(actor))
    assert allowed == ("sweep" in EXPECTED_OPERATIONS[role])
    touched = {
        kind for kind in KINDS if any(e.actor == actor.id for e in w.desk.store.events(w.ids[kind]))
    }
    assert touched <= EXPECTED_SIDES[role]
    if allowed:
        assert touched  # something was due thirty days on


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_count_and_query_see_only_the_scope(role: Role) -> None:
    """count and query (the reads behind the audited view) count and list the scope only."""
    w = world()
    actor = Actor("u", {role}, organization=ORG)
    scope = {w.ids[k] for k in KINDS if k in EXPECTED_SIDES[role]}
    assert w.desk.count(actor) == len(scope)
    assert {r.id for r in w.desk.query(actor)} == scope
    assert {r.id for r in w.desk.view(actor).query()} == scope


def test_unscoped_actor_under_the_strict_policy_reaches_nothing() -> None:
    w = world()
    nobody = Actor("no-org", {Role.COORDINATOR})
    for rid in w.ids.values():
        with pytest.raises(PermissionDeniedError):
            w.desk.get(nobody, rid)
    assert w.desk.worklist(nobody, as_of=WHEN) == []
    assert w.desk.count(nobody) == 0
    denied = w.desk.store.access_records()
    assert sum(r.outcome is AccessOutcome.DENIED and r.actor == "no-org" for r in denied) == 3


@pytest.mark.parametrize("glass", [False, True], ids=["usual", "break-glass"])
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_claims(role: Role, glass: bool) -> None:
    """Claims (the ``claim`` permission) lease the referrals in scope, and only those."""
    w = world()
    actor, granted = _actor(role, glass, w)
    lease = dt.timedelta(minutes=5)
    claimed: list[str] = []
    allowed = _attempt(
        w.desk,
        actor,
        lambda: claimed.extend(i.referral_id for i in w.desk.claim(actor, 5, lease=lease)),
    )
    assert allowed == ("claim" in EXPECTED_OPERATIONS[role])
    if allowed:
        scope = {w.ids[k] for k in KINDS if k in EXPECTED_SIDES[role] or granted}
        assert set(claimed) == scope


CLI_COMMANDS: Final = {
    "worklist": lambda url, rid: ["worklist", "--db", url, "--as-of", "2026-01-12T09:00:00Z"],
    "audit": lambda url, rid: ["audit", "--db", url],
    "show": lambda url, rid: ["show", rid, "--db", url],
    "fhir export": lambda url, rid: ["fhir", "export", "--db", url, "--no-validate"],
    "fhir export --id": lambda url, rid: ["fhir", "export", "--db", url, "--id", rid],
    "access-log": lambda url, rid: ["access-log", "--db", url],
}
"""The CLI's reading commands (the auditor role; ``--org`` scopes them)."""


@pytest.mark.parametrize("org", [ORG, "org-z"], ids=["own", "other"])
@pytest.mark.parametrize("command", sorted(CLI_COMMANDS))
def test_cli_commands(command: str, org: str, tmp_path: Any, capsys: Any) -> None:
    """Each reading command acts as the named operator for ``--org``: what it reads is the
    auditor's scope of that organisation (the referrals ORG sent or received), a referral
    out of scope is a recorded denial (exit status 2)."""
    from referralkit import cli
    from referralkit.storage import open_store

    url = f"sqlite:///{tmp_path / 'm.db'}"
    with open_store(url) as store:
        w = world()
        for referral, events in w.desk.store.export():
            store.restore_many([(referral, events)])
    rid = w.ids["sent"]
    status = cli.main([*CLI_COMMANDS[command](url, rid), "--as", "op-1", "--org", org])
    scope = {w.ids["sent"], w.ids["received"]} if org == ORG else set()
    with open_store(url) as store:
        mine = [r for r in store.access_records() if r.actor == "op-1"]
    denied = [r for r in mine if r.outcome is AccessOutcome.DENIED]
    named = {i for r in mine if r.outcome is AccessOutcome.ALLOWED for i in r.referral_ids}
    assert named <= scope
    if command in ("show", "fhir export --id") and org != ORG:
        assert status == 2
        assert [r.referral_ids for r in denied] == [(rid,)]
    else:
        assert status == 0, capsys.readouterr().err
        assert denied == []
        if command != "access-log":
            assert named == (scope if command != "show" and "--id" not in command else {rid})
    capsys.readouterr()
