"""Scale benchmark: the read and write paths at 10,000, 100,000 and 1,000,000 referrals.

    python benchmarks/bench_scale.py                  # 10k, 100k, 1M on SQLite (hours)
    python benchmarks/bench_scale.py --sizes 10000,100000
    python benchmarks/bench_scale.py --quick          # 1,000 and 3,000: checks it runs, minutes
    python benchmarks/bench_scale.py --check          # exit 1 when a target is missed
    python benchmarks/bench_scale.py --postgres URL   # PostgreSQL too (load and worklist)

**The build.** The store grows from one size to the next by a bulk path that writes snapshots
and events directly: :func:`referralkit.synth.population` requests become referrals as
received (``IntakeRequest.referral``), each with its ``created`` event, written with
``restore_many`` in batches of 1,000. A sample of the built referrals is checked against the
desk: each loads equal to its snapshot, replays from its events, and a desk on a copy of it
takes it on (accept, then schedule) with the versions following.

**The measurements**, at every size, each in its own process (so each reports its own peak
RSS, ``VmHWM``), on the same SQLite file in this order:

- *load by id*: p50 and p95 of ``store.load`` of random ids (2,000 loads);
- *worklist top-50*: p50 and p95 of ``store.query(Query(open_only=True, limit=50))`` (the
  store's own query, snapshots turned back into referrals included), checked equal to the
  reference ranking (``worklist_key`` over every referral built or taken in, kept by the
  build);
- *FHIR export*: ``referralkit fhir export --no-validate`` of the whole store into a sink
  that counts lines (checked: one Bundle per referral);
- *KPIs*: ``analytics.summary`` over the whole store (checked: ``total`` is the count);
- *audit*: ``referralkit audit --json`` of the whole store (checked: exit status 0);
- *intake*: 500 new requests taken in by the desk on the grown store (checked: the count
  grows by 500); last, since it changes the store (its referrals join the reference
  ranking).

Each figure is printed with its **growth exponent** from the size before: ``log(c2 / c1) /
log(n2 / n1)`` of the per-operation time (load, worklist, intake) or of the whole run's time
(export, KPIs, audit): 0 is flat, 1 linear.

**Targets** (issue 16), judged at every size measured (``--check`` exits 1 on a miss): FHIR
export ≥ 1,500 referrals/s with peak RSS ≤ 300 MB; KPIs at the rate that does 1,000,000 in
≤ 60 s, peak RSS ≤ 1 GB; worklist top-50 p95 ≤ 20 ms; load by id p50 ≤ 0.3 ms; growth
exponents ≤ 0.1 for worklist and load, ≤ 1.05 for export and KPIs. A wrong result always
exits 1.

Run it niced on a shared machine; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import heapq
import io
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import referralkit as rk
from referralkit import synth
from referralkit.errors import GuardError
from referralkit.events import replay
from referralkit.storage import History, MemoryStore, Query, ReferralStore, open_store
from referralkit.storage._base import worklist_key

ACTOR = rk.Actor("bench-scale", {rk.Role.COORDINATOR})
START = synth.DEFAULT_START
AS_OF = START + dt.timedelta(days=30)
BATCH = 1_000
TOP = 50
LOADS = 2_000
WORKLIST_RUNS = 200
INTAKE = 500
SAMPLE = 12

TARGETS = {
    "export_rate": 1_500.0,
    "export_rss_mb": 300.0,
    "kpi_seconds_per_million": 60.0,
    "kpi_rss_mb": 1_024.0,
    "worklist_p95_ms": 20.0,
    "load_p50_ms": 0.3,
    "flat_exponent": 0.1,
    "linear_exponent": 1.05,
    "frame_rate": 50_000.0,  # issue 12
    "frame_rss_mb": 2_048.0,
}

wrong: list[str] = []  # results that differ from their reference (always fatal)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


Key = tuple[int, str, str, str]  # worklist_key as JSON: -rank, due (ISO), received (ISO), id


def key_of(referral: rk.Referral) -> Key:
    rank, due, received, referral_id = worklist_key(referral)
    return (rank, due.isoformat(), received.isoformat(), referral_id)


# --------------------------------------------------------------------------- the build


def built(first: int, count: int) -> Iterator[History]:
    """Referrals ``first`` .. ``first + count - 1``: synthetic requests as received, each with
    its ``created`` event (what ``restore_many`` writes directly)."""
    from referralkit._validators import JsonObject

    # one seed per thousand referrals: any referral is rebuilt from at most 1,000 requests
    seed = 1_000 + first // 1_000
    skip = first % 1_000
    made = 0
    while made < count:
        wanted = min(count - made, 1_000 - skip)
        requests = synth.population(skip + wanted, seed, START)
        for index, request in enumerate(requests):
            if index < skip:
                continue
            n = first + made
            at = START + dt.timedelta(seconds=n)
            referral = request.referral(f"s{n:07d}", at, received=True)
            payload = JsonObject(referral=rk.to_dict(referral))
            event = rk.ReferralEvent(referral.id, 1, 0, at, ACTOR.id, "created", payload)
            yield referral, [event]
            made += 1
        seed, skip = seed + 1, 0


def grow(store: ReferralStore, first: int, count: int, reference: list[Key]) -> float:
    """Write referrals ``first`` .. ``first + count - 1``; keeps the ``TOP`` smallest worklist
    keys in ``reference``; the seconds taken."""
    started = time.perf_counter()
    batch: list[History] = []
    keys = list(reference)
    for history in built(first, count):
        batch.append(history)
        keys.append(key_of(history[0]))
        if len(batch) == BATCH:
            store.restore_many(batch)
            batch = []
            keys = heapq.nsmallest(TOP, keys)
            if (first + count) >= 10 * BATCH and store.count() % (10 * BATCH) == 0:
                say(f"  built {store.count():,}")
    if batch:
        store.restore_many(batch)
    reference[:] = heapq.nsmallest(TOP, keys)
    return time.perf_counter() - started


def check_build(store: ReferralStore, total: int) -> None:
    """A sample of the built referrals against the desk: each loads equal to a fresh build of
    it, replays from its events, and a desk takes it on (accept, schedule) on a copy."""
    for n in random.Random(total).sample(range(total), min(SAMPLE, total)):
        referral_id = f"s{n:07d}"
        stored = store.load(referral_id)
        events = store.events(referral_id)
        expected = next(built(n, 1))
        if (stored, events) != (expected[0], list(expected[1])):
            wrong.append(f"build: {referral_id} reads back different from its build")
        if replay(events) != stored:
            wrong.append(f"build: {referral_id} does not replay to its snapshot")
        copy = MemoryStore()
        copy.restore_many([(stored, events)])
        clock = rk.FakeClock(AS_OF)
        desk = rk.ReferralDesk(copy, clock=clock)
        try:
            accepted = desk.accept(ACTOR, referral_id)
        except GuardError:  # an incomplete request: the desk holds it back, as it should
            continue
        provider = stored.target.id if stored.target is not None else "bench-specialist"
        try:
            last = desk.schedule(
                ACTOR, referral_id, AS_OF + dt.timedelta(days=7), provider_id=provider
            )
        except GuardError:  # authorization pending: refused, as it should be
            last = accepted
        if accepted.version != stored.version + 1 or last.version > stored.version + 2:
            wrong.append(f"build: {referral_id}: the desk's versions do not follow the build")
        if replay(copy.events(referral_id)) != last:
            wrong.append(f"build: {referral_id}: the desk's history does not replay")


# --------------------------------------------------------------------------- measurements
# Each runs in a child process: ``bench_scale.py --child NAME URL STATE`` prints one JSON line.


def peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return math.nan  # pragma: no cover - Linux only


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Sink(io.TextIOBase):
    """A stdout that counts lines and keeps nothing."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)


