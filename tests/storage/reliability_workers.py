"""Work done in child processes by the reliability tests (test_reliability.py).

The children are started with the ``forkserver`` start method, so everything they run must be
importable by module name: conftest.py puts this directory on ``sys.path``. Each function
opens its own store from a URL, as a separate coordinator process would.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import multiprocessing.context
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import attrs

from referralkit import (
    Actor,
    ConcurrencyError,
    FakeClock,
    Query,
    Referral,
    ReferralDesk,
    ReferralEvent,
    Role,
)
from referralkit.events import apply_all
from referralkit.storage import ReferralStore, open_store
from referralkit.testing import sample_request

ACTOR = Actor("reliability", {Role.COORDINATOR})
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, its server preloaded with referralkit and these workers: a
    child then starts in milliseconds instead of importing everything again (the crash
    test starts fifty of them)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["reliability_workers", "referralkit", "psycopg", "psycopg_pool"])
    return ctx


# --------------------------------------------------------------------------- histories


def template() -> list[ReferralEvent]:
    """The events of one referral taken in and sent (versions 1 and 2)."""
    desk = ReferralDesk(open_store("memory://"), clock=FakeClock(START), new_id=lambda: "tpl")
    made = desk.intake(ACTOR, sample_request("TPL"))
    desk.send(ACTOR, made.id)
    return desk.store.events(made.id)


def copy_history(events: Sequence[ReferralEvent], new_id: str) -> list[ReferralEvent]:
    """``events`` renamed to referral ``new_id`` (its own source id), replaying equal."""
    moved = []
    for event in events:
        payload = dict(event.payload)
        if event.type == "created":
            payload["referral"] = {**payload["referral"], "id": new_id, "source_id": new_id}
        moved.append(attrs.evolve(event, referral_id=new_id, payload=payload))
    return moved


def creation_changes(
    events: Sequence[ReferralEvent],
) -> list[tuple[Referral, list[ReferralEvent], int]]:
    """A whole history as the changes that made it, version by version."""
    changes: list[tuple[Referral, list[ReferralEvent], int]] = []
    current: Referral | None = None
    for version in sorted({e.version for e in events}):
        step = [e for e in events if e.version == version]
        current = apply_all(current, step)
        changes.append((current, step, version - 1))
    return changes


def owner_change(referral: Referral, owner: str) -> tuple[Referral, list[ReferralEvent], int]:
    """One change making ``owner`` responsible."""
    event = ReferralEvent(
        referral.id, referral.version + 1, 0, START, ACTOR.id, "owner_assigned", {"owner": owner}
    )
    return apply_all(referral, [event]), [event], referral.version


def decline_change(referral: Referral, owner: str) -> tuple[Referral, list[ReferralEvent], int]:
    """One change declining ``referral`` (it leaves the worklist), saying who did it."""
    event = ReferralEvent(
        referral.id,
        referral.version + 1,
        0,
        START,
        owner,
        "status_changed",
        {
            "event": "decline",
            "source": referral.status.value,
            "target": "declined",
            "reason": f"handled by {owner}",
        },
    )
    return apply_all(referral, [event]), [event], referral.version


def seed_store(store: ReferralStore, count: int, prefix: str = "item") -> list[str]:
    """``count`` received referrals written in one transaction; their ids."""
    base = template()
    ids = [f"{prefix}-{k:05d}" for k in range(count)]
    histories = []
    for referral_id in ids:
        events = copy_history(base, referral_id)
        histories.append((apply_all(None, events), events))
    store.restore_many(histories)
    return ids


# --------------------------------------------------------------------------- contention


def contend(
    url: str, hot: Sequence[str], worker: str, changes: int, seed: int, start_at: float
) -> tuple[list[str], int]:
    """Make ``changes`` owner changes on random hot referrals through a desk, retrying each
    after a ConcurrencyError. Returns the acknowledged change markers and the conflicts."""
    store = open_store(url)
    try:
        return contend_on(store, hot, worker, changes, seed, start_at)
    finally:
        store.close()


def contend_on(
    store: ReferralStore,
    hot: Sequence[str],
    worker: str,
    changes: int,
    seed: int,
    start_at: float,
) -> tuple[list[str], int]:
    desk = ReferralDesk(store, clock=FakeClock(START))
    rng = random.Random(seed)
    acknowledged: list[str] = []
    conflicts = 0
    time.sleep(max(0.0, start_at - time.time()))  # start together, for real contention
    for n in range(changes):
        referral_id = rng.choice(hot)
        marker = f"{worker}-{n}"
        while True:
            try:
                desk.assign(ACTOR, referral_id, marker)
            except ConcurrencyError:
                conflicts += 1
                continue
            acknowledged.append(marker)
            break
    return acknowledged, conflicts


# --------------------------------------------------------------------------- claims


def coordinate(
    url: str, owner: str, now: dt.datetime, lease_seconds: float, batch: int, start_at: float
) -> list[str]:
    """Claim ``batch`` referrals at a time at ``now`` and decline each claimed batch in one
    transaction, until the claims come back empty. Returns every id claimed, in order."""
    store = open_store(url)
    lease = dt.timedelta(seconds=lease_seconds)
    claimed: list[str] = []
    time.sleep(max(0.0, start_at - time.time()))
    try:
        while ids := store.claim(owner, batch, now=now, lease=lease):
            claimed.extend(ids)
            store.save_many([decline_change(store.load(i), owner) for i in ids])
            store.release(owner, ids)
        return claimed
    finally:
        store.close()


def claim_and_hang(
    url: str,
    owner: str,
    now: dt.datetime,
    lease_seconds: float,
    batch: int,
    report: Any,
) -> None:
    """Claim one batch, report it, then hang (until killed) without finishing it."""
    store = open_store(url)
    ids = store.claim(owner, batch, now=now, lease=dt.timedelta(seconds=lease_seconds))
    report.put(ids)
    while True:
        time.sleep(60)


# --------------------------------------------------------------------------- crashes


def write_until_killed(url: str, acks: str, prefix: str, seed: int) -> None:
    """Write batches to the store forever: each batch creates a few referrals (intake and
    send) and changes a few existing ones, in one ``save_many``. After each commit the
    ids and versions it made durable are appended to the file ``acks`` with one
    ``os.write``: what the parent may hold the store to after a ``kill -9``."""
    store = open_store(url)
    rng = random.Random(seed)
    base = template()
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    total = store.count()
    k = 0
    while True:
        changes = []
        for _ in range(4):
            changes += creation_changes(copy_history(base, f"{prefix}-{k:04d}"))
            k += 1
        if total:
            picked = store.query(Query(limit=3, offset=rng.randrange(total)))
            changes += [owner_change(r, f"{prefix}-owner-{k}") for r in picked]
        store.save_many(changes)
        total += 4
        done: dict[str, int] = {}
        for referral, _, _ in changes:
            done[referral.id] = referral.version
        os.write(fd, "".join(f"{i} {v}\n" for i, v in done.items()).encode())
