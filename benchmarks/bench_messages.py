"""Messages benchmark: rendering one patient message, and a sweep of 100,000.

    python benchmarks/bench_messages.py            # full run, about a minute
    python benchmarks/bench_messages.py --quick    # small counts, to check that it runs
    python benchmarks/bench_messages.py --check    # exit 1 when a target is missed

The renderer is built once (templates parsed, checked and compiled for every language), then:

- **one message**: the booked-visit message (the longest: visit details, what to bring, the
  specialty's preparation text, HTML part) for one referral, timed in batches, each batch
  paired with a baseline batch run right after it: ``str.format`` of a text of the same
  length with the same facts, the cheapest way to fill in a message. The ratio is taken per
  pair, so load from other processes on a shared machine moves both sides; the table gives
  the median ratio with its min and max;
- **sweep**: 100,000 messages over synthetic referrals of every specialty, every moment, in
  each patient's preferred language (English and Spanish), checked afterwards: every message
  has a subject and a body, and is in the language its patient's preference resolves to.

Times are CPU time of this process (``time.process_time_ns``), so that other processes on a
shared machine do not count; wall-clock figures are printed beside them. Targets: one message
≤ 200 µs; the sweep ≥ 5,000 messages/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import referralkit as rk
from referralkit import synth
from referralkit.messages import Message, Moment, Organization, Renderer
from referralkit.testing.notifiers import staged

ONE_TARGET_US = 200.0
SWEEP_TARGET_PER_S = 5_000.0
AT = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)

BASELINE = (
    "Hello {first_name},\n\nYour visit for {specialty} is booked.\n\n"
    "When: {day} at {time}\nWho: {who}\nWhere: {place}\nThe visit takes about {minutes} "
    "minutes.\n\nHow to get there:\nPlan your trip to {place} ahead of time.\nCome 15 minutes "
    "early to check in.\n\nWhat to bring:\n- Your health plan card and a photo ID\n- A list of "
    "all the medicines you take\n- Your questions for the doctor\n\nHow to get ready:\n- Wear a "
    "loose top and comfortable shoes. You may have a heart test.\n- If you check your blood "
    "pressure at home, bring your readings.\n\nWhat to expect:\n- A nurse will check your blood "
    "pressure and heart rate.\n- You may have an ECG. Small pads on your chest record your "
    "heartbeat. It does not hurt.\n\nIf you cannot come, please call us at least one day "
    "before.\n\nQuestions? Call us at {phone}.\n\n{org}"
)


def timed(run: Callable[[], Any], n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of ``run`` over ``n`` calls, collector paused."""
    gc.collect()
    gc.disable()
    try:
        cpu, wall = time.process_time_ns(), time.perf_counter_ns()
        for _ in range(n):
            run()
        cpu, wall = time.process_time_ns() - cpu, time.perf_counter_ns() - wall
    finally:
        gc.enable()
    return cpu / n / 1000, wall / n / 1000


def one_message(renderer: Renderer, pairs: int, batch: int) -> dict[str, Any]:
    referral = next(r for r in synth.referrals(50, seed=7, start=AT) if r.specialty == "cardiology")
    booked, _ = staged(referral, Moment.BOOKED, AT)
    message = renderer.render(booked, Moment.BOOKED, language="en")
    facts = {
        "first_name": "Alex",
        "specialty": "heart care (cardiology)",
        "day": "Monday, March 9, 2026",
        "time": "4:00 AM",
        "who": "Harbor Cardiology",
        "place": "Harbor Medical Plaza, Suite 2",
        "minutes": 45,
        "phone": "555-0100",
        "org": "Riverside Health",
    }
    baseline_text = BASELINE.format(**facts)
    if abs(len(baseline_text) - len(message.text)) > len(message.text) // 5:
        raise SystemExit("the baseline text no longer matches the message's length")
    ours, theirs, ratios, walls = [], [], [], []
    for _ in range(pairs):
        cpu, wall = timed(lambda: renderer.render(booked, Moment.BOOKED, language="en"), batch)
        base, _ = timed(lambda: BASELINE.format(**facts), batch)
        ours.append(cpu)
        theirs.append(base)
        walls.append(wall)
        ratios.append(cpu / base)
    return {
        "median_us": statistics.median(ours),
        "best_us": min(ours),
        "wall_us": statistics.median(walls),
        "baseline_us": statistics.median(theirs),
        "ratio": (statistics.median(ratios), min(ratios), max(ratios)),
        "chars": len(message.text),
    }


