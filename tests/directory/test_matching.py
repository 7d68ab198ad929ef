"""match(): exclusions with reasons, scoring with reasons, the hierarchy, networks from the
plan, language and interpreters, new patients, distance, slots in the urgency window; and the
properties: an excluded provider never ranks, and improving a candidate (in network, the
patient's language, a sooner slot) never lowers its rank."""

from __future__ import annotations

import datetime as dt
import sqlite3

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from referralkit import Coverage, NetworkStatus, PlanType, Priority, Referral, UrgencyAssessment
from referralkit.directory import (
    DEFAULT_POLICY,
    GeoPoint,
    HealthcareService,
    InsurancePlan,
    Location,
    MatchPolicy,
    MatchResult,
    MemoryDirectory,
    Organization,
    Practitioner,
    PractitionerRole,
    SqlDirectory,
    coverage_networks,
    match,
)
from referralkit.errors import ValidationError
from referralkit.scheduling import MemoryScheduler, SchedulingUnavailableError, Slot, Window
from referralkit.testing import sample_request

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CARDIOLOGY, INTERVENTIONAL, INTERNAL = "207RC0000X", "207RI0011X", "207R00000X"
HARTFORD = GeoPoint(41.7658, -72.6734)
NET = "acme-hmo-west"  # the sample request's coverage network


def referral(**changes: object) -> Referral:
    """The sample referral: cardiology, Spanish-speaking patient, Acme HMO West."""
    return attrs.evolve(sample_request().referral("ref-1", NOW), **changes)


def role(id: str, **fields: object) -> PractitionerRole:
    base: dict[str, object] = {
        "specialties": (CARDIOLOGY,),
        "network_ids": (NET,),
        "languages": ("es",),
        "accepting_new_patients": True,
    }
    base.update(fields)
    return PractitionerRole(id, **base)  # type: ignore[arg-type]


def ids(result: object) -> list[str]:
    return [c.id for c in result]  # type: ignore[attr-defined]


