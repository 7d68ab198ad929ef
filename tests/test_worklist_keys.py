"""The worklist's stored rank keys: the head read off them is the full ranking's head.

:func:`referralkit.worklist.ranked_head` merges the stores' rank keys bucket by bucket and
assesses only the referrals that may still belong in the head. These tests drive it with the
smallest pages and batches (so the stopping rule, not a first batch that happens to hold
everything, decides what is read) over simulated referrals at many instants, and compare with
:func:`referralkit.worklist.rank` over every referral assessed in full; and check that a store
written before the rank keys existed gets them on upgrade.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import referralkit as rk
from referralkit import synth
from referralkit.clocks import ClockState
from referralkit.errors import ValidationError
from referralkit.storage import MemoryStore, ReferralStore
from referralkit.storage.sqlite import SCHEMA_VERSION, SQLiteStore
from referralkit.worklist import (
    FROZEN_BUCKET,
    NO_CLOCK_BUCKET,
    SWEEP_BUCKET,
    RankEntry,
    WorklistFilter,
    WorklistItem,
    assess,
    rank,
    rank_entries,
    ranked_head,
)

ACTOR = rk.Actor("keys", {rk.Role.COORDINATOR})


@pytest.fixture(scope="module")
def simulated() -> tuple[MemoryStore, dt.datetime]:
    clock = rk.FakeClock(synth.DEFAULT_START)
    desk = rk.ReferralDesk(MemoryStore(), clock=clock, new_id=synth.id_factory(7))
    synth.simulate(desk, ACTOR, clock, synth.population(160, 7), weeks=4, seed=7)
    assert isinstance(desk.store, MemoryStore)
    return desk.store, clock.now()


def _head(
    store: ReferralStore,
    as_of: dt.datetime,
    limit: int,
    where: WorklistFilter | None = None,
    *,
    batch: int = 1,
    page_size: int = 2,
    heads: bool = False,
) -> tuple[list[WorklistItem], int]:
    read: list[str] = []
    pages: list[int] = []

    def page(bucket: int, after: tuple[float, str] | None, n: int) -> list[tuple[float, str]]:
        assert not heads or after is not None  # first pages come from rank_heads
        pages.append(bucket)
        return store.rank_page(bucket, after, n)

    def assess_ids(ids: Sequence[str]) -> Iterator[WorklistItem]:
        read.extend(ids)
        for referral_id in ids:
            yield assess(store.load(referral_id), store.events(referral_id), as_of)

    first = store.rank_heads(page_size) if heads else None
    found = ranked_head(
        first if first is not None else store.rank_buckets(),
        page,
        assess_ids,
        as_of,
        limit,
        where=where,
        page_size=page_size,
        batch=batch,
        first_pages=first,
    )
    assert len(read) == len(set(read))  # each referral assessed once
    return found, len(read)


def _everything(store: ReferralStore, as_of: dt.datetime) -> list[WorklistItem]:
    return rank(assess(r, events, as_of) for r, events in store.export())


@pytest.mark.parametrize("hours", [0, 1, 7, 30, 24 * 5, 24 * 20, 24 * 200])
def test_head_is_the_full_rankings_head(
    simulated: tuple[MemoryStore, dt.datetime], hours: int
) -> None:
    store, now = simulated
    as_of = now + dt.timedelta(hours=hours)
    everything = _everything(store, as_of)
    assert len(everything) > 60
    for limit in (1, 5, 20, 50):
        head, read = _head(store, as_of, limit)
        assert head == everything[:limit]
        assert read < len(everything)  # bounded: not every open referral was assessed
    head, _ = _head(store, as_of, 10, batch=16, page_size=64)
    assert head == everything[:10]
    head, _ = _head(store, as_of, 10_000)
    assert head == everything
    # from every bucket's first page read at once (rank_heads), as the desk reads them
    for limit, page_size in ((1, 1), (7, 2), (50, 64), (10_000, 3)):
        head, _ = _head(store, as_of, limit, page_size=page_size, heads=True)
        assert head == everything[:limit]


def test_head_with_filters(simulated: tuple[MemoryStore, dt.datetime]) -> None:
    store, now = simulated
    as_of = now + dt.timedelta(days=3)
    everything = _everything(store, as_of)
    for where in (
        WorklistFilter(unassigned=True),
        WorklistFilter(cause=rk.Cause.INSURANCE),
        WorklistFilter(specialty="cardiology"),
    ):
        head, _ = _head(store, as_of, 7, where)
        assert head == [i for i in everything if where(i)][:7]


def test_no_head_and_empty_store() -> None:
    store = MemoryStore()
    when = synth.DEFAULT_START
    assert ranked_head(store.rank_buckets(), store.rank_page, lambda ids: [], when, 5) == []
    for bad in (-1, True, 2.0):
        with pytest.raises(ValidationError, match="limit"):
            ranked_head([], store.rank_page, lambda ids: [], when, bad)  # type: ignore[arg-type]


def test_entries_by_state(simulated: tuple[MemoryStore, dt.datetime]) -> None:
    """Closed: none; no running clock: the priority; paused: the fraction left."""
    store, _ = simulated
    kinds = set()
    for referral, events in store.export():
        entries = rank_entries(referral, events)
        assert list(entries) == sorted(entries)
        assert len({e.bucket for e in entries}) == len(entries)
        if referral.status.is_terminal:
            assert entries == ()
            kinds.add("closed")
            continue
        # every open referral: due for the sweep from its last change
        assert entries[0] == RankEntry(SWEEP_BUCKET, referral.updated_at.timestamp())
        if entries[1].bucket == NO_CLOCK_BUCKET:
            assert entries[1:] == (RankEntry(NO_CLOCK_BUCKET, -referral.effective_priority.rank),)
            kinds.add("no clock")
        else:
            kinds.add("clock")
    assert kinds == {"closed", "no clock", "clock"}


def test_paused_clock_is_frozen() -> None:
    clock = rk.FakeClock(synth.DEFAULT_START)
    desk = rk.ReferralDesk(MemoryStore(), clock=clock)
    made = desk.send(ACTOR, desk.intake(ACTOR, rk.testing.sample_request(complete=True)).id)
    desk.accept(ACTOR, made.id)
    clock.advance(hours=3)
    held = desk.hold(ACTOR, made.id, "patient: travelling")
    entries = rank_entries(held, desk.history(ACTOR, made.id))
    assert FROZEN_BUCKET in {e.bucket for e in entries}
    frozen = next(e.sort_key for e in entries if e.bucket == FROZEN_BUCKET)
    later = desk.assess(ACTOR, made.id, as_of=clock.now() + dt.timedelta(days=30))
    assert min(c.fraction_remaining for c in later.clocks if c.state is ClockState.PAUSED) == (
        pytest.approx(frozen)
    )


def test_sqlite_file_written_before_rank_keys_upgrades(tmp_path: Path) -> None:
    """A file at schema version 3 (no rank keys) gets every open referral's rank keys on
    upgrade, and the desk's ranked worklist reads them; until then the desk assesses every
    referral."""
    path = tmp_path / "old.db"
    clock = rk.FakeClock(synth.DEFAULT_START)
    store = SQLiteStore(path, migrate=False)
    store.upgrade(target=3)
    assert not store.keeps_rank_keys
    desk = rk.ReferralDesk(store, clock=clock, new_id=synth.id_factory(3))
    synth.simulate(desk, ACTOR, clock, synth.population(40, 3), weeks=3, seed=3)
    # (a desk's audited reads need the access log of schema 6: the order before the upgrade
    # is the full ranking, computed from the store's histories)
    before = rank(
        (
            assess(r, events, clock.now())
            for r, events in store.export()
            if not r.status.is_terminal
        ),
        limit=10,
    )
    store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3

    with SQLiteStore(path) as upgraded:
        assert upgraded.schema_version() == SCHEMA_VERSION
        assert upgraded.keeps_rank_keys
        stored: dict[str, set[tuple[int, float]]] = {}
        for bucket in upgraded.rank_buckets():
            for key, referral_id in upgraded.rank_page(bucket, None, 10_000):
                stored.setdefault(referral_id, set()).add((bucket, key))
        expected = {
            r.id: {(e.bucket, e.sort_key) for e in rank_entries(r, events)}
            for r, events in upgraded.export()
            if not r.status.is_terminal
        }
        assert stored == expected
        after = rk.ReferralDesk(upgraded, clock=clock).worklist(ACTOR, limit=10)
        assert after == before


def test_port_defaults_compute_what_the_memory_store_keeps(
    simulated: tuple[MemoryStore, dt.datetime],
) -> None:
    """The port's defaults (for adapters that keep no rank keys) compute the keys from the
    histories: the same as the memory store keeps."""
    store, _ = simulated
    assert dict(ReferralStore._rank_keys(store)) == dict(store._rank_keys())
    assert ReferralStore.latest_update(store) == store.latest_update()
    assert not ReferralStore.keeps_rank_keys


def test_the_clocks_events_alone_give_the_rank_keys_and_clocks(
    simulated: tuple[MemoryStore, dt.datetime],
) -> None:
    """A referral's events of TIMELINE_EVENT_TYPES give the same clocks and rank keys as its
    whole history (what the sweep computes the keys it writes from), and the other types
    are not read at all."""
    store, end = simulated
    other = 0
    for referral, history in store.export():
        chosen = [e for e in history if e.type in rk.clocks.TIMELINE_EVENT_TYPES]
        other += len(history) - len(chosen)
        assert rank_entries(referral, chosen) == rank_entries(referral, history)
        for as_of in (referral.updated_at, end + dt.timedelta(days=9)):
            assert rk.clocks.read_clocks(referral, chosen, as_of) == rk.clocks.read_clocks(
                referral, history, as_of
            )
    assert other  # the simulation writes events the clocks do not read


def test_the_desks_ranked_head_reads_the_clocks_events_alone(
    simulated: tuple[MemoryStore, dt.datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The desk's worklist from the stored rank keys reads of each candidate's history only
    the events of TIMELINE_EVENT_TYPES, and its rows are those of the whole histories."""
    store, now = simulated
    copy = MemoryStore()
    copy.restore_many(list(store.export()))
    desk = rk.ReferralDesk(copy, clock=rk.FakeClock(now))
    asked: list[frozenset[str]] = []
    real = copy.histories_selected

    def selected(ids: Sequence[str], event_types: Sequence[str]) -> Any:
        asked.append(frozenset(event_types))
        return real(ids, event_types)

    monkeypatch.setattr(copy, "histories_selected", selected)
    head = desk.worklist(ACTOR, limit=20)
    assert asked
    assert set(asked) == {rk.clocks.TIMELINE_EVENT_TYPES}
    assert head == _everything(store, now)[:20]
    assert desk.worklist(ACTOR, limit=20) == head  # from the cache of parsed histories
