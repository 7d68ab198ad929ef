"""Core benchmark: lifecycle checks through the derived table versus python-statemachine, and
one referral's whole path through the desk.

    python benchmarks/bench_core.py            # full run, about a minute
    python benchmarks/bench_core.py --quick    # tiny counts, to check that it runs
    python benchmarks/bench_core.py --check    # exit 1 when a target is missed

Prints a Markdown table. Every figure is the median over ``--repeat`` runs of the per-operation
time (``time.perf_counter_ns``, garbage collector paused while timing). Each check is timed
interleaved with its python-statemachine baseline (baseline, check, baseline, check... for
``--repeat`` pairs); the speed-up is taken per pair and shown as its median with min and max,
so it carries across machines and loads even when the absolute numbers do not.

It needs referralkit alone (no ``test`` extra): the referrals are synthetic
(:mod:`referralkit.synth`). It checks what it times and exits 1 on a wrong result: every table
answer equals python-statemachine's (the event is allowed, and ``next_status`` is the state the
machine reaches); after the whole paths, the store holds exactly the referrals taken through
it, each completed, each stored snapshot equal to the one the desk returned and to the replay
of its stored history, whose events start with ``created``, hold one status change per later
operation, one version per operation in order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import attrs

import referralkit as rk
from referralkit import synth
from referralkit.clock import FakeClock
from referralkit.errors import GuardError, NotFoundError
from referralkit.events import replay
from referralkit.lifecycle import TABLE, ReferralLifecycle, intake_complete

# The targets: a table check must be cheap enough to run on every operation and in bulk
# (imports, replays, analytics); a whole referral path must leave room for real storage.
TABLE_TARGET_US = 1.0
PATH_TARGET_US = 1500.0

VISIT = dt.datetime(2026, 1, 12, 9, 30, tzinfo=dt.UTC)
COORDINATOR = rk.Actor("bench", {rk.Role.COORDINATOR})
START = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
OPERATIONS = 6  # intake (created), then five status changes

wrong: list[str] = []  # results that differ from their reference (always fatal)


def path(desk: rk.ReferralDesk, request: rk.IntakeRequest) -> rk.Referral:
    """intake → send → accept → schedule → record_visit → complete: the completed referral."""
    referral_id = desk.intake(COORDINATOR, request).id
    desk.send(COORDINATOR, referral_id)
    desk.accept(COORDINATOR, referral_id)
    desk.schedule(COORDINATOR, referral_id, VISIT)
    desk.record_visit(COORDINATOR, referral_id)
    return desk.complete(COORDINATOR, referral_id, "Consult note.")


def complete_requests(n: int) -> list[rk.IntakeRequest]:
    """``n`` synthetic requests that go the whole path on a scratch desk (intake finds them
    complete, they name a specialist, no authorization is pending), untimed."""
    found: list[rk.IntakeRequest] = []
    for request in synth.population(4 * n + 20, 5, START):
        try:
            path(rk.ReferralDesk(rk.open_store("memory://"), clock=FakeClock(START)), request)
        except GuardError:
            continue
        found.append(request)
        if len(found) == n:
            return found
    raise SystemExit(f"fewer than {n} complete requests in the synthetic population")


@attrs.frozen
class Result:
    """One row: what was measured, microseconds per operation in each repeat, its target."""

    group: str
    name: str
    times_us: tuple[float, ...]
    target_us: float | None = None
    is_baseline: bool = False
    compare: bool = True
    ratios: tuple[float, ...] = ()  # baseline time / this time, per pair

    @property
    def median(self) -> float:
        return statistics.median(self.times_us)

    @property
    def best(self) -> float:
        return min(self.times_us)


def once(run: Callable[[Any], None], inputs: Any, n: int) -> float:
    """Microseconds per operation of one ``run(inputs)``, garbage collector paused."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        run(inputs)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / n / 1000


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


@attrs.frozen
class Spec:
    """One operation to time: ``run(prepare(n))``, ``n`` operations per run."""

    name: str
    run: Callable[[Any], None]
    n: int
    target_us: float | None = None
    compare: bool = True
    prepare: Callable[[int], Any] = lambda n: n


def paired(group: str, baseline: Spec, specs: Sequence[Spec], repeat: int) -> list[Result]:
    """Each operation timed right after a run of the baseline, ``repeat`` rounds of (baseline,
    operation) for every operation; the speed-up is taken per pair."""
    for spec in (baseline, *specs):
        spec.run(spec.prepare(min(spec.n, 10)))  # warm up: imports and caches
    base_times: list[float] = []
    times: list[list[float]] = [[] for _ in specs]
    ratios: list[list[float]] = [[] for _ in specs]
    for _ in range(repeat):
        for i, spec in enumerate(specs):
            base = once(baseline.run, baseline.prepare(baseline.n), baseline.n)
            mine = once(spec.run, spec.prepare(spec.n), spec.n)
            base_times.append(base)
            times[i].append(mine)
            ratios[i].append(base / mine)
    rows = [
        Result(group, spec.name, tuple(t), spec.target_us, compare=spec.compare, ratios=tuple(r))
        for spec, t, r in zip(specs, times, ratios, strict=True)
    ]
    rows.append(Result(group, baseline.name, tuple(base_times), is_baseline=True))
    return rows