class TestExclusions:
    def test_each_rule_excludes_with_its_reason(self) -> None:
        """Out of network, no language and no interpreter, not accepting: each excluded,
        with the reasons that apply."""
        directory = MemoryDirectory(
            [
                role("ok"),
                role("out", network_ids=("other",)),
                role("mute", languages=("fr",)),
                role("full", accepting_new_patients=False),
                role(
                    "worst", network_ids=("other",), languages=("fr",), accepting_new_patients=False
                ),
            ]
        )
        result = match(referral(), directory, as_of=NOW, excluded=None)
        assert ids(result) == ["ok"]
        reasons = {e.reference: e.reasons for e in result.excluded}
        assert reasons["PractitionerRole/out"] == ("not in the coverage networks (acme-hmo-west)",)
        assert reasons["PractitionerRole/mute"] == ("does not list es and offers no interpreter",)
        assert reasons["PractitionerRole/full"] == ("not accepting new patients",)
        # out of network is answered by the index; the other rules are not assessed then
        assert reasons["PractitionerRole/worst"] == reasons["PractitionerRole/out"]
        relaxed = attrs.evolve(DEFAULT_POLICY, require_in_network=False)
        worst = match(referral(), directory, as_of=NOW, policy=relaxed).excluded
        assert len({e.reference: e for e in worst}["PractitionerRole/worst"].reasons) == 2
        assert result.considered == 5
        assert result.excluded_count == 4
        assert dict(result.excluded_by) == {"accepting": 1, "language": 1, "network": 2}

    def test_out_of_network_candidates_are_counted_not_read(self) -> None:
        """By default the network index answers: the out-of-network candidates are counted
        per reason and not listed; those of the coverage's networks that are excluded are
        listed, in reference order, at most ``excluded`` of them."""
        directory = MemoryDirectory(
            [role("ok")]
            + [role(f"out{k}", network_ids=("other",)) for k in range(5)]
            + [role(f"full{k}", accepting_new_patients=False) for k in range(4)]
            + [role("gone", active=False), role("gone-out", network_ids=("x",), active=False)]
        )
        result = match(referral(), directory, as_of=NOW, excluded=2)
        assert ids(result) == ["ok"]
        assert [e.reference for e in result.excluded] == [
            "PractitionerRole/full0",
            "PractitionerRole/full1",
        ]
        assert result.excluded_count == 9
        assert dict(result.excluded_by) == {"network": 5, "accepting": 4}
        assert result.considered == 10
        everyone = match(referral(), directory, as_of=NOW, excluded=None)
        assert len(everyone.excluded) == 9
        assert (everyone.excluded_count, everyone.excluded_by) == (9, result.excluded_by)
        assert match(referral(), directory, as_of=NOW, excluded=0).excluded == ()
        with pytest.raises(ValidationError, match="excluded"):
            match(referral(), directory, as_of=NOW, excluded=-1)

    def test_a_directory_without_count_found_is_counted_by_find(self) -> None:
        """A third-party directory with only the port's methods gives the same counts."""

        class Plain:
            def __init__(self, inner: MemoryDirectory) -> None:
                self.inner = inner

            def __getattr__(self, name: str) -> object:
                if name == "count_found":
                    raise AttributeError(name)
                return getattr(self.inner, name)

        directory = MemoryDirectory([role("ok"), role("out", network_ids=("other",))])
        result = match(referral(), Plain(directory), as_of=NOW)  # type: ignore[arg-type]
        assert (result.considered, result.excluded_count) == (2, 1)
        assert dict(result.excluded_by) == {"network": 1}

    def test_relaxed_rules_cost_points_instead(self) -> None:
        """With the requirements off, the same candidates rank, below the one that meets them."""
        directory = MemoryDirectory(
            [role("ok"), role("out", network_ids=("other",)), role("mute", languages=("fr",))]
        )
        policy = attrs.evolve(DEFAULT_POLICY, require_in_network=False, require_language=False)
        result = match(referral(), directory, as_of=NOW, policy=policy)
        assert ids(result)[0] == "ok"
        assert set(ids(result)) == {"ok", "out", "mute"}
        assert result.excluded == ()

    def test_not_accepting_costs_points_when_not_required(self) -> None:
        """An entry that states it takes no new patients ranks, with ``not_accepting``
        points, when the policy does not require it (with and without distances)."""
        directory = MemoryDirectory(
            [
                Location("l1", position=HARTFORD),
                role("ok", location_ids=("l1",)),
                role("full", accepting_new_patients=False, location_ids=("l1",)),
            ]
        )
        policy = attrs.evolve(DEFAULT_POLICY, require_accepting=False)
        for origin in (None, HARTFORD):
            result = match(referral(), directory, as_of=NOW, policy=policy, origin=origin)
            assert ids(result) == ["ok", "full"]
            full = result.ranked[1]
            assert full.score == result.ranked[0].score - 10 + policy.not_accepting
            assert ("accepting", policy.not_accepting) in [
                (r.factor, r.points) for r in full.reasons
            ]

    def test_interpreter_saves_a_candidate(self) -> None:
        """A practice with an interpreter ranks, below one that speaks the language."""
        directory = MemoryDirectory(
            [role("speaks"), role("interp", languages=("en",), interpreter_available=True)]
        )
        result = match(referral(), directory, as_of=NOW)
        assert ids(result) == ["speaks", "interp"]
        assert "an interpreter for es is available" in [r.text for r in result.ranked[1].reasons]

    def test_languages_come_from_the_practitioner(self) -> None:
        """A role that lists no language speaks its practitioner's."""
        directory = MemoryDirectory(
            [
                Practitioner("p1", "Dr Ana Ruiz", languages=("es-MX",)),
                role("r1", languages=(), practitioner_id="p1"),
            ]
        )
        result = match(referral(), directory, as_of=NOW)
        assert ids(result) == ["r1"]
        assert result.ranked[0].name == "Dr Ana Ruiz"

    def test_accepting_comes_from_the_location(self) -> None:
        """A role silent on new patients follows its location's answer (Plan-Net's
        newpatients on Location); silence everywhere is 'not stated', not excluded."""
        directory = MemoryDirectory(
            [
                Location("closed", accepting_new_patients=False),
                Location("open", accepting_new_patients=True),
                role("at-closed", accepting_new_patients=None, location_ids=("closed",)),
                role("at-open", accepting_new_patients=None, location_ids=("open",)),
                role("silent", accepting_new_patients=None),
            ]
        )
        result = match(referral(), directory, as_of=NOW)
        assert ids(result) == ["at-open", "silent"]
        assert [e.reference for e in result.excluded] == ["PractitionerRole/at-closed"]

    def test_too_far_is_excluded_unless_telehealth(self) -> None:
        """Beyond max_distance_km a candidate is excluded, unless it offers telehealth."""
        boston = GeoPoint(42.3601, -71.0589)
        directory = MemoryDirectory(
            [
                Location("near", position=GeoPoint(41.77, -72.68)),
                Location("far", position=boston),
                role("near", location_ids=("near",)),
                role("far", location_ids=("far",)),
                role("far-virtual", location_ids=("far",), telehealth=True),
            ]
        )
        policy = attrs.evolve(DEFAULT_POLICY, max_distance_km=50)
        result = match(referral(), directory, as_of=NOW, origin=HARTFORD, policy=policy)
        assert ids(result) == ["near", "far-virtual"]
        assert result.excluded[0].reasons[0].startswith("farther than 50 km (")


