"""Rules benchmark: referralkit's engines beside hand-written Python and peer engines.

    python benchmarks/bench_rules.py                 # full run (a few minutes)
    python benchmarks/bench_rules.py --quick         # small counts, under a minute
    python benchmarks/bench_rules.py --check         # exit 1 when a target is missed
    python benchmarks/bench_rules.py --peers DIR     # where the shared peer problem lives
    python benchmarks/bench_rules.py --check-only    # part 3 only: rules check at 1k-8k rules

Part 1 is the peer problem of ``shared/bench/peers`` (20 first-hit coverage rules, 20,000 seeded
records), run in one process: hand-written if/elif (the baseline), referralkit's python engine
(first hit, with and without ``explain``), referralkit's durable engine, raw durable-rules
``post()`` on the peers' own compiled ruleset, and, when installed, zen-engine 2.1.3,
rule-engine and business-rules. Every method's fired rule is checked against the hand-written
decision for every record, on every timed run. Targets: the python engine ≤ 1.5× hand-written,
the durable engine ≤ 1.5× raw ``post()``.

Part 2 runs synthetic referrals (``referralkit.synth``) through the shipped coverage and urgency
policies, fact extraction included, paired with fact extraction alone (one ``extract`` per
referral). Every decision and assessment is checked against a reference: the same policies
consulted ruleset by ruleset with ``explain=True`` (no combined index, no decision cache), the
trace left aside. Target: ≤ 10 µs per referral (median over pairs).

Part 3 times ``rules check`` on generated rule tables of 1,000 to 8,000 rules (a payer × plan
× specialty table with age ranges and service prefixes, under ``first`` and ``unique``), fits
the growth exponent of time against size, and checks on 1,000 rules that the indexed check
reports exactly what comparing every pair reports (and how long that takes).

How parts 1 and 2 measure: each method is timed interleaved with its baseline on the same
data (baseline, method, baseline, method, ... for ``--rounds`` pairs, after one untimed
warm-up of each, garbage collector paused while timing); the ratio is taken per pair, so load
from other processes moves both sides of a pair; the table gives the median ratio with its min
and max, and the load average before and after. A wrong result exits 1 whatever the options;
a missed target exits 1 with ``--check``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

import referralkit as rk
from referralkit import synth
from referralkit.rules import PythonEngine, parse
from referralkit.rules.facts import extract
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy

HERE = Path(__file__).resolve().parent
DEFAULT_PEERS = HERE.parent.parent / "shared" / "bench" / "peers"
DAY = dt.date(2026, 6, 1)
RATIO_TARGET = 1.5
POLICY_TARGET_US = 10.0


@attrs.define
class Pair:
    """A method timed in pairs with its baseline: µs per record of each side, ratio per pair."""

    method_us: list[float]
    baseline_us: list[float]
    ratios: list[float]

    @property
    def us(self) -> float:
        return statistics.median(self.method_us)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def spread(self) -> str:
        return (
            f"{self.ratio:.2f}× ({min(self.ratios):.2f}–{max(self.ratios):.2f}), "
            f"{len(self.ratios)} pairs"
        )


@attrs.define
class Row:
    group: str
    method: str
    pair: Pair | None
    baseline: str
    target: str = "–"
    met: bool | None = None
    note: str = ""


rows: list[Row] = []
check_rows: list[tuple[str, str, str]] = []  # part 3: what, figure, note
wrong: list[str] = []  # results that differ from their reference (always fatal)


def once(run: Callable[[], Any], count: int) -> tuple[float, Any]:
    """µs per record of one run of ``run`` (garbage collector paused), and its result."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        result = run()
        return (time.perf_counter_ns() - start) / 1_000 / count, result
    finally:
        gc.enable()


