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
