"""The durable-rules evaluator of event rules: each pattern compiled to a durable-rules
join, one durable session per open referral, on the safe adapter of
:mod:`referralkit.rules.durable`.

The meaning is that of :mod:`~referralkit.rules._events_python`, which a differential property
test holds this evaluator to. **Time is injected**: a due check asserts a tick fact carrying
``now`` (then retracts it); durable joins it with the signals (``now >= start.at_<window>``:
each signal carries its time shifted by every window the ruleset uses, see :func:`_compile`
for why not durable's own arithmetic). No wall-clock timer exists (durable's timers are not
used), so the same history and the same ``now`` always give the same alerts.

**Sessions.** A referral's session holds its signals; :class:`DurablePatterns` keeps at most
``max_sessions`` of its own live (least recently used out) and the adapter at most
:data:`~referralkit.rules.durable.SESSION_LIMIT` per durable ruleset across every engine.
An evicted referral's signals stay in Python and are replayed into a fresh session when it
is next used; an engine that is garbage-collected leaves its sessions to the adapter, which
deletes them.
"""

from __future__ import annotations

import collections
import itertools
import json
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..errors import RulesError
from ._patterns import SIGNALS, Deadline, Observed, Pattern, Signal
from .durable import runtime
from .model import Ruleset

__all__ = ["DurablePatterns"]

# --------------------------------------------------------------------------- compilation

ONE: Final = "one"
"""A field every posted message carries, always 1 (see :func:`_joined`)."""

KIND: Final = "rk"
"""The field that tells signals (``"s"``), clocks (``"c"``: the time a signal carries, as a
fact of its own) and ticks (``"t"``) apart; durable's own session-state objects lack it, so no
rule ever matches them."""


def _signal_test(signal: Signal) -> dict[str, Any]:
    tests: list[dict[str, Any]] = [{KIND: "s"}, {"sig": signal.name}]
    tests += [{key: value} for key, value in signal.where]
    return {"$and": tests}


def _after(alias: str) -> dict[str, Any]:
    return {"$gt": {"seq": {alias: "seq"}}}


def _before(deadline: dict[str, Any]) -> dict[str, Any]:
    return {"$lt": {"at": deadline}}


def _shifted(seconds: int) -> str:
    """The signal field holding the signal's time plus ``seconds`` (see ``_compile``)."""
    return f"at_{seconds}"


def _joined(alias: str, *tests: dict[str, Any]) -> dict[str, Any]:
    """One flat ``$and`` of ``tests`` (some of which refer to element ``alias``), closed by a
    reference test that always holds.

    Why the closing test (observed with valgrind on durable-rules 2.0.28): when the *last*
    reference test of an ``$and`` is false, durable's ``reduceExpressionSequence`` skips
    forward looking for the end marker from one past it, reads beyond the expression
    array, and now and then crashed the process. A final test that is always true means the
    skip starts before the end marker. Every message posted carries ``one = 1`` for it.
    """
    return {"$and": [*tests, {"$gte": {ONE: {alias: ONE}}}]}


