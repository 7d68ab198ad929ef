"""Decision provenance: which rules made a stored decision, why, and would they still.

Every ruleset a desk decides with is kept once in its store, **content-addressed**: under the
SHA-256 of a canonical JSON document of the *parsed* ruleset (:func:`ruleset_document`). The
document holds what the rules mean and what an explanation shows — the ruleset's name, kind,
hit policy, aggregation and description; each rule's id, condition, outputs, validity dates,
description and citation — with keys sorted and no insignificant whitespace. So reformatting a
TOML file, reordering its keys, rewriting ``priority = "urgent"`` as
``priority = { eq = "urgent" }`` or editing a comment keeps the digest; changing a rule (or the
text that explains it) makes a new one. A policy (the rulesets it consults, in order) is a
document too: its kind and its rulesets' digests.

Each ``coverage_decided`` and ``urgency_assessed`` event carries a ``provenance`` payload
(:class:`Provenance`): the policy digest (whose document lists the rulesets' digests; an
event stays small: 64 characters, not one digest per ruleset). A decider that is not
rule-based (:class:`~referralkit.policy.BasicCoverage`, your own
:class:`~referralkit.policy.CoverageDecider`) is marked :data:`UNVERSIONED`, with its class
name; events written before provenance existed read as :data:`UNRECORDED`. Neither is a hash.

:func:`explain` renders the stored decisions with the rules that fired and why the others did
not; :func:`replay` decides again with the policy in force on a date and reports any
difference. :meth:`ReferralDesk.explain <referralkit.desk.ReferralDesk.explain>` and
:meth:`~referralkit.desk.ReferralDesk.replay` are the usual way in; see :doc:`/howto-provenance`.

>>> from referralkit.rules.policies import UrgencyPolicy
>>> policy = UrgencyPolicy.shipped()
>>> len(ruleset_digest(policy.rulesets[0]))
64
>>> provenance_of(policy).versioned
True

.. versionadded:: 0.2
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from .. import _validators as v
from ..errors import RulesError, ValidationError
from ..events import EventType, apply_all
from ..model import CoverageDecision, Referral, ReferralEvent, RuleTrace, UrgencyAssessment
from ..serialization import from_dict
from ..storage import ReferralStore
from ..storage._versions import RuleVersion
from .facts import extract
from .model import (
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
from .policies import (
    CoveragePolicy,
    UrgencyPolicy,
    _Policy,
    coverage_decision,
    urgency_assessment,
)

__all__ = [
    "UNRECORDED",
    "UNVERSIONED",
    "DecisionExplanation",
    "Difference",
    "Explanation",
    "Provenance",
    "Replay",
    "ReplayedDecision",
    "RuleOutcome",
    "canonical_json",
    "explain",
    "keep_provenance",
    "load_policy",
    "policy_versions",
    "provenance_of",
    "replay",
    "ruleset_digest",
    "ruleset_document",
    "ruleset_from_json",
]

UNVERSIONED: Final = "unversioned"
"""The provenance of a decision made by a decider that is not rule-based."""

UNRECORDED: Final = "unrecorded"
"""The provenance of a decision stored before decisions recorded theirs."""

_KINDS: Final = {"coverage": EventType.COVERAGE_DECIDED, "urgency": EventType.URGENCY_ASSESSED}

# --------------------------------------------------------------------------- documents


def _condition(c: Condition) -> dict[str, Any]:
    """A condition in the TOML format's structure (what :func:`~referralkit.rules.loader.parse`
    reads back to an equal condition)."""
    if isinstance(c, Compare):
        value = list(c.value) if isinstance(c.value, tuple) else c.value
        return {c.fact: {c.op.value: value}}
    if isinstance(c, All):
        return {"all": [_condition(i) for i in c.items]}
    if isinstance(c, AnyOf):
        return {"any": [_condition(i) for i in c.items]}
    if isinstance(c, Not):
        return {"not": _condition(c.item)}
    if isinstance(c, Always):
        return {}
    raise RulesError(f"cannot write a {type(c).__name__} condition")


def ruleset_document(ruleset: Ruleset) -> dict[str, Any]:
    """``ruleset`` in the structure of the TOML format, normalised: every condition spelled
    out (``{fact = {op = value}}``, ``all``/``any``/``not``), optional keys left out when
    unset. :func:`~referralkit.rules.loader.parse` reads it back to an equal ruleset."""
    if not isinstance(ruleset, Ruleset):
        raise ValidationError("ruleset", "expected a Ruleset")
    if ruleset.kind is Kind.EVENT:
        raise RulesError("event rulesets have no provenance document (they make no decisions)")
    header: dict[str, Any] = {
        "name": ruleset.name,
        "kind": ruleset.kind.value,
        "hit_policy": ruleset.hit_policy.value,
        "description": ruleset.description,
    }
    if ruleset.aggregation is not None:
        header["aggregation"] = ruleset.aggregation.value
    rules = []
    for rule in ruleset.rules:
        raw: dict[str, Any] = {
            "id": rule.id,
            "description": rule.description,
            "citation": rule.citation,
            "when": _condition(rule.when),
            "then": {k: list(v) if isinstance(v, tuple) else v for k, v in rule.then.items()},
        }
        if rule.valid_from is not None:
            raw["valid_from"] = rule.valid_from
        if rule.valid_to is not None:
            raw["valid_to"] = rule.valid_to
        rules.append(raw)
    return {"ruleset": header, "rules": rules}


def _encode(value: object) -> object:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return {"$date": value.isoformat()}
    # a ruleset built in Python may hold anything; a loaded one holds TOML values only
    raise RulesError(f"a rule holds a {type(value).__name__}, which has no JSON form")


def _decode(obj: dict[str, Any]) -> object:
    if len(obj) == 1 and "$date" in obj:
        return dt.date.fromisoformat(obj["$date"])
    return obj


def canonical_json(data: Any) -> str:
    """``data`` as canonical JSON: keys sorted, no insignificant whitespace, UTF-8 text kept
    as is, dates as ``{"$date": "YYYY-MM-DD"}``. Equal data gives equal text."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_encode
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ruleset_digest(ruleset: Ruleset) -> str:
    """The SHA-256 (hex) of the ruleset's canonical document: its address in a store."""
    return _digest(canonical_json(ruleset_document(ruleset)))


