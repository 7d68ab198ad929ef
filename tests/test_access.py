"""Scopes, break-glass, the access log through the desk and the CLI, the audited view, and a
patient's rights (export, accounting of disclosures) — issue 13 items 1, 2, 6 and 7."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from referralkit import ReferralDesk
from referralkit.access import AccessOutcome, AccessQuery, AccessRecord, actor_record, chained_row
from referralkit.cli import main
from referralkit.errors import PermissionDeniedError, ValidationError
from referralkit.privacy import (
    COMPATIBLE_SCOPE,
    STRICT_SCOPE,
    Actor,
    BreakGlass,
    Role,
    ScopePolicy,
    in_scope,
)
from referralkit.storage import MemoryStore, Query, open_store
from referralkit.testing import FakeClock, sample_request

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
REASON = "unconscious patient, Jane Roe, in the ED"  # free text with PHI


def request(source: str, sender: str, receiver: str, patient: str = "pat-1") -> Any:
    base = sample_request(source)
    assert base.target is not None
    return attrs.evolve(
        base,
        patient=attrs.evolve(base.patient, id=patient),
        referring=attrs.evolve(base.referring, id=f"pcp-{sender}", organization=sender),
        target=attrs.evolve(base.target, id=f"spec-{receiver}", organization=receiver),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def desk(clock: FakeClock) -> ReferralDesk:
    counter = iter(range(10**6))
    return ReferralDesk(
        MemoryStore(),
        clock=clock,
        new_id=lambda: f"id-{next(counter):04d}",
        scope=ScopePolicy(strict=True, desk_wide={"setup"}),
        access_log_batch=1,
    )


SETUP = Actor("setup", {Role.COORDINATOR})
AUDITOR = Actor("audit-1", {Role.AUDITOR}, organization="org-a")


@pytest.fixture
def ids(desk: ReferralDesk) -> dict[str, str]:
    made = {
        "a-to-b": desk.intake(SETUP, request("R1", "org-a", "org-b")),
        "b-to-c": desk.intake(SETUP, request("R2", "org-b", "org-c")),
        "c-to-a": desk.intake(SETUP, request("R3", "org-c", "org-a", patient="pat-2")),
    }
    return {k: desk.send(SETUP, r.id).id for k, r in made.items()}


class TestScopes:
    def test_in_scope_by_role_and_side(self, desk: ReferralDesk, ids: dict[str, str]) -> None:
        referral = desk.store.load(ids["a-to-b"])
        for role, org, expected in [
            (Role.REFERRER, "org-a", True),
            (Role.REFERRER, "org-b", False),
            (Role.SPECIALIST, "org-b", True),
            (Role.SPECIALIST, "org-a", False),
            (Role.SCHEDULER, "org-b", True),
            (Role.COORDINATOR, "org-a", True),
            (Role.COORDINATOR, "org-b", True),
            (Role.ADMIN, "org-c", False),
            (Role.AUDITOR, "org-c", False),
        ]:
            assert in_scope(Actor("u", {role}, organization=org), role, referral) is expected

    def test_providers_and_care_teams_narrow_the_organisation(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        rid = ids["a-to-b"]
        mine = Actor("u", {Role.REFERRER}, organization="org-a", providers={"pcp-org-a"})
        theirs = Actor("u", {Role.REFERRER}, organization="org-a", providers={"pcp-other"})
        team = Actor("u", {Role.REFERRER}, organization="org-a", providers={"team-7"})
        assert desk.get(mine, rid).id == rid
        with pytest.raises(PermissionDeniedError):
            desk.get(theirs, rid)
        with pytest.raises(PermissionDeniedError):
            desk.get(team, rid)
        desk.assign(SETUP, rid, "team-7")
        assert desk.get(team, rid).id == rid

    def test_the_compatible_default_keeps_unscoped_actors_desk_wide(self) -> None:
        desk = ReferralDesk(MemoryStore(), clock=FakeClock(START))
        assert desk.scope is COMPATIBLE_SCOPE
        actor = Actor("coord-1", {Role.COORDINATOR})
        referral = desk.intake(actor, request("R1", "org-a", "org-b"))
        assert desk.get(actor, referral.id) == referral
        scoped = Actor("coord-2", {Role.COORDINATOR}, organization="org-z")
        with pytest.raises(PermissionDeniedError, match="out of its scope"):
            desk.get(scoped, referral.id)

    def test_strict_policy_and_desk_wide_accounts(self) -> None:
        assert STRICT_SCOPE.unscoped(Actor("x", {Role.ADMIN})) is False
        policy = ScopePolicy(strict=True, desk_wide={"sweeper"})
        assert policy.unscoped(Actor("sweeper", {Role.COORDINATOR}))
        assert not policy.unscoped(Actor("sweeper", {Role.COORDINATOR}, organization="o"))
        with pytest.raises(ValidationError):
            ScopePolicy(break_glass_limit=dt.timedelta(0))
        with pytest.raises(ValidationError):
            ReferralDesk(MemoryStore(), scope="strict")  # type: ignore[arg-type]

    def test_actor_checks_its_new_fields(self) -> None:
        with pytest.raises(ValidationError):
            Actor("u", {Role.REFERRER}, providers="pcp-1")
        with pytest.raises(ValidationError):
            Actor("u", {Role.REFERRER}, organization="")
        assert Actor("u", {Role.AUDITOR}).may("access_log")
        assert not Actor("u", {Role.ADMIN}).may("access_log")


class TestBreakGlass:
    def test_grant_is_recorded_flagged_and_time_limited(
        self, desk: ReferralDesk, ids: dict[str, str], clock: FakeClock
    ) -> None:
        doctor = Actor("dr-1", {Role.SPECIALIST}, organization="org-z")
        rid = ids["b-to-c"]
        with pytest.raises(PermissionDeniedError):
            desk.get(doctor, rid)
        glass = desk.break_glass(doctor, REASON, duration=dt.timedelta(minutes=30))
        assert glass.emergency is not None
        assert REASON not in repr(glass)
        assert desk.get(glass, rid).id == rid
        assert desk.count(glass) == 3
        assert desk.count(doctor) == 0
        desk.accept(glass, rid)
        clock.advance(minutes=31)
        with pytest.raises(PermissionDeniedError):
            desk.get(glass, rid)
        records = desk.store.access_records(AccessQuery(actor="dr-1"))
        assert [(r.action, r.outcome) for r in records] == [
            ("get", AccessOutcome.DENIED),
            ("break_glass", AccessOutcome.BREAK_GLASS),
            ("get", AccessOutcome.BREAK_GLASS),
            ("count", AccessOutcome.BREAK_GLASS),
            ("count", AccessOutcome.ALLOWED),
            ("accept", AccessOutcome.BREAK_GLASS),
            ("get", AccessOutcome.DENIED),
        ]
        grant = glass.emergency.grant_id
        assert [r.grant for r in records[1:4]] == [grant] * 3
        assert [r.flagged for r in records] == [True] * 4 + [False] + [True] * 2
        assert records[1].reason == REASON
        assert REASON not in repr(records[1])

    def test_a_forged_grant_counts_for_nothing(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        forged = BreakGlass("g-forged", "trust me", START, START + dt.timedelta(hours=1))
        doctor = Actor("dr-2", {Role.SPECIALIST}, organization="org-z", emergency=forged)
        with pytest.raises(PermissionDeniedError):
            desk.get(doctor, ids["b-to-c"])

    def test_a_grant_seen_by_another_desk_is_checked_against_the_log(
        self, desk: ReferralDesk, ids: dict[str, str], clock: FakeClock
    ) -> None:
        doctor = Actor("dr-3", {Role.SPECIALIST}, organization="org-z")
        glass = desk.break_glass(doctor, REASON)
        other = ReferralDesk(desk.store, clock=clock, scope=desk.scope)
        assert other.get(glass, ids["b-to-c"]).id == ids["b-to-c"]
        assert other.get(glass, ids["a-to-b"]).id == ids["a-to-b"]  # cached now

    @pytest.mark.parametrize(
        ("reason", "duration"),
        [("  ", dt.timedelta(hours=1)), (REASON, dt.timedelta(hours=5)), (REASON, dt.timedelta(0))],
    )
    def test_refused_grants(self, desk: ReferralDesk, reason: str, duration: dt.timedelta) -> None:
        with pytest.raises(ValidationError):
            desk.break_glass(
                Actor("dr", {Role.SPECIALIST}, organization="o"), reason, duration=duration
            )

    def test_roles_without_break_glass_are_denied(self, desk: ReferralDesk) -> None:
        for role in (Role.ADMIN, Role.AUDITOR, Role.SCHEDULER):
            with pytest.raises(PermissionDeniedError):
                desk.break_glass(Actor("x", {role}, organization="o"), REASON)


class TestAccessLog:
    def test_only_auditors_read_it_and_each_read_is_recorded(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        reader = Actor("coord-a", {Role.COORDINATOR}, organization="org-a")
        desk.get(reader, ids["a-to-b"])
        for role in (Role.ADMIN, Role.COORDINATOR):
            with pytest.raises(PermissionDeniedError):
                desk.access_log(Actor("nosy", {role}, organization="org-a"))
        found = desk.access_log(AUDITOR)
        assert [(r.actor, r.action) for r in found] == [
            ("coord-a", "get"),
            ("nosy", "access_log"),
            ("nosy", "access_log"),
        ]
        last = desk.store.access_records()[-1]
        assert (last.actor, last.action) == ("audit-1", "access_log")

    def test_filters_and_organisation(self, desk: ReferralDesk, ids: dict[str, str]) -> None:
        a = Actor("coord-a", {Role.COORDINATOR}, organization="org-a")
        b = Actor("coord-b", {Role.COORDINATOR}, organization="org-b")
        desk.get(a, ids["a-to-b"])
        desk.get(b, ids["b-to-c"])
        with pytest.raises(PermissionDeniedError):
            desk.get(b, ids["c-to-a"])
        assert [r.actor for r in desk.access_log(AUDITOR)] == ["coord-a"]
        everyone = Actor("auditor", {Role.AUDITOR})  # unscoped under the desk-wide list?
        assert desk.access_log(everyone) == []  # strict policy: no organisation, no records
        wide = ReferralDesk(desk.store, clock=desk.clock)  # compatible policy
        assert {r.actor for r in wide.access_log(everyone)} == {
            "coord-a",
            "coord-b",
            "audit-1",
            "auditor",
        }
        assert [r.actor for r in wide.access_log(everyone, referral_id=ids["c-to-a"])] == [
            "coord-b"
        ]
        denied = wide.access_log(everyone, outcome="denied", flagged=True)
        assert [(r.actor, r.referral_ids) for r in denied] == [("coord-b", (ids["c-to-a"],))]
        assert wide.access_log(everyone, since=START + dt.timedelta(days=1)) == []
        assert len(wide.access_log(everyone, until=START + dt.timedelta(days=1), limit=2)) == 2
        assert [r.actor for r in wide.access_log(everyone, actor_id="coord-b")] == ["coord-b"] * 2

    def test_queries_record_what_they_return(self, desk: ReferralDesk, ids: dict[str, str]) -> None:
        b = Actor("coord-b", {Role.COORDINATOR}, organization="org-b", purpose="operations")
        rows = desk.worklist(b)
        assert {row.referral_id for row in rows} == {ids["a-to-b"], ids["b-to-c"]}
        assert desk.count(b, open_only=True) == 2
        list(desk.audit(b))
        records = desk.store.access_records(AccessQuery(actor="coord-b"))
        assert [r.action for r in records] == ["worklist", "count", "audit"]
        assert (
            set(records[0].referral_ids)
            == set(records[2].referral_ids)
            == {
                ids["a-to-b"],
                ids["b-to-c"],
            }
        )
        assert records[0].purpose == "operations"

    def test_role_denials_are_recorded(self, desk: ReferralDesk, ids: dict[str, str]) -> None:
        auditor = Actor("aud", {Role.AUDITOR}, organization="org-a")
        with pytest.raises(PermissionDeniedError):
            desk.accept(auditor, ids["c-to-a"])
        [denial] = desk.store.access_records(AccessQuery(actor="aud"))
        assert (denial.action, denial.outcome, denial.referral_ids, denial.reason) == (
            "accept",
            AccessOutcome.DENIED,
            (ids["c-to-a"],),
            "role",
        )

    def test_record_json_and_validation(self) -> None:
        record = AccessRecord(
            at=START, actor="u", action="get", outcome=AccessOutcome.ALLOWED, referral_ids=["r"]
        )
        assert record.to_json()["referral_ids"] == ["r"]
        with pytest.raises(ValidationError):
            AccessRecord(
                at=START, actor="u", action="get", outcome=AccessOutcome.ALLOWED, referral_ids="r"
            )
        with pytest.raises(ValidationError):
            AccessQuery(referral_ids="r")


class TestBuffering:
    def test_reads_are_written_in_batches_denials_at_once(self, clock: FakeClock) -> None:
        store = MemoryStore()
        desk = ReferralDesk(store, clock=clock, access_log_batch=3)
        actor = Actor("coord-1", {Role.COORDINATOR})
        rid = desk.intake(actor, request("R1", "org-a", "org-b")).id
        desk.get(actor, rid)
        desk.get(actor, rid)
        assert store.access_records() == []
        desk.get(actor, rid)
        assert len(store.access_records()) == 3
        desk.get(actor, rid)
        with pytest.raises(PermissionDeniedError):
            desk.accept(Actor("aud", {Role.AUDITOR}), rid)
        assert [r.outcome for r in store.access_records()][-2:] == [
            AccessOutcome.ALLOWED,
            AccessOutcome.DENIED,
        ]
        desk.get(actor, rid)
        desk.close()
        assert len(store.access_records()) == 6

    def test_old_records_are_written_with_the_next_one(
        self, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from referralkit import desk as desk_module

        monkeypatch.setattr(desk_module, "_ACCESS_LOG_AGE", 0.0)
        store = MemoryStore()
        desk = ReferralDesk(store, clock=clock, access_log_batch=64)
        actor = Actor("coord-1", {Role.COORDINATOR})
        rid = desk.intake(actor, request("R1", "org-a", "org-b")).id
        desk.get(actor, rid)
        assert len(store.access_records()) == 1

    def test_an_abandoned_desk_writes_what_it_buffers(self, clock: FakeClock) -> None:
        import gc

        store = MemoryStore()
        desk = ReferralDesk(store, clock=clock, access_log_batch=64)
        actor = Actor("coord-1", {Role.COORDINATOR})
        rid = desk.intake(actor, request("R1", "org-a", "org-b")).id
        desk.get(actor, rid)
        del desk
        gc.collect()
        assert len(store.access_records()) == 1

    def test_a_closed_store_loses_the_buffer_with_a_warning(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        import gc

        store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
        desk = ReferralDesk(store, clock=clock, access_log_batch=64)
        actor = Actor("coord-1", {Role.COORDINATOR})
        rid = desk.intake(actor, request("R1", "org-a", "org-b")).id
        desk.get(actor, rid)
        store.close()
        del desk
        gc.collect()
        assert "1 access-log records could not be written: StorageError" in caplog.text

    def test_a_failed_write_keeps_the_records(self, clock: FakeClock) -> None:
        from referralkit.access import AccessBuffer

        written: list[Any] = []
        fail = [True]

        def append(records: Any) -> None:
            if fail[0]:
                raise OSError("disk full")
            written.extend(records)

        buffer = AccessBuffer(append, 2, 60.0)
        record = AccessRecord(at=START, actor="u", action="get", outcome=AccessOutcome.ALLOWED)
        buffer.add(record)
        with pytest.raises(OSError, match="disk full"):
            buffer.add(record)
        assert len(buffer) == 2
        fail[0] = False
        buffer.flush()
        assert (len(buffer), len(written)) == (0, 2)

    @pytest.mark.parametrize("bad", [0, True, "64"])
    def test_bad_batch(self, bad: Any) -> None:
        with pytest.raises(ValidationError):
            ReferralDesk(MemoryStore(), access_log_batch=bad)


class TestNoSideDoor:
    def test_the_view_is_scoped_recorded_and_read_only(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        a = Actor("coord-a", {Role.COORDINATOR}, organization="org-a")
        view = desk.view(a)
        assert "coord-a" in repr(view)
        assert {r.id for r in view.query()} == {ids["a-to-b"], ids["c-to-a"]}
        assert view.count(Query(open_only=True)) == 2
        assert len(view.events(ids["a-to-b"])) >= 1
        assert view.load(ids["a-to-b"]).id == ids["a-to-b"]
        with pytest.raises(PermissionDeniedError):
            view.load(ids["b-to-c"])
        assert view.find_source("R1") == ids["a-to-b"]
        assert view.find_source("R2") is None
        assert view.find_source("nope") is None
        assert {h[0].id for h in view.export()} == {ids["a-to-b"], ids["c-to-a"]}
        assert len(list(view.event_histories())) == 2
        assert view.ids_starting_with("id-") == sorted([ids["a-to-b"], ids["c-to-a"]])
        referral = view.load(ids["a-to-b"])
        for write in (
            lambda: view.save_many([(referral, [], 1)]),
            lambda: view.claim("me", 1, now=START, lease=dt.timedelta(minutes=5)),
            lambda: view.renew("me", [], now=START, lease=dt.timedelta(minutes=5)),
            lambda: view.release("me", []),
            lambda: view.restore_many([]),
            lambda: view.append_access([]),
            lambda: view.access_records(),
        ):
            with pytest.raises(PermissionDeniedError):
                write()
        with pytest.raises(ValidationError):
            desk.view("coord-a")  # type: ignore[arg-type]

    def test_identified_analytics_through_the_view_are_recorded(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        from referralkit import analytics

        a = Actor("coord-a", {Role.COORDINATOR}, organization="org-a")
        kpis = analytics.summary(desk.view(a), START + dt.timedelta(days=1))
        assert kpis.total == 2
        exported = desk.store.access_records(AccessQuery(actor="coord-a"))
        assert {i for r in exported for i in r.referral_ids} == {ids["a-to-b"], ids["c-to-a"]}


class TestPatientRights:
    def test_json_export_holds_every_referral_history_and_disclosure(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        b = Actor("coord-b", {Role.COORDINATOR}, organization="org-b")
        desk.get(b, ids["a-to-b"])
        officer = Actor("privacy-officer", {Role.COORDINATOR}, organization="org-b")
        exported = desk.export_patient(officer, "pat-1")
        assert {e["referral"]["id"] for e in exported["referrals"]} == {
            ids["a-to-b"],
            ids["b-to-c"],
        }
        assert all(e["history"][0]["type"] == "created" for e in exported["referrals"])
        assert exported["referrals"][0]["referral"]["patient"]["id"] == "pat-1"
        assert any(d["actor"] == "coord-b" for d in exported["disclosures"])
        json.dumps(exported)  # JSON data
        last = desk.store.access_records()[-1]
        assert (last.action, set(last.referral_ids)) == (
            "export_patient",
            {ids["a-to-b"], ids["b-to-c"]},
        )

    def test_fhir_export_is_a_collection_bundle(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        officer = Actor("po", {Role.COORDINATOR}, organization="org-b")
        bundle = desk.export_patient(officer, "pat-1", format="fhir")
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "collection"
        kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
        assert kinds.count("ServiceRequest") == 2
        assert kinds.count("Patient") == 2  # each referral's resources, as to_fhir writes them
        assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])
        with pytest.raises(ValidationError):
            desk.export_patient(officer, "pat-1", format="csv")

    def test_accounting_of_disclosures(
        self, desk: ReferralDesk, ids: dict[str, str], clock: FakeClock
    ) -> None:
        a = Actor("coord-a", {Role.COORDINATOR}, organization="org-a")
        desk.get(a, ids["c-to-a"])
        clock.advance(days=2)
        desk.history(a, ids["c-to-a"])
        desk.get(a, ids["a-to-b"])  # another patient's
        found = desk.disclosures(AUDITOR, "pat-2")
        assert [(r.actor, r.action) for r in found] == [("coord-a", "get"), ("coord-a", "history")]
        recent = desk.disclosures(AUDITOR, "pat-2", since=START + dt.timedelta(days=1))
        assert [r.action for r in recent] == ["history", "disclosures"]
        assert desk.disclosures(AUDITOR, "pat-unknown") == []

    def test_a_patient_held_only_elsewhere_is_a_recorded_denial(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        outsider = Actor("po-z", {Role.COORDINATOR}, organization="org-z")
        with pytest.raises(PermissionDeniedError):
            desk.export_patient(outsider, "pat-2")
        last = desk.store.access_records()[-1]
        assert (last.actor, last.outcome) == ("po-z", AccessOutcome.DENIED)


class TestCli:
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        with open_store(url) as store:
            desk = ReferralDesk(store, clock=FakeClock(START))
            for source, sender, receiver in [("R1", "org-a", "org-b"), ("R2", "org-b", "org-c")]:
                made = desk.intake(SETUP, request(source, sender, receiver))
                desk.send(SETUP, made.id)
        return url

    def run(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        from referralkit import cli

        parser = cli.build_parser()
        args = parser.parse_args(list(argv))
        try:
            status = args.handler(args, out, err)
        except PermissionDeniedError as exc:
            return 2, out.getvalue(), str(exc)
        return status, out.getvalue(), err.getvalue()

    def test_reads_are_recorded_under_the_operator_name(
        self, url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert main(["worklist", "--db", url, "--as", "alice", "--purpose", "qa"]) == 0
        monkeypatch.setenv("REFERRALKIT_ACTOR", "bob")
        assert main(["worklist", "--db", url]) == 0
        status, out, _ = self.run("access-log", "--db", url, "--json")
        assert status == 0
        records = json.loads(out)
        assert [(r["actor"], r["action"], r["purpose"]) for r in records] == [
            ("alice", "worklist", "qa"),
            ("bob", "worklist", "operations"),
        ]
        assert len(records[0]["referral_ids"]) == 2

    def test_org_scopes_the_cli(self, url: str) -> None:
        status, out, _ = self.run("worklist", "--db", url, "--org", "org-c", "--json")
        assert status == 0
        assert len(json.loads(out)) == 1
        with open_store(url) as store:
            r1 = store.find_source("R1")
        assert r1 is not None
        status, _, err = self.run("show", r1, "--db", url, "--org", "org-c")
        assert status == 2
        assert "out of its scope" in err
        assert main(["show", r1[:8], "--db", url, "--org", "org-c"]) == 2
        status, out, _ = self.run("access-log", "--db", url, "--outcome", "denied")
        assert status == 0
        assert "FLAGGED" in out
        assert "1 record(s)" not in out  # both show attempts were denied and recorded
        status, out, _ = self.run("access-log", "--db", url, "--referral", r1[:8], "--limit", "1")
        assert "1 record(s)" in out

    def test_text_output_and_filters(self, url: str) -> None:
        main(["audit", "--db", url, "--as", "carol"])
        status, out, _ = self.run(
            "access-log", "--db", url, "--actor", "carol", "--since", "2000-01-01T00:00:00Z"
        )
        assert status == 0
        assert "carol" in out
        assert "audit" in out
        assert out.strip().endswith("1 record(s)")
        status, out, _ = self.run("access-log", "--db", url, "--flagged")
        assert out.strip() == "0 record(s)"


class TestClaims:
    def test_claims_take_only_referrals_in_scope(
        self, desk: ReferralDesk, ids: dict[str, str]
    ) -> None:
        lease = dt.timedelta(minutes=10)
        a = Actor("coord-a", {Role.COORDINATOR}, organization="org-a")
        c = Actor("coord-c", {Role.COORDINATOR}, organization="org-c")
        assert sorted(i.referral_id for i in desk.claim(a, 5, lease=lease)) == sorted(
            [ids["a-to-b"], ids["c-to-a"]]
        )
        assert [i.referral_id for i in desk.claim(c, 5, lease=lease)] == [
            ids["b-to-c"]
        ]  # c-to-a is coord-a's now
        assert (
            desk.claim(Actor("coord-z", {Role.COORDINATOR}, organization="org-z"), 5, lease=lease)
            == []
        )
        last = desk.store.access_records()[-1]
        assert (last.action, last.referral_ids) == ("claim", ())
        with pytest.raises(PermissionDeniedError):
            desk.claim(Actor("aud", {Role.AUDITOR}, organization="org-a"), 1, lease=lease)

    def test_out_of_scope_referrals_are_released(
        self, desk: ReferralDesk, ids: dict[str, str], clock: FakeClock
    ) -> None:
        lease = dt.timedelta(minutes=10)
        a = Actor("coord-a", {Role.COORDINATOR}, organization="org-a")
        taken = [i.referral_id for i in desk.claim(a, 5, lease=lease)]
        assert sorted(taken) == sorted([ids["a-to-b"], ids["c-to-a"]])
        assert desk.store.claim("x", 5, now=clock.now(), lease=lease) == [ids["b-to-c"]]


class TestActorRecord:
    """``actor_record`` (what an audited read builds) gives the record ``AccessRecord``
    gives, and refuses what it refuses."""

    AT = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)

    @pytest.mark.parametrize("outcome", list(AccessOutcome))
    @pytest.mark.parametrize(
        "actor",
        [
            Actor("coord-1", {Role.COORDINATOR}),
            Actor("a-2", {Role.AUDITOR, Role.COORDINATOR}, organization="org-a", purpose="treat"),
        ],
    )
    def test_equal_to_the_checked_record(self, actor: Actor, outcome: AccessOutcome) -> None:
        checked = AccessRecord(
            at=self.AT,
            actor=actor.id,
            action="get",
            outcome=outcome,
            referral_ids=("r-1", "r-2"),
            roles=tuple(sorted(r.value for r in actor.roles)),
            organization=actor.organization,
            purpose=actor.purpose,
            flagged=outcome is not AccessOutcome.ALLOWED,
        )
        for _ in range(2):  # the first one checked, then the quick way
            made = actor_record(self.AT, actor, "get", ["r-1", "r-2"], outcome)
            assert made == checked
            assert hash(made) == hash(checked)
            assert type(made.referral_ids) is tuple

    def test_other_zones_become_utc(self) -> None:
        actor = Actor("coord-1", {Role.COORDINATOR})
        east = self.AT.astimezone(dt.timezone(dt.timedelta(hours=5)))
        assert actor_record(east, actor, "get", ("r-1",)).at.tzinfo is dt.UTC

    def test_refuses_what_the_record_refuses(self) -> None:
        actor = Actor("coord-1", {Role.COORDINATOR})
        actor_record(self.AT, actor, "get", ("r-1",))  # "get" and these roles seen before
        with pytest.raises(ValidationError, match="referral_ids"):
            actor_record(self.AT, actor, "get", ("r\x00-1",))
        with pytest.raises(ValidationError, match="referral_ids"):
            actor_record(self.AT, actor, "get", "r-1")
        with pytest.raises(ValidationError, match="action"):
            actor_record(self.AT, actor, "Not An Action!", ("r-1",))
        with pytest.raises(ValidationError, match="at"):
            actor_record(self.AT.replace(tzinfo=None), actor, "get", ("r-1",))

    def test_chained_row_is_the_fields_and_their_chain_value(self) -> None:
        from referralkit.access import GENESIS, chain_hash, record_fields

        made = actor_record(self.AT, Actor("coord-1", {Role.COORDINATOR}), "get", ("r-1",))
        fields = record_fields(made, "2026-03-02T09:30:00.000000")
        assert chained_row(GENESIS, made, fields[0], None) == [*fields, chain_hash(GENESIS, fields)]


@pytest.mark.parametrize(
    "ids",
    [("r-1",), ('a"b',), ("a\\b",), ("ü",), ("a\x7fb",), ("a\tb",), (" ",), ("a", "b"), ()],
)
def test_the_ids_column_is_their_json(ids: tuple[str, ...]) -> None:
    """The stored (and chained) text of a record's referral ids is ``json.dumps`` of them,
    one id written the quick way or not."""
    from referralkit.access import _ids_json

    assert _ids_json(ids) == json.dumps(list(ids))
