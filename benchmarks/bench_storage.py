"""Storage benchmark: bulk intake, the worklist with a million referrals stored, and claims.

    python benchmarks/bench_storage.py            # full run, several minutes, ~15 GB of disk
    python benchmarks/bench_storage.py --quick    # small counts, to check that it runs
    python benchmarks/bench_storage.py --check    # exit 1 when a target is missed

What it measures, one process unless said otherwise:

- **Bulk intake with events** into a SQLite file (``synchronous=FULL``) and into PostgreSQL:
  referrals taken in by the desk (on a memory store, untimed) are written with
  ``save_many`` in transactions of 500: snapshot plus its intake events (created, coverage
  decided, urgency assessed). Targets: **≥ 5,000 referrals/s** (SQLite), **≥ 2,000/s**
  (PostgreSQL).
- **Worklist top-50 with 1,000,000 referrals stored**, on SQLite and on PostgreSQL: the
  p50/p95/p99 latency of ``query(Query(open_only=True, limit=50))`` (SQL plus turning 50
  snapshots back into referrals), over repeated runs with a warm cache, plus a specialty
  and an owner worklist for reference. Target: **p95 ≤ 20 ms** each. The million referrals
  are built fast: 500 template histories made by the desk (intake and send; two in five
  declined), each with placeholder ids, are copied with new ids, source ids and patient ids
  into the adapters' own row format (their private row builders) and inserted in batches of
  10,000; a sample is loaded back and replayed to prove the rows are real referrals. Bytes
  per referral on disk: the SQLite file, or ``pg_total_relation_size`` of both tables,
  divided by the count (snapshot and every event included).
- **Claims per second with 8 coordinator processes** on PostgreSQL: each claims 10 at a
  time and handles them (one ``save_many`` declining the batch, then ``release``), until
  20,000 referrals are done; and claim-then-release churn on the million-row worklist, where
  all eight fight over the same head of the queue (``FOR UPDATE SKIP LOCKED``).

What it checks, and exits 1 on a wrong result whatever the options (``--check`` also exits 1
on a missed target):

- **bulk intake**: the store counts exactly the referrals written, and a sample of them (20,
  spread over the batches) reads back equal: snapshot and whole history;
- **the built worklist stores**: a sample of the built referrals loads and replays to its
  snapshot;
- **every worklist measured**: against the slow reference (``Query.matches`` and
  ``worklist_key``, what the memory store filters and sorts by, on referrals loaded one by
  one): each row passes the filter, the rows are in worklist order, there are
  ``min(50, store.count(query))`` of them, every run returns the same rows, and of a seeded
  sample of 500 stored referrals every one that passes the filter and sorts before the last
  row is among the rows;
- **claims**: every seeded referral was claimed once and none is left open.

PostgreSQL comes from ``--postgres`` (default ``$REFERRALKIT_TEST_POSTGRES`` or
``postgresql://postgres@127.0.0.1:5432/test``); each part uses its own schema, dropped at
the end. Files go to ``--dir`` (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

import referralkit as rk
from referralkit import synth
from referralkit.events import apply_all, replay
from referralkit.privacy import Sealed
from referralkit.storage import Change, History, MemoryStore, Query, ReferralStore, open_store
from referralkit.storage import sqlite as sqlite_adapter
from referralkit.storage._base import worklist_key
from referralkit.storage._json import _HEAD, RecordCodec, _event_context, _seal, change_sizes

INTAKE_TARGET = {"SQLite": 5_000.0, "PostgreSQL": 2_000.0}
WORKLIST_TARGET_MS = 20.0
CLAIM_BATCH = 10
COORDINATORS = 8
ACTOR = rk.Actor("bench", {rk.Role.COORDINATOR})
PLACEHOLDERS = ("@@ID@@", "@@SRC@@", "@@PAT@@")
INTAKE_SAMPLE = 20
WORKLIST_SAMPLE = 500

wrong: list[str] = []  # results that differ from their reference (always fatal)


@attrs.frozen
class Row:
    """One line of a results table."""

    part: str
    store: str
    what: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    def cells(self) -> list[str]:
        shown = f"{self.value:,.1f}" if self.value < 1000 else f"{self.value:,.0f}"
        if self.target is None:
            ratio, met, target = "–", "–", "–"
        else:
            better = self.value / self.target if self.higher_is_better else self.target / self.value
            ratio = f"{better:.2f}×"
            met = "yes" if better >= 1 else "**no**"
            sign = "≥" if self.higher_is_better else "≤"
            target = f"{sign} {self.target:,.0f}"
        return [self.part, self.store, self.what, f"{shown} {self.unit}", target, ratio, met]


def table(rows: Sequence[Row]) -> str:
    head = ["part", "store", "measure", "result", "target", "vs target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|---:|:---:|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- stores


@contextmanager
def postgres_store(url: str, name: str) -> Iterator[ReferralStore]:
    """A fresh PostgreSQL schema ``name``, dropped afterwards."""
    import psycopg

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    drop()
    store = open_store(f"{url}{'&' if '?' in url else '?'}schema={name}")
    try:
        yield store
    finally:
        store.close()
        drop()


# --------------------------------------------------------------------------- bulk intake


def intake_changes(count: int) -> list[Change]:
    """``count`` synthetic referrals as the desk takes them in (the untimed part)."""
    clock = rk.FakeClock(synth.DEFAULT_START)
    memory = MemoryStore()
    desk = rk.ReferralDesk(memory, clock=clock, new_id=synth.id_factory(3))
    for request in synth.population(count, 3):
        desk.intake(ACTOR, request)
    return [(r, events, 0) for r, events in memory.export()]


def bench_intake(store: ReferralStore, changes: Sequence[Any], label: str) -> list[Row]:
    gc.collect()
    started = time.perf_counter()
    for k in range(0, len(changes), 500):
        store.save_many(changes[k : k + 500])
    elapsed = time.perf_counter() - started
    events = sum(len(c[1]) for c in changes)
    check_intake(store, changes, label)
    return [
        Row(
            "bulk intake",
            label,
            f"{len(changes):,} referrals + {events:,} events, save_many × 500",
            len(changes) / elapsed,
            "referrals/s",
            INTAKE_TARGET[label],
        )
    ]


def check_intake(store: ReferralStore, changes: Sequence[Any], label: str) -> None:
    """The store counts every referral written; a sample reads back equal, history included."""
    stored = store.count()
    if stored != len(changes):
        wrong.append(f"bulk intake, {label}: {stored:,} stored, {len(changes):,} written")
    step = max(1, len(changes) // INTAKE_SAMPLE)
    for referral, events, _ in [*changes[::step], changes[-1]]:
        if store.load(referral.id) != referral or list(store.events(referral.id)) != list(events):
            wrong.append(f"bulk intake, {label}: {referral.id} reads back different")


# --------------------------------------------------------------------------- a million


def templates(count: int) -> list[History]:
    """``count`` varied histories (intake, send, two in five declined) with placeholder ids."""
    clock = rk.FakeClock(synth.DEFAULT_START)
    made: list[History] = []
    for k, request in enumerate(synth.population(count, 5)):
        request = attrs.evolve(
            request,
            source_id=PLACEHOLDERS[1],
            patient=attrs.evolve(request.patient, id=PLACEHOLDERS[2]),
        )
        store = MemoryStore()
        desk = rk.ReferralDesk(store, clock=clock, new_id=lambda: PLACEHOLDERS[0])
        referral = desk.intake(ACTOR, request)
        if k % 5 != 4:  # a few stay drafts
            desk.send(ACTOR, referral.id)
        if k % 5 in (1, 3):
            desk.decline(ACTOR, referral.id, "outside our scope")
        if k % 7 == 0:
            desk.assign(ACTOR, referral.id, f"coord-{k % 40}")
        clock.advance(minutes=37)
        made.extend(store.export())
    return made


def substituted(row: tuple[Any, ...], values: tuple[str, str, str]) -> tuple[Any, ...]:
    out = []
    for field in row:
        sealed = isinstance(field, Sealed)
        text = field.reveal() if sealed else field
        if isinstance(text, str) and "@@" in text:
            for placeholder, value in zip(PLACEHOLDERS, values, strict=True):
                text = text.replace(placeholder, value)
            field = Sealed(text) if sealed else text
        out.append(field)
    return tuple(out)


def resealed(row: tuple[Any, ...], context: str) -> tuple[Any, ...]:
    """``row`` with its last field (a sealed snapshot or payload, ids substituted) sealed
    again for ``context``: the seal covers the referral id, so a copy needs its own."""
    text = row[-1].reveal()
    end = text.find('"', len(_HEAD))
    key_id, count, _ = text[len(_HEAD) : end].split(":")
    rest = text[end + 1 :]
    body = "{}" if rest == "}" else "{" + rest[1:]
    return (*row[:-1], Sealed(_seal(body, context, key_id, count)))


def million_rows(
    count: int,
    row: Callable[[rk.Referral, RecordCodec], tuple[Any, ...]],
    event_row: Callable[[rk.ReferralEvent, RecordCodec, int], tuple[Any, ...]],
    batch: int = 10_000,
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Referral and event rows in the adapter's own format (sealed, unencrypted), ``batch``
    referrals at a time."""
    codec = RecordCodec()
    shapes = []
    for r, history in templates(500):
        sizes = change_sizes(history)
        shapes.append(
            (row(r, codec), [event_row(e, codec, sizes[e.referral_id, e.version]) for e in history])
        )
    referrals: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for k in range(count):
        referral_row, event_rows = shapes[k % len(shapes)]
        values = (f"r{k:07d}", f"SRC-{k:07d}", f"pat-{k % 300_000:06d}")
        referrals.append(resealed(substituted(referral_row, values), f"{values[0]}\x00snapshot"))
        for e in event_rows:
            copy = substituted(e, values)
            events.append(resealed(copy, _event_context(*copy[:6])))
        if len(referrals) == batch:
            yield referrals, events
            referrals, events = [], []
    if referrals:
        yield referrals, events


