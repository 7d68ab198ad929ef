"""Wrong arguments are ValidationErrors naming the argument, the same in every store.

A ``Referral`` passed where its id belongs, ``None``, a number, bytes, a list, text no store can
keep: every store method refuses it before the driver sees it (the SQLite driver used to
answer ``StorageError: SQLite failed while reading (ProgrammingError)``), with the argument's
name as the error's path, without repeating the value, and writes nothing. Times in any zone
are the same instant everywhere: queries and claims give the same answers.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referralkit import (
    Actor,
    FakeClock,
    MemoryStore,
    Query,
    Referral,
    ReferralDesk,
    ReferralEvent,
    Role,
    ValidationError,
)
from referralkit.storage import ReferralStore, open_store
from referralkit.testing import sample_request

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
ACTOR = Actor("coord-1", {Role.COORDINATOR})
LEASE = dt.timedelta(hours=1)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[ReferralStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = (
        f"sqlite:///{tmp_path / 'args.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_schema")
    )
    with open_store(url) as opened:
        yield opened


@pytest.fixture
def desk(store: ReferralStore) -> ReferralDesk:
    counter = itertools.count(1)
    return ReferralDesk(store, clock=FakeClock(START), new_id=lambda: f"r-{next(counter)}")


@pytest.fixture
def made(desk: ReferralDesk) -> Referral:
    return desk.intake(ACTOR, sample_request())


NOT_IDS: list[Any] = [None, 17, 1.5, b"r-1", ["r-1"], {"id": "r-1"}, "r-\x00", "r-\ud800"]
NOT_ID_NAMES = ["None", "int", "float", "bytes", "list", "dict", "nul", "surrogate"]


def refused(call: Callable[[], Any], path: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        call()
    assert info.value.path == path, str(info.value)
    return info.value


class TestIdsAreIds:
    def test_a_referral_where_its_id_belongs(
        self, store: ReferralStore, desk: ReferralDesk, made: Referral
    ) -> None:
        """The reported case: a Referral given as the id, to the store and to the desk."""
        error = refused(lambda: store.load(made), "referral_id")  # type: ignore[arg-type]
        assert "Referral" in error.reason
        refused(lambda: store.events(made), "referral_id")  # type: ignore[arg-type]
        refused(lambda: desk.get(ACTOR, made), "referral_id")  # type: ignore[arg-type]
        refused(lambda: desk.history(ACTOR, made), "referral_id")  # type: ignore[arg-type]
        refused(lambda: desk.send(ACTOR, made), "referral_id")  # type: ignore[arg-type]
        refused(lambda: desk.hold(ACTOR, made, "waiting"), "referral_id")  # type: ignore[arg-type]
        assert store.load(made.id) == made

    @pytest.mark.parametrize("bad", NOT_IDS, ids=NOT_ID_NAMES)
    def test_every_lookup(self, store: ReferralStore, made: Referral, bad: Any) -> None:
        """load, events, find_source, renew and release refuse anything but an id string."""
        refused(lambda: store.load(bad), "referral_id")
        refused(lambda: store.events(bad), "referral_id")
        refused(lambda: store.find_source(bad), "source_id")
        refused(lambda: store.renew("c1", ["ok", bad], now=START, lease=LEASE), "ids[1]")
        refused(lambda: store.release("c1", [bad]), "ids[0]")
        assert store.load(made.id) == made

    @pytest.mark.parametrize("bad", NOT_IDS, ids=NOT_ID_NAMES)
    def test_every_desk_operation(self, desk: ReferralDesk, made: Referral, bad: Any) -> None:
        """The desk checks the id before the store sees it (after the permission)."""
        for call in (
            lambda: desk.get(ACTOR, bad),
            lambda: desk.history(ACTOR, bad),
            lambda: desk.missing(ACTOR, bad),
            lambda: desk.send(ACTOR, bad),
            lambda: desk.decline(ACTOR, bad, "not ours"),
            lambda: desk.schedule(ACTOR, bad, START + dt.timedelta(days=3)),
            lambda: desk.attach(ACTOR, bad, "lab"),  # type: ignore[arg-type]
            lambda: desk.assign(ACTOR, bad, "coord-2"),
        ):
            refused(call, "referral_id")
        assert desk.get(ACTOR, made.id) == made

    def test_unknown_but_well_formed_ids_are_not_found(self, store: ReferralStore) -> None:
        """Sanity: an id that is only absent is still a NotFoundError, not a ValidationError."""
        from referralkit import NotFoundError

        with pytest.raises(NotFoundError):
            store.load("no-such-referral")
        assert store.find_source("no-such-source") is None
        assert store.renew("c1", ["no-such"], now=START, lease=LEASE) == []


class TestOtherArguments:
    @pytest.mark.parametrize("bad", [None, "open", {"open_only": True}, 3])
    def test_queries(self, store: ReferralStore, bad: Any) -> None:
        """query and count want a Query; claim wants a Query or None."""
        refused(lambda: store.query(bad), "query")
        refused(lambda: store.count(bad), "query")
        if bad is not None:
            refused(lambda: store.claim("c1", 1, now=START, lease=LEASE, query=bad), "query")

    @pytest.mark.parametrize(
        ("field", "value"),
        [("patient_id", 17), ("owner", ["c1"]), ("specialty", "a\x00"), ("limit", -1)],
    )
    def test_query_fields(self, field: str, value: Any) -> None:
        """Query checks its fields (the stores bind them as SQL parameters)."""
        refused(lambda: Query(**{field: value}), field)

    def test_changes(self, store: ReferralStore, made: Referral) -> None:
        """save and save_many name the part of a change that is not what it should be."""
        events = store.events(made.id)
        nxt = attrs.evolve(made, version=2)
        event = ReferralEvent(made.id, 2, 0, START, "c", "owner_assigned", {"owner": "x"})
        refused(lambda: store.save(made.id, events, 0), "referral")  # type: ignore[arg-type]
        refused(lambda: store.save(nxt, event, 1), "events")  # type: ignore[arg-type]
        refused(lambda: store.save(nxt, [event, "x"], 1), "events[1]")  # type: ignore[list-item]
        refused(lambda: store.save(nxt, [event], "1"), "expected_version")  # type: ignore[arg-type]
        refused(lambda: store.save_many(nxt), "changes")  # type: ignore[arg-type]
        refused(lambda: store.save_many([(nxt, [event])]), "changes[0]")  # type: ignore[list-item]
        refused(lambda: store.restore_many([made]), "histories[0]")  # type: ignore[list-item]
        refused(lambda: store.restore_many("histories"), "histories")  # type: ignore[arg-type]
        assert store.load(made.id) == made
        assert store.events(made.id) == events

    @pytest.mark.parametrize(
        ("kwargs", "path"),
        [
            ({"owner": None}, "owner"),
            ({"owner": "c\x00"}, "owner"),
            ({"now": dt.datetime(2026, 1, 5, 9)}, "now"),
            ({"now": "2026-01-05T09:00Z"}, "now"),
            ({"lease": 3600}, "lease"),
            ({"count": "1"}, "count"),
            ({"count": 2**64}, "count"),
        ],
    )
    def test_claims(self, store: ReferralStore, kwargs: dict[str, Any], path: str) -> None:
        """claim checks owner, now (aware), lease and count."""
        args = {"owner": "c1", "count": 1, "now": START, "lease": LEASE} | kwargs
        refused(lambda: store.claim(**args), path)


ZONES = st.sampled_from(
    [dt.timezone(dt.timedelta(minutes=m)) for m in (-720, -300, 0, 330, 345, 840)]
)


class TestAnyZoneIsTheSameInstant:
    def test_queries_and_claims(self, store: ReferralStore, desk: ReferralDesk) -> None:
        """Query times and claim times in any zone give the answers their UTC instant gives;
        the Query itself is equal to the UTC one."""
        for _ in range(3):
            desk.send(ACTOR, desk.intake(ACTOR, sample_request(f"REQ-{_}")).id)
            desk.clock.advance(hours=5)  # type: ignore[attr-defined]

        @settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
        @given(
            offset=st.integers(-3 * 24 * 60, 30 * 24 * 60),
            zone=ZONES,
        )
        def check(offset: int, zone: dt.tzinfo) -> None:
            instant = START + dt.timedelta(minutes=offset)
            zoned = Query(updated_since=instant.astimezone(zone), due_before=instant)
            plain = Query(updated_since=instant, due_before=instant.astimezone(zone))
            assert zoned == Query(updated_since=instant, due_before=instant)
            assert [r.id for r in store.query(zoned)] == [r.id for r in store.query(plain)]
            assert store.count(zoned) == store.count(plain)

        check()
        later = START + dt.timedelta(days=40)
        taken = store.claim(
            "c1", 2, now=later.astimezone(dt.timezone(dt.timedelta(hours=-8))), lease=LEASE
        )
        assert len(taken) == 2
        # the lease ends at the same instant whatever zone renew is given
        assert (
            store.renew(
                "c1", taken, now=later.astimezone(dt.timezone(dt.timedelta(hours=9))), lease=LEASE
            )
            == taken
        )
        others = store.claim("c2", 5, now=later + LEASE - dt.timedelta(seconds=1), lease=LEASE)
        assert len(others) == 1
        assert not set(others) & set(taken)
