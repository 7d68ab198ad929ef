"""What-if corners that ``nox -s mutation`` found unpinned: the exact Markdown table, records
that keep their tuples, an empty DataFrame's columns, the error texts, and due windows
counted from receipt when the comparison is made days later."""

from __future__ import annotations

import datetime as dt
import sys

import attrs
import pytest

import referralkit as rk
from referralkit.errors import RulesError
from referralkit.rules import Kind, load
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy, shipped_paths
from referralkit.rules.whatif import Change, Difference, WhatIf, what_if
from referralkit.testing import sample_request

COVERAGE = CoveragePolicy.shipped()
URGENCY = UrgencyPolicy.shipped()
RECEIVED = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)


def cancer(received: bool = True) -> rk.Referral:
    made = sample_request().referral("cancer-1", RECEIVED, received=received)
    return attrs.evolve(made, diagnoses=(rk.Code.icd10("C50.911"),))


def test_the_table_lists_each_transition_and_only_changed_keeps_the_changed_ones() -> None:
    result = WhatIf(
        "old",
        "new",
        5,
        (Change("a", "a", 3, ("r1", "r2")), Change("a", "b", 1, ("r3",)), Change("b", "c", 1, ())),
    )
    assert result.table() == (
        "| old → new | referrals | sample ids |\n"
        "|---|---:|---|\n"
        "| a → a | 3 | r1, r2 |\n"
        "| a → b | 1 | r3 |\n"
        "| b → c | 1 |  |"
    )
    assert result.table(only_changed=True).splitlines()[2:] == [
        "| a → b | 1 | r3 |",
        "| b → c | 1 |  |",
    ]


def test_records_keep_the_rule_tuples_and_an_empty_frame_has_every_column() -> None:
    due = dt.datetime(2026, 3, 16, 9, tzinfo=dt.UTC)
    changed = Difference("r1", "a", "b", old_rules=("x",), new_rules=("x", "y"), old_due_by=due)
    (record,) = WhatIf("old", "new", 1, (), (changed,)).records()
    assert record["old_rules"] == ("x",)
    assert record["new_rules"] == ("x", "y")
    assert record["old_due_by"] is due
    assert record["due_shift_hours"] is None
    pytest.importorskip("pandas")
    frame = what_if(URGENCY, URGENCY, []).to_frame()
    assert list(frame.columns) == [f.name for f in attrs.fields(Difference)] + ["due_shift_hours"]


def test_the_error_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    events = load(shipped_paths(Kind.EVENT)[0])
    with pytest.raises(RulesError, match=r"^what-if compares coverage or urgency rulesets$"):
        what_if(events, events, [cancer()])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError) as caught:
        what_if(URGENCY, URGENCY, []).to_frame()
    assert str(caught.value) == (
        "WhatIf.to_frame needs pandas, from referralkit's 'analytics' extra: "
        "pip install '.[analytics]' in a checkout"
    )


@pytest.mark.parametrize("subjects", ["urgency", "both"])
def test_a_window_counts_from_receipt_when_compared_days_later(subjects: str) -> None:
    """Three days after receipt, a suspected cancer is still "due 14d": the window runs from
    receipt, not from the comparison's moment; a draft's runs from that moment."""
    old: object = URGENCY if subjects == "urgency" else (COVERAGE, URGENCY)
    later = RECEIVED + dt.timedelta(days=3)
    (change,) = what_if(old, old, [cancer()], at=later).changes
    assert change.old.endswith("urgent, due 14d")
    (draft,) = what_if(old, old, [cancer(received=False)], at=later).changes
    assert draft.old.endswith("urgent, due 14d")


def test_what_is_refused_and_how_it_is_named() -> None:
    with pytest.raises(
        RulesError, match=r"^what-if compares two of the same kind: both and urgency$"
    ):
        what_if((COVERAGE, URGENCY), URGENCY, [])
    for odd in ((COVERAGE, COVERAGE), {"coverage": COVERAGE, "urgency": URGENCY}):
        with pytest.raises(RulesError) as caught:
            what_if(odd, odd, [])
        assert str(caught.value) == (
            "what-if compares rulesets, coverage policies, urgency policies or "
            f"(coverage, urgency) pairs; got {type(odd).__name__}"
        )


def mri(i: int) -> rk.Referral:
    return attrs.evolve(cancer(), id=f"mri-{i}", services=(rk.Code.cpt("70551"),))


def without_hmo_imaging() -> CoveragePolicy:
    rulesets = []
    for ruleset in COVERAGE.rulesets:
        rules = tuple(r for r in ruleset.rules if r.id != "hmo-advanced-imaging")
        rulesets.append(attrs.evolve(ruleset, rules=rules))
    return CoveragePolicy(rulesets)


def test_a_record_of_both_kinds_holds_each_sides_outputs_and_rules() -> None:
    result = what_if(
        (COVERAGE, URGENCY), (without_hmo_imaging(), URGENCY), [mri(i) for i in range(5)]
    )
    (change,) = [c for c in result.changes if c.changed]
    assert change.samples == ("mri-0", "mri-1", "mri-2")  # three samples unless told
    first = result.differences[0]
    assert (first.old_covered, first.new_covered) == ("covered", "conditional")
    assert (first.old_pa_needed, first.new_pa_needed) == ("auth-needed", "no-auth")
    assert first.new == change.new
    urgency_rules = ("example-urgency/routine-window", "example-urgency/suspected-cancer")
    assert first.old_rules == ("example-commercial-hmo/hmo-advanced-imaging", *urgency_rules)
    assert first.new_rules == (
        "example-commercial-hmo/hmo-specialist-needs-referral",
        *urgency_rules,
    )
    assert first.old_priority == first.new_priority == "urgent"


def test_the_most_frequent_transitions_come_first() -> None:
    routine = attrs.evolve(cancer(), id="routine", diagnoses=())
    result = what_if(URGENCY, URGENCY, [routine, cancer(), attrs.evolve(cancer(), id="c-2")])
    assert [c.count for c in result.changes] == [2, 1]
