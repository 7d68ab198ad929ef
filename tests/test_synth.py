"""The synthetic population and the simulated desk: realistic, seeded, never crashing."""

from __future__ import annotations

import collections
import datetime as dt
import re
from collections.abc import Callable, Sequence
from types import ModuleType

import attrs
import pytest

from referralkit import (
    Actor,
    AuthStatus,
    CodeSystem,
    ConcurrencyError,
    FakeClock,
    IntakeRequest,
    MemoryStore,
    PlanType,
    Priority,
    Provider,
    Referral,
    ReferralDesk,
    ReferralEvent,
    Role,
    Sex,
    Status,
    ValidationError,
    replay,
    synth,
)
from referralkit.intake import DEFAULT_CHECKLIST, Requirement
from referralkit.model import AttachmentKind
from referralkit.synth._catalogue import PROFILE_BY_NAME

START = synth.DEFAULT_START
TEAM = (
    Actor("coord-1", {Role.COORDINATOR}),
    Actor("sched-1", {Role.SCHEDULER}),
    Actor("spec-1", {Role.SPECIALIST}),
    Actor("ref-1", {Role.REFERRER}),
)
PA_PREFIXES = ("7055", "7219")


def run(
    count: int = 120,
    seed: int = 3,
    weeks: int = 6,
    actors: Actor | tuple[Actor, ...] = TEAM,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ReferralDesk, FakeClock, synth.SimulationReport]:
    """A simulated desk over a fresh memory store."""
    clock = FakeClock(START)
    desk = ReferralDesk(MemoryStore(), clock=clock, new_id=synth.id_factory(seed))
    providers = synth.directory(seed)
    requests = synth.population(count, seed, providers=providers)
    report = synth.simulate(
        desk,
        actors,
        clock,
        requests,
        weeks=weeks,
        seed=seed,
        providers=providers,
        progress=progress,
    )
    return desk, clock, report


@pytest.fixture(scope="module")
def big() -> list[IntakeRequest]:
    """A population large enough to show every kind of request."""
    return list(synth.population(1500, seed=11))


@pytest.fixture(scope="module")
def simulated() -> tuple[ReferralDesk, FakeClock, synth.SimulationReport]:
    """One default-sized simulation, shared by the tests that only read it."""
    return run(count=300, seed=7)


class TestPackage:
    """referralkit.synth is a package of named parts; its public names did not move."""

    def test_public_names(self) -> None:
        """Every public name of the former single module is importable from referralkit.synth,
        and __all__ lists exactly the package's public names."""
        assert synth.__all__ == [
            "DEFAULT_START",
            "SPECIALTIES",
            "TAXONOMY",
            "SimulationReport",
            "directory",
            "id_factory",
            "population",
            "referrals",
            "simulate",
        ]
        public = {
            name
            for name in dir(synth)
            if not name.startswith("_") and not isinstance(getattr(synth, name), ModuleType)
        }
        assert public == set(synth.__all__)

    def test_seeded_streams_are_unchanged(self) -> None:
        """The seeded streams are part of the behaviour (a seed names a population in docs,
        benchmarks and bug reports): these values were drawn before the package split."""
        assert synth.id_factory(7)() == "8f2af353a4f932d08c5248d422b9987d"
        first = next(synth.population(1, seed=7))
        assert (first.patient.mrn, first.patient.given_name, first.patient.family_name) == (
            "SYN-000001-5980",
            "Olivia905",
            "Walker107",
        )
        assert (first.specialty, [d.code for d in first.diagnoses]) == ("urology", ["C67.9"])
        assert first.target is not None
        assert first.target.id == "syn-urology-3"
        assert synth.directory(7)[0].location == "Maple Grove Medical Plaza, Suite 432"