class TestScoring:
    def test_the_hierarchy(self) -> None:
        """Asked for internal medicine, a cardiologist qualifies (a specialization), just
        below an internist; asked for cardiology, an internist does not."""
        directory = MemoryDirectory(
            [role("internist", specialties=(INTERNAL,)), role("cardio", specialties=(CARDIOLOGY,))]
        )
        result = match(referral(), directory, as_of=NOW, specialty=INTERNAL)
        assert ids(result) == ["internist", "cardio"]
        assert "a specialization of 207R00000X" in result.ranked[1].reasons[0].text
        assert ids(match(referral(), directory, as_of=NOW)) == ["cardio"]

    def test_subspecialty_satisfies_its_parent(self) -> None:
        """Interventional cardiology is under internal medicine, not under cardiology: NUCC
        has two levels below a grouping."""
        directory = MemoryDirectory([role("ic", specialties=(INTERVENTIONAL,))])
        assert ids(match(referral(), directory, as_of=NOW, specialty=INTERNAL)) == ["ic"]
        assert ids(match(referral(), directory, as_of=NOW)) == []

    def test_networks_come_from_the_plan(self) -> None:
        """A coverage naming a plan the directory knows uses that plan's networks."""
        coverage = Coverage("c1", "Acme", "Acme Bronze", PlanType.HMO)
        directory = MemoryDirectory(
            [
                InsurancePlan("AcmeQHPBronze", "Acme Bronze", network_ids=("std",)),
                role("in", network_ids=("std",)),
                role("out", network_ids=("other",)),
            ]
        )
        assert coverage_networks(coverage, directory) == {"std"}
        result = match(referral(coverage=coverage), directory, as_of=NOW)
        assert ids(result) == ["in"]
        assert result.ranked[0].network is NetworkStatus.IN_NETWORK
        by_id = referral(coverage=attrs.evolve(coverage, plan="AcmeQHPBronze"))
        assert ids(match(by_id, directory, as_of=NOW)) == ["in"]

    @pytest.mark.parametrize(
        ("coverage", "text"),
        [
            (None, "networks do not apply (self-pay or no coverage)"),
            (Coverage.self_pay(), "networks do not apply (self-pay or no coverage)"),
            (
                Coverage("c", "Payer", "Unknown plan", PlanType.PPO),
                "the coverage names no network: not checked",
            ),
        ],
    )
    def test_networks_that_do_not_apply(self, coverage: Coverage | None, text: str) -> None:
        """Self-pay, no coverage, or no network named: nobody is excluded for networks."""
        directory = MemoryDirectory([role("a", network_ids=("x",)), role("b", network_ids=())])
        result = match(referral(coverage=coverage), directory, as_of=NOW)
        assert ids(result) == ["a", "b"]
        assert all(c.network is NetworkStatus.UNKNOWN for c in result)
        assert text in [r.text for r in result.ranked[0].reasons]

    def test_distance_orders_and_is_reported(self) -> None:
        """Nearer ranks higher; the nearest location of a role counts; unknown positions
        cost a little; without an origin distance is not used."""
        directory = MemoryDirectory(
            [
                Location("near", position=GeoPoint(41.77, -72.68)),
                Location("mid", position=GeoPoint(41.31, -72.93)),
                Location("nowhere"),
                role("two-places", location_ids=("mid", "near")),
                role("mid", location_ids=("mid",)),
                role("unknown", location_ids=("nowhere",)),
            ]
        )
        result = match(referral(), directory, as_of=NOW, origin=HARTFORD)
        assert ids(result) == ["two-places", "unknown", "mid"]
        assert result.ranked[0].location_id == "near"
        nearest = result.ranked[0].distance_km
        assert nearest is not None
        assert nearest < 1
        plain = match(referral(), directory, as_of=NOW)
        assert all(c.distance_km is None for c in plain)

    def test_services_are_candidates_named_by_their_organization(self) -> None:
        """Healthcare services rank beside roles; a nameless one takes its organisation's."""
        directory = MemoryDirectory(
            [
                Organization("o1", "Hartford Heart"),
                HealthcareService(
                    "s1",
                    organization_id="o1",
                    specialties=(CARDIOLOGY,),
                    network_ids=(NET,),
                    languages=("es",),
                ),
            ]
        )
        result = match(referral(), directory, as_of=NOW)
        assert [(c.kind, c.name) for c in result] == [("HealthcareService", "Hartford Heart")]

    def test_bad_arguments(self) -> None:
        """An unknown specialty name, a naive time, a bad limit or policy: ValidationError."""
        directory = MemoryDirectory()
        with pytest.raises(ValidationError, match="specialty"):
            match(referral(specialty="astrology"), directory, as_of=NOW)
        with pytest.raises(ValidationError, match="as_of"):
            match(referral(), directory, as_of=NOW.replace(tzinfo=None))
        with pytest.raises(ValidationError, match="limit"):
            match(referral(), directory, as_of=NOW, limit=0)
        with pytest.raises(ValidationError):
            MatchPolicy(per_km=-1)
        with pytest.raises(ValidationError):
            MatchPolicy(soonest_slot=1, slot_at_deadline=5)
        with pytest.raises(ValidationError):
            MatchPolicy(windows={Priority.ROUTINE: dt.timedelta(days=1)})


