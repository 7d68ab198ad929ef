"""Storage benchmark: bulk intake, the worklist with a million referrals stored, and claims.

    python benchmarks/bench_storage.py            # full run, several minutes, ~15 GB of disk
    python benchmarks/bench_storage.py --quick    # small counts, to check that it runs
    python benchmarks/bench_storage.py --check    # exit 1 when a target is missed

What it measures, one process unless said otherwise:

- **Bulk intake with events** into a SQLite file (``synchronous=FULL``) and into PostgreSQL:
  referrals taken in by the desk (on a memory store, untimed) are written with
  ``save_many`` in transactions of 500: snapshot plus its intake events (created, coverage
  decided, urgency assessed). Targets: **≥ 5,000 referrals/s** (SQLite), **≥ 2,000/s**
  (PostgreSQL). Baseline, paired: the *driver floor*, the same changes as the adapter's
  own rows (built untimed) inserted as they are (``executemany``, ``COPY``) in the same
  transactions; each round runs the floor, then ``save_many``, each on a fresh store, and
  the ratio is taken per pair (``--rounds`` pairs, 3 by default).
- **Worklist top-50 with 1,000,000 referrals stored**, on SQLite and on PostgreSQL: the
  p50/p95/p99 latency of ``query(Query(open_only=True, limit=50))`` (SQL plus turning 50
  snapshots back into referrals), over repeated runs with a warm cache, plus a specialty
  and an owner worklist for reference. Target: **p95 ≤ 20 ms** each. Baseline, paired run
  by run: the same 50 rows' snapshots fetched by id through the driver and parsed as JSON
  (no worklist plan, no model objects); the ratio per pair shows what the query and the
  model cost over the bare read. The million referrals
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

- **bulk intake**: after every run (floor and ``save_many``) the store counts exactly the
  referrals written, and a sample of them (20, spread over the batches) reads back equal:
  snapshot and whole history;
- **the built worklist stores**: a sample of the built referrals loads and replays to its
  snapshot;
- **every worklist measured**: equal, id for id and in order, to the reference ranking
  (``Query.matches`` and ``worklist_key``, what the memory store filters and sorts by, over
  every stored referral: for the built store, worked out from the 500 templates, since row
  ``k`` is template ``k % 500``), in the first run and in every timed run;
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
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any

import attrs

import referralkit as rk
from referralkit import synth
from referralkit.access import GENESIS
from referralkit.events import apply_all, replay
from referralkit.privacy import Sealed
from referralkit.storage import Change, History, MemoryStore, Query, ReferralStore, open_store
from referralkit.storage import sqlite as sqlite_adapter
from referralkit.storage._base import worklist_key
from referralkit.storage._chain import linked
from referralkit.storage._json import _HEAD, RecordCodec, _event_context, _seal, change_sizes

INTAKE_TARGET = {"SQLite": 5_000.0, "PostgreSQL": 2_000.0}
WORKLIST_TARGET_MS = 20.0
CLAIM_BATCH = 10
COORDINATORS = 8
ACTOR = rk.Actor("bench", {rk.Role.COORDINATOR})
PLACEHOLDERS = ("@@ID@@", "@@SRC@@", "@@PAT@@")
INTAKE_SAMPLE = 20

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
    note_ratio: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met (``None``: no target)."""
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

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
        return [
            self.part,
            self.store,
            self.what,
            f"{shown} {self.unit}",
            self.note_ratio or "–",
            target,
            ratio,
            met,
        ]


def ratio_text(ratios: Sequence[float]) -> str:
    """Per-pair ratios (method over baseline) as their median with min and max."""
    return (
        f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}), "
        f"{len(ratios)} pairs"
    )


