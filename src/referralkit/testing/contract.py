"""The contract every :class:`~referralkit.storage.ReferralStore` adapter passes.

Subclass :class:`StoreContract` in your test suite and say how to build a fresh, empty store;
pytest collects the inherited tests::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            store = MyStore(...)
            yield store
            store.close()

The tests cover: snapshots and events round trip; optimistic concurrency (a stale version
raises :class:`~referralkit.errors.ConcurrencyError` and writes nothing, also inside a
batch); duplicate source ids; queries, filters, paging and the worklist order; claims
(no referral leased twice, leases end, only the holder renews or releases); whole histories
out and back in (:meth:`~referralkit.storage.ReferralStore.export`,
:meth:`~referralkit.storage.ReferralStore.restore_many`); rule versions (decision
provenance: a document saved twice is kept once, found by digest, and the policy in force
at a time follows the order the uses were noted). referralkit runs it against the
memory, SQLite and PostgreSQL adapters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from ..clock import FakeClock
from ..desk import ReferralDesk
from ..errors import ConcurrencyError, DuplicateReferralError, NotFoundError, ValidationError
from ..events import apply_all, replay
from ..model import Priority, Referral, ReferralEvent, Status
from ..privacy import Actor, Role
from ..storage import MemoryStore, Query, ReferralStore, RuleVersion, resolve_id
from ..worklist import SWEEP_BUCKET, rank_entries
from ._samples import sample_request

LEASE = dt.timedelta(minutes=5)
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

__all__ = ["StoreContract"]

ACTOR = Actor("contract", {Role.COORDINATOR})


class StoreContract:
    """Shared semantics of every store adapter. Provide a ``store`` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[ReferralStore]:  # pragma: no cover - overridden
        raise NotImplementedError("define a `store` fixture returning a fresh, empty store")

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock(dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC))

    @pytest.fixture
    def desk(self, store: ReferralStore, clock: FakeClock) -> ReferralDesk:
        counter = iter(range(1, 1_000_000))
        return ReferralDesk(store, clock=clock, new_id=lambda: f"id-{next(counter):06d}")

    # ------------------------------------------------------------------ basics

    def test_load_missing_raises_not_found(self, store: ReferralStore) -> None:
        """Loading or listing events of an unknown referral raises NotFoundError."""
        with pytest.raises(NotFoundError):
            store.load("nope")
        with pytest.raises(NotFoundError):
            store.events("nope")

    def test_saved_snapshot_and_events_round_trip(self, desk: ReferralDesk) -> None:
        """What is saved loads back equal, and the events replay to the snapshot."""
        referral = desk.intake(ACTOR, sample_request())
        referral = desk.send(ACTOR, referral.id)
        assert desk.store.load(referral.id) == referral
        events = desk.store.events(referral.id)
        assert [(e.version, e.index) for e in events] == sorted(
            (e.version, e.index) for e in events
        )
        assert replay(events) == referral

    def test_find_source(self, desk: ReferralDesk) -> None:
        """The referrer's identifier finds the referral."""
        referral = desk.intake(ACTOR, sample_request("SRC-1"))
        assert desk.store.find_source("SRC-1") == referral.id
        assert desk.store.find_source("SRC-2") is None

    # ------------------------------------------------------------------ concurrency

    def test_stale_version_raises_and_writes_nothing(self, desk: ReferralDesk) -> None:
        """A save with a stale expected version raises ConcurrencyError; nothing changes."""
        referral = desk.intake(ACTOR, sample_request())
        sent = desk.send(ACTOR, referral.id)
        events = desk.store.events(referral.id)
        stale = attrs.evolve(sent, version=2)
        change = [attrs.evolve(e, version=2) for e in events if e.version == 2]
        with pytest.raises(ConcurrencyError):
            desk.store.save(stale, change, expected_version=1)
        assert desk.store.load(referral.id) == sent
        assert desk.store.events(referral.id) == events

    def test_new_referral_with_existing_id_conflicts(self, desk: ReferralDesk) -> None:
        """Creating (expected version 0) over an existing referral is a conflict."""
        referral = desk.intake(ACTOR, sample_request())
        events = desk.store.events(referral.id)
        with pytest.raises(ConcurrencyError):
            desk.store.save(referral, events, expected_version=0)

    def test_duplicate_source_id_is_refused(self, desk: ReferralDesk) -> None:
        """Two referrals may not share a source id; the second writes nothing."""
        first = desk.intake(ACTOR, sample_request("DUP"))
        events = desk.store.events(first.id)
        twin = attrs.evolve(first, id="twin")
        twin_events = [attrs.evolve(e, referral_id="twin") for e in events]
        with pytest.raises(DuplicateReferralError):
            desk.store.save(twin, twin_events, expected_version=0)
        with pytest.raises(NotFoundError):
            desk.store.load("twin")

    def test_malformed_change_is_refused(self, desk: ReferralDesk) -> None:
        """A change whose version or events do not line up is a ValidationError."""
        referral = desk.intake(ACTOR, sample_request())
        events = desk.store.events(referral.id)
        with pytest.raises(ValidationError):
            desk.store.save(attrs.evolve(referral, version=5), events, expected_version=1)
        with pytest.raises(ValidationError):
            desk.store.save(attrs.evolve(referral, version=2), [], expected_version=1)

    def test_concurrent_writers_lose_no_update(self, desk: ReferralDesk) -> None:
        """Threads changing one referral: every accepted change is kept, versions contiguous."""
        referral = desk.intake(ACTOR, sample_request())
        accepted: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            for _ in range(10):
                while True:
                    try:
                        changed = desk.assign(ACTOR, referral.id, "someone")
                    except ConcurrencyError:
                        continue
                    with lock:
                        accepted.append(changed.version)
                    break

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = desk.store.load(referral.id)
        assert final.version == 1 + 40
        assert sorted(accepted) == list(range(2, 42))
        assert sorted({e.version for e in desk.store.events(referral.id)}) == list(range(1, 42))

    # ------------------------------------------------------------------ queries

    def _population(self, desk: ReferralDesk, clock: FakeClock) -> list[Referral]:
        made = []
        specs = [
            ("A", "cardiology", Priority.ROUTINE),
            ("B", "oncology", Priority.URGENT),
            ("C", "cardiology", Priority.STAT),
            ("D", "dermatology", Priority.ROUTINE),
            ("E", "cardiology", Priority.URGENT),
        ]
        for source, specialty, priority in specs:
            request = attrs.evolve(sample_request(source), specialty=specialty, priority=priority)
            referral = desk.intake(ACTOR, request)
            referral = desk.send(ACTOR, referral.id)
            clock.advance(hours=1)
            made.append(referral)
        desk.decline(ACTOR, made[3].id, "not our service")
        desk.assign(ACTOR, made[0].id, "coord-7")
        return [desk.store.load(r.id) for r in made]

    def test_worklist_order(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """Open referrals by priority rank, then due date, then received date."""
        self._population(desk, clock)
        found = desk.store.query(Query(open_only=True))
        keys = [(-r.effective_priority.rank, r.due_by, r.received_at) for r in found]
        assert keys == sorted(keys)
        assert all(not r.status.is_terminal for r in found)
        assert len(found) == 4

    def test_filters(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """Each filter selects exactly what the reference semantics select."""
        people = self._population(desk, clock)
        store = desk.store
        everyone = store.query()
        cases = [
            Query(status={Status.DECLINED}),
            Query(status=Status.RECEIVED),
            Query(specialty="cardiology"),
            Query(owner="coord-7"),
            Query(priority=Priority.URGENT),
            Query(patient_id=people[0].patient.id),
            Query(updated_since=people[2].updated_at),
            Query(due_before=clock.now() + dt.timedelta(days=3)),
            Query(open_only=True, specialty="cardiology"),
        ]
        for query in cases:
            expected = {r.id for r in everyone if query.matches(r)}
            assert {r.id for r in store.query(query)} == expected, query
            assert store.count(query) == len(expected), query

    def test_paging_and_updated_order(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """Limit and offset page through one order; 'updated' puts the latest change first."""
        self._population(desk, clock)
        store = desk.store
        whole = [r.id for r in store.query(Query())]
        pages = [r.id for k in range(0, 5, 2) for r in store.query(Query(limit=2, offset=k))]
        assert pages == whole
        recent = store.query(Query(order="updated"))
        stamps = [(r.updated_at, r.id) for r in recent]
        assert stamps == sorted(stamps, reverse=True)

    def test_query_by_status_string_and_terminal(
        self, desk: ReferralDesk, clock: FakeClock
    ) -> None:
        """A status filter given as strings means the same statuses; open_only drops the
        terminal ones."""
        self._population(desk, clock)
        store = desk.store
        assert {r.id for r in store.query(Query(status="declined"))} == {
            r.id for r in store.query(Query(status={Status.DECLINED}))
        }
        assert store.count(Query(open_only=True, status=Status.DECLINED)) == 0

    # ------------------------------------------------------------------ batches

    @staticmethod
    def _next_change(referral: Referral, owner: str = "x") -> tuple[Referral, list[ReferralEvent]]:
        """One more change to ``referral`` (a new owner): the new snapshot and its event."""
        event = ReferralEvent(
            referral.id,
            referral.version + 1,
            0,
            referral.updated_at,
            "contract",
            "owner_assigned",
            {"owner": owner},
        )
        return apply_all(referral, [event]), [event]

    @staticmethod
    def _copy(
        referral: Referral, events: list[ReferralEvent], new_id: str, source: str | None
    ) -> tuple[Referral, list[ReferralEvent]]:
        """``referral`` and its history under another id and source id (replays equal)."""
        moved = []
        for event in events:
            payload = dict(event.payload)
            if event.type == "created":
                payload["referral"] = {**payload["referral"], "id": new_id, "source_id": source}
            moved.append(attrs.evolve(event, referral_id=new_id, payload=payload))
        return attrs.evolve(referral, id=new_id, source_id=source), moved

    def test_save_many_is_all_or_nothing(self, desk: ReferralDesk) -> None:
        """A batch with one stale change raises ConcurrencyError and writes none of it."""
        one = desk.intake(ACTOR, sample_request("BATCH-1"))
        two = desk.intake(ACTOR, sample_request("BATCH-2"))
        good = (*self._next_change(one), 1)
        stale = (*self._next_change(two), 1)
        desk.assign(ACTOR, two.id, "someone-else")  # two is at version 2 now
        before = {i: (desk.store.load(i), desk.store.events(i)) for i in (one.id, two.id)}
        with pytest.raises(ConcurrencyError) as info:
            desk.store.save_many([good, stale])
        assert (info.value.referral_id, info.value.expected, info.value.actual) == (two.id, 1, 2)
        assert {i: (desk.store.load(i), desk.store.events(i)) for i in before} == before

    def test_save_many_creates_and_changes_in_one_batch(self, desk: ReferralDesk) -> None:
        """A batch may create a referral and change it again; both land, in order."""
        made = desk.intake(ACTOR, sample_request("TWICE"))
        twin, created = self._copy(made, desk.store.events(made.id), "twice-b", "TWICE-B")
        changed, change = self._next_change(twin)
        desk.store.save_many([(twin, created, 0), (changed, change, 1)])
        assert desk.store.load("twice-b") == changed
        assert desk.store.events("twice-b") == [*created, *change]
        assert replay(desk.store.events("twice-b")) == changed

    def test_save_many_refuses_a_source_twice(self, desk: ReferralDesk) -> None:
        """Two new referrals with one source id in a batch: DuplicateReferralError, nothing
        written."""
        made = desk.intake(ACTOR, sample_request("SAME"))
        events = desk.store.events(made.id)
        batch = [(*self._copy(made, events, i, "FRESH"), 0) for i in ("same-a", "same-b")]
        with pytest.raises(DuplicateReferralError):
            desk.store.save_many(batch)
        for referral_id in ("same-a", "same-b"):
            with pytest.raises(NotFoundError):
                desk.store.load(referral_id)
        assert desk.store.find_source("FRESH") is None

    def test_batch_is_checked_before_anything_is_written(self, desk: ReferralDesk) -> None:
        """A malformed change anywhere in a batch is a ValidationError naming it."""
        one = desk.intake(ACTOR, sample_request("CHECK-1"))
        good = (*self._next_change(one), 1)
        changed, events = self._next_change(desk.intake(ACTOR, sample_request("CHECK-2")))
        with pytest.raises(ValidationError) as info:
            desk.store.save_many([good, (changed, events, 0)])
        assert info.value.path == "changes[1].version"
        assert desk.store.load(one.id).version == 1

    def test_empty_batch_writes_nothing(self, store: ReferralStore) -> None:
        """save_many([]) and restore_many([]) are no-ops."""
        store.save_many([])
        store.restore_many([])
        assert store.count() == 0

    def test_change_to_a_missing_referral_conflicts(self, desk: ReferralDesk) -> None:
        """Changing a referral the store does not hold is a conflict with no actual version."""
        made = desk.intake(ACTOR, sample_request())
        ghost, ghost_change = self._next_change(attrs.evolve(made, id="ghost"))
        ghost_change = [attrs.evolve(e, referral_id="ghost") for e in ghost_change]
        with pytest.raises(ConcurrencyError) as info:
            desk.store.save(ghost, ghost_change, expected_version=1)
        assert info.value.actual is None
        with pytest.raises(NotFoundError):
            desk.store.load("ghost")

    # ------------------------------------------------------------------ claims

    def _queue(self, desk: ReferralDesk, clock: FakeClock, n: int = 6) -> list[str]:
        """``n`` received referrals; their ids in worklist order."""
        priorities = [Priority.ROUTINE, Priority.STAT, Priority.URGENT, Priority.ASAP]
        for k in range(n):
            request = attrs.evolve(
                sample_request(f"Q-{k:03d}"), priority=priorities[k % len(priorities)]
            )
            referral = desk.intake(ACTOR, request)
            desk.send(ACTOR, referral.id)
            clock.advance(minutes=10)
        return [r.id for r in desk.store.query(Query(open_only=True))]

    def test_claim_takes_the_worklist_head(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """A claim takes the first open referrals in worklist order."""
        order = self._queue(desk, clock)
        now = clock.now()
        assert desk.store.claim("c1", 2, now=now, lease=LEASE) == order[:2]
        assert desk.store.claim("c2", 3, now=now, lease=LEASE) == order[2:5]
        assert desk.store.claim("c3", 5, now=now, lease=LEASE) == order[5:]
        assert desk.store.claim("c4", 5, now=now, lease=LEASE) == []

    def test_claim_skips_live_leases_even_the_owners(
        self, desk: ReferralDesk, clock: FakeClock
    ) -> None:
        """A referral under a live lease is not handed out again, not even to its holder."""
        order = self._queue(desk, clock, 3)
        now = clock.now()
        first = desk.store.claim("c1", 2, now=now, lease=LEASE)
        again = desk.store.claim("c1", 3, now=now + dt.timedelta(minutes=1), lease=LEASE)
        assert set(first).isdisjoint(again)
        assert sorted(first + again) == sorted(order)

    def test_claim_writes_no_change(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """Claiming, renewing and releasing leave snapshots, versions and events alone."""
        order = self._queue(desk, clock, 2)
        before = {i: (desk.store.load(i), desk.store.events(i)) for i in order}
        now = clock.now()
        desk.store.claim("c1", 2, now=now, lease=LEASE)
        desk.store.renew("c1", order, now=now, lease=LEASE)
        desk.store.release("c1", order)
        assert {i: (desk.store.load(i), desk.store.events(i)) for i in order} == before

    def test_holder_still_saves_and_others_may_too(
        self, desk: ReferralDesk, clock: FakeClock
    ) -> None:
        """A lease is advisory for writes: changes go through optimistic concurrency."""
        order = self._queue(desk, clock, 1)
        desk.store.claim("c1", 1, now=clock.now(), lease=LEASE)
        assert desk.assign(ACTOR, order[0], "c1").owner == "c1"

    def test_lease_expires(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """When a lease ends (a coordinator crashed), its referrals are claimable again."""
        order = self._queue(desk, clock, 3)
        now = clock.now()
        taken = desk.store.claim("crashed", 3, now=now, lease=LEASE)
        assert (
            desk.store.claim("c2", 3, now=now + LEASE - dt.timedelta(seconds=1), lease=LEASE) == []
        )
        assert desk.store.claim("c2", 3, now=now + LEASE, lease=LEASE) == taken == order

    def test_renew(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """Renewing moves the end of a live lease; ended or others' leases are not renewed."""
        order = self._queue(desk, clock, 3)
        now = clock.now()
        mine = desk.store.claim("c1", 2, now=now, lease=LEASE)
        later = now + dt.timedelta(minutes=4)
        assert desk.store.renew("c1", [*mine, order[2], "nope"], now=later, lease=LEASE) == mine
        assert desk.store.renew("c2", mine, now=later, lease=LEASE) == []
        # the old end has passed; the renewed lease still holds
        assert desk.store.claim("c2", 3, now=now + LEASE, lease=LEASE) == [order[2]]
        # a lease that has ended cannot be renewed: claim again instead
        end = later + LEASE
        assert desk.store.renew("c1", mine, now=end, lease=LEASE) == []
        assert desk.store.claim("c3", 3, now=end, lease=LEASE) == mine

    def test_release(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """Releasing hands referrals back at once; only the holder may release them."""
        order = self._queue(desk, clock, 2)
        now = clock.now()
        mine = desk.store.claim("c1", 2, now=now, lease=LEASE)
        assert desk.store.release("c2", mine) == []
        assert desk.store.claim("c2", 2, now=now, lease=LEASE) == []
        assert desk.store.release("c1", [mine[1], "nope", mine[1]]) == [mine[1]]
        assert desk.store.claim("c2", 2, now=now, lease=LEASE) == [mine[1]]
        assert desk.store.release("c1", []) == []
        assert order == mine

    def test_claim_filters_and_skips_closed(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """A claim honours the query's filters and never takes a closed referral."""
        people = self._population(desk, clock)
        now = clock.now()
        taken = desk.store.claim(
            "c1", 10, now=now, lease=LEASE, query=Query(specialty="cardiology", limit=1)
        )
        expected = [r.id for r in desk.store.query(Query(open_only=True, specialty="cardiology"))]
        assert taken == expected
        rest = desk.store.claim("c2", 10, now=now, lease=LEASE)
        declined = people[3].id
        assert declined not in rest
        assert sorted(taken + rest) == sorted(r.id for r in people if r.id != declined)

    def test_claim_arguments_are_checked(self, store: ReferralStore, clock: FakeClock) -> None:
        """Bad owners, times, leases and counts are ValidationErrors naming the argument."""
        now = clock.now()
        good: dict[str, Any] = {"owner": "c", "count": 1, "now": now, "lease": LEASE}
        cases: list[tuple[dict[str, Any], str]] = [
            ({"owner": " "}, "owner"),
            ({"count": -1}, "count"),
            ({"count": True}, "count"),
            ({"now": now.replace(tzinfo=None)}, "now"),
            ({"lease": dt.timedelta(0)}, "lease"),
            ({"lease": dt.timedelta.max}, "lease"),
            ({"query": "x"}, "query"),
        ]
        for bad, path in cases:
            with pytest.raises(ValidationError) as info:
                store.claim(**(good | bad))
            assert info.value.path == path
        with pytest.raises(ValidationError):
            store.renew("c", "one-id", now=now, lease=LEASE)
        with pytest.raises(ValidationError):
            store.release("", ["x"])
        with pytest.raises(ValidationError):
            store.release("c", [1])  # type: ignore[list-item]
        assert store.claim("c", 0, now=now, lease=LEASE) == []

    def test_concurrent_claims_never_share(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """Threads claiming at once: every referral goes to exactly one of them."""
        order = self._queue(desk, clock, 24)
        now = clock.now()
        taken: dict[str, list[str]] = {}
        lock = threading.Lock()

        def work(owner: str) -> None:
            while batch := desk.store.claim(owner, 2, now=now, lease=LEASE):
                with lock:
                    taken.setdefault(owner, []).extend(batch)

        threads = [threading.Thread(target=work, args=(f"c{k}",)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        everything = [i for batch in taken.values() for i in batch]
        assert sorted(everything) == sorted(order)

    # ------------------------------------------------------------------ whole histories

    def test_export_then_restore_gives_an_equal_store(
        self, desk: ReferralDesk, clock: FakeClock
    ) -> None:
        """export() yields every referral with its history in id order; restoring that into
        an empty store (here a MemoryStore, and back) gives the same content."""
        self._population(desk, clock)
        exported = list(desk.store.export())
        assert [r.id for r, _ in exported] == sorted(r.id for r in desk.store.query())
        for referral, events in exported:
            assert events == desk.store.events(referral.id)
            assert replay(events) == referral
        copy = MemoryStore()
        copy.restore_many(exported)
        assert list(copy.export()) == exported

    def test_export_reads_one_state(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """Changes made while an export is being read do not show in it."""
        people = self._population(desk, clock)
        exporting = desk.store.export()
        first = next(exporting)
        last = max(people, key=lambda r: r.id)
        desk.assign(ACTOR, last.id, "late")
        desk.intake(ACTOR, sample_request("LATE"))
        seen = {r.id: r.version for r, _ in [first, *exporting]}
        assert seen == {r.id: r.version for r in people}

    def test_event_histories_are_the_exported_histories(
        self, desk: ReferralDesk, clock: FakeClock
    ) -> None:
        """event_histories() yields each referral's events, in referral id order, equal to
        the histories export() gives (an adapter's faster override included)."""
        people = self._population(desk, clock)
        histories = list(desk.store.event_histories())
        assert histories == [events for _, events in desk.store.export()]
        assert [h[0].referral_id for h in histories] == sorted(r.id for r in people)
        for events in histories:
            assert replay(events) == desk.store.load(events[0].referral_id)

    def test_restore_into_the_adapter(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """restore_many writes whole histories directly; a referral already there is a
        conflict and the batch writes nothing."""
        people = self._population(desk, clock)
        source = MemoryStore()
        counter = iter(range(1, 1_000_000))
        other = ReferralDesk(source, clock=clock, new_id=lambda: f"r-{next(counter):06d}")
        made = [other.intake(ACTOR, sample_request(f"R-{k}")) for k in range(3)]
        other.send(ACTOR, made[0].id)
        histories = list(source.export())
        desk.store.restore_many(histories[:2])
        for referral, events in histories[:2]:
            assert desk.store.load(referral.id) == referral
            assert desk.store.events(referral.id) == events
        with pytest.raises(ConcurrencyError):
            desk.store.restore_many(histories[1:])
        with pytest.raises(NotFoundError):
            desk.store.load(histories[2][0].id)
        assert desk.store.count() == len(people) + 2

    def test_restore_checks_histories(self, desk: ReferralDesk) -> None:
        """A history with a gap or a foreign event is a ValidationError; nothing is written."""
        made = desk.intake(ACTOR, sample_request())
        made = desk.send(ACTOR, made.id)
        events = desk.store.events(made.id)
        moved, history = self._copy(made, events, "moved", "MOVED")
        with pytest.raises(ValidationError):
            desk.store.restore_many([(moved, [e for e in history if e.version != 1])])
        with pytest.raises(ValidationError):
            desk.store.restore_many([(moved, events)])
        with pytest.raises(ValidationError):
            desk.store.restore_many([(moved, [e for e in history if e.version == 1])])
        with pytest.raises(NotFoundError):
            desk.store.load("moved")

    def test_restore_refuses_twins_in_one_batch(self, desk: ReferralDesk) -> None:
        """One id or one source id twice in a batch: refused before anything is written."""
        made = desk.intake(ACTOR, sample_request("TWINS"))
        events = desk.store.events(made.id)
        first = self._copy(made, events, "twin-1", "TWIN-1")
        with pytest.raises(ConcurrencyError):
            desk.store.restore_many([first, first])
        second = self._copy(made, events, "twin-2", "TWIN-1")
        with pytest.raises(DuplicateReferralError):
            desk.store.restore_many([first, second])
        assert desk.store.find_source("TWIN-1") is None

    def test_restore_refuses_a_taken_source(self, desk: ReferralDesk) -> None:
        """Restoring a referral whose source id another referral holds is a
        DuplicateReferralError."""
        made = desk.intake(ACTOR, sample_request("TAKEN"))
        twin = self._copy(made, desk.store.events(made.id), "twin", "TAKEN")
        with pytest.raises(DuplicateReferralError):
            desk.store.restore_many([twin])
        with pytest.raises(NotFoundError):
            desk.store.load("twin")

    # ------------------------------------------------------------------ ids by prefix

    _PREFIX_IDS = ("abc", "abcd", "abd", "ABX", "b%_", "b__x", "b\\x", "é1", "é2", "z")

    def _prefixed(self, store: ReferralStore, clock: FakeClock) -> None:
        """Referrals with ids chosen to trap a prefix search: LIKE wildcards and escapes,
        case, non-ASCII."""
        ids = iter(self._PREFIX_IDS)
        desk = ReferralDesk(store, clock=clock, new_id=lambda: next(ids))
        for k in range(len(self._PREFIX_IDS)):
            desk.intake(ACTOR, sample_request(f"PREFIX-{k}"))

    @pytest.mark.parametrize(
        ("prefix", "expected"),
        [
            ("ab", ["abc", "abcd", "abd"]),
            ("abc", ["abc", "abcd"]),
            ("abcd", ["abcd"]),
            ("A", ["ABX"]),
            ("b%", ["b%_"]),
            ("b_", ["b__x"]),
            ("b\\", ["b\\x"]),
            ("é", ["é1", "é2"]),
            ("x", []),
            ("abcde", []),
        ],
    )
    def test_ids_starting_with(
        self, store: ReferralStore, clock: FakeClock, prefix: str, expected: list[str]
    ) -> None:
        """ids_starting_with returns the ids that start with the prefix, in id order: case
        counts, and %, _ and \\ are plain characters."""
        self._prefixed(store, clock)
        assert store.ids_starting_with(prefix) == expected
        assert store.ids_starting_with(prefix, limit=1) == expected[:1]

    def test_ids_starting_with_checks_its_arguments(self, store: ReferralStore) -> None:
        """An empty prefix, or a limit below 1, is a ValidationError naming the argument."""
        for prefix, limit, path in (("", None, "prefix"), ("a", 0, "limit"), ("a", True, "limit")):
            with pytest.raises(ValidationError) as info:
                store.ids_starting_with(prefix, limit=limit)
            assert info.value.path == path

    def test_resolve_id(self, store: ReferralStore, clock: FakeClock) -> None:
        """resolve_id: a unique prefix gives its id, an exact id wins over longer ids that
        start with it, several matches are a ValidationError saying how many, none is
        NotFoundError."""
        self._prefixed(store, clock)
        assert resolve_id(store, "abd") == "abd"
        assert resolve_id(store, "AB") == "ABX"
        assert resolve_id(store, "abc") == "abc"
        assert resolve_id(store, "b%") == "b%_"
        with pytest.raises(ValidationError, match="start of 3 referral ids"):
            resolve_id(store, "ab")
        with pytest.raises(NotFoundError):
            resolve_id(store, "nope")
        with pytest.raises(ValidationError):
            resolve_id(store, "")

    # ------------------------------------------------------------------ worklist rank keys

    @staticmethod
    def _stored_rank_keys(store: ReferralStore) -> dict[str, set[tuple[int, float]]]:
        """Every stored rank key, read through rank_buckets and pages of two."""
        found: dict[str, set[tuple[int, float]]] = {}
        for bucket in store.rank_buckets():
            after = None
            while True:
                page = store.rank_page(bucket, after, 2)
                assert page == sorted(page)
                assert after is None or all(key > after for key in page)
                for key, referral_id in page:
                    found.setdefault(referral_id, set()).add((bucket, key))
                if len(page) < 2:
                    break
                after = page[-1]
        return found

    def _varied(self, desk: ReferralDesk, clock: FakeClock) -> list[str]:
        """Referrals in many states: waiting, accepted, on a patient hold (a paused clock),
        booked, seen, closed, and two written in one batch."""
        people = []
        for k, priority in enumerate([Priority.ROUTINE, Priority.URGENT, Priority.STAT] * 2):
            request = attrs.evolve(sample_request(f"V-{k}", complete=True), priority=priority)
            people.append(desk.send(ACTOR, desk.intake(ACTOR, request).id).id)
            clock.advance(hours=1)
        desk.decline(ACTOR, people[3], "not our service")
        desk.assign(ACTOR, people[0], "coord-7")
        desk.accept(ACTOR, people[1])
        desk.accept(ACTOR, people[2])
        desk.hold(ACTOR, people[2], "patient: travelling")
        desk.accept(ACTOR, people[4])
        desk.schedule(ACTOR, people[4], clock.now() + dt.timedelta(days=2))
        clock.advance(days=3)
        desk.record_visit(ACTOR, people[4])
        desk.complete(ACTOR, people[4], "plan agreed")
        made = desk.intake(ACTOR, sample_request("BATCH"))
        twin, created = self._copy(made, desk.store.events(made.id), "batch-b", "BATCH-B")
        made = desk.send(ACTOR, made.id)
        changed, change = self._next_change(twin, "coord-9")
        desk.store.save_many([(twin, created, 0), (changed, change, 1)])
        changed, change = self._next_change(made, "coord-9")
        desk.store.save_many([(changed, change, made.version)])
        return [*people, made.id, twin.id]

    def test_rank_keys_follow_every_change(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """The stored rank keys are rank_entries of each referral's snapshot and history after
        every kind of write (closed referrals have none), and restore_many writes them too."""
        ids = self._varied(desk, clock)
        store = desk.store
        assert store.keeps_rank_keys
        expected = {}
        for referral_id in ids:
            entries = rank_entries(store.load(referral_id), store.events(referral_id))
            if entries:
                expected[referral_id] = {(e.bucket, e.sort_key) for e in entries}
        assert self._stored_rank_keys(store) == expected
        assert len(expected) == len(ids) - 2  # declined, completed
        assert store.rank_buckets() == sorted({b for keys in expected.values() for b, _ in keys})
        for limit in (1, 2, 64):  # every rank bucket's first page, in one call
            assert store.rank_heads(limit) == {
                bucket: store.rank_page(bucket, None, limit)
                for bucket in store.rank_buckets()
                if bucket != SWEEP_BUCKET
            }
        copy = MemoryStore()
        copy.restore_many(list(store.export()))
        assert self._stored_rank_keys(copy) == expected

    def test_rank_keys_restored(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """restore_many into the adapter writes the rank keys of the restored referrals."""
        source = MemoryStore()
        other = ReferralDesk(source, clock=clock, new_id=iter(["r-1", "r-2", "r-3"]).__next__)
        made = [other.intake(ACTOR, sample_request(f"R-{k}")) for k in range(3)]
        other.send(ACTOR, made[0].id)
        other.send(ACTOR, made[1].id)
        other.decline(ACTOR, made[1].id, "not our service")
        desk.store.restore_many(list(source.export()))
        assert self._stored_rank_keys(desk.store) == self._stored_rank_keys(source)
        assert set(self._stored_rank_keys(desk.store)) == {made[0].id, made[2].id}

    def test_rank_page_arguments_are_checked(self, store: ReferralStore) -> None:
        for bucket, after, limit, path in (
            ("1", None, 5, "bucket"),
            (True, None, 5, "bucket"),
            (1, (1.0,), 5, "after"),
            (1, ("x", 1.0), 5, "after"),
            (1, None, 0, "limit"),
        ):
            with pytest.raises(ValidationError) as info:
                store.rank_page(bucket, after, limit)  # type: ignore[arg-type]
            assert info.value.path == path
        assert store.rank_page(1, None, 5) == []
        assert store.rank_buckets() == []
        assert store.rank_heads(5) == {}
        for bad in (0, -1, True, 2.0):
            with pytest.raises(ValidationError) as info:
                store.rank_heads(bad)  # type: ignore[arg-type]
            assert info.value.path == "limit"

    def test_latest_update(self, desk: ReferralDesk, clock: FakeClock) -> None:
        assert desk.store.latest_update() is None
        self._population(desk, clock)
        latest = max(r.updated_at for r in desk.store.query())
        assert desk.store.latest_update() == latest

    def test_ranked_worklist_is_the_full_ranking(
        self, desk: ReferralDesk, clock: FakeClock
    ) -> None:
        """The desk's worklist head, read from the stored rank keys, is the head of the
        ranking of every open referral, as time passes, with filters."""
        self._varied(desk, clock)
        for hours in (0, 5, 30, 24 * 9, 24 * 40):
            when = clock.now() + dt.timedelta(hours=hours)
            everything = desk.worklist(ACTOR, as_of=when, limit=None)
            assert len(everything) == 6
            for limit in (1, 2, 3, 10):
                head = desk.worklist(ACTOR, as_of=when, limit=limit)
                assert head == everything[:limit]
            mine = desk.worklist(ACTOR, as_of=when, limit=2, owner="coord-9")
            assert mine == [i for i in everything if i.owner == "coord-9"][:2]
        earlier = clock.now() - dt.timedelta(days=1)  # before the last change: assessed in full
        assert (
            desk.worklist(ACTOR, as_of=earlier, limit=2)
            == desk.worklist(ACTOR, as_of=earlier, limit=None)[:2]
        )

    def test_histories_and_versions(self, desk: ReferralDesk, clock: FakeClock) -> None:
        """histories and versions read a batch: the ones that exist, in the order given."""
        ids = [r.id for r in self._population(desk, clock)]
        wanted = [ids[2], "missing", ids[0], ids[2]]
        found = desk.store.histories(wanted)
        assert [r.id for r, _ in found] == [ids[2], ids[0]]
        for referral, events in found:
            assert referral == desk.store.load(referral.id)
            assert list(events) == desk.store.events(referral.id)
        assert desk.store.versions(wanted) == {
            i: desk.store.load(i).version for i in (ids[2], ids[0])
        }
        assert desk.store.histories([]) == []
        assert desk.store.versions([]) == {}

    # ------------------------------------------------------------------ rule versions

    keeps_rule_versions: bool = True
    """Set to ``False`` in the subclass of an adapter that keeps no rule versions (decision
    provenance, new in 0.2): the tests below then check that all six methods say so with
    ``NotImplementedError`` instead of half working."""

    def _rule_version(self, text: str, kind: str, at: dt.datetime) -> RuleVersion:
        return RuleVersion(hashlib.sha256(text.encode()).hexdigest(), kind, "contract", text, at)

    def _refuses_versions(self, store: ReferralStore) -> bool:
        if self.keeps_rule_versions:
            return False
        version = self._rule_version("{}", "coverage-policy", T0)
        for call in (
            lambda: store.save_rule_version(version),
            lambda: store.find_rule_version(version.digest),
            lambda: store.record_policy_use("coverage", version.digest, T0),
            lambda: store.policy_in_force("coverage", T0),
            store.rule_versions,
            store.policy_uses,
        ):
            with pytest.raises(NotImplementedError):
                call()
        return True

    def test_rule_version_saved_once_and_found(self, store: ReferralStore) -> None:
        """A rule version is kept once under its digest: saving it again (even with a later
        ``recorded_at``) writes nothing and the first stays; it is found by digest and listed
        in digest order."""
        if self._refuses_versions(store):
            return
        first = self._rule_version('{"rules": 1}', "coverage", T0)
        policy = self._rule_version('{"rulesets": []}', "urgency-policy", T0)
        assert store.find_rule_version(first.digest) is None
        assert store.rule_versions() == []
        assert store.save_rule_version(first) is True
        assert store.save_rule_version(attrs.evolve(first, recorded_at=T0 + DAY)) is False
        assert store.save_rule_version(policy) is True
        assert store.find_rule_version(first.digest) == first
        assert store.find_rule_version(policy.digest) == policy
        assert store.find_rule_version("0" * 64) is None
        assert store.rule_versions() == sorted([first, policy], key=lambda v: v.digest)
        with pytest.raises(ValidationError):
            store.find_rule_version("not-a-digest")
        with pytest.raises(ValidationError):
            store.save_rule_version("not a version")  # type: ignore[arg-type]

    def test_policy_use_ordering(self, store: ReferralStore) -> None:
        """``policy_in_force`` answers the policy noted latest at or before a time (among
        equal times, the last noted); noting the latest policy of a kind again writes
        nothing; kinds are independent; ``policy_uses`` lists the uses as noted."""
        if self._refuses_versions(store):
            return
        a, b, c = (
            self._rule_version(f'{{"policy": "{name}"}}', "coverage-policy", T0) for name in "abc"
        )
        ruleset = self._rule_version('{"ruleset": 1}', "coverage", T0)
        for version in (a, b, c, ruleset):
            store.save_rule_version(version)
        assert store.policy_in_force("coverage", T0 + 9 * DAY) is None
        assert store.record_policy_use("coverage", a.digest, T0 + DAY) is True
        assert store.record_policy_use("coverage", a.digest, T0 + 2 * DAY) is False
        assert store.record_policy_use("coverage", b.digest, T0 + 2 * DAY) is True
        assert store.record_policy_use("coverage", a.digest, T0 + 3 * DAY) is True
        assert store.record_policy_use("coverage", b.digest, T0 + 3 * DAY) is True
        assert store.record_policy_use("coverage", c.digest, T0) is True  # noted late
        second = dt.timedelta(seconds=1)
        times = [T0 - second, T0, T0 + DAY - second, T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY]
        assert [store.policy_in_force("coverage", t) for t in times] == [
            None,
            c.digest,
            c.digest,
            a.digest,
            b.digest,
            b.digest,  # a then b noted at the same time: the last noted
        ]
        assert store.policy_in_force("urgency", T0 + 9 * DAY) is None
        assert store.policy_uses() == [
            ("coverage", a.digest, T0 + DAY),
            ("coverage", b.digest, T0 + 2 * DAY),
            ("coverage", a.digest, T0 + 3 * DAY),
            ("coverage", b.digest, T0 + 3 * DAY),
            ("coverage", c.digest, T0),
        ]
        for kind, digest in (
            ("coverage", ruleset.digest),  # a ruleset, not a policy
            ("urgency", a.digest),  # a policy of another kind
            ("coverage", "0" * 64),  # nothing stored
        ):
            with pytest.raises(ValidationError):
                store.record_policy_use(kind, digest, T0)
        with pytest.raises(ValidationError):
            store.policy_in_force("billing", T0)
        assert len(store.policy_uses()) == 5
