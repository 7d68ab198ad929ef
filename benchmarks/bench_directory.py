"""Directory, matching and scheduling benchmark.

    python benchmarks/bench_directory.py            # full: 1,000,000 NPPES rows, 20k + 100k roles
    python benchmarks/bench_directory.py --quick    # 50,000 rows, 10,000 roles: a few minutes
    python benchmarks/bench_directory.py --check    # exit 1 when a target is missed

Each subject runs interleaved with its baseline on the same data (baseline, subject,
baseline, subject...), so both see the same machine load; the table gives medians, the
subject/baseline ratio of each pair (median, min, max), CPU-time figures beside wall-clock
ones (on a shared machine the wall clock measures the neighbours too) and the load average
(``os.getloadavg()``) at the start and end of each part. Every result is checked.

- **NPPES load into SQLite**: ``load_nppes`` of a generated file in the real 330-column
  layout (``referralkit.testing.write_nppes``, all fields quoted, CRLF; untimed) into a fresh
  SQLite directory file (``synchronous=FULL``). Baseline: the previous path, every entry built
  then ``SqlDirectory.add`` in batches of 15,000 entries. Target: **≥ 20,000 providers/s**,
  with the resident memory after the first tenth of the file within 50 MB of the end
  (constant memory). Checked: both paths store the same rows (every table compared row for
  row on the first pair), every active row is in the directory.
- **match over 20,000 and 100,000 practitioner roles** (roles spread over the 96 NUCC codes
  of the shipped subset, two of five networks each, four languages, positions around
  Hartford, a free slot each in an in-memory scheduler): p50/p95/p99 of ``match(limit=10)``
  for referrals to the specialist specialties of ``SPECIALTIES`` (a classification such as
  orthopaedics brings its specializations: up to 8,400 candidates at 100,000 roles, 3,400 in
  network), in the memory directory and in the stored ones: SQLite (a file, WAL) and
  PostgreSQL (``--postgres URL``, default the local test server; a schema of its own, dropped
  after; left out with ``--postgres ''``). Per query the memory directory then each stored
  one run back to back (the pair); the ratio is stored/memory wall clock, per pair (median,
  min, max). CPU time is this process's only (PostgreSQL's server time is not in it). Target:
  **p95 ≤ 20 ms** for every directory. Checked: every stored result equals memory's (ranking,
  scores, reasons, exclusions, counts); memory's ranks and counts what ``excluded=None``
  (every candidate read) ranks and counts; every ranked candidate holds a code satisfying
  the specialty and is in network.
- **FHIR find + book round trip**: ``FhirScheduler.find_slots`` then ``book`` against
  ``referralkit.testing.fhir_server`` in process (the ``httpx.MockTransport`` server the
  tests in ``tests/scheduling`` use), minus the time the server itself spends answering.
  Baseline: the same two requests sent with a bare ``httpx.Client``. Target: **≤ 5 ms of
  library overhead**. Checked: every booking is booked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import referralkit as rk
from referralkit.directory import (
    GeoPoint,
    Location,
    MemoryDirectory,
    PractitionerRole,
    Refusal,
    SqlDirectory,
    default_taxonomy,
    load_nppes,
    match,
    open_directory,
    read_nppes,
)
from referralkit.scheduling import MemoryScheduler, Window
from referralkit.scheduling.fhir import FhirScheduler
from referralkit.testing import sample_request, write_nppes
from referralkit.testing.fhir_server import FhirTestServer

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
TARGETS = {"nppes": 20_000.0, "match_p95_ms": 20.0, "fhir_overhead_ms": 5.0}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


# --------------------------------------------------------------------------- NPPES


def bench_nppes(rows: int, pairs: int, work: Path) -> dict[str, Any]:
    path = work / "npidata_pfile.csv"
    say(f"writing {rows:,} NPPES rows…")
    write_nppes(path, rows, seed=1)
    load = [os.getloadavg()[0]]

    def fresh(name: str) -> tuple[Path, SqlDirectory]:
        db = work / name
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        directory = open_directory(f"sqlite:///{db}")
        assert isinstance(directory, SqlDirectory)
        return db, directory

    def baseline() -> tuple[float, float, Path]:
        db, directory = fresh("baseline.db")
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        pending: list[Any] = []
        for item in read_nppes(path):  # what load_nppes did before: entries, then add()
            if isinstance(item, Refusal):
                continue
            pending.append(item)
            if len(pending) >= 15_000:
                directory.add(pending)
                pending = []
        directory.add(pending)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        directory.close()
        return rows / wall, rows / cpu, db

    def subject() -> tuple[float, float, float, Path]:
        db, directory = fresh("subject.db")
        marks: list[float] = []

        def progress(done: int) -> None:
            if done >= rows // 10 and not marks:
                marks.append(rss_mb())

        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        report = load_nppes(directory, path, progress=progress)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        growth = rss_mb() - marks[0] if marks else 0.0
        active = rows - report.skipped["deactivated"]
        assert report.refused == ()
        assert directory.count(rk.directory.Location) == active
        directory.close()
        return rows / wall, rows / cpu, growth, db

    base, subj, base_cpu, subj_cpu, growth, ratios = [], [], [], [], [], []
    for k in range(pairs):
        rate, cpu_rate, old_db = baseline()
        base.append(rate)
        base_cpu.append(cpu_rate)
        rate, cpu_rate, grew, new_db = subject()
        subj.append(rate)
        subj_cpu.append(cpu_rate)
        growth.append(grew)
        ratios.append(subj[-1] / base[-1])
        if k == 0:
            say("  comparing the two directories row for row…")
            assert same_tables(old_db, new_db), "the two paths stored different rows"
        say(
            f"  pair {k + 1}: entries then add() {base[-1]:,.0f} rows/s, "
            f"load_nppes {subj[-1]:,.0f} rows/s ({subj_cpu[-1]:,.0f} per CPU-second), "
            f"load {os.getloadavg()[0]:.1f}"
        )
    load.append(os.getloadavg()[0])
    return {
        "baseline": statistics.median(base),
        "baseline_cpu": statistics.median(base_cpu),
        "rate": statistics.median(subj),
        "rate_cpu": statistics.median(subj_cpu),
        "best": max(subj),
        "ratio": (statistics.median(ratios), min(ratios), max(ratios)),
        "growth_mb": max(growth),
        "load": load,
    }


def same_tables(a: Path, b: Path) -> bool:
    """Whether two directory files hold the same rows in every table (streamed)."""
    queries = (
        "SELECT kind, id, data FROM directory_entries ORDER BY kind, id",
        "SELECT kind, code, id FROM directory_specialties ORDER BY kind, code, id",
        "SELECT kind, network, id, source FROM directory_networks "
        "ORDER BY kind, network, id, source",
        "SELECT * FROM directory_candidates ORDER BY kind, code, id",
    )
    left, right = sqlite3.connect(a), sqlite3.connect(b)
    try:
        for query in queries:
            for x, y in itertools.zip_longest(left.execute(query), right.execute(query)):
                if x != y:
                    return False
    finally:
        left.close()
        right.close()
    return True


# --------------------------------------------------------------------------- match

CODES = sorted(default_taxonomy())  # roles spread over every code of the shipped subset
ASKED = sorted(  # what referrals ask for: the specialist specialties, not primary care
    code
    for name, code in rk.directory.SPECIALTIES.items()
    if name not in ("family-medicine", "internal-medicine", "pediatrics", "emergency-medicine")
)
NETWORKS = ["net-a", "net-b", "net-c", "net-d", "acme-hmo-west"]
LANGUAGES = ["en", "es", "zh", "vi"]


def build_directory(roles: int) -> tuple[MemoryDirectory, MemoryScheduler]:
    rng = random.Random(5)
    directory = MemoryDirectory()
    scheduler = MemoryScheduler()
    batch: list[Any] = []
    for k in range(roles):
        batch.append(Location(f"l{k}", position=GeoPoint(41.7 + rng.uniform(-1, 1),
                                                         -72.7 + rng.uniform(-1, 1))))  # fmt: skip
        batch.append(
            PractitionerRole(
                f"r{k:06d}",
                specialties=(rng.choice(CODES),),
                network_ids=tuple(rng.sample(NETWORKS, 2)),
                languages=("en", rng.choice(LANGUAGES)),
                accepting_new_patients=rng.random() < 0.8,
                interpreter_available=rng.random() < 0.3,
                location_ids=(f"l{k}",),
            )
        )
        scheduler.open_slots(
            f"PractitionerRole/r{k:06d}", NOW + dt.timedelta(hours=rng.randint(1, 600)), count=1
        )
        if len(batch) >= 10_000:
            directory.add(batch)
            batch = []
    directory.add(batch)
    return directory, scheduler


POSTGRES_URL = os.environ.get("RK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def stored_directories(
    memory: MemoryDirectory, work: Path, postgres: str | None
) -> tuple[list[tuple[str, SqlDirectory]], list[str], str | None]:
    """The memory directory's locations and roles in SQLite and, when it answers, in a
    PostgreSQL schema of the benchmark's own (dropped afterwards); and why not, if not."""
    out: list[tuple[str, SqlDirectory]] = []
    notes: list[str] = []
    db = work / f"match-{memory.count(PractitionerRole)}.db"
    stored = open_directory(f"sqlite:///{db}")
    assert isinstance(stored, SqlDirectory)
    out.append(("sqlite", stored))
    schema = None
    if postgres:
        schema = f"rk_bench_{os.getpid()}_{memory.count(PractitionerRole)}"
        try:
            pg = open_directory(f"{postgres}?schema={schema}")
        except Exception as error:
            notes.append(f"PostgreSQL not measured ({type(error).__name__})")
            schema = None
        else:
            assert isinstance(pg, SqlDirectory)
            out.append(("postgres", pg))
    for name, directory in out:
        started = time.perf_counter()
        for kind in (Location, PractitionerRole):
            rows = list(memory.entries(kind))
            for k in range(0, len(rows), 20_000):
                directory.add(rows[k : k + 20_000])
        say(f"  stored in {name}: {time.perf_counter() - started:.1f} s")
    return out, notes, schema


