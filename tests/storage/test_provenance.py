"""Decision provenance in every store: rule versions kept once under their digest, decision
events naming them, explain and replay over memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import attrs
import pytest

from referralkit import Actor, FakeClock, ReferralDesk, Role, ValidationError
from referralkit.errors import PermissionDeniedError, RulesError
from referralkit.model import Priority
from referralkit.policy import BasicCoverage, BasicUrgency
from referralkit.rules import loads
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy
from referralkit.rules.provenance import (
    UNRECORDED,
    UNVERSIONED,
    Provenance,
    load_policy,
    policy_versions,
    provenance_of,
    ruleset_digest,
)
from referralkit.storage import MemoryStore, ReferralStore, RuleVersion, open_store, upgrade
from referralkit.storage.sqlite import SCHEMA_VERSION, SQLiteStore
from referralkit.testing import sample_request

COORDINATOR = Actor("coord-1", {Role.COORDINATOR})
AUDITOR = Actor("audit-1", {Role.AUDITOR})
START = dt.datetime(2026, 1, 5, 14, 0, tzinfo=dt.UTC)

URGENCY_V1 = """
[ruleset]
name = "clinic-urgency"
kind = "urgency"
hit_policy = "collect"
aggregation = "sum"

[[rules]]
id = "routine"
then = { priority = "routine", due_business_days = 15, score = 100 }

[[rules]]
id = "chest-pain"
description = "Chest pain seen within 48 hours"
when = { specialty = "cardiology", diagnoses = { any_prefix = ["R07", "I20"] } }
then = { priority = "urgent", due_hours = 48, score = 100 }
"""

# the same rules, reformatted and commented: the same digest
URGENCY_V1_REFORMATTED = """
# reformatted, with comments
[ruleset]
kind = "urgency"
name = "clinic-urgency"
aggregation = "sum"
hit_policy = "collect"

[[rules]]
id = "routine"
then = { score = 100.0, priority = "routine", due_business_days = 15 }   # the same

