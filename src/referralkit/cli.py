"""The ``referralkit`` command line: a thin layer over the public API.

Commands:

- ``referralkit demo``: generate a synthetic population (:mod:`referralkit.synth`), take it in
  (coverage and urgency are decided at intake), simulate a few weeks of a referral desk, then
  print the prioritized worklist and the KPI summary (:mod:`referralkit.analytics`). The output
  shows referral ids, specialties and statuses, never patient names, record numbers or birth
  dates.
- ``referralkit lifecycle``: the lifecycle's transition table; ``--mermaid`` prints it as a
  Mermaid state diagram.

A :class:`~referralkit.errors.ReferralKitError` is reported as ``referralkit: error: <message>``
on standard error with exit status 2 (the same status argparse uses for a bad command line);
its messages carry no PHI.

>>> main(["lifecycle"])  # doctest: +ELLIPSIS
source                  event                  target
draft                   mark_entered_in_error  entered_in_error
...
0
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TextIO
from urllib.parse import urlsplit, urlunsplit

from . import analytics, lifecycle, synth
from .clock import FakeClock
from .desk import ReferralDesk
from .errors import ReferralKitError, ValidationError
from .intake import Checklist
from .model import AuthStatus, Covered, NetworkStatus, Referral, Status
from .privacy import Actor, Role
from .storage import open_store

__all__ = ["DEFAULT_DB", "main"]

DEFAULT_DB: Final = "sqlite:///referralkit-demo.db"
"""The demo's own database file, in the current directory; each run replaces it."""
"""The store ``referralkit demo`` uses unless ``--db`` names another.

With a persistent store, a second run with the same seed finds its requests already taken in
(intake is idempotent by source id) and simulates on top of them: use a fresh store per run.
"""

DEFAULT_COUNT: Final = 300
DEFAULT_SEED: Final = 7
DEFAULT_WEEKS: Final = 6
DEFAULT_TOP: Final = 20
# below this many referrals a run takes well under a second: no bar unless stderr is a terminal
_PROGRESS_THRESHOLD: Final = 1000

