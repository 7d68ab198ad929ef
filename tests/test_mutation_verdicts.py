"""benchmarks/mutation.py's verdicts file: what is recorded, restored into mutmut's metadata,
merged, and dropped when a module's source changes (no mutmut needed, no mutant run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mutation_script", ROOT / "benchmarks" / "mutation.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mutation = _load()

A = "referralkit.rules.alpha.xǁAǁf__mutmut_1"  # mutmut's names are not ASCII
B = "referralkit.rules.alpha.xǁAǁf__mutmut_2"
C = "referralkit.rules.alpha.xǁAǁf__mutmut_3"
HERE = {"source_sha256": "s1", "tests_sha256": "t1", "mutmut": "3.8.1"}


def test_merge_records_verdicts_and_restore_gives_them_back() -> None:
    data = mutation.merge({"modules": {}}, "alpha", HERE, {A: 1, B: 0, C: None})
    entry = data["modules"]["alpha"]
    assert entry["mutants"] == 3
    assert entry["verdicts"] == {A: "killed", B: "survived"}
    codes: dict[str, int | None] = {A: None, B: None, C: None}
    assert mutation.restore(codes, mutation.valid(data, "alpha", HERE)) == 2
    assert codes == {A: 1, B: 0, C: None}


def test_restore_keeps_mutmuts_verdicts_and_runs_other_again() -> None:
    codes: dict[str, int | None] = {A: 0, B: None}
    assert mutation.restore(codes, {A: "killed", B: "other"}) == 0
    assert codes == {A: 0, B: None}


def test_merge_over_verdicts_that_hold() -> None:
    data = mutation.merge({"modules": {}}, "alpha", HERE, {A: 1, B: 0, C: None})
    # B retested and killed; A unknown locally (a fresh mutants/) keeps its recorded verdict
    mutation.merge(data, "alpha", HERE, {A: None, B: 1, C: 36})
    assert data["modules"]["alpha"]["verdicts"] == {A: "killed", B: "killed", C: "timeout"}


@pytest.mark.parametrize(
    "changed", [{"source_sha256": "s2"}, {"tests_sha256": "t2"}, {"mutmut": "3.9.0"}]
)
def test_any_change_drops_the_modules_verdicts(changed: dict[str, str]) -> None:
    data = mutation.merge({"modules": {}}, "alpha", HERE, {A: 1, B: 0, C: None})
    now = {**HERE, **changed}
    assert mutation.valid(data, "alpha", now) == {}
    mutation.merge(data, "alpha", now, {A: None, B: None, C: 1})
    assert data["modules"]["alpha"]["verdicts"] == {C: "killed"}
    assert data["modules"]["alpha"]["source_sha256"] == now["source_sha256"]


def test_an_unknown_mutmut_version_is_not_held_against_the_verdicts() -> None:
    data = mutation.merge({"modules": {}}, "alpha", HERE, {A: 1})
    assert mutation.valid(data, "alpha", {**HERE, "mutmut": None}) == {A: "killed"}


def test_forget_some_or_all() -> None:
    data = mutation.merge({"modules": {}}, "alpha", HERE, {A: 1, B: 0})
    mutation.forget(data, "alpha", [B])
    assert data["modules"]["alpha"]["verdicts"] == {A: "killed"}
    mutation.forget(data, "alpha")
    mutation.forget(data, "beta")
    assert data == {"modules": {}}


def test_read_write_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.json"
    assert mutation.read_verdicts(path) == {"modules": {}}
    data = mutation.merge({"modules": {}}, "alpha", HERE, {A: 1})
    mutation.write_verdicts(data, path)
    assert mutation.read_verdicts(path) == data
    assert A in path.read_text(encoding="utf-8")
    assert not path.with_suffix(".tmp").exists()


def _project(root: Path, source: str) -> None:
    (root / "pyproject.toml").write_text(
        '[tool.mutmut]\npytest_add_cli_args_test_selection = ["tests/rules/"]\n', encoding="utf-8"
    )
    (root / "src/referralkit/rules").mkdir(parents=True, exist_ok=True)
    (root / "src/referralkit/rules/alpha.py").write_text(source, encoding="utf-8")


def _meta(root: Path, codes: dict[str, int | None]) -> None:
    meta = root / "mutants/src/referralkit/rules"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "alpha.py.meta").write_text(json.dumps({"exit_code_by_key": codes}), encoding="utf-8")


def test_a_fresh_machine_resumes_and_a_source_change_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _project(tmp_path, "def f():\n    return 1\n")
    _meta(tmp_path, {A: 1, B: 0, C: None})
    recorded = mutation.read_verdicts()
    mutation.sync(recorded, "alpha")  # seeding from a machine's mutants/
    mutation.write_verdicts(recorded)

    # a fresh machine: mutmut made the mutants again, with no verdict
    _meta(tmp_path, {A: None, B: None, C: None})
    recorded = mutation.read_verdicts()
    mutation.sync(recorded, "alpha")
    assert mutation.codes_of("alpha") == {A: 1, B: 0, C: None}
    assert mutation.pending("alpha") == [C]

    report = ["--report", "--progress", str(tmp_path / "p.md")]
    assert mutation.main([*report, "--fail-under", "50"]) == 0
    assert mutation.main(report) == 1  # under the default 90%
    out = capsys.readouterr().out
    assert "| alpha | 3 | 1 | 0 | 0 | 1 | 0 | 0 | 1 | 50.0% | – |" in out
    assert "mutation score 50.0% (1 of 2); 1 not run yet" in out

    # the module's source changes: every verdict of it goes, in the file and in mutants/
    _project(tmp_path, "def f():\n    return 2\n")
    mutation.sync(recorded, "alpha")
    assert mutation.codes_of("alpha") == {A: None, B: None, C: None}
    assert recorded["modules"]["alpha"]["verdicts"] == {}
    assert recorded["modules"]["alpha"]["source_sha256"] == mutation.sha256_file(
        tmp_path / "src/referralkit/rules/alpha.py"
    )
