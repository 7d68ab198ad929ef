"""The ``referralkit`` command line: a thin layer over the public API.

Commands:

- ``referralkit demo``: generate a synthetic population (:mod:`referralkit.synth`), take it in
  (coverage and urgency are decided at intake), simulate a few weeks of a referral desk, then
  print the worklist ranked by risk with next actions, an audit summary, commands to look
  closer and the KPI summary (:mod:`referralkit.analytics`); then tell each reachable patient
  of an open referral where it stands (:meth:`ReferralDesk.notify
  <referralkit.desk.ReferralDesk.notify>`, an :class:`~referralkit.messages.OutboxNotifier`
  writing to the folder :func:`~referralkit.cli.outbox_folder` names) and print one message
  in English and one in Spanish. The output shows referral ids, specialties and statuses,
  never patient names (a message shows ``[first name]``), record numbers or birth dates.
- ``referralkit worklist --db URL [--owner ID] [--as-of T] [--json]``: the open referrals
  most at risk first, with the clock each is ranked by, the next action and the flags;
  ``referralkit audit --db URL [--json]``: the record audit's findings;
  ``referralkit db dump URL [FILE]``: the store's dump (:func:`~referralkit.storage.dump`),
  read in pages and written as read;
  ``referralkit show ID --db URL``: one referral's clocks, delays, next actions, alerts and
  findings (:meth:`~referralkit.desk.ReferralDesk.worklist`, ``audit``, ``assess``).
- ``referralkit rules explain --db URL ID [--as-of T] [--json]``: why a stored referral got
  its coverage decision and urgency: the policy version each was made with, the rules that
  fired and why the others did not (:meth:`~referralkit.desk.ReferralDesk.explain`); with
  ``--as-of``, the referral decided again with the policy in use at T
  (:meth:`~referralkit.desk.ReferralDesk.replay`).
- ``referralkit lifecycle``: the lifecycle's transition table; ``--mermaid`` prints it as a
  Mermaid state diagram.
- ``referralkit message --db URL ID --moment MOMENT [--lang LANG]``: print the patient
  message for a moment of a stored referral (:mod:`referralkit.messages`); nothing is sent.
- ``referralkit fhir import FILE --db URL`` and ``referralkit fhir export --db URL``: FHIR R4
  Bundles in and out (``referralkit.interop.fhir``, the ``fhir`` extra), as NDJSON (one
  Bundle per line) or, for import, one Bundle as a JSON document. A file with a refused
  Bundle imports nothing; an import is idempotent by the ServiceRequest identifier (the
  referral's source id), so an interrupted one completes when run again.
- ``referralkit access-log --db URL [--actor ID] [--referral ID] [--since T] [--flagged]
  [--json]``: the store's access log (:mod:`referralkit.access`): who read, exported or was
  refused which referrals, when, for what purpose; break-glass grants and uses flagged.
- ``referralkit checkpoint --db URL [--signing-key PEM] [--out FILE]`` and ``referralkit
  verify --db URL [--checkpoints FILE] [--public-key PEM]``: tamper evidence for the access
  log and the events (:mod:`referralkit.tamper`); ``verify`` exits 1 at the first broken
  link.
- ``referralkit keys init FILE``, ``keys add FILE``, ``keys rotate --db URL``: key rings
  and key rotation for encryption at rest (:mod:`referralkit.crypto`); every command opens
  its store with the key ring the ``REFERRALKIT_KEYS`` environment variable names.
- ``referralkit directory load --db URL FILE...``: load Plan-Net FHIR resources and NPPES
  files into the provider directory in the store's database; ``referralkit match --db URL
  ID``: the ranked candidates for a referral, with reasons (:mod:`referralkit.directory`).

Commands that only read a store (``fhir export``, ``rules diff --db``, ``rules explain``,
``worklist``, ``audit``, ``show``, ``match``, ``db dump``) open it with
:func:`open_store_to_read`: a store that does not exist (a mistyped path) is an error, and
nothing is created. Wherever a command takes a referral id, the first characters of one are
enough when only one referral's id starts with them (:func:`~referralkit.storage.resolve_id`),
so the 8-character ids the demo prints can be used as they are.

**Who the CLI acts as.** The commands that read referrals through the desk (``worklist``,
``audit``, ``show``, ``fhir export``, ``access-log``) act as a local operator: an
:class:`~referralkit.privacy.Actor` with the auditor role (reads only) named
``referralkit-cli``, with no organisation, so it reaches every referral under the desk's
default scope policy (:data:`~referralkit.privacy.COMPATIBLE_SCOPE`): whoever holds the
database URL holds the data already. ``--as ID`` (or ``REFERRALKIT_ACTOR``) names the operator
and ``--org ORG`` (or ``REFERRALKIT_ORG``) scopes it to an organisation; ``--purpose`` (or
``REFERRALKIT_PURPOSE``, default ``operations``) is the purpose of use. Every read is recorded
in the store's access log under that name (``cli_actor``).

Exit statuses (:data:`EXIT_OK`, :data:`EXIT_PROBLEMS`, :data:`EXIT_ERROR`,
:data:`EXIT_INTERRUPTED`):

- 0: success;
- 1: ``rules check`` found a problem (an error; with ``--strict``, a warning too), or a
  property check of ``rules test`` failed; also
  when the reader of standard output goes away (``referralkit demo | head``), quietly, and
  for a failure referralkit did not expect (a bug: Python prints its traceback);
- 2: an error, reported on standard error as ``referralkit: error: <message>``, never as a
  traceback: a bad command line (argparse's usage message), any
  :class:`~referralkit.errors.ReferralKitError` (bad input, a store that does not exist, a
  referral id that matches no referral or several, a missing extra), and a file or
  device that cannot be read or written; messages carry no PHI;
- 130: interrupted (Ctrl-C).

>>> main(["lifecycle"])  # doctest: +ELLIPSIS
source                  event                  target
draft                   mark_entered_in_error  entered_in_error
...
0
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, TextIO
from urllib.parse import urlsplit, urlunsplit

import attrs

from . import analytics, lifecycle, synth
from ._cli_keys import add_keys_commands
from ._cli_keys import open_keyed_store as open_store  # REFERRALKIT_KEYS for every command
from .clock import FakeClock
from .desk import ReferralDesk
from .errors import NotFoundError, ReferralKitError, ValidationError
from .events import EventType, replay
from .model import (
    AppointmentStatus,
    Priority,
    Referral,
    ReferralEvent,
    Status,
)
from .privacy import Actor, Role
from .serialization import to_dict
from .storage import Change, Query, ReferralStore, resolve_id

if TYPE_CHECKING:
    from .clocks import ClockReading
    from .discrepancies import Finding
    from .interop.fhir import Limits
    from .messages import Message, Moment
    from .worklist import Action, WorklistItem

__all__ = [
    "DEFAULT_DB",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "OUTBOX_SUFFIX",
    "main",
    "open_store_to_read",
    "outbox_folder",
]

EXIT_OK: Final = 0
"""The command did what it was asked."""
EXIT_PROBLEMS: Final = 1
"""``rules check`` found a problem; also a reader that went away, or an unexpected failure."""
EXIT_ERROR: Final = 2
"""An error, reported on stderr as ``referralkit: error: <message>`` (argparse uses 2 too)."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted by Ctrl-C (128 + SIGINT, as a shell reports it)."""

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


class Ticker:
    """Progress of a bulk command, ``[#####.....] 150/300 bundles``, on a text stream.

    On a terminal it redraws one line in place (``\\r``) at most once per ``interval``
    seconds, whatever the rate of updates; elsewhere (a log, a pipe) it writes only the final
    line. Use it as a context manager: a clean exit writes the final line, an exception ends a
    half-drawn line so that the error message starts on a line of its own.
    """

    def __init__(
        self,
        stream: TextIO,
        total: int,
        unit: str,
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        width: int = 30,
    ) -> None:
        self.stream = stream
        self.done = 0
        self.interactive = _isatty(stream)
        self._bar = ProgressBar(stream, total, unit, enabled=False, width=width)
        self._interval = interval
        self._clock = clock
        self._last = -math.inf
        self._drawn = False

    def update(self, done: int) -> None:
        """``done`` of the total are done; redraw if on a terminal and it is time to."""
        self.done = max(0, min(done, self._bar.total))
        if not self.interactive or self._bar.total == 0:
            return
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._drawn = True
            self.stream.write(f"\r{self._bar.render(self.done)}")
            self.stream.flush()

    def __enter__(self) -> Ticker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()
            return
        if self._bar.total:
            start = "\r" if self.interactive else ""
            self.stream.write(f"{start}{self._bar.render(self.done)}\n")
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


def open_store_to_read(url: str) -> ReferralStore:
    """The store ``url`` names, for a command that only reads it: one that does not exist
    (a mistyped path, a PostgreSQL schema without referralkit's tables) is a
    :class:`~referralkit.errors.StorageError` and nothing is created
    (``open_store(url, create=False)``)."""
    return open_store(url, create=False)


def _demo_scheduler() -> Any:
    """The demo's scheduling system: in memory, its practices' schedules opened as the
    simulation reaches them (issue 14)."""
    from .scheduling import MemoryScheduler

    return MemoryScheduler()


