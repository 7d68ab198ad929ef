"""Coverage and urgency policies from rulesets, the shipped examples, the checker, what-if
and the property-testing kit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import attrs
import pytest

import referralkit as rk
from referralkit.errors import RulesError
from referralkit.model import Code, Covered, PaNeeded, PlanType, Priority
from referralkit.rules import Kind, load, loads
from referralkit.rules.check import check, check_files
from referralkit.rules.policies import (
    CoveragePolicy,
    UrgencyPolicy,
    coverage_decision,
    shipped_paths,
)
from referralkit.rules.whatif import what_if
from referralkit.testing import FakeClock, sample_request
from referralkit.testing._checks import (
    check_determinism,
    check_effective_dates,
    check_monotonic_urgency,
    check_no_conflicts,
    check_totality,
)

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ACTOR = rk.Actor("c", {rk.Role.COORDINATOR})


def referral(**changes: object) -> rk.Referral:
    desk = rk.ReferralDesk(rk.MemoryStore(), clock=FakeClock(AT))
    made = desk.send(ACTOR, desk.intake(ACTOR, sample_request()).id)
    return attrs.evolve(made, **changes)


def with_plan(plan_type: PlanType, **changes: object) -> rk.Referral:
    r = referral()
    assert r.coverage is not None
    return attrs.evolve(r, coverage=attrs.evolve(r.coverage, plan_type=plan_type), **changes)


COVERAGE = CoveragePolicy.shipped()
URGENCY = UrgencyPolicy.shipped()


class TestShippedRulesets:
    def test_every_shipped_file_is_clean(self) -> None:
        """Every shipped ruleset loads and the checker finds no error in it."""
        results = check_files(shipped_paths())
        assert len(results) >= 9
        assert {p: [x for x in probs if x.severity == "error"] for p, probs in results.items()} == {
            p: [] for p in results
        }

    def test_labelled_examples_with_citations(self) -> None:
        """Each shipped ruleset says it is an example; each rule has a citation."""
        for path in shipped_paths():
            ruleset = load(path)
            assert "example" in ruleset.description.lower(), path
            assert all(rule.citation for rule in ruleset.rules), path

    @pytest.mark.parametrize(
        ("plan", "covered", "pa"),
        [
            (PlanType.MEDICARE, Covered.COVERED, PaNeeded.NO_AUTH),
            (PlanType.MEDICARE_ADVANTAGE, Covered.COVERED, PaNeeded.NO_AUTH),
            (PlanType.MEDICAID, Covered.CONDITIONAL, PaNeeded.NO_AUTH),
            (PlanType.HMO, Covered.CONDITIONAL, PaNeeded.NO_AUTH),
            (PlanType.PPO, Covered.COVERED, PaNeeded.NO_AUTH),
            (PlanType.SELF_PAY, Covered.NOT_COVERED, None),
        ],
    )
    def test_one_referral_per_plan_type(
        self, plan: PlanType, covered: Covered, pa: PaNeeded | None
    ) -> None:
        """A cardiology visit decides as each example plan says."""
        decision = COVERAGE.decide(with_plan(plan), AT)
        assert (decision.covered, decision.pa_needed) == (covered, pa)
        assert decision.hits
        assert decision.hits[0].version

    def test_advanced_imaging_needs_authorization(self) -> None:
        """An MRI of the brain needs prior authorization on the HMO."""
        mri = with_plan(PlanType.HMO, services=(Code.cpt("70551"),))
        decision = COVERAGE.decide(mri, AT)
        assert decision.pa_needed is PaNeeded.AUTH_NEEDED
        assert decision.hits[0].rule_id == "hmo-advanced-imaging"

    def test_no_active_coverage_and_explain(self) -> None:
        """Expired coverage is not covered; explain traces every rule consulted."""
        r = referral()
        assert r.coverage is not None
        expired = attrs.evolve(
            r, coverage=attrs.evolve(r.coverage, period_end=dt.date(2026, 1, 31))
        )
        decision = COVERAGE.decide(expired, AT, explain=True)
        assert decision.reason == "no-active-coverage"
        assert decision.trace[0].matched
        plain = COVERAGE.decide(referral(), AT, explain=True)
        assert [t.rule_id for t in plain.trace if t.matched] == ["hmo-specialist-needs-referral"]
        assert all(t.failed for t in plain.trace if not t.matched)

    def test_urgency_red_flags(self) -> None:
        """Suspected cancer gets the two-week wait; the requested priority is kept."""
        cancer = referral(diagnoses=(Code.icd10("C50.911"),), specialty="oncology")
        assessment = URGENCY.assess(cancer, AT)
        assert assessment.priority is Priority.URGENT
        assert assessment.due_by is not None
        assert assessment.due_by <= AT + dt.timedelta(days=14)
        assert "suspected cancer: two-week wait" in assessment.reasons
        stat = URGENCY.assess(referral(priority=Priority.STAT), AT)
        assert stat.priority is Priority.STAT

    def test_policies_plug_into_the_desk(self) -> None:
        """A desk with rule policies stores their decisions with their hits."""
        desk = rk.ReferralDesk(
            rk.MemoryStore(), clock=FakeClock(AT), coverage=COVERAGE, urgency=URGENCY
        )
        made = desk.intake(ACTOR, sample_request())
        assert made.coverage_decision is not None
        assert made.coverage_decision.hits[0].ruleset == "example-commercial-hmo"
        assert made.urgency is not None
        assert made.urgency.hits

    def test_policies_refuse_the_wrong_kind(self) -> None:
        """A coverage policy built from an urgency ruleset is refused."""
        with pytest.raises(RulesError, match="not coverage"):
            CoveragePolicy([load(shipped_paths(Kind.URGENCY)[0])])
        with pytest.raises(RulesError, match="at least one"):
            UrgencyPolicy([])


class TestCrdConsistency:
    def test_no_match_is_indeterminate(self) -> None:
        """No rule matched: indeterminate, with pa_needed indeterminate too."""
        decision = coverage_decision(None, {"network_status": "unknown"})
        assert (decision.covered, decision.pa_needed) == (
            Covered.INDETERMINATE,
            PaNeeded.INDETERMINATE,
        )

    def test_property(self) -> None:
        """Every decision of the shipped policy keeps CRD's rules (the model enforces them)."""
        check_totality(COVERAGE, examples=60)


