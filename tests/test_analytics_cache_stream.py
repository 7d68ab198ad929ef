"""A cold cache's first frames are made a batch of histories at a time: the Python rows alive
at once are one batch's (``BLOCK_ROWS // 20`` referrals and as many histories of
events), not the population's (the first frame once held every row of the store as Python
tuples: 1,150 MB at 217,000 referrals), and the frames and the cache they fill are the same.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

pytest.importorskip("pandas", reason="the analytics extra is not installed")
pytest.importorskip("pyarrow", reason="the analytics extra is not installed")

import pandas as pd
import pyarrow as pa

from referralkit import FakeClock, MemoryStore, ReferralDesk, analytics, synth
from referralkit.analytics import _cache
from test_analytics_cache import ACTOR, KEY, frames_equal


def test_the_cache_fill_makes_arrow_a_batch_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(synth.DEFAULT_START)
    store = MemoryStore()
    desk = ReferralDesk(store, clock=clock, new_id=synth.id_factory(3))
    synth.simulate(desk, ACTOR, clock, synth.population(30, 3), weeks=3, seed=3)
    referrals = sum(1 for _ in store.referral_versions())
    monkeypatch.setattr(_cache, "BLOCK_ROWS", 40)  # batches of 2 referrals, 2 histories
    assert referrals > 4
    sizes: list[int] = []  # rows of each referral batch made Arrow
    histories: list[int] = []  # histories of each events batch
    arrow_rows = _cache.arrow_rows

    def spy(records: Any, columns: Any, kept: Any) -> Any:
        if columns is analytics.COLUMNS:
            sizes.append(len(records))
        else:
            histories.append(len({r[0] for r in records}))
        return arrow_rows(records, columns, kept)

    monkeypatch.setattr(_cache, "arrow_rows", spy)
    deid = analytics.Deidentifier(key=KEY)
    now: dt.datetime = clock.now()
    frames_equal(store, now, deid)  # cold: fills both caches
    assert max(sizes) <= 2
    assert sum(sizes) >= referrals
    assert max(histories) <= 2
    assert sum(histories) >= referrals
    blocks = store.read_analytics_blocks(_cache.referrals_name())
    assert blocks
    for block in blocks:  # a block of several batches' rows is one record batch
        assert len(list(pa.ipc.open_stream(block))) == 1
    assert store.read_analytics_blocks(_cache.events_name())
    sizes.clear()
    histories.clear()
    # warm: from the blocks, nothing replayed
    warm = analytics.referrals_frame(store, as_of=now, deidentify=deid)
    warm_events = analytics.events_frame(store, as_of=now, deidentify=deid)
    assert not sizes
    assert not histories
    replayed = analytics.referrals_frame(store, as_of=now, deidentify=deid, cache=False)
    pd.testing.assert_frame_equal(warm, replayed)
    replayed = analytics.events_frame(store, as_of=now, deidentify=deid, cache=False)
    pd.testing.assert_frame_equal(warm_events, replayed)