def _demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    count: int = args.count
    seed: int = args.seed
    weeks: int = args.weeks
    clock = FakeClock(synth.DEFAULT_START)
    if args.db == DEFAULT_DB:
        # the default file is the demo's own output: start afresh on every run
        for suffix in ("", "-wal", "-shm"):
            Path(DEFAULT_DB.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        _clear_default_outbox()
    store = open_store(args.db)
    try:
        if store.count():
            raise ValidationError(
                "db", "the store already holds referrals; the demo needs an empty store"
            )
        desk = ReferralDesk(store, clock=clock, new_id=synth.id_factory(seed))
    except BaseException:
        store.close()  # a store that failed to count, or is refused, is not left open
        raise
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
            # booked through the in-memory scheduling adapter, specialists chosen by match
            scheduler=_demo_scheduler(),
        )
        now = clock.now()
        coordinator = _DEMO_ACTORS[0]
        rows = desk.worklist(coordinator, limit=args.top)
        open_count = desk.count(coordinator, open_only=True)
        findings = list(desk.audit(coordinator))
        kpis = analytics.summary(desk.store, now)
        # after the worklist and the KPIs: the messages are logged as contacts with the
        # patient, which stop first-contact clocks
        outbox = outbox_folder(args.db)
        messages = _demo_outbox(desk, coordinator, outbox)

    shown = f"top {len(rows)} of {open_count}" if rows else f"0 of {open_count}"
    lines = [
        f"referralkit demo: synthetic data only (seed {seed})",
        f"  {count} referral requests, {weeks} simulated weeks from "
        f"{report.started.date().isoformat()} to {report.ended.date().isoformat()}, "
        f"store {_safe_url(args.db)}",
        f"  {report.total_operations} desk operations; {report.total_refused} refused as "
        f"expected outcomes; {report.duplicates} duplicate requests recognised at intake",
        "",
        f"Worklist: {shown} open referrals, most at risk first (as of {now:%Y-%m-%d %H:%M} UTC)",
        *worklist_lines(rows),
        "",
        f"Audit: {len(findings)} finding(s) in the records",
        *audit_lines(findings),
        "",
        "Look closer (ids as printed, or any unique start of one):",
        f"  referralkit show {rows[0].referral_id[:8] if rows else 'ID'} "
        f"--db {_safe_url(args.db)} --as-of {now:%Y-%m-%dT%H:%M}",
        f"  referralkit worklist --db {_safe_url(args.db)} --as-of {now:%Y-%m-%dT%H:%M}",
        f"  referralkit audit --db {_safe_url(args.db)} --as-of {now:%Y-%m-%dT%H:%M}",
        "",
        "KPI summary (counted per referral)",
        *kpi_lines(kpis),
        "",
        *message_lines(messages, outbox),
    ]
    out.write("\n".join(lines) + "\n")
    return 0


# --------------------------------------------------------------------------- demo messages

OUTBOX_SUFFIX: Final = "-outbox"
"""The demo's outbox is the folder beside its SQLite file named after it with this suffix
(``referralkit-demo-outbox``), or that default name in the current directory for a store
that is not a SQLite file."""
_DEFAULT_OUTBOX: Final = Path("referralkit-demo" + OUTBOX_SUFFIX)
_OUTBOX_FILES: Final = ("*.eml", "*.sms.txt")
_FIRST_NAME: Final = "[first name]"


def outbox_folder(url: str) -> Path:
    """Where ``referralkit demo --db url`` writes its outbox: beside a SQLite file, named
    after it (``clinic.db`` -> ``clinic-outbox``), else ``referralkit-demo-outbox``."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :].removeprefix("/")
        if path and path != ":memory:":
            database = Path(path)
            return database.with_name(database.stem + OUTBOX_SUFFIX)
    return _DEFAULT_OUTBOX


def _clear_default_outbox() -> None:
    """Empty the default outbox of the files an earlier run wrote (nothing else)."""
    for pattern in _OUTBOX_FILES:
        for path in _DEFAULT_OUTBOX.glob(pattern):
            path.unlink(missing_ok=True)


def _demo_moment(referral: Referral) -> Moment | None:
    """The moment the demo tells a patient about: a booked or missed visit, the coverage
    outcome while the referral waits for a visit, else that the referral was received."""
    from .messages import Moment

    status = referral.status
    held = {a.status for a in referral.appointments}
    if status is Status.SCHEDULED and AppointmentStatus.BOOKED in held:
        return Moment.BOOKED
    if status is Status.NO_SHOW and AppointmentStatus.NOSHOW in held:
        return Moment.MISSED
    if status.is_terminal or status is Status.DRAFT:
        return None
    if status in (Status.RECEIVED, Status.ACCEPTED) and referral.coverage_decision is not None:
        return Moment.for_coverage(referral)
    return Moment.RECEIVED


def _demo_outbox(desk: ReferralDesk, actor: Actor, folder: Path) -> list[Message]:
    """Tell every patient of an open referral who has an e-mail address or a mobile number
    about where the referral stands, through :meth:`ReferralDesk.notify` and an
    :class:`~referralkit.messages.OutboxNotifier` writing to ``folder``: one message each,
    in the patient's language, recorded as a communication. The messages sent, by referral
    id."""
    from .messages import OutboxNotifier, Renderer

    notifier = OutboxNotifier(folder, clock=desk.clock)
    renderer = Renderer()
    sent = []
    for referral in desk.store.query(Query(open_only=True)):
        moment = _demo_moment(referral)
        if moment is None or not any(
            c.system in notifier.systems for c in referral.patient.contacts
        ):
            continue
        sent.append(desk.notify(actor, referral.id, moment, notifier, renderer=renderer).message)
    return sorted(sent, key=lambda m: m.referral_id)


def _masked(text: str, message: Message) -> str:
    """``text`` with the patient's first name replaced: the demo prints no patient name."""
    name = message.facts.get("first_name")
    return text.replace(name, _FIRST_NAME) if isinstance(name, str) and name else text


def message_lines(messages: Sequence[Message], folder: Path) -> list[str]:
    """The demo's outbox summary and one message in English and one in Spanish, when the
    population has a reachable patient of each language."""
    by_language = {m.requested_language: m for m in reversed(messages)}
    lines = [f"Outbox: {len(messages)} patient messages written to {folder}"]
    for language, name in (("en", "English"), ("es", "Spanish")):
        message = by_language.get(language)
        if message is None:
            lines += ["", f"(no {name}-speaking patient to write to in this population)"]
            continue
        lines += [
            "",
            f"{name} message ({message.moment.value}, referral {message.referral_id[:8]}):",
            f"  Subject: {_masked(message.subject, message)}",
            *(f"  {line}".rstrip() for line in _masked(message.text, message).splitlines()),
        ]
    return lines


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


