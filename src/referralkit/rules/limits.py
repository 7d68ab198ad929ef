"""The limits a ruleset must keep, so that every ruleset the loader (or ``rules check``)
accepts runs: no ruleset that passes can stop intake with an exception.

Each limit names what it protects (see :doc:`/rules`, "Limits"). :func:`problems` checks a
:class:`~referralkit.rules.model.Ruleset` however it was made (loaded from TOML, or built in
Python) against every limit and against the fact model, and returns
:class:`~referralkit.rules.loader.Problem` values naming the rule and the field; the loader,
:func:`~referralkit.rules.check.check` and every engine's constructor call it, so a ruleset
that breaks one is refused before it decides anything.

>>> from referralkit.rules import loads
>>> from referralkit.errors import RulesError
>>> try:
...     loads('''
... [ruleset]
... name = "x"
... kind = "urgency"
... [[rules]]
... id = "forever"
... then = { priority = "urgent", due_days = 100000 }
... ''')
... except RulesError as error:
...     print(error.problems[0])
<ruleset>:7: rule 'forever': field 'then.due_days': error: at most 3650 (about 10 years)
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Final

from ..errors import RulesError
from ._parser import MAX_DEPTH as _PARSER_DEPTH
from ._parser import Problem, RulesetError, _Lines, _service_code
from ._patterns import Deadline, pattern_of
from .facts import FACTS, FactType
from .model import (
    LIST_OPERAND,
    OPERATORS,
    OUTPUTS,
    All,
    Always,
    AnyOf,
    Compare,
    Kind,
    Not,
    Op,
    Rule,
    Ruleset,
)

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_DUE",
    "MAX_INTEGER",
    "MAX_NAME",
    "MAX_NUMBER",
    "MAX_REASON",
    "MAX_RULES",
    "MAX_SCORE",
    "MAX_STOPS",
    "MAX_VALUES",
    "problems",
    "require",
]

MAX_RULES: Final = 60_000
"""Rules in one ruleset (durable-rules priorities are 16-bit)."""

MAX_DEPTH: Final = _PARSER_DEPTH
"""Nesting of ``all`` / ``any`` / ``not`` in one condition (each level is a pair of
parentheses in the generated Python, whose parser stops at 200: 200 levels raised
``SyntaxError``)."""

MAX_CONDITIONS: Final = 1_000
"""Comparisons in one rule's condition."""

MAX_VALUES: Final = 10_000
"""Values (or prefixes) in one list operand, e.g. service codes in ``any_in``."""

MAX_NAME: Final = 100
"""Characters in a ruleset name or a rule id (decisions carry both)."""

MAX_REASON: Final = 200
"""Characters in a ``reason`` or an ``alternatives`` item (as a decision holds them)."""

MAX_INTEGER: Final = 2**53 - 1
"""Largest magnitude of an integer operand (exact in every engine's JSON)."""

MAX_NUMBER: Final = 1e15
"""Largest magnitude of a number operand; a non-zero one is also at least ``1e-4``
(durable-rules cannot read a float written with an exponent and no fraction)."""

MAX_SCORE: Final = 1_000_000.0
"""Largest magnitude of a ``score`` (finite: ``inf`` and ``nan`` are refused), so that a
``sum`` over every rule stays finite."""

MAX_DUE: Final = {"due_hours": 87_600, "due_days": 3_650, "due_business_days": 2_600}
"""The longest due window each output may set: about 10 years."""

MAX_STOPS: Final = 10
"""Stop signals in one deadline (each is a join in the Rete)."""