def measure_load(url: str, state: dict[str, Any]) -> dict[str, Any]:
    total = state["total"]
    prefix = state.get("prefix", "s")
    ids = [f"{prefix}{n:07d}" for n in random.Random(5).choices(range(state["built"]), k=LOADS)]
    with open_store(url) as store:
        for referral_id in ids[:50]:  # warm
            store.load(referral_id)
        times, cpu = [], []
        for referral_id in ids:
            started, used = time.perf_counter(), time.process_time()
            referral = store.load(referral_id)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - used) * 1000)
            if referral.id != referral_id:
                wrong.append(f"load: asked {referral_id}, got another")
    return {
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "cpu_ms": percentile(cpu, 50),
        "n": total,
    }


def measure_worklist(url: str, state: dict[str, Any]) -> dict[str, Any]:
    query = Query(open_only=True, limit=TOP)
    reference = [k[3] for k in sorted(map(tuple, state["reference"]))]
    with open_store(url) as store:
        first = store.query(query)
        if [r.id for r in first] != reference:
            wrong.append("worklist: top-50 differs from the reference ranking")
        if [key_of(r) for r in first] != sorted(map(tuple, state["reference"])):
            wrong.append("worklist: the rows' keys differ from the reference ranking's")
        times, cpu = [], []
        for _ in range(WORKLIST_RUNS):
            started, used = time.perf_counter(), time.process_time()
            found = store.query(query)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - used) * 1000)
            if len(found) != TOP or found[0].id != reference[0]:
                wrong.append("worklist: changed between runs")
    return {
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "cpu_ms": percentile(cpu, 95),
    }


