"""What audited reads cost (issue 13): a read through the desk with its access-log record
against the same read without one, on the same store and data, timed in pairs.

Usage::

    python benchmarks/bench_security_access.py            # full run
    python benchmarks/bench_security_access.py --quick    # tiny counts, to check that it runs
    python benchmarks/bench_security_access.py --check    # exit 1 when a target is missed

Rows (each on SQLite, a file in a temporary folder, and on the memory store; the memory
store's ``get`` rows have no target: their baseline is a dictionary lookup, so they show what
a record costs in microseconds):

- ``get``: ``desk.get(actor, id)`` (permission, scope, load, one access-log record appended in
  the read's transaction, ``ReferralStore.load_recorded``) against the read as it was before
  the access log: the permission check and ``store.load(id)``. Target: **≤ 1.5×**.
- ``worklist top-50``: ``desk.worklist(actor)`` (scope filter, one record naming the 50 rows)
  against the same ranking without scope or record (the query, ``assess`` and ``rank`` the
  desk ran before). Target: **≤ 1.2×**.
- each row with every record written with its read (``access_log_batch=1``, the default) and
  with records written 64 at a time (``access_log_batch=64``);
- ``verify``: the access log's hash chain recomputed (``referralkit.tamper.verify``), records
  per second over 200,000 records. Target: **≥ 50,000/s**.
- the same rows for a *scoped* actor (an organisation; half the referrals are its own),
  where the baseline reads the same referrals: the scope check is part of what is measured.

Each row is checked before it is timed: the audited read returns what the baseline returns,
and appends exactly one record. Methods are timed interleaved with their baseline (baseline,
method, baseline, method...), the ratio taken per pair; the table shows its median with min
and max, the median ratio of the CPU times (the process's own user and system time) beside
it, and the load average before and after (the machine may be shared: read the ratios; the
verdict is the wall-clock ratio's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from referralkit import ReferralDesk
from referralkit.privacy import Actor, Role, authorize
from referralkit.storage import Query, ReferralStore, open_store
from referralkit.testing import FakeClock, sample_request
from referralkit.worklist import WorklistFilter, assess, rank

GET_TARGET = 1.5
WORKLIST_TARGET = 1.2
VERIFY_TARGET = 50_000  # access-log records verified per second
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)

rows: list[tuple[str, str, float, float, float, float, float, float, str]] = []
verify_rows: list[tuple[str, int, float, float, float, str]] = []
missed: list[str] = []


def measure_verify(store_name: str, url: str, count: int, repeat: int) -> None:
    """``verify`` over an access log of ``count`` records: records per second (median, min,
    max of ``repeat`` runs), checked first: the intact log verifies, an edited one does not."""
    from referralkit.access import AccessOutcome, AccessRecord
    from referralkit.tamper import verify

    with open_store(url) as store:
        batch = [
            AccessRecord(
                at=START + dt.timedelta(seconds=n),
                actor=f"user-{n % 40}",
                action="get",
                outcome=AccessOutcome.ALLOWED,
                referral_ids=(f"ref-{n:08d}",),
                roles=("coordinator",),
                organization="org-a",
                purpose="treatment",
            )
            for n in range(count)
        ]
        for start in range(0, count, 5_000):
            store.append_access(batch[start : start + 5_000])
        report = verify(store)
        assert report.ok, report
        assert report.records == count
        rates = []
        for _ in range(repeat):
            began = time.perf_counter()
            verify(store)
            rates.append(count / (time.perf_counter() - began))
    rate = statistics.median(rates)
    verdict = "ok" if rate >= VERIFY_TARGET else "MISSED"
    if rate < VERIFY_TARGET:
        missed.append(f"{store_name} verify: {rate:,.0f}/s < {VERIFY_TARGET:,}/s")
    verify_rows.append((store_name, count, rate, min(rates), max(rates), verdict))


def populate(store: ReferralStore, count: int) -> list[str]:
    """``count`` sent referrals, half from org-a to org-b, half from org-c to org-d."""
    clock = FakeClock(START)
    desk = ReferralDesk(store, clock=clock)
    actor = Actor("setup", {Role.COORDINATOR})
    ids = []
    base = sample_request()
    assert base.target is not None
    for n in range(count):
        sender, receiver = ("org-a", "org-b") if n % 2 == 0 else ("org-c", "org-d")
        request = attrs.evolve(
            base,
            source_id=f"REQ-{n:06d}",
            patient=attrs.evolve(base.patient, id=f"pat-{n:06d}"),
            referring=attrs.evolve(base.referring, organization=sender),
            target=attrs.evolve(base.target, organization=receiver),
        )
        referral = desk.intake(actor, request)
        ids.append(desk.send(actor, referral.id).id)
        clock.advance(minutes=7)
    return ids


def timed(function: Callable[[], Any], loops: int) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``function`` over ``loops`` calls, the collector
    paused (CPU: the process's own time, user and system, which a shared machine's other
    work does not inflate as it does the wall clock)."""
    gc.disable()
    try:
        start, cpu = time.perf_counter_ns(), time.process_time_ns()
        for _ in range(loops):
            function()
        wall = (time.perf_counter_ns() - start) / loops / 1e9
        return wall, (time.process_time_ns() - cpu) / loops / 1e9
    finally:
        gc.enable()