def paired(
    baseline: Callable[[], Any],
    method: Callable[[], Any],
    count: int,
    rounds: int,
    check: Callable[[Any], None],
) -> Pair:
    """Time ``method`` interleaved with ``baseline`` on the same data: one untimed warm-up of
    each (which fills the engines' per-key caches), then ``rounds`` pairs (baseline, method).
    ``check`` sees the method's result of every timed run."""
    baseline()
    check(method())
    pair = Pair([], [], [])
    for _ in range(rounds):
        base_us, _ = once(baseline, count)
        us, result = once(method, count)
        check(result)
        pair.baseline_us.append(base_us)
        pair.method_us.append(us)
        pair.ratios.append(us / base_us)
    return pair


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def peer_rules(rd: Any) -> list[dict[str, Any]]:
    """The peers' rules in referralkit's rule format (same conditions, same order)."""
    rules = []
    for r in rd.RULES:
        w = r["when"]
        when: dict[str, Any] = {}
        if "payer" in w:
            when["coverage.payer"] = w["payer"]
        if "plan_type" in w:
            when["coverage.plan"] = w["plan_type"]
        if "specialty" in w:
            when["specialty"] = w["specialty"]
        if "cpt_prefix" in w:
            when["services"] = {"any_prefix": w["cpt_prefix"]}
        if "age" in w:
            lo, hi = w["age"]
            ages = {}
            if lo is not None:
                ages["gte"] = lo
            if hi is not None:
                ages["lt"] = hi
            when["patient.age"] = ages
        then = r["then"]
        rules.append(
            {
                "id": r["id"],
                "when": when,
                "then": {
                    "covered": "covered" if then["covered"] else "not-covered",
                    "pa_needed": "auth-needed" if then["prior_auth"] else "no-auth",
                    "reason": then["route"],
                },
            }
        )
    return rules


