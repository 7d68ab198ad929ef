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
    python benchmarks/mutation.py --report            # the table from the verdicts file
    python benchmarks/mutation.py --retest-survivors --only provenance  # after adding tests
    python benchmarks/mutation.py --forget --only whatif  # judge a module's mutants afresh
    python benchmarks/mutation.py --sample 40 --seed 11  # a random sample of every module

``--sample`` (a count per module, or a fraction of each) runs a seeded random sample of each
chosen module, recorded in the verdicts file and extended, never redrawn, by a larger size
later; the table then gives each complete module's exact score and each other module's
estimated from the judged members of its sample, with Wilson's 95% interval, and the score
over every module (stratified). See benchmarks/README.md, "Mutation testing".

``mutants/`` is lost with the machine, so every verdict is also recorded in
``benchmarks/mutation-verdicts.json`` (committed): per module, the SHA-256 of its source, of
the test set's identity (the settings of ``[tool.mutmut]`` in pyproject.toml that say which
tests run, with which pytest options) and the mutmut version, and each mutant's verdict. At
start the verdicts still valid are written back into ``mutants/`` and those mutants are not
run again; any change to a module's source (or to the test set's identity, or mutmut's
version) drops that module's verdicts, all of them. Test *contents* are not part of the
identity: after adding tests, ``--retest-survivors``; after weakening or deleting one,
``--forget``.
``--report`` prints the table from that file alone (no mutmut, no ``mutants/`` needed).

Run it from the project root with the project installed (``pip install -e .[test]
mutmut``); ``REFERRALKIT_HYPOTHESIS_PROFILE=mutation`` is set for mutmut's runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

META = Path("mutants/src/referralkit/rules")
SOURCE = Path("src/referralkit/rules")
VERDICTS = Path("benchmarks/mutation-verdicts.json")

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


# the exit code written back into mutmut's metadata for a recorded verdict; "other" (suspicious,
# segfault, interrupted) is recorded but not restored: such a mutant runs again
CODE = {
    "killed": 1,
    "timeout": 36,
    "type check": 37,
    "survived": 0,
    "no tests": 33,
    "skipped": 34,
}

Verdicts = dict[str, Any]  # the JSON document of VERDICTS


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# the settings of [tool.mutmut] that decide which tests judge a mutant and how they run
SUITE_KEYS = ("pytest_add_cli_args", "pytest_add_cli_args_test_selection", "tests_dir", "also_copy")


def suite_identity(pyproject: Path = Path("pyproject.toml")) -> str:
    """SHA-256 of the test set's identity: the settings of ``[tool.mutmut]`` that select the
    tests, deselect some, give pytest its options and copy files beside them, canonical JSON."""
    table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("mutmut", {})
    suite = {key: table[key] for key in SUITE_KEYS if key in table}
    canonical = json.dumps(suite, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def mutmut_version() -> str | None:
    try:
        return metadata.version("mutmut")
    except metadata.PackageNotFoundError:
        return None


def identity(module: str) -> dict[str, str | None]:
    """What a module's recorded verdicts hold for: its source, the test set, mutmut."""
    return {
        "source_sha256": sha256_file(SOURCE / f"{module}.py"),
        "tests_sha256": suite_identity(),
        "mutmut": mutmut_version(),
    }


def read_verdicts(path: Path = VERDICTS) -> Verdicts:
    if not path.exists():
        return {"modules": {}}
    data: Verdicts = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("modules", {})
    return data


def write_verdicts(data: Verdicts, path: Path = VERDICTS) -> None:
    text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)  # never half a file, whenever the session is lost


def matches(entry: Mapping[str, Any], current: Mapping[str, str | None]) -> bool:
    """Whether a recorded entry holds for ``current``; an unknown mutmut version (not
    installed: ``--report``) is not held against it."""
    return all(
        entry.get(key) == value
        for key, value in current.items()
        if not (key == "mutmut" and value is None)
    )


def valid(data: Verdicts, module: str, current: Mapping[str, str | None]) -> dict[str, str]:
    """The recorded verdicts of ``module`` that still hold: all of them, or none when its
    source, the test set or mutmut has changed since they were recorded."""
    entry = data["modules"].get(module)
    if entry is None or not matches(entry, current):
        return {}
    return dict(entry.get("verdicts", {}))