def _cli(argv: list[str]) -> tuple[int, int, float, float]:
    """Exit status, lines written, wall and CPU seconds of the CLI run with ``argv``."""
    from referralkit import cli

    sink = Sink()
    started, used = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
        status = cli.main(argv)
    return status, sink.lines, time.perf_counter() - started, time.process_time() - used


def measure_export(url: str, state: dict[str, Any]) -> dict[str, Any]:
    status, lines, seconds, cpu = _cli(["fhir", "export", "--no-validate", "--db", url])
    if (status, lines) != (0, state["total"]):
        wrong.append(f"export: status {status}, {lines:,} Bundles for {state['total']:,}")
    return {"seconds": seconds, "rate": state["total"] / seconds, "cpu_seconds": cpu}


def as_of_of(state: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(state["as_of"]) if "as_of" in state else AS_OF


def measure_kpis(url: str, state: dict[str, Any]) -> dict[str, Any]:
    from referralkit import analytics

    with open_store(url) as store:
        started, used = time.perf_counter(), time.process_time()
        kpis = analytics.summary(store, as_of_of(state))
        seconds, cpu = time.perf_counter() - started, time.process_time() - used
    if kpis.total != state["total"]:
        wrong.append(f"KPIs: total {kpis.total:,}, stored {state['total']:,}")
    return {"seconds": seconds, "rate": state["total"] / seconds, "cpu_seconds": cpu}


def measure_audit(url: str, state: dict[str, Any]) -> dict[str, Any]:
    as_of = AS_OF.strftime("%Y-%m-%dT%H:%M")
    status, lines, seconds, cpu = _cli(["audit", "--db", url, "--json", "--as-of", as_of])
    if status != 0 or lines < 1:
        wrong.append(f"audit: status {status}")
    return {"seconds": seconds, "rate": state["total"] / seconds, "cpu_seconds": cpu}


def measure_intake(url: str, state: dict[str, Any]) -> dict[str, Any]:
    # a seed of its own per size: the same requests again would be taken in once (idempotent)
    requests = list(synth.population(INTAKE, 99_000_000 + state["total"], AS_OF))
    clock = rk.FakeClock(AS_OF)
    with open_store(url) as store:
        desk = rk.ReferralDesk(store, clock=clock, new_id=synth.id_factory(state["total"]))
        before = store.count()
        times, keys = [], []
        for request in requests:
            started = time.perf_counter()
            referral = desk.intake(ACTOR, request)
            times.append((time.perf_counter() - started) * 1000)
            keys.append(key_of(referral))
        after = store.count()
    if after != before + INTAKE:
        wrong.append(f"intake: {after - before} referrals stored for {INTAKE} requests")
    return {"p50_ms": percentile(times, 50), "ms_per_referral": sum(times) / INTAKE, "keys": keys}


def measure_ranked(url: str, state: dict[str, Any]) -> dict[str, Any]:
    """The desk's ranked worklist (``desk.worklist(limit=50)``, what a coordinator reads) on
    a new desk each call (cold: it reads its candidates' worklist digests; the first call,
    timed apart as ``first_ms``, writes those a store built before them lacks); checked: the
    same head every call, its rows in rank order, each row's key what ``assess`` gives from
    the stored history."""
    from referralkit.worklist import assess

    as_of = as_of_of(state)
    with open_store(url) as store:
        started = time.perf_counter()
        first = rk.ReferralDesk(store, clock=rk.FakeClock(as_of)).worklist(ACTOR, limit=TOP)
        first_ms = (time.perf_counter() - started) * 1000
        keys = [item.key for item in first]
        if len(first) != TOP or keys != sorted(keys):
            wrong.append("ranked worklist: not the first rows in rank order")
        for item in first[:10]:
            referral, events = store.histories([item.referral_id])[0]
            if assess(referral, events, as_of).key != item.key:
                wrong.append(f"ranked worklist: {item.referral_id}'s key is not assess's")
        head = [item.referral_id for item in first]
        times, cpu = [], []
        for _ in range(WORKLIST_RUNS // 2):
            desk = rk.ReferralDesk(store, clock=rk.FakeClock(as_of))
            started, used = time.perf_counter(), time.process_time()
            found = desk.worklist(ACTOR, limit=TOP)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - used) * 1000)
            if [item.referral_id for item in found] != head:
                wrong.append("ranked worklist: changed between runs")
    return {
        "first_ms": first_ms,
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "cpu_ms": percentile(cpu, 95),
    }