[[rules]]
id = "chest-pain"
description = "Chest pain seen within 48 hours"
when.specialty = { eq = "cardiology" }
when.diagnoses = { any_prefix = ["R07", "I20"] }
then = { due_hours = 48, priority = "urgent", score = 100 }
"""

# from 1 March, chest pain is stat within 24 hours
URGENCY_V2 = URGENCY_V1.replace(
    'then = { priority = "urgent", due_hours = 48, score = 100 }',
    'then = { priority = "stat", due_hours = 24, score = 300 }',
)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReferralStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'referrals.db'}"
        opened = open_store(url)
        yield opened
        opened.close()
        return
    url = request.getfixturevalue("postgres_schema")
    opened = open_store(url)
    yield opened
    opened.close()


def _version(text: str, kind: str = "coverage") -> RuleVersion:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return RuleVersion(digest, kind, "n", text, START)


class TestStoredVersions:
    def test_saved_once_found_by_digest(self, store: ReferralStore) -> None:
        """A document is kept once under its digest; saving it again changes nothing."""
        version = _version('{"rules":[]}')
        assert store.find_rule_version(version.digest) is None
        assert store.save_rule_version(version) is True
        assert store.save_rule_version(attrs.evolve(version, name="other")) is False
        assert store.find_rule_version(version.digest) == version

    def test_policy_in_force_by_date(self, store: ReferralStore) -> None:
        """The policy in force on a date is the one most recently noted at or before it; a
        policy noted again while it is the latest is not noted twice."""
        first, second = _version("a", "urgency-policy"), _version("b", "urgency-policy")
        for version in (first, second):
            store.save_rule_version(version)
        march = START.replace(month=3)
        assert store.policy_in_force("urgency", START) is None
        assert store.record_policy_use("urgency", first.digest, START) is True
        assert store.record_policy_use("urgency", first.digest, START) is False
        assert store.record_policy_use("urgency", second.digest, march) is True
        assert store.policy_in_force("urgency", START - dt.timedelta(seconds=1)) is None
        assert store.policy_in_force("urgency", START) == first.digest
        assert store.policy_in_force("urgency", march - dt.timedelta(days=1)) == first.digest
        assert store.policy_in_force("urgency", march) == second.digest
        assert store.policy_in_force("coverage", march) is None
        # back to the first policy: noted again, since it is no longer the latest
        april = START.replace(month=4)
        assert store.record_policy_use("urgency", first.digest, april) is True
        assert store.policy_in_force("urgency", april) == first.digest

    def test_bad_arguments_are_typed_errors(self, store: ReferralStore) -> None:
        """A policy use must name a stored policy of its kind; digests and kinds are
        checked."""
        ruleset = _version("r", "urgency")
        store.save_rule_version(ruleset)
        with pytest.raises(ValidationError, match="no urgency policy"):
            store.record_policy_use("urgency", ruleset.digest, START)
        with pytest.raises(ValidationError, match="SHA-256"):
            store.find_rule_version("abc")
        with pytest.raises(ValidationError, match="coverage"):
            store.policy_in_force("event", START)
        with pytest.raises(ValidationError):
            store.policy_in_force("urgency", START.replace(tzinfo=None))
        with pytest.raises(ValidationError, match="RuleVersion"):
            store.save_rule_version("not a version")  # type: ignore[arg-type]

    def test_a_version_must_carry_its_own_digest(self) -> None:
        """A RuleVersion whose digest is not that of its document is refused."""
        good = _version("x")
        with pytest.raises(ValidationError, match="SHA-256 of the document"):
            RuleVersion(good.digest, "coverage", "n", "y", START)
        with pytest.raises(ValidationError, match="kind"):
            RuleVersion(good.digest, "event", "n", "x", START)


def _desk(store: ReferralStore, text: str, clock: FakeClock) -> ReferralDesk:
    return ReferralDesk(store, clock=clock, urgency=UrgencyPolicy([loads(text)]))


class TestDeskProvenance:
    def test_decision_events_name_the_stored_versions(self, store: ReferralStore) -> None:
        """Each decision event names its policy digest and its rulesets' digests, and the
        store keeps every one of those documents, once."""
        desk = ReferralDesk(store, clock=FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())
        desk.send(COORDINATOR, made.id)
        desk.intake(COORDINATOR, sample_request("REQ-2"))
        decisions = [
            e for e in store.events(made.id) if e.type in ("coverage_decided", "urgency_assessed")
        ]
        assert [e.type for e in decisions] == [
            "coverage_decided",
            "urgency_assessed",
            "urgency_assessed",
        ]
        coverage, urgency = desk.coverage, desk.urgency
        assert isinstance(coverage, CoveragePolicy)
        assert isinstance(urgency, UrgencyPolicy)
        for event, policy in zip(decisions, (coverage, urgency, urgency), strict=True):
            provenance = Provenance.from_payload(event.payload)
            assert provenance == provenance_of(policy)
            stored = store.find_rule_version(provenance.policy)
            assert stored is not None
            assert stored.kind == f"{policy.kind.value}-policy"
            listed = json.loads(stored.document)["rulesets"]
            assert listed == [ruleset_digest(r) for r in policy.rulesets]
            for digest in listed:
                kept = store.find_rule_version(digest)
                assert kept is not None
                assert kept.kind == policy.kind.value
        assert store.policy_in_force("coverage", START) == provenance_of(coverage).policy

    def test_unversioned_deciders_are_marked_not_hashed(self, store: ReferralStore) -> None:
        """Hand-written deciders record 'unversioned' with their class name; nothing is
        stored for them, and explain and replay say so instead of guessing."""
        desk = ReferralDesk(
            store, clock=FakeClock(START), coverage=BasicCoverage(), urgency=BasicUrgency()
        )
        made = desk.intake(COORDINATOR, sample_request())
        event = next(e for e in store.events(made.id) if e.type == "coverage_decided")
        assert event.payload["provenance"] == {
            "policy": UNVERSIONED,
            "decider": "BasicCoverage",
        }
        assert store.policy_in_force("coverage", START) is None
        explained = desk.explain(AUDITOR, made.id)
        assert explained.coverage is not None
        assert explained.coverage.reproduced is None
        assert explained.coverage.rules == ()
        assert "unversioned (BasicCoverage: not rule-based)" in str(explained)
        replayed = desk.replay(AUDITOR, made.id)
        assert replayed.coverage.policy is None
        assert not replayed.same
        assert "not replayed" in str(replayed)
        coverage = replayed.coverage
        assert (coverage.kind, coverage.decided_at, coverage.stored_at) == (
            "coverage",
            event.at,
            event.at,
        )
        assert coverage.stored == Provenance(UNVERSIONED, "BasicCoverage")
        assert coverage.note == (
            "the stored decision is unversioned (BasicCoverage: not rule-based)"
        )

    def test_explain_says_which_rules_fired_and_why_others_did_not(
        self, store: ReferralStore
    ) -> None:
        """The explanation lists every rule of the stored policy with its outcome, and the
        stored decision is reproduced by its stored rules."""
        desk = _desk(store, URGENCY_V1, FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())
        explained = desk.explain(AUDITOR, made.id)
        urgency = explained.urgency
        assert urgency is not None
        assert urgency.reproduced is True
        assert urgency.fired == ("routine", "chest-pain")
        outcomes = {o.rule_id: o.outcome for o in urgency.rules}
        assert outcomes == {"routine": "fired", "chest-pain": "fired"}
        coverage = explained.coverage
        assert coverage is not None
        assert coverage.reproduced is True
        by_id = {o.rule_id: o for o in coverage.rules}
        assert by_id["hmo-specialist-needs-referral"].outcome == "fired"
        assert by_id["medicare-specialist"].outcome == "no match"
        assert by_id["medicare-specialist"].failed == "coverage.plan_type eq 'Medicare'"
        assert by_id["manual-review"].outcome == "not consulted"
        text = str(explained)
        assert "hmo-specialist-needs-referral: fired" in text
        assert "medicare-specialist: no match (coverage.plan_type eq 'Medicare' is false)" in text
        assert "decided again with the stored rules: the same" in text

    def test_a_changed_stored_decision_is_reported(self, store: ReferralStore) -> None:
        """Explain and replay compare with what is stored: an event whose decision is not
        what its rules give shows the difference (here: an edited export re-imported)."""
        source = MemoryStore()
        desk = _desk(source, URGENCY_V1, FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())
        ((referral, events),) = list(source.export())
        edited = []
        for event in events:
            if event.type == "urgency_assessed":
                payload = dict(event.payload)
                payload["assessment"] = {**payload["assessment"], "priority": "stat"}
                event = attrs.evolve(event, payload=payload)
            edited.append(event)
        referral = attrs.evolve(
            referral, urgency=attrs.evolve(referral.urgency, priority=Priority.STAT)
        )
        for version in policy_versions(desk.urgency, START) + policy_versions(desk.coverage, START):
            store.save_rule_version(version)
        store.restore_many([(referral, edited)])
        explained = ReferralDesk(store, clock=FakeClock(START)).explain(AUDITOR, made.id)
        assert explained.urgency is not None
        assert explained.urgency.reproduced is False
        assert [str(d) for d in explained.urgency.differences] == ["priority: stat -> urgent"]
        replayed = ReferralDesk(store).replay(AUDITOR, made.id)
        assert not replayed.urgency.same
        assert replayed.coverage.same
        assert "priority: stat -> urgent" in str(replayed)

    def test_replay_as_of_uses_the_policy_in_force_then(self, store: ReferralStore) -> None:
        """A policy change on 1 March: a referral decided in January replays as stored with
        the January policy, and as of March with the March policy, reporting the difference."""
        clock = FakeClock(START)
        desk = _desk(store, URGENCY_V1, clock)
        # sent: its due date counts from receipt, whatever the moment it is decided again
        made = desk.send(COORDINATOR, desk.intake(COORDINATOR, sample_request()).id)
        march = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
        clock.set(march)
        later = _desk(store, URGENCY_V2, clock)
        other = later.intake(COORDINATOR, sample_request("REQ-2"))
        assert other.urgency is not None
        assert other.urgency.priority.value == "stat"

        again = later.replay(AUDITOR, made.id)
        assert again.same
        january = later.replay(AUDITOR, made.id, as_of=START + dt.timedelta(days=1))
        assert january.same
        assert january.urgency.policy == provenance_of(desk.urgency).policy
        in_march = later.replay(AUDITOR, made.id, as_of=march + dt.timedelta(days=1))
        assert in_march.urgency.policy == provenance_of(later.urgency).policy
        assert {d.field: (d.stored, d.replayed) for d in in_march.urgency.differences} == {
            "priority": ("urgent", "stat"),
            "score": ("200", "400"),
            "due_by": ("2026-01-07T14:00:00+00:00", "2026-01-06T14:00:00+00:00"),
        }
        assert in_march.coverage.same
        assert "DIFFERENT" in str(in_march)
        assert "priority: urgent -> stat" in str(in_march)
        # a draft's due date counts from its decision's moment, not from the replay date
        assert later.replay(AUDITOR, other.id, as_of=march + dt.timedelta(days=30)).same
        before = later.replay(AUDITOR, made.id, as_of=START - dt.timedelta(days=1))
        assert before.urgency.policy is None
        assert (before.urgency.kind, before.urgency.decided_at) == (
            "urgency",
            START - dt.timedelta(days=1),
        )
        assert (before.urgency.stored_at, before.urgency.stored) == (None, None)
        assert "no urgency policy was in use" in str(before)

    def test_a_replay_names_what_it_compared_and_reads_rules_on_its_own_date(self) -> None:
        """A replay reports its kind, its moment, the stored decision's moment and provenance
        and the replayed outputs with their rules; rules are in force on the replay's date: a
        rule that ended in February fired in January and not as of March (memory store: the
        logic is the same in every store)."""
        store = MemoryStore()
        ending = URGENCY_V1.replace('id = "chest-pain"', 'id = "chest-pain"\nvalid_to = 2026-02-28')
        desk = _desk(store, ending, FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())
        again = desk.replay(AUDITOR, made.id)
        assert again.referral_id == made.id
        urgency = again.urgency
        assert (again.coverage.kind, urgency.kind) == ("coverage", "urgency")
        assert urgency.decided_at == urgency.stored_at == START
        assert urgency.stored == provenance_of(desk.urgency)
        assert urgency.replayed == (
            "priority=urgent, score=200, due_by=2026-01-07T14:00:00+00:00; "
            "rules routine, chest-pain"
        )
        march = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
        later = desk.replay(AUDITOR, made.id, as_of=march).urgency
        assert later.decided_at == march
        assert later.replayed.endswith("; rules routine")
        assert [d.field for d in later.differences] == ["priority", "score", "due_by", "rules"]

    def test_an_explanation_names_each_rule_its_ruleset_and_its_date(self) -> None:
        """Explain's parts: the kind, the coded summary, each ruleset with its digest, each
        rule's outcome with its ruleset and description, a rule not yet in force on the
        decision's date; a hand-written decider's decision says it has no rule trace."""
        store = MemoryStore()
        future = URGENCY_V1 + (
            '\n[[rules]]\nid = "later"\nvalid_from = 2026-06-01\n'
            'then = { priority = "stat", due_hours = 24, score = 1 }\n'
        )
        desk = _desk(store, future, FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())
        urgency = desk.explain(AUDITOR, made.id).urgency
        assert urgency is not None
        assert urgency.kind == "urgency"
        assert urgency.summary == "priority=urgent, score=200, due_by=2026-01-07T14:00:00+00:00"
        (ruleset,) = desk.urgency.rulesets
        assert urgency.rulesets == (f"clinic-urgency ({ruleset_digest(ruleset)[:12]})",)
        assert [
            (r.ruleset, r.rule_id, r.outcome, r.description, r.failed) for r in urgency.rules
        ] == [
            ("clinic-urgency", "routine", "fired", "", None),
            ("clinic-urgency", "chest-pain", "fired", "Chest pain seen within 48 hours", None),
            ("clinic-urgency", "later", "not in force on 2026-01-05", "", None),
        ]
        plain = ReferralDesk(MemoryStore(), clock=FakeClock(START), urgency=BasicUrgency())
        made = plain.intake(COORDINATOR, sample_request())
        basic = plain.explain(AUDITOR, made.id).urgency
        assert basic is not None
        assert basic.note == "no rule trace: the decision names no stored rules"

    def test_explain_and_replay_are_read_operations(self, store: ReferralStore) -> None:
        """Every role may explain and replay; neither writes; a bad id is a typed error."""
        desk = ReferralDesk(store, clock=FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())
        before = store.events(made.id)
        for role in Role:
            actor = Actor("someone", {role})
            desk.explain(actor, made.id)
            desk.replay(actor, made.id, as_of=START)
        assert store.events(made.id) == before
        with pytest.raises(PermissionDeniedError):
            desk.explain(Actor("nobody", set()), made.id)
        with pytest.raises(ValidationError):
            desk.replay(AUDITOR, made.id, as_of=START.replace(tzinfo=None))
        with pytest.raises(ValidationError):
            desk.explain(AUDITOR, 17)  # type: ignore[arg-type]


class TestOlderStores:
    def test_version_3_sqlite_file_upgrades_and_old_decisions_read_as_unrecorded(
        self, tmp_path: Path
    ) -> None:
        """A file at schema 3 with decisions stored before provenance upgrades to the latest;
        its old decisions read as 'unrecorded', and new ones are explained in full."""
        path = tmp_path / "old.db"
        old = SQLiteStore(path, migrate=False)
        old.upgrade(target=3)
        desk = ReferralDesk(old, clock=FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())  # the tables are not there yet
        with pytest.raises(NotImplementedError):
            old.find_rule_version("0" * 64)
        old.close()
        # strip the provenance and the seal, as a version 3 referralkit wrote the events
        # (unsealed: the integrity check on read came later)
        with closing(sqlite3.connect(path)) as conn, conn:
            rows = conn.execute("SELECT rowid, payload FROM events").fetchall()
            for rowid, payload in rows:
                unsealed = re.sub(r'^\{"~c":"[^"]*"(,|(?=\}))', "{", payload)
                assert not unsealed.startswith('{"~c"')
                conn.execute(
                    "UPDATE events SET payload = ? WHERE rowid = ?",
                    (unsealed.replace('"provenance"', '"ignored"'), rowid),
                )
        assert upgrade(f"sqlite:///{path}") == (3, SCHEMA_VERSION)
        with SQLiteStore(path) as store:
            desk = ReferralDesk(store, clock=FakeClock(START))
            explained = desk.explain(AUDITOR, made.id)
            assert explained.coverage is not None
            assert explained.coverage.provenance.policy == UNRECORDED
            assert "unrecorded" in str(explained)
            desk.reassess(COORDINATOR, made.id)
            again = desk.explain(AUDITOR, made.id)
            assert again.coverage is not None
            assert again.coverage.reproduced is True

    def test_version_3_postgres_schema_upgrades(self, postgres_schema: str) -> None:
        """A PostgreSQL schema at version 3: the desk decides without keeping versions, and
        after the upgrade the rule version tables are there and used."""
        from referralkit.storage.postgres import SCHEMA_VERSION, PostgresStore

        old = PostgresStore(postgres_schema, migrate=False)
        try:
            assert old.upgrade(target=3) == 3
            desk = ReferralDesk(old, clock=FakeClock(START))
            made = desk.intake(COORDINATOR, sample_request())
            with pytest.raises(NotImplementedError):
                old.policy_in_force("coverage", START)
            assert old.upgrade() == SCHEMA_VERSION
            desk = ReferralDesk(old, clock=FakeClock(START))
            desk.reassess(COORDINATOR, made.id)
            explained = desk.explain(AUDITOR, made.id)
            assert explained.coverage is not None
            assert explained.coverage.reproduced is True
            assert old.policy_in_force("coverage", START) is not None
        finally:
            old.close()

    def test_an_adapter_without_rule_versions_still_decides(self) -> None:
        """A third-party store written before rule versions existed: the desk decides and
        records the digests; explain says the rules cannot be found."""

        class OldStore(MemoryStore):
            save_rule_version = ReferralStore.save_rule_version
            find_rule_version = ReferralStore.find_rule_version
            record_policy_use = ReferralStore.record_policy_use
            policy_in_force = ReferralStore.policy_in_force

        store = OldStore()
        desk = ReferralDesk(store, clock=FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())
        explained = desk.explain(AUDITOR, made.id)
        assert explained.coverage is not None
        assert explained.coverage.reproduced is None
        assert "keeps no rule versions" in explained.coverage.note
        replayed = desk.replay(AUDITOR, made.id, as_of=START)
        assert replayed.coverage.note == "OldStore keeps no rule versions"


FIRST_HIT = """
[ruleset]
name = "two-matches"
kind = "coverage"

