"""The parser shared by the loader and the event-rule parser, and the problems it reports.

:mod:`~referralkit.rules.loader` (conditions over facts) and :mod:`~referralkit.rules.timeline`
(patterns over events) both build on :class:`_Parser`: one way to find a problem's line, one
way to check a ruleset header, rule ids, validity dates and outputs. It lives below both so
that neither imports the other to get it. The public names (:class:`Problem`,
:class:`RulesetError`) are re-exported by :mod:`referralkit.rules.loader` and
:mod:`referralkit.rules`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from ..errors import RulesError, ValidationError
from ..model import Code
from .facts import FACTS, FactType
from .model import (
    LIST_OPERAND,
    OPERATORS,
    OUTPUTS,
    Aggregation,
    All,
    Always,
    AnyOf,
    Compare,
    Condition,
    HitPolicy,
    Kind,
    Not,
    Op,
    Rule,
    Ruleset,
)

__all__ = ["Problem", "RulesetError"]

MAX_DEPTH: Final = 32
"""Nesting of ``all`` / ``any`` / ``not`` (:data:`referralkit.rules.limits.MAX_DEPTH`, kept
here so the parser stops recursing at it)."""


@attrs.frozen
class Problem:
    """One thing wrong with a ruleset. ``severity`` is ``"error"`` or ``"warning"``."""

    message: str
    source: str | None = None
    line: int | None = None
    rule_id: str | None = None
    field: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = self.source or "<ruleset>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.rule_id is not None:
            parts.append(f"rule {self.rule_id!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return f"{': '.join(parts)}: {self.severity}: {self.message}"


class RulesetError(RulesError):
    """A ruleset was refused; ``problems`` lists every reason."""

    problems: tuple[Problem, ...]
    """Every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"ruleset refused ({len(self.problems)} problem(s)):\n{lines}")


_HEADER_KEYS = {"name", "kind", "hit_policy", "aggregation", "description"}
_RULE_KEYS = {"id", "description", "citation", "valid_from", "valid_to", "when", "then"}
_LOGICAL = {"all", "any", "not"}


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Lines:
    """Line numbers in the TOML text: of each ``[[rules]]`` block and the keys inside it."""

    def __init__(self, text: str | None) -> None:
        self.lines = text.splitlines() if text else []
        self.blocks = [i for i, line in enumerate(self.lines) if line.strip() == "[[rules]]"]

    def find(self, rule_index: int | None, field: str | None) -> int | None:
        if not self.lines:
            return None
        if rule_index is None:
            start, end = 0, self.blocks[0] if self.blocks else len(self.lines)
        elif rule_index < len(self.blocks):
            start = self.blocks[rule_index]
            following = rule_index + 1
            end = self.blocks[following] if following < len(self.blocks) else len(self.lines)
        else:
            return None
        key = (field or "").split(".")[0].split("[")[0]
        if key:
            pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
            for i in range(start, end):
                if pattern.match(self.lines[i]):
                    return i + 1
        return start + 1 if rule_index is not None else None


