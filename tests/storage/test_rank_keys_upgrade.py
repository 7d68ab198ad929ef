"""A PostgreSQL schema written before the worklist's rank keys existed gets them on upgrade
(the SQLite file's case is in tests/test_worklist_keys.py)."""

from __future__ import annotations

import pytest

try:
    import psycopg  # noqa: F401
except ImportError:  # pragma: no cover - the postgres extra is installed in CI
    pytest.skip("psycopg is not installed (the postgres extra)", allow_module_level=True)

import referralkit as rk
from referralkit import synth
from referralkit.storage import upgrade
from referralkit.storage.postgres import SCHEMA_VERSION, PostgresStore
from referralkit.worklist import assess, rank, rank_entries

ACTOR = rk.Actor("keys", {rk.Role.COORDINATOR})


def _stored(store: rk.ReferralStore) -> dict[str, set[tuple[int, float]]]:
    found: dict[str, set[tuple[int, float]]] = {}
    for bucket in store.rank_buckets():
        for key, referral_id in store.rank_page(bucket, None, 10_000):
            found.setdefault(referral_id, set()).add((bucket, key))
    return found


def test_version_3_schema_gets_its_rank_keys(postgres_schema: str) -> None:
    clock = rk.FakeClock(synth.DEFAULT_START)
    store = PostgresStore(postgres_schema, migrate=False)
    assert store.upgrade(target=3) == 3
    assert not store.keeps_rank_keys
    desk = rk.ReferralDesk(store, clock=clock, new_id=synth.id_factory(5))
    synth.simulate(desk, ACTOR, clock, synth.population(30, 5), weeks=3, seed=5)
    # no rank keys yet, nor the access log a desk's audited reads need (schema 6): the full
    # ranking, from the store's histories
    before = rank(
        (
            assess(r, events, clock.now())
            for r, events in store.export()
            if not r.status.is_terminal
        ),
        limit=8,
    )
    store.close()

    assert upgrade(postgres_schema) == (3, SCHEMA_VERSION)
    with PostgresStore(postgres_schema) as upgraded:
        assert upgraded.keeps_rank_keys
        expected = {
            r.id: {(e.bucket, e.sort_key) for e in rank_entries(r, events)}
            for r, events in upgraded.export()
            if not r.status.is_terminal
        }
        assert expected
        assert _stored(upgraded) == expected
        assert rk.ReferralDesk(upgraded, clock=clock).worklist(ACTOR, limit=8) == before


def test_sweep_keys_on_postgres(postgres_schema: str) -> None:
    """The sweep reads only what is due on PostgreSQL too, and its bookkeeping checks the
    version."""
    clock = rk.FakeClock(synth.DEFAULT_START)
    with PostgresStore(postgres_schema) as store:
        desk = rk.ReferralDesk(store, clock=clock, new_id=synth.id_factory(6))
        synth.simulate(desk, ACTOR, clock, synth.population(20, 6), weeks=2, seed=6)
        opened = store.count(rk.Query(open_only=True))
        assert desk.sweep(ACTOR).swept == opened
        assert desk.sweep(ACTOR).swept == 0
        made = store.query(rk.Query(open_only=True, limit=1))[0]
        assert store.set_sweep_due([(made.id, made.version + 1, 1.0)]) == 0
        assert store.set_sweep_due([(made.id, made.version, 1.0)]) == 1
        assert desk.sweep(ACTOR).swept == 1
