"""Policy-testing benchmark: drawing referrals for a policy, what-if over whole policies, and
``rules test`` on the shipped policies (issue 11's figures).

    python benchmarks/bench_policy_testing.py            # full run (a few minutes)
    python benchmarks/bench_policy_testing.py --quick    # small counts, about a minute
    python benchmarks/bench_policy_testing.py --check    # exit 1 when a target is missed

Part 1 draws referrals for the shipped coverage and urgency policies together with
:func:`referralkit.testing.sample_referrals`, the documented bulk path (seeded), paired with
:func:`referralkit.synth.referrals` drawing as many synthetic referrals (which know nothing
of the rules). Every timed run's draw is checked equal to the untimed first one (seeded:
the same referrals on every run) and to cover every rule. Target: 10,000 referrals at
≥ 2,000 referrals/s. The Hypothesis strategy :func:`referralkit.testing.referrals_for` is
timed once beside it, for the record: a Hypothesis example costs more than the whole seeded
draw, so it is not the bulk path and has no target here.

Part 2 runs :func:`referralkit.rules.whatif.what_if` over a synthetic population: the
shipped policies against a variant (the suspected cancer window halved, one HMO rule
stricter), coverage and urgency together ("both"), and each alone. The baseline is the least
a what-if must do: decide every referral with both sides directly, in a plain loop. Every
timed result is checked against that baseline's labels (the same from→to counts, referral by
referral). Target: both policies over 100,000 referrals at ≥ 20,000 referrals/s.

Part 3 times :func:`referralkit.testing.run_checks` on the shipped policies (what
``referralkit rules test`` runs) with 1,000 examples per check, once; every check must pass.
Target: under 60 s.

Each figure is given in wall time, which the targets are judged on, and in this process's CPU
time, which is what a quiet machine approaches (on 2 CPUs shared by many processes the wall
time mostly counts the others).

How parts 1 and 2 measure: as ``bench_rules.py`` does, each method is timed interleaved with
its baseline on the same data (baseline, method, ... for ``--rounds`` pairs, after one
untimed warm-up of each, garbage collector paused while timing); the table gives the median
ratio with min and max, and the load average before and after. A wrong result exits 1
whatever the options; a missed target exits 1 with ``--check``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

import referralkit as rk
from referralkit import synth
from referralkit.rules import loads
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy, shipped_paths
from referralkit.rules.whatif import what_if
from referralkit.testing import referrals_for, rule_coverage, run_checks, sample_referrals
from referralkit.testing._derive import draw_examples

DRAW_TARGET = 2_000.0  # referrals/s
WHATIF_TARGET = 20_000.0  # referrals/s
RULES_TEST_TARGET = 60.0  # seconds
START = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)


@attrs.define
class Pair:
    """A method timed in pairs with its baseline: seconds of each side, ratio per pair."""

    method_s: list[float]
    baseline_s: list[float]
    ratios: list[float]
    method_cpu: list[float] = attrs.Factory(list)

    def rate(self, count: int) -> float:
        """Records per second of the method, from its median time."""
        return count / statistics.median(self.method_s)

    def cpu_rate(self, count: int) -> float:
        """Records per second of the method's own CPU time (median): what a quiet machine
        approaches, where the wall time would be the CPU time."""
        return count / statistics.median(self.method_cpu)

    def spread(self) -> str:
        return (
            f"{statistics.median(self.ratios):.2f}× "
            f"({min(self.ratios):.2f}–{max(self.ratios):.2f}), {len(self.ratios)} pairs"
        )


@attrs.define
class Row:
    method: str
    figure: str
    baseline: str
    ratio: str
    target: str
    met: bool | None
    note: str


rows: list[Row] = []
wrong: list[str] = []  # results that differ from their reference (always fatal)


def once(run: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one run of ``run`` (garbage collector paused), and its result."""
    wall, _, result = timed(run)
    return wall, result


def timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds and this process's CPU seconds of one run of ``run`` (garbage collector
    paused), and its result. On a loaded machine the wall time counts the time other
    processes had the CPU; the CPU time does not."""
    gc.collect()
    gc.disable()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        result = run()
        return time.perf_counter() - start, time.process_time() - cpu, result
    finally:
        gc.enable()


def paired(
    baseline: Callable[[], Any],
    method: Callable[[], Any],
    rounds: int,
    check: Callable[[Any], None],
) -> Pair:
    """Time ``method`` interleaved with ``baseline``: one untimed warm-up of each, then
    ``rounds`` pairs (baseline, method); ``check`` sees every result of the method."""
    baseline()
    check(method())
    pair = Pair([], [], [])
    for _ in range(rounds):
        base_s, _ = once(baseline)
        method_s, method_cpu, result = timed(method)
        check(result)
        pair.baseline_s.append(base_s)
        pair.method_s.append(method_s)
        pair.method_cpu.append(method_cpu)
        pair.ratios.append(method_s / base_s)
    return pair


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def shipped() -> tuple[CoveragePolicy, UrgencyPolicy]:
    return CoveragePolicy.shipped(), UrgencyPolicy.shipped()


def variant() -> tuple[CoveragePolicy, UrgencyPolicy]:
    """The shipped policies with two changes a policy owner might try: the suspected cancer
    window halved (14 days to 7), and the HMO's OB/GYN rule needing authorization."""
    changes = {
        "urgency-10-clinical.toml": ("due_days = 14, score = 150", "due_days = 7, score = 150"),
        "coverage-40-commercial-hmo.toml": (
            'covered = "covered", pa_needed = "no-auth", explanation = "Covered; no referral',
            'covered = "covered", pa_needed = "auth-needed", explanation = "Covered; no referral',
        ),
    }
    rulesets = []
    for path in shipped_paths():
        text = path.read_text(encoding="utf-8")
        if path.name in changes:
            old, new = changes[path.name]
            if old not in text:
                raise SystemExit(f"bench: {path.name} no longer holds {old!r}: update variant()")
            text = text.replace(old, new)
        rulesets.append(loads(text, source=str(path)))
    coverage = [r for r in rulesets if r.kind.value == "coverage"]
    urgency = [r for r in rulesets if r.kind.value == "urgency"]
    return CoveragePolicy(coverage), UrgencyPolicy(urgency)


# --------------------------------------------------------------------------- part 1


def part_one(count: int, rounds: int, hypothesis_count: int) -> None:
    policies = shipped()
    first = sample_referrals(policies, count)
    coverage = rule_coverage(policies, examples=count)
    never = sorted(f"{r}/{i}" for (r, i), share in coverage.matched.items() if share == 0)
    if never:
        wrong.append(f"drawing: rules no drawn referral matches: {', '.join(never)}")

    def check(drawn: list[Any]) -> None:
        if drawn != first:
            wrong.append("drawing: a seeded draw differs from the first one")

    pair = paired(
        lambda: list(synth.referrals(count, 11, START)),
        lambda: sample_referrals(policies, count),
        rounds,
        check,
    )
    rate = pair.rate(count)
    (least, share) = coverage.least()
    rows.append(
        Row(
            f"drawing {count:,} referrals for the shipped policies: sample_referrals",
            f"{rate:,.0f} referrals/s ({pair.cpu_rate(count):,.0f}/s of CPU time)",
            "synth.referrals, as many",
            pair.spread(),
            f"≥ {DRAW_TARGET:,.0f}/s",
            rate >= DRAW_TARGET,
            f"same draw every run; every rule matched (least: {least[1]} {share:.1%})",
        )
    )
    print(f"  sample_referrals: {rate:,.0f} referrals/s, vs synth {pair.spread()}", flush=True)
    seen: list[Any] = []
    seconds, cpu, _ = timed(
        lambda: draw_examples(referrals_for(policies), hypothesis_count, seen.append)
    )
    if len(seen) != hypothesis_count:
        wrong.append(f"drawing: Hypothesis gave {len(seen)} of {hypothesis_count} referrals")
    rows.append(
        Row(
            f"drawing {hypothesis_count:,} referrals: referrals_for (Hypothesis strategy)",
            f"{hypothesis_count / seconds:,.0f} referrals/s "
            f"({hypothesis_count / cpu:,.0f}/s of CPU time)",
            "–",
            "one run",
            "– (property tests, not bulk)",
            None,
            f"{len(seen):,} drawn",
        )
    )
    print(f"  referrals_for: {hypothesis_count / seconds:,.0f} referrals/s", flush=True)


# --------------------------------------------------------------------------- part 2


def direct(
    side: Any, referral: Any, at: dt.datetime
) -> tuple[Any | None, Any | None]:  # the baseline's decisions
    coverage, urgency = side
    decision = assessment = None
    if coverage is not None:
        decision = coverage.decide(referral, at)
    if urgency is not None:
        subject = referral
        if coverage is not None:
            subject = attrs.evolve(referral, coverage_decision=decision)
        assessment = urgency.assess(subject, at)
    return decision, assessment


def label(decision: Any, assessment: Any, start: dt.datetime) -> str:
    parts = []
    if decision is not None:
        pa = decision.pa_needed.value if decision.pa_needed is not None else "-"
        parts.append(f"{decision.covered.value}/{pa}")
    if assessment is not None:
        seconds = (assessment.due_by - start).total_seconds()
        if seconds % 86400 == 0 and seconds >= 7 * 86400:
            parts.append(f"{assessment.priority.value}, due {int(seconds // 86400)}d")
        else:
            parts.append(f"{assessment.priority.value}, due {seconds / 3600:g}h")
    return " · ".join(parts)


