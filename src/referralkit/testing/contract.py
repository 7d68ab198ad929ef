"""The contract every :class:`~referralkit.storage.ReferralStore` adapter passes.

Subclass :class:`StoreContract` in your test suite and say how to build a fresh, empty store;
pytest collects the inherited tests::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            store = MyStore(...)
            yield store
            store.close()
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import attrs
import pytest

from ..clock import FakeClock
from ..desk import ReferralDesk
from ..errors import ConcurrencyError, DuplicateReferralError, NotFoundError, ValidationError
from ..events import replay
from ..model import Priority, Referral, Status
from ..privacy import Actor, Role
from ..storage import Query, ReferralStore
from ._samples import sample_request

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
