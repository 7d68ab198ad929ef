"""Reliability under real concurrency and real crashes, sized for CI (figures in the run's
summary, see conftest.py):

- **contention**: 8 processes plus 4 threads make 250 changes each on 10 hot referrals;
  every acknowledged change is stored exactly once (lost updates 0), versions run without a
  gap, and the conflicts surfaced as ConcurrencyError (the writers retried them);
- **claims**: 2,000 referrals shared by 8 coordinator processes; none is claimed twice or
  never, and the referrals of a coordinator killed (SIGKILL) in mid-run go to the others
  once its lease has ended (time is injected, so nobody waits for the lease);
- **crashes**: 50 ``kill -9`` of a process writing batches to a SQLite file; afterwards no
  torn referral (a snapshot version without its events, or events beyond it), nothing
  acknowledged is missing, ``PRAGMA integrity_check`` is ok, and every snapshot equals the
  replay of its events.

Child processes start with the ``forkserver`` method (see reliability_workers.py).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import reliability_workers as rw

from referralkit import Query, ValidationError
from referralkit.events import replay
from referralkit.storage import ReferralStore, check_history, open_store

PROCESSES = 8
THREADS = 4
CHANGES = 250
HOT = 10
ITEMS = 2_000
COORDINATORS = 8
KILLS = 50
LEASE_SECONDS = 300.0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL of each durable adapter: a SQLite file, a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reliability.db'}"
    else:
        yield request.getfixturevalue("postgres_schema")


def backend(url: str) -> str:
    return url.split(":", 1)[0]


@pytest.mark.slow
def test_contention_loses_no_update(url: str, figures: Any) -> None:
    """8 processes + 4 threads × 250 changes on 10 hot referrals: nothing lost or doubled."""
    started = time.perf_counter()
    with open_store(url) as store:
        hot = rw.seed_store(store, HOT, "hot")
        base_version = store.load(hot[0]).version
        start_at = time.time() + 1.5  # every worker running before the first change
        with (
            ProcessPoolExecutor(PROCESSES, mp_context=rw.context()) as processes,
            ThreadPoolExecutor(THREADS) as threads,
        ):
            futures = [
                processes.submit(rw.contend, url, hot, f"p{k}", CHANGES, k, start_at)
                for k in range(PROCESSES)
            ] + [
                threads.submit(rw.contend_on, store, hot, f"t{k}", CHANGES, 100 + k, start_at)
                for k in range(THREADS)
            ]
            results = [f.result(timeout=600) for f in futures]
        acknowledged = [marker for markers, _ in results for marker in markers]
        conflicts = sum(n for _, n in results)

        stored: list[str] = []
        gaps = mismatched = 0
        increments = 0
        for referral_id in hot:
            snapshot, events = store.load(referral_id), store.events(referral_id)
            versions = sorted({e.version for e in events})
            gaps += versions != list(range(1, snapshot.version + 1))
            mismatched += replay(events) != snapshot
            increments += snapshot.version - base_version
            stored += [e.payload["owner"] for e in events if e.type == "owner_assigned"]

    lost = len(set(acknowledged) - set(stored))
    phantom = len(set(stored) - set(acknowledged))
    doubled = len(stored) - len(set(stored))
    figures(
        f"contention[{backend(url)}]",
        writers=f"{PROCESSES} processes + {THREADS} threads",
        changes_acknowledged=len(acknowledged),
        version_increments=increments,
        conflicts_surfaced=conflicts,
        lost_updates=lost,
        phantom_or_doubled=phantom + doubled,
        version_gaps=gaps,
        replay_mismatches=mismatched,
        seconds=round(time.perf_counter() - started, 1),
    )
    assert len(acknowledged) == (PROCESSES + THREADS) * CHANGES
    assert increments == len(acknowledged)
    assert (lost, phantom, doubled, gaps, mismatched) == (0, 0, 0, 0, 0)
    assert conflicts > 0  # the writers did meet, and were told so


@pytest.mark.slow
def test_claims_share_the_work_and_survive_a_killed_coordinator(url: str, figures: Any) -> None:
    """2,000 referrals, 8 coordinators, one killed mid-run: every referral is claimed and
    handled exactly once by a live coordinator; the killed one's come back after its lease."""
    started = time.perf_counter()
    now = rw.START
    later = now + dt.timedelta(seconds=LEASE_SECONDS + 1)
    ctx = rw.context()
    with open_store(url) as store:
        items = rw.seed_store(store, ITEMS)
        report = ctx.Queue()
        doomed = ctx.Process(
            target=rw.claim_and_hang, args=(url, "doomed", now, LEASE_SECONDS, 10, report)
        )
        doomed.start()
        dead_items = report.get(timeout=60)  # it holds ten leases and will never finish
        with ProcessPoolExecutor(COORDINATORS - 1, mp_context=ctx) as pool:
            live = [f"c{k}" for k in range(1, COORDINATORS)]
            start_at = time.time() + 1.5
            first = [
                pool.submit(rw.coordinate, url, owner, now, LEASE_SECONDS, 5, start_at)
                for owner in live
            ]
            time.sleep(max(0.0, start_at - time.time()) + 0.05)  # the others are at work
            assert doomed.pid is not None
            os.kill(doomed.pid, signal.SIGKILL)
            working_at_kill = sum(not f.done() for f in first)
            doomed.join()
            phase_one = {owner: f.result(timeout=600) for owner, f in zip(live, first, strict=True)}
            # the killed coordinator's lease ends: the others find its referrals again
            second = [
                pool.submit(rw.coordinate, url, owner, later, LEASE_SECONDS, 5, 0.0)
                for owner in live
            ]
            phase_two = {
                owner: f.result(timeout=600) for owner, f in zip(live, second, strict=True)
            }

        claims = Counter(i for ids in (*phase_one.values(), *phase_two.values()) for i in ids)
        claims.update(dead_items)
        dead = set(dead_items)
        claimed_twice = sum(1 for i, n in claims.items() if n > (2 if i in dead else 1))
        never_claimed = len(set(items) - set(claims))
        came_back = {i for ids in phase_two.values() for i in ids}
        handled: Counter[int] = Counter()
        handlers_ok = True
        last_claimer = {i: owner for owner, ids in phase_one.items() for i in ids}
        last_claimer |= {i: owner for owner, ids in phase_two.items() for i in ids}
        for snapshot, events in store.export():
            declines = [e for e in events if e.payload.get("event") == "decline"]
            handled[len(declines)] += 1
            handlers_ok &= all(e.actor == last_claimer.get(snapshot.id) for e in declines)
        still_open = store.count(Query(open_only=True))

    figures(
        f"claims[{backend(url)}]",
        items=ITEMS,
        coordinators=f"{COORDINATORS} processes, 1 killed with SIGKILL after claiming",
        claimed_twice=claimed_twice,
        never_claimed=never_claimed,
        killed_coordinators_items=len(dead),
        coordinators_working_at_kill=working_at_kill,
        reclaimed_after_lease=len(came_back & dead),
        handled_exactly_once=handled[1],
        still_open=still_open,
        seconds=round(time.perf_counter() - started, 1),
    )
    assert len(dead) == 10
    assert working_at_kill > 0  # killed mid-run, not after the others had finished
    assert doomed.exitcode == -signal.SIGKILL
    assert claimed_twice == never_claimed == 0
    assert came_back == dead  # only the killed coordinator's referrals came back
    assert dead.isdisjoint(i for ids in phase_one.values() for i in ids)
    assert handled == Counter({1: ITEMS})
    assert handlers_ok
    assert still_open == 0