def _compile(pattern: Pattern) -> tuple[list[dict[str, Any]], Callable[[Any], int]]:
    """The durable ``all`` sequence of a pattern, and how its action reads the alert time
    (microseconds) from what matched. The meaning is that of
    :mod:`~referralkit.rules._events_python`.

    What durable-rules 2.0.28 does with joins, as observed (each has a test):

    - a ``<name>$not`` element ("no message like this") blocks a match only when it comes
      after the elements it refers to *and* after the tick; placed before the tick it never
      blocked. So negations come last.
    - a ``$not`` whose expression nested an ``$and`` or held an ``$or`` ignored its reference
      to an earlier element, so every element is one flat ``$and`` (see :func:`_joined`), and
      there is one negation per stop signal ("none of them" is "not this and not that").
      A flat ``$and`` may refer to two earlier elements (the start and the clock).
    - one fact is never bound to two elements of a rule (durable's ``isDistinct``), and a
      ``$not`` does not see a fact the rule already bound: so the time a ``by`` deadline
      reads comes from a separate clock fact.
    - ``$add`` with a constant operand read uninitialised memory, so there is no durable
      arithmetic: each signal carries its time already shifted by every window the ruleset
      uses (field ``at_<seconds>``), compared with a plain reference.
    """
    tick_kind: dict[str, Any] = {KIND: "t"}
    if isinstance(pattern, Deadline):
        elements: list[dict[str, Any]] = [{"start": _signal_test(pattern.start)}]
        if pattern.within is not None:
            deadline: Any = {"start": _shifted(pattern.within)}
            shifted = _shifted(pattern.within)

            def when(c: Any) -> int:
                return int(c.start[shifted])

            elements.append({"tick": _joined("start", tick_kind, {"$gte": {"now": deadline}})})
            negations = []
        else:
            name, attribute = pattern.by or ("", "")
            clock = [{KIND: "c"}, {"sig": name}]
            elements.append({"clock": {"$and": [*clock, {"$ex": {attribute: 1}}]}})
            deadline = {"clock": attribute}
            # due from the deadline, and not before the start
            tick = [tick_kind, {"$gte": {"now": deadline}}, {"$gte": {"now": {"start": "at"}}}]
            elements.append({"tick": _joined("clock", *tick)})
            negations = [
                # the clock was still in force at its deadline: no newer one came before it
                {"newer$not": _joined("clock", *clock, _after("clock"), _before(deadline))},
                # the clock is the start's: no other clock between them in history
                {
                    "between$not": _joined(
                        "clock", *clock, _after("clock"), {"$lte": {"seq": {"start": "seq"}}}
                    )
                },
            ]

            def when(c: Any) -> int:
                return max(int(c.clock[attribute]), int(c.start["at"]))

        for j, stop in enumerate(pattern.stop):
            tests = _signal_test(stop)["$and"]
            # a stop after the start and before the deadline; a later one changes nothing
            negations.append(
                {f"stop{j}$not": _joined("start", *tests, _after("start"), _before(deadline))}
            )
        return elements + negations, when
    times = pattern.times
    test = _signal_test(pattern.signal)["$and"]
    elements = [{"e0": {"$and": test}}]
    for k in range(1, times):
        parts = [*test, _after(f"e{k - 1}")]
        if k == times - 1:
            parts.append({"$lte": {"at": {"e0": _shifted(pattern.within)}}})
        elements.append({f"e{k}": _joined(f"e{k - 1}", *parts)})
    last = f"e{times - 1}"
    elements.append({"tick": _joined(last, tick_kind, {"$gte": {"now": {last: "at"}}})})

    def when_count(c: Any) -> int:
        return int(getattr(c, last)["at"])

    return elements, when_count


# --------------------------------------------------------------------------- the evaluator

_instances = itertools.count(1)


