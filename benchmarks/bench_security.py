"""Security benchmark: what encryption at rest costs (issue 13).

    python benchmarks/bench_security.py            # full run, a minute or two
    python benchmarks/bench_security.py --quick    # tiny counts, to check that it runs
    python benchmarks/bench_security.py --check    # exit 1 when a target is missed

Three figures, each timed in pairs with its baseline on the same data (baseline, measured,
baseline, measured ... for ``--repeat`` pairs, every pair on fresh SQLite files); the ratio is
taken per pair and shown as its median with min and max, with the load average, so it
carries across machines and loads even when absolute numbers do not:

- **whole path**: one referral through the desk, intake → send → accept → schedule →
  record_visit → complete, on SQLite, encrypted versus unencrypted (target: ≤ 1.3×);
- **bulk intake**: ``save_many`` of synthetic referrals in transactions of 500 on SQLite with
  encryption on (target: ≥ 3,000 referrals/s), paired with the same intake unencrypted;
- **rotation**: :func:`~referralkit.storage.rotate_keys` of an encrypted SQLite store onto a
  new key (target: ≥ 5,000 referrals/s), paired with reading every referral with its
  history (``export``) from the same store.

It checks what it times and exits 1 on a wrong result: every path ends completed with the
stored snapshot equal to the desk's; bulk intake stores every referral and a sample reads
back equal; after rotation every record is on the new key (a second rotation rewrites
nothing), a sample reads back equal, and no family name of a sample is in the raw file.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

import referralkit as rk
from referralkit import synth
from referralkit.clock import FakeClock
from referralkit.errors import GuardError
from referralkit.storage import MemoryStore, rotate_keys
from referralkit.storage.sqlite import SQLiteStore

PATH_RATIO_TARGET = 1.3
INTAKE_TARGET = 3000.0  # referrals/s, encrypted, SQLite
ROTATION_TARGET = 5000.0  # referrals/s

COORDINATOR = rk.Actor("bench", {rk.Role.COORDINATOR})
START = synth.DEFAULT_START

wrong: list[str] = []


@attrs.frozen
class Pairs:
    """A figure timed in pairs: ``baseline`` and ``measured`` seconds per unit, per pair."""

    name: str
    unit: str
    baseline: list[float]
    measured: list[float]
    cpu: list[float] = attrs.field(factory=list)
    """CPU seconds per unit of the measured side (the process's own time: what a quiet
    machine's wall clock would show, less the waits for the disk)."""

    @property
    def ratios(self) -> list[float]:
        return [m / b for b, m in zip(self.baseline, self.measured, strict=True)]

    def rate(self, values: list[float]) -> float:
        return 1.0 / statistics.median(values)


def path(desk: rk.ReferralDesk, request: rk.IntakeRequest) -> rk.Referral:
    """intake → send → accept → schedule → record_visit → complete."""
    import datetime as dt

    referral_id = desk.intake(COORDINATOR, request).id
    desk.send(COORDINATOR, referral_id)
    desk.accept(COORDINATOR, referral_id)
    desk.schedule(COORDINATOR, referral_id, START + dt.timedelta(days=7, hours=1))
    desk.record_visit(COORDINATOR, referral_id)
    return desk.complete(COORDINATOR, referral_id, "Consult note.")


def complete_requests(n: int) -> list[rk.IntakeRequest]:
    """``n`` synthetic requests that go the whole path (untimed)."""
    found: list[rk.IntakeRequest] = []
    for request in synth.population(4 * n + 20, 5, START):
        try:
            path(rk.ReferralDesk(MemoryStore(), clock=FakeClock(START)), request)
        except (GuardError, rk.ValidationError):
            continue
        found.append(request)
        if len(found) == n:
            break
    return found


def intake_changes(count: int) -> list[Any]:
    """``count`` referrals as the desk takes them in, as changes to save (untimed)."""
    memory = MemoryStore()
    desk = rk.ReferralDesk(memory, clock=FakeClock(START), new_id=synth.id_factory(3))
    for request in synth.population(count, 3, START):
        desk.intake(COORDINATOR, request)
    return [(r, events, 0) for r, events in memory.export()]


def _fresh(folder: Path, name: str, keys: rk.KeyRing | None) -> SQLiteStore:
    path = folder / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return SQLiteStore(path, keys=keys)


_LAST_CPU: list[float] = [0.0]


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    gc.disable()
    try:
        started, cpu = time.perf_counter(), time.process_time()
        result = run()
        _LAST_CPU[0] = time.process_time() - cpu
        return time.perf_counter() - started, result
    finally:
        gc.enable()


def whole_path(folder: Path, n: int, repeat: int, ring: rk.KeyRing) -> Pairs:
    requests = complete_requests(n)
    pairs = Pairs("whole path (6 operations)", "paths/s", [], [])
    for k in range(repeat):
        for keys, into in ((None, pairs.baseline), (ring, pairs.measured)):
            store = _fresh(folder, f"path-{k}-{'e' if keys else 'p'}.db", keys)
            desk = rk.ReferralDesk(store, clock=FakeClock(START))
            seconds, done = _timed(lambda desk=desk: [path(desk, r) for r in requests])
            into.append(seconds / len(requests))
            if keys is not None:
                pairs.cpu.append(_LAST_CPU[0] / len(requests))
            for referral in done:
                if referral.status is not rk.Status.COMPLETED:
                    wrong.append(f"path: {referral.id} ended {referral.status}")
                if store.load(referral.id) != referral:
                    wrong.append(f"path: stored {referral.id} differs from the desk's")
            store.close()
    return pairs


def bulk_intake(folder: Path, n: int, repeat: int, ring: rk.KeyRing) -> Pairs:
    changes = intake_changes(n)
    pairs = Pairs("bulk intake (save_many × 500)", "referrals/s", [], [])

    def save(store: SQLiteStore) -> None:
        for k in range(0, len(changes), 500):
            store.save_many(changes[k : k + 500])

    for k in range(repeat):
        for keys, into in ((None, pairs.baseline), (ring, pairs.measured)):
            store = _fresh(folder, f"intake-{k}-{'e' if keys else 'p'}.db", keys)
            seconds, _ = _timed(lambda store=store: save(store))
            into.append(seconds / len(changes))
            if keys is not None:
                pairs.cpu.append(_LAST_CPU[0] / len(changes))
            if store.count() != len(changes):
                wrong.append(f"bulk intake: {store.count()} stored of {len(changes)}")
            for referral, _events, _ in changes[:: max(1, len(changes) // 20)]:
                if store.load(referral.id) != referral:
                    wrong.append(f"bulk intake: {referral.id} reads back different")
            store.close()
    return pairs


def rotation(folder: Path, n: int, repeat: int, ring: rk.KeyRing) -> Pairs:
    changes = intake_changes(n)
    pairs = Pairs("rotation onto a new key", "referrals/s", [], [])
    sample = changes[:: max(1, len(changes) // 20)]
    for k in range(repeat):
        store = _fresh(folder, f"rotate-{k}.db", ring)
        for j in range(0, len(changes), 500):
            store.save_many(changes[j : j + 500])
        store.close()
        new = ring.with_new_key()
        with SQLiteStore(folder / f"rotate-{k}.db", keys=new) as store:
            seconds, read = _timed(lambda store=store: sum(1 for _ in store.export()))
            pairs.baseline.append(seconds / max(read, 1))
            seconds, done = _timed(lambda store=store: rotate_keys(store, batch=500))
            pairs.measured.append(seconds / len(changes))
            pairs.cpu.append(_LAST_CPU[0] / len(changes))
            if done.rewritten < len(changes) or rotate_keys(store).rewritten != 0:
                wrong.append(f"rotation: {done.rewritten} rewritten; a second pass was not empty")
            for referral, _events, _ in sample:
                if store.load(referral.id) != referral:
                    wrong.append(f"rotation: {referral.id} reads back different")
        raw = (folder / f"rotate-{k}.db").read_bytes()
        wal = folder / f"rotate-{k}.db-wal"
        raw += wal.read_bytes() if wal.exists() else b""
        for referral, _events, _ in sample:
            if referral.patient.family_name.encode() in raw:
                wrong.append(f"rotation: a family name of {referral.id} is in the file in clear")
    return pairs


def render(results: Sequence[tuple[Pairs, str, float, str]]) -> str:
    load = os.getloadavg()
    lines = [
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "",
        "| figure | baseline | encrypted / measured | ratio median (min–max) | target | ok "
        "| measured, CPU time only |",
        "|---|---|---|---|---|---|---|",
    ]
    for pairs, kind, target, baseline_name in results:
        ratios = pairs.ratios
        ratio = statistics.median(ratios)
        rate = pairs.rate(pairs.measured)
        if kind == "ratio":
            ok = ratio <= target
            goal = f"≤ {target}×"
        else:
            ok = rate >= target
            goal = f"≥ {target:,.0f} {pairs.unit}"
        lines.append(
            f"| {pairs.name} | {baseline_name}: {pairs.rate(pairs.baseline):,.0f} {pairs.unit} "
            f"| {rate:,.0f} {pairs.unit} | {ratio:.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) "
            f"| {goal} | {'yes' if ok else 'NO'} | {pairs.rate(pairs.cpu):,.0f} {pairs.unit} |"
        )
    return "\n".join(lines)


def missed(results: Sequence[tuple[Pairs, str, float, str]]) -> list[str]:
    found = []
    for pairs, kind, target, _ in results:
        if kind == "ratio" and statistics.median(pairs.ratios) > target:
            found.append(f"{pairs.name}: ratio above {target}")
        if kind == "rate" and pairs.rate(pairs.measured) < target:
            found.append(f"{pairs.name}: below {target:,.0f} {pairs.unit}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="referralkit security benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--repeat", type=int, default=None, help="pairs per figure")
    parser.add_argument("--paths", type=int, default=None, help="whole paths per run (100)")
    parser.add_argument("--referrals", type=int, default=None, help="bulk referrals (5,000)")
    args = parser.parse_args(argv)
    paths, referrals = (5, 200) if args.quick else (100, 5000)
    paths, referrals = args.paths or paths, args.referrals or referrals
    repeat = args.repeat or (2 if args.quick else 7)
    ring = rk.KeyRing.generate()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        results = [
            (whole_path(folder, paths, repeat, ring), "ratio", PATH_RATIO_TARGET, "unencrypted"),
            (bulk_intake(folder, referrals, repeat, ring), "rate", INTAKE_TARGET, "unencrypted"),
            (rotation(folder, referrals, repeat, ring), "rate", ROTATION_TARGET, "export read"),
        ]
    print(render(results))
    print()
    print(
        "checked: every path completed and stored as returned; bulk intake counts and a "
        "sample read back equal; after rotation every record on the new key, a sample equal, "
        "no family name in clear"
    )
    if wrong:
        print("WRONG:", *wrong, sep="\n  ", file=sys.stderr)
        return 1
    if args.check and not args.quick:
        misses = missed(results)
        if misses:
            print("missed:", *misses, sep="\n  ", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