def _db_dump(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .storage import dump

    # read in pages and written as read (storage.dump): memory does not grow with the store
    with open_store_to_read(args.url) as store:
        written = dump(store, args.file if args.file is not None else out)
    if args.file is not None:
        out.write(f"dumped {written} referrals to {args.file}\n")
    else:
        out.flush()
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
    engines = tuple(dict.fromkeys(args.engine or ["python"]))
    for path, problems in check_files(args.paths, engines=engines).items():
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
        with open_store_to_read(args.db) as store:
            referrals = store.query()
    else:
        referrals = list(synth.referrals(args.count, args.seed))
    result = what_if(old, new, referrals, samples=args.samples)
    out.write(
        f"{old.name}@{old.version} -> {new.name}@{new.version}: {result.changed} of "
        f"{result.total} referrals change\n\n{result.table(only_changed=not args.all)}\n"
    )
    return 0


_TEST_EXTRA: Final = (
    "referralkit: error: rules test needs hypothesis, from the test extra: "
    'pip install "referralkit[test]" (in a checkout: pip install ".[test]")\n'
)


def _rules_test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .rules import load
    from .rules.model import Kind
    from .rules.policies import CoveragePolicy, UrgencyPolicy

    try:
        importlib.import_module("hypothesis")
    except ImportError:
        err.write(_TEST_EXTRA)
        return EXIT_ERROR
    from .testing import run_checks

    rulesets = [load(path) for path in args.paths]
    policies: list[Any] = []
    for kind, policy_type in ((Kind.COVERAGE, CoveragePolicy), (Kind.URGENCY, UrgencyPolicy)):
        chosen = [r for r in rulesets if r.kind is kind]
        if chosen:
            policies.append(policy_type(chosen))
    for ruleset in rulesets:
        if ruleset.kind is Kind.EVENT:
            err.write(f"referralkit: note: {ruleset.name} holds event rules; not tested\n")
    results = run_checks(policies, examples=args.examples, fallback=not args.no_fallback)
    failed = any(r.status == "failed" for r in results)
    if args.json:
        out.write(json.dumps([r.to_json() for r in results], indent=2) + "\n")
        return EXIT_PROBLEMS if failed else EXIT_OK
    for result in results:
        line = f"{result.status:<8} {result.check:<18} {result.subject}"
        if result.reason:
            line += f": {result.reason}"
        out.write(line + "\n")
        if result.counterexample is not None:
            out.write(json.dumps(result.counterexample.to_json(), indent=2) + "\n")
    return EXIT_PROBLEMS if failed else EXIT_OK


def _plain(value: Any) -> Any:
    """An explanation or replay (attrs values, datetimes) as JSON data."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _rules_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with ReferralDesk(open_store_to_read(args.db)) as desk:
        referral_id = resolve_id(desk.store, args.id)
        explanation = desk.explain(_CLI_READER, referral_id)
        replayed = (
            desk.replay(_CLI_READER, referral_id, as_of=args.as_of)
            if args.as_of is not None
            else None
        )
    if args.json:
        data = {"explanation": _plain(explanation), "replay": _plain(replayed)}
        out.write(json.dumps(data, indent=2) + "\n")
        return EXIT_OK
    out.write(f"{explanation}\n")
    if replayed is not None:
        out.write(f"{replayed}\n")
    return EXIT_OK


def _rules_facts(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .rules import FACTS, load
    from .rules.model import Kind

    named: dict[str, list[Any]] = {}
    for path in args.paths:
        ruleset = load(path)
        if ruleset.kind is Kind.EVENT:
            continue
        for rule in ruleset.rules:
            for compare in _compares_of(rule.when):
                values = compare.value if isinstance(compare.value, tuple) else (compare.value,)
                bucket = named.setdefault(compare.fact, [])
                bucket.extend(
                    v
                    for v in values
                    if v not in bucket and compare.op.value not in ("exists", "missing")
                )
    rows = []
    for name, spec in FACTS.items():
        examples = named.get(name) or list(spec.values or spec.examples)
        shown = ", ".join(json.dumps(_plain_value(v), ensure_ascii=False) for v in examples[:8]) + (
            ", ..." if len(examples) > 8 else ""
        )
        rows.append(
            {
                "fact": name,
                "type": spec.type.value,
                "examples": [_plain_value(v) for v in examples],
                "doc": spec.doc,
                "shown": shown,
            }
        )
    if args.json:
        out.write(
            json.dumps([{k: v for k, v in r.items() if k != "shown"} for r in rows], indent=2)
            + "\n"
        )
        return EXIT_OK
    width = max(len(r["fact"]) for r in rows)
    kinds = max(len(r["type"]) for r in rows)
    for r in rows:
        out.write(f"{r['fact']:<{width}}  {r['type']:<{kinds}}  {r['shown']}\n")
        out.write(f"{'':<{width}}  {'':<{kinds}}  {r['doc']}\n")
    return EXIT_OK


def _compares_of(condition: Any) -> list[Any]:
    from .rules.model import Compare

    if isinstance(condition, Compare):
        return [condition]
    found = []
    for item in getattr(condition, "items", ()):
        found += _compares_of(item)
    inner = getattr(condition, "item", None)
    if inner is not None:
        found += _compares_of(inner)
    return found


def _plain_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def _message(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .messages import Moment, Renderer

    with open_store(args.db) as store:
        referral = store.load(args.id)
    renderer = Renderer(timezone=args.timezone)
    moment = Moment.for_coverage(referral) if args.moment == "coverage" else args.moment
    message = renderer.render(
        referral, moment, language=args.lang, cause=args.cause, new_date=args.new_date
    )
    body = message.html if args.html else message.text
    out.write(f"Subject: {message.subject}\n\n{body}\n")
    if not message.complete:
        err.write(
            f"referralkit: note: written in {message.language} for a reader who prefers "
            f"{message.requested_language}; {len(message.missing)} text(s) shown in English\n"
        )
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date (YYYY-MM-DD), got {text!r}") from None


# --------------------------------------------------------------------------- FHIR

FHIR_ACTOR: Final = "fhir-import"
"""The actor recorded on the ``created`` event of every referral ``fhir import`` stores."""

_FHIR_EXTRA: Final = (
    "referralkit: error: the fhir commands need the fhir extra: "
    'pip install "referralkit[fhir]" (in a checkout: pip install ".[fhir]")\n'
)


def _fhir_extra_missing(err: TextIO) -> bool:
    """Whether fhir.resources (the fhir extra) is missing; if so, say how to install it.

    :mod:`referralkit.interop.fhir` is imported by the commands themselves, on first use.
    """
    try:
        importlib.import_module("fhir.resources")
    except ImportError:
        err.write(_FHIR_EXTRA)
        return True
    return False


# the defaults of referralkit.interop.fhir.Limits, repeated here so that building the parser
# does not import the FHIR package (a test checks they agree)
_DEFAULT_LIMITS: Final = {"bundle_bytes": 16 << 20, "total_bytes": 1 << 30, "entries": 10_000}

IMPORT_BATCH: Final = 500
"""How many referrals ``fhir import`` writes per transaction (one ``save_many`` call)."""

_BOM: Final = b"\xef\xbb\xbf"
_SPOOL_CHUNK: Final = 1 << 16


def _cannot_read(name: str, exc: OSError) -> ValidationError:
    return ValidationError(name, f"cannot read it ({exc.strerror or type(exc).__name__})")


@contextlib.contextmanager
def _opened(name: str, limits: Limits) -> Iterator[IO[bytes]]:
    """FILE opened as bytes; nothing of it is echoed.

    ``-`` is standard input, copied to an anonymous temporary file first (an import reads its
    input twice, standard input can be read once), no further than ``limits.total_bytes`` and
    with no line longer than ``limits.bundle_bytes``; the copy is deleted on exit.
    """
    with contextlib.ExitStack() as stack:
        file: IO[bytes]
        failure: ValidationError | None = None
        try:
            if name == "-":
                file = stack.enter_context(tempfile.TemporaryFile(prefix="referralkit-import-"))
                _spool(file, limits)
            else:
                file = stack.enter_context(open(name, "rb"))
        except OSError as exc:
            failure = _cannot_read(name, exc)
        if failure is not None:  # raised outside the handler: no chained OS error
            raise failure
        yield file


def _spool(file: IO[bytes], limits: Limits) -> None:
    """Copy standard input to ``file``, a chunk at a time (text stdin encoded as UTF-8),
    stopping at the first line longer than ``limits.bundle_bytes`` or at
    ``limits.total_bytes``: an endless pipe stops at a limit, not when the disk is full."""
    stdin: Any = sys.stdin
    buffer = getattr(stdin, "buffer", None)
    total = 0
    line = 0  # bytes since the last newline
    while True:
        chunk = buffer.read(_SPOOL_CHUNK) if buffer is not None else stdin.read(_SPOOL_CHUNK)
        if not chunk:
            break
        data: bytes = chunk if isinstance(chunk, bytes) else chunk.encode("utf-8", "surrogatepass")
        total += len(data)
        if total > limits.total_bytes:
            raise _limit_error("<stdin>", "the input", limits.total_bytes, "--max-total-bytes")
        parts = data.split(b"\n")  # parts[0] continues the current line
        run = line + len(parts[0])
        if max([run, *map(len, parts[1:])]) > limits.bundle_bytes + 1:  # + 1: a CR may end it
            raise _limit_error("<stdin>", "a line", limits.bundle_bytes, "--max-bundle-bytes")
        line = len(parts[-1]) if len(parts) > 1 else run
        file.write(data)
    file.flush()


def _limit_error(where: str, what: str, limit: int, option: str) -> ValidationError:
    from .interop.fhir import FhirLimitError

    return FhirLimitError(
        where, f"{what} is larger than the limit of {limit:,} bytes ({option} raises it)"
    )


def _lines(file: IO[bytes], name: str, limits: Limits) -> Iterator[tuple[int, bytes]]:
    """The lines of ``file`` from its start, numbered from 1, a leading UTF-8 BOM removed;
    a line longer than ``limits.bundle_bytes`` or more than ``limits.total_bytes`` in all is
    refused before it is read further (``/dev/zero`` is one endless line)."""
    from .interop.fhir._limits import bounded_lines

    failure: ValidationError | None = None
    try:
        file.seek(0)
        try:
            yield from bounded_lines(file, limits, "--max")
        except ValidationError as exc:
            failure = type(exc)(f"{name} {exc.path}", exc.reason)
    except OSError as exc:
        failure = _cannot_read(name, exc)
    if failure is not None:
        raise failure


def _text(line: bytes, where: str) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised below, without the decoder's error (it quotes the input) as context
    raise ValidationError(where, "not UTF-8 text")


def _blank(line: bytes) -> bool:
    if line[:1] in (b"{", b"["):  # the usual case, decided without decoding the line
        return False
    return not line.decode("utf-8", "replace").strip()


_NOT_PARSED: Final = object()


def _parsed(line: bytes) -> Any:
    """The JSON value of one line, or ``_NOT_PARSED``."""
    try:
        return json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _NOT_PARSED


def _single_document(file: IO[bytes], name: str, limits: Limits) -> bool:
    """Whether FILE is one JSON document (a Bundle, perhaps pretty-printed) rather than NDJSON.

    Decided from its first two non-blank lines: NDJSON when the first is JSON by itself, or
    when the first is not but the second is a JSON object by itself (NDJSON whose first line
    is broken, which the import then reports).
    """
    first = True
    for _, line in _lines(file, name, limits):
        if _blank(line):
            continue
        value = _parsed(line)
        if first:
            if value is not _NOT_PARSED:
                return False
            first = False
        else:
            return not isinstance(value, dict)
    return not first  # one non-blank line, not JSON by itself: a (broken) document


def _whole_document(file: IO[bytes], name: str, limits: Limits) -> tuple[int, Any]:
    """The one JSON document of FILE (read whole, no further than ``limits.bundle_bytes``),
    with the line it starts on."""
    failure: ValidationError | None = None
    try:
        file.seek(0)
        data = file.read(limits.bundle_bytes + len(_BOM) + 1).removeprefix(_BOM)
    except OSError as exc:
        failure = _cannot_read(name, exc)
    if failure is not None:
        raise failure
    if len(data) > limits.bundle_bytes:
        raise _limit_error(name, "the document", limits.bundle_bytes, "--max-bundle-bytes")
    # the refusals below are raised outside their handlers: the decoder's and the parser's
    # errors quote the input, and must not travel as their context
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        failure = ValidationError(f"{name} line {line}", "not UTF-8 text")
    if failure is not None:
        raise failure
    try:
        whole = json.loads(text)
    except (ValueError, RecursionError) as exc:
        broken_at = exc.lineno if isinstance(exc, json.JSONDecodeError) else 1
        failure = ValidationError(f"{name} line {broken_at}", "not valid JSON")
    if failure is not None:
        raise failure
    blank = len(text) - len(text.lstrip())
    return text[:blank].count("\n") + 1, whole


def _count(file: IO[bytes], name: str, limits: Limits, *, single: bool) -> int:
    """How many documents FILE holds (a cheap scan: no line is parsed)."""
    if single:
        return 1
    return sum(1 for _, line in _lines(file, name, limits) if not _blank(line))


def _documents(
    file: IO[bytes], name: str, limits: Limits, *, single: bool
) -> Iterator[tuple[int, Any]]:
    """The JSON documents of an import file, one at a time, each with the line it starts on.

    The file is one JSON document (``single``: a Bundle, perhaps pretty-printed over many
    lines) or NDJSON (one Bundle per line, blank lines ignored), read a line at a time. A line
    that is not JSON raises a :class:`~referralkit.errors.ValidationError` naming the line
    only, never its content.
    """
    if single:
        yield _whole_document(file, name, limits)
        return
    for number, line in _lines(file, name, limits):
        if _blank(line):
            continue
        where = f"{name} line {number}"
        value = _parsed(line)
        if value is _NOT_PARSED:
            _text(line, where)  # says "not UTF-8 text" when that is why
            raise ValidationError(where, "not valid JSON")
        yield number, value


def _convert(
    from_fhir: Callable[[Mapping[str, Any]], Referral], name: str, number: int, bundle: Any
) -> Referral:
    """The referral the Bundle on line ``number`` holds; errors name the line and the path."""
    where = f"{name} line {number}"
    if not isinstance(bundle, dict):
        raise ValidationError(where, "expected a JSON object (a FHIR Bundle)")
    # refusals are raised outside the handlers: the cause may hold the input (PHI)
    failure: ValidationError | None = None
    try:
        referral = from_fhir(bundle)
    except ValidationError as exc:
        path = f"{where}: {exc.path}" if exc.path else where
        failure = ValidationError(path, exc.reason)
    except Exception as exc:  # an unexpected failure: its message may quote the input
        failure = ValidationError(where, f"cannot be converted ({type(exc).__name__})")
    if failure is not None:
        raise failure
    if not isinstance(referral, Referral):
        raise ValidationError(where, "cannot be converted (not a referral)")
    return referral


def _created(referral: Referral, where: str) -> Change:
    """A new history for an imported referral: one ``created`` event, as the desk records it;
    the snapshot must be what the event replays to."""
    snapshot = attrs.evolve(referral, version=1)
    event = ReferralEvent(
        snapshot.id,
        1,
        0,
        snapshot.updated_at,
        FHIR_ACTOR,
        EventType.CREATED.value,
        {"referral": to_dict(snapshot)},
    )
    if replay([event]) != snapshot:
        raise ValidationError(where, "the referral does not replay from its created event")
    return snapshot, [event], 0


def _exists(store: ReferralStore, referral_id: str) -> bool:
    try:
        store.load(referral_id)
    except NotFoundError:
        return False
    return True


def _fhir_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if _fhir_extra_missing(err):
        return EXIT_ERROR
    from .interop.fhir import Limits
    from .interop.fhir import from_fhir as read

    limits = Limits(args.max_bundle_bytes, args.max_total_bytes, args.max_entries)

    def from_fhir(bundle: Mapping[str, Any]) -> Referral:
        return read(bundle, limits=limits)

    name: str = args.file
    shown = "<stdin>" if name == "-" else name
    with _opened(name, limits) as file:
        single = _single_document(file, shown, limits)
        total = _count(file, shown, limits, single=single)
        # pass 1, before the store opens: every Bundle is converted and nothing is kept, so
        # that a refused Bundle anywhere in the file writes nothing
        checked = 0
        with Ticker(err, total, "bundles checked") as ticker:
            for number, bundle in _documents(file, shown, limits, single=single):
                _convert(from_fhir, shown, number, bundle)
                checked += 1
                ticker.update(checked)
        # pass 2: converted again and written in batches, one transaction each
        with open_store(args.db) as store, Ticker(err, checked, "bundles stored") as ticker:
            imported = _store_all(
                store, from_fhir, _documents(file, shown, limits, single=single), shown, ticker
            )
    out.write(f"imported {imported} referrals ({checked - imported} already present)\n")
    return 0


def _store_all(
    store: ReferralStore,
    from_fhir: Callable[[Mapping[str, Any]], Referral],
    documents: Iterator[tuple[int, Any]],
    name: str,
    ticker: Ticker,
) -> int:
    """Save the referrals of ``documents`` that the store lacks, :data:`IMPORT_BATCH` per
    transaction; how many were saved.

    A referral is skipped when its source id or id is already stored (in an earlier batch, or
    by an earlier import) or earlier in the current batch, so a rerun after a failure half-way
    completes the import.
    """
    saved = 0
    batch: list[Change] = []
    ids: set[str] = set()  # of the current batch: earlier batches are in the store
    sources: set[str] = set()
    for done, (number, bundle) in enumerate(documents, 1):
        referral = _convert(from_fhir, name, number, bundle)
        source = referral.source_id
        if not (
            referral.id in ids
            or (source is not None and (source in sources or store.find_source(source)))
            or _exists(store, referral.id)
        ):
            batch.append(_created(referral, f"{name} line {number}"))
            ids.add(referral.id)
            if source is not None:
                sources.add(source)
            if len(batch) >= IMPORT_BATCH:
                store.save_many(batch)
                saved += len(batch)
                batch, ids, sources = [], set(), set()
        ticker.update(done)
    if batch:
        store.save_many(batch)
        saved += len(batch)
    return saved


def _fhir_export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if _fhir_extra_missing(err):
        return EXIT_ERROR
    from .interop.fhir import to_fhir

    wanted: list[str] = args.ids or []
    actor = cli_actor(args)
    # read through the desk: scoped to the actor and recorded in the access log
    with ReferralDesk(open_store_to_read(args.db)) as desk:
        store = desk.store
        referrals: Iterable[Referral]
        if wanted:
            # whole ids, or their first characters as the demo's worklist prints them
            ids = sorted({resolve_id(store, i) for i in wanted})
            total = len(ids)
            referrals = [desk.get(actor, i) for i in ids]
        else:
            # read in pages, in id order, and written as read: memory does not grow with the
            # store; a Bundle is made from the referral alone, so no event is read
            total = desk.count(actor)
            referrals = desk.export_referrals(actor)
        with Ticker(err, total, "referrals") as ticker:
            for done, referral in enumerate(referrals, 1):
                out.write(_bundle_line(to_fhir, referral, validate=args.validate))
                ticker.update(done)
    out.flush()
    return 0


def _bundle_line(
    to_fhir: Callable[..., dict[str, Any]], referral: Referral, *, validate: bool
) -> str:
    """The referral as one compact Bundle line (validated unless told not to); errors name
    the referral id."""
    where = f"referral {referral.id}"
    try:
        bundle = to_fhir(referral, validate=validate)
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc.path}" if exc.path else where, exc.reason) from None
    except Exception as exc:  # an unexpected failure: its message may quote the referral
        raise ValidationError(where, f"cannot be exported ({type(exc).__name__})") from None
    # a Bundle holds no cycle: the check is skipped (the same bytes)
    return json.dumps(bundle, separators=(",", ":"), check_circular=False) + "\n"


# --------------------------------------------------------------------------- parsing


# --------------------------------------------------------------------------- analytics

_ANALYTICS_EXTRA: Final = (
    "referralkit: this command needs the analytics extra: pip install "
    "'referralkit[analytics]' (from a checkout: pip install '.[analytics]')\n"
)


def _analytics_extra_missing(err: TextIO) -> bool:
    """Whether pandas, pyarrow or matplotlib (the analytics extra) is missing; if so, say
    how to install it."""
    try:
        for name in ("pandas", "pyarrow", "matplotlib"):
            importlib.import_module(name)
    except ImportError:
        err.write(_ANALYTICS_EXTRA)
        return True
    return False


def _instant_arg(text: str) -> dt.datetime:
    """A command-line instant: an ISO 8601 date (midnight UTC) or datetime (UTC if naive)."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or datetime: {text!r}") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date: {text!r}") from None


