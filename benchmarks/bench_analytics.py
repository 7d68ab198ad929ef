"""Analytics benchmark: the referrals frame over SQLite, grouped KPIs, the Parquet export.

    python benchmarks/bench_analytics.py            # full run, several minutes
    python benchmarks/bench_analytics.py --quick    # small counts, to check that it runs
    python benchmarks/bench_analytics.py --check    # exit 1 when a target is missed

Data: synthetic referrals from :func:`referralkit.synth.simulate` (six simulated weeks through
a real desk), copied under new referral, source and patient ids and written to a SQLite file
with ``restore_many`` (the bulk path), so the stored histories are ones the desk made.

Rows, each timed interleaved with its baseline and its reference for ``--reference-rounds``
rounds (rounds alternate, so all see the same machine load; the remaining rounds of
``--repeat`` time the warm path alone), best of the rounds, with the CPU time of that round
(``time.process_time``: every thread of the process) beside the wall clock. ``--db FILE``
keeps the largest size's SQLite file between runs (built there when absent; each run copies
it, so its cache starts cold):

- **baseline**: ``store.export()``, reading every snapshot and history, the least a pass over a
  store costs through the port;
- **``referrals_frame``** (de-identified) at each size, through the store's analytics cache
  (warm: the first frame, timed apart, replays every history and fills it): referrals/s per
  wall-clock and per CPU second, and the peak RSS of a warm frame built in a fresh process
  (with its growth over the process before the frame, and pyarrow's pool peak). Targets:
  **≥ 50,000 referrals/s** and **≤ 2 GB at 1,000,000** (the growth extrapolated linearly
  from the largest size run when that is smaller);
- **``referrals_frame(cache=False)``**: the replay of every history (the path before the
  cache), its paired baseline, with their ratio; the two frames are checked equal;
- **grouped KPIs**: ``kpis(frame, by=...)`` for each grouping over a 1,000,000-row frame
  (the measured frame's rows repeated: the KPIs' cost depends on the rows, not on where they
  came from). Target: **≤ 2 s**;
- **Parquet export**: ``export_parquet`` (frames included, through the warm cache) in
  referrals/s, paired with ``export_parquet(cache=False)``. Target: **≥ 50,000/s**.

Results are checked: the frame has one row per referral (and up to 10,000 referrals the KPI
table's totals equal ``summary``'s, which replays every history), the warm frame equals the
replayed one (``cache=False``) and the first one, and the Parquet files (of the warm path and
of the reference) read back equal to the frame.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
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


CPU: dict[int, list[float]] = {}
"""CPU seconds (this process, every thread) of each timed call, by the id of its list of
wall-clock times: read with :func:`cpu_of`."""


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of ``call`` and its result; its CPU time is in :data:`LAST_CPU`."""
    global LAST_CPU
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    LAST_CPU = time.process_time() - cpu
    return seconds, result


LAST_CPU = 0.0


def interleaved(
    calls: Sequence[Callable[[], Any] | None], repeat: int
) -> tuple[list[list[float]], list[Any]]:
    """Each call ``repeat`` times, rounds alternating between them (``None``: not run); the
    wall-clock times, and the CPU times under :func:`cpu_of`."""
    times: list[list[float]] = [[] for _ in calls]
    results: list[Any] = [None] * len(calls)
    for _ in range(repeat):
        for i, call in enumerate(calls):
            if call is None:
                continue
            seconds, results[i] = timed(call)
            times[i].append(seconds)
            CPU.setdefault(id(times[i]), []).append(LAST_CPU)
    return times, results


def cpu_of(times: list[float]) -> float:
    """The CPU seconds of the fastest (wall-clock) round of ``times``."""
    return CPU[id(times)][times.index(min(times))]


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