def _frame(url: str, state: dict[str, Any], name: str) -> dict[str, Any]:
    import pandas  # noqa: F401 - imported before the timing, as a notebook has it
    import pyarrow  # noqa: F401

    from referralkit import analytics

    deid = analytics.Deidentifier(key=b"benchmark-key-0123456789abcdef!!")
    with open_store(url) as store:
        started, used = time.perf_counter(), time.process_time()
        frame = analytics.referrals_frame(store, as_of=as_of_of(state), deidentify=deid)
        seconds, cpu = time.perf_counter() - started, time.process_time() - used
    if len(frame) != state["total"]:
        wrong.append(f"{name}: {len(frame):,} rows for {state['total']:,} referrals")
    return {"seconds": seconds, "rate": state["total"] / seconds, "cpu_seconds": cpu}


def measure_frame_fill(url: str, state: dict[str, Any]) -> dict[str, Any]:
    """The first ``referrals_frame``: every history replayed, the analytics cache filled."""
    return _frame(url, state, "frame (cache fill)")


def measure_frame(url: str, state: dict[str, Any]) -> dict[str, Any]:
    """``referrals_frame`` through the filled analytics cache (warm)."""
    return _frame(url, state, "frame")


def measure_kpi_table(url: str, state: dict[str, Any]) -> dict[str, Any]:
    """``analytics.kpis(store, as_of=...)``: the KPI table of the store (warm cache; only the
    columns its KPIs read are decompressed and converted); checked: its total is the count,
    and up to 10,000 referrals its figures are ``summary``'s (which replays every history)."""
    import pandas  # noqa: F401 - imported before the timing, as a notebook has it
    import pyarrow  # noqa: F401

    from referralkit import analytics

    as_of = as_of_of(state)
    deid = analytics.Deidentifier(key=b"benchmark-key-0123456789abcdef!!")
    with open_store(url) as store:
        started, used = time.perf_counter(), time.process_time()
        table = analytics.kpis(store, as_of=as_of, deidentify=deid)
        seconds, cpu = time.perf_counter() - started, time.process_time() - used
        total = int(table.loc["all", "referrals"])
        if total != state["total"]:
            wrong.append(f"KPI table: {total:,} referrals, stored {state['total']:,}")
        if state["total"] <= 10_000:
            kpis = analytics.summary(store, as_of)
            if (int(table.loc["all", "completed"]), int(table.loc["all", "open"])) != (
                kpis.completed,
                kpis.open,
            ):
                wrong.append("KPI table: completed/open differ from summary's")
    return {"seconds": seconds, "rate": state["total"] / seconds, "cpu_seconds": cpu}


