"""What-if over whole policies (issue 11, item 5): two coverage policies, two urgency policies
or both, over a population, with due dates, difference records, a matrix and samples."""

from __future__ import annotations

import datetime as dt
import sys

import attrs
import pytest

import referralkit as rk
from referralkit import synth
from referralkit.errors import RulesError
from referralkit.rules import Kind, load, loads
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy, shipped_paths
from referralkit.rules.whatif import what_if
from referralkit.testing import FakeClock, sample_request

COVERAGE = CoveragePolicy.shipped()
URGENCY = UrgencyPolicy.shipped()
POPULATION = list(synth.referrals(400, 7))


def halved_cancer_window() -> UrgencyPolicy:
    text = shipped_paths(Kind.URGENCY)[0].read_text()
    changed = text.replace(
        'then = { priority = "urgent", due_days = 14, score = 150',
        'then = { priority = "urgent", due_days = 7, score = 150',
    )
    assert changed != text
    return UrgencyPolicy([loads(changed)])


def without_hmo_imaging() -> CoveragePolicy:
    rulesets = []
    for ruleset in COVERAGE.rulesets:
        rules = tuple(r for r in ruleset.rules if r.id != "hmo-advanced-imaging")
        rulesets.append(attrs.evolve(ruleset, rules=rules))
    return CoveragePolicy(rulesets)


def cancer_referral(i: int) -> rk.Referral:
    at = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    made = sample_request().referral(f"cancer-{i}", at, received=True)
    return attrs.evolve(made, diagnoses=(rk.Code.icd10("C50.911"),))


class TestPolicies:
    def test_halving_a_due_window_shows_as_a_change(self) -> None:
        """The reported bug: halving the suspected-cancer window changed "0 of 1000". Now
        the due window is part of the outcome, and each record says by how much."""
        referrals = [cancer_referral(i) for i in range(3)] + POPULATION
        result = what_if(URGENCY, halved_cancer_window(), referrals)
        assert result.changed >= 3
        cell = result.matrix()["urgent, due 14d"]["urgent, due 7d"]
        assert cell >= 3
        record = next(r for r in result.records() if r["referral_id"] == "cancer-0")
        assert record["due_shift_hours"] == -7 * 24
        assert record["old_priority"] == record["new_priority"] == "urgent"
        assert "example-urgency/suspected-cancer" in record["new_rules"]

    def test_two_coverage_policies_no_longer_raise(self) -> None:
        """Two coverage policies compare (they raised AttributeError); removing the HMO
        imaging rule turns auth-needed into conditional for HMO imaging referrals."""
        mri = [attrs.evolve(cancer_referral(i), services=(rk.Code.cpt("70551"),)) for i in range(2)]
        result = what_if(COVERAGE, without_hmo_imaging(), mri + POPULATION, samples=2)
        assert result.total == len(mri) + len(POPULATION)
        moved = result.matrix()["covered/auth-needed"]["conditional/no-auth"]
        assert moved >= 2
        change = next(c for c in result.changes if c.old == "covered/auth-needed")
        assert len(change.samples) <= 2
        assert all(
            (d.old_covered, d.old_pa_needed) == ("covered", "auth-needed")
            for d in result.differences
            if d.old.startswith("covered/auth")
        )
        assert "| covered/auth-needed → conditional/no-auth |" in result.table(only_changed=True)
        assert (
            "→ covered/no-auth"
            not in result.table(only_changed=True).replace(
                "covered/auth-needed → conditional/no-auth", ""
            )
            or result.changed
        )

    def test_both_policies_together(self) -> None:
        """A (coverage, urgency) pair against another: each outcome shows both decisions."""
        result = what_if((COVERAGE, URGENCY), (COVERAGE, halved_cancer_window()), POPULATION[:50])
        assert result.total == 50
        assert all(" · " in c.old for c in result.changes)
        assert result.old.name.startswith("example-eligibility")
        assert "What-if" in result._repr_html_()

    def test_a_store_is_a_population(self) -> None:
        """A store's referrals are the population."""
        desk = rk.ReferralDesk(rk.MemoryStore(), clock=FakeClock())
        actor = rk.Actor("a", {rk.Role.COORDINATOR})
        for i in range(3):
            desk.intake(actor, sample_request(f"REQ-{i}"))
        result = what_if(URGENCY, URGENCY, desk.store)
        assert (result.total, result.changed, result.differences) == (3, 0, ())

    def test_kinds_and_subjects_are_checked(self) -> None:
        """Different kinds, or something that is not a ruleset or policy, are refused."""
        with pytest.raises(RulesError, match="same kind"):
            what_if(COVERAGE, URGENCY, [])
        with pytest.raises(RulesError, match="got str"):
            what_if("a.toml", "b.toml", [])
        events = load(shipped_paths(Kind.EVENT)[0])
        with pytest.raises(RulesError, match="coverage or urgency"):
            what_if(events, events, [])
        with pytest.raises(RulesError, match="got tuple"):
            what_if((URGENCY, COVERAGE), (URGENCY, COVERAGE), [])


