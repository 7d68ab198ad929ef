"""What the rules decided: the Da Vinci CRD coverage-information extension (the coverage
decision), referralkit's urgency-assessment extension, and the rule hits and traces both
carry; both ways."""

from __future__ import annotations

from collections.abc import Callable

from ...model import (
    Code,
    CoverageDecision,
    Covered,
    DocNeeded,
    InfoNeeded,
    NetworkStatus,
    PaNeeded,
    Priority,
    RuleHit,
    RuleTrace,
    UrgencyAssessment,
)
from ._codesystems import CRD_COVERAGE_INFORMATION, EXT_DECISION, EXT_URGENCY
from ._datatypes import _code, _coding, _complex, _ext, _firsts, _ref
from ._json import JSON, T, _build, _enum, _Node

# --------------------------------------------------------------------------- writing


def _write_decision(d: CoverageDecision, coverage: str | None) -> JSON:
    """The Da Vinci CRD coverage-information extension, with referralkit's additions."""
    parts: list[JSON] = []
    if coverage is not None:
        parts.append(_ext("coverage", "Reference", _ref(coverage)))
    parts.append(_ext("covered", "Code", d.covered.value))
    if d.pa_needed is not None:
        parts.append(_ext("pa-needed", "Code", d.pa_needed.value))
    if d.doc_needed is not None:
        parts.append(_ext("doc-needed", "Code", d.doc_needed.value))
    parts.extend(_ext("info-needed", "Code", i.value) for i in d.info_needed)
    if d.reason is not None:
        parts.append(_ext("reason", "CodeableConcept", {"text": d.reason}))
    extra: list[JSON] = [_ext("network-status", "Code", d.network_status.value)]
    if d.explanation:
        extra.append(_ext("explanation", "String", d.explanation))
    extra.extend(_ext("alternative", "String", a) for a in d.alternatives)
    extra.extend(_ext("alternative-service", "Coding", _coding(c)) for c in d.alternative_services)
    extra.extend(_hit_ext(h) for h in d.hits)
    extra.extend(_trace_ext(t) for t in d.trace)
    parts.append(_complex(EXT_DECISION, extra))
    return _complex(CRD_COVERAGE_INFORMATION, parts)


def _urgency_extension(u: UrgencyAssessment) -> JSON:
    return _complex(
        EXT_URGENCY,
        [
            _ext("score", "Decimal", u.score),
            *(_ext("reason", "String", reason) for reason in u.reasons),
            *(_hit_ext(h) for h in u.hits),
            *(_trace_ext(t) for t in u.trace),
        ],
    )


def _hit_ext(hit: RuleHit) -> JSON:
    return _complex(
        "hit",
        [
            _ext("ruleset", "String", hit.ruleset),
            _ext("version", "String", hit.version),
            _ext("rule", "String", hit.rule_id),
        ],
    )


def _trace_ext(trace: RuleTrace) -> JSON:
    parts = [
        _ext("ruleset", "String", trace.ruleset),
        _ext("version", "String", trace.version),
        _ext("rule", "String", trace.rule_id),
        _ext("matched", "Boolean", trace.matched),
        _ext("active", "Boolean", trace.active),
    ]
    if trace.failed is not None:
        parts.append(_ext("failed", "String", trace.failed))
    return _complex("trace", parts)


# --------------------------------------------------------------------------- reading


def _decision(ext: _Node) -> CoverageDecision:
    values = ext.parts()

    def code(name: str, kind: type[T]) -> T | None:
        found = values.get(name)
        return _enum(found[0], "valueCode", kind, found[0].text("valueCode")) if found else None

    extra = values.get(EXT_DECISION)
    more = extra[0].parts() if extra else {}
    covered = code("covered", Covered)
    if covered is None:
        raise ext.error("extension", "the coverage information has no 'covered'")
    reason_node = values.get("reason")
    reason = None
    if reason_node:
        concept = reason_node[0].obj("valueCodeableConcept")
        if concept is not None:
            reason = concept.text("text") or concept.any_code()
    network = more.get("network-status")
    return _build(
        ext.path,
        CoverageDecision,
        covered=covered,
        pa_needed=code("pa-needed", PaNeeded),
        doc_needed=code("doc-needed", DocNeeded),
        info_needed=tuple(
            _enum(n, "valueCode", InfoNeeded, n.need_text("valueCode"))
            for n in values.get("info-needed", [])
        ),
        reason=reason,
        network_status=(
            _enum(network[0], "valueCode", NetworkStatus, network[0].text("valueCode"))
            if network
            else None
        )
        or NetworkStatus.UNKNOWN,
        explanation=more["explanation"][0].string("valueString") if "explanation" in more else "",
        alternatives=tuple(n.need_text("valueString") for n in more.get("alternative", [])),
        alternative_services=tuple(_need_code(n) for n in more.get("alternative-service", [])),
        hits=tuple(_hit(n) for n in more.get("hit", [])),
        trace=tuple(_trace(n) for n in more.get("trace", [])),
    )


def _rule_texts(node: _Node, what: str) -> tuple[dict[str, _Node], Callable[[str], str]]:
    """The sub-extensions of a rule hit or trace, and a reader of its required strings."""
    sub = _firsts(node)

    def text(name: str) -> str:
        if name not in sub:
            raise node.error("extension", f"the rule {what} has no {name!r}")
        return sub[name].need_text("valueString")

    return sub, text


def _hit(node: _Node) -> RuleHit:
    _, text = _rule_texts(node, "hit")
    return _build(
        node.path, RuleHit, ruleset=text("ruleset"), version=text("version"), rule_id=text("rule")
    )


def _trace(node: _Node) -> RuleTrace:
    sub, text = _rule_texts(node, "trace")

    def flag(name: str, default: bool) -> bool:
        value = sub[name].flag("valueBoolean") if name in sub else None
        return default if value is None else value

    return _build(
        node.path,
        RuleTrace,
        ruleset=text("ruleset"),
        version=text("version"),
        rule_id=text("rule"),
        matched=flag("matched", False),
        active=flag("active", True),
        failed=sub["failed"].text("valueString") if "failed" in sub else None,
    )


def _urgency(task: _Node) -> UrgencyAssessment | None:
    ext = task.extension(EXT_URGENCY)
    raw_priority = task.text("priority")
    restriction = task.obj("restriction")
    period = restriction.obj("period") if restriction is not None else None
    due = period.datetime("end") if period is not None else None
    if ext is None and raw_priority is None and due is None:
        return None
    priority = _enum(task, "priority", Priority, raw_priority) or Priority.ROUTINE
    parts = ext.parts() if ext is not None else {}
    score_node = parts.get("score")
    score = score_node[0].number("valueDecimal") if score_node else None
    return _build(
        task.path,
        UrgencyAssessment,
        priority=priority,
        score=float(priority.rank) if score is None else score,
        due_by=due,
        reasons=tuple(n.need_text("valueString") for n in parts.get("reason", [])),
        hits=tuple(_hit(n) for n in parts.get("hit", [])),
        trace=tuple(_trace(n) for n in parts.get("trace", [])),
    )


def _need_code(node: _Node) -> Code:
    """An alternative service's ``valueCoding``, with its system and code."""
    coding = node.obj("valueCoding")
    code = None if coding is None else _code(coding)
    if code is None:
        raise node.error(
            "valueCoding", "an alternative service needs a coding with system and code"
        )
    return code