def drop_schema(postgres: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(schema)
            )
        )


def bench_match(
    roles: int, queries: int, pairs: int, work: Path, postgres: str | None
) -> dict[str, Any]:
    """Per query, the memory directory then each stored one (the pair: same referral, same
    moment); every stored result checked equal to memory's, memory's to ``excluded=None``."""
    say(f"building {roles:,} practitioner roles…")
    memory, scheduler = build_directory(roles)
    stored, notes, schema = stored_directories(memory, work, postgres)
    taxonomy = default_taxonomy()
    referral = sample_request().referral("bench", NOW)
    origin = GeoPoint(41.7658, -72.6734)
    rng = random.Random(9)
    asks = [rng.choice(ASKED) for _ in range(queries)]
    names = ["memory", *(name for name, _ in stored)]
    directories: list[Any] = [memory, *(d for _, d in stored)]
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names[1:]}
    load = [os.getloadavg()[0]]
    try:
        for pair in range(pairs):
            for code in asks:
                results = []
                for name, directory in zip(names, directories, strict=True):
                    started, cpu = time.perf_counter(), time.process_time()
                    result = match(referral, directory, as_of=NOW, specialty=code,
                                   scheduler=scheduler, origin=origin)  # fmt: skip
                    walls[name].append((time.perf_counter() - started) * 1000)
                    cpus[name].append((time.process_time() - cpu) * 1000)
                    results.append(result)
                first = results[0]
                for name, result in zip(names[1:], results[1:], strict=True):
                    assert result == first, f"{name} ranks differently from memory ({code})"
                    ratios[name].append(walls[name][-1] / walls["memory"][-1])
                wanted = taxonomy.satisfying(code)
                for c in first.ranked:
                    assert c.specialty in wanted
                    assert c.network is rk.NetworkStatus.IN_NETWORK
                if pair == 0:  # untimed: the bounded listing counts what the full one lists
                    every = match(referral, memory, as_of=NOW, specialty=code,
                                  scheduler=scheduler, origin=origin, excluded=None)  # fmt: skip
                    assert every.ranked == first.ranked
                    assert (every.excluded_count, every.excluded_by) == (
                        first.excluded_count,
                        first.excluded_by,
                    )
                    assert len(first.excluded) <= 20
    finally:
        for _, directory in stored:
            directory.close()
        if schema is not None and postgres:
            drop_schema(postgres, schema)
    load.append(os.getloadavg()[0])
    out: dict[str, Any] = {"notes": notes}
    for name in names:
        w, c = walls[name], cpus[name]
        r = ratios.get(name)
        out[name] = {
            "p50": quantile(w, 0.5),
            "p95": quantile(w, 0.95),
            "p99": quantile(w, 0.99),
            "cpu_p50": quantile(c, 0.5),
            "cpu_p95": quantile(c, 0.95),
            "ratio": (statistics.median(r), min(r), max(r)) if r else None,
            "load": load,
        }
        say(
            f"  {name}, {roles:,} roles: match p95 {out[name]['p95']:.2f} ms "
            f"(CPU {out[name]['cpu_p95']:.2f}), load {load}"
        )
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- FHIR


