"""benchmarks/bench_directory.py at a tiny size: every part runs, checks its results and
prints its row; ``--check`` exits 1 on a missed target, and 0 without it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_directory.py"
TINY = ["--rows", "300", "--roles", "400", "--queries", "4", "--pairs", "1"]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_directory", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_part_runs_and_prints_its_row(capsys: pytest.CaptureFixture[str]) -> None:
    """NPPES (both paths compared row for row), match in memory, SQLite and PostgreSQL
    (each stored result checked equal to memory's) and FHIR find + book each print their
    row."""
    bench = load_bench()
    assert bench.main([*TINY, "--quick"]) == 0
    out = capsys.readouterr().out
    parts = ("NPPES → SQLite", "match (memory)", "match (sqlite)", "FHIR find + book")
    for part in parts:
        assert f"| {part} |" in out
    assert "| match (postgres) |" in out or "PostgreSQL not measured" in out
    assert "paired with memory: ratio" in out
    assert "load " in out


def test_check_fails_on_a_missed_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--check`` a missed target exits 1; without it the run succeeds."""
    bench = load_bench()
    monkeypatch.setitem(bench.TARGETS, "fhir_overhead_ms", 0.0)
    assert bench.main(["--only", "fhir", "--quick", "--check"]) == 1
    assert bench.main(["--only", "fhir", "--quick"]) == 0
    assert "**no**" in capsys.readouterr().out


def test_check_fails_on_a_missed_match_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The p95 target holds for every directory, stored ones too: missed, ``--check``
    exits 1."""
    bench = load_bench()
    monkeypatch.setitem(bench.TARGETS, "match_p95_ms", 0.0)
    assert bench.main(["--only", "match", *TINY, "--postgres", "", "--check"]) == 1
    out = capsys.readouterr().out
    assert "| match (sqlite) |" in out
    assert "| match (postgres) |" not in out


def test_the_two_nppes_paths_are_compared(tmp_path: Path) -> None:
    """same_tables tells directories that differ by one row apart."""
    bench = load_bench()
    from referralkit.directory import Practitioner, open_directory

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    for path, name in ((a, "Dr A"), (b, "Dr B")):
        directory = open_directory(f"sqlite:///{path}")
        directory.add([Practitioner("p1", name)])
        directory.close()
    assert bench.same_tables(a, a)
    assert not bench.same_tables(a, b)
