"""MemoryStore: the reference semantics of saving, concurrency, queries and ordering."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest

from referralkit import (
    ConcurrencyError,
    DuplicateReferralError,
    MemoryStore,
    NotFoundError,
    Priority,
    Query,
    Referral,
    ReferralEvent,
    ReferralStore,
    Status,
    UrgencyAssessment,
    ValidationError,
    open_store,
)
from referralkit.storage import check_change, worklist_key
from referralkit.testing import sample_request

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def make(id: str = "r1", *, version: int = 1, **changes: Any) -> Referral:
    """A referral built directly (not through the desk)."""
    request = sample_request()
    fields: dict[str, Any] = {
        "id": id,
        "patient": request.patient,
        "referring": request.referring,
        "specialty": "cardiology",
        "created_at": T0,
        "updated_at": T0,
        "version": version,
        "status": Status.RECEIVED,
    }
    return Referral(**(fields | changes))


def events_for(referral: Referral, count: int = 1, **changes: Any) -> list[ReferralEvent]:
    return [
        ReferralEvent(
            **(
                {
                    "referral_id": referral.id,
                    "version": referral.version,
                    "index": index,
                    "at": referral.updated_at,
                    "actor": "u1",
                    "type": "created" if referral.version == 1 else "owner_assigned",
                }
                | changes
            )
        )
        for index in range(count)
    ]


def put(store: MemoryStore, id: str, **changes: Any) -> Referral:
    """Save a new referral (version 1) with one event."""
    referral = make(id, **changes)
    store.save(referral, events_for(referral), 0)
    return referral


def urgency(priority: Priority, due: dt.datetime | None) -> UrgencyAssessment:
    return UrgencyAssessment(priority, priority.rank * 100, due_by=due)


class TestSave:
    def test_save_and_load(self, store: MemoryStore) -> None:
        """A saved referral loads back equal, with its events in order."""
        referral = make()
        events = events_for(referral, 2)
        store.save(referral, events, 0)
        assert store.load("r1") == referral
        assert store.events("r1") == events
        assert store.find_source("nope") is None

    def test_versions_follow_each_other(self, store: MemoryStore) -> None:
        """Each change raises the version by one and appends its events."""
        first = put(store, "r1")
        second = attrs.evolve(first, version=2, owner="u2")
        store.save(second, events_for(second, 3), 1)
        assert store.load("r1") == second
        assert [(e.version, e.index) for e in store.events("r1")] == [
            (1, 0),
            (2, 0),
            (2, 1),
            (2, 2),
        ]

    def test_events_returns_a_copy(self, store: MemoryStore) -> None:
        """Changing the returned list of events does not change the store."""
        put(store, "r1")
        store.events("r1").clear()
        assert len(store.events("r1")) == 1

    def test_stale_expected_version(self, store: MemoryStore) -> None:
        """A stale expected version raises ConcurrencyError and writes nothing."""
        first = put(store, "r1")
        second = attrs.evolve(first, version=2, owner="u2")
        store.save(second, events_for(second), 1)
        stale = attrs.evolve(first, version=2, owner="u3")
        with pytest.raises(ConcurrencyError) as info:
            store.save(stale, events_for(stale), 1)
        assert (info.value.referral_id, info.value.expected, info.value.actual) == ("r1", 1, 2)
        # same version number, different content: still refused, since 2 != 1
        assert store.load("r1") == second
        assert len(store.events("r1")) == 2

    def test_expected_version_of_a_missing_referral(self, store: MemoryStore) -> None:
        """Expecting a version of a referral that does not exist is a ConcurrencyError."""
        referral = make(version=3)
        with pytest.raises(ConcurrencyError) as info:
            store.save(referral, events_for(referral), 2)
        assert info.value.actual is None
        assert "absent" in str(info.value)
        with pytest.raises(NotFoundError):
            store.load("r1")

    def test_new_referral_twice(self, store: MemoryStore) -> None:
        """Saving a second 'new' referral with an existing id is a ConcurrencyError."""
        put(store, "r1")
        again = make("r1", owner="someone")
        with pytest.raises(ConcurrencyError):
            store.save(again, events_for(again), 0)
        assert store.load("r1").owner is None

    def test_duplicate_source_id(self, store: MemoryStore) -> None:
        """A second referral with the same source id is a DuplicateReferralError; no write."""
        put(store, "r1", source_id="REQ-1")
        other = make("r2", source_id="REQ-1")
        with pytest.raises(DuplicateReferralError) as info:
            store.save(other, events_for(other), 0)
        assert isinstance(info.value, ConcurrencyError)
        assert info.value.source_id == "REQ-1"
        assert "REQ-1" in str(info.value)
        with pytest.raises(NotFoundError):
            store.load("r2")
        with pytest.raises(NotFoundError):
            store.events("r2")
        assert store.find_source("REQ-1") == "r1"

    def test_same_referral_keeps_its_source_id(self, store: MemoryStore) -> None:
        """Later versions of the same referral keep the same source id without complaint."""
        first = put(store, "r1", source_id="REQ-1")
        second = attrs.evolve(first, version=2)
        store.save(second, events_for(second), 1)
        assert store.find_source("REQ-1") == "r1"

    @pytest.mark.parametrize(
        ("version", "expected", "path"),
        [(1, 1, "version"), (3, 1, "version"), (1, -1, "expected_version")],
    )
    def test_version_must_rise_by_one(
        self, store: MemoryStore, version: int, expected: int, path: str
    ) -> None:
        """check_change: the snapshot's version is expected_version + 1."""
        referral = make(version=version)
        with pytest.raises(ValidationError) as info:
            store.save(referral, events_for(referral), expected)
        assert info.value.path == path
        assert store.count() == 0

    def test_a_change_needs_events(self, store: MemoryStore) -> None:
        """check_change: a change without events is refused."""
        with pytest.raises(ValidationError) as info:
            store.save(make(), [], 0)
        assert info.value.path == "events"

    @pytest.mark.parametrize(
        ("changes", "path"),
        [
            ({"referral_id": "other"}, "events[0]"),
            ({"version": 2}, "events[0]"),
            ({"index": 5}, "events[0]"),
        ],
    )
    def test_events_must_belong_to_the_change(
        self, store: MemoryStore, changes: dict[str, Any], path: str
    ) -> None:
        """check_change: events carry the referral id, the new version and their index."""
        referral = make()
        with pytest.raises(ValidationError) as info:
            store.save(referral, events_for(referral, **changes), 0)
        assert info.value.path == path
        assert store.count() == 0

    def test_event_indexes_must_count_from_zero(self) -> None:
        """check_change names the first event out of place."""
        referral = make()
        events = events_for(referral, 2)
        with pytest.raises(ValidationError) as info:
            check_change(referral, [events[0], events[0]], 0)
        assert info.value.path == "events[1]"

    def test_unknown_ids(self, store: MemoryStore) -> None:
        """load and events raise NotFoundError for an unknown id."""
        with pytest.raises(NotFoundError, match="nope"):
            store.load("nope")
        with pytest.raises(NotFoundError):
            store.events("nope")