def part_two(count: int, rounds: int) -> None:
    referrals = list(synth.referrals(count, 11, START))
    old, new = shipped(), variant()
    for name, pick in (
        ("both", lambda p: p),
        ("coverage", lambda p: (p[0], None)),
        ("urgency", lambda p: (None, p[1])),
    ):
        left, right = pick(old), pick(new)
        subject_left = left if name == "both" else next(s for s in left if s is not None)
        subject_right = right if name == "both" else next(s for s in right if s is not None)

        def baseline(left: Any = left, right: Any = right) -> collections.Counter[tuple[str, str]]:
            counts: collections.Counter[tuple[str, str]] = collections.Counter()
            for r in referrals:
                at = r.updated_at
                start = r.received_at or at
                a = label(*direct(left, r, at), start)
                b = label(*direct(right, r, at), start)
                counts[(a, b)] += 1
            return counts

        reference = baseline()
        changed = sum(n for (a, b), n in reference.items() if a != b)

        def check(result: Any, reference: Any = reference, name: str = name) -> None:
            got = {(c.old, c.new): c.count for c in result.changes}
            if result.total != count or got != dict(reference):
                wrong.append(f"what-if {name}: the counts differ from deciding directly")

        def method(old: Any = subject_left, new: Any = subject_right) -> Any:
            return what_if(old, new, referrals)

        pair = paired(baseline, method, rounds, check)
        rate = pair.rate(count)
        target = name == "both"
        rows.append(
            Row(
                f"what-if, {name}, {count:,} referrals",
                f"{rate:,.0f} referrals/s ({pair.cpu_rate(count):,.0f}/s of CPU time)",
                "deciding with both sides directly",
                pair.spread(),
                f"≥ {WHATIF_TARGET:,.0f}/s" if target else "–",
                rate >= WHATIF_TARGET if target else None,
                f"{changed:,} changed; counts equal to deciding directly",
            )
        )
        print(f"  what-if {name}: {rate:,.0f} referrals/s, vs direct {pair.spread()}", flush=True)


# --------------------------------------------------------------------------- part 3


def part_three(examples: int) -> None:
    policies = shipped()
    seconds, cpu, results = timed(lambda: run_checks(policies, examples=examples))
    failed = [f"{r.check} ({r.subject})" for r in results if r.status == "failed"]
    skipped = sum(r.status == "skipped" for r in results)
    if failed:
        wrong.append(f"rules test: checks failed on the shipped policies: {', '.join(failed)}")
    rows.append(
        Row(
            f"rules test, shipped policies, {examples:,} examples per check",
            f"{seconds:.1f} s ({cpu:.1f} s of CPU time)",
            "–",
            "one run",
            f"< {RULES_TEST_TARGET:g} s",
            seconds < RULES_TEST_TARGET,
            f"{len(results)} checks, {len(failed)} failed, {skipped} skipped (not applicable)",
        )
    )
    print(f"  rules test: {seconds:.1f} s for {len(results)} checks", flush=True)


def report(loads: Sequence[str]) -> None:
    print(f"\nLoad average (1, 5, 15 min): {loads[0]} before, {loads[1]} after")
    print("\n| method | figure | baseline | ratio to baseline, median (min–max) | target | met |")
    print("|---|---:|---|---:|---:|:---:|")
    for row in rows:
        met = "–" if row.met is None else ("yes" if row.met else "**no**")
        print(
            f"| {row.method} | {row.figure} | {row.baseline} | {row.ratio} | {row.target} | {met} |"
        )
    print("\nChecked:")
    for row in rows:
        print(f"- {row.method}: {row.note}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, about a minute")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--rounds", type=int, default=None, help="pairs per method")
    args = parser.parse_args(argv)
    if args.quick:
        draws, hypothesis, population, examples, rounds = 1_000, 100, 2_000, 50, 3
    else:
        draws, hypothesis, population, examples, rounds = 10_000, 1_000, 100_000, 1_000, 5
    rounds = args.rounds or rounds
    print(f"referralkit {rk.__version__}, Python {sys.version.split()[0]}, load average {load()}")
    loads = [load()]
    print(f"Part 1: drawing {draws:,} referrals for the shipped policies, {rounds} pairs")
    part_one(draws, rounds, hypothesis)
    print(f"Part 2: what-if over {population:,} synthetic referrals, {rounds} pairs")
    part_two(population, rounds)
    print(f"Part 3: rules test with {examples:,} examples per check")
    part_three(examples)
    loads.append(load())
    report(loads)
    return verdict(check=args.check)


def verdict(*, check: bool) -> int:
    """The exit status: 1 on a wrong result, or on a missed target with ``check``."""
    if wrong:
        print("\nWRONG RESULTS:\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    missed = [row.method for row in rows if row.met is False]
    if missed:
        print(f"\nTargets missed: {', '.join(missed)}")
        if check:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