def sweep(renderer: Renderer, count: int, population: int) -> dict[str, Any]:
    moments = list(Moment)
    jobs = []
    for referral, moment in zip(
        itertools.cycle(synth.referrals(population, seed=7, start=AT)),
        itertools.cycle(moments),
        strict=False,
    ):
        if len(jobs) == min(count, population * len(moments)):
            break
        ready, extra = staged(referral, moment, AT)
        jobs.append((ready, moment, extra))
    expected = {job[0].id: renderer.resolve(job[0].patient.preferred_language)[0] for job in jobs}
    out: list[Message] = []
    gc.collect()
    cpu, wall = time.process_time_ns(), time.perf_counter_ns()
    for index in range(count):
        referral, moment, extra = jobs[index % len(jobs)]
        out.append(renderer.render(referral, moment, **extra))
    cpu, wall = time.process_time_ns() - cpu, time.perf_counter_ns() - wall
    # checked after the timing, so the figures hold only for messages that are right
    for message in out:
        wanted = "en" if message.moment is Moment.CONSULT_NOTE else expected[message.referral_id]
        if not (message.subject and message.text and message.html) or message.language != wanted:
            raise SystemExit(f"wrong message {message.key}: empty or not in {wanted}")
    languages = sorted({m.language for m in out})
    return {
        "count": count,
        "per_s": count / (cpu / 1e9),
        "wall_per_s": count / (wall / 1e9),
        "languages": languages,
        "distinct": len(jobs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="referralkit messages benchmark")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    pairs, batch, count, population = (
        (5, 200, 2_000, 100) if args.quick else (15, 1_000, 100_000, 2_000)
    )

    start = time.perf_counter()
    renderer = Renderer(
        organization=Organization("Riverside Health", phone="555-0100"),
        timezone="America/Chicago",
    )
    load_s = time.perf_counter() - start
    one = one_message(renderer, pairs, batch)
    bulk = sweep(renderer, count, population)

    median, low, high = one["ratio"]
    print(f"# referralkit messages benchmark ({'quick' if args.quick else 'full'})")
    print(
        f"referralkit {rk.__version__}, Jinja2 {version('Jinja2')}, Babel {version('Babel')}, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    print()
    print("| measure | CPU | wall | baseline | ratio (median, min–max) | target | met |")
    print("|---|---|---|---|---|---|---|")
    met_one = one["median_us"] <= ONE_TARGET_US
    met_sweep = bulk["per_s"] >= SWEEP_TARGET_PER_S
    print(
        f"| one booked message ({one['chars']} chars, text + HTML) | {one['median_us']:.0f} µs "
        f"(best {one['best_us']:.0f}) | {one['wall_us']:.0f} µs | str.format "
        f"{one['baseline_us']:.2f} µs | ×{median:.0f} (×{low:.0f}–×{high:.0f}) | "
        f"≤ {ONE_TARGET_US:.0f} µs | {'yes' if met_one else 'NO'} |"
    )
    print(
        f"| sweep: {bulk['count']:,} messages, {bulk['distinct']:,} distinct, "
        f"{'/'.join(bulk['languages'])} | {bulk['per_s']:,.0f}/s | {bulk['wall_per_s']:,.0f}/s "
        f"| – | – | ≥ {SWEEP_TARGET_PER_S:,.0f}/s | {'yes' if met_sweep else 'NO'} |"
    )
    print()
    print(f"Renderer built (templates checked and compiled, every language) in {load_s:.2f} s.")
    if args.check and not (met_one and met_sweep):
        print("a target was missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
