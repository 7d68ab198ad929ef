"""FHIR benchmark: referrals out to FHIR R4 Bundles and back in, beside the storage dump.

    python benchmarks/bench_fhir.py             # full run, 1,000 referrals, about 25 seconds
    python benchmarks/bench_fhir.py --quick     # 100 referrals, to check that it runs
    python benchmarks/bench_fhir.py --count N   # any number of referrals

The referrals are made the way ``referralkit demo`` makes them (untimed): a synthetic
population taken in and simulated for six weeks by the desk on a memory store, so they carry
coverage decisions, urgency assessments, appointments, attachments, communications and
follow-ups in every lifecycle state. Their whole histories are then restored into a SQLite
file (``synchronous=FULL``), which every part reads from. What is measured, referrals per
second, each method timed interleaved with its baseline on the same data (baseline, method,
baseline, method... for ``--repeat`` pairs); the ratio is taken per pair, and the table gives
its median with min and max, beside the load average:

- **Export** from the SQLite store to NDJSON in memory, one compact Bundle per line:
  ``to_fhir(r)`` and ``to_fhir(r, validate=True)`` (which also validates the Bundle with
  fhir.resources, as ``referralkit fhir export`` does), the store read included. Baseline:
  :func:`referralkit.storage.dump` of the same store, JSON lines holding every snapshot with
  its whole history.
- **Import** of that NDJSON into a fresh SQLite file: ``referralkit fhir import FILE --db URL``
  run in-process (read the file, ``json.loads`` and ``from_fhir`` per line, one ``created``
  event per referral, checked to replay, ``save_many`` in one transaction). Baseline:
  :func:`referralkit.storage.load_dump` of the dump into a fresh SQLite file (each line
  checked and replayed, written in batches of 500).

Both baselines move more data per referral than FHIR does (every event, not only the
snapshot), so the ratios say what the FHIR mapping and validation cost compared with the
store's own bulk path, measured in the same run on the same referrals.

What it checks, after the timing, and exits 1 on a wrong result: each export's NDJSON (the
last timed run's) has one Bundle per stored referral, in id order; every Bundle holds the
resources its referral calls for (one ServiceRequest and one Patient, a Coverage when covered,
one Appointment per appointment, one DocumentReference per attachment, one Communication per
communication, one QuestionnaireResponse per survey, one Task plus one per follow-up); the
validated export is the same text as the unvalidated one; a sample of Bundles (``--sample``,
100 by default, spread over the file) re-imported with ``from_fhir`` equals the source
referral read from the store; the import stores one referral per Bundle, and a sample of them
equals its Bundle's referral at version 1.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import attrs

import referralkit as rk
from referralkit import cli, synth
from referralkit.errors import ReferralKitError
from referralkit.interop.fhir import from_fhir, to_fhir
from referralkit.storage import MemoryStore, dump, load_dump, open_store

wrong: list[str] = []  # results that differ from their reference (always fatal)

ACTORS = (
    rk.Actor("bench-coordinator", {rk.Role.COORDINATOR}),
    rk.Actor("bench-scheduler", {rk.Role.SCHEDULER}),
    rk.Actor("bench-specialist", {rk.Role.SPECIALIST}),
    rk.Actor("bench-referrer", {rk.Role.REFERRER}),
)
SEED = 11


@attrs.frozen
class Result:
    """One row: what was measured, referrals per second in each repeat, and for a method its
    throughput as a ratio of its baseline's in each pair."""

    group: str
    name: str
    rates: tuple[float, ...]
    is_baseline: bool = False
    ratios: tuple[float, ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def best(self) -> float:
        return max(self.rates)


def fmt_rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def render(results: Sequence[Result]) -> str:
    """The results as a Markdown table, each row's throughput as a ratio of its baseline's."""
    lines = [
        "| part | operation | median referrals/s | best referrals/s | vs baseline, median of "
        "pairs (min–max) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        if r.is_baseline:
            ratio = "baseline"
        else:
            ratio = (
                f"{statistics.median(r.ratios):.2f}× "
                f"({min(r.ratios):.2f}–{max(r.ratios):.2f}), {len(r.ratios)} pairs"
            )
        lines.append(
            f"| {r.group} | {r.name} | {fmt_rate(r.median)} | {fmt_rate(r.best)} | {ratio} |"
        )
    return "\n".join(lines)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rate(run: Callable[[Any], int], inputs: Any, count: int) -> float:
    """Referrals per second of one ``run(inputs)`` (garbage collector paused); ``run`` returns
    how many referrals it handled, checked against ``count``."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        handled = run(inputs)
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    if handled != count:
        wrong.append(f"expected {count} referrals handled, got {handled}")
    return count / elapsed


def paired(
    group: str,
    baseline: tuple[str, Callable[[Any], int]],
    methods: Sequence[tuple[str, Callable[[Any], int]]],
    count: int,
    repeat: int,
    prepare: Callable[[int], Any],
) -> list[Result]:
    """Each method timed right after a run of its baseline, ``repeat`` rounds of (baseline,
    method) for every method; ``prepare(k)`` makes each run's input, untimed."""
    base_rates: list[float] = []
    rates: list[list[float]] = [[] for _ in methods]
    ratios: list[list[float]] = [[] for _ in methods]
    k = 0
    for round_ in range(repeat):
        for i, (_, run) in enumerate(methods):
            say(f"{group}: pair {round_ + 1} of method {i + 1}")
            base = rate(baseline[1], prepare(k), count)
            mine = rate(run, prepare(k + 1), count)
            k += 2
            base_rates.append(base)
            rates[i].append(mine)
            ratios[i].append(mine / base)
    results = [Result(group, baseline[0], tuple(base_rates), is_baseline=True)]
    for (name, _), mine, ratio in zip(methods, rates, ratios, strict=True):
        results.append(Result(group, name, tuple(mine), ratios=tuple(ratio)))
    return results


# --------------------------------------------------------------------------- the referrals


def populate(url: str, count: int) -> None:
    """``count`` simulated referrals with their histories, restored into the store ``url``."""
    clock = rk.FakeClock(synth.DEFAULT_START)
    memory = MemoryStore()
    desk = rk.ReferralDesk(memory, clock=clock, new_id=synth.id_factory(SEED))
    providers = synth.directory(SEED)
    requests = synth.population(count, SEED, synth.DEFAULT_START, providers=providers)
    synth.simulate(desk, ACTORS, clock, requests, weeks=6, seed=SEED, providers=providers)
    histories = list(memory.export())
    with open_store(url) as store:
        for k in range(0, len(histories), 500):
            store.restore_many(histories[k : k + 500])


# --------------------------------------------------------------------------- export


def export_ndjson(url: str, validate: bool, kept: list[io.StringIO]) -> Callable[[Any], int]:
    """An export run; its output is kept in ``kept`` (the last run's) to be checked untimed."""

    def run(_: Any) -> int:
        buffer = io.StringIO()
        with open_store(url) as store:
            referrals = sorted(store.query(rk.Query()), key=lambda r: r.id)
        for referral in referrals:
            bundle = to_fhir(referral, validate=validate)
            buffer.write(json.dumps(bundle, separators=(",", ":")) + "\n")
        kept[:] = [buffer]
        return len(referrals)

    return run


def expected_resources(r: rk.Referral) -> dict[str, int]:
    """How many of each resource type the Bundle of ``r`` holds (providers aside)."""
    return {
        "ServiceRequest": 1,
        "Patient": 1,
        "Coverage": 0 if r.coverage is None else 1,
        "Appointment": len(r.appointments),
        "DocumentReference": len(r.attachments),
        "Communication": len(r.communications),
        "QuestionnaireResponse": len(r.surveys),
        "Task": 1 + len(r.follow_ups),
    }


def check_export(url: str, text: str, label: str, sample: int) -> dict[str, int]:
    """One Bundle per stored referral, in id order, each with the resources its referral calls
    for; ``sample`` of them, spread over the file, re-import equal to the stored referral.
    The resource totals over the export."""
    totals: dict[str, int] = {}
    lines = text.splitlines()
    with open_store(url) as store:
        referrals = sorted(store.query(rk.Query()), key=lambda r: r.id)
        if len(lines) != len(referrals):
            wrong.append(f"{label}: {len(lines)} Bundles for {len(referrals)} referrals")
            return totals
        step = max(1, len(lines) // sample) if sample else 0
        for k, (line, referral) in enumerate(zip(lines, referrals, strict=True)):
            bundle = json.loads(line)
            found: dict[str, int] = {}
            for entry in bundle["entry"]:
                kind = entry["resource"]["resourceType"]
                found[kind] = found.get(kind, 0) + 1
                totals[kind] = totals.get(kind, 0) + 1
            want = expected_resources(referral)
            if {kind: found.get(kind, 0) for kind in want} != want:
                wrong.append(f"{label}: {referral.id}'s Bundle has {found}, expected {want}")
            if step and k % step == 0:
                try:
                    back = from_fhir(bundle)
                except ReferralKitError as error:
                    wrong.append(f"{label}: {referral.id} does not re-import ({error})")
                    continue
                if back != referral:
                    wrong.append(f"{label}: {referral.id} re-imported differs from the source")
    return totals


def dump_store(url: str) -> int:
    buffer = io.StringIO()
    with open_store(url) as store:
        return dump(store, buffer)


# --------------------------------------------------------------------------- import


def fresh_url(workdir: str, name: str) -> Callable[[int], str]:
    """A new SQLite file per repeat (created untimed, schema included)."""

    def prepare(k: int) -> str:
        url = f"sqlite:///{os.path.join(workdir, f'{name}-{k}.db')}"
        open_store(url).close()
        return url

    return prepare


def cli_import(path: str) -> Callable[[str], int]:
    def run(url: str) -> int:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["fhir", "import", path, "--db", url])
        if status != 0:
            raise SystemExit(f"fhir import failed: {err.getvalue().strip()}")
        with open_store(url) as store:
            return store.count()

    return run


def load_dump_into(path: str) -> Callable[[str], int]:
    def run(url: str) -> int:
        with open(path, encoding="utf-8") as file, open_store(url) as store:
            return load_dump(store, file)

    return run


def check_round_trip(ndjson_path: str, url: str, count: int, sample: int = 25) -> None:
    """The import stored one referral per Bundle, and a sample of them equal the Bundles'
    referrals (at version 1)."""
    with open(ndjson_path, encoding="utf-8") as file, open_store(url) as store:
        if store.count() != count:
            wrong.append(f"fhir import: {store.count()} stored for {count} Bundles")
        for line in list(file)[:sample]:
            original = from_fhir(json.loads(line))
            stored = store.load(original.id)
            if stored != attrs.evolve(original, version=1):
                wrong.append(f"fhir import: {original.id} did not come back as exported")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 referrals: checks it runs")
    parser.add_argument("--count", type=int, help="referrals (default 1,000; 100 with --quick)")
    parser.add_argument("--repeat", type=int, help="pairs per method (default 3)")
    parser.add_argument("--dir", help="where the SQLite files go (default: a temporary dir)")
    parser.add_argument(
        "--sample", type=int, default=100, help="Bundles re-imported and compared per export"
    )
    args = parser.parse_args(argv)
    count = args.count or (100 if args.quick else 1_000)
    repeat = args.repeat or (2 if args.quick else 3)
    workdir = args.dir or tempfile.mkdtemp(prefix="bench-fhir-")
    os.makedirs(workdir, exist_ok=True)
    results: list[Result] = []
    loads = [os.getloadavg()]
    try:
        source = f"sqlite:///{os.path.join(workdir, 'source.db')}"
        say(f"simulating {count:,} referrals (untimed)")
        populate(source, count)
        with open_store(source) as store:
            count = store.count()  # every request is one referral; duplicates are folded
        ndjson_path = os.path.join(workdir, "bundles.ndjson")
        dump_path = os.path.join(workdir, "store.dump")
        with open(ndjson_path, "w", encoding="utf-8") as file, open_store(source) as store:
            for referral in sorted(store.query(rk.Query()), key=lambda r: r.id):
                file.write(json.dumps(to_fhir(referral), separators=(",", ":")) + "\n")
        with open(dump_path, "w", encoding="utf-8") as file, open_store(source) as store:
            dump(store, file)
        with open_store(source) as store:
            events = sum(len(store.events(r.id)) for r in store.query(rk.Query()))
        ndjson_size = os.path.getsize(ndjson_path)
        dump_size = os.path.getsize(dump_path)

        part = "export, SQLite → NDJSON"
        plain: list[io.StringIO] = []
        validated: list[io.StringIO] = []
        results += paired(
            part,
            (
                f"storage `dump` (every snapshot + its {events / count:.1f} events on average)",
                lambda _: dump_store(source),
            ),
            [
                (
                    "`to_fhir(r)`, one compact Bundle per line (`fhir export --no-validate`)",
                    export_ndjson(source, False, plain),
                ),
                (
                    "`to_fhir(r, validate=True)` (fhir.resources), as `fhir export` does",
                    export_ndjson(source, True, validated),
                ),
            ],
            count,
            repeat,
            lambda k: None,
        )
        say(f"{part}: checking the exported Bundles (untimed)")
        totals = check_export(source, plain[0].getvalue(), "export", args.sample)
        if validated[0].getvalue() != plain[0].getvalue():
            wrong.append("export: the validated export differs from the unvalidated one")

        part = "import → a fresh SQLite file"
        results += paired(
            part,
            ("storage `load_dump` (checked, replayed, batches of 500)", load_dump_into(dump_path)),
            [
                (
                    "`referralkit fhir import` (two passes over the file; batches of 500)",
                    cli_import(ndjson_path),
                )
            ],
            count,
            repeat,
            fresh_url(workdir, "import"),
        )
        # the last fhir import wrote import-(2 * repeat - 1).db
        last = os.path.join(workdir, f"import-{2 * repeat - 1}.db")
        check_round_trip(ndjson_path, f"sqlite:///{last}", count)
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"referralkit {rk.__version__} FHIR benchmark"
        f"{' (--quick: small counts, the figures mean little)' if args.quick else ''}: "
        f"{count:,} simulated referrals, {repeat} pairs per method; load average "
        f"{', '.join(f'{x:.2f}' for x in loads[0])} before, "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after; Python "
        f"{platform.python_version()}, fhir.resources {version('fhir.resources')}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"NDJSON {ndjson_size / count / 1024:.1f} KiB per referral, "
        f"dump {dump_size / count / 1024:.1f} KiB per referral\n"
    )
    print(render(results))
    if wrong:
        print("\nWRONG RESULTS:\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    shown = ", ".join(f"{n:,} {kind}" for kind, n in sorted(totals.items()))
    print(
        f"\nchecked: {count:,} Bundles, one per referral, each with the resources its referral "
        f"calls for ({shown}); the validated export equal to the unvalidated one; "
        f"{min(args.sample, count):,} re-imported equal to the source; the import stored "
        f"{count:,}, a sample equal to its Bundles"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