def referrals_in_states() -> dict[rk.Status, rk.Referral]:
    """Real referrals, made by the desk, in the states the checks start from."""
    desk = rk.ReferralDesk(rk.open_store("memory://"), clock=FakeClock(START))
    referral = desk.intake(COORDINATOR, complete_requests(1)[0])
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

    reference = ReferralLifecycle(start_value=status)
    reference.send(event, referral=referral)
    expected = rk.Status(reference.current_state_value)
    answers: dict[str, object] = {}

    def allows(count: int) -> None:
        answer = False
        for _ in range(count):
            answer = TABLE.allows(status, event)
        answers["allows"] = answer

    def next_status(count: int) -> None:
        answer = None
        for _ in range(count):
            answer = TABLE.next_status(referral, event)
        answers["next_status"] = answer

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

    specs: list[Spec] = []
    if guarded:
        # the target is the table's own cost; a guard costs what its business rule costs
        specs.append(Spec("`TABLE.next_status(referral, event)`, guard included", next_status, n))
        specs.append(
            Spec("the guard alone: `intake_complete(referral)`", guard_alone, n, compare=False)
        )
    else:
        specs.append(Spec("`TABLE.allows(status, event)`", allows, n, TABLE_TARGET_US))
        specs.append(Spec("`TABLE.next_status(referral, event)`", next_status, n, TABLE_TARGET_US))
    specs.append(
        Spec(
            "python-statemachine: `send` on a pre-built machine",
            send_only,
            machines_n,
            prepare=machines,
        )
    )
    baseline = Spec(
        "python-statemachine: `ReferralLifecycle(start_value=…)` + `send`",
        restore_and_send,
        machines_n,
    )
    rows = paired(group, baseline, specs, repeat)
    if "allows" in answers and answers["allows"] is not True:
        wrong.append(f"{group}: TABLE.allows says no, python-statemachine allows it")
    if answers["next_status"] != expected:
        wrong.append(
            f"{group}: TABLE.next_status gave {answers['next_status']}, "
            f"python-statemachine reached {expected}"
        )
    return rows


def whole_path(n: int, repeat: int) -> Result:
    """intake → send → accept → schedule → record_visit → complete, on a MemoryStore."""
    requests = complete_requests(n)

    def run(count: int) -> None:
        store = rk.open_store("memory://")
        desk = rk.ReferralDesk(store, clock=FakeClock(START))
        done = []
        for request in requests[:count]:
            done.append(path(desk, request))
        runs.append((store, done, count))  # checked after the timing

    runs: list[tuple[Any, list[rk.Referral], int]] = []
    result = Result(
        "one referral's whole path, MemoryStore",
        "intake → send → accept → schedule → record_visit → complete",
        measure(run, n, repeat),
        PATH_TARGET_US,
    )
    for store, done, count in runs:
        check_paths(store, done, count)
    return result


def check_paths(store: Any, done: Sequence[rk.Referral], count: int) -> None:
    """The store holds exactly the ``count`` referrals taken through the path, each completed,
    stored as the desk returned it and as its history replays; the history starts with
    ``created``, has one status change per later operation and one version per operation."""
    group = "whole path"
    if len(done) != count or store.count() != count:
        wrong.append(f"{group}: {store.count()} stored, {len(done)} done, {count} expected")
    for referral in done:
        try:
            stored = store.load(referral.id)
        except NotFoundError:
            wrong.append(f"{group}: {referral.id} is not in the store")
            continue
        events = store.events(referral.id)
        if stored.status is not rk.Status.COMPLETED:
            wrong.append(f"{group}: {referral.id} ended {stored.status}, not completed")
        if stored != referral:
            wrong.append(f"{group}: {referral.id} stored differs from the desk's")
        types = [e.type for e in events]
        if types[:1] != ["created"] or types.count("status_changed") != OPERATIONS - 1:
            wrong.append(f"{group}: {referral.id} history is {types}")
        keys = [(e.version, e.index) for e in events]
        versions = sorted({e.version for e in events})
        if (
            keys != sorted(set(keys))
            or versions != list(range(versions[0], versions[0] + OPERATIONS))
            or stored.version != versions[-1]
        ):
            wrong.append(f"{group}: {referral.id} history is not one version per operation")
        if replay(events) != stored:
            wrong.append(f"{group}: {referral.id} replay differs from the stored snapshot")


def fmt_us(value: float) -> str:
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def render(results: Sequence[Result]) -> str:
    """The results as a Markdown table, with each row's speed-up over its group's baseline."""
    lines = [
        "| check | operation | median µs/op | best µs/op | vs baseline | target | met |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        if r.is_baseline:
            ratio = "baseline"
        elif r.ratios and r.compare:
            ratio = (
                f"{statistics.median(r.ratios):,.0f}× faster "
                f"({min(r.ratios):,.0f}–{max(r.ratios):,.0f})"
            )
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

    loads = [os.getloadavg()]
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
        f"{'quick' if args.quick else 'full'} run, {repeat} pairs (or repeats) of "
        f"{table_n:,} table checks, {machines_n:,} machines and {paths_n:,} paths; load average "
        f"{', '.join(f'{x:.2f}' for x in loads[0])} before, "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after"
    )
    print()
    print(render(results))
    if wrong:
        print("\nWRONG RESULTS:\n  " + "\n  ".join(dict.fromkeys(wrong)), file=sys.stderr)
        return 1
    print("\nchecked: every table answer equals python-statemachine's; each whole path left")
    print("one completed referral, stored equal to the desk's snapshot and to its history's")
    print(
        f"replay, the history {OPERATIONS} versions: created, then {OPERATIONS - 1} status changes"
    )
    missed = [r for r in results if r.target_us is not None and r.median > r.target_us]
    if missed:
        print()
        print("missed targets: " + "; ".join(f"{r.group}: {r.name}" for r in missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
