"""Event rules: patterns over a referral's events in time.

A coverage or urgency rule looks at one referral at one moment. An event rule looks at what
happened to it, and when: "authorization requested (expedited) and no decision within 72
hours", "received and not scheduled inside the urgency window", "three no-shows within 180
days". Two evaluators give the same answers (a differential property test holds them to it):
a pure-Python one, which runs everywhere, and one on durable-rules (a Rete engine, the tool
for the job where it is installed), through the safe adapter of
:mod:`referralkit.rules.durable`. :class:`EventRules` takes ``engine="python"``,
``"durable"`` or ``"auto"`` (the default: durable-rules when it can be imported, else Python;
durable-rules does not install on Python 3.13).

**Signals.** Each stored :class:`~referralkit.model.ReferralEvent` becomes zero or one signal
(:data:`SIGNALS`): a status it entered (``received``, ``scheduled``, ``no_show``...),
``auth_requested`` (with ``expedited``), ``auth_decided`` (with ``status``),
``urgency_assessed`` (with ``priority`` and the ``due_by`` time). A terminal status closes the
referral: what was kept for it is dropped.

**Patterns.** Two, in TOML (``kind = "event"``)::

    [[rules]]
    id = "auth-expedited-72h"
    citation = "CMS-0057-F"
    # a start signal and no stop signal after it, within a window...
    deadline = { start = { signal = "auth_requested", expedited = true },
                 stop = ["auth_decided"], within = "72h" }
    then = { action = "escalate", reason = "no decision on an expedited request in 72 h" }

    [[rules]]
    id = "not-scheduled-in-window"
    # ...or by a time another signal carries (the latest such signal counts)
    deadline = { start = "received", stop = ["scheduled"], by = "urgency_assessed.due_by" }
    then = { action = "escalate" }

    [[rules]]
    id = "three-no-shows"
    # a signal seen `times` times, the first and last at most `within` apart
    count = { signal = "no_show", times = 3, within = "180d" }
    then = { action = "outreach" }

A signal is a name, or a table ``{ signal = name, <attribute> = value, ... }`` that also
requires attribute values. Durations are a whole number and a unit: ``s``, ``m``, ``h``,
``d`` (24 hours: calendar days, not business days) or ``w``, at most :data:`MAX_WINDOW`
seconds. A rule's ``then`` sets ``action`` (``escalate``, ``outreach`` or ``notify``) and
``reason``; ``valid_from`` / ``valid_to`` apply to the (UTC) date of the moment evaluated.

**Breaches stay.** A deadline is breached when it passes with no stop signal before it; a
stop that arrives after the deadline (a late payer decision, a late booking) does not undo
the breach, and neither does a new ``by`` time that arrives after the old one passed: the
alert stays in every later answer, at the time the breach happened. (The new deadline of a
new request is watched too; each rule is reported once, at its earliest breach.)

**Time is injected.** :meth:`EventRules.due` evaluates at the ``now`` it is given; no
wall-clock timer exists anywhere, so the same history and the same ``now`` always give the
same alerts. Every due alert is reported on every call; the caller keeps what it has already
acted on.

In the ruleset the patterns are the rules' ``when``: :class:`Deadline` and :class:`Count` are
named tuples, so the ruleset's version hash (which normalises tuples) covers them like any
condition, and no change to the model was needed.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import threading
from collections.abc import Iterable
from typing import Any, Final, Literal

import attrs

from ..errors import RulesError, ValidationError
from ..model import ReferralEvent
from ._events_durable import DurablePatterns
from ._events_python import PythonPatterns
from ._patterns import (
    _TERMINAL,
    Count,
    Deadline,
    Observed,
    Signal,
    SignalSpec,
    micros,
    moment,
    parse_event_ruleset,
    pattern_of,
    signals,
)
from ._patterns import MAX_TIMES as _MAX_TIMES
from ._patterns import MAX_WINDOW as _MAX_WINDOW
from ._patterns import SIGNALS as _SIGNALS
from .durable import SESSION_LIMIT
from .facts import utc
from .limits import require
from .model import Kind, Ruleset

__all__ = [
    "MAX_TIMES",
    "MAX_WINDOW",
    "SIGNALS",
    "Alert",
    "Count",
    "Deadline",
    "EventEngine",
    "EventRules",
    "Signal",
    "SignalSpec",
    "durable_available",
    "parse_event_ruleset",
    "pattern_of",
    "signals",
]

SIGNALS: Final = _SIGNALS
"""Every signal a pattern may name, with its attributes. Terminal statuses are not signals:
they close the referral."""

MAX_WINDOW: Final = _MAX_WINDOW
"""The longest window a pattern may have, in seconds (about a century)."""

MAX_TIMES: Final = _MAX_TIMES
"""The most repetitions a ``count`` pattern may ask for (each is a join in the Rete)."""

EventEngine = Literal["auto", "python", "durable"]
"""Which evaluator :class:`EventRules` uses."""


def durable_available() -> bool:
    """Whether durable-rules can be imported here (it does not install on Python 3.13)."""
    try:
        return importlib.util.find_spec("durable") is not None
    except (ImportError, ValueError):  # pragma: no cover - a broken installation
        return False


# --------------------------------------------------------------------------- alerts


@attrs.frozen
class Alert:
    """An event rule that is due: what to do about a referral, why, and since when."""

    rule_id: str
    ruleset: str
    version: str
    referral_id: str
    action: str
    reason: str
    at: dt.datetime
    """When the pattern became due (the deadline passed, the last repetition happened)."""


@attrs.define
class _Case:
    """What is known of one open referral: its signals, in history order (kept in Python so
    that a durable session can be rebuilt: after eviction, or after the host was rebuilt)."""

    signals: list[Observed] = attrs.field(factory=list)
    last: tuple[int, int] | None = None
    seq: int = 0


_DEFAULT_SESSIONS: Final = 500


class EventRules:
    """An event ruleset, evaluated per referral.

    :meth:`observe` feeds a referral's stored events, :meth:`due` says which rules are due at
    an injected ``now``, :meth:`close` forgets the referral (observe does it on a terminal
    status). Thread-safe.

    ``engine`` picks the evaluator: ``"python"`` (pure Python, everywhere), ``"durable"``
    (durable-rules; a :class:`~referralkit.errors.RulesError` when it is not installed) or
    ``"auto"`` (durable-rules when it can be imported, else Python). Both give the same
    alerts; :attr:`engine` says which one runs.

    On durable-rules each open referral has a durable session, and at most ``max_sessions``
    of this engine's are live (least recently used first out; each costs about 260 KB of C
    memory with the shipped rules); an evicted referral's signals stay here and are replayed
    into a fresh session when it is next used. Across every engine of a ruleset, the adapter
    keeps at most :data:`~referralkit.rules.durable.SESSION_LIMIT` live (durable's own limit
    is 1,024), and deletes the sessions of an engine that is garbage-collected.
    ``max_sessions`` does not apply to the Python evaluator, which holds no sessions.
    """

    def __init__(
        self,
        ruleset: Ruleset,
        *,
        engine: EventEngine = "auto",
        max_sessions: int = _DEFAULT_SESSIONS,
    ) -> None:
        if not isinstance(ruleset, Ruleset) or ruleset.kind is not Kind.EVENT:
            kind = ruleset.kind.value if isinstance(ruleset, Ruleset) else type(ruleset).__name__
            name = ruleset.name if isinstance(ruleset, Ruleset) else "?"
            raise RulesError(f"ruleset {name!r} is a {kind} ruleset, not event")
        if (
            not isinstance(max_sessions, int)
            or isinstance(max_sessions, bool)
            or not 1 <= max_sessions <= SESSION_LIMIT
        ):
            raise RulesError(
                f"max_sessions must be from 1 to {SESSION_LIMIT} (durable's session limit)"
            )
        require(ruleset)
        if engine not in ("auto", "python", "durable"):
            raise RulesError(f"unknown event engine {engine!r} (auto, python, durable)")
        self.ruleset = ruleset
        self.max_sessions = max_sessions
        self.name = f"rk.e.{ruleset.name}.{ruleset.version}"
        """The durable ruleset name: a changed ruleset (new version) gets a fresh one."""
        self._rules = ruleset.rules
        self._order = {rule.id: i for i, rule in enumerate(ruleset.rules)}
        patterns = [pattern_of(rule) for rule in ruleset.rules]
        if engine == "auto":
            engine = "durable" if durable_available() else "python"
        self.engine: Literal["python", "durable"] = engine
        """The evaluator in use: ``"python"`` or ``"durable"``."""
        self._durable: DurablePatterns | None = None
        self._python: PythonPatterns | None = None
        if engine == "durable":
            self._durable = DurablePatterns(ruleset, patterns, max_sessions)
            self._lock: Any = self._durable.lock
        else:
            self._python = PythonPatterns(patterns)
            self._lock = threading.RLock()
        self._cases: dict[str, _Case] = {}

    def __repr__(self) -> str:
        return (
            f"EventRules({self.ruleset.name!r}, version={self.ruleset.version!r}, "
            f"engine={self.engine!r})"
        )

    # ------------------------------------------------------------- bookkeeping

    def sid(self, referral_id: str) -> str:
        """The durable session id of a referral (on the python evaluator: the id itself)."""
        return self._durable.sid(referral_id) if self._durable is not None else referral_id

    @property
    def open(self) -> frozenset[str]:
        """The referrals observed and not closed."""
        with self._lock:
            return frozenset(self._cases)

    @property
    def sessions(self) -> int:
        """How many durable sessions this engine holds live now (0 on the python
        evaluator)."""
        with self._lock:
            return self._durable.sessions if self._durable is not None else 0

    def has_session(self, referral_id: str) -> bool:
        """Whether durable itself holds a session for the referral (asks durable; ``False``
        on the python evaluator)."""
        return self._durable is not None and self._durable.has_session(referral_id)

    # ------------------------------------------------------------- the API

    def observe(self, referral_id: str, events: Iterable[ReferralEvent]) -> None:
        """Feed a referral's stored events (oldest first; ones already seen, by version and
        index, are skipped, so the whole history may be passed again). A terminal status
        closes the referral."""
        batch = sorted(events, key=lambda e: (e.version, e.index))
        for event in batch:
            if event.referral_id != referral_id:
                raise ValidationError("events", "an event of another referral")
        with self._lock:
            case = self._cases.get(referral_id) or _Case()
            fresh: list[Observed] = []
            for event in batch:
                key = (event.version, event.index)
                if case.last is not None and key <= case.last:
                    continue
                case.last = key
                found = signals(event)
                if found is None:
                    continue
                name, attributes = found
                if name == _TERMINAL:
                    self.close(referral_id)
                    return
                case.seq += 1
                kept = {k: v for k, v in attributes.items() if v is not None}
                at = micros(event.at, "events.at")
                fresh.append(Observed(case.seq, name, at, kept))
            self._cases[referral_id] = case
            if not fresh:
                return
            case.signals.extend(fresh)
            if self._durable is not None:
                self._durable.add(referral_id, case.signals, fresh)

    def due(self, referral_id: str, now: dt.datetime) -> list[Alert]:
        """The alerts due for the referral at ``now`` (any timezone-aware datetime; a naive
        one raises :class:`~referralkit.errors.ValidationError`): every rule that is due,
        each once, at the earliest time it became due, in time order. Nothing for a referral
        not observed, or closed."""
        now = utc(now, "now")
        tick = micros(now, "now")
        with self._lock:
            case = self._cases.get(referral_id)
            if case is None:
                return []
            if self._durable is not None:
                fired = self._durable.fired(referral_id, case.signals, tick)
            else:
                assert self._python is not None
                fired = self._python.fired(case.signals, tick)
        return self._alerts(referral_id, fired, now.date())

    def due_now_and_later(
        self, referral_id: str, now: dt.datetime, later: dt.datetime
    ) -> tuple[list[Alert], list[Alert]]:
        """``(due(referral_id, now), due(referral_id, later))`` for ``later`` at or after
        ``now`` (what the sweep asks of each referral). The python evaluator finds both in
        one pass: a pattern's earliest due time at an instant is its earliest due time at
        any later instant when that is not after it, else none (the patterns are monotone
        in ``now``)."""
        now, later = utc(now, "now"), utc(later, "later")
        if later < now:
            raise ValidationError("later", "before now")
        if self._durable is not None:
            return self.due(referral_id, now), self.due(referral_id, later)
        tick = micros(now, "now")
        with self._lock:
            case = self._cases.get(referral_id)
            if case is None:
                return [], []
            assert self._python is not None
            fired = self._python.fired(case.signals, micros(later, "later"))
        return (
            self._alerts(referral_id, [f for f in fired if f[1] <= tick], now.date()),
            self._alerts(referral_id, fired, later.date()),
        )

    def _alerts(self, referral_id: str, fired: list[tuple[int, int]], day: dt.date) -> list[Alert]:
        """The alerts of the rules ``fired`` (rule index, time it became due) in force on
        ``day``: each rule once, at its earliest time, in time order."""
        earliest: dict[int, int] = {}
        for index, at in fired:
            if index not in earliest or at < earliest[index]:
                earliest[index] = at
        alerts = []
        for index, at in earliest.items():
            rule = self._rules[index]
            if not rule.active_on(day):
                continue
            alerts.append(
                Alert(
                    rule_id=rule.id,
                    ruleset=self.ruleset.name,
                    version=self.ruleset.version,
                    referral_id=referral_id,
                    action=str(rule.then.get("action", "")),
                    reason=str(rule.then.get("reason", "")),
                    at=moment(at),
                )
            )
        return sorted(alerts, key=lambda a: (a.at, self._order[a.rule_id]))

    def close(self, referral_id: str) -> None:
        """Forget the referral: its signals here and its durable session."""
        with self._lock:
            self._cases.pop(referral_id, None)
            if self._durable is not None:
                self._durable.drop(referral_id)
