"""`referralkit message --db URL ID --moment M [--lang L]` prints the message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from referralkit import Actor, ReferralDesk, Role
from referralkit.cli import main
from referralkit.testing import FakeClock, sample_request

COORDINATOR = Actor("coord-1", {Role.COORDINATOR})


@pytest.fixture
def stored(tmp_path: Path) -> tuple[str, str]:
    """A SQLite store with one scheduled referral; (url, referral id)."""
    url = f"sqlite:///{tmp_path / 'referrals.db'}"
    with ReferralDesk.open(url, clock=FakeClock(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))) as d:
        referral = d.intake(COORDINATOR, sample_request())
        d.send(COORDINATOR, referral.id)
        d.accept(COORDINATOR, referral.id)
        d.schedule(COORDINATOR, referral.id, dt.datetime(2026, 1, 20, 15, tzinfo=dt.UTC))
    return url, referral.id


class TestMessageCommand:
    def test_booked_in_the_patients_language(
        self, stored: tuple[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --lang the patient's preferred language (Spanish) is used."""
        url, rid = stored
        assert main(["message", "--db", url, rid, "--moment", "booked"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("Subject: Su cita está reservada para el martes, 20 de enero")
        assert "Hola, Alex:" in out

    def test_lang_and_timezone(
        self, stored: tuple[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--lang en and --timezone give English with local times."""
        url, rid = stored
        args = ["message", "--db", url, rid, "--moment", "booked", "--lang", "en"]
        assert main([*args, "--timezone", "America/New_York"]) == 0
        out = capsys.readouterr().out
        assert "When: Tuesday, January 20, 2026 at 10:00\u202fAM" in out

    def test_coverage_html_and_delay(
        self, stored: tuple[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """'coverage' picks the decision's moment; --html prints the HTML part; a delay
        takes its cause and new date."""
        url, rid = stored
        assert main(["message", "--db", url, rid, "--moment", "coverage", "--html"]) == 0
        assert "<html" in capsys.readouterr().out
        delay = ["--moment", "delayed", "--cause", "scheduling", "--new-date", "2026-02-01"]
        assert main(["message", "--db", url, rid, *delay, "--lang", "en"]) == 0
        out = capsys.readouterr().out
        assert "The specialist does not have an open time yet." in out
        assert "Sunday, February 1, 2026" in out

    def test_fallback_is_noted_on_stderr(
        self, stored: tuple[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A language without a catalog prints English and says so on stderr."""
        url, rid = stored
        assert main(["message", "--db", url, rid, "--moment", "received", "--lang", "vi"]) == 0
        captured = capsys.readouterr()
        assert "Hello Alex," in captured.out
        assert "written in en for a reader who prefers vi" in captured.err

    @pytest.mark.parametrize(
        ("extra", "needle"),
        [
            (["--moment", "nope"], "moment"),
            (["--moment", "delayed", "--cause", "weather"], "cause"),
            (["--moment", "missed"], "appointments"),
        ],
    )
    def test_errors_exit_2(
        self,
        stored: tuple[str, str],
        capsys: pytest.CaptureFixture[str],
        extra: list[str],
        needle: str,
    ) -> None:
        """Bad moments, causes and moments the referral does not support exit 2."""
        url, rid = stored
        assert main(["message", "--db", url, rid, *extra]) == 2
        assert needle in capsys.readouterr().err

    def test_bad_date_is_a_usage_error(self, stored: tuple[str, str]) -> None:
        """A malformed --new-date is refused by the parser."""
        url, rid = stored
        assert main(["message", "--db", url, rid, "--moment", "delayed", "--new-date", "x"]) == 2