class TestFrames:
    def test_a_dataframe_of_the_differences(self) -> None:
        """With pandas, the records become a DataFrame with one row per changed referral."""
        pytest.importorskip("pandas")
        referrals = [cancer_referral(i) for i in range(3)]
        frame = what_if(URGENCY, halved_cancer_window(), referrals).to_frame()
        assert list(frame["referral_id"]) == ["cancer-0", "cancer-1", "cancer-2"]
        assert set(frame["due_shift_hours"]) == {-168.0}

    def test_without_pandas_the_error_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without pandas, to_frame says which extra brings it."""
        monkeypatch.setitem(sys.modules, "pandas", None)
        with pytest.raises(ImportError, match="analytics"):
            what_if(URGENCY, URGENCY, []).to_frame()


class TestLabels:
    def test_outcome_labels_each_kind(self) -> None:
        """outcome() labels a coverage evaluation as covered/pa, an urgency one as its
        priority and window, and refuses an event ruleset."""
        from referralkit.rules import PythonEngine, extract
        from referralkit.rules.whatif import outcome

        referral = cancer_referral(0)
        at = referral.updated_at
        coverage = COVERAGE.rulesets[4]
        found = PythonEngine(coverage).evaluate(extract(referral, at), at.date())
        assert outcome(coverage, found, referral, at) == "conditional/no-auth"
        urgency = URGENCY.rulesets[0]
        found = PythonEngine(urgency).evaluate(extract(referral, at), at.date())
        assert outcome(urgency, found, referral, at) == "urgent, due 14d"
        # days later the window still runs from receipt; a draft's from the moment given
        later = at + dt.timedelta(days=3)
        assert outcome(urgency, found, referral, later) == "urgent, due 14d"
        draft = attrs.evolve(referral, received_at=None)
        assert outcome(urgency, found, draft, later) == "urgent, due 14d"
        with pytest.raises(RulesError, match=r"^what-if compares coverage or urgency rulesets$"):
            outcome(load(shipped_paths(Kind.EVENT)[0]), None, referral, at)

    def test_a_difference_without_due_dates_has_no_shift(self) -> None:
        """Coverage-only differences carry no due dates and no shift; the pretty text of a
        comparison of policies names both sides."""
        from referralkit.rules.whatif import Difference

        assert Difference("r", "a", "b").due_shift_hours is None
        result = what_if(COVERAGE, without_hmo_imaging(), POPULATION[:20])
        lines: list[str] = []

        class Printer:
            def text(self, value: str) -> None:
                lines.append(value)

        result._repr_pretty_(Printer(), False)
        assert lines[0].startswith("What-if example-eligibility+")


# an urgency policy that sets no window: the default window of "urgent" is 48 h, or 96 h when
# the coverage decision needs authorization, so the comparison depends on each side's decision
ALL_URGENT = UrgencyPolicy(
    [
        loads(
            """
