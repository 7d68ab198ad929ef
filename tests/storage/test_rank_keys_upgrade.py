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
from referralkit.worklist import rank_entries

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
    # no audited read here: schema 3 has no access log, which an audited read needs
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
        desk = rk.ReferralDesk(upgraded, clock=clock)
        before = desk.worklist(ACTOR)[:8]  # no limit: every referral assessed, no rank keys
        assert desk.worklist(ACTOR, limit=8) == before