class TestDirectory:
    """The synthetic specialist directory."""

    def test_deterministic(self) -> None:
        """The same seed gives the same directory; another seed another one."""
        assert synth.directory(5) == synth.directory(5)
        assert synth.directory(5) != synth.directory(6)

    def test_every_specialty_has_an_accepting_specialist(self) -> None:
        """Each specialty has several practices and at least one takes new patients."""
        providers = synth.directory(1)
        for specialty in synth.SPECIALTIES:
            practices = [p for p in providers if p.specialty == specialty]
            assert 4 <= len(practices) <= 6
            assert any(p.accepting_new_patients for p in practices)
        assert any(not p.accepting_new_patients for p in providers)

    def test_providers_are_plausible(self) -> None:
        """Unique ids, NUCC taxonomy, English plus other languages, known networks."""
        providers = synth.directory(2)
        assert len({p.id for p in providers}) == len(providers)
        assert all(
            p.taxonomy is not None and p.taxonomy.system == CodeSystem.NUCC for p in providers
        )
        assert all("en" in p.languages for p in providers)
        assert {lang for p in providers for lang in p.languages} > {"en", "es"}
        assert all("(synthetic)" in p.name for p in providers)
        assert {p.specialty for p in providers} >= {"family-medicine", "pediatrics"}


