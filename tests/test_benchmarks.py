"""The benchmarks' quick modes: each runs, checks what it times, and fails on a wrong result
(and, with ``--check``, on a missed target)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def run_bench(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/name`` in a fresh interpreter, warnings as errors."""
    return subprocess.run(
        [sys.executable, "-W", "error", str(BENCH / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def load_bench(name: str) -> ModuleType:
    """The benchmark script as a module, to call its functions in-process."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCH / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestRulesBenchmark:
    def test_quick_run_pairs_and_checks_every_method(self) -> None:
        """``bench_rules.py --quick`` times each method in pairs with its baseline, reports the
        median ratio with its range and the load average, and says what it checked."""
        result = run_bench("bench_rules.py", "--quick")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "Load average (1, 5, 15 min):" in out
        assert "| ratio to baseline, median (min–max) |" in out
        assert "5 pairs" in out
        assert "fact extraction alone" in out
        assert "equal to the explain path, 2,000 referrals" in out
        assert "same findings: True" in out
        assert "WRONG" not in result.stderr

    def test_paired_checks_every_timed_result(self) -> None:
        """A method is timed after its baseline in every pair, and each of its results goes to
        the check (the warm-up's and every timed run's)."""
        bench = load_bench("bench_rules.py")
        order: list[str] = []
        seen: list[int] = []

        def baseline() -> int:
            order.append("baseline")
            return 0

        def method() -> int:
            order.append("method")
            return len(order)

        pair = bench.paired(baseline, method, 1, 3, seen.append)
        assert order == ["baseline", "method"] * 4
        assert seen == [2, 4, 6, 8]
        assert len(pair.ratios) == 3
        assert pair.spread().endswith("3 pairs")

    def test_a_wrong_result_exits_1(self) -> None:
        """A result that differs from its reference fails the run even without ``--check``."""
        bench = load_bench("bench_rules.py")
        bench.wrong.append("planted: differs")
        assert bench.main(["--quick", "--check-only"]) == 1

    def test_check_fails_on_a_missed_target(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With ``--check``, a missed target exits 1; without it the run still succeeds."""
        bench = load_bench("bench_rules.py")
        monkeypatch.setattr(bench, "POLICY_TARGET_US", 0.0)
        monkeypatch.setattr(bench, "DEFAULT_PEERS", ROOT / "no-such-peers")
        assert bench.main(["--quick", "--rounds", "1", "--check"]) == 1
        bench.rows.clear()
        bench.check_rows.clear()
        assert bench.main(["--quick", "--rounds", "1"]) == 0


class TestStorageBenchmark:
    def test_quick_run_pairs_and_checks_intake_and_worklists(self) -> None:
        """``bench_storage.py --quick --no-postgres`` times bulk intake in pairs with the
        driver floor and each worklist run after a bare read of the same rows, reports the
        median ratio with its range and the load average, and checks bulk intake (count, a
        sample read back) and every worklist against the reference ranking."""
        result = run_bench("bench_storage.py", "--quick", "--no-postgres")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "load average" in out
        assert "| vs baseline, median of pairs (min–max) |" in out
        assert "| bulk intake | SQLite | driver floor" in out
        assert "save_many × 500 (2 runs)" in out
        assert "2 pairs |" in out
        assert "top-50 open, worklist order: p95" in out
        assert "60 pairs" in out
        assert "checked: bulk intake counts (driver floor and save_many)" in out
        assert "every worklist equal to the reference ranking" in out
        assert "WRONG" not in result.stderr

    def test_check_fails_on_a_missed_target(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With ``--check``, a missed target exits 1 and is named; the others are met."""
        bench = load_bench("bench_storage.py")
        monkeypatch.setattr(bench, "INTAKE_TARGET", {"SQLite": 1e12})
        monkeypatch.setattr(bench, "WORKLIST_TARGET_MS", 1e9)
        argv = ["--quick", "--no-postgres", "--check", "--count", "100", "--rows", "1000"]
        assert bench.main([*argv, "--rounds", "1"]) == 1
        out = capsys.readouterr().out
        assert bench.wrong == []
        assert "missed targets: SQLite: 100 referrals + " in out
        assert "worklist order: p95" not in out.split("missed targets:")[1]

    def test_a_worklist_out_of_order_is_wrong(self, tmp_path: Path) -> None:
        """Rows in another order than the reference's, or a referral missing from them, are
        reported; the true worklist is not; so is a bulk intake that lost a referral."""
        import referralkit as rk
        from referralkit.storage import Query

        bench = load_bench("bench_storage.py")
        changes = bench.intake_changes(80)
        query = Query(open_only=True, limit=10)
        reference = bench.reference_ranking([c[0] for c in changes], query)
        assert len(reference) == 10

        class Reversed(rk.MemoryStore):
            def query(self, query: Query = Query()) -> list[rk.Referral]:
                return list(reversed(super().query(query)))

        class Skipping(rk.MemoryStore):
            def query(self, query: Query = Query()) -> list[rk.Referral]:
                found = super().query(attrs.evolve(query, limit=None))
                return found[1 : (query.limit or len(found)) + 1]

        for store_class, expected in (
            (rk.MemoryStore, None),
            (Reversed, "not in worklist order"),
            (Skipping, "1 rows not in the reference ranking"),
        ):
            bench.wrong.clear()
            store = store_class()
            store.save_many(changes)
            bench.check_intake(store, changes, "memory")
            bench.check_worklist(store, "memory", "top-10", query, reference)
            if expected is None:
                assert bench.wrong == []
            else:
                assert any(expected in w for w in bench.wrong), bench.wrong
        bench.wrong.clear()
        store = rk.MemoryStore()
        store.save_many(changes[1:])
        bench.check_intake(store, changes, "memory")
        assert bench.wrong == [
            "bulk intake, memory: 79 stored, 80 written",
            f"bulk intake, memory: {changes[0][0].id} reads back different",
        ]

    def test_the_million_reference_is_the_reference_ranking(self) -> None:
        """The reference worked out from the templates equals the reference ranking over
        the built referrals themselves."""
        import attrs as attrs_

        from referralkit.storage import Query

        bench = load_bench("bench_storage.py")
        shapes = bench.templates(12)
        built = [attrs_.evolve(shapes[k % 12][0], id=f"r{k:07d}") for k in range(60)]
        for query in (
            Query(open_only=True, limit=10),
            Query(open_only=True, specialty=shapes[0][0].specialty, limit=5),
        ):
            assert bench.million_reference(shapes, 60, query) == bench.reference_ranking(
                built, query
            )


class TestFhirBenchmark:
    def test_quick_run_checks_the_exported_bundles(self) -> None:
        """``bench_fhir.py --quick`` checks every exported Bundle's resources, re-imports a
        sample equal to the source, and checks the import, before printing its table."""
        result = run_bench("bench_fhir.py", "--quick")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "| part | operation | median referrals/s |" in out
        assert "2 pairs" in out
        assert "Bundles, one per referral, each with the resources its referral" in out
        assert "100 ServiceRequest" in out
        assert "re-imported equal to the source" in out

    def test_a_wrong_export_is_reported(self, tmp_path: Path) -> None:
        """A Bundle missing a resource, a Bundle that re-imports differently, and a missing
        Bundle are each reported; the true export is not."""
        import json

        from referralkit.interop.fhir import to_fhir
        from referralkit.storage import open_store

        bench = load_bench("bench_fhir.py")
        url = f"sqlite:///{tmp_path / 'source.db'}"
        bench.populate(url, 12)
        with open_store(url) as store:
            referrals = sorted(store.query(), key=lambda r: r.id)
        bundles = [to_fhir(r) for r in referrals]

        def text(items: list[dict[str, object]]) -> str:
            return "".join(json.dumps(b) + "\n" for b in items)

        totals = bench.check_export(url, text(bundles), "export", 12)
        assert bench.wrong == []
        assert totals["ServiceRequest"] == len(referrals)
        assert totals["Patient"] == len(referrals)

        bench.check_export(url, text(bundles[1:]), "export", 12)
        assert bench.wrong == [
            f"export: {len(referrals) - 1} Bundles for {len(referrals)} referrals"
        ]
        bench.wrong.clear()

        no_patient = json.loads(json.dumps(bundles[0]))
        no_patient["entry"] = [
            e for e in no_patient["entry"] if e["resource"]["resourceType"] != "Patient"
        ]
        bench.check_export(url, text([no_patient, *bundles[1:]]), "export", 12)
        assert "Bundle has" in bench.wrong[0]
        assert "does not re-import" in bench.wrong[1]
        bench.wrong.clear()

        swapped = [to_fhir(referrals[1]), to_fhir(referrals[0]), *bundles[2:]]
        bench.check_export(url, text(swapped), "export", 12)
        assert any("re-imported differs from the source" in w for w in bench.wrong)


class TestSecurityAccessBenchmark:
    def test_quick_run_checks_and_reports_every_row(self) -> None:
        """``bench_security_access.py --quick`` checks each audited read against its
        baseline (same result, one record appended), then prints every row and verify."""
        result = run_bench(
            "bench_security_access.py", "--quick", "--referrals", "30", "--pairs", "1"
        )
        assert result.returncode == 0, result.stderr
        assert "| sqlite | get |" in result.stdout
        assert "CPU-time ratio (median)" in result.stdout
        assert "| sqlite, batch 64 | worklist top-50, scoped |" in result.stdout
        assert "| memory | 2,000 |" in result.stdout
        assert "load average" in result.stdout

    def test_check_fails_on_a_missed_target(self, monkeypatch: pytest.MonkeyPatch) -> None:
        bench = load_bench("bench_security_access.py")
        monkeypatch.setattr(bench, "VERIFY_TARGET", 10**12)
        assert bench.main(["--quick", "--referrals", "20", "--pairs", "1", "--check"]) == 1
        assert bench.main(["--quick", "--referrals", "20", "--pairs", "1"]) == 0

    def test_a_wrong_worklist_is_caught(self, monkeypatch: pytest.MonkeyPatch) -> None:
        bench = load_bench("bench_security_access.py")
        monkeypatch.setattr(bench, "old_worklist", lambda desk, when, keep: [])
        with pytest.raises(AssertionError, match="worklist differs"):
            bench.main(["--quick", "--referrals", "20", "--pairs", "1"])


class TestPolicyTestingBenchmark:
    def test_quick_run_pairs_and_checks_every_figure(self) -> None:
        """``bench_policy_testing.py --quick`` times drawing and what-if in pairs with their
        baselines, runs the checks, and says what it checked."""
        result = run_bench("bench_policy_testing.py", "--quick", "--rounds", "1")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "Load average (1, 5, 15 min):" in out
        assert "| ratio to baseline, median (min–max) |" in out
        assert "drawing 1,000 referrals for the shipped policies: sample_referrals" in out
        assert "same draw every run; every rule matched" in out
        assert "what-if, both, 2,000 referrals" in out
        assert "counts equal to deciding directly" in out
        assert "rules test, shipped policies, 50 examples per check" in out
        assert ", 0 failed, " in out
        assert "WRONG" not in result.stderr

    def test_a_wrong_what_if_is_reported(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A what-if whose counts differ from deciding each referral directly is wrong, and
        the run exits 1 even without ``--check``; the true what-if is not."""
        bench = load_bench("bench_policy_testing.py")
        bench.part_two(60, 1)
        assert bench.wrong == []
        assert bench.verdict(check=False) == 0
        true_what_if = bench.what_if

        def off_by_one(old: object, new: object, referrals: list[object]) -> object:
            return true_what_if(old, new, referrals[1:])

        monkeypatch.setattr(bench, "what_if", off_by_one)
        bench.part_two(60, 1)
        assert {w.split(":")[0] for w in bench.wrong} == {
            "what-if both",
            "what-if coverage",
            "what-if urgency",
        }
        assert all("differ from deciding directly" in w for w in bench.wrong)
        assert bench.verdict(check=False) == 1

    def test_a_drawing_that_changes_between_runs_is_reported(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The seeded draw must give the same referrals every run."""
        bench = load_bench("bench_policy_testing.py")
        calls = iter(range(100))
        true_sample = bench.sample_referrals

        def drifting(subject: object, count: int) -> list[object]:
            return true_sample(subject, count, seed=next(calls))

        monkeypatch.setattr(bench, "sample_referrals", drifting)
        bench.part_one(40, 1, 5)
        assert "drawing: a seeded draw differs from the first one" in bench.wrong

    def test_check_fails_on_a_missed_target(self) -> None:
        """With ``--check``, a missed target exits 1; without it the run still succeeds."""
        bench = load_bench("bench_policy_testing.py")
        bench.rows.append(bench.Row("what-if", "1/s", "-", "-", "≥ 20,000/s", False, ""))
        assert bench.verdict(check=True) == 1
        assert bench.verdict(check=False) == 0


class TestScaleBenchmark:
    @pytest.mark.slow
    def test_quick_run_measures_every_size_and_checks(self) -> None:
        """``bench_scale.py --quick`` builds 1,000 then 3,000 referrals, measures each
        operation at both sizes in its own process with its peak RSS and growth exponent, and
        says what it checked (several minutes on a busy machine: marked slow)."""
        result = subprocess.run(
            [sys.executable, "-W", "error", str(BENCH / "bench_scale.py"), "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1_200,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "load average" in out
        assert "| store | measure | referrals stored | result (wall) | growth (wall) |" in out
        for label in ("load by id", "worklist top-50", "FHIR export, unvalidated", "KPI summary"):
            assert f"| SQLite | {label} | 1,000 |" in out
            assert f"| SQLite | {label} | 3,000 |" in out
        assert "checked: the build against the desk on a sample of 12 per size" in out
        assert "WRONG" not in result.stderr

    def test_the_checks_catch_a_wrong_worklist_and_a_wrong_build(self, tmp_path: Path) -> None:
        """The worklist measured equal to the reference ranking passes and a wrong reference
        is reported; the built referrals pass the desk check and a changed one does not."""
        from referralkit.storage import open_store

        bench = load_bench("bench_scale.py")
        url = f"sqlite:///{tmp_path / 'scale.db'}"
        reference: list[tuple[int, str, str, str]] = []
        with open_store(url) as store:
            bench.grow(store, 0, 60, reference)
            bench.check_build(store, 60)
            assert bench.wrong == []
        state = {"total": 60, "built": 60, "reference": reference}
        result = bench.measure_worklist(url, state)
        assert bench.wrong == []
        assert result["p95_ms"] > 0
        missing_first = [*reference[1:], (0, "9999-12-31", "9999-12-31", "s9999999")]
        bench.measure_worklist(url, {**state, "reference": missing_first})
        assert "worklist: top-50 differs from the reference ranking" in bench.wrong
        bench.wrong.clear()
        import attrs as attrs_

        import referralkit as rk

        small = f"sqlite:///{tmp_path / 'small.db'}"
        with open_store(small) as store:
            bench.grow(store, 0, 10, [])
            changed = store.load("s0000003")
            event = rk.ReferralEvent(
                changed.id, 2, 0, changed.updated_at, "someone", "owner_assigned", {"owner": "x"}
            )
            store.save(attrs_.evolve(changed, version=2, owner="x"), [event], 1)
            bench.check_build(store, 10)  # a sample of 10 of 10: every one
        assert bench.wrong == ["build: s0000003 reads back different from its build"]

    def test_targets_and_growth_exponents_are_judged(self) -> None:
        """A figure over its target, or growing faster than the target allows, is a miss
        named with its size; one within both is met."""
        bench = load_bench("bench_scale.py")
        results = {
            10_000: {
                "load": {"p50_ms": 0.1, "p95_ms": 0.2, "rss_mb": 50, "cpu_s": 1.0},
                "export": {"seconds": 5.0, "rate": 2_000.0, "rss_mb": 100, "cpu_s": 1.0},
                "kpis": {"seconds": 0.5, "rate": 20_000.0, "rss_mb": 100, "cpu_s": 1.0},
            },
            100_000: {
                "load": {"p50_ms": 0.2, "p95_ms": 0.3, "rss_mb": 50, "cpu_s": 1.0},
                "export": {"seconds": 50.0, "rate": 2_000.0, "rss_mb": 400, "cpu_s": 1.0},
                "kpis": {"seconds": 10.0, "rate": 10_000.0, "rss_mb": 100, "cpu_s": 1.0},
            },
        }
        assert bench.exponent(results, 100_000, "export", "seconds") == pytest.approx(1.0)
        text, missed = bench.table(results, "SQLite")
        assert missed == [
            "SQLite, 100,000, wall: load growth exponent 0.30 > 0.1",
            "SQLite, 100,000, wall: export peak RSS 400 MB > 300",
            "SQLite, 100,000, wall: KPIs 100 s per million > 60",
            "SQLite, 100,000, wall: kpis growth exponent 1.30 > 1.05",
        ]
        assert (
            "| SQLite | load by id | 10,000 | 0.100 ms p50 | – | – | – | 50 | – | yes / – |" in text
        )

    def test_cpu_figures_are_judged_apart_from_the_wall_clock(self) -> None:
        """A figure missed by the wall clock but met in CPU time (the machine's load) shows
        as such, with its CPU growth exponent."""
        bench = load_bench("bench_scale.py")
        results = {
            10_000: {
                "load": {"p50_ms": 0.5, "cpu_ms": 0.1, "rss_mb": 50, "load": 20.0},
                "kpis": {"seconds": 5.0, "cpu_seconds": 0.5, "rss_mb": 100, "load": 20.0},
            },
            100_000: {
                "load": {"p50_ms": 0.6, "cpu_ms": 0.1, "rss_mb": 50, "load": 20.0},
                "kpis": {"seconds": 50.0, "cpu_seconds": 5.0, "rss_mb": 100, "load": 20.0},
            },
        }
        text, missed = bench.table(results, "SQLite")
        assert missed == [
            "SQLite, 10,000, wall: load p50 0.500 ms > 0.3 ms",
            "SQLite, 100,000, wall: load p50 0.600 ms > 0.3 ms",
            "SQLite, 10,000, wall: KPIs 500 s per million > 60",
            "SQLite, 100,000, wall: KPIs 500 s per million > 60",
        ]
        assert (
            "| SQLite | load by id | 100,000 | 0.600 ms p50 | 0.08 | 0.100 ms p50 | 0.00 | 50 "
            "| 20.0 | **no** / yes |" in text
        )
        assert "| SQLite | KPI summary | 100,000 | 50.0 s | 1.00 | 5.0 s | 1.00 |" in text


class TestSecurityBenchmark:
    def test_quick_run_checks_what_it_times(self) -> None:
        """``bench_security.py --quick`` times the whole path, bulk intake and rotation in
        pairs, checks each result, and prints the ratios with the load average."""
        result = run_bench("bench_security.py", "--quick")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "load average" in out
        for figure in ("| whole path", "| bulk intake", "| rotation onto a new key"):
            assert figure in out
        assert "checked: every path completed" in out
