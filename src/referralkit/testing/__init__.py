"""Tools for testing code that uses referralkit, and referralkit itself.

- :class:`~referralkit.clock.FakeClock`: time that moves only when told;
- :func:`sample_request`: a complete, valid intake request for examples and tests;
- Hypothesis strategies for every model type (:func:`referrals`, :func:`patients`,
  :func:`coverages`...) and for rules (:func:`rulesets`, :func:`conditions`, :func:`facts`,
  :func:`policy_referrals`);
- :func:`referrals_for`: referrals drawn from the rules under test (the values they name,
  the values just beside them, noise), :func:`sample_referrals` (the same, seeded, without
  Hypothesis), and :func:`rule_coverage`, how often each rule matched;
- ready-made property checks for policy owners, which fail with a :class:`CheckFailedError`
  holding a :class:`Counterexample` you can paste into a test: :func:`check_totality`,
  :func:`check_determinism`, :func:`check_no_conflicts`, :func:`check_monotonic_urgency`,
  :func:`check_effective_dates`, :func:`check_rules_fire`, :func:`check_agreement`, and
  :func:`run_checks` for all of them (``referralkit rules test``).

- :func:`nppes_rows` and :func:`write_nppes`: synthetic providers in the CMS NPPES data file
  layout, for directory loads.

:class:`~referralkit.clock.FakeClock`, :func:`sample_request`, :func:`nppes_rows` and
:func:`write_nppes` work with referralkit alone. The strategies and checks need
``hypothesis``, which comes with the ``test`` extra (``pip install "referralkit[test]"``, or
``pip install ".[test]"`` in a checkout); they are imported when first used, and without
``hypothesis`` using one raises an :class:`ImportError` that says so. The contract suites need
``pytest``: stores in :mod:`referralkit.testing.contract`, directories in
:mod:`referralkit.testing.directory_contract`, scheduling adapters in
:mod:`referralkit.testing.scheduling_contract`; :mod:`referralkit.testing.fhir_server` is a
FHIR scheduling server for tests (the ``scheduling`` extra).
"""

# No "from __future__ import annotations" and no names imported from typing: dir() of this
# module (which the tests compare with __all__) lists only public names and modules.
import importlib
import typing

from ..clock import FakeClock
from ._directory import nppes_rows, write_nppes
from ._samples import sample_request

if typing.TYPE_CHECKING:  # what the lazy names below are, for type checkers and readers
    from ._checks import (
        CheckFailedError,
        CheckResult,
        Counterexample,
        check_agreement,
        check_determinism,
        check_effective_dates,
        check_monotonic_urgency,
        check_no_conflicts,
        check_rules_fire,
        check_totality,
        policy_referrals,
        run_checks,
    )
    from ._derive import RuleCoverage, referrals_for, rule_coverage, sample_referrals
    from ._rules import conditions, facts, rulesets
    from ._strategies import (
        STRATEGIES,
        actors,
        appointments,
        attachments,
        authorizations,
        codes,
        communications,
        contact_points,
        coverage_decisions,
        coverages,
        follow_ups,
        intake_requests,
        patients,
        providers,
        referral_events,
        referrals,
        rule_hits,
        rule_traces,
        survey_responses,
        urgency_assessments,
    )

__all__ = [
    "STRATEGIES",
    "CheckFailedError",
    "CheckResult",
    "Counterexample",
    "FakeClock",
    "RuleCoverage",
    "actors",
    "appointments",
    "attachments",
    "authorizations",
    "check_agreement",
    "check_determinism",
    "check_effective_dates",
    "check_monotonic_urgency",
    "check_no_conflicts",
    "check_rules_fire",
    "check_totality",
    "codes",
    "communications",
    "conditions",
    "contact_points",
    "coverage_decisions",
    "coverages",
    "facts",
    "follow_ups",
    "intake_requests",
    "nppes_rows",
    "patients",
    "policy_referrals",
    "providers",
    "referral_events",
    "referrals",
    "referrals_for",
    "rule_coverage",
    "rule_hits",
    "rule_traces",
    "rulesets",
    "run_checks",
    "sample_referrals",
    "sample_request",
    "survey_responses",
    "urgency_assessments",
    "write_nppes",
]

# The names that need hypothesis, and the private module that defines each. Importing them on
# first use keeps ``from referralkit.testing import FakeClock, sample_request`` (the README's
# first import) working after a plain ``pip install .``.
_CHECKS = (
    "CheckFailedError",
    "CheckResult",
    "Counterexample",
    "check_agreement",
    "check_determinism",
    "check_effective_dates",
    "check_monotonic_urgency",
    "check_no_conflicts",
    "check_rules_fire",
    "check_totality",
    "policy_referrals",
    "run_checks",
)
_DERIVE = ("RuleCoverage", "referrals_for", "rule_coverage", "sample_referrals")
_RULES = ("conditions", "facts", "rulesets")
_EAGER = ("FakeClock", "nppes_rows", "sample_request", "write_nppes")
_LAZY: dict[str, str] = (
    {name: "_strategies" for name in __all__ if name not in _EAGER}
    | dict.fromkeys(_CHECKS, "_checks")
    | dict.fromkeys(_RULES, "_rules")
    | dict.fromkeys(_DERIVE, "_derive")
)


def __getattr__(name: str) -> typing.Any:
    """Import a strategy or check on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "hypothesis":
            raise
        raise ModuleNotFoundError(
            f"referralkit.testing.{name} needs hypothesis, which comes with referralkit's "
            "'test' extra: pip install '.[test]' in a checkout of referralkit "
            "(or pip install hypothesis)",
            name="hypothesis",
        ) from None
    value = getattr(module, name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