def paired(
    baseline: Callable[[], Any], method: Callable[[], Any], loops: int, pairs: int
) -> tuple[float, float, float, float, float, float]:
    """Median seconds of baseline and method, the median, min and max of their ratio, and
    the median ratio of their CPU times, over ``pairs`` interleaved pairs (one untimed
    warm-up each first)."""
    baseline()
    method()
    base_times, method_times, ratios, cpu_ratios = [], [], [], []
    for _ in range(pairs):
        b, b_cpu = timed(baseline, loops)
        m, m_cpu = timed(method, loops)
        base_times.append(b)
        method_times.append(m)
        ratios.append(m / b)
        cpu_ratios.append(m_cpu / b_cpu if b_cpu > 0 else float("nan"))
    return (
        statistics.median(base_times),
        statistics.median(method_times),
        statistics.median(ratios),
        min(ratios),
        max(ratios),
        statistics.median(cpu_ratios),
    )


def row(
    store_name: str,
    name: str,
    baseline: Callable[[], Any],
    method: Callable[[], Any],
    target: float,
    loops: int,
    pairs: int,
    check: bool,
) -> None:
    base, audited, ratio, low, high, cpu = paired(baseline, method, loops, pairs)
    verdict = "ok" if ratio <= target else "MISSED"
    if store_name.startswith("memory") and name.startswith("get"):
        # the baseline is a dictionary lookup (about a microsecond): no ratio target, the
        # row shows what a record costs in absolute terms
        verdict = "no target"
    elif ratio > target:
        missed.append(f"{store_name} {name}: {ratio:.2f}x > {target}x")
    rows.append((store_name, name, base * 1e6, audited * 1e6, ratio, low, high, cpu, verdict))
    del check


def check_get(desk: ReferralDesk, actor: Actor, rid: str) -> None:
    desk.flush_access_log()
    before = len(desk.store.access_records())
    assert desk.get(actor, rid) == desk.store.load(rid)
    desk.flush_access_log()
    after = desk.store.access_records()
    assert len(after) == before + 1
    assert after[-1].referral_ids == (rid,)
    assert after[-1].action == "get"


def old_worklist(desk: ReferralDesk, when: dt.datetime, keep: Callable[[Any], bool]) -> list[Any]:
    """The worklist as the desk ranked it before scopes and the access log."""
    authorize(Actor("b", {Role.COORDINATOR}), "worklist")
    items = (
        assess(r, desk.store.events(r.id), when, rules=desk.worklist_rules)
        for r in desk.store.query(Query(open_only=True))
        if r.created_at <= when and keep(r)
    )
    return rank(items, where=WorklistFilter(), limit=50)


def measure(store_name: str, url: str, count: int, loops: int, pairs: int, check: bool) -> None:
    with open_store(url) as store:
        ids = populate(store, count)
        when = START + dt.timedelta(days=30)
        for batch in (1, 64):
            desk = ReferralDesk(store, clock=FakeClock(when), access_log_batch=batch)
            mode = "" if batch == 1 else f", batch {batch}"
            measure_desk(store_name + mode, desk, ids, when, loops, pairs, check)
            desk.flush_access_log()