class TestPopulation:
    """population(): realistic, seeded requests."""

    def test_count_and_determinism(self) -> None:
        """count requests; the same seed gives equal requests, another seed others."""
        first = list(synth.population(50, seed=4))
        assert len(first) == 50
        assert first == list(synth.population(50, seed=4))
        assert first != list(synth.population(50, seed=5))
        assert list(synth.population(0, seed=4)) == []

    def test_prefix_is_stable(self) -> None:
        """A shorter population is a prefix of a longer one with the same seed."""
        assert list(synth.population(10, seed=9)) == list(synth.population(30, seed=9))[:10]

    def test_source_ids_unique(self, big: list[IntakeRequest]) -> None:
        """Every request has its own referrer identifier."""
        assert len({r.source_id for r in big}) == len(big)

    def test_codes_fit_the_specialty(self, big: list[IntakeRequest]) -> None:
        """Diagnoses are ICD-10-CM codes of the specialty; services CPT/HCPCS."""
        for request in big:
            assert request.specialty in synth.SPECIALTIES
            profile = PROFILE_BY_NAME[request.specialty]
            allowed = set(profile.diagnoses) | set(profile.cancer)
            assert request.diagnoses
            assert set(request.diagnoses) <= allowed
            assert all(d.system == CodeSystem.ICD10CM for d in request.diagnoses)
            assert request.services
            assert all(s.system in (CodeSystem.CPT, CodeSystem.HCPCS) for s in request.services)
            assert len(set(request.diagnoses)) == len(request.diagnoses)

    def test_mix_is_realistic(self, big: list[IntakeRequest]) -> None:
        """Suspected cancer, advanced imaging, every plan type, languages, urgencies."""
        specialties = collections.Counter(r.specialty for r in big)
        assert set(specialties) == set(synth.SPECIALTIES)
        assert any(d.code.startswith("C") for r in big for d in r.diagnoses)
        assert any(s.code.startswith(PA_PREFIXES) for r in big for s in r.services)
        assert any(s.system == CodeSystem.HCPCS for r in big for s in r.services)
        plans = {r.coverage.plan_type for r in big if r.coverage is not None}
        assert plans == set(PlanType) - {PlanType.OTHER}  # OTHER only comes from imports
        languages = {r.patient.preferred_language for r in big}
        assert {"en", "es", "zh", "vi", "ko", "ru", "ar"} <= languages
        interpreters = [r for r in big if r.patient.interpreter_needed]
        assert 0.05 < len(interpreters) / len(big) < 0.4
        assert all(r.patient.preferred_language != "en" for r in interpreters)
        assert {r.priority for r in big} == set(Priority)
        assert sum(r.priority is Priority.ROUTINE for r in big) > len(big) / 2

    def test_ages_and_pregnancy_plausible(self, big: list[IntakeRequest]) -> None:
        """Pregnancy, Medicare and children only where plausible."""
        today = START.date()
        for r in big:
            age = r.patient.age_on(today)
            assert 2 <= age <= 95
            if r.patient.pregnant:
                assert r.patient.sex is Sex.FEMALE
                assert 16 <= age <= 45
            if r.specialty == "obstetrics":
                assert r.patient.pregnant
            if r.coverage is not None and r.coverage.plan_type in (
                PlanType.MEDICARE,
                PlanType.MEDICARE_ADVANTAGE,
            ):
                assert age >= 65
            if age < 18:
                assert PROFILE_BY_NAME[r.specialty].children
                assert r.referring.specialty == "pediatrics"
        assert any(r.patient.pregnant for r in big if r.specialty != "obstetrics")

    def test_some_requests_incomplete(self, big: list[IntakeRequest]) -> None:
        """Some lack the medical history, imaging, or name no specialist; a few lapsed."""
        kinds = [frozenset(a.kind for a in r.attachments) for r in big]
        assert any(AttachmentKind.MEDICAL_HISTORY not in k for k in kinds)
        assert all(AttachmentKind.REFERRAL_LETTER in k for k in kinds)
        ortho = [k for r, k in zip(big, kinds, strict=True) if r.specialty == "orthopedics"]
        assert any(AttachmentKind.IMAGING not in k for k in ortho)
        assert any(AttachmentKind.IMAGING in k for k in ortho)
        assert any(r.target is None for r in big)
        lapsed = [r for r in big if r.coverage and not r.coverage.active_on(START.date())]
        assert lapsed
        assert any(r.reason is None for r in big)

    def test_identities_are_clearly_synthetic(self, big: list[IntakeRequest]) -> None:
        """Names carry digits, MRNs start SYN-, phones are 555-01xx, e-mail example.org."""
        for r in big:
            p = r.patient
            assert re.fullmatch(r"[A-Za-z ]+\d{2,3}", p.given_name)
            assert re.fullmatch(r"[A-Za-z ]+\d{3}", p.family_name)
            assert p.mrn.startswith("SYN-")
            for contact in p.contacts:
                assert contact.value.startswith("+1-555-01") or contact.value.endswith(
                    "@example.org"
                )
            assert r.coverage is not None
            assert r.coverage.member_id is None or r.coverage.member_id.startswith("SYNM")

    def test_returning_patients(self, big: list[IntakeRequest]) -> None:
        """A few patients are referred twice, to different specialties or twice the same."""
        per_patient = collections.Counter(r.patient.id for r in big)
        assert max(per_patient.values()) > 1

    def test_start_moves_dates(self) -> None:
        """Coverage periods and documents follow ``start``."""
        later = START.replace(year=2027)
        request = next(synth.population(1, seed=1, start=later))
        assert request.coverage is not None
        assert request.coverage.period_start is not None
        assert request.coverage.period_start.year in (2026, 2027)
        assert all(a.added_at < later for a in request.attachments)

    def test_own_directory(self) -> None:
        """``providers`` replaces the directory; with no referrers a fallback refers."""
        only = Provider(id="solo", name="Solo Cardiology (synthetic)", specialty="cardiology")
        requests = list(synth.population(40, seed=2, providers=[only]))
        assert {r.target for r in requests} <= {only, None}
        assert {r.referring.id for r in requests} == {"syn-pcp-0"}

    @pytest.mark.parametrize("count", [-1, 1.5, True, "3"])
    def test_bad_count(self, count: object) -> None:
        """A count that is not a non-negative integer is refused."""
        with pytest.raises(ValidationError, match="count"):
            list(synth.population(count, seed=1))  # type: ignore[arg-type]

    def test_bad_start(self) -> None:
        """A naive start is refused."""
        with pytest.raises(ValidationError, match="start"):
            list(synth.population(1, seed=1, start=dt.datetime(2026, 1, 5)))

    def test_intake_decides_prior_auth_for_advanced_imaging(self) -> None:
        """The default desk (the shipped coverage rules) asks for prior authorization for the
        7055x/7219x services on the plans whose rules require it, and opens an authorization
        for each such referral."""
        clock = FakeClock(START)
        desk = ReferralDesk(MemoryStore(), clock=clock)
        requests = [
            r
            for r in synth.population(400, seed=8)
            if any(s.code.startswith(PA_PREFIXES) for s in r.services)
            and r.coverage is not None
            and r.coverage.plan_type is not PlanType.SELF_PAY
        ]
        assert requests
        decided = [desk.intake(TEAM[0], r) for r in requests]
        needs = [r for r in decided if r.coverage_decision.needs_authorization]  # type: ignore[union-attr]
        imaging = {
            h.rule_id
            for r in needs
            for h in r.coverage_decision.hits  # type: ignore[union-attr]
        }
        assert {"ma-advanced-imaging", "hmo-advanced-imaging", "ppo-advanced-imaging"} <= imaging
        assert all(r.authorization.status is AuthStatus.NEEDED for r in needs)


