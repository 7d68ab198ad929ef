"""Core benchmark: lifecycle checks through the derived table versus python-statemachine, and
one referral's whole path through the desk.

    python benchmarks/bench_core.py            # full run, about a minute
    python benchmarks/bench_core.py --quick    # tiny counts, to check that it runs

Prints a Markdown table. Every figure is the median over ``--repeat`` runs of the per-operation
time (``time.perf_counter_ns``, garbage collector paused while timing). Speed-ups compare with
the python-statemachine baseline measured in the same run, so they carry across machines even
when the absolute numbers do not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import attrs

import referralkit as rk
from referralkit.lifecycle import TABLE, ReferralLifecycle, intake_complete
from referralkit.testing import FakeClock, sample_request

# The targets: a table check must be cheap enough to run on every operation and in bulk
# (imports, replays, analytics); a whole referral path must leave room for real storage.
TABLE_TARGET_US = 1.0
PATH_TARGET_US = 1500.0

VISIT = dt.datetime(2026, 1, 12, 9, 30, tzinfo=dt.UTC)
COORDINATOR = rk.Actor("bench", {rk.Role.COORDINATOR})


@attrs.frozen
class Result:
    """One row: what was measured, microseconds per operation in each repeat, its target."""

    group: str
    name: str
    times_us: tuple[float, ...]
    target_us: float | None = None
    is_baseline: bool = False
    compare: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.times_us)

    @property
    def best(self) -> float:
        return min(self.times_us)


def measure(
    run: Callable[[Any], None],
    n: int,
    repeat: int,
    prepare: Callable[[int], Any] = lambda n: n,
) -> tuple[float, ...]:
    """Microseconds per operation of ``run(prepare(n))``, once per repeat.

    ``prepare`` builds the inputs outside the timed part (by default ``run`` gets ``n``).
    """
    run(prepare(min(n, 10)))  # warm up: first calls pay for imports and caches
    times = []
    for _ in range(repeat):
        inputs = prepare(n)
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            run(inputs)
            elapsed = time.perf_counter_ns() - start
        finally:
            gc.enable()
        times.append(elapsed / n / 1000)
    return tuple(times)


def referrals_in_states() -> dict[rk.Status, rk.Referral]:
    """Real referrals, made by the desk, in the states the checks start from."""
    desk = rk.ReferralDesk(rk.open_store("memory://"), clock=FakeClock())
    referral = desk.intake(COORDINATOR, sample_request("BENCH-STATES"))
    received = desk.send(COORDINATOR, referral.id)
    desk.accept(COORDINATOR, referral.id)
    scheduled = desk.schedule(COORDINATOR, referral.id, VISIT)
    return {rk.Status.RECEIVED: received, rk.Status.SCHEDULED: scheduled}


def transition_checks(
    referral: rk.Referral, event: str, n: int, machines_n: int, repeat: int
) -> list[Result]:
    """The table and python-statemachine answering "may ``event`` happen now, and to where?"."""
    status = referral.status
    guarded = any(edge.guards for edge in TABLE.edges[(status, event)])
    group = f"`{event}`: {status} → {TABLE.next_status(referral, event)}"
    group += ", guarded" if guarded else ""

    def allows(count: int) -> None:
        for _ in range(count):
            TABLE.allows(status, event)

    def next_status(count: int) -> None:
        for _ in range(count):
            TABLE.next_status(referral, event)

    def guard_alone(count: int) -> None:
        for _ in range(count):
            intake_complete(referral)

    def machines(count: int) -> list[ReferralLifecycle]:
        return [ReferralLifecycle(start_value=status) for _ in range(count)]

    def send_only(built: list[ReferralLifecycle]) -> None:
        for machine in built:
            machine.send(event, referral=referral)

    def restore_and_send(count: int) -> None:
        for _ in range(count):
            ReferralLifecycle(start_value=status).send(event, referral=referral)

    rows = []
    if guarded:
        # the target is the table's own cost; a guard costs what its business rule costs
        rows.append(
            Result(
                group,
                "`TABLE.next_status(referral, event)`, guard included",
                measure(next_status, n, repeat),
            )
        )
        rows.append(
            Result(
                group,
                "the guard alone: `intake_complete(referral)`",
                measure(guard_alone, n, repeat),
                compare=False,
            )
        )
    else:
        rows.append(
            Result(
                group,
                "`TABLE.allows(status, event)`",
                measure(allows, n, repeat),
                TABLE_TARGET_US,
            )
        )
        rows.append(
            Result(
                group,
                "`TABLE.next_status(referral, event)`",
                measure(next_status, n, repeat),
                TABLE_TARGET_US,
            )
        )
    rows.append(
        Result(
            group,
            "python-statemachine: `send` on a pre-built machine",
            measure(send_only, machines_n, repeat, prepare=machines),
        )
    )
    rows.append(
        Result(
            group,
            "python-statemachine: `ReferralLifecycle(start_value=…)` + `send`",
            measure(restore_and_send, machines_n, repeat),
            is_baseline=True,
        )
    )
    return rows


def whole_path(n: int, repeat: int) -> Result:
    """intake → send → accept → schedule → record_visit → complete, on a MemoryStore."""
    requests = [sample_request(f"BENCH-{i:06d}") for i in range(n)]

    def run(count: int) -> None:
        desk = rk.ReferralDesk(rk.open_store("memory://"), clock=FakeClock())
        for request in requests[:count]:
            referral_id = desk.intake(COORDINATOR, request).id
            desk.send(COORDINATOR, referral_id)
            desk.accept(COORDINATOR, referral_id)
            desk.schedule(COORDINATOR, referral_id, VISIT)
            desk.record_visit(COORDINATOR, referral_id)
            desk.complete(COORDINATOR, referral_id, "Consult note.")

    return Result(
        "one referral's whole path, MemoryStore",
        "intake → send → accept → schedule → record_visit → complete",
        measure(run, n, repeat),
        PATH_TARGET_US,
    )


def fmt_us(value: float) -> str:
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def render(results: Sequence[Result]) -> str:
    """The results as a Markdown table, with each row's speed-up over its group's baseline."""
    baselines = {r.group: r.median for r in results if r.is_baseline}
    lines = [
        "| check | operation | median µs/op | best µs/op | vs baseline | target | met |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        base = baselines.get(r.group)
        if r.is_baseline:
            ratio = "baseline"
        elif base is not None and r.compare:
            ratio = f"{base / r.median:,.0f}× faster"
        else:
            ratio = "–"
        target = "–" if r.target_us is None else f"≤ {fmt_us(r.target_us)}"
        met = "–" if r.target_us is None else ("yes" if r.median <= r.target_us else "**no**")
        lines.append(
            f"| {r.group} | {r.name} | {fmt_us(r.median)} | {fmt_us(r.best)} | {ratio} "
            f"| {target} | {met} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="referralkit core benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument("--repeat", type=int, help="runs per measurement (the median is shown)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        table_n, machines_n, paths_n, repeat = 200, 20, 5, args.repeat or 3
    else:
        table_n, machines_n, paths_n, repeat = 100_000, 2_000, 1_000, args.repeat or 7

    states = referrals_in_states()
    results = [
        *transition_checks(
            states[rk.Status.SCHEDULED], "record_visit", table_n, machines_n, repeat
        ),
        *transition_checks(states[rk.Status.RECEIVED], "accept", table_n, machines_n, repeat),
        whole_path(paths_n, repeat),
    ]

    print(
        f"referralkit {rk.__version__} core benchmark: Python {platform.python_version()}, "
        f"python-statemachine {version('python-statemachine')}, {platform.machine()}; "
        f"{'quick' if args.quick else 'full'} run, median of {repeat} repeats of "
        f"{table_n:,} table checks, {machines_n:,} machines and {paths_n:,} paths"
    )
    print()
    print(render(results))
    missed = [r for r in results if r.target_us is not None and r.median > r.target_us]
    if missed:
        print()
        print("missed targets: " + "; ".join(f"{r.group}: {r.name}" for r in missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
