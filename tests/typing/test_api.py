"""The type-checked API usage file also has to run."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import referralkit as rk

API: dict[str, Any] = runpy.run_path(str(Path(__file__).with_name("api.py")))


class TestTypedApiUsage:
    def test_walk_one_referral(self) -> None:
        """The typical path from intake to completed runs as written."""
        assert API["walk_one_referral"]().status is rk.Status.COMPLETED

    def test_handle_errors_reports_the_guard(self) -> None:
        """The error-handling example sees a GuardError for an incomplete intake."""
        from referralkit.testing import sample_request

        desk = rk.ReferralDesk(rk.open_store("memory://"), clock=rk.FakeClock())
        actor = rk.Actor("c", {rk.Role.COORDINATOR})
        referral = desk.intake(actor, sample_request(complete=False))
        assert API["handle_errors"](desk, actor, referral.id).startswith("not now")
        desk.send(actor, referral.id)
        assert API["handle_errors"](desk, actor, referral.id) == (
            "refused: intake incomplete, missing: medical-history"
        )

    def test_custom_policy_desk(self) -> None:
        """A structural UrgencyAssessor plugs into the desk."""
        desk = API["custom_desk"]()
        assert isinstance(desk.urgency, rk.UrgencyAssessor)
        assert API["transition_table_checks"]() == sorted(rk.TABLE.events_from(rk.Status.RECEIVED))

    def test_why_this_decision(self) -> None:
        """The provenance example names the rule that decided coverage."""
        from referralkit.testing import sample_request

        desk = rk.ReferralDesk(rk.open_store("memory://"), clock=rk.FakeClock())
        actor = rk.Actor("c", {rk.Role.COORDINATOR})
        referral = desk.intake(actor, sample_request())
        assert API["why_this_decision"](desk, actor, referral.id) == [
            "hmo-specialist-needs-referral"
        ]
