"""Rules benchmark: referralkit's engines beside hand-written Python and peer engines.

    python benchmarks/bench_rules.py                 # full run (a few minutes)
    python benchmarks/bench_rules.py --quick         # tiny counts, to check that it runs
    python benchmarks/bench_rules.py --peers DIR     # where the shared peer problem lives
    python benchmarks/bench_rules.py --check-only    # part 3 only: rules check at 1k-8k rules

Part 3 times ``rules check`` on generated rule tables of 1,000 to 8,000 rules (a payer × plan
× specialty table with age ranges and service prefixes, under ``first`` and ``unique``), fits
the growth exponent of time against size, and checks on 1,000 rules that the indexed check
reports exactly what comparing every pair reports (and how long that takes).

Part 1 is the peer problem of ``shared/bench/peers`` (20 first-hit coverage rules, 20,000 seeded
records), run in one process: hand-written if/elif (the floor), referralkit's python engine
(first hit, with and without ``explain``), referralkit's durable engine, raw durable-rules
``post()`` on the peers' own compiled ruleset, and, when installed, zen-engine 2.1.3,
rule-engine and business-rules. Every method's fired rule is cross-checked against the
hand-written decision. Part 2 runs synthetic referrals through the shipped coverage and urgency
policies, fact extraction included.

Each figure is the median of ``--repeat`` runs. Ratios compare with a baseline measured in the
same run (hand-written Python for part 1; raw durable-rules for the durable engine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import referralkit as rk
from referralkit import synth
from referralkit.rules import PythonEngine, parse
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy

HERE = Path(__file__).resolve().parent
DEFAULT_PEERS = HERE.parent.parent / "shared" / "bench" / "peers"
DAY = dt.date(2026, 6, 1)

rows: list[tuple[str, str, float, str]] = []  # group, method, µs per record, note


def timed(run: Callable[[], Any], count: int, repeat: int) -> tuple[float, Any]:
    """Median µs per record over ``repeat`` runs (after one warm-up run, which fills the
    engines' per-key caches), and the last run's result."""
    times = []
    result = run()
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        start = time.perf_counter_ns()
        result = run()
        times.append((time.perf_counter_ns() - start) / 1_000 / count)
        gc.enable()
    return statistics.median(times), result


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


def part_one(peers: Path, count: int, repeat: int) -> None:
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

    def check(name: str, ids: Sequence[str]) -> str:
        mismatches = sum(a != b for a, b in zip(ids, reference, strict=True))
        if mismatches:
            raise SystemExit(f"{name}: {mismatches} mismatches with the hand-written rules")
        return "0 mismatches"

    def add(name: str, us: float, note: str) -> None:
        rows.append(("peer problem", name, us, note))
        print(f"  {name:58} {us:8.2f} µs/record", flush=True)

    hand_us, ids = timed(lambda: [handwritten.decide(r)["rule"] for r in records], count, repeat)
    add("hand-written if/elif (baseline)", hand_us, check("hand", ids))

    engine = PythonEngine(ruleset)
    us, ids = timed(lambda: [engine.evaluate(f, DAY).matched[0] for f in facts], count, repeat)
    add("referralkit python engine, evaluate()", us, check("python", ids))
    us, ids = timed(
        lambda: [engine.evaluate(f, DAY, explain=True).matched[0] for f in facts], count, repeat
    )
    add("referralkit python engine, evaluate(explain=True)", us, check("explain", ids))

    try:
        from referralkit.rules.durable import DurableEngine
    except ImportError as error:  # durable-rules does not build on every Python
        print(f"  durable engine skipped: {error}")
    else:
        durable = DurableEngine(ruleset)
        us, ids = timed(lambda: [durable.evaluate(f, DAY).matched[0] for f in facts], count, repeat)
        add("referralkit durable engine, evaluate()", us, check("durable", ids))
        raw_us = raw_durable(rd, records, repeat, reference)
        add("raw durable-rules post(), one sid (durable baseline)", raw_us, "0 mismatches")
        rows.append(("durable vs raw", "durable engine / raw post()", us / raw_us, "ratio"))

    for name, runner in peer_engines(rd, records):
        us, ids = timed(lambda runner=runner: runner(), count, max(1, repeat // 2))
        add(name, us, check(name, ids))
    rows.append(("peer problem", "_baseline", hand_us, ""))


def raw_durable(rd: Any, records: list[dict[str, Any]], repeat: int, reference: list[str]) -> float:
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

    us, ids = timed(run, len(records), repeat)
    if ids != reference:
        raise SystemExit("raw durable-rules disagrees with the hand-written rules")
    return float(us)


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


def part_two(count: int, repeat: int) -> None:
    """Synthetic referrals through the shipped coverage and urgency policies."""
    at = dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.UTC)
    referrals = list(synth.referrals(count, 11, at))
    coverage, urgency = CoveragePolicy.shipped(), UrgencyPolicy.shipped()

    def run() -> int:
        for r in referrals:
            coverage.decide(r, at)
            urgency.assess(r, at)
        return len(referrals)

    us, _ = timed(run, count, repeat)
    rows.append(
        ("shipped policies", f"coverage + urgency, {count:,} referrals", us, "target ≤ 10 µs")
    )
    print(f"  shipped coverage + urgency policies: {us:.2f} µs/referral", flush=True)


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
            rows.append(
                (
                    "rules check",
                    f"{policy}, {size:,} rules",
                    seconds * 1e6,
                    f"{len(found)} findings",
                )
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
        rows.append(("rules check", f"{policy}: growth exponent", slope, "time ∝ rules^k"))
        print(f"  check, {policy}: growth exponent {slope:.2f} (1 linear, 2 quadratic)")
        ruleset = rule_table(compare_at, policy)
        start = time.perf_counter()
        slow = every_pair(ruleset)
        seconds = time.perf_counter() - start
        same = slow == findings(ruleset)
        rows.append(
            (
                "rules check",
                f"{policy}, {compare_at:,} rules, every pair",
                seconds * 1e6,
                f"same findings: {same}",
            )
        )
        print(
            f"  every pair, {policy}, {compare_at:,} rules: {seconds:.3f} s; same findings: {same}"
        )
        if not same:
            raise SystemExit("the indexed check and the every-pair check disagree")


def report() -> None:
    baseline = next(us for group, name, us, _ in rows if name == "_baseline")
    print("\n| group | method | µs/record | ratio to baseline | note |")
    print("|---|---|---:|---:|---|")
    for group, name, us, note in rows:
        if name == "_baseline":
            continue
        if note == "ratio":
            print(f"| {group} | {name} | | {us:.2f}× | target ≤ 1.5× |")
            continue
        if group == "rules check":
            value = f"{us:.2f}" if "exponent" in name else f"{us / 1e6:.3f} s"
            print(f"| {group} | {name} | {value} | | {note} |")
            continue
        ratio = f"{us / baseline:.2f}×" if group == "peer problem" else ""
        print(f"| {group} | {name} | {us:.2f} | {ratio} | {note} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check it runs")
    parser.add_argument("--peers", type=Path, default=DEFAULT_PEERS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check-only", action="store_true", help="part 3 only (rules check)")
    args = parser.parse_args(argv)
    records, referrals, repeat = (500, 500, 1) if args.quick else (20_000, 100_000, args.repeat)
    print(f"referralkit {rk.__version__}, Python {sys.version.split()[0]}")
    if args.check_only:
        rows.append(("peer problem", "_baseline", 1.0, ""))
    elif args.peers.is_dir():
        print(f"Part 1: peer problem, {records:,} records")
        part_one(args.peers, records, repeat)
    else:
        print(f"Part 1 skipped: no peer problem at {args.peers}")
        rows.append(("peer problem", "_baseline", 1.0, ""))
    if not args.check_only:
        print(f"Part 2: {referrals:,} synthetic referrals through the shipped policies")
        part_two(referrals, max(1, repeat // 2))
    sizes = (100, 200, 400, 800) if args.quick else (1_000, 2_000, 4_000, 8_000)
    print(f"Part 3: rules check on {', '.join(f'{n:,}' for n in sizes)} rules")
    part_three(sizes, sizes[0])
    report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