[[rules]]
id = "first"
then = { covered = "covered", pa_needed = "no-auth" }

[[rules]]
id = "second"
then = { covered = "not-covered" }
"""


class TestEdges:
    def test_a_matching_rule_the_hit_policy_did_not_use(self) -> None:
        """Under the first hit policy a later matching rule is 'matched, not used'."""
        store = MemoryStore()
        desk = ReferralDesk(
            store, clock=FakeClock(START), coverage=CoveragePolicy([loads(FIRST_HIT)])
        )
        made = desk.intake(COORDINATOR, sample_request())
        coverage = desk.explain(AUDITOR, made.id).coverage
        assert coverage is not None
        assert [(o.rule_id, o.outcome) for o in coverage.rules] == [
            ("first", "fired"),
            ("second", "matched, not used"),
        ]

    def test_replay_before_any_decision_or_before_the_referral(self) -> None:
        """As of a date with a policy in use but no decision stored yet, the replay has
        nothing to compare with; before the referral existed, nothing to decide."""
        store = MemoryStore()
        clock = FakeClock(START)
        desk = ReferralDesk(store, clock=clock)
        desk.intake(COORDINATOR, sample_request("REQ-early"))  # the policies come into use
        clock.advance(days=2)
        made = desk.intake(COORDINATOR, sample_request())
        early = desk.replay(AUDITOR, made.id, as_of=START + dt.timedelta(days=1))
        assert early.coverage.policy is None
        assert early.coverage.note == "the referral did not exist yet"
        assert (early.coverage.kind, early.urgency.kind) == ("coverage", "urgency")
        assert early.coverage.decided_at == START + dt.timedelta(days=1)
        assert (early.coverage.stored_at, early.coverage.stored) == (None, None)
        assert "not replayed: the referral did not exist yet" in str(early)
        # a referral with no decision events at all (restored from elsewhere)
        ((_referral, events),) = [h for h in store.export() if h[0].id == made.id]
        bare = [e for e in events if e.type == "created"]
        other = MemoryStore()
        for version in policy_versions(desk.coverage, START) + policy_versions(desk.urgency, START):
            other.save_rule_version(version)
            if version.kind.endswith("-policy"):
                other.record_policy_use(version.kind.removesuffix("-policy"), version.digest, START)
        from referralkit.events import replay as rebuild

        other.restore_many([(rebuild(bare), bare)])
        plain = ReferralDesk(other)
        nothing = plain.replay(AUDITOR, made.id, as_of=START + dt.timedelta(days=3))
        assert nothing.coverage.stored_at is None
        assert nothing.coverage.policy is not None
        assert not nothing.same
        assert "no stored decision to compare with" in str(nothing)
        # as of the moment of its first event, the referral exists: it is decided
        (created,) = bare
        at_creation = plain.replay(AUDITOR, made.id, as_of=created.at).coverage
        assert at_creation.policy is not None
        assert at_creation.note == ""
        assert at_creation.decided_at == created.at
        assert at_creation.replayed.startswith("covered=")
        unstored = plain.replay(AUDITOR, made.id)
        assert unstored.coverage.note == "no decision stored"
        assert (unstored.coverage.kind, unstored.urgency.kind) == ("coverage", "urgency")
        assert str(unstored).splitlines()[1:] == [
            "coverage: not replayed: no decision stored",
            "urgency: not replayed: no decision stored",
        ]
        explained = plain.explain(AUDITOR, made.id)
        assert explained.coverage is None
        assert "coverage: no decision stored" in str(explained)

    def test_missing_or_altered_documents_are_reported(self) -> None:
        """A policy whose ruleset is not kept, or whose stored ruleset does not read back to
        its digest, cannot be decided with: explain and replay say why."""
        source = MemoryStore()
        desk = _desk(source, URGENCY_V1, FakeClock(START))
        made = desk.intake(COORDINATOR, sample_request())
        history = list(source.export())
        policy_doc, *rulesets = reversed(policy_versions(desk.urgency, START))

        missing = MemoryStore()
        missing.save_rule_version(policy_doc)
        missing.restore_many(history)
        urgency = ReferralDesk(missing).explain(AUDITOR, made.id).urgency
        assert urgency is not None
        assert urgency.note.startswith("cannot decide again: the store keeps no urgency version")
        assert urgency.reproduced is None

        altered = MemoryStore()
        (ruleset,) = rulesets
        spaced = ruleset.document.replace(",", ", ")
        tampered = RuleVersion(
            hashlib.sha256(spaced.encode()).hexdigest(), "urgency", "x", spaced, START
        )
        document = '{"kind":"urgency","rulesets":["%s"]}' % tampered.digest  # noqa: UP031
        other_policy = RuleVersion(
            hashlib.sha256(document.encode()).hexdigest(), "urgency-policy", "x", document, START
        )
        for version in (tampered, other_policy):
            altered.save_rule_version(version)
        altered.record_policy_use("urgency", other_policy.digest, START)
        altered.restore_many(history)
        replayed = ReferralDesk(altered).replay(AUDITOR, made.id, as_of=START)
        assert replayed.urgency.policy is None
        assert "does not read back alike" in replayed.urgency.note
        stored = next(e for e in altered.events(made.id) if e.type == "urgency_assessed")
        urgency_replay = replayed.urgency
        assert (urgency_replay.kind, urgency_replay.decided_at) == ("urgency", START)
        assert urgency_replay.stored_at == stored.at
        assert urgency_replay.stored == Provenance.from_payload(stored.payload)
        assert urgency_replay.stored is not None
        wrong_kind = RuleVersion(hashlib.sha256(b"{}").hexdigest(), "coverage", "x", "{}", START)
        altered.save_rule_version(wrong_kind)
        with pytest.raises(RulesError, match="no policy version"):
            load_policy(altered, wrong_kind.digest)
        not_a_policy = RuleVersion(
            hashlib.sha256(b"[]").hexdigest(), "coverage-policy", "x", "[]", START
        )
        altered.save_rule_version(not_a_policy)
        with pytest.raises(RulesError, match="not a policy document"):
            load_policy(altered, not_a_policy.digest)


NOTHING_MATCHES = """
[ruleset]
name = "never"
kind = "coverage"