class TestKit:
    def test_checks_pass_on_the_shipped_policies(self) -> None:
        """Totality, determinism and monotonic urgency hold for the shipped examples."""
        check_determinism(COVERAGE, examples=30)
        check_totality(URGENCY, examples=30)
        check_monotonic_urgency(URGENCY, examples=80)

    def test_monotonic_urgency_catches_a_bad_rule(self) -> None:
        """A rule that lowers priority for one more diagnosis is caught."""
        bad = loads(
            """
[ruleset]
name = "bad"
kind = "urgency"
[[rules]]
id = "many-diagnoses-routine"
when = { diagnoses = { any_prefix = ["Z"] } }
then = { priority = "routine" }
[[rules]]
id = "otherwise-stat"
then = { priority = "stat" }
"""
        )
        with pytest.raises(AssertionError):
            check_monotonic_urgency(UrgencyPolicy([bad]), examples=1000)

    def test_no_conflicts_catches_an_overlap(self) -> None:
        """Two rules matching one referral under 'unique' are caught."""
        overlapping = loads(
            """
[ruleset]
name = "overlap"
kind = "urgency"
hit_policy = "unique"
[[rules]]
id = "a"
then = { priority = "urgent" }
[[rules]]
id = "b"
when = { "patient.age" = { gte = 0 } }
then = { priority = "stat" }
"""
        )
        with pytest.raises(AssertionError, match="unique"):
            check_no_conflicts(overlapping, examples=50)
        assert any(p.severity == "error" for p in check(overlapping))

    def test_effective_dates(self) -> None:
        """Dated rules switch exactly on their boundaries."""
        dated = loads(
            """
[ruleset]
name = "dated"
kind = "urgency"
[[rules]]
id = "new"
valid_from = 2026-03-01
then = { priority = "urgent" }
[[rules]]
id = "old"
valid_to = 2026-02-28
then = { priority = "routine" }
"""
        )
        check_effective_dates(dated, examples=40)


