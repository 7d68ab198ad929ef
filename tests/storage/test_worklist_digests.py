"""Worklist digests (issue 16): what the ranked worklist reads of each candidate instead of its
snapshot and history (:class:`~referralkit.worklist.WorklistDigest`), kept per referral and
version by the SQL stores (schema version 9) and computed by the memory store.

The digest's item must be exactly :func:`~referralkit.worklist.assess`'s from the full history
at every instant at or after the referral's last change (checked at each clock's edges), on
every adapter; a digest of another version is never used; a store built before digests
fills them on its first worklist; an encrypted store keeps them encrypted."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import attrs
import pytest

import referralkit as rk
from referralkit import synth
from referralkit.clocks import Timeline
from referralkit.crypto import CIPHER_PREFIX, KeyRing
from referralkit.model import CoverageDecision, Covered
from referralkit.storage import ReferralStore, open_store, rotate_keys, upgrade
from referralkit.storage.memory import MemoryStore
from referralkit.storage.sqlite import SQLiteStore
from referralkit.worklist import (
    _TIMELINE_FIELDS,
    DEFAULT_WORKLIST,
    DIGEST_FORMAT,
    WorklistDigest,
    WorklistRules,
    assess,
    rank,
)

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_phi_canary import canary_request

ACTOR = rk.Actor("digests", {rk.Role.COORDINATOR})
TICK = dt.timedelta(microseconds=1)
SYNTH_ORG = "Synthetic Regional Health"  # every synthetic referral is sent and received there


def _simulated(store: ReferralStore, seed: int = 11, count: int = 60) -> rk.FakeClock:
    clock = rk.FakeClock(synth.DEFAULT_START)
    desk = rk.ReferralDesk(store, clock=clock, new_id=synth.id_factory(seed))
    synth.simulate(desk, ACTOR, clock, synth.population(count, seed), weeks=4, seed=seed)
    return clock


def _edges(item: rk.WorklistItem, until: dt.datetime) -> set[dt.datetime]:
    """Instants where an item changes: each clock's deadline and at-risk start (and a
    microsecond either side), the appointment's outcome due, the last change itself."""
    found = {until, until + TICK}
    for reading in item.clocks:
        for edge in (reading.deadline, reading.at_risk_since):
            found |= {edge - TICK, edge, edge + TICK}
    return {when for when in found if when >= until}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReferralStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        with SQLiteStore(tmp_path / "d.db") as kept:
            yield kept
    else:
        url = request.getfixturevalue("postgres_schema")
        with open_store(url) as kept:
            yield kept


def test_timeline_fields_are_all_kept() -> None:
    """A field added to Timeline must be added to the digest (or the digest misses it)."""
    assert set(_TIMELINE_FIELDS) == set(Timeline.__slots__) - {"referral_id", "as_of"}


def test_digest_items_are_assess_items_at_every_edge() -> None:
    """Exhaustive over the simulated referrals: the digest's item (through its stored text)
    equals assess over the whole history at the last change, at every clock edge after it,
    and days to months later; with other thresholds too."""
    store = MemoryStore()
    clock = _simulated(store, seed=3, count=80)
    rules = (DEFAULT_WORKLIST, WorklistRules(unreachable_after=1, visit_grace=dt.timedelta(0)))
    checked = 0
    for referral, events in store.export():
        digest = WorklistDigest.loads(WorklistDigest.of(referral, events).dumps())
        assert digest is not None
        assert digest.version == referral.version
        assert digest.until == max([referral.updated_at, *(e.at for e in events)])
        later = {clock.now() + dt.timedelta(days=d) for d in (0, 1, 7, 30, 400)}
        edges = _edges(assess(referral, events, digest.until + TICK), digest.until)
        for when in sorted(edges | later):
            for rule in rules:
                assert digest.item(when, rule) == assess(referral, events, when, rules=rule)
                checked += 1
    assert checked > 1000


def test_digest_refuses_an_instant_before_its_last_change() -> None:
    store = MemoryStore()
    _simulated(store, seed=4, count=5)
    referral, events = next(iter(store.export()))
    digest = WorklistDigest.of(referral, events)
    with pytest.raises(rk.ValidationError):
        digest.item(digest.until - TICK)


def test_loads_reads_another_format_as_missing() -> None:
    store = MemoryStore()
    _simulated(store, seed=4, count=3)
    referral, events = next(iter(store.export()))
    text = WorklistDigest.of(referral, events).dumps()
    assert WorklistDigest.loads(text.replace(f"[{DIGEST_FORMAT},", "[99,", 1)) is None
    assert WorklistDigest.loads("not json") is None
    assert WorklistDigest.loads("[1, 2]") is None