[[rules]]
id = "dentistry-only"
when = { specialty = "dentistry" }
then = { covered = "covered" }
"""


def test_a_replay_where_no_rule_fires_says_so() -> None:
    """A decision no rule of its policy matched replays with ``rules -``."""
    store = MemoryStore()
    desk = ReferralDesk(
        store, clock=FakeClock(START), coverage=CoveragePolicy([loads(NOTHING_MATCHES)])
    )
    made = desk.intake(COORDINATOR, sample_request())
    replayed = desk.replay(AUDITOR, made.id).coverage
    assert replayed.policy is not None
    # the outputs that are unset ("-") are left out; the rules that fired: none
    assert replayed.replayed == (
        "covered=indeterminate, pa_needed=indeterminate, network_status=in-network; rules -"
    )
    assert replayed.same


NEEDS_AUTHORIZATION = """
[ruleset]
name = "always-authorize"
kind = "coverage"

[[rules]]
id = "authorize"
then = { covered = "covered", pa_needed = "auth-needed" }
"""

URGENCY_BY_AUTHORIZATION = """
[ruleset]
name = "authorization-sensitive"
kind = "urgency"
hit_policy = "first"

[[rules]]
id = "waiting-for-authorization"
when = { "authorization.status" = "needed" }
then = { priority = "urgent", due_hours = 72 }

