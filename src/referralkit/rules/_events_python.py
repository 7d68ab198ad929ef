"""The pure-Python evaluator of event rules: the patterns of
:mod:`~referralkit.rules._patterns` read directly over a referral's signals.

It gives the answers of the durable-rules evaluator (:mod:`~referralkit.rules._events_durable`;
a differential property test holds them to it) without durable-rules, so event rules run on
every Python referralkit supports, 3.13 included. A referral's history is short (tens of
signals), so each pattern is a direct scan of it; there is no session to keep.

The meaning, for a rule that is in force on the date of ``now`` (times in microseconds):

- :class:`~referralkit.rules._patterns.Deadline` with ``within``: a start signal ``s``
  whose deadline ``d = s.at + within`` is at or before ``now``, with no stop signal after
  ``s`` (in history order) and before ``d`` (in time). It is due from ``d``.
- :class:`~referralkit.rules._patterns.Deadline` with ``by = (name, attribute)``: a start
  ``s`` and a ``name`` signal ``c`` (the *clock*) carrying ``attribute = d``, where ``c`` is
  the clock in force for ``s`` (no other clock between ``c`` and ``s`` in history: the
  latest one before ``s``, or one after it) and was still in force at its own deadline (no
  newer clock came before ``d``), and no stop came after ``s`` and before ``d``. It is due
  from ``max(d, s.at)``: not before the start.
- :class:`~referralkit.rules._patterns.Count`: ``times`` matching signals in history order,
  the last at most ``within`` after the first; due from the last one's time.

A stop or a new clock that comes after the deadline changes nothing: a breach, once it
happened, stays. Each rule is reported once, at the earliest time it became due.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._patterns import Count, Deadline, Observed, Pattern

__all__ = ["PythonPatterns"]


def _deadline(pattern: Deadline, history: Sequence[Observed], tick: int) -> int | None:
    starts = [s for s in history if s.fits(pattern.start)]
    if not starts:
        return None
    stops = [x for x in history if any(x.fits(stop) for stop in pattern.stop)]

    def stopped(start: Observed, deadline: int) -> bool:
        return any(x.seq > start.seq and x.at < deadline for x in stops)

    best: int | None = None
    if pattern.within is not None:
        window = pattern.within * 1_000_000
        for start in starts:
            deadline = start.at + window
            earlier = best is None or deadline < best
            if deadline <= tick and earlier and not stopped(start, deadline):
                best = deadline
        return best
    assert pattern.by is not None  # pattern_of: exactly one of within and by
    name, attribute = pattern.by
    clocks = [c for c in history if c.name == name]
    for clock in clocks:
        found: int | None = clock.attributes.get(attribute)
        if found is None:
            continue
        deadline = found
        if any(newer.seq > clock.seq and newer.at < deadline for newer in clocks):
            continue  # replaced before its deadline: never in force at it
        for start in starts:
            due = max(deadline, start.at)
            if due > tick or (best is not None and due >= best):
                continue
            if any(clock.seq < other.seq <= start.seq for other in clocks):
                continue  # another clock came between: this one is not the start's
            if not stopped(start, deadline):
                best = due
    return best


def _count(pattern: Count, history: Sequence[Observed], tick: int) -> int | None:
    seen = [s for s in history if s.fits(pattern.signal)]
    times = pattern.times
    window = pattern.within * 1_000_000
    best: int | None = None
    # any `times` of them in history order, the last within the window of the first: a first
    # and a last with at least times - 2 others between them (their times do not matter)
    for i, first in enumerate(seen):
        if times == 1:
            if first.at <= tick and (best is None or first.at < best):
                best = first.at
            continue
        for last in seen[i + times - 1 :]:
            if (
                last.at <= first.at + window
                and last.at <= tick
                and (best is None or last.at < best)
            ):
                best = last.at
    return best


class PythonPatterns:
    """The patterns of an event ruleset, evaluated in Python. Stateless: any number of
    referrals, any number of threads."""

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self.patterns = tuple(patterns)

    def fired(self, history: Sequence[Observed], tick: int) -> list[tuple[int, int]]:
        """``(rule index, time it became due)`` for every pattern due at ``tick``, the
        earliest time for each."""
        found = []
        for index, pattern in enumerate(self.patterns):
            if isinstance(pattern, Deadline):
                at = _deadline(pattern, history, tick)
            else:
                at = _count(pattern, history, tick)
            if at is not None:
                found.append((index, at))
        return found
