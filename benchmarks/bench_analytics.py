"""Analytics benchmark: the referrals frame over SQLite, grouped KPIs, the Parquet export.

    python benchmarks/bench_analytics.py            # full run, several minutes
    python benchmarks/bench_analytics.py --quick    # small counts, to check that it runs
    python benchmarks/bench_analytics.py --check    # exit 1 when a target is missed

Data: synthetic referrals from :func:`referralkit.synth.simulate` (six simulated weeks through
a real desk), copied under new referral, source and patient ids and written to a SQLite file
with ``restore_many`` (the bulk path), so the stored histories are ones the desk made.

Rows, each timed interleaved with its baseline (rounds alternate, so both see the same machine
load), best of ``--repeat``:

- **baseline**: ``store.export()``, reading every snapshot and history, the least a pass over a
  store costs through the port;
- **``referrals_frame``** (de-identified) at each size, through the store's analytics cache
  (warm: the first frame, timed apart, replays every history and fills it): referrals/s, and
  its peak of Python allocations (``tracemalloc``: numpy's arrays included) plus the
  peak of pyarrow's memory pool. Targets: **≥ 50,000 referrals/s** and **≤ 2 GB at
  1,000,000** (extrapolated linearly from the largest size run when that is smaller);
- **``referrals_frame(cache=False)``**: the replay of every history (the path before the
  cache), its paired baseline, with their ratio; the two frames are checked equal;
- **grouped KPIs**: ``kpis(frame, by=...)`` for each grouping over a 1,000,000-row frame
  (the measured frame's rows repeated: the KPIs' cost depends on the rows, not on where they
  came from). Target: **≤ 2 s**;
- **Parquet export**: ``export_parquet`` (frames included, through the warm cache) in
  referrals/s, paired with ``export_parquet(cache=False)``. Target: **≥ 50,000/s**.

Results are checked before they are timed: the frame has one row per referral, the KPI table's
totals equal ``summary``'s, and the Parquet files read back equal to the frames.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import timeit
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pandas as pd

import referralkit as rk
from referralkit import analytics, synth
from referralkit.storage.sqlite import SQLiteStore

FRAME_TARGET_PER_S = 50_000.0
MEMORY_TARGET_BYTES = 2 * 1024**3
MEMORY_TARGET_AT = 1_000_000
KPI_TARGET_S = 2.0
PARQUET_TARGET_PER_S = 50_000.0
ACTOR = rk.Actor("bench", {rk.Role.COORDINATOR})
DEID = analytics.Deidentifier(key=b"benchmark-key-0123456789abcdef!!")

History = tuple[rk.Referral, list[rk.ReferralEvent]]


def simulated(count: int, seed: int) -> tuple[list[History], dt.datetime]:
    clock = rk.FakeClock(synth.DEFAULT_START)
    desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock, new_id=synth.id_factory(seed))
    synth.simulate(desk, ACTOR, clock, synth.population(count, seed), weeks=6, seed=seed)
    return list(desk.store.export()), clock.now()


def copy(history: History, n: int) -> History:
    """The history under new referral, source and patient ids."""
    referral, events = history
    rid = f"{referral.id}-{n}"
    patient = attrs.evolve(referral.patient, id=f"{referral.patient.id}-{n}")
    source = f"{referral.source_id}-{n}" if referral.source_id else None
    first = events[0]
    data = dict(first.payload["referral"])
    data.update(id=rid, source_id=source, patient={**data["patient"], "id": patient.id})
    moved = [attrs.evolve(first, referral_id=rid, payload={**first.payload, "referral": data})]
    moved += [attrs.evolve(e, referral_id=rid) for e in events[1:]]
    return attrs.evolve(referral, id=rid, source_id=source, patient=patient), moved


def fill(path: Path, histories: Sequence[History], total: int) -> SQLiteStore:
    store = SQLiteStore(path)
    batch: list[History] = []
    for n in range(total):
        batch.append(copy(histories[n % len(histories)], n // len(histories)))
        if len(batch) == 2_000:
            store.restore_many(batch)
            batch = []
    if batch:
        store.restore_many(batch)
    return store


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def interleaved(
    calls: Sequence[Callable[[], Any]], repeat: int
) -> tuple[list[list[float]], list[Any]]:
    """Each call ``repeat`` times, rounds alternating between them."""
    times: list[list[float]] = [[] for _ in calls]
    results: list[Any] = [None] * len(calls)
    for _ in range(repeat):
        for i, call in enumerate(calls):
            seconds, results[i] = timed(call)
            times[i].append(seconds)
    return times, results


def peak_bytes(call: Callable[[], Any]) -> int:
    """The peak of Python's allocations during ``call`` plus the peak of pyarrow's memory
    pool over the whole process so far (the cache's tables live there; an over-estimate)."""
    import pyarrow as pa

    gc.collect()
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] + pa.default_memory_pool().max_memory()
    finally:
        tracemalloc.stop()


