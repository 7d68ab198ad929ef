"""The runnable examples and the core benchmark run, exit 0 and print what they promise.

An example that needs an optional extra says so in its docstring and in a line
``# extras: name, ...``; here that becomes the ``extras`` marker, so that the ``snippets`` nox
session (``pip install .`` alone, ``pytest --skip-missing-extras``) skips it, with that reason,
and runs every other example.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
BENCH_CORE = ROOT / "benchmarks" / "bench_core.py"
PYPROJECT_EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "optional-dependencies"
]


def declared_extras(path: Path) -> tuple[str, ...]:
    """The extras an example declares in its ``# extras: a, b`` line."""
    found = re.search(r"^# extras: (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    return tuple(name.strip() for name in found.group(1).split(",")) if found else ()


def example_params() -> list[object]:
    return [
        pytest.param(path, id=path.name, marks=pytest.mark.extras(*declared_extras(path)))
        for path in EXAMPLES
    ]


# Lines each example must print; an example not listed here must still run and exit 0.
EXPECTED = {
    "first_referral.py": [
        "intake: referral id-1 is draft, missing: medical-history",
        "accepted: urgent referral, due by 2026-01-07",
        "completed: status completed, version 7",
        "history: 13 events",
        "  2026-01-09 09:00 seen -> completed",
        "replay of the history equals the stored referral",
    ],
    "custom_policy.py": [
        "REQ-ADULT: routine, due by 2026-01-26 09:00 (rules: requested-routine)",
        "REQ-CHILD: urgent, due by 2026-01-07 09:00 (rules: requested-routine, under-18-urgent)",
        "worklist first: REQ-CHILD",
    ],
    "property_test_rules.py": ["all rule properties hold"],
    "fhir_exchange.py": [
        "intake: ref-1 from http://clinic.example/orders|ORD-204 for cardiology",
        "coverage: PPO, decision covered",
        "again: ref-1 (the same referral)",
        "Task: in-progress, BSeR 5.1.1 Service Request Event Scheduled",
        "round trip: True",
        "refused: entry[1].resource.birthDate: required, missing",
    ],
}


def run_script(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``path`` in a fresh interpreter, warnings as errors, from the repository root."""
    return subprocess.run(
        [sys.executable, "-W", "error", str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class TestExamples:
    def test_every_expected_example_exists(self):
        """Each example with promised output is in examples/, so none is silently skipped."""
        assert set(EXPECTED) <= {path.name for path in EXAMPLES}

    @pytest.mark.parametrize("path", example_params())
    def test_example_runs_and_prints_what_it_promises(self, path: Path):
        """The script exits 0, writes nothing to stderr, and prints its expected lines."""
        result = run_script(path)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        lines = result.stdout.splitlines()
        for expected in EXPECTED.get(path.name, []):
            assert expected in lines

    @pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
    def test_an_example_needing_an_extra_says_so(self, path: Path):
        """Each declared extra is one of pyproject's, and the docstring tells the reader how
        to install it."""
        text = path.read_text(encoding="utf-8")
        for name in declared_extras(path):
            assert name in PYPROJECT_EXTRAS
            assert f'pip install ".[{name}]"' in text

    def test_the_declarations_are_read(self):
        """The examples that need an extra are known (so a broken parser cannot hide one)."""
        declared = {path.name: declared_extras(path) for path in EXAMPLES}
        assert declared["property_test_rules.py"] == ("test",)
        assert declared["fhir_exchange.py"] == ("fhir",)
        assert declared["first_referral.py"] == ()


class TestCoreBenchmark:
    def test_quick_run_prints_the_table(self):
        """``bench_core.py --quick`` runs in seconds and prints the Markdown table with every
        measured row, including the python-statemachine baselines."""
        result = run_script(ROOT / "benchmarks" / "bench_core.py", "--quick")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert (
            "| check | operation | median µs/op | best µs/op | vs baseline | target | met |" in out
        )
        assert "`TABLE.allows(status, event)`" in out
        assert "`TABLE.next_status(referral, event)`" in out
        assert "python-statemachine: `send` on a pre-built machine" in out
        assert out.count("| baseline |") == 2
        assert "intake → send → accept → schedule → record_visit → complete" in out
        assert "checked: every table answer equals python-statemachine's" in out
        assert "× faster (" in out  # a speed-up per pair: median (min–max)
        assert "load average" in out

    def test_quick_run_needs_no_hypothesis(self):
        """The core benchmark runs with ``hypothesis`` unimportable: it needs no test extra."""
        code = (
            "import runpy, sys; sys.modules['hypothesis'] = None; "
            f"sys.argv = ['bench_core.py', '--quick']; "
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'bench_core.py')!r}, run_name='__main__')"
        )
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "checked:" in result.stdout

    def test_a_wrong_path_is_reported(self):
        """A store that does not hold what the paths made is a wrong result: a missing
        referral, or one whose snapshot differs from the desk's."""
        import importlib.util

        import referralkit as rk

        spec = importlib.util.spec_from_file_location("bench_core", BENCH_CORE)
        assert spec is not None
        assert spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        store = rk.open_store("memory://")
        desk = rk.ReferralDesk(store, clock=bench.FakeClock(bench.START))
        done = [bench.path(desk, request) for request in bench.complete_requests(2)]
        bench.check_paths(store, done, 2)
        assert bench.wrong == []
        bench.check_paths(store, done, 3)
        assert bench.wrong == ["whole path: 2 stored, 2 done, 3 expected"]
        bench.wrong.clear()
        other = rk.ReferralDesk(rk.open_store("memory://"), clock=bench.FakeClock(bench.START))
        bench.check_paths(store, [bench.path(other, bench.complete_requests(1)[0])], 2)
        assert bench.wrong[-1].endswith("is not in the store")
        assert bench.main(["--quick"]) == 1