def restore(codes: dict[str, int | None], verdicts: Mapping[str, str]) -> int:
    """Give each mutant with no verdict in mutmut's ``codes`` its recorded verdict; returns
    how many were restored."""
    restored = 0
    for name, code in codes.items():
        recorded = verdicts.get(name)
        if code is None and recorded in CODE:
            codes[name] = CODE[recorded]
            restored += 1
    return restored


def merge(
    data: Verdicts,
    module: str,
    current: Mapping[str, str | None],
    codes: Mapping[str, int | None],
) -> Verdicts:
    """Record mutmut's verdicts of ``module`` (``codes``) in ``data``: over the recorded ones
    when those still hold, in their place when they do not."""
    kept = {name: v for name, v in valid(data, module, current).items() if name in codes}
    kept.update({name: verdict(code) for name, code in codes.items() if code is not None})
    data["modules"][module] = {**current, "mutants": len(codes), "verdicts": kept}
    return data


def forget(data: Verdicts, module: str, which: Iterable[str] | None = None) -> None:
    """Drop the recorded verdicts of ``module`` (those named ``which``, or all)."""
    entry = data["modules"].get(module)
    if entry is None:
        return
    if which is None:
        del data["modules"][module]
        return
    for name in which:
        entry["verdicts"].pop(name, None)


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


def codes_of(module: str) -> dict[str, int | None]:
    codes: dict[str, int | None] = load(module).get("exit_code_by_key", {})  # type: ignore[assignment]
    return codes


def save_codes(module: str, codes: dict[str, int | None]) -> None:
    data = load(module)
    data["exit_code_by_key"] = codes
    (META / f"{module}.py.meta").write_text(json.dumps(data, indent=4), encoding="utf-8")


def recorded_counts(data: Verdicts, module: str) -> tuple[Counter[str], list[float]]:
    """A module's tally from the verdicts file, as far as they hold for its source now."""
    entry = data["modules"].get(module, {})
    verdicts = valid(data, module, identity(module))
    tally = Counter(verdicts.values())
    holds = module in data["modules"] and matches(entry, identity(module))
    tally["total"] = int(entry.get("mutants", 0)) if holds else 0
    tally["pending"] = tally["total"] - len(verdicts)
    return tally, []


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


def table(
    names: Iterable[str], source: Callable[[str], tuple[Counter[str], list[float]]] = counts
) -> tuple[str, Counter[str]]:
    rows = [
        "| module | mutants | " + " | ".join(COLUMNS) + " | score | mean s/mutant |",
        "|---|---:|" + "---:|" * len(COLUMNS) + "---:|---:|",
    ]
    total: Counter[str] = Counter()
    every: list[float] = []
    for module in names:
        tally, timed = source(module)
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


def write_progress(
    path: Path,
    names: list[str],
    note: str,
    source: Callable[[str], tuple[Counter[str], list[float]]] = counts,
) -> Counter[str]:
    text, total = table(names, source)
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


def retest(module: str, recorded: Verdicts) -> list[str]:
    """Forget the verdicts of ``module``'s survivors and of its mutants no test reached;
    returns their names."""
    codes = codes_of(module)
    if not codes:
        return []
    again = [
        name
        for name, code in codes.items()
        if code is not None and verdict(code) in ("survived", "no tests")
    ]
    for name in again:
        codes[name] = None
    save_codes(module, codes)
    forget(recorded, module, again)
    return again


def sync(recorded: Verdicts, module: str, *, again: bool = False) -> None:
    """Reconcile ``mutants/`` and the verdicts file for ``module``: the recorded verdicts that
    hold are written back into mutmut's metadata; when they no longer hold (the module's
    source changed), or with ``again``, every verdict of the module is dropped from both."""
    current = identity(module)
    codes = codes_of(module)
    entry = recorded["modules"].get(module)
    if again or (entry is not None and not matches(entry, current)):
        forget(recorded, module)
        if any(code is not None for code in codes.values()):
            save_codes(module, dict.fromkeys(codes))
        codes = codes_of(module)
    elif restore(codes, valid(recorded, module, current)):
        save_codes(module, codes)
    if codes:
        merge(recorded, module, current, codes)


