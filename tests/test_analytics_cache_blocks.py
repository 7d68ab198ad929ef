"""The events' cache when one write's rows of a referral run on from one block into the next
(a write is cut into blocks of ``BLOCK_ROWS`` rows wherever the rows fall): the warm events
frame and the warm Parquet export keep every row of such a referral, as the replay does (they
once kept only the later block's part: 194 of 1.69 million rows were missing from a warm
export at 100,000 referrals), and a later write of a referral still replaces the earlier one.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest

pytest.importorskip("pandas", reason="the analytics extra is not installed")
pytest.importorskip("pyarrow", reason="the analytics extra is not installed")

from referralkit import (
    ReferralDesk,
    analytics,
)
from referralkit.analytics import _cache
from referralkit.errors import ReferralKitError
from test_analytics_cache import ACTOR, KEY, export_equal, frames_equal, kpis_tests

PLAN = [(i % 4, op, 5 + i % 13) for i, op in enumerate(sorted(kpis_tests.OPERATIONS) * 2)]


@pytest.mark.parametrize("rows", [3, 4, 7])
def test_a_referral_across_two_blocks_keeps_all_its_rows(
    rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, clock = kpis_tests.build(PLAN)
    histories = [len(events) for events in store.event_histories()]
    assert max(histories) > rows  # some history is cut across blocks
    monkeypatch.setattr(_cache, "BLOCK_ROWS", rows)
    deid = analytics.Deidentifier(key=KEY)
    now: dt.datetime = clock.now()
    written = export_equal(store, now, deid)  # fills the events' cache in small blocks
    assert len(store.read_analytics_blocks(_cache.events_name()) or []) > 2
    assert export_equal(store, now, deid) == written  # warm: from the blocks
    frames_equal(store, now, deid)
    # a later write of some referrals (changed since) replaces their earlier rows
    desk = ReferralDesk(store, clock=clock)
    before = dict(store.referral_versions())
    for referral_id in sorted(before)[:3]:
        for operation in ("send", "accept", "hold", "resume", "cancel_appointment", "complete"):
            clock.advance(hours=3)
            with contextlib.suppress(ReferralKitError):
                kpis_tests.OPERATIONS[operation](desk, ACTOR, referral_id, clock)
    assert dict(store.referral_versions()) != before
    export_equal(store, clock.now(), deid)  # replays the changed ones, adds their blocks
    export_equal(store, clock.now(), deid)
    frames_equal(store, clock.now(), deid)
