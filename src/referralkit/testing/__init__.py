"""Tools for testing code that uses referralkit, and referralkit itself.

- :class:`~referralkit.clock.FakeClock`: time that moves only when told;
- :func:`sample_request`: a complete, valid intake request for examples and tests;
- Hypothesis strategies for every model type (:func:`referrals`, :func:`patients`,
  :func:`coverages`...), which need ``hypothesis`` (the ``test`` extra).
"""

from __future__ import annotations

from ..clock import FakeClock
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
    "codes",
    "communications",
    "contact_points",
    "coverage_decisions",
    "coverages",
    "follow_ups",
    "intake_requests",
    "patients",
    "providers",
    "referral_events",
    "referrals",
    "rule_hits",
    "rule_traces",
    "sample_request",
    "urgency_assessments",
]