def record(recorded: Verdicts, module: str) -> None:
    """Record mutmut's verdicts of ``module`` in the verdicts file."""
    codes = codes_of(module)
    if codes:
        merge(recorded, module, identity(module), codes)
        write_verdicts(recorded)


def pending(module: str) -> list[str]:
    codes: dict[str, int | None] = load(module).get("exit_code_by_key", {})  # type: ignore[assignment]
    return sorted(name for name, code in codes.items() if code is None)


def mutmut(arguments: list[str]) -> int:
    env = {**os.environ, "REFERRALKIT_HYPOTHESIS_PROFILE": "mutation", "PYTHONPATH": ""}
    return subprocess.run(["mutmut", *arguments], env=env, check=False).returncode


# -- the stratified random sample (``--sample``) ---------------------------------------------
#
# Each module is a stratum. Its sample is a prefix of a seeded shuffle of its mutants' names
# (sorted first, so the draw does not depend on the order mutmut lists them): the same seed
# gives the same sample on any machine, and a larger size extends the same sample (a prefix of
# the same shuffle), so later sessions grow it toward the whole module. The names drawn are
# recorded in the verdicts file under ``samples`` with the seed and the module's source hash;
# a change to the module's source draws its sample again (its mutants are new).

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def sample_size(spec: str, population: int) -> int:
    """How many of ``population`` mutants a ``--sample`` spec draws: an integer is a count
    per module (all of a smaller module), a number in (0, 1) a fraction of each module,
    rounded up."""
    try:
        count = int(spec)
    except ValueError:
        try:
            fraction = float(spec)
        except ValueError:
            fraction = math.nan
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"a sample is a count or a fraction in (0, 1), not {spec!r}") from None
        return min(population, math.ceil(fraction * population))
    if count < 1:
        raise ValueError(f"a sample is a count of at least 1 or a fraction in (0, 1), not {spec!r}")
    return min(population, count)


def draw(names: Iterable[str], size: int, seed: int, module: str) -> list[str]:
    """The first ``size`` of ``names`` in a shuffle seeded by ``seed`` and the module's name:
    deterministic, independent of the order of ``names``, and nested (a larger size keeps the
    smaller sample as its prefix)."""
    order = sorted(names)
    random.Random(f"{seed}:{module}").shuffle(order)
    return order[:size]


def extend_sample(
    data: Verdicts, module: str, names: Iterable[str], size: int, seed: int, source: str
) -> list[str]:
    """The recorded sample of ``module``, drawn again when its source changed and grown to
    ``size`` (never shrunk); returns it. A recorded sample of another seed is an error: the
    sample would no longer be one random draw."""
    samples = data.setdefault("samples", {})
    entry = samples.get(module)
    if entry is not None and entry["source_sha256"] == source:
        if entry["seed"] != seed:
            raise ValueError(
                f"{module}: its sample was drawn with seed {entry['seed']}; extend it with "
                f"--seed {entry['seed']} (or --forget it)"
            )
        size = max(size, len(entry["names"]))
    drawn = draw(names, size, seed, module)
    samples[module] = {"seed": seed, "source_sha256": source, "names": drawn}
    return drawn