@pytest.fixture
def filled(store: MemoryStore) -> MemoryStore:
    """Six referrals with differing status, priority, specialty, owner, dates."""
    put(
        store,
        "a",
        status=Status.RECEIVED,
        priority=Priority.ROUTINE,
        received_at=T0,
        updated_at=T0 + dt.timedelta(hours=1),
        urgency=urgency(Priority.ROUTINE, T0 + dt.timedelta(days=20)),
    )
    put(
        store,
        "b",
        status=Status.ACCEPTED,
        priority=Priority.ROUTINE,
        received_at=T0,
        owner="u1",
        updated_at=T0 + dt.timedelta(hours=5),
        urgency=urgency(Priority.URGENT, T0 + dt.timedelta(days=2)),
    )
    put(
        store,
        "c",
        status=Status.SCHEDULED,
        priority=Priority.STAT,
        specialty="oncology",
        received_at=T0 + dt.timedelta(hours=1),
        updated_at=T0 + dt.timedelta(hours=3),
        urgency=urgency(Priority.STAT, T0 + dt.timedelta(days=1)),
    )
    put(
        store,
        "d",
        status=Status.COMPLETED,
        priority=Priority.STAT,
        owner="u1",
        updated_at=T0 + dt.timedelta(hours=2),
    )
    put(
        store,
        "e",
        status=Status.RECEIVED,
        priority=Priority.URGENT,
        received_at=T0 + dt.timedelta(hours=2),
        updated_at=T0 + dt.timedelta(hours=4),
    )
    put(
        store,
        "f",
        status=Status.ON_HOLD,
        priority=Priority.URGENT,
        received_at=T0 - dt.timedelta(hours=2),
        updated_at=T0,
        patient=attrs.evolve(sample_request().patient, id="pat-2"),
        urgency=urgency(Priority.URGENT, T0 + dt.timedelta(days=2)),
    )
    return store