class TestSlots:
    def test_the_soonest_slot_in_the_window_ranks_first(self) -> None:
        """Slots inside the urgency window add points, more the sooner; a slot after the
        window counts for nothing."""
        directory = MemoryDirectory([role("soon"), role("later"), role("none"), role("past")])
        scheduler = MemoryScheduler()
        scheduler.open_slots("PractitionerRole/soon", NOW + dt.timedelta(days=1), count=1)
        scheduler.open_slots("PractitionerRole/later", NOW + dt.timedelta(days=10), count=1)
        scheduler.open_slots("PractitionerRole/none", NOW + dt.timedelta(days=60), count=1)
        result = match(referral(), directory, as_of=NOW, scheduler=scheduler)
        assert ids(result)[:2] == ["soon", "later"]
        assert result.ranked[0].slot is not None
        assert result.ranked[0].slot.start == NOW + dt.timedelta(days=1)
        assert result.window == Window(NOW, NOW + dt.timedelta(days=21))
        by_id = {c.id: c for c in result}
        assert by_id["none"].slot is None
        assert "slots unknown (UnknownTargetError)" in [r.text for r in by_id["past"].reasons]

    def test_the_urgency_window_comes_from_the_assessment(self) -> None:
        """An urgent referral due in two days counts only slots before then."""
        due = NOW + dt.timedelta(days=2)
        urgent = referral(urgency=UrgencyAssessment(Priority.URGENT, 80.0, due_by=due))
        directory = MemoryDirectory([role("a")])
        scheduler = MemoryScheduler()
        scheduler.open_slots("PractitionerRole/a", NOW + dt.timedelta(days=3), count=1)
        result = match(urgent, directory, as_of=NOW, scheduler=scheduler)
        assert result.window.end == due
        assert result.ranked[0].slot is None
        overdue = match(urgent, directory, as_of=due + dt.timedelta(hours=1), scheduler=scheduler)
        assert overdue.window.length == dt.timedelta(hours=96)

    def test_an_unavailable_scheduler_does_not_fail_the_match(self) -> None:
        """When the scheduling system fails, candidates rank without slots, and say so."""

        class Down(MemoryScheduler):
            def find_slots(
                self, target: str, window: Window, *, limit: int | None = None
            ) -> list[Slot]:
                raise SchedulingUnavailableError("down")

        result = match(referral(), MemoryDirectory([role("a")]), as_of=NOW, scheduler=Down())
        assert "slots unknown (SchedulingUnavailableError)" in [
            r.text for r in result.ranked[0].reasons
        ]

    def test_slots_are_asked_for_only_while_they_can_matter(self) -> None:
        """With limit 1 and a clear leader, far fewer candidates are asked than exist."""
        asked: list[str] = []

        class Counting(MemoryScheduler):
            def find_slots(
                self, target: str, window: Window, *, limit: int | None = None
            ) -> list[Slot]:
                asked.append(target)
                return super().find_slots(target, window, limit=limit)

        directory = MemoryDirectory(
            [role("best", telehealth=True)]
            + [role(f"r{k:02d}", languages=("en",), interpreter_available=True) for k in range(30)]
        )
        scheduler = Counting()
        for k in range(30):
            scheduler.open_slots(f"PractitionerRole/r{k:02d}", NOW + dt.timedelta(days=20), count=1)
        scheduler.open_slots("PractitionerRole/best", NOW + dt.timedelta(hours=1), count=1)
        result = match(referral(), directory, as_of=NOW, scheduler=scheduler, limit=1)
        assert ids(result) == ["best"]
        assert len(asked) < 5
        everyone = match(referral(), directory, as_of=NOW, scheduler=scheduler, limit=31)
        assert ids(everyone)[0] == "best"
        assert len(everyone) == 31