def wilson(caught: float, tested: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``caught / tested``; ``tested`` may be an
    effective (non-integer) number of trials. (0, 1) when nothing was tested."""
    if tested <= 0:
        return 0.0, 1.0
    p = caught / tested
    z2 = z * z
    centre = (p + z2 / (2 * tested)) / (1 + z2 / tested)
    half = z * math.sqrt(p * (1 - p) / tested + z2 / (4 * tested * tested)) / (1 + z2 / tested)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Estimate:
    """A module's (or all modules') mutation score: exact when every mutant has a verdict,
    else estimated from the judged mutants of the random sample, with a 95% interval."""

    mutants: int  # the population
    tested: int  # mutants with a verdict that counts (any, sampled or not)
    caught: int
    survived: int  # survived or reached by no test
    sampled: int  # judged members of the random sample (the estimate's basis)
    drawn: int  # members of the random sample
    score: float | None
    low: float | None
    high: float | None
    exact: bool
    variance: float = 0.0  # of ``score``, for the stratified total


def _counts(verdicts: Iterable[str]) -> tuple[int, int]:
    tally = Counter(verdicts)
    caught = tally["killed"] + tally["timeout"] + tally["type check"]
    return caught, caught + tally["survived"] + tally["no tests"] + tally["other"]


def estimate(verdicts: Mapping[str, str], sample: Iterable[str], mutants: int) -> Estimate:
    """A module's score from its recorded ``verdicts`` (name → verdict): exact when every one
    of its ``mutants`` has a verdict (``skipped`` counts as one, outside the score); else the
    proportion caught among the first ``n`` of ``sample``, the longest head of it in which
    every mutant has a verdict (a prefix of a random shuffle is a random sample, whatever order
    mutmut ran them in; judged members after a gap are left out), with Wilson's interval over
    the effective sample size under the finite-population correction, ``n (N - 1) / (N - n)``,
    and cut to what the verdicts outside it already make certain."""
    caught, tested = _counts(verdicts.values())
    survived = tested - caught
    drawn = list(sample)
    judged = []  # the head of the sample in which every mutant has a verdict
    for name in drawn:
        if name not in verdicts:
            break
        judged.append(verdicts[name])
    x, n = _counts(judged)
    if len(verdicts) >= mutants:
        score = caught / tested if tested else None
        return Estimate(mutants, tested, caught, survived, n, len(drawn), score, score, score, True)
    if n == 0:
        return Estimate(mutants, tested, caught, survived, 0, len(drawn), None, None, None, False)
    population = mutants - (len(verdicts) - tested)  # less the skipped
    p = x / n
    effective = n * (population - 1) / (population - n) if n < population else math.inf
    low, high = wilson(p * effective, effective) if math.isfinite(effective) else (p, p)
    # certain bounds: the caught so far, the pending all caught (or none)
    pending = mutants - len(verdicts)
    certain = caught / population, (caught + pending) / population
    low, high = max(low, certain[0]), min(high, certain[1])
    p = min(max(p, certain[0]), certain[1])
    # the variance for the stratified total, at Wilson's centre (never 0 for a small sample)
    centre = (x + Z95 * Z95 / 2) / (n + Z95 * Z95)
    correction = (population - n) / (population - 1) if population > 1 else 0.0
    variance = centre * (1 - centre) / n * correction
    return Estimate(mutants, tested, caught, survived, n, len(drawn), p, low, high, False, variance)


def overall(estimates: Iterable[Estimate]) -> Estimate:
    """The score over every module: the modules' scores weighted by their numbers of mutants
    (a stratified estimate), with Wilson's interval over Kish's effective sample size
    ``p (1 - p) / variance`` (the exact modules add no variance); exact when every module is.
    No score when a module has neither a complete run nor a judged sample member."""
    rows = list(estimates)
    mutants = sum(e.mutants for e in rows if e.mutants)
    tested = sum(e.tested for e in rows)
    caught = sum(e.caught for e in rows)
    survived = sum(e.survived for e in rows)
    sampled = sum(e.sampled for e in rows)
    drawn = sum(e.drawn for e in rows)
    counted = [e for e in rows if e.mutants]
    if not counted or any(e.score is None for e in counted):
        return Estimate(mutants, tested, caught, survived, sampled, drawn, None, None, None, False)
    if all(e.exact for e in counted):
        score = caught / tested if tested else None
        return Estimate(
            mutants, tested, caught, survived, sampled, drawn, score, score, score, True
        )
    weights = [e.mutants / mutants for e in counted]
    score = sum(w * (e.score or 0.0) for w, e in zip(weights, counted, strict=True))
    variance = sum(w * w * e.variance for w, e in zip(weights, counted, strict=True))
    effective = max(score * (1 - score), 1e-12) / variance if variance else math.inf
    low, high = wilson(score * effective, effective) if math.isfinite(effective) else (score, score)
    return Estimate(
        mutants, tested, caught, survived, sampled, drawn, score, low, high, False, variance
    )


def sample_estimates(data: Verdicts, names: Iterable[str]) -> dict[str, Estimate]:
    """Each module's estimate from the verdicts file alone (the verdicts and the samples that
    still hold for its source)."""
    result = {}
    for module in names:
        entry = data["modules"].get(module, {})
        current = identity(module)
        verdicts = valid(data, module, current)
        mutants = int(entry.get("mutants", 0)) if matches(entry, current) else 0
        sample = data.get("samples", {}).get(module, {})
        drawn = (
            sample.get("names", [])
            if sample.get("source_sha256") == current["source_sha256"]
            else []
        )
        result[module] = estimate(verdicts, drawn, mutants)
    return result


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.1f}%"


def sample_table(estimates: Mapping[str, Estimate]) -> str:
    """The per-module table of a sampled run: exact scores where a module is complete."""
    rows = [
        "| module | mutants | tested | caught | survived | sample n/drawn | score | 95% CI |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def row(name: str, e: Estimate) -> str:
        interval = (
            "exact"
            if e.exact and e.score is not None
            else "–"
            if e.low is None
            else f"{_share(e.low)} – {_share(e.high)}"
        )
        return (
            f"| {name} | {e.mutants} | {e.tested} | {e.caught} | {e.survived} | "
            f"{e.sampled}/{e.drawn} | {_share(e.score)} | {interval} |"
        )

    rows += [row(name, e) for name, e in estimates.items()]
    rows.append(row("**all**", overall(estimates.values())))
    return "\n".join(rows)


def report_sample(recorded: Verdicts, names: list[str], fail_under: float) -> int:
    """Print the sampled table and the estimated score; 1 when the estimate is under
    ``fail_under`` percent."""
    estimates = sample_estimates(recorded, names)
    print(sample_table(estimates))
    total = overall(estimates.values())
    interval = "" if total.low is None else f", 95% CI {_share(total.low)} – {_share(total.high)}"
    basis = "exact" if total.exact else f"estimated from {total.sampled} sampled mutants"
    print(f"mutation score over all of rules/: {_share(total.score)} ({basis}{interval})")
    return 1 if total.score is not None and 100.0 * total.score < fail_under else 0


def run_batch(
    recorded: Verdicts, batch: list[str], modules: list[str], everything: list[str], args: Any
) -> None:
    """Run the mutants ``batch`` (of several ``modules``) in one mutmut run (one clean run of
    their tests, not one per module), recording the modules' verdicts every minute and at
    the end."""
    if not batch:
        return
    stop = threading.Event()
    touched = [m for m in modules if codes_of(m)]

    def watch() -> None:
        while not stop.wait(60):
            write_progress(args.progress, everything, f"sample: running {len(batch)} mutants")
            for module in touched:
                record(recorded, module)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        code = mutmut(["run", "--max-children", str(args.max_children), *batch])
    finally:
        stop.set()
        watcher.join()
        for module in touched:
            record(recorded, module)
    if code != 0:
        print(f"mutation: mutmut run exited {code}", file=sys.stderr)
    wanted = set(batch)
    left = sum(1 for m in touched for name in pending(m) if name in wanted)
    print(
        f"mutation: {len(batch) - left} mutants in {time.monotonic() - started:.0f} s, {left} left",
        flush=True,
    )


def run_sample(
    recorded: Verdicts, batch: list[str], modules: list[str], everything: list[str], args: Any
) -> int:
    """Run the sampled mutants without a verdict (``batch``) and report the sample."""
    run_batch(recorded, batch, modules, everything, args)
    write_progress(args.progress, everything, "sample")
    return report_sample(recorded, everything, args.fail_under)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="MODULE", help="these modules of rules/")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--progress", type=Path, default=Path("mutants/mutation-progress.md"))
    parser.add_argument("--fail-under", type=float, default=90.0)
    parser.add_argument(
        "--report", action="store_true", help=f"print the table from {VERDICTS}, run nothing"
    )
    parser.add_argument(
        "--forget", action="store_true", help="judge every mutant of the chosen modules again"
    )
    parser.add_argument(
        "--retest-survivors",
        action="store_true",
        help="test the survivors again (and the mutants no test reached): after adding tests",
    )
    parser.add_argument(
        "--retest",
        nargs="+",
        metavar="MODULE",
        default=[],
        help="as --retest-survivors, for these modules only, whichever modules run",
    )
    parser.add_argument(
        "--sample",
        metavar="N|FRACTION",
        help="run only a seeded random sample of each chosen module: N mutants per module, or "
        "a fraction in (0, 1) of each; grows the recorded sample, never shrinks it",
    )
    parser.add_argument(
        "--seed", type=int, default=11, help="the sample's seed (recorded; default 11)"
    )
    args = parser.parse_args(argv)
    if args.sample is not None:
        try:
            sample_size(args.sample, 1)
        except ValueError as error:
            parser.error(str(error))

    everything = modules()
    chosen = args.only or everything
    unknown = sorted(set(chosen + args.retest) - set(everything))
    if unknown:
        parser.error(f"not modules of {SOURCE}: {', '.join(unknown)}")
    recorded = read_verdicts()
    changed = [
        m
        for m in everything
        if m in recorded["modules"] and not matches(recorded["modules"][m], identity(m))
    ]
    if not args.report and (changed or not META.exists()):
        # the first run makes every mutant and the test statistics, a later one makes again
        # the mutants of a changed module; a name that matches no mutant makes it stop there
        mutmut(["run", "--max-children", str(args.max_children), "referralkit.rules.none"])
    if args.report:
        left = sum(recorded_counts(recorded, m)[0]["pending"] for m in everything)
        note = f"from {VERDICTS}; {left} mutants without a verdict"
        source = lambda m: recorded_counts(recorded, m)  # noqa: E731
        total = write_progress(args.progress, everything, note, source)
        print(table(everything, source)[0])
        caught, tested = score(total)
        print(
            f"mutation score {percent(caught, tested)} ({caught} of {tested}); {left} not run yet"
        )
        if recorded.get("samples"):
            return report_sample(recorded, everything, args.fail_under)
        return 1 if tested and 100.0 * caught / tested < args.fail_under else 0
    for module in everything:
        sync(recorded, module, again=args.forget and module in chosen)
    again: list[str] = []
    for module in chosen if args.retest_survivors else args.retest:
        again += retest(module, recorded)
    extra = [m for m in dict.fromkeys(args.retest) if m not in chosen]
    if args.sample is not None:
        batch = set(again)
        for module in chosen:
            codes = codes_of(module)
            if not codes:
                continue
            size = sample_size(args.sample, len(codes))
            digest = identity(module)["source_sha256"] or ""
            try:
                drawn = extend_sample(recorded, module, codes, size, args.seed, digest)
            except ValueError as error:
                parser.error(str(error))
            batch.update(name for name in drawn[:size] if codes[name] is None)
        write_verdicts(recorded)
        return run_sample(recorded, sorted(batch), [*chosen, *extra], everything, args)
    write_verdicts(recorded)
    # the survivors of --retest modules that do not otherwise run are judged again now, not
    # at the driver's next start
    run_batch(recorded, [n for n in again if n.split(".")[2] in extra], extra, everything, args)
    # cheapest first, each finished module a result to read while the next one runs
    order = sorted(chosen, key=lambda m: (cost(m), m))
    shown = sorted(everything, key=lambda m: (cost(m), m))  # the table: every module
    stop = threading.Event()

    def watch(note: str, module: str) -> None:
        while not stop.wait(60):
            write_progress(args.progress, shown, note)
            record(recorded, module)

    # mutmut may reset verdicts when it starts (a changed test selection, a changed source):
    # passes repeat while one makes progress
    previous = -1
    while previous != (left := sum(len(pending(m)) for m in order)) > 0:
        previous = left
        for module in order:
            names = pending(module)
            if not names:
                continue
            note = f"running {module} ({len(names)} mutants left in it)"
            write_progress(args.progress, shown, note)
            stop.clear()
            watcher = threading.Thread(target=watch, args=(note, module), daemon=True)
            watcher.start()
            started = time.monotonic()
            try:
                code = mutmut(["run", "--max-children", str(args.max_children), *names])
            finally:
                stop.set()
                watcher.join()
                record(recorded, module)
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
