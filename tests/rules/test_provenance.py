"""Provenance documents: a ruleset's canonical document reads back to an equal ruleset, and
its digest changes with the rules, not with how the file is written."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings

from referralkit.errors import RulesError, ValidationError
from referralkit.policy import BasicCoverage
from referralkit.rules import load, loads
from referralkit.rules.model import Kind
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy, shipped_paths
from referralkit.rules.provenance import (
    UNRECORDED,
    UNVERSIONED,
    Provenance,
    canonical_json,
    policy_versions,
    provenance_of,
    ruleset_digest,
    ruleset_document,
    ruleset_from_json,
)
from referralkit.testing import rulesets

RULES = """
[ruleset]
name = "acme-coverage"
kind = "coverage"
description = "Acme's rules"

[[rules]]
id = "imaging-pa"
description = "Advanced imaging needs prior authorization"
valid_from = 2026-03-01
when = { "coverage.payer" = "Acme", services = { any_prefix = ["7055", "7219"] } }
then = { covered = "covered", pa_needed = "auth-needed", doc_needed = "clinical" }

[[rules]]
id = "covered"
when = { not = { "coverage.plan_type" = "self-pay" } }
then = { covered = "covered", pa_needed = "no-auth" }
"""

# the same rules: keys reordered, conditions spelled out, comments, other whitespace
RULES_REWRITTEN = """
# Acme coverage -- reformatted
[ruleset]
description = "Acme's rules"
kind = "coverage"
name = "acme-coverage"
hit_policy = "first"

[[rules]]
id = "imaging-pa"
description = "Advanced imaging needs prior authorization"
when.all = [ { "coverage.payer" = { eq = "Acme" } },
             { services = { any_prefix = ["7055", "7219"] } } ]
then = { doc_needed = "clinical", pa_needed = "auth-needed", covered = "covered" }
valid_from = 2026-03-01

[[rules]]
id    = "covered"
when  = { not = { "coverage.plan_type" = { eq = "self-pay" } } }
then  = { pa_needed = "no-auth", covered = "covered" }
"""


class TestDocuments:
    @pytest.mark.parametrize("path", shipped_paths(Kind.COVERAGE) + shipped_paths(Kind.URGENCY))
    def test_shipped_rulesets_read_back_alike(self, path: Path) -> None:
        """Each shipped ruleset's document reads back to an equal ruleset, same digest."""
        ruleset = load(path)
        text = canonical_json(ruleset_document(ruleset))
        again = ruleset_from_json(text)
        assert again == ruleset
        assert again.version == ruleset.version
        assert ruleset_digest(again) == ruleset_digest(ruleset)
        assert [r.description for r in again.rules] == [r.description for r in ruleset.rules]

    @settings(max_examples=60, deadline=None)
    @given(rulesets(Kind.COVERAGE) | rulesets(Kind.URGENCY))
    def test_any_ruleset_reads_back_alike(self, ruleset: object) -> None:
        """Generated rulesets of every shape (nesting, dates, lists, every hit policy) read
        back equal from their documents."""
        assert not isinstance(ruleset, str)
        text = canonical_json(ruleset_document(ruleset))  # type: ignore[arg-type]
        assert ruleset_from_json(text) == ruleset

    def test_formatting_does_not_change_the_digest(self, tmp_path: Path) -> None:
        """Whitespace, comments, key order, spelled-out conditions and the file's path keep
        the digest; the canonical JSON is compact, with sorted keys."""
        first, second = tmp_path / "a.toml", tmp_path / "b.toml"
        first.write_text(RULES)
        second.write_text(RULES_REWRITTEN)
        assert ruleset_digest(load(first)) == ruleset_digest(load(second))
        text = canonical_json(ruleset_document(load(first)))
        assert '"valid_from":{"$date":"2026-03-01"}' in text
        assert ": " not in text
        assert "\n" not in text

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ('"7055", "7219"', '"7055"'),  # a condition
            ('doc_needed = "clinical"', 'doc_needed = "admin"'),  # an output
            ("2026-03-01", "2026-04-01"),  # an effective date
            ("Advanced imaging needs", "Imaging needs"),  # the text an explanation shows
            ('name = "acme-coverage"', 'name = "acme-coverage-2"'),
        ],
    )
    def test_a_change_to_the_rules_changes_the_digest(self, old: str, new: str) -> None:
        """Anything a decision or its explanation depends on is part of the digest."""
        assert old in RULES
        assert ruleset_digest(loads(RULES)) != ruleset_digest(loads(RULES.replace(old, new, 1)))

    def test_rule_order_is_part_of_the_digest(self) -> None:
        """Under the first hit policy the order decides: swapping two rules is a change."""
        ruleset = loads(RULES)
        head, first, second = (
            RULES.partition('[[rules]]\nid = "imaging-pa"')[0],
            *("[[rules]]" + part for part in RULES.split("[[rules]]")[1:]),
        )
        swapped = loads(head + second + first)
        assert [r.id for r in swapped.rules] == ["covered", "imaging-pa"]
        assert ruleset_digest(swapped) != ruleset_digest(ruleset)

    def test_event_rulesets_have_no_document(self) -> None:
        """Event rules make no decisions: asking for their document is a clear error."""
        with pytest.raises(RulesError, match="event rulesets"):
            ruleset_document(load(shipped_paths(Kind.EVENT)[0]))
        with pytest.raises(ValidationError):
            ruleset_document("not a ruleset")  # type: ignore[arg-type]