_DEMO_ACTORS: Final = (
    Actor("demo-coordinator", {Role.COORDINATOR}),
    Actor("demo-scheduler", {Role.SCHEDULER}),
    Actor("demo-specialist", {Role.SPECIALIST}),
    Actor("demo-referrer", {Role.REFERRER}),
)


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """A tiny progress bar, ``[#####.....] 150/300 referrals``, on a text stream.

    On a terminal it redraws one line in place; elsewhere (a log, a pipe) it writes a line at
    each quarter, so logs stay short. Disabled, it writes nothing.
    """

    def __init__(
        self, stream: TextIO, total: int, unit: str, *, enabled: bool, width: int = 30
    ) -> None:
        self.stream = stream
        self.total = total
        self.unit = unit
        self.enabled = enabled and total > 0
        self.width = width
        self.interactive = _isatty(stream)
        self._shown = -1

    def render(self, done: int) -> str:
        """The bar's text for ``done`` of ``total``."""
        filled = self.width * done // self.total if self.total else self.width
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {self.unit}"

    def update(self, done: int, total: int | None = None) -> None:
        """Show ``done`` of ``total`` (the total given at construction by default)."""
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        done = max(0, min(done, self.total))
        if self.interactive:
            step = self.width * done // self.total
            if step != self._shown or done == self.total:
                self._shown = step
                end = "\n" if done == self.total else ""
                self.stream.write(f"\r{self.render(done)}{end}")
                self.stream.flush()
            return
        quarter = 4 * done // self.total
        if quarter > self._shown and quarter > 0:
            self._shown = quarter
            self.stream.write(f"{self.render(done)}\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


# --------------------------------------------------------------------------- formatting


def _safe_url(url: str) -> str:
    """``url`` without a password (a PostgreSQL URL may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.1f} {unit}"


def _flags(referral: Referral, now: dt.datetime, checklist: Checklist) -> list[str]:
    """Short, PHI-free flags that tell a coordinator what a referral needs."""
    flags = []
    if referral.is_overdue(now):
        flags.append("OVERDUE")
    elif referral.awaiting_consult_note:
        flags.append("consult-note-due")
    if referral.patient.interpreter_needed:
        flags.append("interpreter")
    auth = referral.authorization.status
    if auth is AuthStatus.NEEDED:
        flags.append("auth-needed")
    elif auth is AuthStatus.REQUESTED:
        flags.append("auth-pending")
    elif auth is AuthStatus.DENIED:
        flags.append("auth-denied")
    if checklist.missing(referral):
        flags.append("missing-docs")
    decision = referral.coverage_decision
    if referral.self_pay_acknowledged:
        flags.append("self-pay")
    elif decision is not None and decision.covered is Covered.NOT_COVERED:
        flags.append("not-covered")
    elif decision is not None and decision.network_status is NetworkStatus.OUT_OF_NETWORK:
        flags.append("out-of-network")
    return flags


_WORKLIST_COLUMNS: Final = (
    ("rank", 4, ">"),
    ("referral", 8, "<"),
    ("specialty", 16, "<"),
    ("priority", 8, "<"),
    ("status", 21, "<"),
    ("due", 10, "<"),
    ("waiting", 7, ">"),
    ("flags", 0, "<"),
)


def _row(cells: Sequence[str]) -> str:
    parts = [
        f"{cell:{align}{width}}" if width else cell
        for cell, (_, width, align) in zip(cells, _WORKLIST_COLUMNS, strict=True)
    ]
    return "  ".join(parts).rstrip()


def worklist_lines(
    referrals: Sequence[Referral], now: dt.datetime, checklist: Checklist
) -> list[str]:
    """The worklist table: one row per referral, in the order given (no PHI)."""
    lines = [_row([name for name, _, _ in _WORKLIST_COLUMNS])]
    for rank, r in enumerate(referrals, start=1):
        due = r.due_by
        since = r.received_at or r.created_at
        lines.append(
            _row(
                [
                    str(rank),
                    r.id[:8],
                    r.specialty,
                    r.effective_priority.value,
                    r.status.value,
                    due.date().isoformat() if due is not None else "-",
                    f"{max(0, (now - since).days)}d",
                    ", ".join(_flags(r, now, checklist)),
                ]
            )
        )
    return lines


def kpi_lines(kpis: analytics.Kpis) -> list[str]:
    """The KPI summary as aligned ``label  value`` lines."""
    errors = kpis.status_count(Status.ENTERED_IN_ERROR)
    rows = [
        ("referrals", f"{kpis.total} ({kpis.open} open, {kpis.closed} closed, {errors} in error)"),
        ("completed", str(kpis.completed)),
        ("completion rate", f"{_percent(kpis.completion_rate)} (completed / closed)"),
        (
            "closed loop",
            f"{kpis.closed_loop} consult notes returned "
            f"({_percent(kpis.closed_loop_rate)} of received)",
        ),
        ("median time to schedule", _number(kpis.median_days_to_schedule, "days")),
        ("median time to appointment", _number(kpis.median_days_to_appointment, "days")),
        ("no-show rate", f"{_percent(kpis.no_show_rate)} of referrals with a visit outcome"),
        ("overdue", f"{kpis.overdue} open referrals not yet seen, past their due date"),
        ("awaiting consult", f"{kpis.awaiting_consult_note} seen, consult note not back yet"),
        (
            "prior authorization",
            f"{kpis.auth_requested} requested, {_percent(kpis.auth_denial_rate)} denied, "
            f"median turnaround {_number(kpis.median_auth_turnaround_hours, 'h')}",
        ),
        ("by status", ", ".join(f"{s.value} {n}" for s, n in kpis.by_status) or "-"),
    ]
    width = max(len(label) for label, _ in rows)
    return [f"  {label:<{width}}  {value}" for label, value in rows]


# --------------------------------------------------------------------------- commands


def _demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    count: int = args.count
    seed: int = args.seed
    weeks: int = args.weeks
    clock = FakeClock(synth.DEFAULT_START)
    if args.db == DEFAULT_DB:
        # the default file is the demo's own output: start afresh on every run
        for suffix in ("", "-wal", "-shm"):
            Path(DEFAULT_DB.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    store = open_store(args.db)
    if store.count():
        store.close()
        raise ValidationError(
            "db", "the store already holds referrals; the demo needs an empty store"
        )
    desk = ReferralDesk(store, clock=clock, new_id=synth.id_factory(seed))
    with desk:
        providers = synth.directory(seed)
        requests = synth.population(count, seed, synth.DEFAULT_START, providers=providers)
        mode: str = args.progress
        enabled = mode == "always" or (
            mode == "auto" and (_isatty(err) or count >= _PROGRESS_THRESHOLD)
        )
        bar = ProgressBar(err, count, "referrals", enabled=enabled)
        report = synth.simulate(
            desk,
            _DEMO_ACTORS,
            clock,
            requests,
            weeks=weeks,
            seed=seed,
            providers=providers,
            progress=bar.update,
        )
        now = clock.now()
        coordinator = _DEMO_ACTORS[0]
        rows = desk.worklist(coordinator, limit=args.top)
        open_count = desk.count(coordinator, open_only=True)
        kpis = analytics.summary(desk.store, now)

    shown = f"top {len(rows)} of {open_count}" if rows else f"0 of {open_count}"
    lines = [
        f"referralkit demo: synthetic data only (seed {seed})",
        f"  {count} referral requests, {weeks} simulated weeks from "
        f"{report.started.date().isoformat()} to {report.ended.date().isoformat()}, "
        f"store {_safe_url(args.db)}",
        f"  {report.total_operations} desk operations; {report.total_refused} refused as "
        f"expected outcomes; {report.duplicates} duplicate requests recognised at intake",
        "",
        f"Worklist: {shown} open referrals, by priority then due date "
        f"(as of {now:%Y-%m-%d %H:%M} UTC)",
        *worklist_lines(rows, now, desk.checklist),
        "",
        "KPI summary (counted per referral)",
        *kpi_lines(kpis),
    ]
    out.write("\n".join(lines) + "\n")
    return 0


def _lifecycle(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.mermaid:
        out.write(lifecycle.mermaid().rstrip("\n") + "\n")
        return 0
    order = {status: index for index, status in enumerate(Status)}
    triples = sorted(lifecycle.TABLE.pairs(), key=lambda t: (order[t[0]], t[1], order[t[2]]))
    rows = [("source", "event", "target")] + [(s.value, e, t.value) for s, e, t in triples]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for source, event, target in rows:
        out.write(f"{source:<{widths[0]}}  {event:<{widths[1]}}  {target}\n")
    return 0


def _db_upgrade(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .storage import upgrade

    old, new = upgrade(args.url)
    action = "already at" if old == new else f"upgraded from schema {old} to"
    out.write(f"{_safe_url(args.url)}: {action} schema {new}\n")
    return 0


def _rules_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .rules import load
    from .rules.policies import shipped_paths

    for path in shipped_paths():
        ruleset = load(path)
        out.write(f"{path}\t{ruleset.kind.value}\t{ruleset.name}\t{ruleset.version}\n")
    return 0


def _rules_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .rules.check import check_files

    failed = False
    for path, problems in check_files(args.paths).items():
        for problem in problems:
            out.write(f"{problem}\n")
            failed |= problem.severity == "error" or args.strict
        if not problems:
            out.write(f"{path}: ok\n")
    return 1 if failed else 0


def _rules_diff(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .rules import load
    from .rules.whatif import what_if

    old, new = load(args.old), load(args.new)
    if args.db is not None:
        with open_store(args.db) as store:
            referrals = store.query()
    else:
        referrals = list(synth.referrals(args.count, args.seed))
    result = what_if(old, new, referrals, samples=args.samples)
    out.write(
        f"{old.name}@{old.version} -> {new.name}@{new.version}: {result.changed} of "
        f"{result.total} referrals change\n\n{result.table()}\n"
    )
    return 0


# --------------------------------------------------------------------------- parsing


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number >= 1, got 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``referralkit`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="referralkit",
        description="Referral coordination: a synthetic demo and the lifecycle.",
    )
    parser.add_argument("--version", action="version", version=f"referralkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="simulate weeks of synthetic referrals; print the worklist and KPIs",
        description=(
            "Generate synthetic referral requests, take them in, simulate a few weeks of "
            "coordination, then print the prioritized worklist and the KPI summary. "
            "Synthetic data only; the output holds no patient identifiers."
        ),
    )
    demo.add_argument("--db", default=DEFAULT_DB, help=f"store URL (default: {DEFAULT_DB})")
    demo.add_argument(
        "--count", type=_non_negative, default=DEFAULT_COUNT, help="referral requests (300)"
    )
    demo.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (7)")
    demo.add_argument("--weeks", type=_positive, default=DEFAULT_WEEKS, help="weeks simulated (6)")
    demo.add_argument("--top", type=_positive, default=DEFAULT_TOP, help="worklist rows (20)")
    demo.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: on a terminal or for large runs)",
    )
    demo.set_defaults(handler=_demo)

    cycle = commands.add_parser(
        "lifecycle",
        help="print the referral lifecycle's transition table",
        description="Print the lifecycle transitions (source, event, target).",
    )
    cycle.add_argument("--mermaid", action="store_true", help="print a Mermaid state diagram")
    cycle.set_defaults(handler=_lifecycle)

    db = commands.add_parser("db", help="manage a store's database", description="Databases.")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrading = db_commands.add_parser(
        "upgrade",
        help="apply the schema migrations a SQLite or PostgreSQL store lacks",
        description="Bring the schema up to date (forward migrations); safe to repeat.",
    )
    upgrading.add_argument("url", metavar="URL")
    upgrading.set_defaults(handler=_db_upgrade)

    rules = commands.add_parser(
        "rules", help="list, check and compare rulesets", description="Rulesets as data."
    )
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    listing = rule_commands.add_parser(
        "list", help="print the path, kind, name and version of every shipped ruleset"
    )
    listing.set_defaults(handler=_rules_list)
    checking = rule_commands.add_parser(
        "check",
        help="check ruleset files; exit 0 only when clean",
        description="Load and check each file: refusals, rules that can never fire, "
        "overlaps under 'unique'. Exit status 1 on any error (with --strict, any warning).",
    )
    checking.add_argument("paths", nargs="+", metavar="PATH")
    checking.add_argument("--strict", action="store_true", help="warnings fail too")
    checking.set_defaults(handler=_rules_check)
    diffing = rule_commands.add_parser(
        "diff",
        help="what-if: compare two versions of a ruleset over the same referrals",
        description="Evaluate OLD and NEW over the referrals of --db (or a synthetic "
        "population) and count the outcome transitions.",
    )
    diffing.add_argument("old", metavar="OLD")
    diffing.add_argument("new", metavar="NEW")
    diffing.add_argument("--db", default=None, help="store URL to read referrals from")
    diffing.add_argument(
        "--count", type=_positive, default=1000, help="synthetic referrals without --db (1000)"
    )
    diffing.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (7)")
    diffing.add_argument("--samples", type=_positive, default=3, help="sample ids per row (3)")
    diffing.set_defaults(handler=_rules_diff)
    return parser


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    0 on success, 2 for a bad command line or a :class:`~referralkit.errors.ReferralKitError`
    (reported on stderr as ``referralkit: error: <message>``, never as a traceback).
    """
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return _exit_status(exit_.code)
    handler: Callable[[argparse.Namespace, TextIO, TextIO], int] = args.handler
    try:
        return handler(args, out, err)
    except ReferralKitError as exc:
        err.write(f"referralkit: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        err.write("referralkit: interrupted\n")
        return 130
    except BrokenPipeError:
        # the reader went away (``referralkit demo | head``): stop quietly, and point stdout
        # at devnull so the interpreter's final flush does not fail again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
