"""The command line (demo, lifecycle, errors) and the KPI summary it prints."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import importlib.util
import io
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
    Priority,
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

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
ROW = re.compile(
    r"^\s*(?P<rank>\d+)\s+(?P<id>[0-9a-f]{8})\s+(?P<specialty>[a-z-]+)\s+"
    r"(?P<priority>routine|urgent|asap|stat)\s+(?P<status>[a-z_]+)\s+"
    r"(?P<due>\d{4}-\d{2}-\d{2}|-)\s+(?P<waiting>\d+)d(?:\s+(?P<flags>.*))?$"
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
        assert flags <= {
            "OVERDUE",
            "consult-note-due",
            "interpreter",
            "auth-needed",
            "auth-pending",
            "auth-denied",
            "missing-docs",
            "self-pay",
            "not-covered",
            "out-of-network",
        }
        assert "OVERDUE" in flags

    def test_worklist_order_is_priority_then_due(
        self, default_demo: tuple[int, str, str, float]
    ) -> None:
        """Rows go from the highest priority down, and by due date within a priority."""
        _, stdout, _, _ = default_demo
        rows = worklist_rows(stdout)
        keys = [(-Priority(r["priority"]).rank, r["due"]) for r in rows]
        assert keys == sorted(keys)

    def test_full_worklist_order(self) -> None:
        """With every open referral listed the order still holds, across priorities."""
        status, stdout, _, _ = run_main(["demo", "--count", "120", "--top", "500"])
        assert status == 0
        rows = worklist_rows(stdout)
        keys = [(-Priority(r["priority"]).rank, r["due"]) for r in rows]
        assert keys == sorted(keys)
        assert len({r["priority"] for r in rows}) >= 2
        assert f"Worklist: top {len(rows)} of {len(rows)} open referrals" in stdout

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
        request = sample_request(f"KPI-{name}")
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

    def test_flags(self) -> None:
        """Flags say what a referral needs, with no PHI."""
        clock = FakeClock(START)
        desk = ReferralDesk(MemoryStore(), clock=clock)
        a = Actor("c", {Role.COORDINATOR})
        mri = attrs.evolve(sample_request("W-1"), services=(Code.cpt("70551"),))
        needs_auth = desk.send(a, desk.intake(a, mri).id)
        requested = desk.request_authorization(a, needs_auth.id)
        lapsed = sample_request("W-2")
        assert lapsed.coverage is not None
        lapsed = attrs.evolve(
            lapsed,
            coverage=attrs.evolve(
                lapsed.coverage,
                period_start=dt.date(2025, 1, 1),
                period_end=dt.date(2025, 12, 31),
            ),
        )
        not_covered = desk.intake(a, lapsed)
        self_pay = desk.acknowledge_self_pay(
            a, desk.intake(a, attrs.evolve(lapsed, source_id="W-3")).id
        )
        incomplete = desk.intake(a, sample_request("W-4", complete=False))
        far = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
        lines = cli.worklist_lines(
            [needs_auth, requested, not_covered, self_pay, incomplete], far, desk.checklist
        )
        assert "auth-needed" in lines[1]
        assert "missing-docs" in lines[1]
        assert "auth-pending" in lines[2]
        assert "not-covered" in lines[3]
        assert "self-pay" in lines[4]
        assert "not-covered" not in lines[4]
        assert "missing-docs" in lines[5]
        assert all("OVERDUE" in line and "interpreter" in line for line in lines[1:])
        for line in lines:
            assert "Example" not in line
            assert "MRN" not in line

    def test_denied_and_out_of_network(self) -> None:
        """A denied authorization and an out-of-network specialist are flagged."""
        clock = FakeClock(START)
        desk = ReferralDesk(MemoryStore(), clock=clock)
        a = Actor("c", {Role.COORDINATOR})
        request = sample_request("W-5")
        assert request.coverage is not None
        assert request.target is not None
        ppo = attrs.evolve(
            request,
            services=(Code.cpt("70551"),),
            coverage=attrs.evolve(request.coverage, plan_type=referralkit.PlanType.PPO),
            target=attrs.evolve(request.target, networks=("elsewhere",)),
        )
        r = desk.request_authorization(a, desk.intake(a, ppo).id)
        r = desk.record_authorization(a, r.id, approved=False)
        (line,) = cli.worklist_lines([r], START, desk.checklist)[1:]
        assert "auth-denied" in line
        assert "out-of-network" in line
        draft_due_none = attrs.evolve(r, urgency=None)
        (line,) = cli.worklist_lines([draft_due_none], START, desk.checklist)[1:]
        assert re.search(r"\s-\s+0d", line)


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
