"""Tools for testing code that uses referralkit, and referralkit itself.

- :class:`~referralkit.clock.FakeClock`: time that moves only when told;
- :func:`sample_request`: a complete, valid intake request for examples and tests;
- Hypothesis strategies for every model type (:func:`referrals`, :func:`patients`,
  :func:`coverages`...) and for rules (:func:`rulesets`, :func:`conditions`, :func:`facts`,
  :func:`policy_referrals`);
- ready-made property checks for policy owners: :func:`check_totality`,
  :func:`check_determinism`, :func:`check_no_conflicts`, :func:`check_monotonic_urgency`,
  :func:`check_effective_dates`.

- :func:`nppes_rows` and :func:`write_nppes`: synthetic providers in the CMS NPPES data file
  layout, for directory loads.

The strategies and checks need ``hypothesis`` (the ``test`` extra). The contract suites need
``pytest``: stores in :mod:`referralkit.testing.contract`, directories in
:mod:`referralkit.testing.directory_contract`, scheduling adapters in
:mod:`referralkit.testing.scheduling_contract`; :mod:`referralkit.testing.fhir_server` is a
FHIR scheduling server for tests (the ``scheduling`` extra).
"""

from ..clock import FakeClock
from ._checks import (
    check_determinism,
    check_effective_dates,
    check_monotonic_urgency,
    check_no_conflicts,
    check_totality,
    policy_referrals,
)
from ._directory import nppes_rows, write_nppes
from ._rules import conditions, facts, rulesets
from ._samples import sample_request
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
    urgency_assessments,
)

__all__ = [
    "STRATEGIES",
    "FakeClock",
    "actors",
    "appointments",
    "attachments",
    "authorizations",
    "check_determinism",
    "check_effective_dates",
    "check_monotonic_urgency",
    "check_no_conflicts",
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
    "rule_hits",
    "rule_traces",
    "rulesets",
    "sample_request",
    "urgency_assessments",
    "write_nppes",
]
