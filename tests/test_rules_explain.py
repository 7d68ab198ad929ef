"""``referralkit rules explain`` and the PHI promise of explanations and replays."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from referralkit import (
    Actor,
    Code,
    ContactPoint,
    ContactSystem,
    Coverage,
    FakeClock,
    IntakeRequest,
    Patient,
    PlanType,
    Priority,
    Provider,
    ReferralDesk,
    Role,
    cli,
    open_store,
)
from referralkit.testing import sample_request

COORDINATOR = Actor("coord-1", {Role.COORDINATOR})
START = dt.datetime(2026, 1, 5, 14, 0, tzinfo=dt.UTC)

# as in test_phi_canary: every canary shares a prefix; the birth date shows as 1901
NEEDLES = ("CANARY", "1901", "pregnant=True", '"pregnant": true')


def canary_request() -> IntakeRequest:
    """A request with a canary in each PHI field the rules read or a text could show."""
    return IntakeRequest(
        source_id="REQ-C1",
        patient=Patient(
            id="CANARY-PATIENT-ID",
            mrn="CANARY-MRN",
            given_name="CANARY-GIVEN",
            family_name="CANARY-FAMILY",
            birth_date=dt.date(1901, 2, 3),
            pregnant=True,
            contacts=(ContactPoint(ContactSystem.PHONE, "CANARY-CONTACT"),),
        ),
        referring=Provider("prov-pcp", "Riverside", "family-medicine", networks=("net-a",)),
        target=Provider("prov-card", "Harbor", "cardiology", networks=("net-a",)),
        specialty="cardiology",
        reason="CANARY-REASON",
        diagnoses=(Code.icd10("CANARY-DX", "CANARY-DX-TEXT"),),
        services=(Code.cpt("99204", "CANARY-SERVICE-TEXT"),),
        priority=Priority.ROUTINE,
        coverage=Coverage(
            "CANARY-COVERAGE-ID",
            "Acme Health",
            "Acme HMO",
            PlanType.HMO,
            member_id="CANARY-MEMBER",
            period_start=dt.date(2026, 1, 1),
            period_end=dt.date(2026, 12, 31),
            networks=("net-a",),
        ),
    )


def assert_clean(text: str, where: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, f"PHI canary {needle!r} leaked in {where}: {text[:300]}"


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, str]:
    """A SQLite store with one sent referral; its URL and the referral's id."""
    url = f"sqlite:///{tmp_path / 'referrals.db'}"
    with ReferralDesk(open_store(url), clock=FakeClock(START)) as desk:
        made = desk.intake(COORDINATOR, sample_request())
        desk.send(COORDINATOR, made.id)
    return url, made.id


class TestRulesExplain:
    def test_prefix_shows_why(self, db: tuple[str, str]) -> None:
        """The first characters of an id are enough; the text names the policy digest, the
        rules that fired and why the others did not."""
        url, referral_id = db
        status, out, err = run_main(["rules", "explain", "--db", url, referral_id[:6]])
        assert (status, err) == (0, "")
        assert out.startswith(f"referral {referral_id}: why it got its decisions")
        assert "hmo-specialist-needs-referral: fired" in out
        assert "suspected-cancer: no match (diagnoses any_prefix ['C', 'D0'] is false)" in out
        assert out.count("decided again with the stored rules: the same") == 2

    def test_as_of_replays_and_json(self, db: tuple[str, str]) -> None:
        """--as-of adds the replay with the policy in use then; --json prints both as data."""
        url, referral_id = db
        status, out, _ = run_main(
            ["rules", "explain", "--db", url, referral_id, "--as-of", "2026-01-06"]
        )
        assert status == 0
        assert "replayed as of 2026-01-06 00:00 UTC" in out
        status, out, _ = run_main(["rules", "explain", "--db", url, referral_id, "--json"])
        data = json.loads(out)
        assert status == 0
        assert data["replay"] is None
        coverage = data["explanation"]["coverage"]
        assert coverage["reproduced"] is True
        assert len(coverage["provenance"]["policy"]) == 64
        assert {"rule_id", "outcome", "failed"} <= set(coverage["rules"][0])

    def test_read_only(self, db: tuple[str, str], tmp_path: Path) -> None:
        """Explaining changes no referral: the only write is the read's access-log record."""
        url, referral_id = db
        with contextlib.closing(open_store(url)) as store:
            before = list(store.export())
            logged = len(store.access_records())
        run_main(["rules", "explain", "--db", url, referral_id, "--as-of", "2026-01-06"])
        with contextlib.closing(open_store(url)) as store:
            assert list(store.export()) == before
            assert len(store.access_records()) > logged

    @pytest.mark.parametrize("which", ["missing-store", "unknown-id"])
    def test_exit_2(self, db: tuple[str, str], tmp_path: Path, which: str) -> None:
        """A store that does not exist, or an id that matches no referral: exit 2, a one-line
        error, nothing created."""
        url, _ = db
        if which == "missing-store":
            url = f"sqlite:///{tmp_path / 'nope.db'}"
        status, out, err = run_main(["rules", "explain", "--db", url, "ffff"])
        assert status == 2
        assert out == ""
        assert err.startswith("referralkit: error: ")
        assert not (tmp_path / "nope.db").exists()


def test_explanations_and_replays_show_no_phi(tmp_path: Path) -> None:
    """With a canary in every PHI field of the referral, neither the text nor the repr of an
    explanation or a replay (nor the CLI's output, text or JSON) shows one."""
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    with ReferralDesk(open_store(url), clock=FakeClock(START)) as desk:
        made = desk.intake(COORDINATOR, canary_request())
        desk.send(COORDINATOR, made.id)
        explained = desk.explain(COORDINATOR, made.id)
        replayed = desk.replay(COORDINATOR, made.id, as_of=START + dt.timedelta(days=1))
        assert explained.urgency is not None
        # the rules that read the PHI did run
        assert "pregnancy: fired" in str(explained)
        assert "very-old: fired" in str(explained)
        for value in (explained, replayed):
            assert_clean(str(value), "str")
            assert_clean(repr(value), "repr")
    for extra in ([], ["--json"], ["--as-of", "2026-01-06"]):
        _, out, _ = run_main(["rules", "explain", "--db", url, made.id, *extra])
        assert_clean(out, f"rules explain {extra}")