def _export_parquet(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if _analytics_extra_missing(err):
        return 1
    from .analytics import Deidentifier, export_parquet

    deidentifier = Deidentifier(date_shift_days=args.date_shift)
    with open_store(args.db) as store:
        written = export_parquet(
            store,
            args.directory,
            as_of=args.as_of,
            deidentify=deidentifier,
            overwrite=args.overwrite,
        )
    out.write(
        f"{args.directory}: {written['referrals']} referrals and {written['events']} events, "
        "de-identified, as Parquet partitioned by month\n"
    )
    return 0


def _report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if _analytics_extra_missing(err):
        return 1
    import pandas as pd

    from .analytics import events_frame, kpis, referrals_frame, report_html
    from .analytics._kpis import KPIS
    from .analytics._report import _cell

    end = args.to + dt.timedelta(days=1) if args.to is not None else None
    with open_store(args.db) as store:
        frame = referrals_frame(store, as_of=args.as_of)
        events = events_frame(store, as_of=args.as_of) if args.html else None
    table = kpis(frame, by=args.by or (), start=args.since, end=end)
    units = {k.name: k.unit for k in KPIS}
    groups = [" / ".join(map(str, g)) if isinstance(g, tuple) else str(g) for g in table.index]
    shown = pd.DataFrame(
        [[_cell(v, units[k.name]) for v in table[k.name].tolist()] for k in KPIS],
        index=[k.label for k in KPIS],
        columns=groups,
    )
    when = frame.attrs["as_of"]
    period = ""
    if args.since is not None or args.to is not None:
        period = f", received {args.since or '...'} to {args.to or '...'}"
    out.write(f"KPIs as of {when:%Y-%m-%d %H:%M} UTC{period} (de-identified, per referral)\n")
    out.write(shown.to_string() + "\n")
    if args.html:
        page = report_html(frame, events, by=args.by or (), start=args.since, end=end)
        Path(args.html).write_text(page, encoding="utf-8")
        out.write(f"wrote {args.html}\n")
    return 0


def _add_analytics_commands(commands: Any) -> None:
    """``export parquet`` and ``report`` (the analytics extra)."""
    export = commands.add_parser(
        "export",
        help="export a store for analysts (the analytics extra)",
        description="Exports for analysts: de-identified, for DuckDB, Polars or Spark.",
    )
    export_commands = export.add_subparsers(dest="export_command", required=True, metavar="COMMAND")
    parquet = export_commands.add_parser(
        "parquet",
        help="write the de-identified referrals and events as Parquet partitioned by month",
        description="Write DIR/referrals and DIR/events (Hive partitions month=YYYY-MM) and "
        "DIR/referralkit.json, de-identified (HIPAA Safe Harbor as the model declares PHI; "
        "ids pseudonymised with a key made for this run).",
    )
    parquet.add_argument("directory", metavar="DIR")
    parquet.add_argument("--db", required=True, help="store URL to read")
    parquet.add_argument(
        "--as-of", type=_instant_arg, default=None, help="replay histories up to (default: now)"
    )
    parquet.add_argument(
        "--date-shift",
        type=_non_negative,
        default=0,
        metavar="DAYS",
        help="shift each patient's dates by a random number of days up to DAYS (default 0)",
    )
    parquet.add_argument("--overwrite", action="store_true", help="replace datasets already in DIR")
    parquet.set_defaults(handler=_export_parquet)

    report = commands.add_parser(
        "report",
        help="print the KPI table; --html writes a self-contained report with plots",
        description="KPIs of the referrals received in [--from, --to] (every referral "
        "without them), counted per referral from de-identified data.",
    )
    report.add_argument("--db", required=True, help="store URL to read")
    report.add_argument("--from", dest="since", type=_date_arg, default=None, metavar="DATE")
    report.add_argument("--to", type=_date_arg, default=None, metavar="DATE", help="inclusive")
    report.add_argument(
        "--by",
        action="append",
        metavar="COLUMN",
        help="group by specialty, payer, plan_type, referring_org, target_org, priority, "
        "week, month (repeat for several)",
    )
    report.add_argument("--html", metavar="FILE", help="also write an HTML report")
    report.add_argument(
        "--as-of", type=_instant_arg, default=None, help="replay histories up to (default: now)"
    )
    report.set_defaults(handler=_report)


# --------------------------------------------------------------------------- coordination

_CLI_READER: Final = Actor("referralkit-cli", {Role.AUDITOR})
"""Who the read-only coordination commands act as by default (an auditor: reads only; no
organisation: every referral under the default scope policy). See :func:`cli_actor`."""


def cli_actor(args: argparse.Namespace) -> Actor:
    """The :class:`~referralkit.privacy.Actor` a reading command acts as: ``--as`` (or
    ``REFERRALKIT_ACTOR``, default ``referralkit-cli``) with the auditor role, for ``--org``
    (or ``REFERRALKIT_ORG``; none by default), for ``--purpose`` (or
    ``REFERRALKIT_PURPOSE``; ``operations`` by default)."""
    name = getattr(args, "as_actor", None) or os.environ.get("REFERRALKIT_ACTOR")
    organization = getattr(args, "org", None) or os.environ.get("REFERRALKIT_ORG") or None
    purpose = getattr(args, "purpose", None) or os.environ.get("REFERRALKIT_PURPOSE")
    return Actor(
        name or _CLI_READER.id,
        _CLI_READER.roles,
        organization=organization,
        purpose=purpose or "operations",
    )


def _actor_options(parser: argparse.ArgumentParser) -> None:
    """``--as``, ``--org`` and ``--purpose``: who a reading command acts as (cli_actor)."""
    parser.add_argument(
        "--as",
        dest="as_actor",
        default=None,
        metavar="ID",
        help="act as this user id, recorded in the access log "
        "($REFERRALKIT_ACTOR; referralkit-cli)",
    )
    parser.add_argument(
        "--org",
        default=None,
        metavar="ORG",
        help="act for this organisation only ($REFERRALKIT_ORG; none: every referral)",
    )
    parser.add_argument(
        "--purpose",
        default=None,
        help="purpose of use recorded in the access log ($REFERRALKIT_PURPOSE; operations)",
    )


_PRIORITY_BY_RANK: Final = {p.rank: p for p in Priority}

_WORKLIST_COLUMNS: Final = (
    ("rank", 4, ">"),
    ("referral", 8, "<"),
    ("specialty", 16, "<"),
    ("priority", 8, "<"),
    ("status", 21, "<"),
    ("clock", 16, "<"),
    ("due", 10, "<"),
    ("left", 5, ">"),
    ("next action", 22, "<"),
    ("flags", 0, "<"),
)


def _row(cells: Sequence[str]) -> str:
    parts = [
        f"{cell:{align}{width}}" if width else cell
        for cell, (_, width, align) in zip(cells, _WORKLIST_COLUMNS, strict=True)
    ]
    return "  ".join(parts).rstrip()


def _most_at_risk(item: WorklistItem) -> ClockReading | None:
    """The running clock the item is ranked by (breached first, then least time left)."""
    running = [c for c in item.clocks if c.stopped_at is None]
    if not running:
        return None
    return min(running, key=lambda c: (not c.breached, c.fraction_remaining))


def _days_left(reading: ClockReading) -> str:
    """Whole days left on a clock, negative once breached (``-3d``: three days late)."""
    seconds = reading.remaining.total_seconds()
    if reading.breached:
        seconds = -(reading.as_of - reading.deadline).total_seconds()
    days = math.floor(seconds / 86400) if seconds < 0 else int(seconds // 86400)
    return f"{days}d"


def worklist_lines(items: Sequence[WorklistItem]) -> list[str]:
    """The worklist table: one row per item, in the order given, with the clock it is
    ranked by, its deadline and days left, the next action and the flags (no PHI)."""
    lines = [_row([name for name, _, _ in _WORKLIST_COLUMNS])]
    for rank, item in enumerate(items, start=1):
        clock = _most_at_risk(item)
        action = item.next_action
        lines.append(
            _row(
                [
                    str(rank),
                    item.referral_id[:8],
                    item.specialty,
                    _PRIORITY_BY_RANK[item.priority].value,
                    item.status.value,
                    clock.name.value if clock is not None else "-",
                    clock.deadline.date().isoformat() if clock is not None else "-",
                    _days_left(clock) if clock is not None else "-",
                    action.kind.value if action is not None else "-",
                    ", ".join(f.value for f in item.flags),
                ]
            )
        )
    return lines


def audit_lines(findings: Sequence[Finding]) -> list[str]:
    """The audit summary: findings counted by severity and kind (no PHI)."""
    from .discrepancies import Severity

    if not findings:
        return ["  no findings"]
    by_kind: dict[tuple[Severity, str], int] = {}
    for f in findings:
        by_kind[f.severity, f.kind.value] = by_kind.get((f.severity, f.kind.value), 0) + 1
    order = sorted(by_kind, key=lambda k: (-k[0].rank, k[1]))
    width = max(len(kind) for _, kind in order)
    return [f"  {sev.value:<6}  {kind:<{width}}  {by_kind[sev, kind]}" for sev, kind in order]


def _instant(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _clock_json(c: ClockReading) -> dict[str, Any]:
    return {
        "name": c.name.value,
        "key": c.key,
        "state": c.state.value,
        "start": _instant(c.start),
        "deadline": _instant(c.deadline),
        "remaining_seconds": c.remaining.total_seconds(),
        "fraction_remaining": c.fraction_remaining,
        "breached_at": _instant(c.breached_at),
        "at_risk": c.at_risk,
        "stopped_at": _instant(c.stopped_at),
    }


def _action_json(a: Action) -> dict[str, Any]:
    return {
        "kind": a.kind.value,
        "operation": a.operation,
        "reason": a.reason,
        "clock": a.clock.value if a.clock is not None else None,
        "due": _instant(a.due),
    }


def item_json(item: WorklistItem) -> dict[str, Any]:
    """A worklist item as JSON data (ids, codes, states and times: no PHI)."""
    return {
        "referral_id": item.referral_id,
        "status": item.status.value,
        "priority": _PRIORITY_BY_RANK[item.priority].value,
        "specialty": item.specialty,
        "owner": item.owner,
        "as_of": _instant(item.as_of),
        "next_action": _action_json(item.next_action) if item.next_action else None,
        "actions": [_action_json(a) for a in item.actions],
        "flags": [f.value for f in item.flags],
        "clocks": [_clock_json(c) for c in item.clocks],
        "delays": [
            {
                "clock": d.clock.value,
                "key": d.key,
                "cause": d.cause.value,
                "breached": d.breached,
                "since": _instant(d.since),
                "cause_since": _instant(d.cause_since),
                "deadline": _instant(d.deadline),
                "reason": d.reason,
            }
            for d in item.delays
        ],
        "rank_key": list(item.key),
    }


def finding_json(finding: Finding) -> dict[str, Any]:
    """An audit finding as JSON data (no PHI)."""
    return {
        "kind": finding.kind.value,
        "severity": finding.severity.value,
        "referral_id": finding.referral_id,
        "detail": finding.detail,
        "evidence": list(finding.evidence),
        "fix": finding.fix,
        "operation": finding.operation,
    }


def _worklist(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with ReferralDesk(open_store_to_read(args.db)) as desk:
        items = desk.worklist(
            cli_actor(args),
            as_of=args.as_of,
            limit=args.top,
            owner=args.owner,
            unassigned=args.unassigned,
            cause=args.cause,
            clock=args.clock,
            specialty=args.specialty,
        )
    if args.json:
        out.write(json.dumps([item_json(i) for i in items], indent=2) + "\n")
        return 0
    out.write("\n".join(worklist_lines(items)) + "\n")
    return 0


def _audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with ReferralDesk(open_store_to_read(args.db)) as desk:
        if args.json:
            out.write("[")
            for index, finding in enumerate(desk.audit(cli_actor(args), as_of=args.as_of)):
                out.write(("," if index else "") + "\n  " + json.dumps(finding_json(finding)))
            out.write("\n]\n")
            return 0
        findings = []
        for finding in desk.audit(cli_actor(args), as_of=args.as_of):
            findings.append(finding)
            out.write(
                f"{finding.severity.value:<6}  {finding.referral_id[:8]}  "
                f"{finding.kind.value}: {finding.detail}\n"
                f"        fix: {finding.fix}"
                + (f" ({finding.operation})" if finding.operation else "")
                + "\n"
            )
    out.write(f"{len(findings)} finding(s)\n")
    return 0


def _show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .alerts import active

    with ReferralDesk(open_store_to_read(args.db)) as desk:
        actor = cli_actor(args)
        referral_id = resolve_id(desk.store, args.id)
        referral = desk.get(actor, referral_id)
        history = desk.history(actor, referral_id)
        item = desk.assess(actor, referral_id, as_of=args.as_of)
        findings = list(desk.audit(actor, referral_id, as_of=args.as_of))
    alerts = active(history)
    if args.json:
        data = item_json(item)
        data["findings"] = [finding_json(f) for f in findings]
        data["alerts"] = [
            {"ruleset": a.ruleset, "rule_id": a.rule_id, "action": a.action, "reason": a.reason}
            for a in alerts.values()
        ]
        out.write(json.dumps(data, indent=2) + "\n")
        return 0
    due = referral.due_by
    lines = [
        f"referral {referral.id}",
        f"  status     {referral.status.value} (version {referral.version}, {len(history)} events)",
        f"  specialty  {referral.specialty}",
        f"  priority   {referral.effective_priority.value}"
        + (f", due {due:%Y-%m-%d %H:%M} UTC" if due is not None else ""),
        f"  owner      {referral.owner or '-'}",
        f"  flags      {', '.join(f.value for f in item.flags) or '-'}",
        f"clocks (as of {item.as_of:%Y-%m-%d %H:%M} UTC)",
    ]
    for c in item.clocks:
        left = _days_left(c) if c.stopped_at is None else "stopped"
        lines.append(
            f"  {c.name.value:<16}  {c.state.value:<8}  deadline {c.deadline:%Y-%m-%d %H:%M}"
            f"  {left}"
        )
    lines.append("delays")
    lines += [
        f"  {d.clock.value}: {d.cause.value}, {'breached' if d.breached else 'at risk'} "
        f"since {d.since:%Y-%m-%d} ({d.reason})"
        for d in item.delays
    ] or ["  -"]
    lines.append("next actions")
    lines += [
        f"  {index}. {a.kind.value} -> desk.{a.operation}: {a.reason}"
        for index, a in enumerate(item.actions, start=1)
    ] or ["  -"]
    lines.append("alerts")
    lines += [f"  {a.rule_id}: {a.action} ({a.reason})" for a in alerts.values()] or ["  -"]
    lines.append("audit")
    lines += [f"  {f.severity.value}: {f.kind.value}: {f.detail}" for f in findings] or ["  -"]
    out.write("\n".join(lines) + "\n")
    return 0


# --------------------------------------------------------------------------- directory (issue 14)

_NPPES_HEADER: Final = ("NPI", "Entity Type Code")


def _is_nppes(path: Path) -> bool:
    """An NPPES data file: a CSV whose header starts ``"NPI","Entity Type Code"``."""
    import csv

    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            first = handle.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False  # the FHIR reader reports it, with its reason
    header = next(csv.reader([first]), [])  # one line: csv raises nothing on it
    return tuple(h.strip() for h in header[:2]) == _NPPES_HEADER


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read through it (progress of a streamed load)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _load_nppes_file(directory: Any, path: Path, err: TextIO) -> Any:
    from .directory import load_nppes

    size = max(1, path.stat().st_size // 1024)
    counting = _CountingReader(path.open("rb"))
    with (
        io.TextIOWrapper(io.BufferedReader(counting), encoding="utf-8", newline="") as text,
        Ticker(err, size, f"kB of {path.name}") as ticker,
    ):
        return load_nppes(
            directory, text, progress=lambda rows: ticker.update(counting.count // 1024)
        )


def _directory_load(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .directory import LoadReport, load_fhir, open_directory

    files = [Path(name) for name in args.files]
    for path in files:
        if not path.is_file():
            raise ValidationError("FILE", f"{path}: no such file")
    nppes = [p for p in files if _is_nppes(p)]
    fhir = [p for p in files if p not in nppes]
    open_store(args.db).close()  # the store's migrations create the directory's tables
    directory = open_directory(args.db)
    reports: list[LoadReport] = []
    try:
        if fhir:
            # one load for every FHIR file: a reference may point to a file loaded later
            with Ticker(err, len(fhir), "FHIR files") as ticker:
                reports.append(load_fhir(directory, *fhir, progress=ticker.update))
        for path in nppes:
            reports.append(_load_nppes_file(directory, path, err))
    finally:
        directory.close()
    added: dict[str, int] = {}
    for report in reports:
        for kind, count in report.added.items():
            added[kind] = added.get(kind, 0) + count
    refused = [r for report in reports for r in report.refused]
    dangling = [d for report in reports for d in report.dangling]
    skipped = sum(report.skipped.get("deactivated", 0) for report in reports)
    loaded = ", ".join(f"{count} {kind}" for kind, count in sorted(added.items())) or "nothing"
    lines = [
        f"{_safe_url(args.db)}: loaded {sum(added.values())} entries ({loaded}) "
        f"from {len(fhir)} FHIR and {len(nppes)} NPPES file(s)",
        f"refused: {len(refused)}",
        *(f"  {refusal}" for refusal in refused),
    ]
    if skipped:
        lines.append(f"skipped: {skipped} deactivated NPI(s)")
    if dangling:
        lines.append(f"unresolved references: {len(dangling)}")
        lines += [f"  {reference}" for reference in dangling]
    out.write("\n".join(lines) + "\n")
    return 0


def _add_coordination_commands(commands: Any) -> None:
    """``worklist``, ``audit`` and ``show``: read-only views of a store."""
    from .clocks import Cause, ClockName

    listing = commands.add_parser(
        "worklist",
        help="the open referrals most at risk first, with next actions, clocks and flags",
        description="Rank the open referrals of --db: a breached clock first, then the least "
        "time left relative to the clock's window, then priority. Each row names the clock "
        "it is ranked by, its deadline, the days left (negative: late), the next action and "
        "the flags. Read-only: a store that does not exist is an error.",
    )
    listing.add_argument("--db", required=True, help="store URL to read")
    listing.add_argument("--owner", default=None, metavar="ID", help="only this owner's")
    listing.add_argument("--unassigned", action="store_true", help="only those nobody owns")
    listing.add_argument(
        "--cause", choices=[c.value for c in Cause], help="only those delayed for this cause"
    )
    listing.add_argument(
        "--clock", choices=[c.value for c in ClockName], help="only those delayed on this clock"
    )
    listing.add_argument("--specialty", default=None, help="only this specialty")
    listing.add_argument(
        "--as-of", type=_instant_arg, default=None, metavar="T", help="read clocks at T (now)"
    )
    listing.add_argument("--top", type=_positive, default=50, help="rows (50)")
    listing.add_argument("--json", action="store_true", help="JSON, one object per row")
    _actor_options(listing)
    listing.set_defaults(handler=_worklist)

    auditing = commands.add_parser(
        "audit",
        help="check every referral's record for discrepancies",
        description="Audit the records of --db: each finding with its severity, what shows it "
        "and the fix (the desk operation that performs it). Read-only.",
    )
    auditing.add_argument("--db", required=True, help="store URL to read")
    auditing.add_argument(
        "--as-of", type=_instant_arg, default=None, metavar="T", help="audit as of T (now)"
    )
    auditing.add_argument("--json", action="store_true", help="a JSON array of findings")
    _actor_options(auditing)
    auditing.set_defaults(handler=_audit)

    showing = commands.add_parser(
        "show",
        help="one referral: status, clocks, delays, next actions, alerts, audit",
        description="Show the referral ID (or the one whose id starts with ID) of --db, "
        "without PHI. Read-only.",
    )
    showing.add_argument("id", metavar="ID", help="a referral id or a unique start of one")
    showing.add_argument("--db", required=True, help="store URL to read")
    showing.add_argument(
        "--as-of", type=_instant_arg, default=None, metavar="T", help="as of T (now)"
    )
    showing.add_argument("--json", action="store_true", help="JSON")
    _actor_options(showing)
    showing.set_defaults(handler=_show)

    logging_ = commands.add_parser(
        "access-log",
        help="who read, exported or was refused which referrals, when (auditors)",
        description="Print the access log of --db (referralkit.access), oldest first: each "
        "read, query, export, denial and break-glass grant or use, with who, which referrals, "
        "the outcome and the purpose; flagged records (break-glass, denials) are marked for "
        "review. Read-only; the read is itself recorded.",
    )
    logging_.add_argument("--db", required=True, help="store URL to read")
    logging_.add_argument("--actor", default=None, metavar="ID", help="only this user's")
    logging_.add_argument(
        "--referral", default=None, metavar="ID", help="only those naming this referral"
    )
    logging_.add_argument(
        "--since", type=_instant_arg, default=None, metavar="T", help="from T (inclusive)"
    )
    logging_.add_argument("--until", type=_instant_arg, default=None, metavar="T", help="before T")
    logging_.add_argument("--flagged", action="store_true", help="only those flagged for review")
    logging_.add_argument(
        "--outcome", choices=["allowed", "denied", "break_glass"], help="only this outcome"
    )
    logging_.add_argument("--limit", type=_positive, default=None, help="at most N records")
    logging_.add_argument("--json", action="store_true", help="a JSON array of records")
    _actor_options(logging_)
    logging_.set_defaults(handler=_access_log)

    verifying = commands.add_parser(
        "verify",
        help="check the access log's and the events' hash chains and their checkpoints",
        description="Recompute the hash chains of the access log and of the events of --db, "
        "check every event's seal, and check every checkpoint (recorded in the log, and in "
        "--checkpoints FILE) against them and, with --public-key, its Ed25519 signature. "
        "Needs no key ring. Prints the first broken link (record N or event N) and exits 1 "
        "when the log or the events were edited, reordered, deleted from or truncated past "
        "a checkpoint.",
    )
    verifying.add_argument("--db", required=True, help="store URL to read")
    verifying.add_argument(
        "--checkpoints", default=None, metavar="FILE", help="checkpoints kept outside the store"
    )
    verifying.add_argument(
        "--public-key", default=None, metavar="PEM", help="Ed25519 public key of the checkpoints"
    )
    verifying.set_defaults(handler=_verify)

    marking = commands.add_parser(
        "checkpoint",
        help="record the chains' heads, signed, in the log and a file kept elsewhere",
        description="Record the heads of the access log's and the events' hash chains of "
        "--db as a checkpoint, "
        "signed with --signing-key (Ed25519, PEM) when given, and append it to --out. "
        "--new-key FILE writes a new key pair (FILE, mode 600, and FILE.pub) and exits.",
    )
    marking.add_argument("--db", default=None, help="store URL")
    marking.add_argument("--signing-key", default=None, metavar="PEM", help="private key")
    marking.add_argument("--out", default=None, metavar="FILE", help="append it to FILE")
    marking.add_argument("--new-key", default=None, metavar="FILE", help="write a key pair")
    marking.set_defaults(handler=_checkpoint)


def _verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .tamper import read_checkpoints, verify

    marks = [] if args.checkpoints is None else read_checkpoints(args.checkpoints)
    key = None if args.public_key is None else Path(args.public_key).read_bytes()
    with open_store_to_read(args.db) as store:
        report = verify(store, checkpoints=marks, public_key=key)
    if report.ok:
        out.write(
            f"ok: {report.records} records, {report.events} events, "
            f"{report.checkpoints} checkpoint(s)\n"
        )
        return EXIT_OK
    where = "event" if report.broken_in == "events" else "record"
    out.write(
        f"BROKEN at {where} {report.broken_at}: {report.reason} "
        f"({report.records} records, {report.events} events read, "
        f"{report.checkpoints} checkpoint(s) checked)\n"
    )
    return EXIT_PROBLEMS


def _checkpoint(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .storage._files import create_private
    from .tamper import checkpoint, new_signing_key

    if args.new_key is not None:
        private, public = new_signing_key()
        if not create_private(args.new_key):
            raise ValidationError("--new-key", "the file exists already; choose another")
        Path(args.new_key).write_bytes(private)
        Path(args.new_key + ".pub").write_bytes(public)
        out.write(f"wrote {args.new_key} (private, mode 600) and {args.new_key}.pub\n")
        return EXIT_OK
    if args.db is None:
        raise ValidationError("--db", "a store URL is needed")
    key = None if args.signing_key is None else Path(args.signing_key).read_bytes()
    with open_store_to_read(args.db) as store:
        mark = checkpoint(store, signing_key=key, out=args.out)
    signed = "signed" if mark.signature else "unsigned"
    out.write(
        f"checkpoint at record {mark.seq} and event {mark.events_seq} ({signed}): {mark.chain}\n"
    )
    return EXIT_OK


def _access_log(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with ReferralDesk(open_store_to_read(args.db)) as desk:
        referral_id = args.referral
        if referral_id is not None:
            # a unique start of an id, as the other commands take; an unknown id as given
            with contextlib.suppress(NotFoundError):
                referral_id = resolve_id(desk.store, referral_id)
        records = desk.access_log(
            cli_actor(args),
            actor_id=args.actor,
            referral_id=referral_id,
            since=args.since,
            until=args.until,
            outcome=args.outcome,
            flagged=True if args.flagged else None,
            limit=args.limit,
        )
    if args.json:
        out.write(json.dumps([r.to_json() for r in records], indent=2) + "\n")
        return 0
    for r in records:
        ids = ",".join(i[:8] for i in r.referral_ids[:5])
        if len(r.referral_ids) > 5:
            ids += f",+{len(r.referral_ids) - 5}"
        out.write(
            f"{r.seq:>6}  {r.at:%Y-%m-%d %H:%M:%S}  {r.actor}  {r.organization or '-'}  "
            f"{r.action}  {r.outcome.value}  {ids or '-'}  {r.purpose or '-'}"
            + ("  FLAGGED" if r.flagged else "")
            + "\n"
        )
    out.write(f"{len(records)} record(s)\n")
    return 0


def _match(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .directory import match, open_directory

    with open_store_to_read(args.db) as store:
        referral = store.load(resolve_id(store, args.id))
    directory = open_directory(args.db)
    try:
        as_of = args.as_of or dt.datetime.now(dt.UTC)
        result = match(referral, directory, as_of=as_of, limit=args.limit, excluded=args.excluded)
    finally:
        directory.close()
    if args.json:
        data = {
            "referral": referral.id,
            "specialty": result.specialty,
            "networks": None if result.networks is None else sorted(result.networks),
            "considered": result.considered,
            "ranked": [
                {
                    "rank": c.rank,
                    "reference": c.reference,
                    "name": c.name,
                    "score": c.score,
                    "network": c.network.value,
                    "specialty": c.specialty,
                    "distance_km": c.distance_km,
                    "reasons": [
                        {"factor": r.factor, "points": r.points, "text": r.text} for r in c.reasons
                    ],
                }
                for c in result.ranked
            ],
            "excluded_count": result.excluded_count,
            "excluded_by": dict(result.excluded_by),
            "excluded": [
                {"reference": x.reference, "name": x.name, "reasons": list(x.reasons)}
                for x in result.excluded
            ],
        }
        out.write(json.dumps(data, indent=2) + "\n")
        return 0
    networks = "any" if result.networks is None else ", ".join(sorted(result.networks)) or "none"
    lines = [
        f"Referral {referral.id}: specialty {result.specialty}, networks {networks}; "
        f"{result.considered} considered, {len(result.ranked)} ranked, "
        f"{result.excluded_count} excluded",
        "",
    ]
    if result.ranked:
        rows = [("rank", "score", "provider", "name", "network")] + [
            (str(c.rank), f"{c.score:g}", c.reference, c.name, c.network.value)
            for c in result.ranked
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for index, row in enumerate(rows):
            cells = [f"{cell:<{widths[i]}}" for i, cell in enumerate(row[:4])] + [row[4]]
            lines.append("  ".join(cells).rstrip())
            if index:
                lines += [f"      {reason}" for reason in result.ranked[index - 1].reasons]
    else:
        lines.append("No candidate.")
    if result.excluded_count:
        why = {
            "network": f"not in the coverage networks ({networks})",
            "language": "does not speak the patient's language, no interpreter",
            "accepting": "not accepting new patients",
            "distance": "too far",
        }
        lines += ["", f"Excluded: {result.excluded_count}"]
        lines += [f"  {n:>6}  {why.get(f, f)}" for f, n in result.excluded_by.items()]
        if result.excluded:
            listed = len(result.excluded)
            more = (
                ""
                if listed == result.excluded_count
                else f" of {result.excluded_count} (--excluded all lists every one)"
            )
            lines += ["", f"Excluded, {listed}{more}"]
        for exclusion in result.excluded:
            lines.append(f"  {exclusion.reference}  {exclusion.name}")
            lines += [f"      {reason}" for reason in exclusion.reasons]
    out.write("\n".join(lines) + "\n")
    return 0


def _add_directory_commands(commands: Any) -> None:
    """``directory load`` and ``match``."""
    directory = commands.add_parser(
        "directory",
        help="the provider directory stored with the referrals",
        description="The provider directory, in the referral store's database.",
    )
    directory_commands = directory.add_subparsers(
        dest="directory_command", required=True, metavar="COMMAND"
    )
    loading = directory_commands.add_parser(
        "load",
        help="load Plan-Net FHIR resources and NPPES files into the directory",
        description="Load provider directory files into the store's directory: FHIR R4 "
        "Plan-Net resources (one per file, in any order: a reference may point to a "
        "resource in a later file; or Bundles; or NDJSON) and NPPES data files (CSV, "
        "recognised by their header). Progress goes to standard error; the summary "
        "lists what was loaded and every refused resource or row with its reason. "
        "Creates the store if needed.",
    )
    loading.add_argument("--db", required=True, metavar="URL", help="store URL")
    loading.add_argument("files", nargs="+", metavar="FILE", help="files to load")
    loading.set_defaults(handler=_directory_load)

    matching = commands.add_parser(
        "match",
        help="rank the directory's providers for a referral, with reasons",
        description="Rank the providers of the store's directory who can take the "
        "referral ID (or the first characters of its id), with the reasons for each rank "
        "and for each exclusion. Reads only: a store that does not exist is an error.",
    )
    matching.add_argument("--db", required=True, metavar="URL", help="store URL")
    matching.add_argument("id", metavar="ID", help="referral id, or its first characters")
    matching.add_argument("--limit", type=_positive, default=10, help="candidates to rank")
    matching.add_argument(
        "--as-of", type=_instant_arg, default=None, metavar="T", help="instant (default: now)"
    )
    matching.add_argument("--json", action="store_true", help="JSON instead of a table")
    matching.add_argument(
        "--excluded",
        type=_count_or_all,
        default=20,
        metavar="N|all",
        help="excluded providers to list with their reasons (20; all are counted by reason); "
        "'all' lists every one, out-of-network ones too",
    )
    matching.set_defaults(handler=_match)


def _count_or_all(text: str) -> int | None:
    return None if text == "all" else _non_negative(text)


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
    dumping = db_commands.add_parser(
        "dump",
        help="write every referral with its whole history as a JSON-lines dump",
        description="Write the store's dump (storage.dump), its access log with its hash chain "
        "included: to FILE (mode 0600, replaced "
        "when complete) or to standard output. Reads the store in pages.",
    )
    dumping.add_argument("url", metavar="URL")
    dumping.add_argument("file", metavar="FILE", nargs="?", help="where to write (default: stdout)")
    dumping.set_defaults(handler=_db_dump)
    add_keys_commands(commands)

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
        description="Load and check each file: refusals (limits included), rules that can "
        "never fire, overlaps under 'unique' and 'any', and (with --engine durable) what the "
        "durable engine cannot hold. A file that passes decides every referral without an "
        "error. Exit status 1 on any error (with --strict, any warning).",
    )
    checking.add_argument("paths", nargs="+", metavar="PATH")
    checking.add_argument("--strict", action="store_true", help="warnings fail too")
    checking.add_argument(
        "--engine",
        choices=("python", "durable"),
        action="append",
        help="an engine the rules will run on (repeatable; default: python)",
    )
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
    diffing.add_argument(
        "--all", action="store_true", help="print unchanged rows too (default: changed rows)"
    )
    diffing.set_defaults(handler=_rules_diff)
    testing = rule_commands.add_parser(
        "test",
        help="property-test ruleset files; exit 0 only when every check holds",
        description="Run the property checks of referralkit.testing (totality, determinism, "
        "rules fire, no conflicts, effective dates, monotonic urgency, engines agree) on "
        "referrals drawn from the rules themselves. The coverage files form one coverage "
        "policy and the urgency files one urgency policy, consulted in the order given. "
        "Counterexamples print as JSON. Exit status 1 when a check fails. Needs the test "
        "extra (hypothesis).",
    )
    testing.add_argument("paths", nargs="+", metavar="FILE")
    testing.add_argument(
        "--examples", type=_positive, default=200, help="referrals per check (200)"
    )
    testing.add_argument("--json", action="store_true", help="print every result as JSON")
    testing.add_argument(
        "--no-fallback",
        action="store_true",
        help="a decision made only by a catch-all rule counts as undecided",
    )
    testing.set_defaults(handler=_rules_test)
    listing_facts = rule_commands.add_parser(
        "facts",
        help="list every fact a rule may test, with its type and example values",
        description="Every fact a condition may name, its type, example values (with FILE "
        "arguments: the values those rules compare it with) and what it means.",
    )
    listing_facts.add_argument("paths", nargs="*", metavar="FILE")
    listing_facts.add_argument("--json", action="store_true", help="print the facts as JSON")
    listing_facts.set_defaults(handler=_rules_facts)
    explaining = rule_commands.add_parser(
        "explain",
        help="why a stored referral got its coverage decision and urgency",
        description="Show, for the referral ID (or the one whose id starts with ID) of --db, "
        "the policy version each stored decision was made with, the rules that fired and why "
        "the others did not, and whether the stored rules still give the stored outputs; "
        "with --as-of, also the referral decided again with the policy in use at T. Read-only; "
        "no PHI.",
    )
    explaining.add_argument("id", metavar="ID", help="a referral id or a unique start of one")
    explaining.add_argument("--db", required=True, help="store URL to read")
    explaining.add_argument(
        "--as-of",
        type=_instant_arg,
        default=None,
        metavar="T",
        help="also replay with the policy in use at T",
    )
    explaining.add_argument("--json", action="store_true", help="JSON")
    explaining.set_defaults(handler=_rules_explain)

    fhir = commands.add_parser(
        "fhir",
        help="import and export FHIR R4 Bundles (the fhir extra)",
        description="FHIR R4: one transaction Bundle per referral, as NDJSON.",
    )
    fhir_commands = fhir.add_subparsers(dest="fhir_command", required=True, metavar="COMMAND")
    importing = fhir_commands.add_parser(
        "import",
        help="store the referrals of FHIR Bundles (NDJSON, or one Bundle as JSON)",
        description="Read FILE (- for standard input, copied to a temporary file first): "
        "one Bundle as a JSON document, or NDJSON with one Bundle per line, read a line at a "
        "time. Every Bundle is converted and checked before anything is written; any failure "
        "names the line and exits 2 with the store unchanged. Then the file is read again "
        f"and its referrals are written {IMPORT_BATCH} per transaction. Referrals whose "
        "ServiceRequest identifier or id is already stored are skipped, so importing a file "
        "twice adds nothing the second time, and if an import stops while writing (a crash, "
        "a full disk, Ctrl-C), the batches written so far stay: run the same command again "
        "to complete it. Input is bounded (the --max options): a larger Bundle, line or "
        "input, or /dev/zero, is refused with exit status 2 before it is read further.",
    )
    importing.add_argument("file", metavar="FILE", help="the Bundles to read; - for stdin")
    importing.add_argument("--db", required=True, help="store URL to write referrals to")
    importing.add_argument(
        "--max-bundle-bytes",
        type=_positive,
        default=_DEFAULT_LIMITS["bundle_bytes"],
        metavar="N",
        help="refuse a Bundle (a JSON document, or one NDJSON line) larger than N bytes "
        f"({_DEFAULT_LIMITS['bundle_bytes']:,})",
    )
    importing.add_argument(
        "--max-total-bytes",
        type=_positive,
        default=_DEFAULT_LIMITS["total_bytes"],
        metavar="N",
        help=f"refuse input larger than N bytes in all ({_DEFAULT_LIMITS['total_bytes']:,})",
    )
    importing.add_argument(
        "--max-entries",
        type=_positive,
        default=_DEFAULT_LIMITS["entries"],
        metavar="N",
        help=f"refuse a Bundle with more than N entries ({_DEFAULT_LIMITS['entries']:,})",
    )
    importing.set_defaults(handler=_fhir_import)
    exporting = fhir_commands.add_parser(
        "export",
        help="write referrals as FHIR Bundles, one per line (NDJSON) on stdout",
        description="Write every referral of the store (or those --id names), in id order, "
        "as one compact FHIR R4 transaction Bundle per line, each validated with "
        "fhir.resources unless --no-validate. The store is read in pages and each Bundle "
        "written as it is made; a referral that cannot be exported stops the export after "
        "the Bundles before it.",
    )
    exporting.add_argument("--db", required=True, help="store URL to read referrals from")
    exporting.add_argument(
        "--id",
        dest="ids",
        action="append",
        metavar="ID",
        help="export this referral only (repeat for several)",
    )
    exporting.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip the fhir.resources validation of each Bundle (several times faster)",
    )
    _actor_options(exporting)
    exporting.set_defaults(handler=_fhir_export)

    # no import of referralkit.messages here: Jinja2 and Babel load only for this command
    messaging = commands.add_parser(
        "message",
        help="print the patient message for a moment of a referral",
        description="Render the message a patient (or, for consult-note, the referrer) gets "
        "at MOMENT, in their preferred language unless --lang says otherwise; 'coverage' "
        "picks the coverage moment from the referral's decision. Nothing is sent.",
    )
    messaging.add_argument("id", metavar="ID", help="the referral id")
    messaging.add_argument("--db", required=True, help="store URL to read the referral from")
    messaging.add_argument(
        "--moment",
        required=True,
        help="received, coverage (or covered, prior-auth-needed, not-covered, self-pay, "
        "coverage-pending), auth-requested, auth-approved, auth-denied, booked, reminder, "
        "missed, delayed, consult-note",
    )
    messaging.add_argument("--lang", default=None, help="language tag (default: the reader's)")
    messaging.add_argument("--timezone", default="UTC", help="IANA zone for visit times (UTC)")
    messaging.add_argument("--html", action="store_true", help="print the HTML part")
    messaging.add_argument(
        "--cause",
        help="why it is late, for delayed: administrative, insurance, communication, "
        "scheduling or patient",
    )
    messaging.add_argument("--new-date", type=_date, help="new expected date (delayed)")
    messaging.set_defaults(handler=_message)
    _add_analytics_commands(commands)
    _add_coordination_commands(commands)
    _add_directory_commands(commands)
    return parser


def _exit_status(code: object) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_ERROR


def _os_error(exc: OSError) -> str:
    """What failed, without the message's own wording (the errno's text and the file)."""
    reason = exc.strerror or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    0 on success; 2 for a bad command line, a :class:`~referralkit.errors.ReferralKitError` or
    a file that cannot be read or written (reported on stderr as
    ``referralkit: error: <message>``, never as a traceback); 1 when ``rules check`` finds a
    problem; 130 when interrupted. See the module's documentation for every case.
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
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("referralkit: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``referralkit demo | head``): stop quietly, and point stdout
        # at devnull so the interpreter's final flush does not fail again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_PROBLEMS
    except OSError as exc:  # a full disk, an unreadable file: no traceback
        err.write(f"referralkit: error: {_os_error(exc)}\n")
        return EXIT_ERROR