def measure_desk(
    store_name: str,
    desk: ReferralDesk,
    ids: list[str],
    when: dt.datetime,
    loops: int,
    pairs: int,
    check: bool,
) -> None:
    store = desk.store
    everyone = Actor("coord-1", {Role.COORDINATOR})
    scoped = Actor("coord-a", {Role.COORDINATOR}, organization="org-a")
    own = [i for n, i in enumerate(ids) if n % 2 == 0]

    def org_a(r: Any) -> bool:
        return bool(r.referring.organization == "org-a")

    def anyone(r: Any) -> bool:
        return True

    for actor, pick, keep, label in (
        (everyone, ids, anyone, ""),
        (scoped, own, org_a, ", scoped"),
    ):
        check_get(desk, actor, pick[0])
        cursor = iter(range(10**9))

        def baseline_get(pick: list[str] = pick, cursor: Any = cursor) -> Any:
            authorize(everyone, "get")
            return store.load(pick[next(cursor) % len(pick)])

        def audited_get(pick: list[str] = pick, actor: Actor = actor, cursor: Any = cursor) -> Any:
            return desk.get(actor, pick[next(cursor) % len(pick)])

        row(store_name, f"get{label}", baseline_get, audited_get, GET_TARGET, loops, pairs, check)

        desk.flush_access_log()
        before = len(store.access_records())
        got = [i.referral_id for i in desk.worklist(actor, as_of=when)]
        expected = [i.referral_id for i in old_worklist(desk, when, keep)]
        assert got == expected, "worklist differs"
        assert len(got) == min(50, len(pick))
        desk.flush_access_log()
        assert len(store.access_records()) == before + 1

        def baseline_worklist(keep: Callable[[Any], bool] = keep) -> Any:
            return old_worklist(desk, when, keep)

        def audited_worklist(actor: Actor = actor) -> Any:
            return desk.worklist(actor, as_of=when)

        row(
            store_name,
            f"worklist top-50{label}",
            baseline_worklist,
            audited_worklist,
            WORKLIST_TARGET,
            max(1, loops // 200),
            pairs,
            check,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="referralkit audited-read benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--pairs", type=int, default=None, help="timed pairs per row")
    parser.add_argument("--referrals", type=int, default=None, help="referrals stored")
    args = parser.parse_args(argv)
    count = args.referrals or (120 if args.quick else 2_000)
    loops = 200 if args.quick else 2_000
    pairs = args.pairs or (3 if args.quick else 11)
    rows.clear()
    verify_rows.clear()
    missed.clear()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        measure("sqlite", f"sqlite:///{Path(folder) / 'bench.db'}", count, loops, pairs, args.check)
        logged = 2_000 if args.quick else 200_000
        measure_verify(
            "sqlite", f"sqlite:///{Path(folder) / 'log.db'}", logged, 3 if args.quick else 5
        )
        measure_verify("memory", "memory://", logged, 3)
    measure("memory", "memory://", count, loops, pairs, args.check)
    load_after = os.getloadavg()
    print(
        f"## Audited reads: {count} referrals, {pairs} pairs, load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (2 CPUs)\n"
    )
    print(
        "| store | read | without (µs) | audited (µs) | ratio (median) | min | max "
        "| CPU-time ratio (median) | target |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|---|")
    for store_name, name, base, audited, ratio, low, high, cpu, verdict in rows:
        target = GET_TARGET if name.startswith("get") else WORKLIST_TARGET
        print(
            f"| {store_name} | {name} | {base:.1f} | {audited:.1f} | {ratio:.2f}x | "
            f"{low:.2f}x | {high:.2f}x | {cpu:.2f}x | ≤ {target}x {verdict} |"
        )
    print("\n| store | verify: records | records/s (median) | min | max | target |")
    print("|---|--:|--:|--:|--:|---|")
    for store_name, logged, rate, low, high, verdict in verify_rows:
        print(
            f"| {store_name} | {logged:,} | {rate:,.0f} | {low:,.0f} | {high:,.0f} | "
            f"≥ {VERIFY_TARGET:,}/s {verdict} |"
        )
    if missed:
        print("\nmissed: " + "; ".join(missed), file=sys.stderr)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
