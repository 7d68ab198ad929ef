"""The sweep's stored keys: a sweep reads only the referrals changed since their last sweep
or with an alert due by now, and records exactly what a sweep over every open referral
records (a differential test, time passing in steps, with changes in between)."""

from __future__ import annotations

import datetime as dt

import pytest

import referralkit as rk
from referralkit import synth
from referralkit.storage import MemoryStore

ACTOR = rk.Actor("sweeper", {rk.Role.COORDINATOR})


def _recorded(desk: rk.ReferralDesk) -> dict[str, list[tuple[str, str]]]:
    """Each referral's recorded alert events: (type, rule)."""
    return {
        r.id: [
            (e.type, str(e.payload.get("rule_id", "")))
            for e in desk.store.events(r.id)
            if e.type.startswith("alert_")
        ]
        for r in desk.store.query()
    }


@pytest.mark.parametrize("url", ["memory://", "sqlite://:memory:"])
def test_keyed_sweep_records_what_a_full_sweep_records(
    url: str, request: pytest.FixtureRequest
) -> None:
    clock = rk.FakeClock(synth.DEFAULT_START)
    keyed = rk.ReferralDesk(rk.open_store(url), clock=clock, new_id=synth.id_factory(9))
    request.addfinalizer(keyed.close)  # closes its store (a SQLite connection)
    synth.simulate(keyed, ACTOR, clock, synth.population(80, 9), weeks=2, seed=9)
    full = rk.ReferralDesk(MemoryStore(), clock=clock)
    full.store.restore_many(list(keyed.store.export()))
    full._sweep_keys_usable = lambda *_: False  # type: ignore[method-assign]
    assert keyed._sweep_keys_usable(keyed.event_rules, clock.now())

    opened = len(keyed.store.query(rk.Query(open_only=True)))
    evaluated, later_alerts = [], 0
    for step, hours in enumerate([0, 0, 1, 30, 24 * 3, 24 * 10, 0, 24 * 40]):
        clock.advance(hours=hours)
        if step == 4:  # a change between sweeps: the changed referral is swept again
            some = keyed.store.query(rk.Query(open_only=True, limit=3))
            for referral in some:
                for desk in (keyed, full):
                    desk.assign(ACTOR, referral.id, "coord-9")
        a, b = keyed.sweep(ACTOR), full.sweep(ACTOR)
        assert sorted((x.referral_id, x.rule_id) for x in a.raised) == sorted(
            (x.referral_id, x.rule_id) for x in b.raised
        )
        assert len(a.cleared) == len(b.cleared)
        assert _recorded(keyed) == _recorded(full)
        evaluated.append(a.swept)
        later_alerts += len(a.raised) if step > 1 else 0
        assert a.swept <= b.swept
    assert evaluated[0] == opened  # the first sweep reads every open referral
    assert evaluated[1] == 0  # nothing new: nothing read, nothing written
    assert evaluated[6] == 0
    assert any(a > 0 for a in evaluated[2:])
    assert later_alerts > 0  # deadlines passed with no change, and the keyed sweep saw them


def test_sweep_keys_are_bookkeeping(request: pytest.FixtureRequest) -> None:
    """Setting a sweep key writes no event and needs the version read."""
    clock = rk.FakeClock(synth.DEFAULT_START)
    desk = rk.ReferralDesk(rk.open_store("sqlite://:memory:"), clock=clock)
    request.addfinalizer(desk.close)  # closes its store (a SQLite connection)
    made = desk.send(ACTOR, desk.intake(ACTOR, rk.testing.sample_request(complete=True)).id)
    store = desk.store
    assert store.set_sweep_due([]) == 0
    assert store.set_sweep_due([(made.id, made.version - 1, 5.0)]) == 0
    assert store.set_sweep_due([(made.id, made.version, 5.0), ("missing", 1, 5.0)]) == 1
    assert store.rank_page(rk.worklist.SWEEP_BUCKET, None, 5) == [(5.0, made.id)]
    assert store.events(made.id) == desk.history(ACTOR, made.id)
    assert store.load(made.id) == made
    assert MemoryStore().set_sweep_due([("x", 1, 1.0)]) == 0
    assert rk.storage.ReferralStore.set_sweep_due(MemoryStore(), [("x", 1, 1.0)]) == 0
    # a referral changed after a sweep is due again
    desk.assign(ACTOR, made.id, "coord-1")
    assert store.rank_page(rk.worklist.SWEEP_BUCKET, None, 5) == [
        (clock.now().timestamp(), made.id)
    ]
    later = clock.now() + dt.timedelta(days=1)
    assert desk.sweep(ACTOR, later).swept == 1
    assert desk.sweep(ACTOR, later).swept == 0