[ruleset]
name = "all-urgent"
kind = "urgency"
[[rules]]
id = "urgent"
then = { priority = "urgent" }
"""
        )
    ]
)


def reference_labels(
    side: tuple[CoveragePolicy, UrgencyPolicy], referral: rk.Referral, at: dt.datetime
) -> tuple[str, dt.datetime | None]:
    """What one side of a "both" what-if must say: coverage decided, then urgency assessed on
    the referral holding that decision (the slow way, a full copy every time)."""
    decision = side[0].decide(referral, at)
    assessment = side[1].assess(attrs.evolve(referral, coverage_decision=decision), at)
    start = referral.received_at or at
    pa = decision.pa_needed.value if decision.pa_needed is not None else "-"
    hours = (assessment.due_by - start).total_seconds() / 3600
    window = f"due {hours / 24:g}d" if hours % 24 == 0 and hours >= 168 else f"due {hours:g}h"
    return f"{decision.covered.value}/{pa} · {assessment.priority.value}, {window}", (
        assessment.due_by
    )


class TestBothSidesDecideAlone:
    def population(self) -> list[rk.Referral]:
        """Referrals with no stored decision, one that needs authorization, and one that
        does not."""
        at = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)
        decisions = [COVERAGE.decide(r, at) for r in POPULATION[:200]]
        needing = next(d for d in decisions if d.needs_authorization)
        free = next(d for d in decisions if not d.needs_authorization)
        return [
            attrs.evolve(r, coverage_decision=(None, needing, free)[i % 3])
            for i, r in enumerate(POPULATION[:240])
        ]

    @pytest.mark.parametrize(
        "sides",
        [
            ((COVERAGE, ALL_URGENT), (without_hmo_imaging(), ALL_URGENT)),
            ((COVERAGE, URGENCY), (without_hmo_imaging(), halved_cancer_window())),
        ],
        ids=["default-windows", "shipped"],
    )
    def test_each_side_sees_its_own_coverage_decision(
        self, sides: tuple[tuple[CoveragePolicy, UrgencyPolicy], ...]
    ) -> None:
        """The urgency of each side is assessed against that side's coverage decision, never
        the stored one nor the other side's: the counts and differences equal deciding each
        referral the slow way."""
        old, new = sides
        population = self.population()
        result = what_if(old, new, population)
        expected: dict[tuple[str, str], int] = {}
        due: dict[str, tuple[dt.datetime | None, dt.datetime | None]] = {}
        for referral in population:
            at = referral.updated_at
            (a, a_due), (b, b_due) = (reference_labels(s, referral, at) for s in (old, new))
            expected[(a, b)] = expected.get((a, b), 0) + 1
            if a != b:
                due[referral.id] = (a_due, b_due)
        assert {(c.old, c.new): c.count for c in result.changes} == expected
        assert {d.referral_id: (d.old_due_by, d.new_due_by) for d in result.differences} == due
        assert result.changed == len(due) > 0

    def test_authorization_moves_the_default_window(self) -> None:
        """The premise: with no rule window, needing authorization moves "urgent" from 48 h
        to 96 h, so a side whose decision needs authorization is told apart."""
        result = what_if((COVERAGE, ALL_URGENT), (without_hmo_imaging(), ALL_URGENT), POPULATION)
        shifts = {d.due_shift_hours for d in result.differences}
        assert shifts
        assert shifts <= {-48.0, 48.0}

    def test_another_urgency_class_gets_the_decision_itself(self) -> None:
        """An urgency policy of another class (which may read more of the decision than
        whether it needs authorization) is given the referral holding its side's decision."""
        seen: list[tuple[str, object]] = []

        class Spying(UrgencyPolicy):
            def assess(
                self, referral: rk.Referral, at: dt.datetime, *, explain: bool = False
            ) -> rk.UrgencyAssessment:
                seen.append((referral.id, referral.coverage_decision))
                return super().assess(referral, at, explain=explain)

        spying = Spying(URGENCY.rulesets)
        population = self.population()[:30]
        what_if((COVERAGE, spying), (without_hmo_imaging(), spying), population)
        wanted = [
            (r.id, policy.decide(r, r.updated_at))
            for r in population
            for policy in (COVERAGE, without_hmo_imaging())
        ]
        assert seen == wanted