def ids(referrals: list[Referral]) -> list[str]:
    return [r.id for r in referrals]


class TestQuery:
    def test_everything_in_worklist_order(self, filled: MemoryStore) -> None:
        """Worklist order: priority rank (highest first), due (None last), received, id."""
        assert ids(filled.query()) == ["c", "d", "f", "b", "e", "a"]

    def test_worklist_key(self, filled: MemoryStore) -> None:
        """worklist_key is the sort key of the worklist order."""
        everything = filled.query()
        assert sorted(everything, key=worklist_key) == everything

    def test_due_date_breaks_priority_ties(self, store: MemoryStore) -> None:
        """Within a priority, the earlier due date comes first; no due date comes last."""
        put(store, "late", urgency=urgency(Priority.URGENT, T0 + dt.timedelta(days=3)))
        put(store, "none", priority=Priority.URGENT)
        put(store, "soon", urgency=urgency(Priority.URGENT, T0 + dt.timedelta(days=1)))
        assert ids(store.query()) == ["soon", "late", "none"]

    def test_received_breaks_due_ties(self, store: MemoryStore) -> None:
        """With equal priority and due date, the referral received first comes first."""
        due = T0 + dt.timedelta(days=3)
        put(
            store,
            "x2",
            received_at=T0 + dt.timedelta(hours=2),
            urgency=urgency(Priority.URGENT, due),
        )
        put(
            store,
            "x1",
            received_at=T0 + dt.timedelta(hours=1),
            urgency=urgency(Priority.URGENT, due),
        )
        put(store, "x0", urgency=urgency(Priority.URGENT, due))  # not received: created_at
        assert ids(store.query()) == ["x0", "x1", "x2"]

    def test_updated_order(self, filled: MemoryStore) -> None:
        """'updated' order lists the most recently changed first."""
        assert ids(filled.query(Query(order="updated"))) == ["b", "e", "c", "d", "a", "f"]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (Query(status=Status.RECEIVED), {"a", "e"}),
            (Query(status={Status.RECEIVED, Status.COMPLETED}), {"a", "d", "e"}),
            (Query(open_only=True), {"a", "b", "c", "e", "f"}),
            (Query(priority=Priority.URGENT), {"b", "e", "f"}),
            (Query(priority=Priority.ROUTINE), {"a"}),
            (Query(specialty="oncology"), {"c"}),
            (Query(owner="u1"), {"b", "d"}),
            (Query(owner="u1", open_only=True), {"b"}),
            (Query(patient_id="pat-2"), {"f"}),
            (Query(updated_since=T0 + dt.timedelta(hours=3)), {"b", "c", "e"}),
            (Query(due_before=T0 + dt.timedelta(days=2)), {"c"}),
            (Query(due_before=T0 + dt.timedelta(days=2, seconds=1)), {"b", "c", "f"}),
            (Query(status=Status.DRAFT), set()),
        ],
    )
    def test_filters(self, filled: MemoryStore, query: Query, expected: set[str]) -> None:
        """Each filter keeps exactly the matching referrals; None matches everything."""
        assert set(ids(filled.query(query))) == expected
        assert filled.count(query) == len(expected)

    def test_priority_filter_uses_the_assessed_priority(self, filled: MemoryStore) -> None:
        """'b' was requested routine but assessed urgent: it is listed as urgent."""
        assert "b" in ids(filled.query(Query(priority=Priority.URGENT)))
        assert "b" not in ids(filled.query(Query(priority=Priority.ROUTINE)))

    def test_limit_and_offset(self, filled: MemoryStore) -> None:
        """limit and offset page through the ordered result; count ignores paging."""
        everything = ids(filled.query())
        assert ids(filled.query(Query(limit=2))) == everything[:2]
        assert ids(filled.query(Query(limit=2, offset=2))) == everything[2:4]
        assert ids(filled.query(Query(offset=4))) == everything[4:]
        assert filled.query(Query(limit=0)) == []
        assert filled.query(Query(offset=10)) == []
        assert filled.count(Query(limit=1, offset=3)) == 6
        assert filled.count() == 6

    @pytest.mark.parametrize(
        ("kwargs", "path"),
        [
            ({"priority": "urgent"}, "priority"),
            ({"order": "random"}, "order"),
            ({"order": "worklistupdated"}, "order"),
            ({"limit": -1}, "limit"),
            ({"offset": -1}, "offset"),
            ({"updated_since": dt.datetime(2026, 1, 1)}, "updated_since"),
            ({"due_before": "2026-01-01"}, "due_before"),
        ],
    )
    def test_bad_query(self, kwargs: dict[str, Any], path: str) -> None:
        """Bad query values are ValidationErrors naming the field."""
        with pytest.raises(ValidationError) as info:
            Query(**kwargs)
        assert info.value.path == path

    def test_status_filter_forms(self) -> None:
        """status accepts one Status or a collection of them."""
        assert Query(status=Status.SEEN).status == frozenset({Status.SEEN})
        assert Query(status=[Status.SEEN, Status.SEEN]).status == frozenset({Status.SEEN})
        assert Query().status is None

    def test_status_filter_of_a_plain_string(self) -> None:
        """A plain string status is that status (or refused), never a set of its letters."""
        outcome = _query_or_error(status="received")
        if isinstance(outcome, ValidationError):
            assert outcome.path == "status"
        else:
            assert outcome.status == frozenset({Status.RECEIVED})

    @pytest.mark.parametrize("value", [5, ["lost"], [Status.SEEN, "nope"]])
    def test_status_filter_refuses_what_is_not_a_status(self, value: Any) -> None:
        """A status filter that is not made of Status values is a ValidationError."""
        with pytest.raises(ValidationError) as info:
            Query(status=value)
        assert info.value.path == "status"