def table(rows: Sequence[Row]) -> str:
    head = [
        "part",
        "store",
        "measure",
        "result",
        "vs baseline, median of pairs (min–max)",
        "target",
        "vs target",
        "met",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|---:|---:|:---:|"]
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


PG_EVENT_COLUMNS = "referral_id, version, idx, at, actor, type, payload, seq, sealed, chain"
"""The columns of a chained event row (store schema 8) in PostgreSQL."""


def event_row(e: rk.ReferralEvent, codec: RecordCodec, count: int) -> tuple[Any, ...]:
    """An event's row as the SQL adapters write it, before its link in the chain."""
    payload = Sealed(codec.payload_text(e, count))
    return (e.referral_id, e.version, e.index, e.at.isoformat(), e.actor, e.type, payload)


def driver_rows(changes: Sequence[Change], label: str) -> list[tuple[Any, list[Any]]]:
    """The changes as the adapter's own rows (untimed), the events linked into the hash
    chain of a fresh store as the adapter links them: what the driver baseline inserts."""
    if label == "SQLite":
        row = sqlite_adapter._row
    else:
        from referralkit.storage import postgres as pg

        row = pg._row
    codec = RecordCodec()
    head: list[Any] = [0, GENESIS]
    rows = []
    for referral, events, _ in changes:
        sizes = change_sizes(events)
        unlinked = [event_row(e, codec, sizes[e.referral_id, e.version]) for e in events]
        rows.append((row(referral, codec), linked(head, unlinked)))
    return rows


def insert_rows(store: Any, label: str, rows: Sequence[tuple[Any, list[Any]]]) -> None:
    """The driver floor: the adapter's rows inserted as they are (SQLite ``executemany``,
    PostgreSQL ``COPY``), 500 referrals a transaction, no checks, no row building."""
    for k in range(0, len(rows), 500):
        batch = [r for r, _ in rows[k : k + 500]]
        batch_events = [e for _, events in rows[k : k + 500] for e in events]
        if label == "SQLite":
            with store._write("bulk load") as conn:
                conn.executemany(sqlite_adapter._INSERT, batch)
                conn.executemany(sqlite_adapter._INSERT_EVENT, batch_events)
        else:
            from referralkit.storage import postgres as pg

            def load(conn: Any, batch: Any = batch, batch_events: Any = batch_events) -> None:
                with conn.cursor() as cursor:
                    store._copy(cursor, f"{{s}}.referrals ({pg._COLUMNS})", batch)
                    store._copy(
                        cursor,
                        f"{{s}}.events ({pg._EVENT_COLUMNS}, seq, sealed, chain)",
                        batch_events,
                    )

            store._transact("bulk load", load)


def save_in_batches(store: ReferralStore, changes: Sequence[Change]) -> None:
    for k in range(0, len(changes), 500):
        store.save_many(changes[k : k + 500])


def bench_intake(
    fresh: Callable[[int], Any], changes: Sequence[Change], label: str, rounds: int
) -> list[Row]:
    """``rounds`` pairs on fresh stores (``fresh(k)``, a context manager): the driver floor,
    then ``save_many``; each store checked after its run."""
    rows = driver_rows(changes, label)
    rates: dict[str, list[float]] = {"floor": [], "save_many": []}
    ratios = []
    k = 0
    for round_ in range(rounds):
        say(f"bulk intake, {label}: pair {round_ + 1} of {rounds}")
        pair = {}
        for name in ("floor", "save_many"):
            with fresh(k) as store:
                gc.collect()
                started = time.perf_counter()
                if name == "floor":
                    insert_rows(store, label, rows)
                else:
                    save_in_batches(store, changes)
                pair[name] = len(changes) / (time.perf_counter() - started)
                check_intake(store, changes, f"{label}, {name}")
            k += 1
            rates[name].append(pair[name])
        ratios.append(pair["save_many"] / pair["floor"])
    events = sum(len(c[1]) for c in changes)
    return [
        Row(
            "bulk intake",
            label,
            f"driver floor: the adapter's rows inserted as they are ({rounds} runs)",
            statistics.median(rates["floor"]),
            "referrals/s",
            note_ratio="baseline",
        ),
        Row(
            "bulk intake",
            label,
            f"{len(changes):,} referrals + {events:,} events, save_many × 500 ({rounds} runs)",
            statistics.median(rates["save_many"]),
            "referrals/s",
            INTAKE_TARGET[label],
            note_ratio=ratio_text(ratios),
        ),
    ]


def check_intake(store: ReferralStore, changes: Sequence[Any], label: str) -> None:
    """The store counts every referral written; a sample reads back equal, history included."""
    stored = store.count()
    if stored != len(changes):
        wrong.append(f"bulk intake, {label}: {stored:,} stored, {len(changes):,} written")
    step = max(1, len(changes) // INTAKE_SAMPLE)
    for referral, events, _ in [*changes[::step], changes[-1]]:
        try:
            same = store.load(referral.id) == referral
            same = same and list(store.events(referral.id)) == list(events)
        except rk.NotFoundError:
            same = False
        if not same:
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
    shapes_of: Sequence[History],
    count: int,
    row: Callable[[rk.Referral, RecordCodec], tuple[Any, ...]],
    batch: int = 10_000,
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Referral and event rows in the adapter's own format (sealed, unencrypted, the events
    linked into the store's hash chain), ``batch`` referrals at a time."""
    codec = RecordCodec()
    shapes = []
    for r, history in shapes_of:
        sizes = change_sizes(history)
        shapes.append(
            (row(r, codec), [event_row(e, codec, sizes[e.referral_id, e.version]) for e in history])
        )
    referrals: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    head: list[Any] = [0, GENESIS]
    for k in range(count):
        referral_row, event_rows = shapes[k % len(shapes)]
        values = (f"r{k:07d}", f"SRC-{k:07d}", f"pat-{k % 300_000:06d}")
        referrals.append(resealed(substituted(referral_row, values), f"{values[0]}\x00snapshot"))
        for e in event_rows:
            copy = substituted(e, values)
            events.append(resealed(copy, _event_context(*copy[:6])))
        if len(referrals) == batch:
            yield referrals, linked(head, events)
            referrals, events = [], []
    if referrals:
        yield referrals, linked(head, events)


def check_sample(store: ReferralStore, count: int) -> None:
    """Load and replay a few of the built referrals: the rows are real referrals."""
    for k in (0, 1, count // 2, count - 1):
        referral = store.load(f"r{k:07d}")
        if referral.id != f"r{k:07d}" or replay(store.events(referral.id)) != referral:
            wrong.append(f"built row r{k:07d} does not replay to its snapshot")


def build_sqlite(store: Any, shapes: Sequence[History], count: int) -> None:
    rows = million_rows(shapes, count, sqlite_adapter._row)
    for referrals, events in rows:
        with store._write("bulk load") as conn:
            conn.executemany(sqlite_adapter._INSERT, referrals)
            conn.executemany(sqlite_adapter._INSERT_EVENT, events)
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store._conn.execute("ANALYZE")


def build_postgres(store: Any, shapes: Sequence[History], count: int) -> None:
    from referralkit.storage import postgres as pg

    for referrals, events in million_rows(shapes, count, pg._row):

        def load(conn: Any, referrals: Any = referrals, events: Any = events) -> None:
            with conn.cursor() as cursor:
                store._copy(cursor, f"{{s}}.referrals ({pg._COLUMNS})", referrals)
                store._copy(
                    cursor, f"{{s}}.events ({pg._EVENT_COLUMNS}, seq, sealed, chain)", events
                )

        store._transact("bulk load", load)
    with store._pool.connection() as conn:
        conn.execute(store._sql("ANALYZE {s}.referrals"))
        conn.execute(store._sql("ANALYZE {s}.events"))


def reference_ranking(referrals: Sequence[rk.Referral], query: Query) -> list[str]:
    """The reference: ``Query.matches`` and ``worklist_key`` (what the memory store filters
    and sorts by) over every referral, in pure Python."""
    found = sorted((r for r in referrals if query.matches(r)), key=worklist_key)
    return [r.id for r in found[: query.limit]]


def million_reference(shapes: Sequence[History], count: int, query: Query) -> list[str]:
    """The reference ranking of the built store: row ``k`` is template ``k % len(shapes)``
    with id ``r{k:07d}``, so each template's rows sort by ``k`` among themselves and the
    first ``limit`` of each matching template hold the whole answer."""
    limit = query.limit or count
    keys = []
    for t, (template, _) in enumerate(shapes):
        if query.matches(template):
            rank, due, received, _ = worklist_key(template)
            keys += [(rank, due, received, f"r{k:07d}") for k in range(t, count, len(shapes))][
                :limit
            ]
    return [key[3] for key in sorted(keys)[:limit]]


def check_worklist(
    store: ReferralStore, label: str, name: str, query: Query, reference: Sequence[str]
) -> list[rk.Referral]:
    """The rows equal to the reference ranking, id for id and in order."""
    found = store.query(query)
    if [r.id for r in found] != list(reference):
        where = f"worklist, {label}, {name}"
        ids = [r.id for r in found]
        if sorted(ids) == sorted(reference):
            wrong.append(f"{where}: the reference's rows, not in worklist order")
        else:
            wrong.append(
                f"{where}: {len(set(ids) - set(reference))} rows not in the reference ranking "
                f"of {len(reference)}"
            )
    return found


@contextmanager
def raw_reader(store: Any, label: str, ids: Sequence[str]) -> Iterator[Callable[[], int]]:
    """The baseline read: the same rows' snapshots fetched by id through the driver and
    parsed as JSON, with no query planning over the worklist and no model objects. SQLite's
    is a connection of its own, closed on leaving."""
    if label == "SQLite":
        sql = f"SELECT snapshot FROM referrals WHERE id IN ({', '.join('?' * len(ids))})"
        with closing(sqlite3.connect(store.path)) as conn:

            def read() -> int:
                return len([json.loads(row[0]) for row in conn.execute(sql, list(ids))])

            yield read
        return
    sql = store._sql("SELECT snapshot::text FROM {s}.referrals WHERE id = ANY(%s)")

    def read_pg() -> int:
        with store._pool.connection() as conn:
            return len([json.loads(row[0]) for row in conn.execute(sql, [list(ids)])])

    yield read_pg


def latencies(
    store: ReferralStore, label: str, query: Query, runs: int, ids: Sequence[str]
) -> tuple[list[float], list[float]]:
    """``runs`` pairs: the baseline read of the same rows, then the worklist query; times in
    ms of the query, and each pair's ratio (query / baseline)."""
    times, ratios = [], []
    with raw_reader(store, label, ids) as base:
        base()
        for _ in range(runs):
            started = time.perf_counter()
            got = base()
            middle = time.perf_counter()
            found = store.query(query)
            ended = time.perf_counter()
            times.append((ended - middle) * 1000)
            ratios.append((ended - middle) / (middle - started))
            if got != len(ids) or [r.id for r in found] != list(ids):
                wrong.append(f"{query}: the worklist changed between runs")
    return times, ratios


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_worklist(
    store: ReferralStore,
    label: str,
    count: int,
    runs: int,
    size: int,
    built_s: float,
    shapes: Sequence[History],
) -> list[Row]:
    part = f"worklist, {count:,} stored"
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
        reference = million_reference(shapes, count, query)
        found = check_worklist(store, label, name, query, reference)
        times, ratios = latencies(store, label, query, runs, [r.id for r in found])
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
                    note_ratio=ratio_text(ratios) if p == shown[0] else "",
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
    parser.add_argument("--rounds", type=int, help="bulk intake pairs (default 3; 2 --quick)")
    parser.add_argument("--count", type=int, help="referrals of the bulk intake part")
    args = parser.parse_args(argv)
    quick = args.quick
    rounds = args.rounds or (2 if quick else 3)
    loads = os.getloadavg()
    intake_count = args.count or (2_000 if quick else 20_000)
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

        @contextmanager
        def fresh_sqlite(k: int) -> Iterator[ReferralStore]:
            path = os.path.join(workdir, f"intake-{k}.db")
            with open_store(f"sqlite:///{path}") as store:
                yield store
            for leftover in (path, path + "-wal", path + "-shm"):
                if os.path.exists(leftover):
                    os.remove(leftover)

        results += bench_intake(fresh_sqlite, changes, "SQLite", rounds)
        if postgres:
            url = postgres
            results += bench_intake(
                lambda k: postgres_store(url, f"bench_intake_{k}"), changes, "PostgreSQL", rounds
            )
        shapes = templates(500)

        say(f"worklist: building {rows_count:,} referrals in SQLite")
        path = os.path.join(workdir, "million.db")
        with open_store(f"sqlite:///{path}") as store:
            started = time.perf_counter()
            build_sqlite(store, shapes, rows_count)
            built = time.perf_counter() - started
            check_sample(store, rows_count)
            size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
            say("worklist: timing SQLite queries")
            results += bench_worklist(store, "SQLite", rows_count, runs, size, built, shapes)
        os.remove(path)
        if postgres:
            with postgres_store(postgres, "bench_million") as store:
                say(f"worklist: building {rows_count:,} referrals in PostgreSQL")
                started = time.perf_counter()
                build_postgres(store, shapes, rows_count)
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
                results += bench_worklist(
                    store, "PostgreSQL", rows_count, runs, size, built, shapes
                )
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
        f"load average {', '.join(f'{x:.2f}' for x in loads)} before, "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after; "
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
        f"\nchecked: bulk intake counts (driver floor and save_many), a sample of "
        f"{INTAKE_SAMPLE} read back equal; every worklist equal to the reference ranking "
        f"(Query.matches and worklist_key over every stored referral), in every timed run"
    )
    missed = [r for r in results if r.met is False]
    if missed:
        print("missed targets: " + "; ".join(f"{r.store}: {r.what}" for r in missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