# --------------------------------------------------------------------------- properties

candidates = st.builds(
    dict,
    network=st.sampled_from([NET, "other"]),
    language=st.sampled_from(["es", "en", "fr"]),
    interpreter=st.booleans(),
    accepting=st.sampled_from([True, False, None]),
    km=st.floats(min_value=0, max_value=200),
    telehealth=st.booleans(),
    slot_day=st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
)


def build(specs: list[dict[str, object]]) -> tuple[MemoryDirectory, MemoryScheduler]:
    directory = MemoryDirectory()
    scheduler = MemoryScheduler()
    for k, spec in enumerate(specs):
        directory.add(
            [
                Location(
                    f"loc-{k}", position=GeoPoint(41.7658 + float(spec["km"]) / 111.2, -72.6734)
                ),  # type: ignore[arg-type]
                PractitionerRole(
                    f"c{k:02d}",
                    specialties=(CARDIOLOGY,),
                    network_ids=(spec["network"],),  # type: ignore[arg-type]
                    languages=(spec["language"],),  # type: ignore[arg-type]
                    interpreter_available=spec["interpreter"],  # type: ignore[arg-type]
                    accepting_new_patients=spec["accepting"],  # type: ignore[arg-type]
                    telehealth=spec["telehealth"],
                    location_ids=(f"loc-{k}",),
                ),  # type: ignore[arg-type]
            ]
        )
        if spec["slot_day"] is not None:
            scheduler.open_slots(
                f"PractitionerRole/c{k:02d}",
                NOW + dt.timedelta(days=spec["slot_day"], hours=1),  # type: ignore[arg-type]
                count=1,
            )
    return directory, scheduler


def run(
    specs: list[dict[str, object]],
    limit: int,
    policy: MatchPolicy = DEFAULT_POLICY,
    excluded: int | None = 3,
) -> object:
    directory, scheduler = build(specs)
    return match(
        referral(),
        directory,
        as_of=NOW,
        limit=limit,
        policy=policy,
        scheduler=scheduler,
        origin=HARTFORD,
        excluded=excluded,
    )


policies = st.sampled_from(
    [
        DEFAULT_POLICY,
        attrs.evolve(
            DEFAULT_POLICY,
            require_in_network=False,
            require_language=False,
            require_accepting=False,
            max_distance_km=100,
        ),
    ]
)


