"""The analytics cache's storage methods on PostgreSQL (SQLite's are in
tests/test_analytics_cache.py): blocks kept in order, replaced, versions in id order, and a
de-identified frame through the cache equal to the replayed one."""

from __future__ import annotations

import datetime as dt

import pytest

from referralkit import Actor, FakeClock, ReferralDesk, Role, open_store
from referralkit.errors import ValidationError
from referralkit.testing import sample_request


def test_blocks_versions_and_frames(postgres_schema: str) -> None:
    store = open_store(postgres_schema)
    try:
        assert store.read_analytics_blocks("x") == []
        assert store.write_analytics_blocks("x", [b"a", b"b"])
        assert store.write_analytics_blocks("x", [b"c"])
        assert store.read_analytics_blocks("x") == [b"a", b"b", b"c"]
        assert store.write_analytics_blocks("x", [b"d"], replace=True)
        assert store.read_analytics_blocks("x") == [b"d"]
        assert store.read_analytics_blocks("y") == []
        with pytest.raises(ValidationError):
            store.write_analytics_blocks("x", ["text"])  # type: ignore[list-item]

        clock = FakeClock(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC))
        desk = ReferralDesk(store, clock=clock)
        actor = Actor("coord-1", {Role.COORDINATOR})
        ids = [desk.intake(actor, sample_request(f"REQ-{n}")).id for n in range(3)]
        clock.advance(hours=2)
        desk.send(actor, ids[1])
        assert list(store.referral_versions()) == sorted((r.id, r.version) for r in store.query())

        pd = pytest.importorskip("pandas", reason="the analytics extra is not installed")
        pytest.importorskip("pyarrow", reason="the analytics extra is not installed")
        from referralkit import analytics
        from referralkit.analytics import _cache

        deid = analytics.Deidentifier(key=b"postgres-cache-key-0123456789!!!")
        for _ in range(2):
            cached = analytics.referrals_frame(store, as_of=clock.now(), deidentify=deid)
            replayed = analytics.referrals_frame(
                store, as_of=clock.now(), deidentify=deid, cache=False
            )
            pd.testing.assert_frame_equal(cached, replayed)
            events = analytics.events_frame(store, as_of=clock.now(), deidentify=deid)
            pd.testing.assert_frame_equal(
                events,
                analytics.events_frame(store, as_of=clock.now(), deidentify=deid, cache=False),
            )
        assert len(store.read_analytics_blocks(_cache.referrals_name()) or []) == 1
    finally:
        store.close()


def test_an_older_schema_upgrades(postgres_schema: str) -> None:
    from referralkit.storage.postgres import SCHEMA_VERSION, PostgresStore

    store = PostgresStore(postgres_schema, migrate=False)
    try:
        assert store.upgrade(3) == 3
        assert store.upgrade() == SCHEMA_VERSION
        assert store.read_analytics_blocks("x") == []
    finally:
        store.close()