class _Parser:
    def __init__(self, source: str | None, text: str | None) -> None:
        self.source = source
        self.where = _Lines(text)
        self.problems: list[Problem] = []
        self.rule_index: int | None = None
        self.rule_id: str | None = None

    def problem(self, field: str | None, message: str) -> None:
        self.problems.append(
            Problem(
                message,
                self.source,
                self.where.find(self.rule_index, field),
                self.rule_id,
                field,
            )
        )

    # ------------------------------------------------------------- ruleset

    def header(
        self, data: Any, keys: set[str], label: str
    ) -> tuple[Mapping[str, Any], str, str] | None:
        """The checked ``[ruleset]`` table, its name and description (``None`` when ``data``
        is not a table at all). Shared with the event-rule parser."""
        if not isinstance(data, Mapping):
            self.problem(None, "a ruleset is a table with [ruleset] and [[rules]]")
            return None
        for key in data:
            if key not in ("ruleset", "rules"):
                self.problem(
                    key, f"unknown top-level key {key!r}" + _suggest(key, ["ruleset", "rules"])
                )
        header = data.get("ruleset")
        if not isinstance(header, Mapping):
            self.problem("ruleset", "missing [ruleset] table")
            header = {}
        for key in header:
            if key not in keys:
                self.problem(key, f"unknown {label} key {key!r}" + _suggest(key, sorted(keys)))
        name = header.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            self.problem("name", "expected a name of letters, digits, '.', '_' or '-'")
            name = "unnamed"
        description = header.get("description", "")
        if not isinstance(description, str):
            self.problem("description", "expected a string")
            description = ""
        return header, name, description

    def rules(self, data: Mapping[str, Any], parse: Callable[[Any], Rule | None]) -> list[Rule]:
        """Every ``[[rules]]`` table through ``parse``, refusing duplicate ids."""
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list) or not raw_rules:
            self.problem("rules", "expected at least one [[rules]] table")
            raw_rules = []
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_rules):
            self.rule_index, self.rule_id = index, None
            rule = parse(raw)
            if rule is None:
                continue
            if rule.id in seen:
                self.problem("id", f"duplicate rule id (first used by rule #{seen[rule.id] + 1})")
            seen.setdefault(rule.id, index)
            rules.append(rule)
        self.rule_index, self.rule_id = None, None
        return rules

    def ruleset(self, data: Any) -> Ruleset | None:
        top = self.header(data, _HEADER_KEYS, "ruleset")
        if top is None:
            return None
        header, name, description = top
        kind = self.enum(Kind, header.get("kind"), "kind", required=True) or Kind.COVERAGE
        policy = self.enum(HitPolicy, header.get("hit_policy", "first"), "hit_policy")
        aggregation = self.enum(Aggregation, header.get("aggregation"), "aggregation")
        if aggregation is not None and policy is not HitPolicy.COLLECT:
            self.problem("aggregation", "aggregation only goes with hit_policy 'collect'")
        if aggregation is not None and kind is not Kind.URGENCY:
            self.problem("aggregation", "only urgency rulesets aggregate (their score)")
        rules = self.rules(data, lambda raw: self.rule(raw, kind))
        if self.problems:
            return None
        return Ruleset(
            name=name,
            kind=kind,
            rules=tuple(rules),
            hit_policy=policy or HitPolicy.FIRST,
            aggregation=aggregation,
            description=description,
            source=self.source,
        )

    def enum(self, cls: Any, value: Any, field: str, *, required: bool = False) -> Any:
        if value is None:
            if required:
                self.problem(field, f"required; one of {', '.join(m.value for m in cls)}")
            return None
        try:
            return cls(value)
        except ValueError:
            choices = [m.value for m in cls]
            self.problem(
                field,
                f"{value!r} is not one of {', '.join(choices)}" + _suggest(str(value), choices),
            )
            return None

    # ------------------------------------------------------------- rule

    def rule_head(
        self, raw: Any, keys: set[str], label: str
    ) -> tuple[str, dict[str, str], dict[str, dt.date | None], int] | None:
        """A rule table's id, texts (description, citation) and validity dates, checked; and
        the problem count before it, so the caller can tell whether the rule was refused.
        Shared with the event-rule parser."""
        if not isinstance(raw, Mapping):
            self.problem(None, "a rule is a table")
            return None
        rule_id = raw.get("id")
        if not isinstance(rule_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", rule_id):
            self.problem("id", "expected an id of letters, digits, '.', '_' or '-'")
            return None
        self.rule_id = rule_id
        before = len(self.problems)
        for key in raw:
            if key not in keys:
                self.problem(key, f"unknown {label} key {key!r}" + _suggest(key, sorted(keys)))
        texts = {}
        for key in ("description", "citation"):
            value = raw.get(key, "")
            if not isinstance(value, str):
                self.problem(key, "expected a string")
                value = ""
            texts[key] = value
        dates: dict[str, dt.date | None] = {}
        for key in ("valid_from", "valid_to"):
            value = raw.get(key)
            if value is not None and (
                not isinstance(value, dt.date) or isinstance(value, dt.datetime)
            ):
                self.problem(key, "expected a TOML date such as 2026-01-01")
                value = None
            dates[key] = value
        start, end = dates["valid_from"], dates["valid_to"]
        if start is not None and end is not None and end < start:
            self.problem("valid_to", "valid_to is before valid_from")
        return rule_id, texts, dates, before

    def rule(self, raw: Any, kind: Kind) -> Rule | None:
        head = self.rule_head(raw, _RULE_KEYS, "rule")
        if head is None:
            return None
        rule_id, texts, dates, before = head
        when = self.condition(raw.get("when", {}), "when")
        then = self.outputs(raw.get("then"), kind)
        if len(self.problems) > before:
            return None
        return Rule(
            id=rule_id,
            when=when,
            then=then,
            description=texts["description"],
            citation=texts["citation"],
            valid_from=dates["valid_from"],
            valid_to=dates["valid_to"],
        )

    # ------------------------------------------------------------- conditions

    def condition(self, raw: Any, path: str, depth: int = 0) -> Condition:
        if not isinstance(raw, Mapping):
            self.problem(path, "a condition is a table of facts and operators")
            return Always()
        if depth > MAX_DEPTH:
            # stop here: deeper still would exhaust the stack before the limit is reported
            self.problem(path, f"nested more than {MAX_DEPTH} levels deep (all/any/not)")
            return Always()
        items: list[Condition] = []
        for key, value in raw.items():
            where = f"{path}.{key}"
            if key in ("all", "any"):
                if not isinstance(value, list) or not value:
                    self.problem(where, f"'{key}' takes a non-empty list of condition tables")
                    continue
                parts = tuple(
                    self.condition(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)
                )
                items.append(All(parts) if key == "all" else AnyOf(parts))
            elif key == "not":
                items.append(Not(self.condition(value, where, depth + 1)))
            elif key in FACTS:
                items.extend(self.fact(key, value, where))
            else:
                self.problem(where, f"unknown fact {key!r}" + _suggest(key, [*FACTS, *_LOGICAL]))
        if not items:
            return Always()
        return items[0] if len(items) == 1 else All(tuple(items))

    def fact(self, name: str, raw: Any, path: str) -> list[Condition]:
        spec = FACTS[name]
        listy = spec.type is FactType.TEXT_LIST
        if isinstance(raw, Mapping):
            pairs = list(raw.items())
        elif isinstance(raw, list):
            pairs = [(Op.ANY_IN.value if listy else Op.IN.value, raw)]
        else:
            pairs = [(Op.ANY_IN.value, [raw]) if listy else (Op.EQ.value, raw)]
        found: list[Condition] = []
        for op_name, operand in pairs:
            where = f"{path}.{op_name}" if isinstance(raw, Mapping) else path
            try:
                op = Op(op_name)
            except ValueError:
                self.problem(
                    where, f"unknown operator {op_name!r}" + _suggest(str(op_name), list(Op))
                )
                continue
            if op not in OPERATORS[spec.type]:
                allowed = ", ".join(sorted(o.value for o in OPERATORS[spec.type]))
                self.problem(
                    where,
                    f"operator {op.value!r} does not apply to {spec.type.value} fact "
                    f"{name!r} (allowed: {allowed})",
                )
                continue
            value = self.operand(name, op, operand, where)
            if value is not None:
                found.append(Compare(name, op, value))
        return found

    def operand(self, name: str, op: Op, raw: Any, where: str) -> Any:
        spec = FACTS[name]
        if op in (Op.EXISTS, Op.MISSING):
            if raw is not True:
                self.problem(where, f"'{op.value}' takes true")
                return None
            return True
        if op in LIST_OPERAND:
            if op is Op.PREFIX and isinstance(raw, str):
                raw = [raw]
            if not isinstance(raw, list) or not raw:
                self.problem(where, f"'{op.value}' takes a non-empty list")
                return None
            checked = [
                self.scalar(spec.type, spec.values, op, v, f"{where}[{i}]")
                for i, v in enumerate(raw)
            ]
            return None if any(v is None for v in checked) else tuple(checked)
        return self.scalar(spec.type, spec.values, op, raw, where)

    def scalar(
        self, kind: FactType, values: tuple[str, ...] | None, op: Op, raw: Any, where: str
    ) -> Any:
        expected = {
            FactType.TEXT: (str,),
            FactType.TEXT_LIST: (str,),
            FactType.INTEGER: (int,),
            FactType.NUMBER: (int, float),
            FactType.BOOLEAN: (bool,),
            FactType.DATE: (dt.date,),
        }[kind]
        wrong_bool = isinstance(raw, bool) and kind is not FactType.BOOLEAN
        wrong_datetime = isinstance(raw, dt.datetime)
        if not isinstance(raw, expected) or wrong_bool or wrong_datetime:
            self.problem(where, f"expected a {kind.value} value, got {type(raw).__name__}")
            return None
        prefixing = op in (Op.PREFIX, Op.ANY_PREFIX, Op.ALL_PREFIX, Op.NONE_PREFIX)
        if prefixing and raw == "":
            self.problem(where, "an empty prefix matches everything; remove the condition")
            return None
        if values is not None and not prefixing and raw not in values:
            self.problem(
                where, f"{raw!r} is not one of {', '.join(values)}" + _suggest(str(raw), values)
            )
            return None
        return raw

    # ------------------------------------------------------------- outputs

    def outputs(self, raw: Any, kind: Kind) -> dict[str, Any]:
        if not isinstance(raw, Mapping) or not raw:
            self.problem("then", "expected a table of outputs")
            return {}
        specs = OUTPUTS[kind]
        result: dict[str, Any] = {}
        for key, value in raw.items():
            where = f"then.{key}"
            spec = specs.get(key)
            if spec is None:
                self.problem(
                    where, f"unknown {kind.value} output {key!r}" + _suggest(key, list(specs))
                )
                continue
            items = value if spec.many else [value]
            if spec.many and not isinstance(value, list):
                self.problem(where, "expected a list")
                continue
            ok = True
            for item in items:
                if spec.type is float:
                    good = isinstance(item, int | float) and not isinstance(item, bool)
                elif spec.type is int:
                    good = isinstance(item, int) and not isinstance(item, bool) and item >= 0
                else:
                    good = isinstance(item, spec.type)
                if not good:
                    self.problem(where, f"expected {spec.type.__name__} values")
                    ok = False
                elif key == "alternative_services" and not _service_code(item):
                    self.problem(
                        where,
                        "expected service codes: cpt:, hcpcs:, snomed: or icd10: and the "
                        "code, or <system URI>|<code>",
                    )
                    ok = False
                elif spec.values is not None and item not in spec.values:
                    self.problem(
                        where,
                        f"{item!r} is not one of {', '.join(spec.values)}"
                        + _suggest(str(item), spec.values),
                    )
                    ok = False
            if ok:
                result[key] = float(value) if spec.type is float else value
        if kind is Kind.COVERAGE and "info_needed" in result:
            conditional = "conditional" in (
                result.get("covered"),
                result.get("pa_needed"),
                result.get("doc_needed"),
            )
            if not conditional:
                self.problem(
                    "then.info_needed", "info_needed only goes with a 'conditional' output"
                )
        return result


def _service_code(text: str) -> bool:
    """Whether ``text`` reads as a service code (:meth:`~referralkit.model.Code.from_reference`)."""
    try:
        Code.from_reference(text)
    except ValidationError:
        return False
    return True