[[rules]]
id = "otherwise"
then = { priority = "routine", due_business_days = 15 }
"""


def test_an_assessment_is_replayed_on_what_it_saw_not_the_authorization_made_with_it() -> None:
    """Intake records the coverage decision, the authorization it calls for, then the urgency
    assessment, in one version; the assessor saw the referral before that authorization
    change (``ReferralDesk._assessments``), and the replay decides on the same referral."""
    store = MemoryStore()
    desk = ReferralDesk(
        store,
        clock=FakeClock(START),
        coverage=CoveragePolicy([loads(NEEDS_AUTHORIZATION)]),
        urgency=UrgencyPolicy([loads(URGENCY_BY_AUTHORIZATION)]),
    )
    made = desk.intake(COORDINATOR, sample_request())
    types = [e.type for e in store.events(made.id)]
    assert types[-3:] == ["coverage_decided", "authorization_changed", "urgency_assessed"]
    assert made.urgency is not None
    assert made.urgency.priority is Priority.ROUTINE  # decided before the authorization
    assert made.authorization.status.value == "needed"
    replayed = desk.replay(AUDITOR, made.id)
    assert replayed.urgency.same
    assert replayed.urgency.replayed.endswith("; rules otherwise")
    explained = desk.explain(AUDITOR, made.id).urgency
    assert explained is not None
    assert explained.reproduced is True
    # reassessed later, the assessor sees the authorization recorded at intake
    desk.reassess(COORDINATOR, made.id)
    again = desk.replay(AUDITOR, made.id)
    assert again.urgency.replayed.endswith("; rules waiting-for-authorization")
    assert again.urgency.same


def test_a_long_policy_name_is_kept_to_the_stored_length() -> None:
    """A policy's name joins its rulesets' names: past the 2,000 characters a rule version
    keeps, it is cut to exactly that many."""
    rulesets = [
        loads(NOTHING_MATCHES.replace('"never"', f'"{i:02d}{"n" * 98}"')) for i in range(21)
    ]
    policy = CoveragePolicy(rulesets)
    assert len(policy.name) > 2_000
    *kept, whole = policy_versions(policy, START)
    assert [v.name for v in kept] == [r.name for r in rulesets]
    assert whole.kind == "coverage-policy"
    assert whole.name == policy.name[:2_000]
    assert len(whole.name) == 2_000
