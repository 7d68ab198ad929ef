"""bench_coordination.py's worklist part, quick: it builds its stores in bulk, checks the
head against the slow ranking, and prints its table (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_worklist_run_checks_its_head(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            str(ROOT / "benchmarks" / "bench_coordination.py"),
            "--quick",
            "--worklist-only",
            "--no-postgres",
            "--worklist-referrals",
            "600",
            "--worklist-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| `desk.worklist(limit=50)`, SQLite |" in result.stdout
    assert "load average at end" in result.stdout
    assert (tmp_path / "worklist-600.db").exists()
    # bench_scale.py measures the cloned store as it is: load by id and the ranked worklist,
    # checked (same head each call, in rank order, keys as assess gives them)
    url = f"sqlite:///{tmp_path / 'worklist-600.db'}"
    measured = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            str(ROOT / "benchmarks" / "bench_scale.py"),
            "--stores",
            f"600={url}",
            "--measures",
            "load,ranked",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert measured.returncode == 0, measured.stderr
    assert "| SQLite | load by id | 600 |" in measured.stdout
    assert "| SQLite | worklist top-50, ranked (`desk.worklist`, cold desk) | 600 |" in (
        measured.stdout
    )
    wrong_size = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_scale.py"),
            "--stores",
            f"601={url}",
            "--measures",
            "load",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert wrong_size.returncode == 1
    assert "600 referrals stored, 601 given" in wrong_size.stderr


def run_quick(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            str(ROOT / "benchmarks" / "bench_coordination.py"),
            "--quick",
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_quick_store_audit_checks_it_against_the_reference(tmp_path: Path) -> None:
    """The store audit is timed paired with the reference audit, which must agree."""
    result = run_quick(
        "--audit-only", "--worklist-referrals", "300", "--worklist-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "| `desk.audit` (`audit_all(store._audit_histories(AUDIT_EVENT_TYPES" in result.stdout
    assert "load average at end" in result.stdout


def test_quick_sweep_checks_it_against_the_reference() -> None:
    """The sweeps are timed paired with reference sweeps on a copy, which must agree."""
    result = run_quick("--sweep-only", "--sweep-referrals", "300")
    assert result.returncode == 0, result.stderr
    assert "| `desk.sweep`, python evaluator, 300 stored |" in result.stdout