def check_sample(store: ReferralStore, count: int) -> None:
    """Load and replay a few of the built referrals: the rows are real referrals."""
    for k in (0, 1, count // 2, count - 1):
        referral = store.load(f"r{k:07d}")
        if referral.id != f"r{k:07d}" or replay(store.events(referral.id)) != referral:
            wrong.append(f"built row r{k:07d} does not replay to its snapshot")


def build_sqlite(store: Any, count: int) -> None:
    for referrals, events in million_rows(count, sqlite_adapter._row, sqlite_adapter._event_row):
        with store._write("bulk load") as conn:
            conn.executemany(sqlite_adapter._INSERT, referrals)
            conn.executemany(sqlite_adapter._INSERT_EVENT, events)
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store._conn.execute("ANALYZE")


def build_postgres(store: Any, count: int) -> None:
    from referralkit.storage import postgres as pg

    for referrals, events in million_rows(count, pg._row, pg._event_row):

        def load(conn: Any, referrals: Any = referrals, events: Any = events) -> None:
            with conn.cursor() as cursor:
                store._copy(cursor, f"{{s}}.referrals ({pg._COLUMNS})", referrals)
                store._copy(cursor, f"{{s}}.events ({pg._EVENT_COLUMNS})", events)

        store._transact("bulk load", load)
    with store._pool.connection() as conn:
        conn.execute(store._sql("ANALYZE {s}.referrals"))
        conn.execute(store._sql("ANALYZE {s}.events"))


def latencies(store: ReferralStore, query: Query, runs: int) -> list[float]:
    first = store.query(query)  # warm
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        found = store.query(query)
        times.append((time.perf_counter() - started) * 1000)
        if [r.id for r in found] != [r.id for r in first]:
            wrong.append(f"{query}: the worklist changed between runs")
    return times


def check_worklist(
    store: ReferralStore, label: str, name: str, query: Query, sample: Sequence[str]
) -> None:
    """The rows against the slow reference (``Query.matches``, ``worklist_key``): each passes
    the filter, in order, as many as the store counts (up to the limit), and every referral of
    ``sample`` (ids, loaded one by one) that passes the filter and sorts before the last row
    is among them."""
    where = f"worklist, {label}, {name}"
    found = store.query(query)
    limit = query.limit or len(found)
    if not found:
        wrong.append(f"{where}: no rows")
        return
    if len(found) != min(limit, store.count(attrs.evolve(query, limit=None))):
        wrong.append(f"{where}: {len(found)} rows, not min({limit}, the matching count)")
    if not all(query.matches(r) for r in found):
        wrong.append(f"{where}: a row does not pass the filter")
    keys = [worklist_key(r) for r in found]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        wrong.append(f"{where}: rows not in worklist order")
    ids = {r.id for r in found}
    last = keys[-1]
    for referral_id in sample:
        r = store.load(referral_id)
        if query.matches(r) and worklist_key(r) <= last and r.id not in ids:
            wrong.append(f"{where}: {r.id} sorts before the last row but is not listed")


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_worklist(
    store: ReferralStore, label: str, count: int, runs: int, size: int, built_s: float
) -> list[Row]:
    part = f"worklist, {count:,} stored"
    picked = random.Random(7).sample(range(count), min(count, WORKLIST_SAMPLE))
    sample = [f"r{k:07d}" for k in picked]
    rows = [
        Row(
            part,
            label,
            "build (bulk copy of 500 template histories)",
            count / built_s,
            "referrals/s",
        ),
        Row(
            part,
            label,
            "bytes per referral on disk (snapshot + events + indexes)",
            size / count,
            "B",
        ),
    ]
    for name, query, shown in (
        ("top-50 open, worklist order", Query(open_only=True, limit=50), (50, 95, 99)),
        ("top-50 open cardiology", Query(open_only=True, specialty="cardiology", limit=50), (95,)),
        ("top-50 open of one owner", Query(open_only=True, owner="coord-7", limit=50), (95,)),
    ):
        check_worklist(store, label, name, query, sample)
        times = latencies(store, query, runs)
        for p in shown:
            rows.append(
                Row(
                    part,
                    label,
                    f"{name}: p{p} of {runs}",
                    percentile(times, p),
                    "ms",
                    WORKLIST_TARGET_MS if p == 95 and len(shown) > 1 else None,
                    higher_is_better=False,
                )
            )
    return rows


# --------------------------------------------------------------------------- claims


def coordinator(
    url: str, owner: str, mode: str, seconds: float, start_at: float
) -> tuple[int, int, float, float]:
    """One coordinator process: claims, and either handles what it claimed (decline in one
    batch, release) until nothing is left, or releases at once for ``seconds``."""
    store = open_store(url)
    now = synth.DEFAULT_START + dt.timedelta(days=400)
    lease = dt.timedelta(minutes=5)
    calls = claimed = 0
    time.sleep(max(0.0, start_at - time.time()))
    started = time.perf_counter()
    try:
        while True:
            ids = store.claim(owner, CLAIM_BATCH, now=now, lease=lease)
            calls += 1
            claimed += len(ids)
            if mode == "handle":
                if not ids:
                    break
                changes = []
                for referral_id in ids:
                    referral = store.load(referral_id)
                    event = rk.ReferralEvent(
                        referral_id,
                        referral.version + 1,
                        0,
                        now,
                        owner,
                        "status_changed",
                        {"event": "decline", "source": referral.status.value, "target": "declined"},
                    )
                    changes.append((apply_all(referral, [event]), [event], referral.version))
                store.save_many(changes)
                store.release(owner, ids)
            else:
                store.release(owner, ids)
                if time.perf_counter() - started > seconds:
                    break
        return calls, claimed, started, time.perf_counter()
    finally:
        store.close()


def run_coordinators(url: str, mode: str, seconds: float) -> tuple[int, int, float]:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # every process up before the first claim
    with ctx.Pool(COORDINATORS) as pool:
        results = pool.starmap(
            coordinator,
            [(url, f"coord-{k}", mode, seconds, start_at) for k in range(COORDINATORS)],
        )
    calls = sum(r[0] for r in results)
    claimed = sum(r[1] for r in results)
    # perf_counter is per process but the same clock (CLOCK_MONOTONIC) on Linux
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    return calls, claimed, elapsed


def seed_items(store: ReferralStore, count: int) -> None:
    """``count`` received referrals, written as whole histories in batches."""
    base = templates(1)[0]
    for k in range(0, count, 1000):
        batch = []
        for n in range(k, min(count, k + 1000)):
            values = (f"item-{n:06d}", f"ITEM-{n:06d}", f"pat-{n:06d}")
            text = json.dumps([rk.to_dict(base[0]), [rk.to_dict(e) for e in base[1]]])
            for placeholder, value in zip(PLACEHOLDERS, values, strict=True):
                text = text.replace(placeholder, value)
            snapshot, events = json.loads(text)
            batch.append(
                (
                    rk.from_dict(rk.Referral, snapshot),
                    [rk.from_dict(rk.ReferralEvent, e) for e in events],
                )
            )
        store.restore_many(batch)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: checks it runs")
    parser.add_argument("--rows", type=int, help="referrals stored for the worklist part")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "REFERRALKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL URL (a schema per part is created and dropped)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--dir", help="where the SQLite files go (default: a temporary dir)")
    args = parser.parse_args(argv)
    quick = args.quick
    intake_count = 2_000 if quick else 20_000
    rows_count = args.rows or (20_000 if quick else 1_000_000)
    runs = 60 if quick else 400
    items = 2_000 if quick else 20_000
    churn_seconds = 1.0 if quick else 5.0
    workdir = args.dir or tempfile.mkdtemp(prefix="bench-storage-")
    os.makedirs(workdir, exist_ok=True)
    postgres = None if args.no_postgres else args.postgres
    results: list[Row] = []
    try:
        say(f"bulk intake: building {intake_count:,} referrals through the desk (untimed)")
        changes = intake_changes(intake_count)
        path = os.path.join(workdir, "intake.db")
        with open_store(f"sqlite:///{path}") as store:
            results += bench_intake(store, changes, "SQLite")
        if postgres:
            with postgres_store(postgres, "bench_intake") as store:
                results += bench_intake(store, changes, "PostgreSQL")

        say(f"worklist: building {rows_count:,} referrals in SQLite")
        path = os.path.join(workdir, "million.db")
        with open_store(f"sqlite:///{path}") as store:
            started = time.perf_counter()
            build_sqlite(store, rows_count)
            built = time.perf_counter() - started
            check_sample(store, rows_count)
            size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
            say("worklist: timing SQLite queries")
            results += bench_worklist(store, "SQLite", rows_count, runs, size, built)
        os.remove(path)
        if postgres:
            with postgres_store(postgres, "bench_million") as store:
                say(f"worklist: building {rows_count:,} referrals in PostgreSQL")
                started = time.perf_counter()
                build_postgres(store, rows_count)
                built = time.perf_counter() - started
                check_sample(store, rows_count)
                size = int(
                    store._fetch(  # type: ignore[attr-defined]
                        "size",
                        "SELECT pg_total_relation_size(%s) + pg_total_relation_size(%s)",
                        [f"{store._s}.referrals", f"{store._s}.events"],  # type: ignore[attr-defined]
                    )[0][0]
                )
                say("worklist: timing PostgreSQL queries")
                results += bench_worklist(store, "PostgreSQL", rows_count, runs, size, built)
                say(f"claims: churn on the {rows_count:,}-row worklist")
                url = f"{postgres}{'&' if '?' in postgres else '?'}schema=bench_million"
                calls, claimed, elapsed = run_coordinators(url, "churn", churn_seconds)
                results.append(
                    Row(
                        "claims",
                        "PostgreSQL",
                        f"{COORDINATORS} processes: claim {CLAIM_BATCH} + release, "
                        f"{rows_count:,} stored",
                        calls / elapsed,
                        "claims/s",
                        note=f"{claimed / elapsed:,.0f} referrals/s",
                    )
                )
            with postgres_store(postgres, "bench_claims") as store:
                say(f"claims: {items:,} referrals handled by {COORDINATORS} processes")
                seed_items(store, items)
                url = f"{postgres}{'&' if '?' in postgres else '?'}schema=bench_claims"
                calls, claimed, elapsed = run_coordinators(url, "handle", 0.0)
                left = store.count(Query(open_only=True))
                if claimed != items or left:
                    wrong.append(f"claims: {claimed:,} of {items:,} claimed, {left:,} left open")
                results.append(
                    Row(
                        "claims",
                        "PostgreSQL",
                        f"{COORDINATORS} processes: claim {CLAIM_BATCH} + decline them "
                        "(1 save_many) + release",
                        calls / elapsed,
                        "claims/s",
                    )
                )
                results.append(
                    Row(
                        "claims",
                        "PostgreSQL",
                        f"  the same, {items:,} referrals handled",
                        claimed / elapsed,
                        "referrals/s",
                    )
                )
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"referralkit {rk.__version__} storage benchmark"
        f"{' (--quick: small counts, the figures mean little)' if quick else ''}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print(table(results))
    notes = [r for r in results if r.note]
    for r in notes:
        print(f"\n{r.what}: {r.note}")
    if wrong:
        print("\nWRONG RESULTS:\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    print(
        f"\nchecked: bulk intake counts, a sample of {INTAKE_SAMPLE} read back equal; every "
        f"worklist against the reference order on a sample of {WORKLIST_SAMPLE} stored referrals"
    )
    missed = [r for r in results if r.target is not None and r.cells()[-1] != "yes"]
    if missed:
        print("missed targets: " + "; ".join(f"{r.store}: {r.what}" for r in missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