class TestWhatIf:
    def test_counts_transitions(self, tmp_path: Path) -> None:
        """Two versions over the same referrals: counts by old → new, with sample ids."""
        old = load(shipped_paths(Kind.URGENCY)[0])
        text = (
            Path(shipped_paths(Kind.URGENCY)[0])
            .read_text()
            .replace(
                'when = { priority = "urgent" }\nthen = { priority = "urgent"',
                'when = { priority = "urgent" }\nthen = { priority = "asap"',
            )
        )
        new = loads(text)
        assert new.version != old.version
        many = [referral(priority=p) for p in (Priority.URGENT, Priority.ROUTINE, Priority.URGENT)]
        many = [attrs.evolve(r, id=f"r{i}") for i, r in enumerate(many)]
        result = what_if(old, new, many, at=AT)
        assert result.total == 3
        assert result.changed == 2
        first = result.changes[0]
        assert (first.old, first.new, first.count, first.samples) == (
            "urgent, due 48h",
            "asap, due 48h",
            2,
            ("r0", "r2"),
        )
        assert "| urgent, due 48h → asap, due 48h | 2 | r0, r2 |" in result.table()

    def test_kinds_must_match(self) -> None:
        """Comparing a coverage ruleset with an urgency one is refused."""
        with pytest.raises(RulesError):
            what_if(
                load(shipped_paths(Kind.COVERAGE)[0]),
                load(shipped_paths(Kind.URGENCY)[0]),
                [],
            )


class TestTimeZones:
    """Issue 9, item 12: every rules entry point reads an aware datetime as its UTC instant
    and refuses a naive one; a decision never depends on the zone or on the previous call."""

    # 23:30 UTC on 31 December is already 1 January in UTC+2: the coverage period of the
    # sample starts on 1 January, so the local date and the UTC date disagree on it
    INSTANT = dt.datetime(2025, 12, 31, 23, 30, tzinfo=dt.UTC)
    ZONES = (
        dt.UTC,
        dt.timezone(dt.timedelta(hours=2)),
        dt.timezone(dt.timedelta(hours=-10)),
        dt.timezone(dt.timedelta(hours=14)),
    )

    @staticmethod
    def fresh() -> rk.Referral:
        received = dt.datetime(2025, 12, 30, tzinfo=dt.UTC)
        return sample_request().referral("tz-referral", received, received=True)

    def test_the_same_instant_decides_the_same_whatever_came_before(self) -> None:
        """The reported flip: the same UTC call returned ``conditional`` after a call in
        UTC+2 and ``not-covered`` after one in UTC, because the extracted facts were cached
        on the instant but computed from the local date."""
        policy = CoveragePolicy.shipped()
        baseline = policy.decide(self.fresh(), self.INSTANT)
        assert baseline.covered is Covered.NOT_COVERED  # UTC date: 31 December, not covered
        for before in self.ZONES:
            for zone in self.ZONES:
                referral_ = self.fresh()
                policy.decide(referral_, self.INSTANT.astimezone(before))
                assert policy.decide(referral_, self.INSTANT.astimezone(zone)) == baseline

    def test_urgency_and_facts_read_the_utc_date(self) -> None:
        """Facts (the ``date`` fact, ``coverage.active``) and the urgency due date come from
        the UTC instant; a due date is always UTC."""
        for zone in self.ZONES:
            local = self.INSTANT.astimezone(zone)
            facts = rk.rules.extract(self.fresh(), local)
            assert facts["date"] == dt.date(2025, 12, 31)
            assert facts["coverage.active"] is False
            undated = attrs.evolve(self.fresh(), received_at=None)
            assessment = UrgencyPolicy.shipped().assess(undated, local)
            assert assessment.due_by is not None
            assert assessment.due_by.utcoffset() == dt.timedelta(0)
            assert assessment == UrgencyPolicy.shipped().assess(undated, self.INSTANT)

    def test_naive_datetimes_are_refused_with_a_validation_error(self) -> None:
        """A naive datetime names no instant: every entry point refuses it, naming ``at``."""
        naive = dt.datetime(2026, 1, 1, 9, 0)
        r = self.fresh()
        calls = [
            lambda: CoveragePolicy.shipped().decide(r, naive),
            lambda: CoveragePolicy.shipped().decide(r, naive, explain=True),
            lambda: UrgencyPolicy.shipped().assess(r, naive),
            lambda: rk.rules.extract(r, naive),
            lambda: what_if(COVERAGE.rulesets[0], COVERAGE.rulesets[0], [r], at=naive),
        ]
        for call in calls:
            with pytest.raises(rk.ValidationError) as info:
                call()
            assert info.value.path == "at"
            assert "naive" in info.value.reason

    def test_what_if_reads_the_utc_instant(self) -> None:
        """What-if as of a local time gives the same table as of its UTC instant."""
        old = COVERAGE.rulesets[0]
        local = self.INSTANT.astimezone(self.ZONES[1])
        r = self.fresh()
        assert what_if(old, old, [r], at=local) == what_if(old, old, [r], at=self.INSTANT)