@given(st.lists(candidates, min_size=1, max_size=12), st.integers(1, 12), policies)
def test_an_excluded_provider_never_ranks(
    specs: list[dict[str, object]], limit: int, policy: MatchPolicy
) -> None:
    """Ranked and excluded are disjoint; together with the unranked they are everyone."""
    result = run(specs, limit, policy)
    ranked = {c.reference for c in result.ranked}  # type: ignore[attr-defined]
    excluded = {e.reference for e in result.excluded}  # type: ignore[attr-defined]
    assert not ranked & excluded
    everyone = run(specs, limit, policy, excluded=None)
    listed = {e.reference for e in everyone.excluded}  # type: ignore[attr-defined]
    assert not ranked & listed
    assert excluded <= listed
    assert everyone.excluded_count == len(listed) == result.excluded_count  # type: ignore[attr-defined]
    # the quick assessment every candidate gets agrees with the explained one: the listed
    # reasons are the counted factors, and a score is the sum of its reasons' points
    reasons = sum(len(e.reasons) for e in everyone.excluded)  # type: ignore[attr-defined]
    assert reasons == sum(everyone.excluded_by.values())  # type: ignore[attr-defined]
    assert result.excluded_by == everyone.excluded_by  # type: ignore[attr-defined]
    for c in result.ranked:  # type: ignore[attr-defined]
        assert c.score == pytest.approx(sum(r.points for r in c.reasons), abs=1e-6)
    assert len(ranked) + len(listed) <= len(specs)
    assert len(ranked) <= limit
    assert [c.rank for c in result.ranked] == list(range(1, len(ranked) + 1))  # type: ignore[attr-defined]
    assert [c.score for c in result.ranked] == sorted(
        (c.score for c in result.ranked), reverse=True
    )  # type: ignore[attr-defined]


@given(st.lists(candidates, min_size=2, max_size=10), st.data(), policies)
def test_improving_a_candidate_never_lowers_its_rank(
    specs: list[dict[str, object]], data: st.DataObject, policy: MatchPolicy
) -> None:
    """Putting a candidate in network, giving it the patient's language, or a sooner slot
    never moves it down (and never out of the ranking)."""
    k = data.draw(st.integers(0, len(specs) - 1))
    change = data.draw(st.sampled_from(["network", "language", "slot", "all"]))
    better = dict(specs[k])
    if change in ("network", "all"):
        better["network"] = NET
    if change in ("language", "all"):
        better["language"] = "es"
    if change in ("slot", "all"):
        day = specs[k]["slot_day"]
        better["slot_day"] = 0 if day is None else max(0, int(day) - 5)  # type: ignore[call-overload]
    limit = len(specs)
    before = {c.id: c.rank for c in run(specs, limit, policy).ranked}  # type: ignore[attr-defined]
    after = {c.id: c.rank for c in run([*specs[:k], better, *specs[k + 1 :]], limit, policy).ranked}  # type: ignore[attr-defined]
    me = f"c{k:02d}"
    if me in before:
        assert me in after
        assert after[me] <= before[me]


@given(st.lists(candidates, min_size=1, max_size=10))
def test_adding_a_better_twin_ranks_it_ahead(specs: list[dict[str, object]]) -> None:
    """A new candidate like an existing one but in network, speaking the patient's language
    and with the soonest slot scores at least as high, and the others keep their order."""
    twin = dict(specs[0], network=NET, language="es", slot_day=0)
    limit = len(specs) + 1
    before = [c.id for c in run(specs, limit).ranked]  # type: ignore[attr-defined]
    ranked = run([*specs, twin], limit).ranked  # type: ignore[attr-defined]
    after = [c.id for c in ranked]
    scores = {c.id: c.score for c in ranked}
    new = f"c{len(specs):02d}"
    if "c00" in after and new in after:
        assert scores[new] >= scores["c00"]  # ahead, or level (then the older id first)
    elif "c00" in after:
        pytest.fail("the twin is excluded while the original ranks")
    assert [i for i in after if i != new] == before


