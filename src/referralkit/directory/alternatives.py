"""Concrete alternatives when a service is not covered or the specialist is out of network.

:func:`~referralkit.directory.alternatives` answers, for a referral whose coverage decision
is ``not-covered`` or out of network (``network_status`` or the CRD reasons ``auth-out-network`` and
``out-of-network``):

- **in-network providers** of the same specialty, ranked by :func:`~referralkit.directory.match`
  with the in-network rule enforced (the referral's current target left out);
- **covered alternative services**, with their self-pay price when the list has one: the
  codes the coverage rules name in ``alternative_services`` (the decision's
  :attr:`~referralkit.model.CoverageDecision.alternative_services`). An entry of the text
  ``alternatives`` of the form ``<system URI>|<code>`` or ``cpt:<code>`` / ``hcpcs:<code>`` /
  ``snomed:<code>`` is read as a service code too, the rest is kept as ``notes``.
  ``services=`` adds codes the deployment knows to be covered alternatives;
- **self-pay** with an estimated price for the referral's services, from the deployment's
  :class:`~referralkit.directory.PriceList`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

import attrs

from ..model import Code, CodeSystem, Covered, NetworkStatus, Referral
from ..scheduling import SchedulingAdapter
from ._model import GeoPoint
from ._port import Directory
from .matching import DEFAULT_POLICY, Candidate, MatchPolicy, match
from .prices import PriceList, SelfPayEstimate

__all__ = ["Alternatives", "ServiceAlternative", "alternatives", "needs_alternatives"]

_OUT_OF_NETWORK_REASONS: Final = frozenset({"auth-out-network", "out-of-network"})
_PREFIXES: Final = {
    "cpt": CodeSystem.CPT,
    "hcpcs": CodeSystem.HCPCS,
    "snomed": CodeSystem.SNOMED,
}


@attrs.frozen
class ServiceAlternative:
    """A covered service to offer instead, and its self-pay price when listed."""

    code: Code
    price: Decimal | None = None


@attrs.frozen
class Alternatives:
    """What to offer the patient instead: in-network providers, covered services, self-pay.

    ``notes`` are the coverage decision's alternatives that are not service codes (text for
    the coordinator, such as "payment plan"); ``why`` says what made alternatives needed.
    """

    why: str
    providers: tuple[Candidate, ...] = ()
    services: tuple[ServiceAlternative, ...] = ()
    self_pay: SelfPayEstimate | None = None
    notes: tuple[str, ...] = ()


def needs_alternatives(referral: Referral) -> str | None:
    """Why ``referral`` needs alternatives (``"not-covered"``, ``"out-of-network"``), or None."""
    decision = referral.coverage_decision
    if decision is None:
        return None
    if decision.covered is Covered.NOT_COVERED:
        return "not-covered"
    if (
        decision.network_status is NetworkStatus.OUT_OF_NETWORK
        or decision.reason in _OUT_OF_NETWORK_REASONS
    ):
        return "out-of-network"
    return None


def _parse(entry: str) -> Code | None:
    text = entry.strip()
    if "|" in text:
        system, _, code = text.partition("|")
        if ("://" in system or system.startswith("urn:")) and code.strip():
            return Code(system.strip(), code.strip())
        return None
    prefix, sep, code = text.partition(":")
    known = _PREFIXES.get(prefix.strip().lower())
    if sep and known is not None and code.strip() and " " not in code.strip():
        return Code(known, code.strip())
    return None


def alternatives(
    referral: Referral,
    directory: Directory,
    *,
    as_of: dt.datetime,
    prices: PriceList | None = None,
    services: Iterable[Code] = (),
    limit: int = 5,
    policy: MatchPolicy = DEFAULT_POLICY,
    scheduler: SchedulingAdapter | None = None,
    origin: GeoPoint | None = None,
    specialty: str | None = None,
) -> Alternatives | None:
    """The alternatives for ``referral``, or None when its decision needs none (covered,
    in network, or not decided yet). See the module for what each part is.

    >>> import datetime as dt, io, attrs
    >>> from referralkit import CoverageDecision, Covered, NetworkStatus
    >>> from referralkit.directory import MemoryDirectory, PractitionerRole, PriceList
    >>> from referralkit.testing import sample_request
    >>> now = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    >>> referral = attrs.evolve(sample_request().referral("ref-1", now), coverage_decision=
    ...     CoverageDecision(Covered.NOT_COVERED, reason="auth-out-network",
    ...                      network_status=NetworkStatus.OUT_OF_NETWORK,
    ...                      alternatives=("an in-network specialist", "cpt:93350")))
    >>> directory = MemoryDirectory([PractitionerRole("r1", name="Dr In Network",
    ...     specialties=("207RC0000X",), network_ids=("acme-hmo-west",), languages=("es",))])
    >>> prices = PriceList.from_csv(io.StringIO("code,price\\n99204,245\\n93350,480\\n"))
    >>> found = alternatives(referral, directory, as_of=now, prices=prices)
    >>> found.why, [c.name for c in found.providers], found.notes
    ('not-covered', ['Dr In Network'], ('an in-network specialist',))
    >>> [(s.code.code, s.price) for s in found.services]
    [('93350', Decimal('480'))]
    """
    why = needs_alternatives(referral)
    if why is None:
        return None
    decision = referral.coverage_decision
    assert decision is not None  # needs_alternatives checked it
    codes: list[Code] = []
    notes: list[str] = []
    codes.extend(decision.alternative_services)
    for entry in decision.alternatives:
        parsed = _parse(entry)
        if parsed is None:
            notes.append(entry)
        else:
            codes.append(parsed)
    codes.extend(services)
    unique = list(dict.fromkeys((c.system, c.code) for c in codes))
    offered = tuple(
        ServiceAlternative(
            Code(system, code),
            None if prices is None else prices.price(Code(system, code)),
        )
        for system, code in unique
    )
    strict = attrs.evolve(policy, require_in_network=True)
    current = referral.target.id if referral.target is not None else None
    ranked = match(
        referral,
        directory,
        as_of=as_of,
        limit=limit + 1,
        policy=strict,
        scheduler=scheduler,
        origin=origin,
        specialty=specialty,
        excluded=0,  # only the ranked are offered
    ).ranked
    providers = tuple(
        c for c in ranked if c.network is NetworkStatus.IN_NETWORK and c.id != current
    )[:limit]
    estimate = prices.estimate(referral.services) if prices is not None else None
    return Alternatives(why, providers, offered, estimate, tuple(notes))