@pytest.mark.slow
def test_kill_9_while_writing_sqlite(tmp_path: Path, figures: Any) -> None:
    """50 SIGKILLs of a process writing batches: nothing torn, nothing acknowledged lost."""
    started = time.perf_counter()
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    acks = tmp_path / "acks.txt"
    acks.touch()
    open_store(url).close()  # create the schema before the first writer
    ctx = rw.context()
    rng = random.Random(4)
    killed = 0
    for k in range(KILLS):
        before = acks.stat().st_size
        child = ctx.Process(target=rw.write_until_killed, args=(url, str(acks), f"k{k:02d}", k))
        child.start()
        deadline = time.monotonic() + 60
        while acks.stat().st_size == before and child.is_alive():
            assert time.monotonic() < deadline, "the writer acknowledged nothing in 60 s"
            time.sleep(0.002)
        # let it run into a later batch and kill it wherever it is: in Python, inside
        # SQLite, in the middle of a commit
        time.sleep(rng.uniform(0, 0.06))
        assert child.is_alive(), f"writer {k} died on its own (exit code {child.exitcode})"
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        killed += child.exitcode == -signal.SIGKILL

    acknowledged: dict[str, int] = {}
    for line in acks.read_text().splitlines():
        referral_id, version = line.split()
        acknowledged[referral_id] = max(acknowledged.get(referral_id, 0), int(version))

    with closing(sqlite3.connect(path)) as conn:  # `with connect()` does not close
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        foreign = conn.execute("PRAGMA foreign_key_check").fetchall()
        torn_sql = conn.execute(
            "SELECT count(*) FROM referrals r WHERE r.version IS NOT "
            "(SELECT max(version) FROM events e WHERE e.referral_id = r.id)"
        ).fetchone()[0]
        orphans = conn.execute(
            "SELECT count(*) FROM events e WHERE NOT EXISTS "
            "(SELECT 1 FROM referrals r WHERE r.id = e.referral_id)"
        ).fetchone()[0]
        event_count = conn.execute("SELECT count(*) FROM events").fetchone()[0]

    with open_store(url) as store:
        stored = _versions_and_checks(store)
    torn = stored.pop("_torn") + torn_sql + orphans
    mismatched = stored.pop("_mismatched")
    missing = sum(1 for i, v in acknowledged.items() if stored.get(i, 0) < v)
    figures(
        "crash[sqlite]",
        kills=killed,
        referrals=len(stored),
        events=event_count,
        acknowledged_referrals=len(acknowledged),
        acknowledged_but_missing=missing,
        torn_referrals=torn,
        replay_mismatches=mismatched,
        integrity_check=integrity,
        foreign_key_violations=len(foreign),
        seconds=round(time.perf_counter() - started, 1),
    )
    assert killed == KILLS
    assert integrity == "ok"
    assert foreign == []
    assert (torn, missing, mismatched) == (0, 0, 0)
    assert len(acknowledged) >= KILLS * 4


def _versions_and_checks(store: ReferralStore) -> dict[str, int]:
    """Each referral's version, plus counts of torn histories and replay mismatches."""
    versions: dict[str, int] = {}
    torn = mismatched = 0
    for snapshot, events in store.export():
        versions[snapshot.id] = snapshot.version
        try:
            check_history(snapshot, events)
        except ValidationError:
            torn += 1
            continue
        mismatched += replay(events) != snapshot
    versions["_torn"] = torn
    versions["_mismatched"] = mismatched
    return versions