class TestDistancesOnDemand:
    """Without ``max_distance_km`` distances are computed only for the candidates that may
    rank; the outcome must be what computing every distance gives (a bound that excludes
    nobody forces that path)."""

    @pytest.mark.parametrize("unknown", [-5.0, 0.0, 4.0])
    @pytest.mark.parametrize("with_slots", [False, True])
    def test_the_same_as_every_distance_computed(self, unknown: float, with_slots: bool) -> None:
        import random

        rng = random.Random(3)
        entries: list[object] = []
        scheduler = MemoryScheduler()
        for k in range(300):  # several batches of locations read on demand
            placed = k % 7 != 0  # some with no position: distance unknown
            entries.append(
                Location(
                    f"l{k}",
                    position=GeoPoint(41.7 + rng.uniform(-1, 1), -72.7 + rng.uniform(-1, 1))
                    if placed
                    else None,
                    accepting_new_patients=None if k % 5 else rng.random() < 0.5,
                )
            )
            entries.append(
                role(
                    f"r{k:03d}",
                    specialties=(rng.choice([CARDIOLOGY, INTERVENTIONAL]),),
                    languages=(rng.choice(["es", "en"]),),
                    interpreter_available=rng.random() < 0.3,
                    accepting_new_patients=None if k % 3 == 0 else rng.random() < 0.8,
                    telehealth=k % 4 == 0,
                    location_ids=(f"l{k}",) if k % 11 else (f"l{k}", f"l{(k + 1) % 300}"),
                )
            )
            scheduler.open_slots(
                f"PractitionerRole/r{k:03d}", NOW + dt.timedelta(hours=rng.randint(1, 600)), count=1
            )
        directory = MemoryDirectory(entries)  # type: ignore[arg-type]
        lazy = attrs.evolve(DEFAULT_POLICY, distance_unknown=unknown)
        for limit in (1, 10, 50):
            got = _ranks_as_brute_force(directory, lazy, limit, scheduler if with_slots else None)
            assert len(got.ranked) == limit


def _run(
    directory: MemoryDirectory, policy: MatchPolicy, limit: int, scheduler: MemoryScheduler | None
) -> MatchResult:
    return match(
        referral(),
        directory,
        as_of=NOW,
        limit=limit,
        policy=policy,
        origin=HARTFORD,
        scheduler=scheduler,
        specialty=CARDIOLOGY,
        excluded=None,
    )


def _ranks_as_brute_force(
    directory: MemoryDirectory, lazy: MatchPolicy, limit: int, scheduler: MemoryScheduler | None
) -> MatchResult:
    """``match`` with ``lazy`` (distances on demand), checked equal to the same policy with a
    bound that excludes nobody (every distance computed); the lazy result."""
    every = attrs.evolve(lazy, max_distance_km=1e9)
    got, brute = _run(directory, lazy, limit, scheduler), _run(directory, every, limit, scheduler)
    assert got.ranked == brute.ranked
    assert got.excluded == brute.excluded
    assert got.excluded_by == brute.excluded_by
    return got


# a pool of positions so that candidates share some (equal distances: the reference decides),
# the origin itself among them (distance 0), some far north and south (the latitude bound
# at its loosest), and no position at all
_POSITIONS = [
    None,
    HARTFORD,
    GeoPoint(41.7658, -72.0),  # the origin's latitude: the latitude bound is 0
    GeoPoint(42.1, -72.6734),
    GeoPoint(41.2, -73.9),
    GeoPoint(80.0, 10.0),
    GeoPoint(-60.0, 100.0),
]
_near = st.builds(
    GeoPoint,
    st.floats(min_value=40.7, max_value=42.8),
    st.floats(min_value=-73.7, max_value=-71.7),
)
# mostly alike, so that many candidates share their points before distance (one group)
lazy_candidates = st.builds(
    dict,
    positions=st.one_of(
        st.lists(_near, min_size=1, max_size=1),
        st.lists(st.one_of(st.sampled_from(_POSITIONS), _near), max_size=3),
    ),
    language=st.sampled_from(["es", "es", "es", "en"]),
    interpreter=st.sampled_from([False, False, False, True]),
    accepting=st.sampled_from([True, True, True, False, None]),
    telehealth=st.sampled_from([False, False, False, True]),
    subspecialty=st.sampled_from([False, False, False, True]),
    slot_hours=st.one_of(st.none(), st.integers(min_value=1, max_value=600)),
)