def _reference(store: ReferralStore, when: dt.datetime, limit: int) -> list[rk.WorklistItem]:
    return rank(
        (assess(r, events, when) for r, events in store.export() if r.created_at <= when),
        limit=limit,
    )


def test_worklist_from_digests_equals_assessed_ranking(store: ReferralStore) -> None:
    """On every adapter: the ranked head (read from digests on a new desk each time) is the
    ranking of every referral assessed from its history, for several instants; the SQL
    stores keep a digest for the current version of each referral they read."""
    clock = _simulated(store)
    for days in (0, 0, 2, 9, 60):  # twice at first: the second reads the digests written
        when = clock.now() + dt.timedelta(days=days)
        desk = rk.ReferralDesk(store, clock=clock)
        assert desk._keys_usable(when)
        got = desk.worklist(ACTOR, as_of=when, limit=15)
        assert got == _reference(store, when, 15)
        for kept in (desk.worklist(ACTOR, as_of=when, limit=15, specialty=got[0].specialty),):
            assert (
                kept
                == [i for i in _reference(store, when, 10_000) if i.specialty == got[0].specialty][
                    :15
                ]
            )
    kept = store.worklist_digests([i.referral_id for i in got])
    versions = store.versions([i.referral_id for i in got])
    assert {i: v for i, (v, _) in kept.items()} == versions
    if store.keeps_worklist_digests:
        for referral_id, (version, text) in kept.items():
            assert text is not None
            digest = WorklistDigest.loads(text)
            assert digest is not None
            assert (digest.facts.referral_id, digest.version) == (referral_id, version)
    else:
        assert all(text is None for _, text in kept.values())