def _query_or_error(**kwargs: Any) -> Query | ValidationError:
    try:
        return Query(**kwargs)
    except ValidationError as error:
        return error


class TestOpenStore:
    def test_memory_url(self) -> None:
        """memory:// opens a fresh, empty MemoryStore each time."""
        first, second = open_store("memory://"), open_store("memory://")
        assert isinstance(first, MemoryStore)
        assert isinstance(first, ReferralStore)
        assert first is not second
        assert first.count() == 0
        assert repr(first) == "MemoryStore(<0 referrals>)"

    @pytest.mark.parametrize(
        "url",
        [
            "nosuch://admin:Pa55-SECRET-w0rd@db.example.org/referrals",
            "ftp://user:Pa55-SECRET-w0rd@host",
            "Pa55-SECRET-w0rd",
            "",
            "sqlite://",
        ],
    )
    def test_unsupported_urls(self, url: str) -> None:
        """An unsupported URL is a ValidationError naming url, without the password."""
        with pytest.raises(ValidationError) as info:
            open_store(url)
        assert info.value.path == "url"
        assert "SECRET" not in str(info.value)
        assert "Pa55" not in repr(info.value)

    @pytest.mark.parametrize("url", [None, 42, b"memory://"])
    def test_non_string_url(self, url: Any) -> None:
        """A URL that is not a string is a ValidationError."""
        with pytest.raises(ValidationError) as info:
            open_store(url)
        assert info.value.path == "url"

    def test_context_manager_closes(self) -> None:
        """A store is a context manager; close() is safe on the memory store."""
        with open_store("memory://") as store:
            put(store, "r1")  # type: ignore[arg-type]
            assert store.count() == 1
        store.close()

    def test_repr_counts_referrals(self, filled: MemoryStore) -> None:
        """repr shows how many referrals are held, never their contents."""
        assert repr(filled) == "MemoryStore(<6 referrals>)"


