"""Static checks of a ruleset beyond what the loader refuses.

- under ``first``: rules that can never fire, because an earlier rule (in force whenever they
  are) matches everything they match;
- under ``unique``: pairs of rules that can both match, which breaks the policy;
- coverage rules that say a service is covered but not whether it needs authorization.

Conditions are compared through their top-level ``and`` of comparisons; a rule using ``or`` or
``not`` is never reported as shadowed, and a pair involving one is reported as *possibly*
overlapping (a warning), so the checker never claims more than it can show.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._parser import Problem, RulesetError, _Lines
from .engine import evaluate_condition
from .loader import load
from .model import All, Always, Compare, Condition, HitPolicy, Kind, Op, Rule, Ruleset

__all__ = ["check", "check_files"]


def _conjuncts(c: Condition) -> tuple[Condition, ...] | None:
    """The top-level comparisons, or ``None`` when the condition uses ``or``/``not``."""
    if isinstance(c, Always):
        return ()
    if isinstance(c, Compare):
        return (c,)
    if isinstance(c, All):
        found: list[Condition] = []
        for item in c.items:
            inner = _conjuncts(item)
            if inner is None:
                return None
            found.extend(inner)
        return tuple(found)
    return None


def _values(c: Compare) -> frozenset[Any] | None:
    """The finite set of values ``c`` allows, when it is an ``eq``/``in``."""
    if c.op is Op.EQ:
        return frozenset({c.value})
    if c.op is Op.IN:
        return frozenset(c.value)
    return None


_LOWER = {Op.GT, Op.GTE}
_UPPER = {Op.LT, Op.LTE}


def _holds(c: Compare, value: Any) -> bool:
    """Whether a present fact with ``value`` satisfies ``c`` (scalar operators only)."""
    return evaluate_condition(c, {c.fact: value})


def _implies(a: Compare, b: Compare) -> bool:
    """Whether every fact value satisfying ``a`` satisfies ``b`` (same fact)."""
    if a == b:
        return True
    if b.op is Op.EXISTS:
        return a.op is not Op.MISSING
    values = _values(a)
    if values is not None and b.op not in (Op.MISSING, Op.EXISTS) and not _listy(b):
        return all(_holds(b, v) for v in values)
    if a.op in _LOWER | _UPPER and b.op in _LOWER | _UPPER:
        if (a.op in _LOWER) != (b.op in _LOWER):
            return False
        if a.op in _LOWER:  # a: x > or >= p ; b: x > or >= q
            return bool(
                a.value > b.value or (a.value == b.value and not (a.op is Op.GTE and b.op is Op.GT))
            )
        return bool(
            a.value < b.value or (a.value == b.value and not (a.op is Op.LTE and b.op is Op.LT))
        )
    prefixes = {Op.PREFIX: Op.PREFIX, Op.ANY_PREFIX: Op.ANY_PREFIX, Op.ALL_PREFIX: Op.ALL_PREFIX}
    if a.op in prefixes and b.op is prefixes[a.op]:
        return all(any(p.startswith(q) for q in b.value) for p in a.value)
    if a.op is Op.ANY_IN and b.op is Op.ANY_IN:
        return frozenset(a.value).issubset(b.value)
    return False


def _listy(c: Compare) -> bool:
    return c.op in {Op.ANY_IN, Op.ALL_IN, Op.NONE_IN, Op.ANY_PREFIX, Op.ALL_PREFIX, Op.NONE_PREFIX}


def _compatible(a: Compare, b: Compare) -> bool:
    """Whether one fact value can satisfy both (``True`` when it cannot be ruled out)."""
    if {a.op, b.op} == {Op.EXISTS, Op.MISSING}:
        return False
    if Op.MISSING in (a.op, b.op):
        return a.op is b.op
    for x, y in ((a, b), (b, a)):
        values = _values(x)
        if values is not None and not _listy(y) and y.op is not Op.EXISTS:
            return any(_holds(y, v) for v in values)
    if a.op is Op.PREFIX and b.op is Op.PREFIX:
        return any(p.startswith(q) or q.startswith(p) for p in a.value for q in b.value)
    if a.op in _LOWER | _UPPER and b.op in _LOWER | _UPPER and (a.op in _LOWER) != (b.op in _LOWER):
        low, high = (a, b) if a.op in _LOWER else (b, a)
        if low.value < high.value:
            return True
        return bool(low.value == high.value and low.op is Op.GTE and high.op is Op.LTE)
    return True


def _covers(earlier: Rule, later: Rule) -> bool:
    """``earlier`` is in force on every day ``later`` is."""
    start_ok = earlier.valid_from is None or (
        later.valid_from is not None and earlier.valid_from <= later.valid_from
    )
    end_ok = earlier.valid_to is None or (
        later.valid_to is not None and later.valid_to <= earlier.valid_to
    )
    return start_ok and end_ok


def _dates_overlap(a: Rule, b: Rule) -> bool:
    lo = max(a.valid_from or dt.date.min, b.valid_from or dt.date.min)
    hi = min(a.valid_to or dt.date.max, b.valid_to or dt.date.max)
    return lo <= hi


def _shadowed_by(earlier: Rule, later: Rule) -> bool:
    mine, theirs = _conjuncts(later.when), _conjuncts(earlier.when)
    if mine is None or theirs is None or not _covers(earlier, later):
        return False
    return all(
        any(
            isinstance(m, Compare)
            and isinstance(t, Compare)
            and m.fact == t.fact
            and _implies(m, t)
            for m in mine
        )
        for t in theirs
    )


def _overlap(a: Rule, b: Rule) -> bool | None:
    """``False``: cannot both match; ``True``: can; ``None``: cannot tell."""
    if not _dates_overlap(a, b):
        return False
    left, right = _conjuncts(a.when), _conjuncts(b.when)
    if left is None or right is None:
        return None
    for x in left:
        for y in right:
            same_fact = isinstance(x, Compare) and isinstance(y, Compare) and x.fact == y.fact
            if same_fact and not _compatible(x, y):  # type: ignore[arg-type]
                return False
    return True


def check(ruleset: Ruleset) -> list[Problem]:
    """Problems the loader does not refuse: shadowed rules, overlaps under ``unique``,
    incomplete coverage outputs. Errors have ``severity="error"``."""
    problems: list[Problem] = []
    rules = ruleset.rules
    source = ruleset.source
    text = None
    if source is not None and Path(source).is_file():
        text = Path(source).read_text(encoding="utf-8")
    lines = _Lines(text)

    def report(rule: Rule, message: str, severity: str = "error", field: str | None = None) -> None:
        line = lines.find(rules.index(rule), field)
        problems.append(Problem(message, source, line, rule.id, field, severity))

    if ruleset.hit_policy is HitPolicy.FIRST:
        for j, later in enumerate(rules):
            for earlier in rules[:j]:
                if _shadowed_by(earlier, later):
                    report(
                        later,
                        f"can never fire: rule {earlier.id!r} comes first and matches "
                        "everything it matches",
                        field="when",
                    )
                    break
    if ruleset.hit_policy is HitPolicy.UNIQUE:
        for j, b in enumerate(rules):
            for a in rules[:j]:
                verdict = _overlap(a, b)
                if verdict:
                    report(
                        b,
                        f"overlaps rule {a.id!r}: both can match, which 'unique' forbids",
                        field="when",
                    )
                elif verdict is None:
                    report(
                        b,
                        f"may overlap rule {a.id!r} ('unique' forbids overlaps)",
                        "warning",
                        "when",
                    )
    if ruleset.kind is Kind.COVERAGE:
        for rule in rules:
            covered = rule.then.get("covered")
            if covered not in (None, "not-covered") and "pa_needed" not in rule.then:
                report(
                    rule,
                    "says covered without pa_needed: decisions will say 'indeterminate'",
                    "warning",
                    "then",
                )
    return problems


def check_files(paths: Iterable[str | Path]) -> dict[str, list[Problem]]:
    """Load and check each file: its problems, loader refusals included (empty when clean)."""
    results: dict[str, list[Problem]] = {}
    for path in paths:
        try:
            ruleset = load(path)
        except RulesetError as error:
            results[str(path)] = list(error.problems)
            continue
        results[str(path)] = check(ruleset)
    return results