MEASURES = {
    "load": measure_load,
    "worklist": measure_worklist,
    "export": measure_export,
    "kpis": measure_kpis,
    "audit": measure_audit,
    "intake": measure_intake,
}
STORE_MEASURES = {
    "load": measure_load,
    "ranked": measure_ranked,
    "frame_fill": measure_frame_fill,
    "frame": measure_frame,
    "kpi_table": measure_kpi_table,
    "kpis": measure_kpis,
    "export": measure_export,
}
ALL_MEASURES = {**MEASURES, **STORE_MEASURES}


def child(name: str, url: str, state_json: str) -> int:
    # CPU time beside the wall clock: on a shared machine the wall clock counts the time
    # other processes held the CPUs; the CPU time is what the measurement itself cost
    cpu = time.process_time()
    result = ALL_MEASURES[name](url, json.loads(state_json))
    result["cpu_s"] = time.process_time() - cpu
    result["rss_mb"] = peak_rss_mb()
    result["wrong"] = wrong
    print(json.dumps(result))
    return 0


def run_child(name: str, url: str, state: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", name, url, json.dumps(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        wrong.append(f"{name}: the measuring process failed: {completed.stderr[-2000:]}")
        return {}
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    wrong.extend(result.pop("wrong"))
    return result


# --------------------------------------------------------------------------- the table

# (measure, figure shown, unit, cost for the exponent, kind of growth target)
SHOWN = (
    ("intake", "ms_per_referral", "ms/referral", "ms_per_referral", None),
    ("load", "p50_ms", "ms p50", "p50_ms", "flat"),
    ("worklist", "p95_ms", "ms p95", "p95_ms", "flat"),
    ("export", "rate", "referrals/s", "seconds", "linear"),
    ("kpis", "seconds", "s", "seconds", "linear"),
    ("audit", "seconds", "s", "seconds", None),
    ("ranked", "p95_ms", "ms p95", "p95_ms", "flat"),
    ("frame_fill", "rate", "referrals/s", "seconds", None),
    ("frame", "rate", "referrals/s", "seconds", "linear"),
    ("kpi_table", "seconds", "s", "seconds", "linear"),
)
UNJUDGED = ("intake", "audit", "frame_fill")  # issue 16 sets no target for these
LABELS = {
    "intake": "intake (desk, 500 requests)",
    "load": "load by id",
    "worklist": "worklist top-50",
    "export": "FHIR export, unvalidated",
    "kpis": "KPI summary",
    "audit": "audit",
    "ranked": "worklist top-50, ranked (`desk.worklist`, cold desk)",
    "frame_fill": "`referrals_frame`, first (replays, fills the cache)",
    "frame": "`referrals_frame`, warm cache",
    "kpi_table": "KPI table (`analytics.kpis(store)`, warm cache)",
}


def exponent(results: dict[int, dict[str, Any]], size: int, name: str, cost: str) -> float | None:
    sizes = sorted(results)
    k = sizes.index(size)
    if k == 0:
        return None
    before = sizes[k - 1]
    c1, c2 = results[before].get(name, {}).get(cost), results[size].get(name, {}).get(cost)
    if not c1 or not c2:
        return None
    return math.log(c2 / c1) / math.log(size / before)


def misses(name: str, r: dict[str, Any], size: int, growth: float | None) -> list[str]:
    t = TARGETS
    found = []
    if name == "load" and r["p50_ms"] > t["load_p50_ms"]:
        found.append(f"load p50 {r['p50_ms']:.3f} ms > {t['load_p50_ms']} ms")
    if name in ("worklist", "ranked") and r["p95_ms"] > t["worklist_p95_ms"]:
        found.append(f"worklist p95 {r['p95_ms']:.1f} ms > {t['worklist_p95_ms']:.0f} ms")
    if name == "export":
        if r["rate"] < t["export_rate"]:
            found.append(f"export {r['rate']:,.0f}/s < {t['export_rate']:,.0f}/s")
        if r["rss_mb"] > t["export_rss_mb"]:
            found.append(f"export peak RSS {r['rss_mb']:,.0f} MB > {t['export_rss_mb']:.0f}")
    if name == "frame":
        if r["rate"] < t["frame_rate"]:
            found.append(f"frame {r['rate']:,.0f}/s < {t['frame_rate']:,.0f}/s")
        if r["rss_mb"] > t["frame_rss_mb"]:
            found.append(f"frame peak RSS {r['rss_mb']:,.0f} MB > {t['frame_rss_mb']:.0f}")
    if name in ("kpis", "kpi_table"):
        projected = r["seconds"] * 1_000_000 / size
        if projected > t["kpi_seconds_per_million"]:
            found.append(
                f"KPIs {projected:,.0f} s per million > {t['kpi_seconds_per_million']:.0f}"
            )
        if r["rss_mb"] > t["kpi_rss_mb"]:
            found.append(f"KPIs peak RSS {r['rss_mb']:,.0f} MB > {t['kpi_rss_mb']:.0f}")
    kind = next(s[4] for s in SHOWN if s[0] == name)
    if growth is not None and kind is not None:
        limit = t["flat_exponent"] if kind == "flat" else t["linear_exponent"]
        if growth > limit:
            found.append(f"{name} growth exponent {growth:.2f} > {limit}")
    return found


def in_cpu(r: dict[str, Any], total: int) -> dict[str, Any]:
    """``r`` with its figures in CPU time (the measuring process's own, which the machine's
    load inflates far less than the wall clock): per-operation milliseconds from ``cpu_ms``,
    whole runs from ``cpu_seconds``."""
    cpu = dict(r)
    if "cpu_ms" in r:
        cpu["p50_ms"] = cpu["p95_ms"] = r["cpu_ms"]
    if "cpu_seconds" in r:
        cpu["seconds"] = r["cpu_seconds"]
        cpu["rate"] = total / r["cpu_seconds"]
    return cpu


def shown_value(value: float) -> str:
    return f"{value:,.3f}" if value < 1 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def table(results: dict[int, dict[str, Any]], store_label: str) -> tuple[str, list[str]]:
    """The table of ``results`` per measure and size: each figure in wall-clock and in CPU
    time, with its growth exponent from the size before in each, judged in each."""
    lines = [
        "| store | measure | referrals stored | result (wall) | growth (wall) | result (CPU) "
        "| growth (CPU) | peak RSS MB | load average | targets met (wall / CPU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    missed = []
    for name, figure, unit, cost, _ in SHOWN:
        cpu_results = {
            size: {n: in_cpu(r, size) for n, r in found.items() if r}
            for size, found in results.items()
        }
        for size in sorted(results):
            r = results[size].get(name)
            if not r:
                continue
            c = cpu_results[size][name]
            growth = exponent(results, size, name, cost)
            cpu_growth = exponent(cpu_results, size, name, cost)
            # issue 16 sets the PostgreSQL target of the worklist only (load: on SQLite)
            judged = store_label == "SQLite" or name in ("worklist", "ranked")
            missing = misses(name, r, size, growth) if judged else []
            has_cpu = "cpu_ms" in r or "cpu_seconds" in r
            cpu_missing = misses(name, c, size, cpu_growth) if judged and has_cpu else []
            missed += [f"{store_label}, {size:,}, wall: {m}" for m in missing]
            missed += [f"{store_label}, {size:,}, CPU: {m}" for m in cpu_missing]
            met = (
                "–"
                if name in UNJUDGED or not judged
                else f"{'**no**' if missing else 'yes'} / "
                f"{'–' if not has_cpu else '**no**' if cpu_missing else 'yes'}"
            )
            lines.append(
                f"| {store_label} | {LABELS[name]} | {size:,} | {shown_value(r[figure])} {unit} | "
                f"{'–' if growth is None else f'{growth:.2f}'} | "
                f"{shown_value(c[figure]) + ' ' + unit if has_cpu else '–'} | "
                f"{'–' if cpu_growth is None or not has_cpu else f'{cpu_growth:.2f}'} | "
                f"{r['rss_mb']:,.0f} | {r.get('load', '–')} | {met} |"
            )
    return "\n".join(lines), missed


# --------------------------------------------------------------------------- main


def run_sizes(
    url: str, store: ReferralStore, sizes: Sequence[int], names: Sequence[str], label: str
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    results: dict[int, dict[str, Any]] = {}
    reference: list[Key] = []
    total = built_count = 0
    notes = []
    for size in sizes:
        say(f"{label}: building to {size:,} referrals")
        seconds = grow(store, built_count, size - total, reference)
        notes.append(
            f"{label}: built {size - total:,} referrals in {seconds:,.0f} s "
            f"({(size - total) / seconds:,.0f}/s)"
        )
        built_count += size - total
        total = size
        check_build(store, built_count)
        if store.count() != total:
            wrong.append(f"{label}: {store.count():,} stored, {total:,} expected")
        results[size] = {}
        for name in names:
            say(f"{label}, {size:,}: {name}")
            state = {"total": total, "built": built_count, "reference": reference}
            result = run_child(name, url, state)
            if name == "intake" and result:
                reference[:] = heapq.nsmallest(
                    TOP, [*reference, *(tuple(k) for k in result.pop("keys"))]
                )
                total += INTAKE
            if result:
                result["load"] = round(os.getloadavg()[0], 1)
            results[size][name] = result
    return results, notes


def measure_stores(args: argparse.Namespace) -> int:
    """``--stores``: each figure of ``--measures`` over stores already built, one per size;
    the table with growth exponents and peak RSS per store kind."""
    given = {}
    for part in args.stores.split(","):
        size, url = part.split("=", 1)
        given[int(size)] = url
    names = args.measures.split(",") if args.measures else list(STORE_MEASURES)
    as_of = args.as_of or "2026-02-16T09:00:00+00:00"
    loads = os.getloadavg()
    started = time.perf_counter()
    by_kind: dict[str, dict[int, dict[str, Any]]] = {}
    for size, url in sorted(given.items()):
        kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
        with open_store(url, create=False) as store:
            count = store.count()
        if count != size:
            wrong.append(f"{url}: {count:,} referrals stored, {size:,} given")
        state = {"total": count, "built": count, "prefix": "wl", "as_of": as_of}
        results = by_kind.setdefault(kind, {}).setdefault(size, {})
        for name in names:
            say(f"{kind}, {size:,}: {name} (load {os.getloadavg()[0]:.1f})")
            results[name] = run_child(name, url, state)
            if results[name]:
                results[name]["load"] = round(os.getloadavg()[0], 1)
            say(f"  {json.dumps(results[name])}")
    tables, missed = [], []
    for kind, results in by_kind.items():
        shown, miss = table(results, kind)
        tables.append(shown)
        missed += miss
    print(
        f"referralkit {rk.__version__} scale benchmark over stores already built; "
        f"load average {', '.join(f'{x:.2f}' for x in loads)} before, "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after; "
        f"{time.perf_counter() - started:,.0f} s in all; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print("\n\n".join(tables))
    if wrong:
        print("\nWRONG RESULTS:\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    if missed:
        print("missed targets:\n  " + "\n  ".join(missed))
    return 1 if args.check and missed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 3,000: checks it runs")
    parser.add_argument("--sizes", help="comma-separated sizes (default 10000,100000,1000000)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--dir", help="where the SQLite file goes (default: a temporary dir)")
    parser.add_argument("--postgres", help="a PostgreSQL URL: measure load and worklist there too")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only (--postgres)")
    parser.add_argument(
        "--stores",
        help="measure stores already built instead of building: SIZE=URL,... (e.g. "
        "bench_coordination.py's cloned worklist stores, ids wl0000000...)",
    )
    parser.add_argument(
        "--measures",
        help=f"with --stores, which (default all): {', '.join(STORE_MEASURES)}",
    )
    parser.add_argument(
        "--as-of", help="with --stores: the instant read (ISO; default 2026-02-16T09:00Z)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    if args.stores:
        return measure_stores(args)
    if args.sizes:
        sizes = sorted(int(s) for s in args.sizes.split(","))
    else:
        sizes = [1_000, 3_000] if args.quick else [10_000, 100_000, 1_000_000]
    workdir = args.dir or tempfile.mkdtemp(prefix="bench-scale-")
    os.makedirs(workdir, exist_ok=True)
    loads = os.getloadavg()
    started = time.perf_counter()
    tables, missed, notes = [], [], []
    try:
        path = os.path.join(workdir, "scale.db")
        for leftover in (path, path + "-wal", path + "-shm"):
            if os.path.exists(leftover):
                os.remove(leftover)
        url = f"sqlite:///{path}"
        if not args.no_sqlite:
            with open_store(url) as store:
                results, said = run_sizes(url, store, sizes, list(MEASURES), "SQLite")
            shown, miss = table(results, "SQLite")
            tables.append(shown)
            missed += miss
            notes += said
        if args.postgres:
            import psycopg

            schema = "bench_scale"
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            pg_url = f"{args.postgres}{'&' if '?' in args.postgres else '?'}schema={schema}"
            try:
                with open_store(pg_url) as store:
                    results, said = run_sizes(
                        pg_url, store, sizes, ["load", "worklist"], "PostgreSQL"
                    )
                shown, miss = table(results, "PostgreSQL")
                tables.append(shown)
                missed += miss
                notes += said
            finally:
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"referralkit {rk.__version__} scale benchmark"
        f"{' (--quick: small sizes, the figures mean little)' if args.quick else ''}; "
        f"load average {', '.join(f'{x:.2f}' for x in loads)} before, "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after; "
        f"{time.perf_counter() - started:,.0f} s in all; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print("\n\n".join(tables))
    print("\n" + "\n".join(notes))
    if wrong:
        print("\nWRONG RESULTS:\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    checked = [
        f"the build against the desk on a sample of {SAMPLE} per size",
        "every worklist equal to the reference ranking",
        f"{LOADS:,} loads by id",
    ]
    if not args.no_sqlite:
        checked += [
            "one Bundle per referral",
            "KPI totals",
            "the audit ran",
            f"each intake stored {INTAKE} referrals",
        ]
    print(f"\nchecked: {'; '.join(checked)}")
    if missed:
        print("missed targets:\n  " + "\n  ".join(missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