def _desk_histories(count: int) -> list[tuple[Referral, list[ReferralEvent]]]:
    """``count`` synthetic referrals taken in, sent and accepted by a desk, read back from
    JSON (each with its own copy of every value, as a dump or a database gives them)."""
    from referralkit import Actor, FakeClock, ReferralDesk, Role, from_dict, synth, to_dict

    clock = FakeClock(synth.DEFAULT_START)
    scratch = MemoryStore()
    desk = ReferralDesk(scratch, clock=clock, new_id=synth.id_factory(4))
    actor = Actor("coord-1", {Role.COORDINATOR})
    for request in synth.population(count, 4):
        referral = desk.intake(actor, request)
        if referral.status is Status.DRAFT:
            desk.send(actor, referral.id)
    return [
        (from_dict(Referral, to_dict(r)), [from_dict(ReferralEvent, to_dict(e)) for e in es])
        for r, es in scratch.export()
    ]


class TestCompactEvents:
    """Events are kept packed (compact JSON, deflated when long) and rebuilt on read."""

    def test_short_and_long_changes_read_back_equal(self, store: MemoryStore) -> None:
        """A change small enough to stay plain text and one long enough to be deflated both
        read back equal, non-ASCII text, nested payloads and microseconds included."""
        referral = make("r1")
        short = events_for(referral, actor="Zoë Ørsted", payload={"note": "naïve ☃"})
        store.save(referral, short, 0)
        changed = attrs.evolve(referral, version=2)
        long = events_for(
            changed,
            3,
            at=T0 + dt.timedelta(microseconds=123_457),
            payload={"text": "x" * 2_000, "nested": {"list": [1, 2.5, None, True, "é"]}},
        )
        store.save(changed, long, 1)
        assert store.events("r1") == [*short, *long]
        packed = [change.data for change in store._events["r1"]]
        assert packed[0][:1] == b"["  # plain JSON
        assert packed[1][:1] != b"["  # deflated
        assert len(packed[1]) < 1_000
        assert "x" * 20 not in repr(store._events["r1"])  # the packed bytes show no values

    def test_packed_store_is_small(self) -> None:
        """40 desk-made referrals read back from JSON and restored, then dropped by the
        caller: the store holds under 10 KB of traced memory a referral (holding events as
        objects took over 20 KB)."""
        import gc
        import tracemalloc

        expected = sorted(_desk_histories(40), key=lambda h: h[0].id)
        store = MemoryStore()
        tracemalloc.start()
        try:
            histories = _desk_histories(40)
            store.restore_many(histories)
            del histories
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert [(r, list(es)) for r, es in store.export()] == expected
        assert held / len(expected) < 10_000, f"{held / len(expected):,.0f} B a referral"

    def test_providers_and_codes_are_shared(self) -> None:
        """Equal providers, codes and coverage decisions of different referrals are stored
        once; the snapshots still load equal to those saved."""
        histories = _desk_histories(12)
        store = MemoryStore()
        store.restore_many(histories)
        loaded = [store.load(r.id) for r, _ in histories]
        assert loaded == [r for r, _ in histories]
        referrers = {r.referring for r in loaded}
        assert len({id(p) for p in (r.referring for r in loaded)}) == len(referrers) < 12
        codes = [c for r in loaded for c in (*r.diagnoses, *r.services)]
        assert len({id(c) for c in codes}) == len(set(codes))
        decisions = [r.coverage_decision for r in loaded if r.coverage_decision is not None]
        assert len({id(d) for d in decisions}) == len(set(decisions)) < len(decisions)

    def test_export_unpacks_one_history_at_a_time(self) -> None:
        """Export lists the store under its lock and rebuilds each history as it is read: a
        writer may go on between two reads, and the export shows the state it started in."""
        store = MemoryStore()
        store.restore_many(_desk_histories(3))
        reading = store.export()
        first, _ = next(reading)
        put(store, "zzz-late")
        assert [r.id for r, _ in reading] == sorted(store._snapshots)[1:3]
        assert first.id == min(store._snapshots)

    def test_an_unhashable_value_is_kept_as_it_is(self) -> None:
        """Sharing looks values up by equality; one that cannot be hashed is kept unshared."""
        from referralkit.storage.memory import _kept

        table: dict[Any, Any] = {}
        listed = [1, 2]
        assert _kept(table, listed) is listed
        assert _kept(table, (1, 2)) == (1, 2)
        assert table == {(1, 2): (1, 2)}