def _bad_text(value: str) -> str | None:
    """Why a text cannot be stored or compared everywhere: a NUL (C strings end there, and
    the model refuses it) or a lone surrogate (not encodable)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    return None


class _Checker:
    def __init__(self, ruleset: Ruleset, lines: _Lines) -> None:
        self.ruleset = ruleset
        self.lines = lines
        self.found: list[Problem] = []
        self.index: int | None = None
        self.rule_id: str | None = None

    def problem(self, field: str | None, message: str) -> None:
        line = self.lines.find(self.index, field)
        self.found.append(Problem(message, self.ruleset.source, line, self.rule_id, field))

    def text(self, field: str, value: Any, *, blank: bool = True, most: int | None = None) -> None:
        if not isinstance(value, str):
            self.problem(field, f"expected a string, got {type(value).__name__}")
            return
        bad = _bad_text(value)
        if bad is not None:
            self.problem(field, bad)
        elif not blank and not value.strip():
            self.problem(field, "must not be blank")
        elif most is not None and len(value) > most:
            self.problem(field, f"at most {most} characters (got {len(value)})")

    # ------------------------------------------------------------- the ruleset

    def run(self) -> list[Problem]:
        rs = self.ruleset
        if len(rs.rules) > MAX_RULES:
            self.problem("rules", f"at most {MAX_RULES} rules (got {len(rs.rules)})")
        self.text("name", rs.name, blank=False, most=MAX_NAME)
        self.text("description", rs.description)
        rules: tuple[Any, ...] = rs.rules  # built in Python: anything may be in it
        for index, rule in enumerate(rules):
            self.index, self.rule_id = index, getattr(rule, "id", None)
            if not isinstance(rule, Rule):
                self.problem(None, f"expected a Rule, got {type(rule).__name__}")
                continue
            self.rule(rule)
        self.index, self.rule_id = None, None
        return self.found

    def rule(self, rule: Rule) -> None:
        self.text("id", rule.id, blank=False, most=MAX_NAME)
        self.text("description", rule.description)
        self.text("citation", rule.citation)
        for field in ("valid_from", "valid_to"):
            value = getattr(rule, field)
            if value is not None and (
                not isinstance(value, dt.date) or isinstance(value, dt.datetime)
            ):
                self.problem(field, "expected a date")
        start, end = rule.valid_from, rule.valid_to
        if isinstance(start, dt.date) and isinstance(end, dt.date) and end < start:
            self.problem("valid_to", "valid_to is before valid_from")
        if self.ruleset.kind is Kind.EVENT:
            self.pattern(rule)
        else:
            self.condition(rule.when)
        self.outputs(rule.then)

    # ------------------------------------------------------------- conditions

    def condition(self, root: Any) -> None:
        # iterative: a condition built in Python may be nested deeper than the stack
        stack: list[tuple[Any, int]] = [(root, 0)]
        leaves = 0
        deepest = 0
        while stack:
            c, depth = stack.pop()
            if isinstance(c, All | AnyOf):
                deepest = max(deepest, depth + 1)
                items: Any = c.items  # built in Python: typed as a tuple, may be anything
                if not isinstance(items, tuple):  # an empty one is fine: always / never
                    self.problem("when", f"{type(c).__name__} needs a tuple of items")
                    continue
                if deepest <= MAX_DEPTH:
                    stack.extend((item, depth + 1) for item in items)
            elif isinstance(c, Not):
                deepest = max(deepest, depth + 1)
                if deepest <= MAX_DEPTH:
                    stack.append((c.item, depth + 1))
            elif isinstance(c, Compare):
                leaves += 1
                if leaves <= MAX_CONDITIONS:
                    self.compare(c)
            elif not isinstance(c, Always):
                self.problem("when", f"not a condition: {type(c).__name__}")
        if deepest > MAX_DEPTH:
            self.problem("when", f"nested more than {MAX_DEPTH} levels deep (all/any/not)")
        if leaves > MAX_CONDITIONS:
            self.problem("when", f"at most {MAX_CONDITIONS} comparisons in one rule")

    def compare(self, c: Compare) -> None:
        spec = FACTS.get(c.fact) if isinstance(c.fact, str) else None
        where = f"when.{c.fact}"
        if spec is None:
            self.problem("when", f"unknown fact {c.fact!r}")
            return
        if not isinstance(c.op, Op) or c.op not in OPERATORS[spec.type]:
            op = c.op.value if isinstance(c.op, Op) else c.op
            self.problem(where, f"operator {op!r} does not apply to {spec.type.value} facts")
            return
        if c.op in (Op.EXISTS, Op.MISSING):
            if c.value is not True:
                self.problem(where, f"'{c.op.value}' takes true")
            return
        if c.op in LIST_OPERAND:
            if not isinstance(c.value, tuple) or not c.value:
                self.problem(where, f"'{c.op.value}' takes a non-empty tuple of values")
                return
            if len(c.value) > MAX_VALUES:
                self.problem(where, f"at most {MAX_VALUES} values (got {len(c.value)})")
                return
            values: tuple[Any, ...] = c.value
        else:
            values = (c.value,)
        prefixing = c.op in (Op.PREFIX, Op.ANY_PREFIX, Op.ALL_PREFIX, Op.NONE_PREFIX)
        for value in values:
            message = self.scalar(spec.type, spec.values, value, prefixing)
            if message is not None:
                self.problem(where, message)
                return

    @staticmethod
    def scalar(
        kind: FactType, allowed: tuple[str, ...] | None, value: Any, prefixing: bool
    ) -> str | None:
        if kind in (FactType.TEXT, FactType.TEXT_LIST):
            if not isinstance(value, str):
                return f"expected text, got {type(value).__name__}"
            bad = _bad_text(value)
            if bad is not None:
                return bad
            if allowed is not None and not prefixing and value not in allowed:
                return f"{value!r} is not one of {', '.join(allowed)}"
            return None
        if kind is FactType.BOOLEAN:
            return None if isinstance(value, bool) else "expected true or false"
        if kind is FactType.DATE:
            ok = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
            return None if ok else "expected a date"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {type(value).__name__}"
        if kind is FactType.INTEGER:
            if not isinstance(value, int):
                return "expected a whole number"
            return None if abs(value) <= MAX_INTEGER else f"at most {MAX_INTEGER} in magnitude"
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            return f"expected a finite number of magnitude at most {MAX_NUMBER:g}"
        if value and abs(value) < 1e-4:
            return "a non-zero number must be at least 0.0001 in magnitude"
        return None

    # ------------------------------------------------------------- event patterns

    def pattern(self, rule: Rule) -> None:
        try:
            pattern = pattern_of(rule)
        except RulesError as error:
            self.problem("when", str(error))
            return
        except (TypeError, AttributeError):  # a pattern built in Python from the wrong parts
            self.problem("when", "not an event pattern (Deadline or Count)")
            return
        if isinstance(pattern, Deadline) and len(pattern.stop) > MAX_STOPS:
            self.problem("deadline.stop", f"at most {MAX_STOPS} stop signals")

    # ------------------------------------------------------------- outputs

    def outputs(self, then: Any) -> None:
        kind = self.ruleset.kind
        if not isinstance(then, Mapping) or not then:
            self.problem("then", "expected a table of outputs")
            return
        specs = OUTPUTS[kind]
        for key, value in then.items():
            where = f"then.{key}"
            spec = specs.get(key)
            if spec is None:
                self.problem(where, f"unknown {kind.value} output {key!r}")
                continue
            items = value if spec.many else (value,)
            if spec.many and not isinstance(value, tuple | list):
                self.problem(where, "expected a list")
                continue
            for item in items:
                self.output(key, where, spec.type, spec.values, item)
        if kind is Kind.COVERAGE and "info_needed" in then:
            conditional = "conditional" in (
                then.get("covered"),
                then.get("pa_needed"),
                then.get("doc_needed"),
            )
            if not conditional:
                self.problem(
                    "then.info_needed", "info_needed only goes with a 'conditional' output"
                )
        if kind is Kind.EVENT and "action" not in then:
            self.problem("then.action", "an event rule needs an action")

    def output(
        self, key: str, where: str, kind: type, allowed: tuple[str, ...] | None, item: Any
    ) -> None:
        if kind is float:
            number = isinstance(item, int | float) and not isinstance(item, bool)
            if not number or not math.isfinite(item) or abs(item) > MAX_SCORE:
                self.problem(where, f"expected a finite number of magnitude at most {MAX_SCORE:g}")
            return
        if kind is int:
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                self.problem(where, "expected a whole number from 0")
            elif item > MAX_DUE.get(key, item):
                self.problem(where, f"at most {MAX_DUE[key]} (about 10 years)")
            return
        if not isinstance(item, str):
            self.problem(where, f"expected a string, got {type(item).__name__}")
        elif allowed is not None:
            if item not in allowed:
                self.problem(where, f"{item!r} is not one of {', '.join(allowed)}")
        elif key in ("reason", "alternatives", "alternative_services"):
            self.text(where, item, blank=False, most=MAX_REASON)
            # a decision turns each into a Code: one that does not read as a service code
            # would stop intake at run time (the loader refuses it too)
            if key == "alternative_services" and not _service_code(item):
                self.problem(
                    where,
                    "expected a service code: cpt:, hcpcs:, snomed: or icd10: and the code, "
                    "or <system URI>|<code>",
                )
        else:
            self.text(where, item)


def problems(ruleset: Ruleset, *, text: str | None = None) -> list[Problem]:
    """Every limit ``ruleset`` breaks and every value the fact model refuses, with the line
    in ``text`` (the ruleset's TOML, when there is one) where it can be found. An empty
    list means every engine can run it."""
    return _Checker(ruleset, _Lines(text)).run()


def require(ruleset: Ruleset) -> None:
    """Raise :class:`~referralkit.rules.loader.RulesetError` listing every problem of
    ``ruleset`` (see :func:`problems`), if it has any."""
    if not isinstance(ruleset, Ruleset):
        raise RulesError(f"expected a Ruleset, got {type(ruleset).__name__}")
    found = problems(ruleset)
    if found:
        raise RulesetError(found)