@pytest.mark.parametrize(
    "scoped",
    [
        rk.Actor("c-pcp", {rk.Role.COORDINATOR}, organization=SYNTH_ORG, providers={"syn-pcp-9"}),
        rk.Actor("c-team", {rk.Role.COORDINATOR}, organization=SYNTH_ORG, providers={"digests"}),
        rk.Actor("c-org", {rk.Role.COORDINATOR}, organization=SYNTH_ORG),
        rk.Actor("c-other", {rk.Role.COORDINATOR}, organization="Another Health System"),
    ],
    ids=lambda actor: actor.id,
)
def test_a_scoped_worklist_reads_digests(
    scoped: rk.Actor, store: ReferralStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scoped actor's worklist is read from digests too (they hold the sides and owner a
    scope reads): the same rows as the ranking of the referrals in the actor's scope, each
    assessed from its history, and, once the digests are written, no history read."""
    clock = _simulated(store)
    when = clock.now() + dt.timedelta(days=2)
    rk.ReferralDesk(store, clock=clock).worklist(ACTOR, as_of=when, limit=60)  # digests kept
    desk = rk.ReferralDesk(store, clock=clock)
    reference = rank(
        (
            assess(r, events, when)
            for r, events in store.export()
            if r.created_at <= when and desk._reaches(scoped, "worklist", r)
        ),
        limit=15,
    )
    if store.keeps_worklist_digests:
        monkeypatch.setattr(desk, "_histories", _no_histories)
    assert desk.worklist(scoped, as_of=when, limit=15) == reference
    assert (len(reference) > 0) is (scoped.id != "c-other")


def _no_histories(ids: object) -> None:
    raise AssertionError("a history was read")


def test_a_changed_referral_gets_a_new_digest(store: ReferralStore) -> None:
    """A referral changed after its digest was written is read from its history again (its
    kept digest is of an earlier version, never returned), and the new digest replaces it."""
    clock = _simulated(store, seed=12, count=30)
    first = rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=10)
    target = first[0].referral_id
    clock.advance(hours=1)
    desk = rk.ReferralDesk(store, clock=clock)
    changed = desk.assign(ACTOR, target, "someone-else")
    assert store.worklist_digests([target])[target] == (changed.version, None)
    clock.advance(hours=1)
    got = rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=10)
    assert got == _reference(store, clock.now(), 10)
    assert any(i.referral_id == target and i.owner == "someone-else" for i in got)
    version, text = store.worklist_digests([target])[target]
    assert version == changed.version
    if store.keeps_worklist_digests:
        assert text is not None
        assert WorklistDigest.loads(text).facts.owner == "someone-else"  # type: ignore[union-attr]


def test_a_digest_of_another_version_is_never_used(tmp_path: Path) -> None:
    """A stored digest whose version is not the referral's is not returned; one whose text
    names another version (or another referral) under the current version is not used."""
    with SQLiteStore(tmp_path / "v.db") as store:
        clock = _simulated(store, seed=13, count=30)
        head = rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=5)
        ids = [i.referral_id for i in head]
        (referral, events), (other, _) = store.histories(ids[:2])
        lying = attrs.evolve(referral, owner="not-the-owner")
        old = WorklistDigest.of(lying, events)
        old.version = referral.version - 1
        store.write_worklist_digests([(referral.id, referral.version - 1, old.dumps())])
        # dropped: an earlier version than the kept one
        assert store.worklist_digests([referral.id])[referral.id][1] is not None
        with closing(sqlite3.connect(tmp_path / "v.db")) as conn, conn:
            conn.execute("DELETE FROM worklist_digests")
        store.write_worklist_digests([(referral.id, referral.version - 1, old.dumps())])
        assert store.worklist_digests([referral.id])[referral.id] == (referral.version, None)
        # under the current version, a text of the earlier version, and another referral's
        store.write_worklist_digests(
            [
                (referral.id, referral.version, old.dumps()),
                (other.id, other.version, WorklistDigest.of(referral, events).dumps()),
            ]
        )
        again = rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=5)
        assert again == head
        assert all(i.owner != "not-the-owner" for i in again)
        for referral_id, (version, text) in store.worklist_digests(ids[:2]).items():
            digest = WorklistDigest.loads(text or "")
            assert digest is not None
            assert (digest.facts.referral_id, digest.version) == (referral_id, version)


def test_a_version_8_file_fills_its_digests_on_the_first_worklist(tmp_path: Path) -> None:
    """A file written before digests (schema 8) upgrades to 9 with an empty table; its first
    worklist reads the histories and writes the digests of what it read; the next reads them.
    Opened without migrating, it keeps none and still serves the worklist."""
    path = tmp_path / "old.db"
    store = SQLiteStore(path, migrate=False)
    assert store.upgrade(target=8) == 8
    clock = _simulated(store, seed=14, count=40)
    expected = _reference(store, clock.now(), 12)
    assert not store.keeps_worklist_digests
    assert rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=12) == expected
    store.close()

    assert upgrade(f"sqlite:///{path}") == (8, 9)
    with SQLiteStore(path) as upgraded, closing(sqlite3.connect(path)) as conn:
        assert upgraded.keeps_worklist_digests
        assert conn.execute("SELECT count(*) FROM worklist_digests").fetchone() == (0,)
        assert rk.ReferralDesk(upgraded, clock=clock).worklist(ACTOR, limit=12) == expected
        filled = conn.execute(
            "SELECT referral_id, version, digest FROM worklist_digests"
        ).fetchall()
        assert {i.referral_id for i in expected} <= {row[0] for row in filled}
        assert rk.ReferralDesk(upgraded, clock=clock).worklist(ACTOR, limit=12) == expected
        assert (
            conn.execute("SELECT referral_id, version, digest FROM worklist_digests").fetchall()
            == filled
        )


def test_an_encrypted_store_keeps_its_digests_encrypted(tmp_path: Path) -> None:
    """PHI canary: the digest holds a not-covered decision's reason (PHI) in its text; an
    encrypted file keeps every digest encrypted (bound to its row), and none of the canary's
    values reach the file; a digest that does not open (another key) is computed again."""
    ring = KeyRing.generate()
    path = tmp_path / "enc.db"
    clock = rk.FakeClock(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
    with SQLiteStore(path, keys=ring) as store:
        desk = rk.ReferralDesk(store, clock=clock)
        made = [desk.intake(ACTOR, canary_request(f"SRC-{k}")).id for k in range(4)]
        clock.advance(hours=2)
        head = rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=4)
        assert {i.referral_id for i in head} == set(made)
        referral, events = store.histories([made[0]])[0]
        decision = CoverageDecision(covered=Covered.NOT_COVERED, reason="CANARY-coverage-reason")
        secret = WorklistDigest.of(attrs.evolve(referral, coverage_decision=decision), events)
        assert "CANARY-coverage-reason" in secret.dumps()
        store.write_worklist_digests([(referral.id, referral.version, secret.dumps())])
        assert store.worklist_digests([referral.id])[referral.id][1] == secret.dumps()
        desk.flush_access_log()
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT referral_id, digest FROM worklist_digests").fetchall()
        assert {row[0] for row in rows} == set(made)
        assert all(row[1].startswith(CIPHER_PREFIX) for row in rows)
        # moved to another row, a digest does not open there
        moved = next(text for referral_id, text in rows if referral_id != made[1])
        conn.execute(
            "UPDATE worklist_digests SET digest = ? WHERE referral_id = ?", (moved, made[1])
        )
        # the made-up digest (written above for the canary) goes: the worklist computes it
        conn.execute("DELETE FROM worklist_digests WHERE referral_id = ?", (made[0],))
        conn.commit()
    raw = path.read_bytes() + (
        Path(f"{path}-wal").read_bytes() if Path(f"{path}-wal").exists() else b""
    )
    for needle in (b"CANARY", b"1899-02-03", b"1901-02-03"):
        assert needle not in raw
    with SQLiteStore(path, keys=ring) as store:
        assert store.worklist_digests([made[1]])[made[1]][1] is None
        assert rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=4) == head
    with SQLiteStore(path, keys=KeyRing.generate(), migrate=False) as other:
        assert all(text is None for _, text in other.worklist_digests(made).values())


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_rotation_leaves_no_digest_under_a_retired_key(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Key rotation drops the digests of every batch it rewrites (a digest is a cache sealed
    with the key that was primary when it was written), so after it none is sealed with the
    old key; the worklist computes them again, under the new key, and its rows are the same."""
    ring = KeyRing.generate()
    url = (
        f"sqlite:///{tmp_path / 'rot.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("postgres_schema")
    )
    clock = rk.FakeClock(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
    with open_store(url, keys=ring) as store:
        desk = rk.ReferralDesk(store, clock=clock)
        made = [desk.intake(ACTOR, canary_request(f"SRC-{k}")).id for k in range(5)]
        clock.advance(hours=2)
        head = rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=5)
        assert all(text is not None for _, text in store.worklist_digests(made).values())
    new = ring.with_new_key()
    with open_store(url, keys=new) as store:
        assert rotate_keys(store, batch=2).rewritten > 0
        assert all(text is None for _, text in store.worklist_digests(made).values())
        assert rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=5) == head
        assert all(text is not None for _, text in store.worklist_digests(made).values())
    retired = KeyRing({new.primary_id: new.key(new.primary_id)}, new.primary_id, new.index_key())
    with open_store(url, keys=retired) as store:  # the old key gone: every digest opens
        digests = store.worklist_digests(made)
        assert all(text is not None for _, text in digests.values())


