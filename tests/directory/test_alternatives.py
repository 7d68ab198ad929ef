"""alternatives() and the self-pay price list."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import attrs
import pytest

from referralkit import Code, CoverageDecision, Covered, NetworkStatus, PaNeeded, Provider
from referralkit.directory import (
    MemoryDirectory,
    PractitionerRole,
    PriceList,
    PriceListError,
    alternatives,
    needs_alternatives,
)
from referralkit.model import CodeSystem
from referralkit.testing import sample_request

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
NET = "acme-hmo-west"
PRICES = (
    "code,price,system,description\n"
    "99204,245.00,CPT,visit\n93306,610.50,,echo\n93350,480,,stress echo\n"
)


def decided(decision: CoverageDecision | None) -> object:
    return attrs.evolve(sample_request().referral("ref-1", NOW), coverage_decision=decision)


def test_which_decisions_need_alternatives() -> None:
    """Not covered, or out of network by status or CRD reason; not covered ones, not
    decided ones."""
    assert needs_alternatives(decided(None)) is None  # type: ignore[arg-type]
    covered = CoverageDecision(Covered.COVERED, pa_needed=PaNeeded.NO_AUTH)
    assert needs_alternatives(decided(covered)) is None  # type: ignore[arg-type]
    assert needs_alternatives(decided(CoverageDecision(Covered.NOT_COVERED))) == "not-covered"  # type: ignore[arg-type]
    out = CoverageDecision(Covered.CONDITIONAL, pa_needed=PaNeeded.NO_AUTH, reason="out-of-network")
    assert needs_alternatives(decided(out)) == "out-of-network"  # type: ignore[arg-type]
    assert alternatives(decided(covered), MemoryDirectory(), as_of=NOW) is None  # type: ignore[arg-type]


def test_providers_services_and_self_pay() -> None:
    """In-network providers of the specialty (the current target left out), service codes
    read from the decision and given by the deployment, priced, and the self-pay estimate
    for the referral's services."""
    decision = CoverageDecision(
        Covered.NOT_COVERED,
        reason="auth-out-network",
        network_status=NetworkStatus.OUT_OF_NETWORK,
        alternatives=(
            "an in-network specialist",
            "cpt:93350",
            f"{CodeSystem.HCPCS}|G0463",
            "self-pay or payment plan",
        ),
    )
    referral = attrs.evolve(
        decided(decision),  # type: ignore[arg-type]
        target=Provider("current", "Dr Out", "cardiology"),
        services=(Code.cpt("99204"), Code.cpt("78452")),
    )
    directory = MemoryDirectory(
        [
            PractitionerRole(
                "current", specialties=("207RC0000X",), network_ids=(NET,), languages=("es",)
            ),
            PractitionerRole(
                "in", specialties=("207RC0000X",), network_ids=(NET,), languages=("es",)
            ),
            PractitionerRole(
                "out", specialties=("207RC0000X",), network_ids=("x",), languages=("es",)
            ),
        ]
    )
    prices = PriceList.from_csv(io.StringIO(PRICES))
    found = alternatives(
        referral, directory, as_of=NOW, prices=prices, services=[Code.cpt("93306")]
    )
    assert found is not None
    assert [c.id for c in found.providers] == ["in"]
    assert [(s.code.code, s.price) for s in found.services] == [
        ("93350", Decimal("480")),
        ("G0463", None),
        ("93306", Decimal("610.50")),
    ]
    assert found.notes == ("an in-network specialist", "self-pay or payment plan")
    assert found.self_pay is not None
    assert (found.self_pay.total, found.self_pay.currency) == (Decimal("245.00"), "USD")
    assert [c.code for c in found.self_pay.unpriced] == ["78452"]
    assert not found.self_pay.complete
    plain = alternatives(referral, directory, as_of=NOW)
    assert plain is not None
    assert plain.self_pay is None


def test_prices_by_system() -> None:
    """A row naming a system prices only that system's code; one naming none prices any."""
    prices = PriceList.from_csv(io.StringIO(PRICES))
    assert prices.price(Code.cpt("99204")) == Decimal("245.00")
    assert prices.price(Code.hcpcs("99204")) is None
    assert prices.price(Code.snomed("93306")) == Decimal("610.50")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("code\n1,2\n", "line 1: missing column"),
        ("code,price\n,5\n", "line 2.code: empty"),
        ("code,price\nA,five\n", "line 2.price: not a number"),
        ("code,price\nA,-1\n", "line 2.price: expected a price of zero or more"),
        ("code,price\nA,1.005\n", "line 2.price: more than two decimals"),
        ("code,price\nA,NaN\n", "line 2.price: expected a price"),
        ("code,price,system\nA,1,LOINC\n", "line 2.system: not a code system"),
        ("code,price,currency\nA,1,US\n", "line 2.currency: not an ISO 4217 code"),
        ("code,price,currency\nA,1,USD\nB,1,EUR\n", "currency: one price list, one currency"),
        ("code,price\nA,1\nA,2\n", "line 3.code: listed twice"),
    ],
)
def test_bad_price_lists(source: str, message: str) -> None:
    """Each bad row is a PriceListError (a ValidationError) naming line and column."""
    with pytest.raises(PriceListError) as caught:
        PriceList.from_csv(io.StringIO(source))
    assert str(caught.value).startswith(message)


def test_a_price_list_file(tmp_path: object) -> None:
    """From a path, with a BOM and currency."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "prices.csv"
    path.write_text("\ufeffcode,price,currency\n99204,1,eur\n", encoding="utf-8")
    prices = PriceList.from_csv(path)
    assert prices.currency == "EUR"
    assert prices.estimate([Code.cpt("99204")]).complete