def child_peak(path: Path, as_of: dt.datetime) -> tuple[int, int, int]:
    """In a fresh process with the store opened: its resident memory just before a warm
    ``referrals_frame``, its peak while building it (the peak counter reset first), and
    pyarrow's pool peak (bytes)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child-frame", str(path), as_of.isoformat()],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} in /proc/self/status")


def child_frame(path: str, as_of: str) -> None:
    import pyarrow as pa

    store = SQLiteStore(path)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = _status("VmRSS")
    frame = analytics.referrals_frame(
        store, as_of=dt.datetime.fromisoformat(as_of), deidentify=DEID
    )
    after = _status("VmHWM")
    print(before, after, pa.default_memory_pool().max_memory(), len(frame))


def prepared(args: argparse.Namespace, folder: Path, size: int, histories: Any) -> Path:
    """A SQLite file of ``size`` copied referrals and no analytics cache: built in
    ``folder``, or copied from ``--db`` (built there first if absent, and kept)."""
    path = folder / f"store-{size}.db"
    if args.db is None or size != args.sizes_run[-1]:
        fill(path, histories, size).close()
        return path
    source = Path(args.db)
    if not source.exists():
        fill(source, histories, size).close()
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{path}{suffix}")
    return path


def rate_text(count: int, times: list[float]) -> str:
    if not times:
        return "not run"
    return f"{count / min(times):,.0f} (CPU {count / cpu_of(times):,.0f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="referralkit analytics benchmark")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    parser.add_argument("--repeat", type=int, help="rounds per measurement")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="referral counts to measure (default: by mode)"
    )
    parser.add_argument("--kpi-rows", type=int, help="rows of the grouped-KPI frame")
    parser.add_argument(
        "--db",
        help="a SQLite file of the largest size's copied referrals, reused across runs "
        "(built there when absent; each run works on a copy, so its cache starts cold)",
    )
    parser.add_argument(
        "--reference-rounds",
        type=int,
        help="rounds of the baseline and of the replay reference (cache=False), each paired "
        "with a warm round (default: every round); the rest time the warm path alone",
    )
    parser.add_argument(
        "--no-export-reference",
        action="store_true",
        help="do not time export_parquet(cache=False) (its files are still checked)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="do not time export()")
    parser.add_argument("--child-frame", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_frame:
        child_frame(*args.child_frame)
        return 0
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
    args.sizes_run = sizes
    kpi_rows = args.kpi_rows or kpi_rows
    paired = min(args.reference_rounds or repeat, repeat)

    histories, as_of = simulated(population, seed=5)
    calibration = min(timeit.repeat("sum(range(1000))", number=2_000, repeat=5)) / 2_000 * 1e6
    folder = Path(tempfile.mkdtemp(prefix="rk-bench-analytics-"))
    missed: list[str] = []
    lines: list[str] = []
    try:
        largest: pd.DataFrame | None = None
        for size in sizes:
            fill_seconds, path = timed(lambda n=size: prepared(args, folder, n, histories))
            store = SQLiteStore(path)

            def frame_of(s: rk.ReferralStore = store, cache: bool = True) -> pd.DataFrame:
                return analytics.referrals_frame(s, as_of=as_of, deidentify=DEID, cache=cache)

            # the first frame replays every history and fills the store's analytics cache
            cold_seconds, first = timed(frame_of)
            cold_cpu = LAST_CPU
            if size <= 10_000:  # summary() replays every history: only at small sizes
                check(store, first, as_of, size)
            elif len(first) != size:
                raise SystemExit(f"the frame has {len(first)} rows for {size} referrals")
            (base, quick, slow), results = interleaved(
                [
                    None if args.no_baseline else (lambda s=store: sum(1 for _ in s.export())),
                    frame_of,
                    lambda: frame_of(cache=False),
                ],
                paired,
            )
            pd.testing.assert_frame_equal(results[1], results[2])  # cached == replayed
            pd.testing.assert_frame_equal(results[1], first)
            del results, first
            (more,), _ = interleaved([frame_of], repeat - paired)
            quick_all = quick + more
            CPU[id(quick_all)] = CPU[id(quick)] + CPU.get(id(more), [])
            largest = frame_of()
            before, after, pool = child_peak(path, as_of)
            row_bytes = float(largest.memory_usage(deep=True).sum()) / size
            rate = size / min(quick_all)
            ratios = sorted(s / q for s, q in zip(slow, quick, strict=True))
            lines.append(
                f"| {size:,} | {rate_text(size, base)} | {rate_text(size, quick_all)} | "
                f"{rate_text(size, slow)} | {statistics.median(ratios):.1f}x "
                f"({ratios[0]:.1f}-{ratios[-1]:.1f}), {len(ratios)} pairs | "
                f"{size / cold_seconds:,.0f} (CPU {size / cold_cpu:,.0f}) | "
                f"{after / 2**20:,.0f} MB (+{(after - before) / 2**20:,.0f}; pool "
                f"{pool / 2**20:,.0f}) | {row_bytes:,.0f} B | {fill_seconds:,.0f} s | "
                f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} |"
            )
            store.close()
        assert largest is not None
        rate_met = rate >= FRAME_TARGET_PER_S
        # the warm frame holds the population (Arrow columns freed as the pandas ones are
        # built): its growth over the process's start grows in proportion to it
        projected = before + (after - before) * max(MEMORY_TARGET_AT / sizes[-1], 1.0)
        memory_met = projected <= MEMORY_TARGET_BYTES
        if not rate_met:
            missed.append("referrals_frame rate")
        if not memory_met:
            missed.append("referrals_frame memory")

        big = repeated(largest, kpi_rows)
        kpi_lines = []
        for by in ((), *analytics.GROUPINGS):
            (kpi_times,), _ = interleaved([lambda b=by: analytics.kpis(big, by=b)], repeat)
            seconds = min(kpi_times)
            met = seconds <= KPI_TARGET_S
            if not met:
                missed.append(f"kpis by {by or 'nothing'}")
            kpi_lines.append(
                f"| {by or '(all)'} | {seconds:,.2f} | {cpu_of(kpi_times):,.2f} | "
                f"{'yes' if met else '**no**'} |"
            )

        size = sizes[-1]
        store = SQLiteStore(folder / f"store-{size}.db")
        target = folder / "parquet"

        def export(cache: bool = True) -> dict[str, int]:
            return analytics.export_parquet(
                store, target, as_of=as_of, deidentify=DEID, overwrite=True, cache=cache
            )

        # the first export fills the events' cache (the frame filled the referrals')
        first_export, written = timed(export)
        first_export_cpu = LAST_CPU

        def read_back_equal() -> None:
            referrals, _ = analytics.read_parquet(target)
            back = referrals.drop(columns="month").sort_values("referral_id")
            pd.testing.assert_frame_equal(
                back.reset_index(drop=True),
                largest.sort_values("referral_id").reset_index(drop=True),
                check_categorical=False,
            )

        read_back_equal()
        (exports, old_exports), _ = interleaved(
            [export, None if args.no_export_reference else (lambda: export(cache=False))],
            paired,
        )
        if old_exports:
            read_back_equal()  # the reference's files, then the warm path's again
            export()
            read_back_equal()
        (more,), _ = interleaved([export], repeat - paired)
        exports_all = exports + more
        CPU[id(exports_all)] = CPU[id(exports)] + CPU.get(id(more), [])
        (frames,), _ = interleaved(
            [
                lambda: (
                    analytics.referrals_frame(store, as_of=as_of, deidentify=DEID),
                    analytics.events_frame(store, as_of=as_of, deidentify=DEID),
                )
            ],
            1,
        )
        export_load = os.getloadavg()
        store.close()
        parquet_rate = size / min(exports_all)
        parquet_ratios = sorted(o / e for o, e in zip(old_exports, exports, strict=False))
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
        f"{statistics.median(events):.0f}), best of {repeat} rounds ({paired} paired with the "
        f"reference); `sum(range(1000))` took {calibration:.1f} µs on this machine during "
        "the run; rates are referrals per wall-clock second (per CPU second in brackets)"
    )
    print()
    print(
        "| referrals in SQLite | baseline `export()` /s | `referrals_frame` (warm cache) /s | "
        "replayed (`cache=False`, the reference) /s | paired ratio, median (range) | "
        "first frame (fills the cache) /s | peak RSS of a warm frame in its own process "
        "(growth; arrow pool) | frame per row | fill time | load average |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(lines))
    print()
    print(
        f"`referrals_frame`: {rate:,.0f} referrals/s at {sizes[-1]:,} (target ≥ "
        f"{FRAME_TARGET_PER_S:,.0f}: {'met' if rate_met else '**missed**'}); peak RSS "
        f"{after / 2**20:,.0f} MB at {sizes[-1]:,} ({before / 2**20:,.0f} MB before the frame), "
        f"so about {projected / 2**30:,.2f} GB at {MEMORY_TARGET_AT:,} (target ≤ 2 GB: "
        f"{'met' if memory_met else '**missed**'})"
    )
    print()
    print(
        f"| grouped KPIs over {kpi_rows:,} rows, by | seconds | CPU seconds | "
        f"≤ {KPI_TARGET_S:g} s |"
    )
    print("|---|---:|---:|:---:|")
    print("\n".join(kpi_lines))
    print()
    ratio_text = (
        f"paired ratio {statistics.median(parquet_ratios):.1f}x "
        f"({parquet_ratios[0]:.1f}-{parquet_ratios[-1]:.1f}), {len(parquet_ratios)} pairs"
        if parquet_ratios
        else "not paired"
    )
    print(
        f"Parquet export of {size:,} referrals ({written['events']:,} events, "
        f"{files / 2**20:,.1f} MB of files): {rate_text(size, exports_all)} referrals/s "
        f"(target ≥ {PARQUET_TARGET_PER_S:,.0f}: "
        f"{'met' if parquet_rate >= PARQUET_TARGET_PER_S else '**missed**'}); "
        f"with `cache=False` (the reference): {rate_text(size, old_exports)} referrals/s, "
        f"{ratio_text}; the first export (fills the events' cache): "
        f"{size / first_export:,.0f} (CPU {size / first_export_cpu:,.0f}) referrals/s; "
        f"building both frames alone: {rate_text(size, frames)} referrals/s; files read "
        f"back equal to the frame; load average {', '.join(f'{x:.1f}' for x in export_load)}"
    )
    if missed:
        print(f"\nmissed: {', '.join(missed)}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
