"""The command line (demo, lifecycle, errors) and the KPI summary it prints."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import errno
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import attrs
import pytest

import referralkit
from referralkit import (
    TABLE,
    Actor,
    AttachmentKind,
    Code,
    FakeClock,
    MemoryStore,
    ReferralDesk,
    ReferralKitError,
    Role,
    Status,
    ValidationError,
    analytics,
    cli,
    synth,
)
from referralkit.lifecycle import mermaid
from referralkit.storage import open_store
from referralkit.testing import sample_request
from referralkit.worklist import ActionKind, Flag

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
ROW = re.compile(
    r"^\s*(?P<rank>\d+)\s+(?P<id>[0-9a-f]{8})\s+(?P<specialty>[a-z-]+)\s+"
    r"(?P<priority>routine|urgent|asap|stat)\s+(?P<status>[a-z_]+)\s+"
    r"(?P<clock>[a-z_]+|-)\s+(?P<due>\d{4}-\d{2}-\d{2}|-)\s+(?P<left>-?\d+d|-)\s+"
    r"(?P<next>[a-z_]+|-)(?:\s+(?P<flags>.*))?$"
)


def run_main(argv: list[str]) -> tuple[int, str, str, float]:
    """Run ``main`` with redirected streams: status, stdout, stderr, seconds."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue(), time.perf_counter() - started


def worklist_rows(stdout: str) -> list[dict[str, str]]:
    """The worklist rows of a demo's output, parsed."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Worklist"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        match = ROW.match(line)
        assert match, line
        rows.append(match.groupdict())
    return rows


@pytest.fixture(scope="module", autouse=True)
def _demo_files_in_a_temporary_directory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """The default demo writes referralkit-demo.db in the current directory: not ours."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("demo"))
    yield
    os.chdir(here)


@pytest.fixture(scope="module")
def default_demo() -> tuple[int, str, str, float]:
    """``referralkit demo`` with every default, run once."""
    return run_main(["demo"])


class TestDemo:
    """referralkit demo: worklist and KPIs from a simulated population."""

    def test_default_run(self, default_demo: tuple[int, str, str, float]) -> None:
        """Exit 0, a Worklist heading, the KPI summary (its speed is a benchmark's business)."""
        status, stdout, stderr, _ = default_demo
        assert status == 0
        assert "Traceback" not in stderr
        assert "\nWorklist: top 20 of " in stdout
        assert "KPI summary" in stdout
        for label in (
            "completion rate",
            "median time to appointment",
            "median time to schedule",
            "overdue",
            "no-show rate",
            "closed loop",
            "prior authorization",
            "by status",
        ):
            assert label in stdout, label
        assert "300 referral requests, 6 simulated weeks" in stdout

    def test_worklist_columns_and_size(self, default_demo: tuple[int, str, str, float]) -> None:
        """Twenty ranked rows with id, specialty, priority, status, due, waiting, flags."""
        _, stdout, _, _ = default_demo
        assert "rank  referral  specialty" in stdout
        rows = worklist_rows(stdout)
        assert [int(r["rank"]) for r in rows] == list(range(1, 21))
        assert all(r["specialty"] in synth.SPECIALTIES for r in rows)
        flags = {f for r in rows for f in (r["flags"] or "").split(", ") if f}
        assert flags <= {f.value for f in Flag}
        assert "breached" in flags
        assert {r["next"] for r in rows} <= {k.value for k in ActionKind}

    def test_worklist_order_is_most_at_risk_first(
        self, default_demo: tuple[int, str, str, float]
    ) -> None:
        """Breached rows come first (negative days left), each with a next action."""
        _, stdout, _, _ = default_demo
        rows = worklist_rows(stdout)
        breached = ["breached" in (r["flags"] or "") for r in rows]
        assert breached == sorted(breached, reverse=True)
        assert rows[0]["left"].startswith("-")
        assert all(r["next"] != "-" for r in rows)

    def test_full_worklist_order(self) -> None:
        """With every open referral listed, breached ones lead and each is listed once."""
        status, stdout, _, _ = run_main(["demo", "--count", "120", "--top", "500"])
        assert status == 0
        rows = worklist_rows(stdout)
        breached = ["breached" in (r["flags"] or "") for r in rows]
        assert breached == sorted(breached, reverse=True)
        assert len({r["id"] for r in rows}) == len(rows)
        assert f"Worklist: top {len(rows)} of {len(rows)} open referrals" in stdout

    def test_audit_summary_and_ids_to_look_closer(self, tmp_path: Path) -> None:
        """The demo prints an audit summary and commands whose ids the show command takes."""
        url = f"sqlite:///{tmp_path / 'demo.db'}"
        status, stdout, _, _ = run_main(["demo", "--count", "60", "--db", url])
        assert status == 0
        assert re.search(r"\nAudit: \d+ finding\(s\) in the records\n", stdout)
        first = worklist_rows(stdout)[0]["id"]
        command = next(line for line in stdout.splitlines() if "referralkit show" in line)
        assert command.split()[1:4] == ["show", first, "--db"]
        status, shown, _, _ = run_main(command.split()[1:])
        assert status == 0
        assert shown.startswith(f"referral {first}")

    def test_deterministic(self, default_demo: tuple[int, str, str, float]) -> None:
        """The same seed prints the same output; another seed something else."""
        _, stdout, _, _ = default_demo
        assert run_main(["demo"])[1] == stdout
        assert run_main(["demo", "--seed", "8"])[1] != stdout

    def test_no_phi_in_output(self, default_demo: tuple[int, str, str, float]) -> None:
        """No name, record number, member id, contact or birth date of the population."""
        _, stdout, stderr, _ = default_demo
        output = stdout + stderr
        for request in synth.population(300, seed=7):
            patient = request.patient
            assert patient.family_name not in output
            assert patient.given_name not in output
            assert patient.mrn not in output
            assert patient.birth_date.isoformat() not in output
            for contact in patient.contacts:
                assert contact.value not in output
            if request.coverage is not None and request.coverage.member_id:
                assert request.coverage.member_id not in output
        assert "SYN-" not in output

    def test_options(self) -> None:
        """--count, --seed, --weeks and --top shape the run."""
        status, stdout, _, _ = run_main(
            ["demo", "--count", "40", "--seed", "3", "--weeks", "2", "--top", "5"]
        )
        assert status == 0
        assert "40 referral requests, 2 simulated weeks from 2026-01-05 to 2026-01-19" in stdout
        assert "(seed 3)" in stdout
        assert len(worklist_rows(stdout)) == 5

    def test_empty_population(self) -> None:
        """--count 0 prints an empty worklist and n/a rates."""
        status, stdout, _, _ = run_main(["demo", "--count", "0"])
        assert status == 0
        assert "Worklist: 0 of 0 open referrals" in stdout
        assert worklist_rows(stdout) == []
        assert "completion rate             n/a" in stdout

    def test_store_url_named_in_output(self) -> None:
        """The store is named; the default is the demo's own SQLite file."""
        assert cli.DEFAULT_DB == "sqlite:///referralkit-demo.db"
        _, stdout, _, _ = run_main(["demo", "--count", "3", "--db", "memory://"])
        assert "store memory://" in stdout

    def test_default_file_is_replaced_on_every_run(self) -> None:
        """Running the demo twice gives the same output: the default file starts afresh."""
        first = run_main(["demo", "--count", "12"])
        second = run_main(["demo", "--count", "12"])
        assert first[0] == second[0] == 0
        assert first[1] == second[1]
        assert os.path.exists("referralkit-demo.db")

    def test_refuses_a_store_that_holds_referrals(self, tmp_path: Path) -> None:
        """An explicit store with referrals in it is refused, not simulated on top of."""
        url = f"sqlite:///{tmp_path / 'mine.db'}"
        assert run_main(["demo", "--count", "3", "--db", url])[0] == 0
        status, _, stderr, _ = run_main(["demo", "--count", "3", "--db", url])
        assert status == 2
        assert "already holds referrals" in stderr