class TestProvenance:
    def test_policies_are_versioned_by_their_rulesets(self) -> None:
        """A policy's digest depends on its rulesets and their order."""
        first, second = (load(p) for p in shipped_paths(Kind.COVERAGE)[:2])
        one = provenance_of(CoveragePolicy([first, second]))
        other = provenance_of(CoveragePolicy([second, first]))
        assert one.versioned
        assert one.policy != other.policy
        assert len(one.policy) == 64
        assert one.decider == "CoveragePolicy"
        moment = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
        kept = policy_versions(CoveragePolicy([first, second]), moment)
        assert [v.digest for v in kept] == [
            ruleset_digest(first),
            ruleset_digest(second),
            one.policy,
        ]
        assert [v.kind for v in kept] == ["coverage", "coverage", "coverage-policy"]

    def test_a_custom_decider_is_unversioned(self) -> None:
        """Not rule-based: a marker and the class name, never a made-up hash."""
        provenance = provenance_of(BasicCoverage())
        assert provenance == Provenance(UNVERSIONED, "BasicCoverage")
        assert not provenance.versioned
        assert policy_versions(BasicCoverage(), dt.datetime(2026, 1, 5, tzinfo=dt.UTC)) == []

    def test_payloads(self) -> None:
        """The payload round-trips; an event without one is 'unrecorded'; a malformed one is a
        typed error."""
        provenance = provenance_of(UrgencyPolicy.shipped())
        assert Provenance.from_payload({"provenance": provenance.to_payload()}) == provenance
        assert Provenance.from_payload({}) == Provenance(UNRECORDED)
        assert str(Provenance(UNRECORDED)).startswith("unrecorded")
        assert str(provenance) == f"policy {provenance.policy[:12]}"
        for bad in ("x", {"policy": 3}, {"decider": "p"}):
            with pytest.raises(ValidationError, match="provenance"):
                Provenance.from_payload({"provenance": bad})


def test_a_document_that_is_not_one_is_a_rules_error() -> None:
    """Malformed stored text is a typed error, not a KeyError."""
    for bad in ("{}", "[]", '{"ruleset": {}, "rules": []}', "not json"):
        with pytest.raises(RulesError, match="not a stored ruleset document"):
            ruleset_from_json(bad)


@pytest.mark.parametrize("path", shipped_paths(Kind.COVERAGE) + shipped_paths(Kind.URGENCY))
def test_the_loader_reads_documents_too(path: Path) -> None:
    """A document is in the TOML format's structure: the loader reads it to the same rules."""
    from referralkit.rules import parse

    ruleset = load(path)
    assert parse(ruleset_document(ruleset)) == ruleset


def test_a_value_without_a_json_form_is_a_rules_error() -> None:
    """A ruleset built in Python with an output no TOML file could hold: a typed error."""
    from referralkit.rules.model import Always, Rule, Ruleset

    moment = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    odd = Ruleset("odd", Kind.COVERAGE, (Rule("r", Always(), {"reason": moment}),))
    with pytest.raises(RulesError, match="a rule holds a datetime, which has no JSON form"):
        ruleset_digest(odd)
    dated = Ruleset("", Kind.COVERAGE, (Rule("r", Always(), {"reason": dt.date(2026, 1, 1)}),))
    assert ruleset_from_json(canonical_json(ruleset_document(dated))) == dated