@given(
    st.lists(lazy_candidates, min_size=1, max_size=40),
    st.integers(min_value=1, max_value=12),
    st.sampled_from([-5.0, 0.0, 4.0]),
    st.sampled_from([0.2, 1.0, 0.0]),
    st.sampled_from([30.0, 5.0, 0.0]),
    st.booleans(),
)
def test_distances_on_demand_rank_as_brute_force(
    specs: list[dict[str, object]],
    limit: int,
    unknown: float,
    per_km: float,
    most: float,
    with_slots: bool,
) -> None:
    """Computing distances only while a candidate may come next (groups of equal points, a
    latitude bound within them) ranks exactly as computing every distance does, ties,
    capped penalties, far latitudes and unknown positions included; and every ranked
    distance is the haversine to the nearest of its locations, computed here."""
    entries: list[object] = []
    scheduler = MemoryScheduler()
    for k, spec in enumerate(specs):
        location_ids = []
        for j, position in enumerate(spec["positions"]):  # type: ignore[attr-defined]
            entries.append(Location(f"l{k}-{j}", position=position, accepting_new_patients=None))
            location_ids.append(f"l{k}-{j}")
        entries.append(
            role(
                f"r{k:02d}",
                specialties=(INTERVENTIONAL if spec["subspecialty"] else CARDIOLOGY,),
                languages=(spec["language"],),
                interpreter_available=spec["interpreter"],
                accepting_new_patients=spec["accepting"],
                telehealth=spec["telehealth"],
                location_ids=tuple(location_ids),
            )
        )
        if spec["slot_hours"] is not None:
            scheduler.open_slots(
                f"PractitionerRole/r{k:02d}",
                NOW + dt.timedelta(hours=spec["slot_hours"]),  # type: ignore[arg-type]
                count=1,
            )
    directory = MemoryDirectory(entries)  # type: ignore[arg-type]
    lazy = attrs.evolve(
        DEFAULT_POLICY, distance_unknown=unknown, per_km=per_km, max_km_penalty=most
    )
    got = _ranks_as_brute_force(directory, lazy, limit, scheduler if with_slots else None)
    if not with_slots:  # the first `limit` of the whole ranking
        every = attrs.evolve(lazy, max_distance_km=1e9)
        whole = _run(directory, every, len(specs), None).ranked
        assert [c.reference for c in got.ranked] == [c.reference for c in whole[:limit]]
    _stored_ranks_as_memory(entries, directory, lazy, limit, scheduler if with_slots else None)
    places = {e.id: e for e in entries if isinstance(e, Location)}
    for c in got.ranked:
        known = [
            (HARTFORD.km_to(places[i].position), i)  # type: ignore[arg-type]
            for i in directory.get(PractitionerRole, c.id).location_ids  # type: ignore[union-attr]
            if places[i].position is not None
        ]
        if known:
            assert (c.distance_km, c.location_id) == (round(min(known)[0], 3), min(known)[1])
        else:
            assert c.distance_km is None


def _stored_ranks_as_memory(
    entries: list[object],
    memory: MemoryDirectory,
    lazy: MatchPolicy,
    limit: int,
    scheduler: MemoryScheduler | None,
) -> None:
    """The same entries in SQLite (screened a group of alike candidates at a time, only the
    groups the ranking enters read) give every field of memory's result, for listings of
    every length and for a coverage with networks (the network index) and without."""
    conn = sqlite3.connect(":memory:")
    try:
        stored = SqlDirectory(conn)
        stored.ensure_schema()
        stored.add(entries)  # type: ignore[arg-type]
        for asked in (referral(), referral(coverage=None)):
            for kept in (20, 3, 0, None):
                expected = match(asked, memory, as_of=NOW, limit=limit, policy=lazy,
                                 origin=HARTFORD, scheduler=scheduler, specialty=CARDIOLOGY,
                                 excluded=kept)  # fmt: skip
                got = match(asked, stored, as_of=NOW, limit=limit, policy=lazy,
                            origin=HARTFORD, scheduler=scheduler, specialty=CARDIOLOGY,
                            excluded=kept)  # fmt: skip
                assert got == expected
    finally:
        conn.close()