class DurablePatterns:
    """The patterns of an event ruleset on durable-rules, one durable session per referral.

    Callers hold :attr:`lock` (the adapter's process-wide lock) around every call, and pass
    each referral's whole history: a session that is not live is rebuilt from it.
    """

    def __init__(self, ruleset: Ruleset, patterns: Sequence[Pattern], max_sessions: int) -> None:
        self.name = f"rk.e.{ruleset.name}.{ruleset.version}"
        """The durable ruleset name: a changed ruleset (new version) gets a fresh one."""
        self.max_sessions = max_sessions
        self._prefix = f"{next(_instances)}:"
        compiled = [_compile(pattern) for pattern in patterns]
        self._windows = sorted({p.within for p in patterns if p.within is not None})
        self._runtime = runtime()
        self.lock = self._runtime.lock
        sink = self._runtime.sink

        def build() -> dict[str, Any]:
            # a fresh copy each time: durable keeps (and may change) what it is given
            definition: dict[str, Any] = {}
            for i, (elements, when) in enumerate(compiled):
                definition[f"r{i}"] = {
                    "all": json.loads(json.dumps(elements)),
                    "pri": i + 1,
                    "run": _reporter(sink, i, when),
                }
            definition["catch"] = {
                "all": [{"m": {"$ex": {KIND: 1}}}],
                "pri": len(compiled) + 1,
                "run": _ignore,
            }
            return definition

        self._runtime.ensure(self.name, build)
        # referral ids whose sessions this engine opened, least recently used first (some may
        # have been evicted by the adapter since: it is asked before one is used)
        self._live: collections.OrderedDict[str, None] = collections.OrderedDict()
        # the session ids this engine opened: the finalizer hands them to the adapter, which
        # deletes them, when the engine is collected without closing its referrals
        self._sids: set[str] = set()
        weakref.finalize(self, self._runtime.orphan, self.name, self._sids)

    def sid(self, referral_id: str) -> str:
        """The durable session id of a referral."""
        return self._prefix + referral_id

    @property
    def sessions(self) -> int:
        """How many durable sessions this engine holds live now."""
        return sum(1 for rid in self._live if self._runtime.is_live(self.name, self.sid(rid)))

    def has_session(self, referral_id: str) -> bool:
        """Whether durable itself holds a session for the referral (asks durable)."""
        return self._runtime.state_exists(self.name, self.sid(referral_id))

    # ------------------------------------------------------------- facts

    def _facts(self, signal: Observed) -> list[dict[str, Any]]:
        message: dict[str, Any] = {
            KIND: "s",
            ONE: 1,
            "sig": signal.name,
            "seq": signal.seq,
            "at": signal.at,
        }
        for seconds in self._windows:
            message[_shifted(seconds)] = signal.at + seconds * 1_000_000
        message.update(signal.attributes)
        times = SIGNALS[signal.name].times
        if not times:
            return [message]
        # a separate clock fact for `by` deadlines (see _compile)
        clock = {KIND: "c", ONE: 1, "sig": signal.name, "seq": signal.seq, "at": signal.at}
        clock.update((t, signal.attributes[t]) for t in times if t in signal.attributes)
        return [message, clock]

    def _assert(self, host: Any, sid: str, signals: Sequence[Observed]) -> None:
        for signal in signals:
            for fact in self._facts(signal):
                host.assert_fact(self.name, {**fact, "sid": sid, "id": self._runtime.next_id()})

    def _session(self, host: Any, referral_id: str, history: Sequence[Observed]) -> bool:
        """Make the referral's session live, replaying ``history`` into a fresh one if it is
        not; ``True`` when it was replayed (so it already holds every signal)."""
        rt, sid = self._runtime, self.sid(referral_id)
        if rt.is_live(self.name, sid):
            rt.touch(self.name, sid)
            self._live.move_to_end(referral_id)
            return False
        self._live.pop(referral_id, None)
        while len(self._live) >= self.max_sessions:
            old, _ = self._live.popitem(last=False)
            rt.close_session(host, self.name, self.sid(old))
            self._sids.discard(self.sid(old))
        rt.open_session(host, self.name, sid)
        self._sids.add(sid)
        self._live[referral_id] = None
        self._assert(host, sid, history)
        return True

    # ------------------------------------------------------------- the evaluator

    def add(self, referral_id: str, history: Sequence[Observed], fresh: Sequence[Observed]) -> None:
        """The referral's history grew by ``fresh`` (already the end of ``history``)."""

        def work(host: Any) -> None:
            if not self._session(host, referral_id, history):
                self._assert(host, self.sid(referral_id), fresh)

        self._guarded(work, "observe", referral_id)

    def fired(
        self, referral_id: str, history: Sequence[Observed], tick: int
    ) -> list[tuple[int, int]]:
        """``(rule index, time it became due)`` for every match due at ``tick``."""
        rt = self._runtime
        sink = rt.sink

        def work(host: Any) -> list[tuple[int, int]]:
            self._session(host, referral_id, history)
            sink.clear()
            sid = self.sid(referral_id)
            message = {KIND: "t", ONE: 1, "now": tick, "sid": sid, "id": rt.next_id()}
            # a fact, not an event: an event would be consumed by the first rule it fires
            host.assert_fact(self.name, message)
            host.retract_fact(self.name, {"sid": sid, "id": message["id"]})
            found = list(sink)
            sink.clear()
            return found

        return self._guarded(work, "due", referral_id)  # type: ignore[no-any-return]

    def drop(self, referral_id: str) -> None:
        """Delete the referral's session."""
        if referral_id not in self._live:
            return
        del self._live[referral_id]
        sid = self.sid(referral_id)
        self._sids.discard(sid)
        self._runtime.call(
            lambda host: self._runtime.close_session(host, self.name, sid), "close", self.name
        )

    def _guarded(self, work: Callable[[Any], Any], what: str, referral_id: str) -> Any:
        """Run ``work`` through the adapter; if it fails, drop the referral's (possibly
        partial) session so the next call replays it cleanly."""
        try:
            return self._runtime.call(work, what, self.name)
        except RulesError:
            self.drop(referral_id)
            raise


def _reporter(sink: list[Any], index: int, when: Callable[[Any], int]) -> Callable[[Any], None]:
    def report(c: Any) -> None:
        sink.append((index, when(c)))

    return report


def _ignore(c: Any) -> None:
    """The catch-all's action: nothing to do."""
