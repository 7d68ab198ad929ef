"""Two sweeps in two processes over one SQLite file raise each alert once.

The sweep writes each referral's alerts with the version it read them at (optimistic
concurrency): the sweep that loses a race reads the referral again, finds the alert recorded
and writes nothing. Children start with the ``forkserver`` method (see sweep_workers.py).
"""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path

import pytest
import sweep_workers as sw

from referralkit import Actor, FakeClock, ReferralDesk, Role, open_store
from referralkit.rules.timeline import durable_available
from referralkit.testing import sample_request

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ENGINES = ["python"] + (["durable"] if durable_available() else [])


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_raise_each_alert_once(tmp_path: Path, engine: str) -> None:
    """Forty late referrals swept by two processes at once: one alert each, in all."""
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    clock = FakeClock(START)
    actor = Actor("c", {Role.COORDINATOR})
    with ReferralDesk(open_store(url), clock=clock) as desk:
        ids = [
            desk.send(actor, desk.intake(actor, sample_request(f"P-{i}")).id).id for i in range(40)
        ]
    later = START + dt.timedelta(days=60)
    ctx = sw.context()
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    children = [
        ctx.Process(target=sw.sweep, args=(url, later, engine, barrier, results)) for _ in range(2)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    results.close()
    results.join_thread()
    assert sum(raised for raised, _, _, _ in reports) == len(ids)
    assert sum(skipped for _, _, _, skipped in reports) == 0
    with ReferralDesk(open_store(url, create=False), clock=FakeClock(later)) as desk:
        counts = collections.Counter(
            (e.referral_id, e.payload["rule_id"])
            for i in ids
            for e in desk.history(actor, i)
            if e.type == "alert_raised"
        )
        assert counts == {(i, "not-scheduled-in-urgency-window"): 1 for i in ids}
        again = desk.sweep(actor)
        assert (again.raised, again.written) == ((), 0)