def check(store: rk.ReferralStore, frame: pd.DataFrame, as_of: dt.datetime, total: int) -> None:
    if len(frame) != total:
        raise SystemExit(f"the frame has {len(frame)} rows for {total} referrals")
    kpis = analytics.summary(store, as_of)
    table = analytics.kpis(frame).loc["all"]
    if (table["referrals"], table["completed"], table["open"]) != (
        kpis.total,
        kpis.completed,
        kpis.open,
    ):
        raise SystemExit("the KPI table and summary() disagree")


def repeated(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    times = -(-rows // len(frame))
    big = pd.concat([frame] * times, ignore_index=True).iloc[:rows]
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            big[name] = big[name].astype(frame[name].dtype)
    return big


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="referralkit analytics benchmark")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    parser.add_argument("--repeat", type=int, help="rounds per measurement")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="referral counts to measure (default: by mode)"
    )
    parser.add_argument("--kpi-rows", type=int, help="rows of the grouped-KPI frame")
    args = parser.parse_args(argv)
    if args.quick:
        population, sizes, kpi_rows, repeat = 40, [500, 1_000], 20_000, args.repeat or 1
    else:
        population, sizes, kpi_rows, repeat = (
            600,
            [2_000, 5_000, 10_000],
            1_000_000,
            (args.repeat or 3),
        )
    sizes = args.sizes or sizes
    kpi_rows = args.kpi_rows or kpi_rows

    histories, as_of = simulated(population, seed=5)
    calibration = min(timeit.repeat("sum(range(1000))", number=2_000, repeat=5)) / 2_000 * 1e6
    folder = Path(tempfile.mkdtemp(prefix="rk-bench-analytics-"))
    missed: list[str] = []
    lines: list[str] = []
    try:
        largest: pd.DataFrame | None = None
        peak, row_bytes = 0, 0.0
        for size in sizes:
            path = folder / f"store-{size}.db"
            fill_seconds, store = timed(lambda p=path, n=size: fill(p, histories, n))

            def frame_of(s: rk.ReferralStore = store, cache: bool = True) -> pd.DataFrame:
                return analytics.referrals_frame(s, as_of=as_of, deidentify=DEID, cache=cache)

            # the first frame replays every history and fills the store's analytics cache
            cold_seconds, first = timed(frame_of)
            check(store, first, as_of, size)
            (base, quick, slow), results = interleaved(
                [
                    lambda s=store: sum(1 for _ in s.export()),
                    frame_of,
                    lambda: frame_of(cache=False),
                ],
                repeat,
            )
            pd.testing.assert_frame_equal(results[1], results[2])
            pd.testing.assert_frame_equal(results[1], first)
            largest = results[1]
            peak = peak_bytes(frame_of)
            row_bytes = float(largest.memory_usage(deep=True).sum()) / size
            rate = size / min(quick)
            ratios = sorted(s / q for s, q in zip(slow, quick, strict=True))
            lines.append(
                f"| {size:,} | {size / min(base):,.0f} | {rate:,.0f} | "
                f"{size / min(slow):,.0f} | {statistics.median(ratios):.1f}x "
                f"({ratios[0]:.1f}-{ratios[-1]:.1f}), {len(ratios)} pairs | "
                f"{size / cold_seconds:,.0f} | {peak / 2**20:,.0f} MB | "
                f"{row_bytes:,.0f} B | {fill_seconds:,.0f} s | "
                f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} |"
            )
            store.close()
        assert largest is not None
        rate_met = rate >= FRAME_TARGET_PER_S
        # through the cache the whole population is held at once (the cached table, then
        # the frame), so the peak grows in proportion to the population
        projected = peak * max(MEMORY_TARGET_AT / sizes[-1], 1.0)
        memory_met = projected <= MEMORY_TARGET_BYTES
        if not rate_met:
            missed.append("referrals_frame rate")
        if not memory_met:
            missed.append("referrals_frame memory")

        big = repeated(largest, kpi_rows)
        kpi_lines = []
        for by in ((), *analytics.GROUPINGS):
            seconds = min(timed(lambda b=by: analytics.kpis(big, by=b))[0] for _ in range(repeat))
            met = seconds <= KPI_TARGET_S
            if not met:
                missed.append(f"kpis by {by or 'nothing'}")
            kpi_lines.append(f"| {by or '(all)'} | {seconds:,.2f} | {'yes' if met else '**no**'} |")

        size = sizes[-1]
        store = SQLiteStore(folder / f"store-{size}.db")
        target = folder / "parquet"

        def export(cache: bool = True) -> dict[str, int]:
            return analytics.export_parquet(
                store, target, as_of=as_of, deidentify=DEID, overwrite=True, cache=cache
            )

        written = export()
        referrals, _ = analytics.read_parquet(target)
        frame = analytics.referrals_frame(store, as_of=as_of, deidentify=DEID)
        back = referrals.drop(columns="month").sort_values("referral_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(
            back, frame.sort_values("referral_id").reset_index(drop=True), check_categorical=False
        )
        (frames, exports, old_exports), _ = interleaved(
            [
                lambda: (
                    analytics.referrals_frame(store, as_of=as_of, deidentify=DEID),
                    analytics.events_frame(store, as_of=as_of, deidentify=DEID),
                ),
                export,
                lambda: export(cache=False),
            ],
            repeat,
        )
        store.close()
        parquet_rate = size / min(exports)
        parquet_ratios = sorted(o / e for o, e in zip(old_exports, exports, strict=True))
        if parquet_rate < PARQUET_TARGET_PER_S:
            missed.append("Parquet export")
        files = sum(p.stat().st_size for p in target.rglob("*.parquet"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    events = [len(e) for _, e in histories]
    print(
        f"referralkit {rk.__version__} analytics benchmark: Python {platform.python_version()}, "
        f"pandas {pd.__version__}, {platform.machine()}; {'quick' if args.quick else 'full'} "
        f"run; {population} simulated referrals copied (events per history: median "
        f"{statistics.median(events):.0f}), best of {repeat} interleaved rounds; "
        f"`sum(range(1000))` took {calibration:.1f} µs on this machine during the run"
    )
    print()
    print(
        "| referrals in SQLite | baseline `export()` /s | `referrals_frame` (warm cache) /s | "
        "replayed (`cache=False`, the old path) /s | paired ratio, median (range) | "
        "first frame (fills the cache) /s | peak (tracemalloc + arrow pool) | frame per row | "
        "fill time | "
        "load average |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(lines))
    print()
    print(
        f"`referrals_frame`: {rate:,.0f} referrals/s at {sizes[-1]:,} (target ≥ "
        f"{FRAME_TARGET_PER_S:,.0f}: {'met' if rate_met else '**missed**'}); peak "
        f"{peak / 2**20:,.0f} MB at {sizes[-1]:,}, the frame {row_bytes:,.0f} bytes a row, so "
        f"about {projected / 2**30:,.2f} GB at {MEMORY_TARGET_AT:,} (target ≤ 2 GB: "
        f"{'met' if memory_met else '**missed**'})"
    )
    print()
    print(f"| grouped KPIs over {kpi_rows:,} rows, by | seconds | ≤ {KPI_TARGET_S:g} s |")
    print("|---|---:|:---:|")
    print("\n".join(kpi_lines))
    print()
    print(
        f"Parquet export of {size:,} referrals ({written['events']:,} events, "
        f"{files / 2**20:,.1f} MB of files): {parquet_rate:,.0f} referrals/s (target ≥ "
        f"{PARQUET_TARGET_PER_S:,.0f}: "
        f"{'met' if parquet_rate >= PARQUET_TARGET_PER_S else '**missed**'}); "
        f"with `cache=False` (the old path): {size / min(old_exports):,.0f} referrals/s, "
        f"paired ratio {statistics.median(parquet_ratios):.1f}x "
        f"({parquet_ratios[0]:.1f}-{parquet_ratios[-1]:.1f}); building both "
        f"frames alone: {size / min(frames):,.0f} referrals/s; files read back equal to the "
        f"frame; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    if missed:
        print(f"\nmissed: {', '.join(missed)}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
