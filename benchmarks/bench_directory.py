"""Directory, matching and scheduling benchmark.

    python benchmarks/bench_directory.py            # full run: 1,000,000 NPPES rows, ~15 minutes
    python benchmarks/bench_directory.py --quick    # 50,000 rows, 10,000 roles: a minute or two
    python benchmarks/bench_directory.py --check    # exit 1 when a target is missed

What it measures, each subject interleaved with its baseline (baseline, subject, baseline,
subject...) so that both see the same machine load, and each result checked:

- **NPPES load into SQLite**: ``load_nppes`` of a generated file in the real 330-column
  layout (``referralkit.testing.write_nppes``, all fields quoted, CRLF; untimed) into a fresh
  SQLite directory file (``synchronous=FULL``). Baseline: reading the same file with
  ``csv.reader`` and doing nothing else. Target: **≥ 20,000 providers/s**, with the resident
  memory after the first tenth of the file within 50 MB of the end (constant memory). Checked:
  every active row is in the directory.
- **match over 100,000 practitioner roles** (memory directory; roles spread over the 96 NUCC
  codes of the shipped subset, five networks, four languages, positions around Hartford, a
  free slot for each in an in-memory scheduler): p50/p95 of ``match(limit=10)`` for referrals
  to each specialist specialty of ``SPECIALTIES`` (a classification such as orthopaedics
  brings its specializations: up to 8,000 candidates). Baseline: the same
  exclusions computed by scanning every role. Target: **p95 ≤ 20 ms**. Checked: every ranked
  candidate holds a code satisfying the specialty, is in network and not excluded.
- **FHIR find + book round trip**: ``FhirScheduler.find_slots`` then ``book`` against
  ``referralkit.testing.fhir_server`` in process (an ``httpx.MockTransport``), minus the time
  the server itself spends answering. Baseline: the same two requests sent with a bare
  ``httpx.Client``. Target: **≤ 5 ms of library overhead**. Checked: every booking is booked.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import json
import os
import platform
import random
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
    default_taxonomy,
    load_nppes,
    match,
    open_directory,
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

    def baseline() -> float:
        started = time.perf_counter()
        with path.open(encoding="utf-8", newline="") as handle:
            count = sum(1 for _ in csv.reader(handle)) - 1
        assert count == rows
        return rows / (time.perf_counter() - started)

    def subject(k: int) -> tuple[float, float]:
        db = work / f"directory-{k}.db"
        directory = open_directory(f"sqlite:///{db}")
        marks: list[float] = []

        def progress(done: int) -> None:
            if done >= rows // 10 and not marks:
                marks.append(rss_mb())

        gc.collect()
        started = time.perf_counter()
        report = load_nppes(directory, path, progress=progress)
        elapsed = time.perf_counter() - started
        growth = rss_mb() - marks[0] if marks else 0.0
        active = rows - report.skipped["deactivated"]
        assert report.refused == ()
        assert directory.count(rk.directory.Location) == active
        directory.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        return rows / elapsed, growth

    base, subj, growth = [], [], []
    for k in range(pairs):
        base.append(baseline())
        rate, grew = subject(k)
        subj.append(rate)
        growth.append(grew)
        say(f"  pair {k + 1}: csv.reader {base[-1]:,.0f} rows/s, load_nppes {rate:,.0f} rows/s")
    return {
        "baseline": statistics.median(base),
        "rate": statistics.median(subj),
        "best": max(subj),
        "growth_mb": max(growth),
    }


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


def bench_match(roles: int, queries: int, pairs: int) -> dict[str, Any]:
    say(f"building {roles:,} practitioner roles…")
    directory, scheduler = build_directory(roles)
    taxonomy = default_taxonomy()
    base_referral = sample_request().referral("bench", NOW)
    rng = random.Random(9)
    asks = [rng.choice(ASKED) for _ in range(queries)]
    every = list(directory.entries(PractitionerRole))

    def baseline() -> list[float]:
        times = []
        for code in asks:
            started = time.perf_counter()
            wanted = taxonomy.satisfying(code)
            found = [
                r
                for r in every
                if wanted.intersection(r.specialties)
                and "acme-hmo-west" in r.network_ids
                and r.accepting_new_patients
            ]
            assert found is not None
            times.append((time.perf_counter() - started) * 1000)
        return times

    def subject() -> list[float]:
        times = []
        for code in asks:
            started = time.perf_counter()
            result = match(base_referral, directory, as_of=NOW, specialty=code,
                           scheduler=scheduler, origin=GeoPoint(41.7658, -72.6734))  # fmt: skip
            times.append((time.perf_counter() - started) * 1000)
            wanted = taxonomy.satisfying(code)
            excluded = {e.reference for e in result.excluded}
            for c in result.ranked:
                assert c.specialty in wanted
                assert c.network is rk.NetworkStatus.IN_NETWORK
                assert c.reference not in excluded
        return times

    base, subj = [], []
    for k in range(pairs):
        base += baseline()
        subj += subject()
        say(f"  pair {k + 1}: match p95 {quantile(subj, 0.95):.2f} ms")
    return {
        "baseline_p95": quantile(base, 0.95),
        "p50": quantile(subj, 0.5),
        "p95": quantile(subj, 0.95),
        "p99": quantile(subj, 0.99),
    }


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
    base, subj = [], []
    for _ in range(pairs):
        base.append(baseline())
        subj.append(subject())
    return {"baseline": statistics.median(base), "overhead": statistics.median(subj)}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--rows", type=int, help="NPPES rows (default 1,000,000; 50,000 quick)")
    parser.add_argument("--roles", type=int, help="practitioner roles (100,000; 10,000 quick)")
    args = parser.parse_args(argv)
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    roles = args.roles or (10_000 if args.quick else 100_000)
    pairs = 2 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="rk-bench-directory-") as tmp:
        nppes = bench_nppes(rows, pairs, Path(tmp))
    matched = bench_match(roles, 50 if args.quick else 200, pairs)
    fhir = bench_fhir(20 if args.quick else 100, 3 if args.quick else 5)
    table = [
        ("NPPES → SQLite", f"load_nppes, {rows:,} rows", nppes["rate"], "rows/s",
         f"≥ {TARGETS['nppes']:,.0f}", nppes["rate"] >= TARGETS["nppes"],
         f"csv.reader alone {nppes['baseline']:,.0f} rows/s"),
        ("NPPES → SQLite", "memory growth after the first tenth", nppes["growth_mb"], "MB",
         "≤ 50", nppes["growth_mb"] <= 50, ""),
        ("match", f"p95 over {roles:,} roles (p50 {matched['p50']:.2f}, p99 {matched['p99']:.2f})",
         matched["p95"], "ms", f"≤ {TARGETS['match_p95_ms']:g}",
         matched["p95"] <= TARGETS["match_p95_ms"],
         f"a scan of every role: p95 {matched['baseline_p95']:.2f} ms"),
        ("FHIR find + book", "library overhead per round trip", fhir["overhead"], "ms",
         f"≤ {TARGETS['fhir_overhead_ms']:g}", fhir["overhead"] <= TARGETS["fhir_overhead_ms"],
         f"bare httpx for the same two requests: {fhir['baseline']:.2f} ms"),
    ]  # fmt: skip
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| part | measure | result | target | met | baseline |")
    print("|---|---|---:|---:|:---:|---|")
    missed = False
    for part, what, value, unit, target, met, note in table:
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
        verdict = "yes" if met else "**no**"
        print(f"| {part} | {what} | {shown} {unit} | {target} | {verdict} | {note} |")
        missed |= not met
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