class TestIdFactory:
    """id_factory(): reproducible ids."""

    def test_same_seed_same_ids(self) -> None:
        """Two factories with one seed give the same sequence."""
        a, b = synth.id_factory(3), synth.id_factory(3)
        assert [a() for _ in range(5)] == [b() for _ in range(5)]
        assert synth.id_factory(4)() != synth.id_factory(3)()


class TestSimulate:
    """simulate(): weeks of a referral desk, never crashing."""

    def test_outcomes_are_mixed(
        self, simulated: tuple[ReferralDesk, FakeClock, synth.SimulationReport]
    ) -> None:
        """At the end some referrals are completed, many open, some overdue."""
        desk, clock, report = simulated
        referrals = desk.store.query()
        assert len(referrals) == len(report.referral_ids) == 300
        statuses = collections.Counter(r.status for r in referrals)
        open_ = [r for r in referrals if not r.status.is_terminal]
        overdue = [r for r in open_ if r.due_by is not None and r.due_by < clock.now()]
        assert 0.15 < statuses[Status.COMPLETED] / 300 < 0.7
        assert 0.25 < len(open_) / 300 < 0.75
        assert 0 < len(overdue) < len(open_)
        for status in (
            Status.RECEIVED,
            Status.ACCEPTED,
            Status.SCHEDULED,
            Status.SEEN,
            Status.DECLINED,
            Status.CANCELLED,
        ):
            assert statuses[status] > 0, status

    def test_every_kind_of_operation_happens(
        self, simulated: tuple[ReferralDesk, FakeClock, synth.SimulationReport]
    ) -> None:
        """The simulation exercises the desk's whole public vocabulary."""
        _, _, report = simulated
        for operation in (
            "intake",
            "send",
            "assign",
            "assign_specialist",
            "attach",
            "accept",
            "decline",
            "hold",
            "resume",
            "request_authorization",
            "record_authorization",
            "acknowledge_self_pay",
            "schedule",
            "reschedule",
            "record_no_show",
            "cancel_appointment",
            "record_visit",
            "add_interim_note",
            "complete",
            "request_cancellation",
            "confirm_cancellation",
            "fail",
            "log_communication",
            "add_follow_up",
            "complete_follow_up",
        ):
            assert report.count(operation) > 0, operation
        assert report.total_operations == sum(n for _, n in report.operations)
        assert report.count("no-such-operation") == 0

    def test_refusals_are_lifecycle_outcomes(
        self, simulated: tuple[ReferralDesk, FakeClock, synth.SimulationReport]
    ) -> None:
        """With a full team, the only refusals are guards and lifecycle rules."""
        _, _, report = simulated
        assert report.total_refused > 0
        for key, _ in report.refused:
            assert key.endswith((": GuardError", ": TransitionError")), key

    def test_snapshots_equal_replayed_events(
        self, simulated: tuple[ReferralDesk, FakeClock, synth.SimulationReport]
    ) -> None:
        """Every stored snapshot is the replay of its stored events."""
        desk, _, _ = simulated
        for referral in desk.store.query():
            assert replay(desk.store.events(referral.id)) == referral

    def test_interpreters_and_auth_realistic(
        self, simulated: tuple[ReferralDesk, FakeClock, synth.SimulationReport]
    ) -> None:
        """Interpreters only for patients who need one; some authorizations denied."""
        desk, _, _ = simulated
        referrals = desk.store.query()
        for r in referrals:
            if any(c.interpreter_used for c in r.communications):
                assert r.patient.interpreter_needed
        assert any(c.interpreter_used for r in referrals for c in r.communications), (
            "no interpreter was ever used"
        )
        denied = [
            r
            for r in referrals
            if any(
                e.type == "authorization_changed"
                and e.payload["authorization"]["status"] == "denied"
                for e in desk.store.events(r.id)
            )
        ]
        assert denied
        assert any(r.self_pay_acknowledged for r in referrals)

    def test_clock_ends_after_the_weeks(
        self, simulated: tuple[ReferralDesk, FakeClock, synth.SimulationReport]
    ) -> None:
        """The report and the clock end exactly ``weeks`` after the start."""
        _, clock, report = simulated
        assert report.started == START
        assert report.ended == clock.now() == START + dt.timedelta(weeks=6)

    def test_deterministic(self) -> None:
        """Same seed, same report and the same stored referrals."""
        desk_a, _, report_a = run(count=60, seed=5, weeks=3)
        desk_b, _, report_b = run(count=60, seed=5, weeks=3)
        assert report_a == report_b
        assert desk_a.store.query() == desk_b.store.query()
        _, _, report_c = run(count=60, seed=6, weeks=3)
        assert report_c != report_a

    @pytest.mark.parametrize("seed", range(8))
    def test_never_raises(self, seed: int) -> None:
        """Across seeds, team shapes and lengths the simulation runs to the end."""
        team = TEAM if seed % 2 else TEAM[0]
        desk, clock, report = run(count=60, seed=seed, weeks=2 + seed % 5, actors=team)
        assert len(desk.store.query()) == len(report.referral_ids)
        assert clock.now() == report.ended

    def test_concurrent_changes_are_counted(self) -> None:
        """A change lost to another writer is counted and the referral reloaded."""

        class Contended(MemoryStore):
            """Every seventh write loses a race with another coordinator."""

            writes = 0

            def save(
                self, referral: Referral, events: Sequence[ReferralEvent], expected_version: int
            ) -> None:
                self.writes += 1
                if self.writes % 7 == 0 and expected_version > 0:
                    raise ConcurrencyError(referral.id, expected_version, expected_version + 1)
                super().save(referral, events, expected_version)

        clock = FakeClock(START)
        desk = ReferralDesk(Contended(), clock=clock)
        report = synth.simulate(desk, TEAM, clock, synth.population(40, 2), weeks=3, seed=2)
        conflicts = [n for key, n in report.refused if key.endswith(": ConcurrencyError")]
        assert sum(conflicts) > 10
        for referral in desk.store.query():
            assert replay(desk.store.events(referral.id)) == referral

    def test_single_coordinator_does_everything(self) -> None:
        """One coordinator may do every operation: nothing is refused for permission."""
        _, _, report = run(count=80, seed=2, actors=TEAM[0])
        assert not [key for key, _ in report.refused if "PermissionDenied" in key]
        assert report.count("accept") > 0

    def test_forbidden_actor_is_counted_not_raised(self) -> None:
        """An auditor may not take referrals in: every intake is refused and counted."""
        desk, _, report = run(count=15, seed=1, actors=Actor("audit", {Role.AUDITOR}))
        assert report.referral_ids == ()
        assert dict(report.refused) == {"intake: PermissionDeniedError": 15}
        assert desk.store.query() == []

    def test_referrer_alone_is_refused_later_steps(self) -> None:
        """A referrer can send but not accept: refusals are counted, the run finishes."""
        _, _, report = run(count=20, seed=1, weeks=2, actors=Actor("ref", {Role.REFERRER}))
        refused = dict(report.refused)
        assert report.count("send") > 0
        assert refused.get("accept: PermissionDeniedError", 0) > 0

    def test_progress_reports_arrivals(self) -> None:
        """``progress`` sees every arrival and ends at the total."""
        seen: list[tuple[int, int]] = []
        run(count=25, seed=4, weeks=1, progress=lambda done, total: seen.append((done, total)))
        assert seen[-1] == (25, 25)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    def test_zero_weeks_takes_requests_in(self) -> None:
        """With no time to act, the requests are still taken in."""
        seen: list[tuple[int, int]] = []
        _desk, clock, report = run(
            count=5, seed=1, weeks=0, progress=lambda d, t: seen.append((d, t))
        )
        assert len(report.referral_ids) == 5
        assert clock.now() == START
        assert seen[-1] == (5, 5)

    def test_weekend_start_and_refused_intakes_still_report_progress(self) -> None:
        """A start outside business hours and a refused team still reach the total."""
        clock = FakeClock(dt.datetime(2026, 1, 10, 22, 0, tzinfo=dt.UTC))  # a Saturday night
        desk = ReferralDesk(MemoryStore(), clock=clock)
        seen: list[int] = []
        report = synth.simulate(
            desk,
            [Actor("audit", {Role.AUDITOR})],
            clock,
            synth.population(4, seed=1),
            weeks=1,
            progress=lambda d, t: seen.append(d),
        )
        assert seen[-1] == 4
        assert report.total_refused == 4

    def test_providers_default_to_the_targets(self) -> None:
        """Without a directory the simulation picks among the specialists requests name."""
        clock = FakeClock(START)
        desk = ReferralDesk(MemoryStore(), clock=clock)
        requests = list(synth.population(60, seed=3))
        report = synth.simulate(desk, TEAM, clock, requests, weeks=3, seed=3)
        targets = {r.target.id for r in requests if r.target is not None}
        chosen = {r.target.id for r in desk.store.query() if r.target is not None}
        assert chosen <= targets
        assert report.total_operations > 60

    def test_pending_authorization_is_decided(self) -> None:
        """A referral whose authorization was requested outside the simulation is decided."""
        clock = FakeClock(START)
        desk = ReferralDesk(MemoryStore(), clock=clock)
        coordinator = TEAM[0]
        request = next(
            r
            for r in synth.population(400, seed=8)
            if any(s.code.startswith(PA_PREFIXES) for s in r.services)
            and r.target is not None
            and r.target.accepting_new_patients
            and r.coverage is not None
            and r.coverage.plan_type is PlanType.PPO
        )
        request = attrs.evolve(request, priority=Priority.STAT)
        referral = desk.intake(coordinator, request)
        for kind in (AttachmentKind.MEDICAL_HISTORY, AttachmentKind.PRIOR_AUTH_FORM):
            desk.attach(coordinator, referral.id, kind)
        for requirement in DEFAULT_CHECKLIST.missing(desk.get(coordinator, referral.id)):
            assert requirement in (Requirement.IMAGING, Requirement.LAB)
            kind = AttachmentKind(requirement.value)
            desk.attach(coordinator, referral.id, kind)
        desk.request_authorization(coordinator, referral.id)
        # the simulation takes in only new requests; this one is known by its source id
        synth.simulate(desk, TEAM, clock, [request], weeks=6, seed=1)
        final = desk.get(coordinator, referral.id)
        assert final.authorization.status is not AuthStatus.REQUESTED

    @pytest.mark.parametrize(
        ("field", "value", "match"),
        [
            ("desk", object(), "desk"),
            ("clock", object(), "clock"),
            ("clock", FakeClock(START), "desk must use"),
            ("actors", (), "actors"),
            ("actors", ("coord",), "actors"),
            ("requests", ["not a request"], "requests"),
            ("weeks", -1, "weeks"),
        ],
    )
    def test_bad_arguments(self, field: str, value: object, match: str) -> None:
        """Wrong arguments are refused up front with a ValidationError naming them."""
        clock = FakeClock(START)
        arguments: dict[str, object] = {
            "desk": ReferralDesk(MemoryStore(), clock=clock),
            "actors": TEAM,
            "clock": clock,
            "requests": [],
            "weeks": 1,
        }
        arguments[field] = value
        with pytest.raises(ValidationError, match=match):
            synth.simulate(**arguments)  # type: ignore[arg-type]


class TestSimulationReport:
    """SimulationReport: totals over its counts."""

    def test_totals(self) -> None:
        """Totals add the counts; count() looks one up."""
        report = synth.SimulationReport(
            started=START,
            ended=START,
            referral_ids=("a",),
            operations=(("intake", 1), ("send", 2)),
            refused=(("accept: GuardError", 3),),
        )
        assert report.total_operations == 3
        assert report.total_refused == 3
        assert report.count("send") == 2
        assert report.duplicates == 0