def part_one(peers: Path, count: int, rounds: int) -> None:
    sys.path.insert(0, str(peers))
    rd = importlib.import_module("rulesdata")
    handwritten = importlib.import_module("handwritten")
    records = rd.make_records(count)
    reference = [handwritten.decide(r)["rule"] for r in records]
    facts = [
        {
            "coverage.payer": r["payer"],
            "coverage.plan": r["plan_type"],
            "specialty": r["specialty"],
            "services": [r["cpt"]],
            "patient.age": r["age"],
        }
        for r in records
    ]
    ruleset = parse(
        {
            "ruleset": {"name": "peer", "kind": "coverage", "hit_policy": "first"},
            "rules": peer_rules(rd),
        }
    )

    def checker(name: str) -> Callable[[Any], None]:
        def check(ids: Sequence[str | None]) -> None:
            mismatches = sum(a != b for a, b in zip(ids, reference, strict=True))
            if mismatches:
                wrong.append(f"{name}: {mismatches} of {count} differ from hand-written")

        return check

    def add(
        name: str,
        baseline: Callable[[], Any],
        method: Callable[[], Any],
        label: str,
        ratio_target: bool = False,
        pairs: int = rounds,
    ) -> None:
        pair = paired(baseline, method, count, pairs, checker(name))
        met = pair.ratio <= RATIO_TARGET if ratio_target else None
        target = f"≤ {RATIO_TARGET}×" if ratio_target else "–"
        bad = any(w.startswith(f"{name}:") for w in wrong)
        note = "**mismatches**" if bad else f"same rule as hand-written, {count:,} records"
        rows.append(Row("peer problem", name, pair, label, target, met, note))
        print(f"  {name:58} {pair.us:8.2f} µs/record, {pair.spread()}", flush=True)

    def hand() -> list[str]:
        return [handwritten.decide(r)["rule"] for r in records]

    checker("hand-written")(hand())
    engine = PythonEngine(ruleset)
    add(
        "referralkit python engine, evaluate()",
        hand,
        lambda: [engine.evaluate(f, DAY).matched[0] for f in facts],
        "hand-written",
        ratio_target=True,
    )
    add(
        "referralkit python engine, evaluate(explain=True)",
        hand,
        lambda: [engine.evaluate(f, DAY, explain=True).matched[0] for f in facts],
        "hand-written",
    )

    from referralkit.rules.durable import DurableEngine
    from referralkit.rules.timeline import durable_available

    if not durable_available():  # durable-rules does not build on every Python (not 3.13)
        print("  durable engine skipped: durable-rules is not installed here")
    else:
        durable = DurableEngine(ruleset)
        raw = raw_durable(rd, records)
        add("raw durable-rules post(), one sid", hand, raw, "hand-written")
        add(
            "referralkit durable engine, evaluate()",
            raw,
            lambda: [durable.evaluate(f, DAY).matched[0] for f in facts],
            "raw durable-rules post()",
            ratio_target=True,
        )

    for name, runner in peer_engines(rd, records):
        add(name, hand, runner, "hand-written", pairs=max(1, rounds // 2))


def raw_durable(rd: Any, records: list[dict[str, Any]]) -> Callable[[], list[str | None]]:
    """The peers' own way of calling durable-rules: post() on one constant session id."""
    from durable import engine as dre

    holder: list[str | None] = [None]

    def action(rule: dict[str, Any]) -> Callable[[Any], None]:
        rule_id = rule["id"]

        def act(c: Any) -> None:
            if holder[0] is None:
                holder[0] = rule_id

        return act

    host = dre.Host({"bench_raw": rd.to_durable_json(rd.RULES, action)})

    def run() -> list[str | None]:
        out = []
        for r in records:
            event = dict(r)
            event["sid"] = "1"
            holder[0] = None
            host.post("bench_raw", event)
            out.append(holder[0])
        return out

    return run


def peer_engines(
    rd: Any, records: list[dict[str, Any]]
) -> list[tuple[str, Callable[[], list[str]]]]:
    """zen-engine 2.1.3, rule-engine and business-rules, as the peers call them (if installed)."""
    found: list[tuple[str, Callable[[], list[str]]]] = []
    try:
        import json

        import zen  # type: ignore[import-not-found]

        decision = zen.ZenEngine().create_decision(json.dumps(rd.to_zen_jdm(rd.RULES)))
        found.append(
            (
                "zen-engine 2.1.3 evaluate(dict)",
                lambda: [decision.evaluate(r)["result"]["rule"] for r in records],
            )
        )
    except ImportError:
        print("  zen-engine not installed: row skipped")
    try:
        import rule_engine  # type: ignore[import-not-found]

        compiled = [(rule_engine.Rule(rd.to_rule_engine_text(r)), r["id"]) for r in rd.RULES]

        def run_rule_engine() -> list[str]:
            out = []
            for rec in records:
                out.append(next(rid for rule, rid in compiled if rule.matches(rec)))
            return out

        found.append(("rule-engine, loop over Rule.matches", run_rule_engine))
    except ImportError:
        print("  rule-engine not installed: row skipped")
    try:
        from business_rules import run_all  # type: ignore[import-not-found]
        from business_rules.actions import BaseActions, rule_action  # type: ignore[import-not-found]
        from business_rules.fields import FIELD_TEXT  # type: ignore[import-not-found]
        from business_rules.variables import (  # type: ignore[import-not-found]
            BaseVariables,
            numeric_rule_variable,
            string_rule_variable,
        )

        class Vars(BaseVariables):  # type: ignore[misc]
            def __init__(self, rec: dict[str, Any]) -> None:
                self.rec = rec

            @string_rule_variable  # type: ignore[untyped-decorator]
            def payer(self) -> str:
                return str(self.rec["payer"])

            @string_rule_variable  # type: ignore[untyped-decorator]
            def plan_type(self) -> str:
                return str(self.rec["plan_type"])

            @string_rule_variable  # type: ignore[untyped-decorator]
            def specialty(self) -> str:
                return str(self.rec["specialty"])

            @string_rule_variable  # type: ignore[untyped-decorator]
            def cpt(self) -> str:
                return str(self.rec["cpt"])

            @numeric_rule_variable  # type: ignore[untyped-decorator]
            def age(self) -> int:
                return int(self.rec["age"])

        class Actions(BaseActions):  # type: ignore[misc]
            def __init__(self) -> None:
                self.result = ""

            @rule_action(params={"rule_id": FIELD_TEXT})  # type: ignore[untyped-decorator]
            def decide(self, rule_id: str) -> None:
                self.result = rule_id

        br_rules = [rd.to_business_rules(r) for r in rd.RULES]

        def run_business_rules() -> list[str]:
            out = []
            for rec in records:
                actions = Actions()
                run_all(br_rules, Vars(rec), actions, stop_on_first_trigger=True)
                out.append(actions.result)
            return out

        found.append(("business-rules run_all(stop_on_first_trigger)", run_business_rules))
    except ImportError:
        print("  business-rules not installed: row skipped")
    return found


def part_two(count: int, rounds: int) -> None:
    """Synthetic referrals through the shipped coverage and urgency policies, paired with fact
    extraction alone, every result checked against the policies' explain path."""
    at = dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.UTC)
    referrals = list(synth.referrals(count, 11, at))
    coverage, urgency = CoveragePolicy.shipped(), UrgencyPolicy.shipped()
    reference = [
        (
            attrs.evolve(coverage.decide(r, at, explain=True), trace=()),
            attrs.evolve(urgency.assess(r, at, explain=True), trace=()),
        )
        for r in referrals
    ]
    decided = sum(1 for c, _ in reference if c.hits)

    def run() -> list[tuple[Any, Any]]:
        return [(coverage.decide(r, at), urgency.assess(r, at)) for r in referrals]

    def extraction() -> list[dict[str, Any]]:
        return [extract(r, at) for r in referrals]

    def check(results: list[tuple[Any, Any]]) -> None:
        differ = sum(a != b for a, b in zip(results, reference, strict=True))
        if differ:
            wrong.append(f"shipped policies: {differ} of {count} differ from the explain path")

    pair = paired(extraction, run, count, rounds, check)
    bad = any(w.startswith("shipped policies:") for w in wrong)
    rows.append(
        Row(
            "shipped policies",
            f"coverage + urgency, {count:,} referrals ({decided:,} decided by a rule)",
            pair,
            "fact extraction alone",
            f"≤ {POLICY_TARGET_US:g} µs",
            pair.us <= POLICY_TARGET_US,
            "**mismatches**" if bad else f"equal to the explain path, {count:,} referrals",
        )
    )
    print(
        f"  shipped coverage + urgency policies: {pair.us:.2f} µs/referral "
        f"(min {min(pair.method_us):.2f}, max {max(pair.method_us):.2f}), "
        f"vs extraction {pair.spread()}",
        flush=True,
    )


def rule_table(count: int, policy: str) -> Any:
    """A rule table as payers write them: keyed on payer, specialty and (a third of the
    rules) plan type, two rules per payer and specialty (say, an age band and the rest),
    some with an age range or service prefixes. A bigger table has more specialties (codes,
    sites...), not more rules per key: that is how real tables grow."""
    rules = []
    for i in range(count):
        when: dict[str, Any] = {
            "coverage.payer": f"payer-{i % 23}",
            "specialty": f"spec-{i // 46}",
        }
        if i % 3 == 0:
            when["coverage.plan_type"] = ["HMO", "PPO", "EPO"][(i // 3) % 3]
        if i % 5 == 0:
            when["patient.age"] = {"gte": 18 + (i // 5) % 60}
        if i % 4 == 0:
            when["services"] = {"any_prefix": [f"7{(i // 4) % 900:03d}"]}
        then = (
            {"covered": "covered", "pa_needed": "no-auth"}
            if i % 2
            else {"covered": "conditional", "pa_needed": "conditional"}
        )
        rules.append({"id": f"r{i}", "when": when, "then": then})
    return parse(
        {
            "ruleset": {"name": f"table-{count}", "kind": "coverage", "hit_policy": policy},
            "rules": rules,
        }
    )


def every_pair(ruleset: Any) -> list[tuple[str, str]]:
    """The quadratic algorithm: every rule against every earlier one, same pair tests."""
    from referralkit.rules import check as checking

    shapes = [checking._Shape(i, rule) for i, rule in enumerate(ruleset.rules)]
    found = []
    for j, later in enumerate(shapes):
        for earlier in shapes[:j]:
            if ruleset.hit_policy.value == "first":
                if checking._shadows(earlier, later):
                    found.append((later.rule.id, earlier.rule.id))
                    break
            elif checking._overlap(earlier, later) is not False:
                found.append((later.rule.id, earlier.rule.id))
    return found


def findings(ruleset: Any) -> list[tuple[str, str]]:
    from referralkit.rules.check import check

    return [
        (str(p.rule_id), p.message.split("'")[1])
        for p in check(ruleset)
        if "never fire" in p.message or "overlap" in p.message
    ]


def part_three(sizes: Sequence[int], compare_at: int) -> None:
    import math

    from referralkit.rules.check import check

    for policy in ("first", "unique"):
        points = []
        for size in sizes:
            ruleset = rule_table(size, policy)
            start = time.perf_counter()
            found = check(ruleset)
            seconds = time.perf_counter() - start
            points.append((size, seconds))
            check_rows.append(
                (f"{policy}, {size:,} rules", f"{seconds:.3f} s", f"{len(found)} findings")
            )
            print(
                f"  check, {policy}, {size:>5,} rules: {seconds:8.3f} s ({len(found)} findings)",
                flush=True,
            )
        xs = [math.log(n) for n, _ in points]
        ys = [math.log(t) for _, t in points]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        check_rows.append((f"{policy}: growth exponent", f"{slope:.2f}", "time ∝ rules^k"))
        print(f"  check, {policy}: growth exponent {slope:.2f} (1 linear, 2 quadratic)")
        ruleset = rule_table(compare_at, policy)
        start = time.perf_counter()
        slow = every_pair(ruleset)
        seconds = time.perf_counter() - start
        same = slow == findings(ruleset)
        check_rows.append(
            (
                f"{policy}, {compare_at:,} rules, every pair",
                f"{seconds:.3f} s",
                f"same findings: {same}",
            )
        )
        print(
            f"  every pair, {policy}, {compare_at:,} rules: {seconds:.3f} s; same findings: {same}"
        )
        if not same:
            wrong.append(f"rules check, {policy}: the indexed and every-pair checks disagree")


def report(loads: Sequence[str]) -> None:
    if rows:
        print(f"\nLoad average (1, 5, 15 min): {loads[0]} before, {loads[1]} after")
        print(
            "\n| group | method | median µs/record | baseline | ratio to baseline, median "
            "(min–max) | target | met | check |"
        )
        print("|---|---|---:|---|---:|---:|:---:|---|")
    for row in rows:
        assert row.pair is not None
        met = "–" if row.met is None else ("yes" if row.met else "**no**")
        print(
            f"| {row.group} | {row.method} | {row.pair.us:.2f} | {row.baseline} | "
            f"{row.pair.spread()} | {row.target} | {met} | {row.note} |"
        )
    if check_rows:
        print("\n| rules check | time or exponent | note |")
        print("|---|---:|---|")
        for what, figure, note in check_rows:
            print(f"| {what} | {figure} | {note} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, under a minute")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--peers", type=Path, default=DEFAULT_PEERS)
    parser.add_argument("--rounds", type=int, default=None, help="pairs per method")
    parser.add_argument("--check-only", action="store_true", help="part 3 only (rules check)")
    args = parser.parse_args(argv)
    records, referrals, rounds = (2_000, 2_000, 5) if args.quick else (20_000, 20_000, 9)
    rounds = args.rounds or rounds
    print(f"referralkit {rk.__version__}, Python {sys.version.split()[0]}, load average {load()}")
    loads = [load()]
    if not args.check_only:
        if args.peers.is_dir():
            print(f"Part 1: peer problem, {records:,} records, {rounds} pairs per method")
            part_one(args.peers, records, rounds)
        else:
            print(f"Part 1 skipped: no peer problem at {args.peers}")
        print(f"Part 2: {referrals:,} synthetic referrals through the shipped policies")
        part_two(referrals, rounds)
    loads.append(load())
    sizes = (100, 200, 400, 800) if args.quick else (1_000, 2_000, 4_000, 8_000)
    print(f"Part 3: rules check on {', '.join(f'{n:,}' for n in sizes)} rules")
    part_three(sizes, sizes[0])
    report(loads)
    if wrong:
        print("\nWRONG RESULTS:\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    missed = [row.method for row in rows if row.met is False]
    if missed:
        print(f"\nTargets missed: {', '.join(missed)}")
        if args.check:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