def bench_fhir(rounds: int, pairs: int) -> dict[str, Any]:
    server = FhirTestServer()
    server.add_schedule("s", "PractitionerRole/r1")
    slots = 2 * pairs * rounds + 10
    for k in range(slots):
        server.add_slot(f"slot-{k}", "s", NOW + dt.timedelta(minutes=30 * k))
    spent = [0.0]
    handle = server.handle

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return handle(*args)
        finally:
            spent[0] += time.perf_counter() - started

    server.handle = timed  # type: ignore[method-assign]
    transport = server.transport()
    window = Window(NOW, NOW + dt.timedelta(days=400))
    referral = sample_request().referral("bench", NOW)
    adapter = FhirScheduler(server.base, client=httpx.Client(transport=transport))
    raw = httpx.Client(transport=transport)
    keys = iter(range(10**9))

    def subject() -> float:
        spent[0] = 0.0
        started = time.perf_counter()
        for _ in range(rounds):
            slot = adapter.find_slots("PractitionerRole/r1", window, limit=1)[0]
            booking = adapter.book(slot, referral, idempotency_key=f"k{next(keys)}")
            assert booking.status is rk.scheduling.BookingStatus.BOOKED
        return ((time.perf_counter() - started) - spent[0]) * 1000 / rounds

    def baseline() -> float:
        spent[0] = 0.0
        started = time.perf_counter()
        for _ in range(rounds):
            params = [
                ("schedule.actor", "PractitionerRole/r1"),
                ("status", "free"),
                ("start", f"ge{window.start.isoformat()}"),
                ("start", f"lt{window.end.isoformat()}"),
                ("_count", "1"),
            ]
            found = raw.get(f"{server.base}Slot", params=params).json()
            slot = found["entry"][0]["resource"]
            key = f"k{next(keys)}"
            body = {"resourceType": "Appointment", "status": "booked",
                    "slot": [{"reference": f"Slot/{slot['id']}"}],
                    "identifier": [{"system": "urn:referralkit:booking-key", "value": key}],
                    "participant": [{"actor": {"reference": "PractitionerRole/r1"}}]}  # fmt: skip
            answer = raw.post(f"{server.base}Appointment", content=json.dumps(body),
                              headers={"Content-Type": "application/fhir+json"})  # fmt: skip
            assert answer.status_code == 201
        return ((time.perf_counter() - started) - spent[0]) * 1000 / rounds

    adapter.find_slots("PractitionerRole/r1", window, limit=1)  # reads the capabilities
    load = [os.getloadavg()[0]]
    base, subj = [], []
    for _ in range(pairs):
        base.append(baseline())
        subj.append(subject())
    load.append(os.getloadavg()[0])
    extra = [s - b for s, b in zip(subj, base, strict=True)]
    return {
        "baseline": statistics.median(base),
        "overhead": statistics.median(subj),
        "extra": (statistics.median(extra), min(extra), max(extra)),
        "load": load,
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--rows", type=int, help="NPPES rows (default 1,000,000; 50,000 quick)")
    parser.add_argument(
        "--roles",
        type=int,
        nargs="+",
        help="practitioner roles, one match part per number (20,000 and 100,000; 10,000 quick)",
    )
    parser.add_argument(
        "--postgres",
        default=POSTGRES_URL,
        help="PostgreSQL for the stored directory (a schema of its own, dropped after); "
        "'' to leave it out",
    )
    parser.add_argument("--pairs", type=int, help="pairs per part (3; 2 quick)")
    parser.add_argument("--queries", type=int, help="match queries per pair (200; 50 quick)")
    parser.add_argument(
        "--only", choices=["nppes", "match", "fhir"], action="append", help="run only these parts"
    )
    args = parser.parse_args(argv)
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    sizes = args.roles or ([10_000] if args.quick else [20_000, 100_000])
    pairs = args.pairs or (2 if args.quick else 3)
    parts = set(args.only or ["nppes", "match", "fhir"])
    table: list[tuple[str, str, float, str, str, bool | None, str]] = []
    with tempfile.TemporaryDirectory(prefix="rk-bench-directory-") as tmp:
        if "nppes" in parts:
            n = bench_nppes(rows, pairs, Path(tmp))
            r = n["ratio"]
            table += [
                ("NPPES → SQLite", f"load_nppes, {rows:,} rows, wall clock", n["rate"], "rows/s",
                 f"≥ {TARGETS['nppes']:,.0f}", n["rate"] >= TARGETS["nppes"],
                 f"entries then add(): {n['baseline']:,.0f} rows/s; ratio {r[0]:.2f} "
                 f"(min {r[1]:.2f}, max {r[2]:.2f}); load {n['load'][0]:.1f} → {n['load'][1]:.1f}"),
                ("NPPES → SQLite", "the same per CPU-second", n["rate_cpu"], "rows/s", "", None,
                 f"entries then add(): {n['baseline_cpu']:,.0f} rows per CPU-second"),
                ("NPPES → SQLite", "memory growth after the first tenth", n["growth_mb"], "MB",
                 "≤ 50", n["growth_mb"] <= 50, ""),
            ]  # fmt: skip
        if "match" in parts:
            queries = args.queries or (50 if args.quick else 200)
            for roles in sizes:
                m = bench_match(roles, queries, pairs, Path(tmp), args.postgres or None)
                for note in m.pop("notes"):
                    table.append(("match", note, 0.0, "", "", None, ""))
                for name, x in m.items():
                    r = x["ratio"]
                    paired = (
                        f"paired with memory: ratio {r[0]:.2f} (min {r[1]:.2f}, max {r[2]:.2f}); "
                        if r
                        else ""
                    )
                    table.append(
                        (f"match ({name})",
                         f"p95 over {roles:,} roles (p50 {x['p50']:.2f}, p99 {x['p99']:.2f}; "
                         f"CPU p50 {x['cpu_p50']:.2f}, p95 {x['cpu_p95']:.2f})",
                         x["p95"], "ms", f"≤ {TARGETS['match_p95_ms']:g}",
                         x["p95"] <= TARGETS["match_p95_ms"],
                         f"{paired}load {x['load'][0]:.1f} → {x['load'][1]:.1f}")
                    )  # fmt: skip
    if "fhir" in parts:
        f = bench_fhir(20 if args.quick else 100, 3 if args.quick else 5)
        e = f["extra"]
        table.append(
            ("FHIR find + book", "library overhead per round trip (server time excluded)",
             f["overhead"], "ms", f"≤ {TARGETS['fhir_overhead_ms']:g}",
             f["overhead"] <= TARGETS["fhir_overhead_ms"],
             f"bare httpx, same two requests: {f['baseline']:.2f} ms; adapter minus bare "
             f"{e[0]:.2f} ms (min {e[1]:.2f}, max {e[2]:.2f}); "
             f"load {f['load'][0]:.1f} → {f['load'][1]:.1f}")
        )  # fmt: skip
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| part | measure | result | target | met | baseline, pairs, load average |")
    print("|---|---|---:|---:|:---:|---|")
    missed = False
    for part, what, value, unit, target, met, note in table:
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
        verdict = "" if met is None else ("yes" if met else "**no**")
        print(f"| {part} | {what} | {shown} {unit} | {target} | {verdict} | {note} |")
        missed |= met is False
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
