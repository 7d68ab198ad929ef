"""Structured alternative services: a coverage rule's ``alternative_services`` become the
decision's codes, the same on both engines, and the directory's alternatives offer them."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest

import referralkit as rk
from referralkit.directory import MemoryDirectory, PriceList, alternatives
from referralkit.errors import RulesError, ValidationError
from referralkit.interop.fhir import FhirError
from referralkit.interop.fhir._decisions import _decision, _write_decision
from referralkit.interop.fhir._json import _Node
from referralkit.model import Code, CodeSystem, CoverageDecision, Covered, PlanType
from referralkit.rules import loads
from referralkit.rules.policies import CoveragePolicy
from referralkit.testing import FakeClock, sample_request

AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ACTOR = rk.Actor("c", {rk.Role.COORDINATOR})
ENGINES = ["python", pytest.param("durable", marks=pytest.mark.durable)]
E_CONSULT = (Code.cpt("99451"), Code.cpt("99452"))

COLLECT = """
[ruleset]
name = "alternatives-collect"
kind = "coverage"
hit_policy = "collect"

[[rules]]
id = "not-covered"
when = { network_status = "out-of-network" }
then = { covered = "not-covered", alternative_services = ["cpt:99451", "hcpcs:G0406"] }

[[rules]]
id = "also"
when = { "coverage.plan_type" = "HMO" }
then = { covered = "covered", pa_needed = "no-auth", alternative_services = [
    "http://snomed.info/sct|73761001", "cpt:99451"] }
"""


def out_of_network() -> rk.Referral:
    """An HMO referral to a specialist outside the plan's networks."""
    desk = rk.ReferralDesk(rk.MemoryStore(), clock=FakeClock(AT))
    made = desk.send(ACTOR, desk.intake(ACTOR, sample_request()).id)
    assert made.target is not None
    assert made.coverage is not None
    target = attrs.evolve(made.target, networks=("elsewhere",))
    return attrs.evolve(
        made, target=target, coverage=attrs.evolve(made.coverage, plan_type=PlanType.HMO)
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_the_shipped_hmo_rule_names_an_e_consult(engine: str) -> None:
    """Out of network on the example HMO: not covered, and the e-consult codes come as codes."""
    decision = CoveragePolicy.shipped(engine=engine).decide(out_of_network(), AT)
    assert decision.covered is Covered.NOT_COVERED
    assert decision.alternative_services == E_CONSULT
    assert "an in-network specialist" in decision.alternatives


@pytest.mark.parametrize("engine", ENGINES)
def test_collect_merges_codes_in_order_without_repeats(engine: str) -> None:
    """Under collect, every matching rule's codes, first seen first, each once."""
    policy = CoveragePolicy([loads(COLLECT)], engine=engine)
    decision = policy.decide(out_of_network(), AT)
    assert decision.alternative_services == (
        Code.cpt("99451"),
        Code.hcpcs("G0406"),
        Code.snomed("73761001"),
    )


@pytest.mark.durable
def test_both_engines_agree() -> None:
    """The python and durable engines give the same decision (the differential contract)."""
    referral = out_of_network()
    python, durable = (
        CoveragePolicy([loads(COLLECT)], engine=e).decide(referral, AT)
        for e in ("python", "durable")
    )
    assert python == durable


@pytest.mark.parametrize(
    "bad",
    ['"a cheaper scan"', '"cpt:"', '"foo:123"', '"cpt:12 34"', '"notauri|123"', "42"],
)
def test_a_bad_service_code_is_refused_at_load(bad: str) -> None:
    """A value that does not read as a service code is a RulesError naming the output."""
    text = f"""
[ruleset]
name = "bad"
kind = "coverage"

[[rules]]
id = "r"
when = {{ network_status = "out-of-network" }}
then = {{ covered = "not-covered", alternative_services = [{bad}] }}
"""
    with pytest.raises(RulesError, match=r"then\.alternative_services"):
        loads(text)


class TestCodeFromReference:
    @pytest.mark.parametrize(
        ("text", "code"),
        [
            ("cpt:93350", Code.cpt("93350")),
            (" HCPCS:G0406 ", Code.hcpcs("G0406")),
            ("snomed:73761001", Code.snomed("73761001")),
            ("icd10:R07.9", Code.icd10("R07.9")),
            ("urn:oid:2.16.840.1.113883.6.285|J3490", Code.hcpcs("J3490")),
            ("http://www.ama-assn.org/go/cpt|99451", Code.cpt("99451")),
        ],
    )
    def test_references_read_as_codes(self, text: str, code: Code) -> None:
        """A prefix and a code, or a system URI and a code."""
        assert Code.from_reference(text) == code

    @pytest.mark.parametrize("text", ["", "cpt", "loinc:1234-5", "cpt: ", "x|1", 7, None])
    def test_anything_else_is_a_validation_error(self, text: object) -> None:
        """The error names the field and does not repeat the value."""
        with pytest.raises(ValidationError) as info:
            Code.from_reference(text)  # type: ignore[arg-type]
        assert info.value.path == "code"
        assert "loinc" not in str(info.value)


def test_alternatives_offer_the_rules_codes_with_prices() -> None:
    """The directory's alternatives list the decision's codes, priced from the list."""
    referral = out_of_network()
    decision = CoveragePolicy.shipped().decide(referral, AT)
    referral = attrs.evolve(referral, coverage_decision=decision)
    prices = PriceList({Code.cpt("99451"): 40})
    found = alternatives(referral, MemoryDirectory(), as_of=AT, prices=prices)
    assert found is not None
    assert [(s.code, s.price) for s in found.services] == [
        (Code.cpt("99451"), prices.price(Code.cpt("99451"))),
        (Code.cpt("99452"), None),
    ]


class TestFhir:
    def test_round_trip(self) -> None:
        """The codes travel as Codings in the coverage-information extension, and back."""
        decision = CoverageDecision(
            covered=Covered.NOT_COVERED,
            alternative_services=(Code.cpt("99451", "e-consult"), Code.snomed("73761001")),
        )
        written = _write_decision(decision, None)
        assert _decision(_Node(written, "extension[0]")) == decision

    def test_a_coding_without_a_system_is_refused(self) -> None:
        """An alternative service needs its system: a FhirError at its path."""
        decision = CoverageDecision(covered=Covered.NOT_COVERED, alternative_services=E_CONSULT)
        written = _write_decision(decision, None)
        ours = written["extension"][-1]["extension"]
        service = next(e for e in ours if e["url"] == "alternative-service")
        del service["valueCoding"]["system"]
        with pytest.raises(FhirError, match="alternative service"):
            _decision(_Node(written, "extension[0]"))

    def test_codes_keep_their_system(self) -> None:
        """The CPT system URI is written as is."""
        decision = CoverageDecision(covered=Covered.NOT_COVERED, alternative_services=E_CONSULT)
        text = str(_write_decision(decision, None))
        assert CodeSystem.CPT in text


def test_a_service_code_longer_than_a_decision_holds_is_a_limit_problem() -> None:
    """A system URI so long the decision could not keep it: refused at load, with the limit."""
    long_system = "http://example.org/" + "x" * 300
    text = f"""
[ruleset]
name = "long"
kind = "coverage"

[[rules]]
id = "r"
when = {{ network_status = "out-of-network" }}
then = {{ covered = "not-covered", alternative_services = ["{long_system}|1"] }}
"""
    with pytest.raises(RulesError, match="at most 200 characters"):
        loads(text)