def test_a_patient_filter_reads_histories(tmp_path: Path) -> None:
    """The digests hold no patient: a worklist filtered on the patient reads the candidates'
    snapshots, as before, and agrees with the assessed ranking."""
    with SQLiteStore(tmp_path / "s.db") as store:
        clock = _simulated(store, seed=15, count=30)
        desk = rk.ReferralDesk(store, clock=clock)
        some = store.query(rk.Query(open_only=True, limit=1))[0]
        theirs = {r.id for r in store.query(rk.Query(patient_id=some.patient.id))}
        got = desk.worklist(ACTOR, limit=5, patient_id=some.patient.id)
        assert got
        assert (
            got
            == [i for i in _reference(store, clock.now(), 10_000) if i.referral_id in theirs][:5]
        )


def test_a_version_8_postgres_schema_fills_its_digests(postgres_schema: str) -> None:
    """The same on PostgreSQL: upgraded from 8, the first worklist writes what it read."""
    from referralkit.storage.postgres import PostgresStore

    store = PostgresStore(postgres_schema, migrate=False)
    assert store.upgrade(target=8) == 8
    clock = _simulated(store, seed=17, count=30)
    expected = _reference(store, clock.now(), 10)
    assert not store.keeps_worklist_digests
    assert rk.ReferralDesk(store, clock=clock).worklist(ACTOR, limit=10) == expected
    store.close()

    assert upgrade(postgres_schema) == (8, 9)
    with PostgresStore(postgres_schema) as upgraded:
        ids = [i.referral_id for i in expected]
        assert all(text is None for _, text in upgraded.worklist_digests(ids).values())
        assert rk.ReferralDesk(upgraded, clock=clock).worklist(ACTOR, limit=10) == expected
        kept = upgraded.worklist_digests(ids)
        assert all(text is not None for _, text in kept.values())
        assert rk.ReferralDesk(upgraded, clock=clock).worklist(ACTOR, limit=10) == expected
        assert upgraded.worklist_digests(ids) == kept
