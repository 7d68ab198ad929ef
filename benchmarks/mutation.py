"""Mutation testing of ``referralkit.rules``, module by module, resumable (``nox -s mutation``).

mutmut 3 (``[tool.mutmut]`` in pyproject.toml) writes every mutant of ``src/referralkit/rules``
into ``mutants/`` and keeps each one's verdict in ``mutants/src/referralkit/rules/*.py.meta``.
This script runs ``mutmut run`` on one module at a time, cheapest first (the mean time of
the tests that reach a mutant, from mutmut's statistics run), passing only the
mutants that have no verdict yet: stopped at any point (Ctrl-C, a lost session), it goes on
where it was when started again. While it runs, and after each module, it writes the verdicts
per module and in total to a Markdown file (``--progress``, default
``mutants/mutation-progress.md``); at the end it prints that table and exits 1 if the score
(killed, timed out or caught by the type checker, over the mutants with a verdict) is under
``--fail-under``.

    python benchmarks/mutation.py                     # every module, resuming
    python benchmarks/mutation.py --only engine limits  # some modules
    python benchmarks/mutation.py --report            # only the table of what has run
    python benchmarks/mutation.py --retest-survivors --only provenance  # after adding tests

Run it from the project root with the project installed (``pip install -e .[test]
mutmut``); ``REFERRALKIT_HYPOTHESIS_PROFILE=mutation`` is set for mutmut's runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

META = Path("mutants/src/referralkit/rules")
SOURCE = Path("src/referralkit/rules")

# mutmut 3's exit codes (mutmut/stats.py), grouped
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
TYPE_CHECK = {37}
SURVIVED = {0}
NO_TESTS = {5, 33}
SKIPPED = {34}
COLUMNS = ("killed", "timeout", "type check", "survived", "no tests", "other", "pending")


def verdict(code: int | None) -> str:
    if code is None:
        return "pending"
    for name, codes in (
        ("killed", KILLED),
        ("timeout", TIMEOUT),
        ("type check", TYPE_CHECK),
        ("survived", SURVIVED),
        ("no tests", NO_TESTS),
        ("skipped", SKIPPED),
    ):
        if code in codes:
            return name
    return "other"  # suspicious, segfault, interrupted


def load(module: str) -> dict[str, object]:
    path = META / f"{module}.py.meta"
    if not path.exists():
        return {}
    try:
        data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:  # caught while mutmut rewrites it: read it next time
        return {}
    return data


def modules() -> list[str]:
    return sorted(p.stem for p in SOURCE.glob("*.py"))


def counts(module: str) -> tuple[Counter[str], list[float]]:
    data = load(module)
    codes: dict[str, int | None] = data.get("exit_code_by_key", {})  # type: ignore[assignment]
    durations: dict[str, float] = data.get("durations_by_key", {})  # type: ignore[assignment]
    tally = Counter(verdict(code) for code in codes.values())
    tally["total"] = len(codes)
    timed = [
        durations[name] for name, code in codes.items() if code is not None and name in durations
    ]
    return tally, timed


def score(tally: Counter[str]) -> tuple[int, int]:
    caught = tally["killed"] + tally["timeout"] + tally["type check"]
    tested = caught + tally["survived"] + tally["no tests"] + tally["other"]
    return caught, tested


def percent(caught: int, tested: int) -> str:
    return f"{100.0 * caught / tested:.1f}%" if tested else "–"


def table(names: Iterable[str]) -> tuple[str, Counter[str]]:
    rows = [
        "| module | mutants | " + " | ".join(COLUMNS) + " | score | mean s/mutant |",
        "|---|---:|" + "---:|" * len(COLUMNS) + "---:|---:|",
    ]
    total: Counter[str] = Counter()
    every: list[float] = []
    for module in names:
        tally, timed = counts(module)
        total.update(tally)
        every += timed
        mean = f"{sum(timed) / len(timed):.1f}" if timed else "–"
        cells = " | ".join(str(tally[c]) for c in COLUMNS)
        rows.append(
            f"| {module} | {tally['total']} | {cells} | {percent(*score(tally))} | {mean} |"
        )
    mean = f"{sum(every) / len(every):.1f}" if every else "–"
    cells = " | ".join(f"**{total[c]}**" for c in COLUMNS)
    rows.append(
        f"| **all** | **{total['total']}** | {cells} | **{percent(*score(total))}** | {mean} |"
    )
    return "\n".join(rows), total


def write_progress(path: Path, names: list[str], note: str) -> Counter[str]:
    text, total = table(names)
    load_average = (
        Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Mutation testing of referralkit.rules: progress\n\n"
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, load average "
        f"{' '.join(load_average)}; {note}\n\n{text}\n\n"
        "Score: killed, timed out or caught by the type checker over the mutants with a "
        "verdict (survived and reached by no test count against it). mean s/mutant: mutmut's "
        "own measure of each mutant's test run.\n",
        encoding="utf-8",
    )
    return total


def cost(module: str) -> float:
    """Seconds a mutant of ``module`` costs at most, on average: its tests' durations in
    mutmut's statistics run, all run when a mutant survives (a killed one stops early)."""
    try:
        stats = json.loads(Path("mutants/mutmut-stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0.0
    tests, durations = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    codes: dict[str, object] = load(module).get("exit_code_by_key", {})  # type: ignore[assignment]
    seconds = [
        sum(durations.get(test, 0.0) for test in tests.get(name.rsplit("__mutmut_", 1)[0], ()))
        for name in codes
    ]
    return sum(seconds) / len(seconds) if seconds else 0.0


def retest(module: str) -> None:
    """Forget the verdicts of ``module``'s survivors and of its mutants no test reached."""
    path = META / f"{module}.py.meta"
    data = load(module)
    codes: dict[str, int | None] = data.get("exit_code_by_key", {})  # type: ignore[assignment]
    if not codes:
        return
    for name, code in codes.items():
        if code is not None and verdict(code) in ("survived", "no tests"):
            codes[name] = None
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")


def pending(module: str) -> list[str]:
    codes: dict[str, int | None] = load(module).get("exit_code_by_key", {})  # type: ignore[assignment]
    return sorted(name for name, code in codes.items() if code is None)


def mutmut(arguments: list[str]) -> int:
    env = {**os.environ, "REFERRALKIT_HYPOTHESIS_PROFILE": "mutation", "PYTHONPATH": ""}
    return subprocess.run(["mutmut", *arguments], env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="MODULE", help="these modules of rules/")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--progress", type=Path, default=Path("mutants/mutation-progress.md"))
    parser.add_argument("--fail-under", type=float, default=90.0)
    parser.add_argument("--report", action="store_true", help="print the table, run nothing")
    parser.add_argument(
        "--retest-survivors",
        action="store_true",
        help="test the survivors again (and the mutants no test reached): after adding tests",
    )
    args = parser.parse_args(argv)

    if not META.exists() and not args.report:
        # the first run makes every mutant and the test statistics; a name that matches no
        # mutant makes it stop there
        mutmut(["run", "--max-children", str(args.max_children), "referralkit.rules.none"])
    everything = modules()
    chosen = args.only or everything
    unknown = sorted(set(chosen) - set(everything))
    if unknown:
        parser.error(f"not modules of {SOURCE}: {', '.join(unknown)}")
    if args.retest_survivors and not args.report:
        for module in chosen:
            retest(module)
    # cheapest first, each finished module a result to read while the next one runs
    order = sorted(chosen, key=lambda m: (cost(m), m))
    shown = sorted(everything, key=lambda m: (cost(m), m))  # the table: every module
    stop = threading.Event()

    def watch(note: str) -> None:
        while not stop.wait(60):
            write_progress(args.progress, shown, note)

    # mutmut may reset verdicts when it starts (a changed test selection, a changed source):
    # passes repeat while one makes progress
    previous = -1
    while not args.report and previous != (left := sum(len(pending(m)) for m in order)) > 0:
        previous = left
        for module in order:
            names = pending(module)
            if not names:
                continue
            note = f"running {module} ({len(names)} mutants left in it)"
            write_progress(args.progress, shown, note)
            stop.clear()
            watcher = threading.Thread(target=watch, args=(note,), daemon=True)
            watcher.start()
            started = time.monotonic()
            try:
                code = mutmut(["run", "--max-children", str(args.max_children), *names])
            finally:
                stop.set()
                watcher.join()
            left = len(pending(module))
            if code != 0:  # e.g. the tests fail without a mutant: mutmut says why above
                print(f"mutation: mutmut run exited {code} on {module}", file=sys.stderr)
            print(
                f"mutation: {module}: {len(names) - left} mutants in "
                f"{time.monotonic() - started:.0f} s, {left} left",
                flush=True,
            )
    left = sum(len(pending(m)) for m in shown)
    total = write_progress(args.progress, shown, "done" if not left else f"{left} mutants left")
    print(table(shown)[0])
    caught, tested = score(total)
    print(f"mutation score {percent(caught, tested)} ({caught} of {tested}); {left} not run yet")
    if tested and 100.0 * caught / tested < args.fail_under:
        print(f"mutation score under {args.fail_under:g}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