def _read_condition(raw: Mapping[str, Any]) -> Condition:
    if not raw:
        return Always()
    ((key, value),) = raw.items()
    if key == "all":
        return All(tuple(_read_condition(i) for i in value))
    if key == "any":
        return AnyOf(tuple(_read_condition(i) for i in value))
    if key == "not":
        return Not(_read_condition(value))
    ((op, operand),) = value.items()
    return Compare(key, Op(op), tuple(operand) if isinstance(operand, list) else operand)


def ruleset_from_json(text: str) -> Ruleset:
    """The ruleset a stored document (:func:`canonical_json` of :func:`ruleset_document`)
    describes: the exact inverse of writing it, so a ruleset built in Python that no TOML
    file could spell (the loader refuses an empty prefix, say) reads back alike too.
    A document that is not one raises :class:`~referralkit.errors.RulesError`."""
    try:
        data = json.loads(text, object_hook=_decode)
        header = data["ruleset"]
        rules = tuple(
            Rule(
                id=raw["id"],
                when=_read_condition(raw["when"]),
                then=raw["then"],
                description=raw["description"],
                citation=raw["citation"],
                valid_from=raw.get("valid_from"),
                valid_to=raw.get("valid_to"),
            )
            for raw in data["rules"]
        )
        aggregation = header.get("aggregation")
        return Ruleset(
            name=header["name"],
            kind=Kind(header["kind"]),
            rules=rules,
            hit_policy=HitPolicy(header["hit_policy"]),
            aggregation=Aggregation(aggregation) if aggregation is not None else None,
            description=header["description"],
            source="<stored ruleset>",
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RulesError("not a stored ruleset document") from None


# --------------------------------------------------------------------------- provenance


@attrs.frozen
class Provenance:
    """What a decision event says made it: ``policy`` is the SHA-256 of the policy document
    (kept in the store; it lists the rulesets' digests in consultation order), or
    :data:`UNVERSIONED`, or :data:`UNRECORDED`. ``decider`` names the decider's class."""

    policy: str
    decider: str = ""

    @property
    def versioned(self) -> bool:
        """Whether the decision names a stored policy version."""
        return self.policy not in (UNVERSIONED, UNRECORDED)

    def to_payload(self) -> dict[str, Any]:
        """The event payload's ``provenance`` value."""
        return {"policy": self.policy, "decider": self.decider}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Provenance:
        """The provenance an event payload records (:data:`UNRECORDED` when it has none)."""
        raw = payload.get("provenance")
        if raw is None:
            return cls(UNRECORDED)
        if not isinstance(raw, Mapping) or not isinstance(raw.get("policy"), str):
            raise ValidationError("provenance", "expected a policy digest or marker")
        return cls(raw["policy"], str(raw.get("decider", "")))

    def __str__(self) -> str:
        if self.policy == UNVERSIONED:
            return f"unversioned ({self.decider or 'a custom decider'}: not rule-based)"
        if self.policy == UNRECORDED:
            return "unrecorded (stored before decisions recorded their rules)"
        return f"policy {self.policy[:12]}"


# a policy's documents, worked out once per policy object (a policy's rulesets never change;
# the shared default policies are hashed once per process)
_DOCUMENTS: weakref.WeakKeyDictionary[_Policy, tuple[str, list[tuple[str, str, str, str]]]] = (
    weakref.WeakKeyDictionary()
)


def _policy_document(policy: _Policy) -> tuple[str, list[tuple[str, str, str, str]]]:
    """The policy's digest, and the documents to keep: (digest, kind, name, JSON) each."""
    found = _DOCUMENTS.get(policy)
    if found is None:
        found = _DOCUMENTS[policy] = _work_out(policy)
    return found


def _work_out(policy: _Policy) -> tuple[str, list[tuple[str, str, str, str]]]:
    kind = policy.kind.value
    found = []
    for ruleset in policy.rulesets:
        text = canonical_json(ruleset_document(ruleset))
        found.append((_digest(text), kind, ruleset.name[:2_000], text))
    text = canonical_json({"kind": kind, "rulesets": [d for d, *_ in found]})
    digest = _digest(text)
    return digest, [*found, (digest, f"{kind}-policy", policy.name[:2_000], text)]


def provenance_of(decider: object) -> Provenance:
    """The provenance a decision by ``decider`` records: a rule-based policy's digests, or
    :data:`UNVERSIONED` for anything else."""
    if isinstance(decider, _Policy):
        digest, _ = _policy_document(decider)
        return Provenance(digest, type(decider).__name__)
    return Provenance(UNVERSIONED, decider=type(decider).__name__)


def policy_versions(decider: object, at: dt.datetime) -> list[RuleVersion]:
    """The documents a store keeps for ``decider`` (its rulesets, then the policy), recorded
    at ``at``; none for a decider that is not rule-based."""
    if not isinstance(decider, _Policy):
        return []
    _, documents = _policy_document(decider)
    return [RuleVersion(d, kind, name, text, at) for d, kind, name, text in documents]


def keep_provenance(
    store: ReferralStore, kind: str, decider: object, at: dt.datetime
) -> Provenance:
    """Keep ``decider``'s rule versions in ``store`` (once) and note that ``kind`` decisions
    are made with it from ``at``; its :class:`Provenance`. A store that keeps no rule
    versions (an adapter written before 0.2) is left alone: the events still name the
    digests."""
    provenance = provenance_of(decider)
    versions = policy_versions(decider, at)
    if versions:
        try:
            for version in versions:
                # a read first: once any desk has kept them, a desk starting writes nothing
                # but (at most) the note of its policy
                if store.find_rule_version(version.digest) is None:
                    store.save_rule_version(version)
            store.record_policy_use(kind, provenance.policy, at)
        except NotImplementedError:
            # a store that keeps no rule versions (a schema before 5, a third-party adapter
            # opting out): the desk still decides and its events still name the digests;
            # explain and replay then say the store keeps no version
            pass
    return provenance


_POLICIES: dict[str, _Policy] = {}
_POLICIES_LOCK = threading.Lock()


def _document(store: ReferralStore, digest: str, kind: str) -> RuleVersion:
    try:
        found = store.find_rule_version(digest)
    except NotImplementedError:
        raise RulesError(f"{type(store).__name__} keeps no rule versions") from None
    if found is None:
        raise RulesError(f"the store keeps no {kind} version {digest[:12]}")
    if found.kind != kind:
        raise RulesError(f"version {digest[:12]} is a {found.kind}, not a {kind}")
    return found


def load_policy(store: ReferralStore, digest: str) -> CoveragePolicy | UrgencyPolicy:
    """The policy kept in ``store`` under ``digest``, rebuilt on the python engine.

    A digest names its content, so a rebuilt policy is shared by every store that keeps it
    (a few dozen are remembered). Raises :class:`~referralkit.errors.RulesError` when the
    store lacks a document or a stored ruleset no longer reads back to its digest."""
    try:
        found = store.find_rule_version(digest)
    except NotImplementedError:
        raise RulesError(f"{type(store).__name__} keeps no rule versions") from None
    if found is None or not found.kind.endswith("-policy"):
        raise RulesError(f"the store keeps no policy version {digest[:12]}")
    kind = found.kind.removesuffix("-policy")
    try:
        digests = list(json.loads(found.document)["rulesets"])
    except (ValueError, KeyError, TypeError):
        raise RulesError(f"policy version {digest[:12]} is not a policy document") from None
    documents = [_document(store, d, kind) for d in digests]
    # only once the store has shown it keeps every document: the answer never depends on
    # what this process happened to see before
    with _POLICIES_LOCK:
        cached = _POLICIES.get(digest)
    if isinstance(cached, CoveragePolicy | UrgencyPolicy):
        return cached
    rulesets = []
    for wanted, stored in zip(digests, documents, strict=True):
        ruleset = ruleset_from_json(stored.document)
        if ruleset_digest(ruleset) != wanted:
            raise RulesError(f"stored ruleset {wanted[:12]} does not read back alike")
        rulesets.append(ruleset)
    policy: CoveragePolicy | UrgencyPolicy = (
        CoveragePolicy(rulesets) if kind == "coverage" else UrgencyPolicy(rulesets)
    )
    with _POLICIES_LOCK:
        if len(_POLICIES) > 32:
            _POLICIES.clear()
        _POLICIES[digest] = policy
    return policy


# --------------------------------------------------------------------------- the inputs


Decision = CoverageDecision | UrgencyAssessment


def _latest(events: Sequence[ReferralEvent], kind: str, as_of: dt.datetime | None) -> int | None:
    wanted = _KINDS[kind].value
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if event.type == wanted and (as_of is None or event.at <= as_of):
            return index
    return None


def _input(events: Sequence[ReferralEvent], index: int) -> Referral:
    """The referral as the decider saw it when the event at ``index`` was made: every event
    before it. An urgency assessment made with a coverage decision (intake, reassess, a new
    specialist) saw the new decision but not the authorization change recorded between
    them (see ``ReferralDesk._assessments``)."""
    target = events[index]
    urgency = target.type == EventType.URGENCY_ASSESSED.value
    before = [
        e
        for e in events[:index]
        if not (
            urgency
            and e.version == target.version
            and e.type == EventType.AUTHORIZATION_CHANGED.value
        )
    ]
    return apply_all(None, before)


def _stored(event: ReferralEvent) -> Decision:
    if event.type == EventType.COVERAGE_DECIDED.value:
        return from_dict(CoverageDecision, event.payload.get("decision"))
    return from_dict(UrgencyAssessment, event.payload.get("assessment"))


def _decide(
    policy: CoveragePolicy | UrgencyPolicy, referral: Referral, at: dt.datetime, day: dt.date
) -> Decision:
    """``policy``'s decision, with a trace, on the referral's facts at ``at`` (its age, its
    coverage period, the due date's start when not yet received) under the rules in force on
    ``day``: what ``decide``/``assess`` with ``explain=True`` do when ``day`` is
    ``at``'s date."""
    facts = extract(referral, at)
    evaluation, trace = policy.evaluate(facts, day, explain=True)
    if isinstance(policy, CoveragePolicy):
        return coverage_decision(evaluation, facts, trace)
    return urgency_assessment(evaluation, referral, at, trace)


# --------------------------------------------------------------------------- differences


@attrs.frozen
class Difference:
    """One output that differs between a stored decision and its replay. Values are the
    outputs' codes (``covered``, ``auth-needed``, a due date, rule ids), never free text."""

    field: str
    stored: str = attrs.field(**v.PHI_FIELD)
    replayed: str = attrs.field(**v.PHI_FIELD)

    def __str__(self) -> str:
        return f"{self.field}: {self.stored} -> {self.replayed}"


def _values(decision: Decision) -> dict[str, str]:
    rules = ", ".join(h.rule_id for h in decision.hits) or "-"
    if isinstance(decision, CoverageDecision):
        return {
            "covered": decision.covered.value,
            "pa_needed": decision.pa_needed.value if decision.pa_needed else "-",
            "doc_needed": decision.doc_needed.value if decision.doc_needed else "-",
            "info_needed": ", ".join(i.value for i in decision.info_needed) or "-",
            "network_status": decision.network_status.value,
            "rules": rules,
        }
    return {
        "priority": decision.priority.value,
        "score": f"{decision.score:g}",
        "due_by": decision.due_by.isoformat() if decision.due_by else "-",
        "rules": rules,
    }


def _differences(stored: Decision, replayed: Decision) -> tuple[Difference, ...]:
    before, after = _values(stored), _values(replayed)
    return tuple(Difference(k, before[k], after[k]) for k in before if before[k] != after[k])


def _summary(decision: Decision) -> str:
    values = _values(decision)
    values.pop("rules")
    return ", ".join(f"{k}={v}" for k, v in values.items() if v != "-")


# --------------------------------------------------------------------------- explain


@attrs.frozen
class RuleOutcome:
    """What one rule did for a decision: ``fired`` (its outputs were used), ``matched``
    (it matched, but the hit policy used another), ``no match`` (``failed`` is its first
    false condition, as written in the rule file), ``not in force`` on the decision date, or
    ``not consulted`` (an earlier ruleset decided)."""

    ruleset: str
    # which rules a patient's referral matched is PHI (``suspected-cancer``): redacted in
    # ``repr`` as on RuleHit and RuleTrace; the text (``str``) is for readers allowed to see
    rule_id: str = attrs.field(**v.PHI_FIELD)
    outcome: str = attrs.field(**v.PHI_FIELD)
    description: str = attrs.field(**v.PHI_FIELD, default="")
    failed: str | None = attrs.field(**v.PHI_FIELD, default=None)

    def __str__(self) -> str:
        text = f"{self.rule_id}: {self.outcome}"
        if self.failed:
            text += f" ({self.failed} is false)"
        return text + (f" -- {self.description}" if self.description else "")


@attrs.frozen
class DecisionExplanation:
    """The stored coverage decision or urgency assessment, how it was made, and the rules.

    ``summary`` lists the decision's coded outputs (no free text); ``fired`` the ids of the
    rules that made it, as stored. ``rules`` is the outcome of every rule of the stored policy
    (empty when the decision is not versioned). ``reproduced`` says whether deciding again with
    the stored policy, on the referral as it then was and on the same date, gives the stored
    outputs (``None`` when there is no stored policy to ask); ``differences`` says how not.
    """

    kind: str
    decided_at: dt.datetime
    provenance: Provenance
    summary: str
    fired: tuple[str, ...] = attrs.field(**v.PHI_FIELD)
    rulesets: tuple[str, ...] = ()
    rules: tuple[RuleOutcome, ...] = ()
    reproduced: bool | None = None
    differences: tuple[Difference, ...] = ()
    note: str = ""

    def lines(self) -> list[str]:
        """The explanation as lines of text."""
        lines = [
            f"{self.kind}: {self.summary}",
            f"  decided {self.decided_at:%Y-%m-%d %H:%M} UTC with {self.provenance}",
        ]
        if self.rulesets:
            lines.append(f"  rulesets consulted in order: {', '.join(self.rulesets)}")
        lines.append(f"  rules that fired: {', '.join(self.fired) or 'none'}")
        current = None
        for outcome in self.rules:
            if outcome.ruleset != current:
                current = outcome.ruleset
                lines.append(f"  ruleset {current}:")
            lines.append(f"    {outcome}")
        if self.reproduced is True:
            lines.append("  decided again with the stored rules: the same")
        elif self.reproduced is False:
            lines.append("  decided again with the stored rules: DIFFERENT")
            lines += [f"    {d}" for d in self.differences]
        if self.note:
            lines.append(f"  {self.note}")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


@attrs.frozen
class Explanation:
    """Why a stored referral got its decisions (:func:`explain`): its coverage decision and
    urgency assessment, each ``None`` when none is stored.

    Its text names the referral by id and shows rule-file content (ids, conditions,
    descriptions, digests) and coded outputs; never a value of the referral (names, numbers,
    dates of birth, contacts, diagnoses, free text).
    """

    referral_id: str
    coverage: DecisionExplanation | None
    urgency: DecisionExplanation | None

    def __str__(self) -> str:
        lines = [f"referral {self.referral_id}: why it got its decisions"]
        for part, kind in ((self.coverage, "coverage"), (self.urgency, "urgency")):
            lines += part.lines() if part is not None else [f"{kind}: no decision stored"]
        return "\n".join(lines)


def _outcomes(
    policy: CoveragePolicy | UrgencyPolicy, decision: Decision, day: dt.date
) -> tuple[RuleOutcome, ...]:
    traces: dict[tuple[str, str], RuleTrace] = {(t.ruleset, t.rule_id): t for t in decision.trace}
    used = {(h.ruleset, h.rule_id) for h in decision.hits}
    found = []
    for ruleset in policy.rulesets:
        for rule in ruleset.rules:
            key = (ruleset.name, rule.id)
            trace = traces.get(key)
            failed = None
            if trace is None:
                outcome = "not consulted"
            elif key in used:
                outcome = "fired"
            elif trace.matched:
                outcome = "matched, not used"
            elif not trace.active:
                outcome = f"not in force on {day.isoformat()}"
            else:
                outcome, failed = "no match", trace.failed
            found.append(RuleOutcome(ruleset.name, rule.id, outcome, rule.description, failed))
    return tuple(found)


def _explain_one(
    store: ReferralStore, events: Sequence[ReferralEvent], kind: str
) -> DecisionExplanation | None:
    index = _latest(events, kind, None)
    if index is None:
        return None
    event = events[index]
    stored = _stored(event)
    provenance = Provenance.from_payload(event.payload)
    base = DecisionExplanation(
        kind,
        event.at,
        provenance,
        _summary(stored),
        tuple(h.rule_id for h in stored.hits),
    )
    if not provenance.versioned:
        return attrs.evolve(base, note="no rule trace: the decision names no stored rules")
    try:
        policy = load_policy(store, provenance.policy)
    except RulesError as error:
        return attrs.evolve(base, note=f"cannot decide again: {error}")
    again = _decide(policy, _input(events, index), event.at, event.at.date())
    differences = _differences(stored, again)
    return attrs.evolve(
        base,
        rulesets=tuple(f"{r.name} ({ruleset_digest(r)[:12]})" for r in policy.rulesets),
        rules=_outcomes(policy, again, event.at.date()),
        reproduced=not differences,
        differences=differences,
    )


def explain(store: ReferralStore, referral_id: str) -> Explanation:
    """Why the referral ``referral_id`` got its current coverage decision and urgency
    assessment: each with its provenance, the outcome of every rule of the stored policy
    (decided again on the referral as it then was, with a trace) and whether that gives the
    stored outputs."""
    events = store.events(referral_id)
    return Explanation(
        referral_id,
        _explain_one(store, events, "coverage"),
        _explain_one(store, events, "urgency"),
    )


# --------------------------------------------------------------------------- replay


@attrs.frozen
class ReplayedDecision:
    """One kind of decision decided again (:func:`replay`).

    ``stored_at`` and ``stored`` (its provenance) describe the stored decision compared
    against (``None`` when there was none yet); ``policy`` is the digest of the policy decided
    with (``None`` when none could be found: ``note`` says why); ``differences`` lists the
    outputs that differ.
    """

    kind: str
    decided_at: dt.datetime | None
    stored_at: dt.datetime | None
    stored: Provenance | None
    policy: str | None
    replayed: str = attrs.field(**v.PHI_FIELD, default="")
    differences: tuple[Difference, ...] = ()
    note: str = ""

    @property
    def same(self) -> bool:
        """Whether the replay gives the stored outputs (false when nothing could be
        compared)."""
        return self.policy is not None and self.stored_at is not None and not self.differences

    def lines(self) -> list[str]:
        """The replay as lines of text."""
        head = f"{self.kind}: "
        if self.policy is None:
            return [head + f"not replayed: {self.note}"]
        when = f"{self.decided_at:%Y-%m-%d %H:%M} UTC" if self.decided_at else "-"
        lines = [head + f"decided again as of {when} with policy {self.policy[:12]}"]
        lines.append(f"  replayed: {self.replayed}")
        if self.stored_at is None:
            lines.append("  no stored decision to compare with")
        else:
            lines.append(
                f"  stored {self.stored_at:%Y-%m-%d %H:%M} UTC with {self.stored}: "
                + ("the same" if not self.differences else "DIFFERENT")
            )
            lines += [f"    {d}" for d in self.differences]
        if self.note:
            lines.append(f"  {self.note}")
        return lines


@attrs.frozen
class Replay:
    """A referral decided again as of a date (:func:`replay`), both kinds of decision."""

    referral_id: str
    as_of: dt.datetime | None
    coverage: ReplayedDecision
    urgency: ReplayedDecision

    @property
    def same(self) -> bool:
        """Whether both replays give the stored outputs."""
        return self.coverage.same and self.urgency.same

    def __str__(self) -> str:
        when = (
            "as each decision was made"
            if self.as_of is None
            else f"as of {self.as_of:%Y-%m-%d %H:%M} UTC"
        )
        lines = [f"referral {self.referral_id}: replayed {when}"]
        return "\n".join(lines + self.coverage.lines() + self.urgency.lines())


def _replay_one(
    store: ReferralStore, events: Sequence[ReferralEvent], kind: str, as_of: dt.datetime | None
) -> ReplayedDecision:
    index = _latest(events, kind, as_of)
    event = events[index] if index is not None else None
    stored_provenance = Provenance.from_payload(event.payload) if event is not None else None
    if as_of is None:
        if event is None or stored_provenance is None:
            return ReplayedDecision(kind, None, None, None, None, note="no decision stored")
        at = event.at
        digest: str | None = stored_provenance.policy if stored_provenance.versioned else None
        missing = f"the stored decision is {stored_provenance}"
    else:
        at = as_of
        try:
            digest = store.policy_in_force(kind, as_of)
        except NotImplementedError:
            digest, missing = None, f"{type(store).__name__} keeps no rule versions"
        else:
            missing = f"no {kind} policy was in use on {as_of:%Y-%m-%d %H:%M} UTC"
    stored_at = event.at if event is not None else None
    if digest is None:
        return ReplayedDecision(kind, at, stored_at, stored_provenance, None, note=missing)
    try:
        policy = load_policy(store, digest)
    except RulesError as error:
        return ReplayedDecision(kind, at, stored_at, stored_provenance, None, note=str(error))
    if event is not None and index is not None:
        # the referral as the stored decision saw it, at its moment: only the rules change
        referral, moment = _input(events, index), event.at
    else:
        earlier = [e for e in events if as_of is None or e.at <= as_of]
        if not earlier:
            return ReplayedDecision(
                kind, at, None, None, None, note="the referral did not exist yet"
            )
        referral, moment = apply_all(None, earlier), at
    again = _decide(policy, referral, moment, at.date())
    differences = _differences(_stored(event), again) if event is not None else ()
    return ReplayedDecision(
        kind,
        at,
        stored_at,
        stored_provenance,
        digest,
        replayed=_summary(again) + f"; rules {', '.join(h.rule_id for h in again.hits) or '-'}",
        differences=differences,
    )


def replay(store: ReferralStore, referral_id: str, *, as_of: dt.datetime | None = None) -> Replay:
    """Decide the referral's coverage and urgency again, and compare with what is stored.

    Without ``as_of``, each stored decision is decided again with the policy version its
    event names, on the referral as it then was, as of the moment it was made: a check that
    the stored decision is what its rules give. With ``as_of``, the policy is the one in use
    on that date (:meth:`~referralkit.storage.ReferralStore.policy_in_force`), rules are in
    force as of that date, and the comparison is with the latest decision stored at or
    before it. Only the rules move to ``as_of``: the referral is the one that decision saw,
    with its facts read at its moment (the patient's age, the coverage period, the start of
    the due date when not yet received), so a difference is the rules' doing. The rules'
    validity dates are read on ``as_of``. With no decision stored by then, the referral as it
    was on ``as_of`` is decided as of ``as_of``, with nothing to compare.
    """
    events = store.events(referral_id)
    return Replay(
        referral_id,
        as_of,
        _replay_one(store, events, "coverage", as_of),
        _replay_one(store, events, "urgency", as_of),
    )
