"""Shared fixtures: a fake clock, a memory store, a desk over both, actors, and a driver that
walks a referral to any lifecycle state through the desk's public operations.

Hypothesis profiles: ``dev`` (default) keeps the local run quick; ``ci`` (selected when the
environment has ``CI=true``) runs more examples. ``REFERRALKIT_HYPOTHESIS_PROFILE`` names one
explicitly (nox's Python 3.13 session uses ``dev``: the deeper search runs once, on 3.11).
Neither has a deadline: timings on shared CI runners vary too much for one to mean anything.
``mutation`` (``nox -s mutation``) is ``dev`` derandomized, so a mutant is killed or not the
same way on every run, and it lets one test run in the process more than once (mutmut runs
the suite for its statistics, then again for each mutant).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from referralkit import (
    Actor,
    Code,
    IntakeRequest,
    MemoryStore,
    Referral,
    ReferralDesk,
    Role,
    Status,
)
from referralkit.testing import FakeClock, sample_request

# helper modules beside the tests (phi_canaries.py: the canary walk the PHI tests share) are
# imported by name from any test directory
TESTS = str(Path(__file__).parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - only the snippets session, which has no test extra
    pass  # it runs tests/test_examples.py alone, which uses neither Hypothesis nor these
else:
    settings.register_profile(
        "dev",
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "ci",
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )
    settings.register_profile(
        "mutation",
        max_examples=10,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    )
    settings.load_profile(
        os.environ.get("REFERRALKIT_HYPOTHESIS_PROFILE")
        or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under mutmut (``nox -s mutation``), a mutant's tests run fastest first.

    mutmut stops at the first failure (``-x``), so the order decides what a killed mutant
    costs: the durations come from its statistics run (``mutmut-stats.json`` in ``mutants/``,
    its working directory). Any other run keeps the collection order.
    """
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    try:
        with open("mutmut-stats.json", encoding="utf-8") as file:
            durations: dict[str, float] = json.load(file)["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))


START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
"""Where the fake clock starts: a Monday inside the sample coverage period."""

# The desk operations (in order) that take a fresh draft to each status.
PATHS: dict[Status, tuple[str, ...]] = {
    Status.DRAFT: (),
    Status.RECEIVED: ("send",),
    Status.ACCEPTED: ("send", "accept"),
    Status.ON_HOLD: ("send", "hold"),
    Status.SCHEDULED: ("send", "accept", "schedule"),
    Status.NO_SHOW: ("send", "accept", "schedule", "record_no_show"),
    Status.APPOINTMENT_CANCELLED: ("send", "accept", "schedule", "cancel_appointment"),
    Status.SEEN: ("send", "accept", "schedule", "record_visit"),
    Status.CANCELLATION_REQUESTED: ("send", "request_cancellation"),
    Status.DECLINED: ("send", "decline"),
    Status.CANCELLED: ("send", "request_cancellation", "confirm_cancellation"),
    Status.COMPLETED: ("send", "accept", "complete"),
    Status.FAILED: ("send", "fail"),
    Status.ENTERED_IN_ERROR: ("mark_entered_in_error",),
}


@attrs.define
class Driver:
    """Walks referrals through the desk: ``driver.to(Status.SEEN)`` returns a referral there."""

    desk: ReferralDesk
    clock: FakeClock
    actor: Actor
    _sources: Any = attrs.field(factory=lambda: itertools.count(1))

    def request(self, *, complete: bool = True, **changes: Any) -> IntakeRequest:
        """A fresh sample request (unique source id) with ``changes`` applied."""
        request = sample_request(f"REQ-{next(self._sources):04d}", complete=complete)
        return attrs.evolve(request, **changes)

    def intake(self, request: IntakeRequest | None = None, **changes: Any) -> Referral:
        if request is not None:
            return self.desk.intake(self.actor, attrs.evolve(request, **changes))
        return self.desk.intake(self.actor, self.request(**changes))

    def step(self, referral_id: str, operation: str) -> Referral:
        """Perform one lifecycle operation with plausible arguments."""
        desk, actor = self.desk, self.actor
        start = self.clock.now() + dt.timedelta(days=7)
        calls: dict[str, Callable[[], Referral]] = {
            "send": lambda: desk.send(actor, referral_id),
            "accept": lambda: desk.accept(actor, referral_id),
            "decline": lambda: desk.decline(actor, referral_id, "outside our scope"),
            "hold": lambda: desk.hold(actor, referral_id, "waiting for records"),
            "resume": lambda: desk.resume(actor, referral_id),
            "schedule": lambda: desk.schedule(actor, referral_id, start),
            "reschedule": lambda: desk.reschedule(actor, referral_id, start),
            "record_no_show": lambda: desk.record_no_show(actor, referral_id),
            "cancel_appointment": lambda: desk.cancel_appointment(actor, referral_id),
            "record_visit": lambda: desk.record_visit(actor, referral_id),
            "add_interim_note": lambda: desk.add_interim_note(actor, referral_id, "labs due"),
            "complete": lambda: desk.complete(actor, referral_id, "seen; plan agreed"),
            "request_cancellation": lambda: desk.request_cancellation(
                actor, referral_id, "patient moved away"
            ),
            "confirm_cancellation": lambda: desk.confirm_cancellation(actor, referral_id),
            "fail": lambda: desk.fail(actor, referral_id, "patient unreachable"),
            "mark_entered_in_error": lambda: desk.mark_entered_in_error(
                actor, referral_id, "duplicate entry"
            ),
        }
        return calls[operation]()

    def to(self, status: Status, request: IntakeRequest | None = None, **changes: Any) -> Referral:
        """A new referral taken to ``status`` along :data:`PATHS`."""
        referral = self.intake(request, **changes)
        for operation in PATHS[status]:
            referral = self.step(referral.id, operation)
        assert referral.status is status
        return referral


@pytest.fixture(scope="session", autouse=True)
def _empty_rule_caches() -> None:
    """Start every session with the process-wide caches of ``referralkit.rules`` empty.

    In a fresh process they are empty already. Under mutmut they are not: each mutant's tests
    run in a process forked from the one that ran the whole suite unmutated, so every policy,
    rule hit and reason cached there would be served to the mutant, and so would the durable
    runtime with every ruleset already compiled and registered on its host: a mutation in the
    code that fills them (rebuilding a stored policy, the shipped policies, a hit, compiling a
    ruleset for durable) could never be seen. Clearing them once per session, not per test,
    keeps what the caches do within a run under test.
    """
    from referralkit.rules import durable, policies, provenance

    provenance._POLICIES.clear()
    policies._HITS.clear()
    policies._REASONS.clear()
    policies.default_policies.cache_clear()
    durable._RUNTIME = None  # a fresh host on first use, as in a new process


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def new_id() -> Callable[[], str]:
    """Deterministic ids: ``id-0001``, ``id-0002``..."""
    counter = itertools.count(1)
    return lambda: f"id-{next(counter):04d}"


@pytest.fixture
def desk(store: MemoryStore, clock: FakeClock, new_id: Callable[[], str]) -> ReferralDesk:
    return ReferralDesk(store, clock=clock, new_id=new_id)


@pytest.fixture
def coordinator() -> Actor:
    return Actor("coord-1", {Role.COORDINATOR})


@pytest.fixture
def auditor() -> Actor:
    return Actor("audit-1", {Role.AUDITOR})


@pytest.fixture
def driver(desk: ReferralDesk, clock: FakeClock, coordinator: Actor) -> Driver:
    return Driver(desk, clock, coordinator)


@pytest.fixture
def mri() -> Code:
    """An advanced-imaging service (MRI brain): BasicCoverage requires prior authorization."""
    return Code.cpt("70551", "MRI brain without contrast")