@pytest.fixture(scope="class")
def demo_messages(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """A 60-referral demo in a SQLite file of its own: stdout, database, outbox."""
    folder = tmp_path_factory.mktemp("messages")
    database = folder / "clinic.db"
    status, stdout, stderr, _ = run_main(["demo", "--count", "60", "--db", f"sqlite:///{database}"])
    assert status == 0, stderr
    return stdout, database, folder / "clinic-outbox"


class TestDemoMessages:
    """The demo tells patients where their referral stands, through the desk and an outbox."""

    def test_prints_one_english_and_one_spanish_message(
        self, demo_messages: tuple[str, Path, Path]
    ) -> None:
        """After the KPIs: the outbox, then a message in English and one in Spanish."""
        stdout, _, outbox = demo_messages
        assert f"Outbox: 17 patient messages written to {outbox}" in stdout
        assert stdout.index("KPI summary") < stdout.index("Outbox:")
        english = stdout[stdout.index("English message (") : stdout.index("Spanish message (")]
        spanish = stdout[stdout.index("Spanish message (") :]
        assert "English message (booked, referral " in english
        assert "  Subject: Your visit is booked for Tuesday, February 17, 2026" in english
        assert "Hello [first name]," in english
        assert "  Subject: Recibimos su remisión" in spanish
        assert "Hola, [first name]:" in spanish

    def test_outbox_files_are_the_messages_sent(
        self, demo_messages: tuple[str, Path, Path]
    ) -> None:
        """One file per message in the folder beside the database, e-mail in the patient's
        language; each is recorded on its referral as an outbound communication."""
        _, database, outbox = demo_messages
        files = sorted(outbox.glob("*.eml")) + sorted(outbox.glob("*.sms.txt"))
        assert len(files) == 17
        languages = set()
        for path in outbox.glob("*.eml"):
            with path.open("rb") as file:
                mail = email.message_from_binary_file(file, policy=email.policy.default)
            languages.add(mail["Content-Language"])
        assert languages == {"en", "es"}
        with open_store(f"sqlite:///{database}") as store:
            sent = [
                c
                for r in store.query()
                for c in r.communications
                if c.summary is not None
                and c.summary.endswith(" message sent in " + str(c.language))
            ]
        assert len(sent) == 17
        assert {c.direction.value for c in sent} == {"outbound"}

    def test_no_patient_to_write_to(self) -> None:
        """An empty population sends nothing and says there was nobody to write to."""
        status, stdout, _, _ = run_main(["demo", "--count", "0", "--db", "memory://"])
        assert status == 0
        assert "Outbox: 0 patient messages written to referralkit-demo-outbox" in stdout
        assert "(no English-speaking patient to write to in this population)" in stdout
        assert "(no Spanish-speaking patient to write to in this population)" in stdout

    def test_default_outbox_starts_afresh(self) -> None:
        """With the default database the outbox holds the last run's messages only."""
        run_main(["demo", "--count", "40"])
        status, stdout, _, _ = run_main(["demo", "--count", "40", "--seed", "8"])
        assert status == 0
        written = int(re.search(r"Outbox: (\d+) patient messages", stdout)[1])  # type: ignore[index]
        outbox = Path("referralkit-demo-outbox")
        assert len([*outbox.glob("*.eml"), *outbox.glob("*.sms.txt")]) == written

    def test_no_message_for_a_draft_or_a_closed_referral(self) -> None:
        """A draft was not sent yet and a closed referral is over: nothing to tell; a
        referral received without a coverage decision is told it was received."""
        received = attrs.evolve(sample_request().referral("r-1", START), status=Status.RECEIVED)
        assert cli._demo_moment(attrs.evolve(received, status=Status.DRAFT)) is None
        assert cli._demo_moment(attrs.evolve(received, status=Status.COMPLETED)) is None
        assert cli._demo_moment(received) == "received"

    @pytest.mark.parametrize(
        ("url", "folder"),
        [
            ("sqlite:///clinic.db", Path("clinic-outbox")),
            ("sqlite:////srv/data/clinic.db", Path("/srv/data/clinic-outbox")),
            ("sqlite:///:memory:", Path("referralkit-demo-outbox")),
            ("memory://", Path("referralkit-demo-outbox")),
            ("postgresql://localhost/test", Path("referralkit-demo-outbox")),
        ],
    )
    def test_outbox_folder(self, url: str, folder: Path) -> None:
        """The outbox is beside a SQLite file, else in the current directory."""
        assert cli.outbox_folder(url) == folder


class TestProgress:
    """The progress bar on stderr."""

    def test_always(self) -> None:
        """--progress always writes the bar to stderr, ending at the total."""
        status, stdout, stderr, _ = run_main(["demo", "--count", "40", "--progress", "always"])
        assert status == 0
        assert "[##############################] 40/40 referrals" in stderr
        assert "referrals\n" in stderr
        assert "[#" not in stdout

    def test_never_and_auto_quiet_off_a_terminal(self) -> None:
        """never, and auto for a small run off a terminal, write nothing."""
        assert run_main(["demo", "--count", "20", "--progress", "never"])[2] == ""
        assert run_main(["demo", "--count", "20"])[2] == ""

    def test_auto_for_large_runs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """auto shows the bar for a large run even off a terminal."""
        monkeypatch.setattr(cli, "_PROGRESS_THRESHOLD", 30)
        assert "30/30 referrals" in run_main(["demo", "--count", "30", "--weeks", "1"])[2]

    def test_terminal_redraws_in_place(self) -> None:
        """On a terminal the bar redraws one line with carriage returns."""

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        stream = Terminal()
        bar = cli.ProgressBar(stream, 300, "referrals", enabled=True, width=10)
        for done in range(301):
            bar.update(done)
        text = stream.getvalue()
        assert text.startswith("\r[..........] 0/300 referrals")
        assert text.endswith("\r[##########] 300/300 referrals\n")
        assert text.count("\r") == 11  # one draw per filled cell, not per update
        assert "\r[#####.....] 150/300 referrals" in text

    def test_log_gets_quarters(self) -> None:
        """Off a terminal the bar writes a line per quarter."""
        stream = io.StringIO()
        bar = cli.ProgressBar(stream, 8, "referrals", enabled=True, width=4)
        for done in range(9):
            bar.update(done)
        assert stream.getvalue().splitlines() == [
            "[#...] 2/8 referrals",
            "[##..] 4/8 referrals",
            "[###.] 6/8 referrals",
            "[####] 8/8 referrals",
        ]

    def test_disabled_and_empty(self) -> None:
        """A disabled bar, or one with nothing to count, writes nothing."""
        stream = io.StringIO()
        cli.ProgressBar(stream, 5, "x", enabled=False).update(5)
        cli.ProgressBar(stream, 0, "x", enabled=True).update(0)
        assert stream.getvalue() == ""
        assert cli.ProgressBar(stream, 0, "x", enabled=True).render(0) == "[" + "#" * 30 + "] 0/0 x"

    def test_total_can_change_and_is_clamped(self) -> None:
        """update() takes a new total and clamps out-of-range counts."""
        stream = io.StringIO()
        bar = cli.ProgressBar(stream, 4, "x", enabled=True, width=4)
        bar.update(9, total=2)
        assert stream.getvalue() == "[####] 2/2 x\n"

    def test_closed_stream_is_not_a_terminal(self) -> None:
        """A stream whose isatty fails counts as not a terminal."""
        stream = io.StringIO()
        stream.close()
        assert not cli._isatty(stream)


class TestLifecycleCommand:
    """referralkit lifecycle: the transition table and the Mermaid diagram."""

    def test_table(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Header plus one (source, event, target) row per transition, sources in order."""
        assert cli.main(["lifecycle"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["source", "event", "target"]
        rows = [tuple(line.split()) for line in lines[1:]]
        expected = {(s.value, e, t.value) for s, e, t in TABLE.pairs()}
        assert set(rows) == expected
        assert len(rows) == len(expected)
        order = [s.value for s in Status]
        assert [order.index(r[0]) for r in rows] == sorted(order.index(r[0]) for r in rows)

    def test_mermaid(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--mermaid prints the lifecycle's Mermaid diagram."""
        assert cli.main(["lifecycle", "--mermaid"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("stateDiagram-v2")
        assert out == mermaid().rstrip("\n") + "\n"


class TestArguments:
    """Version, help and bad command lines."""

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--version prints the package version and exits 0."""
        assert cli.main(["--version"]) == 0
        assert capsys.readouterr().out.strip() == f"referralkit {referralkit.__version__}"

    def test_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--help exits 0 and names the commands."""
        assert cli.main(["--help"]) == 0
        out = capsys.readouterr().out
        assert "demo" in out
        assert "lifecycle" in out

    @pytest.mark.parametrize(
        "argv",
        [
            [],
            ["frobnicate"],
            ["demo", "--count", "-1"],
            ["demo", "--count", "many"],
            ["demo", "--weeks", "0"],
            ["demo", "--top", "0"],
            ["demo", "--progress", "sometimes"],
        ],
    )
    def test_usage_errors(self, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        """A bad command line exits 2 with a usage message, no traceback."""
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "usage: referralkit" in err
        assert "Traceback" not in err

    def test_exit_status_of_odd_codes(self) -> None:
        """SystemExit codes that are not integers become 0 (None) or 2."""
        assert cli._exit_status(None) == 0
        assert cli._exit_status("message") == 2
        assert cli._exit_status(3) == 3


class TestErrors:
    """Errors: one line on stderr, exit 2, never a traceback or PHI."""

    def test_bad_db_scheme(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unsupported store URL is a ReferralKitError: one line, exit 2."""
        assert cli.main(["demo", "--db", "foo://bar", "--count", "1"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("referralkit: error: ")
        assert "foo" in captured.err
        assert captured.err.count("\n") == 1

    def test_password_not_echoed(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A URL's password never reaches the output."""
        assert cli.main(["demo", "--db", "postgresql://u:s3cret@db.example/rk"]) == 2
        captured = capsys.readouterr()
        assert "s3cret" not in captured.err + captured.out

    def test_library_error_from_a_command(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Any ReferralKitError raised by a command is reported the same way."""

        def boom(*args: object, **kwargs: object) -> None:
            raise ValidationError("weeks", "too many")

        monkeypatch.setattr(synth, "simulate", boom)
        assert cli.main(["demo", "--count", "1"]) == 2
        assert capsys.readouterr().err == "referralkit: error: weeks: too many\n"

    def test_interrupt(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Ctrl-C exits 130 with one line."""

        def interrupted(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(synth, "simulate", interrupted)
        assert cli.main(["demo", "--count", "1"]) == 130
        assert capsys.readouterr().err == "referralkit: interrupted\n"

    def test_broken_pipe(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A reader that goes away ends the run quietly with status 1."""

        class Gone(io.StringIO):
            def write(self, text: str) -> int:
                raise BrokenPipeError

        monkeypatch.setattr(sys, "stdout", Gone())
        assert cli.main(["lifecycle"]) == 1

    def test_safe_url(self) -> None:
        """Passwords are masked in URLs shown to the user."""
        assert cli._safe_url("memory://") == "memory://"
        assert cli._safe_url("sqlite:///tmp/rk.db") == "sqlite:///tmp/rk.db"
        assert cli._safe_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
        assert cli._safe_url("postgresql://:pw@h/db") == "postgresql://***@h/db"

    def test_error_type_is_library_root(self) -> None:
        """The CLI reports exactly the library's own errors."""
        assert issubclass(ValidationError, ReferralKitError)


class TestModuleEntry:
    """python -m referralkit runs the same command line."""

    def test_python_dash_m(self) -> None:
        """A subprocess run of a small demo prints the worklist and exits 0."""
        done = subprocess.run(
            [sys.executable, "-m", "referralkit", "demo", "--count", "30", "--weeks", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Worklist" in done.stdout
        assert "Traceback" not in done.stderr

    def test_python_dash_m_error(self) -> None:
        """A subprocess run with a bad store exits 2 with one error line."""
        done = subprocess.run(
            [sys.executable, "-m", "referralkit", "demo", "--db", "nope://"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2
        assert done.stderr.startswith("referralkit: error: ")
        assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- KPIs


@attrs.define
class Built:
    """A hand-built store whose KPIs are known."""

    desk: ReferralDesk
    clock: FakeClock
    ids: dict[str, str]


@pytest.fixture
def built() -> Built:
    """Six referrals, each showing one definition (times in the comments are 2026-01)."""
    clock = FakeClock(START)
    desk = ReferralDesk(MemoryStore(), clock=clock)
    a = Actor("coord-1", {Role.COORDINATOR})

    def at(day: int, hour: int = 9) -> dt.datetime:
        return dt.datetime(2026, 1, day, hour, 0, tzinfo=dt.UTC)

    ids: dict[str, str] = {}
    for name in ("completed", "no_shows", "declined", "error", "waiting", "auth"):
        # hypertension, not the sample's chest pain: the shipped urgency rules make cardiac
        # chest pain urgent (48 h), and this store shows the routine 15-business-day window
        request = attrs.evolve(
            sample_request(f"KPI-{name}"),
            diagnoses=(Code.icd10("I10", "Essential (primary) hypertension"),),
        )
        if name == "auth":
            request = attrs.evolve(request, services=(Code.cpt("70551", "MRI brain"),))
        ids[name] = desk.intake(a, request).id
    # 5th 09:00: everything but "error" is sent; "error" was a mistake
    desk.mark_entered_in_error(a, ids["error"], "duplicate")
    for name in ("completed", "no_shows", "declined", "waiting", "auth"):
        desk.send(a, ids[name])
    desk.decline(a, ids["declined"], "outside our scope")
    for name in ("completed", "no_shows", "auth"):
        if name == "auth":
            desk.attach(a, ids[name], AttachmentKind.PRIOR_AUTH_FORM)
        desk.accept(a, ids[name])
    desk.request_authorization(a, ids["auth"])
    clock.set(at(6))  # booked 1 day after receipt, seen 4 days after
    desk.schedule(a, ids["completed"], at(9))
    clock.set(at(7))  # booked 2 days after receipt, for 7 days after; auth denied after 48 h
    desk.schedule(a, ids["no_shows"], at(12))
    desk.record_authorization(a, ids["auth"], approved=False)
    desk.request_authorization(a, ids["auth"])
    clock.set(at(8))  # approved on appeal; booked 3 days after receipt, for 28 days after
    desk.record_authorization(
        a, ids["auth"], approved=True, valid_from=at(8).date(), valid_to=dt.date(2026, 4, 8)
    )
    desk.schedule(a, ids["auth"], dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC))
    clock.set(at(9, 10))
    desk.record_visit(a, ids["completed"])
    desk.complete(a, ids["completed"], "consult note")
    clock.set(at(12, 10))  # two no-shows, then seen: still one referral with a no-show
    desk.record_no_show(a, ids["no_shows"])
    desk.reschedule(a, ids["no_shows"], at(14))
    clock.set(at(14, 10))
    desk.record_no_show(a, ids["no_shows"])
    desk.reschedule(a, ids["no_shows"], at(16))
    clock.set(at(16, 10))
    desk.record_visit(a, ids["no_shows"])
    return Built(desk, clock, ids)


class TestKpis:
    """analytics.summary(): each definition on a hand-built store."""

    def test_counts(self, built: Built) -> None:
        """Totals, open and closed (entered-in-error is not closed), completion rate."""
        kpis = analytics.summary(built.desk.store, built.clock.now())
        assert (kpis.total, kpis.open, kpis.completed, kpis.closed) == (6, 3, 1, 2)
        assert kpis.completion_rate == 0.5
        assert kpis.received == 5
        assert (kpis.closed_loop, kpis.closed_loop_rate) == (1, 0.2)
        assert kpis.by_status == (
            (Status.RECEIVED, 1),
            (Status.SCHEDULED, 1),
            (Status.SEEN, 1),
            (Status.DECLINED, 1),
            (Status.COMPLETED, 1),
            (Status.ENTERED_IN_ERROR, 1),
        )
        assert kpis.status_count(Status.SEEN) == 1
        assert kpis.status_count(Status.FAILED) == 0

    def test_times(self, built: Built) -> None:
        """Medians over referrals of receipt to first booking and to first appointment."""
        kpis = analytics.summary(built.desk.store, built.clock.now())
        assert kpis.median_days_to_schedule == 2.0  # 1, 2, 3
        assert kpis.median_days_to_appointment == 7.0  # 4, 7, 28 (the first booking counts)

    def test_no_show_rate_per_referral(self, built: Built) -> None:
        """Two no-shows of one referral count once; booked-only referrals are not counted."""
        kpis = analytics.summary(built.desk.store, built.clock.now())
        assert kpis.no_show_rate == 0.5

    def test_authorization(self, built: Built) -> None:
        """Denied then approved on appeal: one request, a denial, 48 h to first decision."""
        kpis = analytics.summary(built.desk.store, built.clock.now())
        assert kpis.auth_requested == 1
        assert kpis.auth_denial_rate == 1.0
        assert kpis.median_auth_turnaround_hours == 48.0

    def test_overdue_depends_on_now(self, built: Built) -> None:
        """Open referrals not yet seen, past their due date (15 business days for routine),
        are overdue; a seen one waits for its consult note instead."""
        store = built.desk.store
        assert analytics.summary(store, built.clock.now()).overdue == 0
        later = dt.datetime(2026, 2, 16, 9, 0, tzinfo=dt.UTC)
        kpis = analytics.summary(store, later)
        assert (kpis.overdue, kpis.awaiting_consult_note) == (2, 1)
        assert analytics.summary(store, later).as_of == later

    def test_empty_store(self) -> None:
        """Nothing to count: zero counts, None for rates and medians."""
        kpis = analytics.summary(MemoryStore(), START)
        assert kpis.total == kpis.open == kpis.overdue == 0
        assert kpis.completion_rate is None
        assert kpis.median_days_to_appointment is None
        assert kpis.no_show_rate is None
        assert kpis.auth_denial_rate is None
        assert kpis.by_status == ()

    def test_bad_arguments(self) -> None:
        """A non-store or a naive time is refused."""
        with pytest.raises(ValidationError, match="store"):
            analytics.summary(object(), START)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="as_of"):
            analytics.summary(MemoryStore(), dt.datetime(2026, 1, 5))

    def test_kpi_lines(self, built: Built) -> None:
        """The printed summary shows the figures with their definitions."""
        lines = cli.kpi_lines(analytics.summary(built.desk.store, built.clock.now()))
        text = "\n".join(lines)
        assert "6 (3 open, 2 closed, 1 in error)" in text
        assert "50.0% (completed / closed)" in text
        assert "7.0 days" in text
        assert "1 requested, 100.0% denied, median turnaround 48.0 h" in text

    def test_matches_simulation(self) -> None:
        """On a simulated store the KPIs agree with counting snapshots directly."""
        clock = FakeClock(START)
        desk = ReferralDesk(MemoryStore(), clock=clock, new_id=synth.id_factory(1))
        coordinator = Actor("c", {Role.COORDINATOR})
        synth.simulate(desk, coordinator, clock, synth.population(80, 1), weeks=4, seed=1)
        kpis = analytics.summary(desk.store, clock.now())
        referrals = desk.store.query()
        now = clock.now()
        assert kpis.total == len(referrals) == 80
        assert kpis.completed == sum(r.status is Status.COMPLETED for r in referrals)
        assert kpis.overdue == sum(
            (not r.status.is_terminal)
            and r.status is not Status.SEEN
            and r.due_by is not None
            and r.due_by < now
            for r in referrals
        )
        assert kpis.awaiting_consult_note == sum(r.status is Status.SEEN for r in referrals)
        assert sum(n for _, n in kpis.by_status) == 80


class TestWorklistLines:
    """The worklist table formatting."""

    def test_clock_due_left_and_next_action(self) -> None:
        """A row names the clock it is ranked by, its deadline, the days left (negative once
        late), the next action and the flags; no PHI."""
        clock = FakeClock(START)
        desk = ReferralDesk(MemoryStore(), clock=clock)
        a = Actor("c", {Role.COORDINATOR})
        late = desk.send(a, desk.intake(a, sample_request("W-1")).id)
        draft = desk.intake(a, sample_request("W-2"))
        clock.advance(days=30)
        lines = cli.worklist_lines([desk.assess(a, late.id), desk.assess(a, draft.id)])
        first, second = (ROW.match(line) for line in lines[1:])
        assert first is not None
        assert second is not None
        assert (first["clock"], first["next"]) == ("schedule_by", "accept")
        assert first["left"].startswith("-")
        assert "breached" in first["flags"]
        assert (second["clock"], second["due"], second["left"], second["next"]) == (
            "-",
            "-",
            "-",
            "send",
        )
        for line in lines:
            assert "Example" not in line
            assert "MRN" not in line


@pytest.fixture(scope="module")
def coordination_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """A SQLite store with a late received referral, a past booked appointment and a
    draft: its URL and the ids by name."""
    path = tmp_path_factory.mktemp("coord") / "desk.db"
    url = f"sqlite:///{path}"
    clock = FakeClock(START)
    with ReferralDesk(open_store(url), clock=clock) as desk:
        a = Actor("c", {Role.COORDINATOR})
        late = desk.send(a, desk.intake(a, sample_request("C-1")).id)
        booked = desk.accept(a, desk.send(a, desk.intake(a, sample_request("C-2")).id).id)
        booked = desk.schedule(a, booked.id, START + dt.timedelta(days=2))
        booked = desk.assign(a, booked.id, "coord-7")
        draft = desk.intake(a, sample_request("C-3"))
    return url, {"late": late.id, "booked": booked.id, "draft": draft.id}


AS_OF = (START + dt.timedelta(days=30)).isoformat()


class TestCoordinationCommands:
    """referralkit worklist / audit / show over a stored desk."""

    def test_worklist_ranks_and_filters(self, coordination_db: tuple[str, dict[str, str]]) -> None:
        """Rows most at risk first; --owner keeps one coordinator's."""
        url, ids = coordination_db
        status, stdout, _, _ = run_main(["worklist", "--db", url, "--as-of", AS_OF])
        assert status == 0
        rows = [ROW.match(line) for line in stdout.splitlines()[1:]]
        assert all(rows)
        listed = [r["id"] for r in rows if r]
        # both breached (the booked one on first contact, far past its 2 business days);
        # the draft, with no clock running, last
        assert set(listed[:2]) == {ids["late"][:8], ids["booked"][:8]}
        assert listed[2] == ids["draft"][:8]
        status, stdout, _, _ = run_main(
            ["worklist", "--db", url, "--as-of", AS_OF, "--owner", "coord-7"]
        )
        assert [line.split()[1] for line in stdout.splitlines()[1:]] == [ids["booked"][:8]]

    def test_worklist_json(self, coordination_db: tuple[str, dict[str, str]]) -> None:
        """--json: one object per row with the next action, clocks, delays and flags."""
        url, ids = coordination_db
        status, stdout, _, _ = run_main(
            ["worklist", "--db", url, "--as-of", AS_OF, "--json", "--unassigned"]
        )
        assert status == 0
        rows = json.loads(stdout)
        assert [r["referral_id"] for r in rows] == [ids["late"], ids["draft"]]
        late = rows[0]
        assert late["next_action"]["operation"] == "accept"
        assert "breached" in late["flags"]
        assert late["delays"][0]["clock"] == "schedule_by"
        assert {c["name"] for c in late["clocks"]} == {"schedule_by"}
        status, stdout, _, _ = run_main(
            ["worklist", "--db", url, "--as-of", AS_OF, "--json", "--cause", "scheduling"]
        )
        assert json.loads(stdout) == []

    def test_audit(self, coordination_db: tuple[str, dict[str, str]]) -> None:
        """The audit prints each finding with its fix, then a count; --json an array."""
        url, ids = coordination_db
        status, stdout, _, _ = run_main(["audit", "--db", url, "--as-of", AS_OF])
        assert status == 0
        assert f"medium  {ids['booked'][:8]}  past-appointment-booked" in stdout
        assert "fix: " in stdout
        assert stdout.endswith(" finding(s)\n")
        status, stdout, _, _ = run_main(["audit", "--db", url, "--as-of", AS_OF, "--json"])
        findings = json.loads(stdout)
        kinds = {(f["referral_id"], f["kind"]) for f in findings}
        assert (ids["booked"], "past-appointment-booked") in kinds
        assert all(f["severity"] in ("low", "medium", "high") for f in findings)

    def test_audit_of_an_empty_store(self, tmp_path: Path) -> None:
        """An empty store: no findings; the JSON is an empty array."""
        url = f"sqlite:///{tmp_path / 'empty.db'}"
        open_store(url).close()
        assert run_main(["audit", "--db", url])[1] == "0 finding(s)\n"
        assert json.loads(run_main(["audit", "--db", url, "--json"])[1]) == []

    def test_show_by_prefix(self, coordination_db: tuple[str, dict[str, str]]) -> None:
        """show takes a unique start of an id and prints clocks, actions and the audit."""
        url, ids = coordination_db
        status, stdout, _, _ = run_main(["show", ids["booked"][:8], "--db", url, "--as-of", AS_OF])
        assert status == 0
        assert stdout.startswith(f"referral {ids['booked']}\n")
        assert "owner      coord-7" in stdout
        assert "record_visit" in stdout
        assert "medium: past-appointment-booked" in stdout
        early = (START + dt.timedelta(hours=1)).isoformat()
        status, stdout, _, _ = run_main(
            ["show", ids["draft"], "--db", url, "--json", "--as-of", early]
        )
        data = json.loads(stdout)
        assert data["next_action"]["kind"] == "send"
        assert data["findings"] == []
        assert data["alerts"] == []

    def test_show_unknown_or_ambiguous_id(
        self, coordination_db: tuple[str, dict[str, str]]
    ) -> None:
        """An id matching no referral, or several, is an error (exit 2), one line."""
        url, _ = coordination_db
        status, _, stderr, _ = run_main(["show", "zzz", "--db", url])
        assert (status, stderr) == (2, "referralkit: error: no referral with id 'zzz'\n")

    @pytest.mark.parametrize("command", [["worklist"], ["audit"], ["show", "abc"]])
    def test_missing_store_is_an_error_and_not_created(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        """A store that does not exist: exit 2, and no file is created."""
        path = tmp_path / "typo.db"
        status, _, stderr, _ = run_main([*command, "--db", f"sqlite:///{path}"])
        assert status == 2
        assert stderr == f"referralkit: error: no SQLite database at {path}\n"
        assert not path.exists()

    def test_no_phi_in_any_output(self, coordination_db: tuple[str, dict[str, str]]) -> None:
        """worklist, audit and show (text and JSON) print no name, MRN, contact or birth
        date of the patients."""
        url, ids = coordination_db
        patient = sample_request().patient
        outputs = [
            run_main(argv)[1]
            for argv in (
                ["worklist", "--db", url, "--as-of", AS_OF],
                ["worklist", "--db", url, "--as-of", AS_OF, "--json"],
                ["audit", "--db", url, "--as-of", AS_OF],
                ["audit", "--db", url, "--as-of", AS_OF, "--json"],
                *(["show", i, "--db", url, "--as-of", AS_OF] for i in ids.values()),
                *(["show", i, "--db", url, "--json"] for i in ids.values()),
            )
        ]
        for output in outputs:
            assert output
            for secret in (patient.family_name, patient.given_name, patient.mrn):
                assert secret not in output
            assert patient.birth_date.isoformat() not in output
            for contact in patient.contacts:
                assert contact.value not in output

    def test_bad_filter_is_a_usage_error(self, coordination_db: tuple[str, dict[str, str]]) -> None:
        """An unknown cause is refused by the parser (exit 2)."""
        url, _ = coordination_db
        assert run_main(["worklist", "--db", url, "--cause", "weather"])[0] == 2


class TestRulesCommands:
    """referralkit rules list / check / diff."""

    def test_list_prints_every_shipped_ruleset(self) -> None:
        """One line per shipped file: path, kind, name, version."""
        from referralkit.rules.policies import shipped_paths

        status, stdout, _, _ = run_main(["rules", "list"])
        assert status == 0
        lines = stdout.splitlines()
        assert [line.split("\t")[0] for line in lines] == [str(p) for p in shipped_paths()]
        assert all(len(line.split("\t")) == 4 for line in lines)

    def test_check_is_clean_on_shipped_files(self) -> None:
        """The shipped files check clean: exit 0."""
        from referralkit.rules.policies import shipped_paths

        status, stdout, _, _ = run_main(["rules", "check", *map(str, shipped_paths())])
        assert status == 0
        assert stdout.count(": ok") == len(shipped_paths())

    def test_check_fails_on_a_bad_file(self, tmp_path: Path) -> None:
        """A shadowed rule and a refused file both exit 1, naming file, rule and field."""
        shadow = tmp_path / "shadow.toml"
        shadow.write_text(
            '[ruleset]\nname = "s"\nkind = "urgency"\n\n[[rules]]\nid = "all"\n'
            'then = { priority = "routine" }\n\n[[rules]]\nid = "never"\n'
            'when = { specialty = "oncology" }\nthen = { priority = "urgent" }\n'
        )
        broken = tmp_path / "broken.toml"
        broken.write_text(
            '[ruleset]\nname = "b"\nkind = "urgency"\n[[rules]]\nid = "x"\n'
            'when = { specialtyy = "a" }\nthen = { priority = "urgent" }\n'
        )
        status, stdout, _, _ = run_main(["rules", "check", str(shadow), str(broken)])
        assert status == 1
        assert f"{shadow}:11: rule 'never': field 'when': error: can never fire" in stdout
        assert f"{broken}:6: rule 'x': field 'when.specialtyy': error: unknown fact" in stdout

    def test_diff_counts_transitions(self, tmp_path: Path) -> None:
        """diff evaluates both versions over a synthetic population and prints the table."""
        from referralkit.rules.model import Kind
        from referralkit.rules.policies import shipped_paths

        old = shipped_paths(Kind.URGENCY)[0]
        new = tmp_path / "new.toml"
        new.write_text(
            old.read_text().replace(
                'then = { priority = "urgent", due_hours = 48, score = 200',
                'then = { priority = "asap", due_hours = 48, score = 200',
            )
        )
        status, stdout, _, _ = run_main(["rules", "diff", str(old), str(new), "--count", "200"])
        assert status == 0
        assert "| urgent, due 48h → asap, due 48h |" in stdout
        assert "referrals change" in stdout

    def test_diff_over_a_store(self, tmp_path: Path) -> None:
        """With --db the referrals come from the store."""
        from referralkit.rules.model import Kind
        from referralkit.rules.policies import shipped_paths

        url = f"sqlite:///{tmp_path / 'd.db'}"
        assert run_main(["demo", "--count", "10", "--db", url])[0] == 0
        path = str(shipped_paths(Kind.COVERAGE)[4])
        status, stdout, _, _ = run_main(["rules", "diff", path, path, "--db", url])
        assert status == 0
        assert "0 of 10 referrals change" in stdout


class TestDbUpgrade:
    """referralkit db upgrade URL."""

    def test_upgrade_is_idempotent(self, tmp_path: Path) -> None:
        """A new database is created at the current schema; a second upgrade changes nothing."""
        url = f"sqlite:///{tmp_path / 'u.db'}"
        status, first, _, _ = run_main(["db", "upgrade", url])
        assert status == 0
        assert "schema" in first
        status, second, _, _ = run_main(["db", "upgrade", url])
        assert status == 0
        assert "already at schema" in second

    def test_memory_has_no_schema(self) -> None:
        """A memory store is refused with a clear error, not a traceback."""
        status, _, stderr, _ = run_main(["db", "upgrade", "memory://"])
        assert status == 2
        assert stderr.startswith("referralkit: error: url:")


class TestDbDump:
    """referralkit db dump URL [FILE]."""

    def test_dump_to_stdout_and_to_a_file(self, tmp_path: Path) -> None:
        """The dump goes to standard output, or to a private file, the same bytes as
        storage.dump writes; it loads back into an equal store."""
        import io

        from referralkit.storage import dump, load_dump, open_store

        url = f"sqlite:///{tmp_path / 'd.db'}"
        assert run_main(["demo", "--db", url, "--count", "6", "--weeks", "1"])[0] == 0
        expected = io.StringIO()
        with open_store(url) as store:
            dump(store, expected)
            count = store.count()
        status, stdout, _, _ = run_main(["db", "dump", url])
        assert (status, stdout) == (0, expected.getvalue())
        path = tmp_path / "out.dump"
        status, stdout, _, _ = run_main(["db", "dump", url, str(path)])
        assert (status, stdout) == (0, f"dumped {count} referrals to {path}\n")
        assert path.read_text(encoding="utf-8") == expected.getvalue()
        assert path.stat().st_mode & 0o077 == 0
        with path.open(encoding="utf-8") as file:
            assert load_dump(open_store("memory://"), file) == count

    def test_a_missing_store_is_refused(self, tmp_path: Path) -> None:
        """A store that does not exist is an error and nothing is created."""
        url = f"sqlite:///{tmp_path / 'missing.db'}"
        status, stdout, stderr, _ = run_main(["db", "dump", url])
        assert (status, stdout) == (2, "")
        assert stderr.startswith("referralkit: error:")
        assert not (tmp_path / "missing.db").exists()


# --------------------------------------------------------------------------- stores that must exist


def storage_support() -> ModuleType:
    """tests/storage/storage_support.py: where the PostgreSQL test server is."""
    spec = importlib.util.spec_from_file_location(
        "storage_support", Path(__file__).parent / "storage" / "storage_support.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL test server; skipped without one, except under CI=true."""
    support = storage_support()
    reason = support.postgres_unavailable()
    if reason is not None:
        if support.IN_CI:
            pytest.fail(f"PostgreSQL is needed under CI: {reason}")
        pytest.skip(f"no PostgreSQL test server: {reason}")
    return str(support.POSTGRES_URL)


def read_only_commands(url: str) -> list[list[str]]:
    """Every command that only reads a store, aimed at ``url``."""
    from referralkit.rules.model import Kind
    from referralkit.rules.policies import shipped_paths

    ruleset = str(shipped_paths(Kind.URGENCY)[0])
    return [
        ["fhir", "export", "--db", url],
        ["fhir", "export", "--db", url, "--id", "0a1b"],
        ["rules", "diff", ruleset, ruleset, "--db", url],
    ]


READ_ONLY = ["fhir export", "fhir export --id", "rules diff --db"]


class TestReadOnlyCommands:
    """A command that only reads refuses a store that does not exist, and creates nothing
    (it used to create an empty database, or tables in a PostgreSQL database, and exit 0)."""

    @pytest.mark.parametrize("which", range(len(READ_ONLY)), ids=READ_ONLY)
    def test_a_mistyped_sqlite_path(self, tmp_path: Path, which: int) -> None:
        path = tmp_path / "referals.db"
        argv = read_only_commands(f"sqlite:///{path}")[which]
        status, stdout, stderr, _ = run_main(argv)
        assert (status, stdout) == (2, "")
        assert stderr == f"referralkit: error: no SQLite database at {path}\n"
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("which", range(len(READ_ONLY)), ids=READ_ONLY)
    def test_a_postgres_schema_without_tables(self, postgres_url: str, which: int) -> None:
        import psycopg

        schema = f"rk_test_{uuid.uuid4().hex[:12]}"
        url = f"{postgres_url}?schema={schema}"
        status, stdout, stderr, _ = run_main(read_only_commands(url)[which])
        assert (status, stdout) == (2, "")
        assert stderr.startswith(f"referralkit: error: no referralkit tables in schema '{schema}'")
        assert stderr.count("\n") == 1
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema]
            ).fetchone()
        assert row == (0,)

    def test_memory_is_never_there_to_read(self) -> None:
        status, _, stderr, _ = run_main(["fhir", "export", "--db", "memory://"])
        assert status == 2
        assert stderr.startswith("referralkit: error: url: a memory:// store is always new")

    def test_an_existing_store_is_read(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'd.db'}"
        assert run_main(["demo", "--count", "5", "--db", url])[0] == 0
        status, stdout, _, _ = run_main(["fhir", "export", "--db", url, "--no-validate"])
        assert status == 0
        assert stdout.count("\n") == 5


# --------------------------------------------------------------------------- id prefixes


class TestIdPrefixes:
    """Wherever the command line takes a referral id, a unique start of one will do."""

    def test_the_ids_the_demo_prints_can_be_exported(self, tmp_path: Path) -> None:
        """The demo's worklist shows 8 characters of each id; fhir export takes them."""
        url = f"sqlite:///{tmp_path / 'd.db'}"
        status, stdout, _, _ = run_main(["demo", "--count", "40", "--db", url, "--top", "3"])
        assert status == 0
        shown = [row["id"] for row in worklist_rows(stdout)]
        argv = ["fhir", "export", "--db", url, "--no-validate"]
        for short in shown:
            argv += ["--id", short]
        status, exported, stderr, _ = run_main(argv)
        assert status == 0
        assert "error" not in stderr
        with open_store(url, create=False) as store:
            full = sorted(store.ids_starting_with(s)[0] for s in shown)
        assert len(exported.splitlines()) == len(shown)
        for line, referral_id in zip(exported.splitlines(), full, strict=True):
            assert referral_id in line

    def test_ambiguous_and_unknown(self, tmp_path: Path) -> None:
        """A start several ids share is an error saying how many; one no id has is not
        found; both exit 2 and export nothing."""
        url = f"sqlite:///{tmp_path / 'p.db'}"
        ids = iter(["aa11", "aa22", "ab33"])
        with open_store(url) as store:
            desk = ReferralDesk(store, clock=FakeClock(START), new_id=lambda: next(ids))
            actor = Actor("c", {Role.COORDINATOR})
            for k in range(3):
                desk.intake(actor, sample_request(f"P-{k}"))
        status, stdout, stderr, _ = run_main(["fhir", "export", "--db", url, "--id", "aa"])
        assert (status, stdout) == (2, "")
        assert stderr == (
            "referralkit: error: id: 'aa' is the start of 2 referral ids; give more of the id\n"
        )
        status, stdout, stderr, _ = run_main(["fhir", "export", "--db", url, "--id", "zz"])
        assert (status, stdout, stderr) == (2, "", "referralkit: error: no referral with id 'zz'\n")
        status, stdout, _, _ = run_main(["fhir", "export", "--db", url, "--id", "ab"])
        assert status == 0
        assert "ab33" in stdout


# --------------------------------------------------------------------------- exit statuses


class TestExitStatuses:
    """One test per documented exit status (docs/reference/cli.md, cli's docstring)."""

    def test_0_success(self) -> None:
        assert run_main(["lifecycle"])[0] == cli.EXIT_OK == 0

    def test_1_rules_check_found_a_problem(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text('[ruleset]\nname = "b"\nkind = "urgency"\n')
        status, _, stderr, _ = run_main(["rules", "check", str(bad)])
        assert status == cli.EXIT_PROBLEMS == 1
        assert "Traceback" not in stderr

    def test_2_bad_command_line(self) -> None:
        assert run_main(["fhir", "export"])[0] == cli.EXIT_ERROR == 2

    def test_2_library_error(self) -> None:
        status, _, stderr, _ = run_main(["demo", "--db", "nope://x"])
        assert status == 2
        assert stderr.startswith("referralkit: error: ")

    def test_2_missing_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """It used to exit 1; the message says how to install, from an index or a checkout."""
        monkeypatch.setitem(sys.modules, "fhir.resources", None)
        status, _, stderr, _ = run_main(["fhir", "export", "--db", "memory://"])
        assert status == 2
        assert 'pip install "referralkit[fhir]"' in stderr
        assert 'pip install ".[fhir]"' in stderr

    def test_2_unknown_id(self, tmp_path: Path) -> None:
        """It used to exit 1."""
        url = f"sqlite:///{tmp_path / 'e.db'}"
        open_store(url).close()
        assert run_main(["fhir", "export", "--db", url, "--id", "x"])[0] == 2

    def test_2_a_file_that_cannot_be_written(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An OS error (here a full disk under stdout) is one error line, not a traceback."""

        class Full(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        err = io.StringIO()
        monkeypatch.setattr(sys, "stdout", Full())
        monkeypatch.setattr(sys, "stderr", err)
        assert cli.main(["lifecycle"]) == 2
        assert err.getvalue() == f"referralkit: error: {os.strerror(errno.ENOSPC)}\n"

    def test_2_names_the_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def denied(*args: object, **kwargs: object) -> None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/out.db")

        monkeypatch.setattr(cli, "open_store", denied)
        status, _, stderr, _ = run_main(["demo", "--db", "memory://", "--count", "1"])
        assert status == 2
        assert stderr == f"referralkit: error: /srv/out.db: {os.strerror(errno.EACCES)}\n"

    def test_130_interrupted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def interrupted(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(cli, "open_store", interrupted)
        assert run_main(["demo", "--count", "1"])[0] == cli.EXIT_INTERRUPTED == 130
