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


# -- the stratified random sample (--sample) ---------------------------------------------------

NAMES = [f"referralkit.rules.alpha.x_f__mutmut_{i}" for i in range(1, 101)]


def test_sample_size_is_a_count_or_a_fraction_of_each_module() -> None:
    assert mutation.sample_size("40", 100) == 40
    assert mutation.sample_size("40", 30) == 30  # all of a smaller module
    assert mutation.sample_size("0.1", 919) == 92  # rounded up
    assert mutation.sample_size("0.5", 1) == 1
    for bad in ("0", "-3", "1.0", "0.0", "1.5", "many"):
        with pytest.raises(ValueError, match="sample"):
            mutation.sample_size(bad, 100)


def test_the_draw_is_seeded_nested_and_independent_of_the_listing_order() -> None:
    drawn = mutation.draw(NAMES, 40, 11, "alpha")
    assert len(drawn) == len(set(drawn)) == 40
    assert set(drawn) <= set(NAMES)
    assert mutation.draw(reversed(NAMES), 40, 11, "alpha") == drawn
    assert mutation.draw(NAMES, 60, 11, "alpha")[:40] == drawn  # a larger sample extends it
    assert mutation.draw(NAMES, 40, 12, "alpha") != drawn
    assert mutation.draw(NAMES, 40, 11, "beta") != drawn  # each module its own stream
    assert drawn != sorted(NAMES)[:40]


def test_the_sample_is_recorded_grown_and_drawn_again_for_a_new_source() -> None:
    data: dict[str, object] = {"modules": {}}
    first = mutation.extend_sample(data, "alpha", NAMES, 10, 11, "s1")
    assert data["samples"] == {"alpha": {"seed": 11, "source_sha256": "s1", "names": first}}
    # a smaller size keeps what was drawn; a larger one extends it
    assert mutation.extend_sample(data, "alpha", NAMES, 5, 11, "s1") == first
    grown = mutation.extend_sample(data, "alpha", NAMES, 20, 11, "s1")
    assert grown[:10] == first
    assert len(grown) == 20
    with pytest.raises(ValueError, match="seed 11"):
        mutation.extend_sample(data, "alpha", NAMES, 20, 12, "s1")
    # a new source: new mutants, the sample is drawn again at the size asked for
    renamed = [name + "x" for name in NAMES]
    again = mutation.extend_sample(data, "alpha", renamed, 5, 12, "s2")
    assert len(again) == 5
    assert set(again) <= set(renamed)


def test_wilson_interval() -> None:
    low, high = mutation.wilson(38, 40)
    assert low == pytest.approx(0.8350, abs=1e-4)  # Wilson's interval for 38 of 40
    assert high == pytest.approx(0.9862, abs=1e-4)
    low, high = mutation.wilson(40, 40)
    assert low == pytest.approx(0.9124, abs=1e-4)
    assert high == 1.0
    assert mutation.wilson(0, 10)[0] == 0.0
    assert mutation.wilson(0, 0) == (0.0, 1.0)


def _judged(caught: int, survived: int, seed: int = 11) -> tuple[dict[str, str], list[str]]:
    drawn = mutation.draw(NAMES, caught + survived, seed, "alpha")
    verdicts = dict.fromkeys(drawn[:caught], "killed")
    verdicts.update(dict.fromkeys(drawn[caught:], "survived"))
    return verdicts, drawn


def test_a_complete_module_has_its_exact_score() -> None:
    verdicts = dict.fromkeys(NAMES[:90], "killed")
    verdicts.update(dict.fromkeys(NAMES[90:99], "survived"))
    verdicts[NAMES[99]] = "skipped"  # outside the score
    estimate = mutation.estimate(verdicts, [], 100)
    assert estimate.exact
    assert (estimate.tested, estimate.caught, estimate.survived) == (99, 90, 9)
    assert estimate.score == estimate.low == estimate.high == pytest.approx(90 / 99)


def test_a_sampled_module_is_estimated_from_its_sample_only() -> None:
    verdicts, drawn = _judged(36, 4)
    # verdicts outside the sample (here: in mutmut's order, not drawn) do not move the estimate
    for name in NAMES:
        if name not in drawn and len(verdicts) < 50:
            verdicts[name] = "killed"
    estimate = mutation.estimate(verdicts, drawn, 100)
    assert not estimate.exact
    assert estimate.score == pytest.approx(0.9)
    assert (estimate.sampled, estimate.drawn, estimate.tested) == (40, 40, 50)
    # finite-population correction: 40 of 100 drawn is worth more than 40 draws of infinitely many
    effective = 40 * 99 / 60
    assert (estimate.low, estimate.high) == pytest.approx(
        mutation.wilson(0.9 * effective, effective)
    )
    plain = mutation.wilson(36, 40)
    assert plain[0] < estimate.low < 0.9 < estimate.high < plain[1]


def test_what_is_certain_bounds_the_interval() -> None:
    # 95 of 100 judged, all caught, two of them sampled: the score is at least 95%
    verdicts = dict.fromkeys(NAMES[:95], "killed")
    estimate = mutation.estimate(verdicts, NAMES[:2], 100)
    assert estimate.low == pytest.approx(0.95)
    assert estimate.high == pytest.approx(1.0)
    # the two sampled caught, 50 outside the sample survived: at most 50%
    verdicts = {**dict.fromkeys(NAMES[:2], "killed"), **dict.fromkeys(NAMES[2:52], "survived")}
    estimate = mutation.estimate(verdicts, NAMES[:2], 100)
    assert estimate.score == estimate.high == pytest.approx(0.5)  # the sample's 100% cut too


def test_a_module_with_no_judged_sample_has_no_estimate() -> None:
    estimate = mutation.estimate({}, NAMES[:5], 100)
    assert estimate.score is None
    assert estimate.low is None
    assert (estimate.drawn, estimate.sampled) == (5, 0)
    assert mutation.overall([estimate]).score is None


def test_overall_weights_the_modules_by_their_mutants() -> None:
    exact = mutation.estimate(
        {f"b{i}": "killed" if i < 80 else "survived" for i in range(100)}, [], 100
    )
    verdicts, drawn = _judged(36, 4)
    sampled = mutation.estimate(verdicts, drawn, 100)
    total = mutation.overall([exact, sampled, mutation.estimate({}, [], 0)])  # 0 mutants: no weight
    assert not total.exact
    assert total.score == pytest.approx((0.8 + 0.9) / 2)
    assert total.mutants == 200
    assert (total.tested, total.caught, total.survived) == (140, 116, 24)
    assert total.low is not None
    assert total.high is not None
    assert total.low < total.score < total.high
    # the exact module adds no uncertainty: narrower than the sampled module's own interval
    assert total.high - total.low < sampled.high - sampled.low  # type: ignore[operator]
    both_exact = mutation.overall([exact, exact])
    assert both_exact.exact
    assert both_exact.score == both_exact.low == pytest.approx(0.8)


def test_the_sampled_report_reads_from_the_verdicts_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _project(tmp_path, "def f():\n    return 1\n")
    here = {**mutation.identity("alpha"), "mutmut": "3.8.1"}
    verdicts, _ = _judged(36, 4)
    codes = dict.fromkeys(NAMES)
    codes.update({name: 1 if v == "killed" else 0 for name, v in verdicts.items()})
    data = mutation.merge({"modules": {}}, "alpha", here, codes)
    mutation.extend_sample(data, "alpha", NAMES, 40, 11, here["source_sha256"])
    mutation.write_verdicts(data)
    report = ["--report", "--progress", str(tmp_path / "p.md")]
    assert mutation.main(report) == 0  # 90.0% is not under 90%
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| alpha | 100 | 40 |"))
    assert "| 36 | 4 | 40/40 | 90.0% |" in row
    assert "estimated from 40 sampled mutants" in out
    assert mutation.main([*report, "--fail-under", "95"]) == 1
    # the sample no longer holds once the source changes: no estimate
    _project(tmp_path, "def f():\n    return 2\n")
    capsys.readouterr()
    assert mutation.main(report) == 0
    assert "| alpha | 0 | 0 | 0 | 0 | 0/0 | – | – |" in capsys.readouterr().out


def test_the_estimate_reads_the_judged_head_of_the_sample_only() -> None:
    drawn = mutation.draw(NAMES, 40, 11, "alpha")
    # the first 10 judged (9 caught), a gap, then 20 more judged in mutmut's order, all caught
    verdicts = dict.fromkeys(drawn[:9], "killed")
    verdicts[drawn[9]] = "survived"
    verdicts.update(dict.fromkeys(drawn[11:31], "killed"))
    estimate = mutation.estimate(verdicts, drawn, 100)
    assert (estimate.sampled, estimate.drawn) == (10, 40)
    assert estimate.score == pytest.approx(0.9)
    assert (estimate.tested, estimate.caught) == (30, 29)  # every verdict still counts here


def test_a_sampled_run_passes_mutmut_the_unjudged_head_of_each_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _project(tmp_path, "def f():\n    return 1\n")
    _meta(tmp_path, dict.fromkeys(NAMES))
    runs: list[list[str]] = []

    def fake_mutmut(arguments: list[str]) -> int:  # judges what it is given: killed
        names = arguments[3:]
        runs.append(names)
        codes = mutation.codes_of("alpha")
        codes.update(dict.fromkeys(names, 1))
        mutation.save_codes("alpha", codes)
        return 0

    monkeypatch.setattr(mutation, "mutmut", fake_mutmut)
    common = ["--max-children", "2", "--progress", str(tmp_path / "p.md")]
    assert mutation.main([*common, "--sample", "5", "--seed", "3"]) == 0
    drawn = mutation.draw(NAMES, 5, 3, "alpha")
    assert runs == [sorted(drawn)]
    recorded = mutation.read_verdicts()
    assert recorded["samples"]["alpha"]["names"] == drawn
    assert recorded["modules"]["alpha"]["verdicts"] == dict.fromkeys(drawn, "killed")
    assert "| alpha | 100 | 5 | 5 | 0 | 5/5 | 100.0% |" in capsys.readouterr().out
    # a smaller size keeps the recorded sample and finds nothing left to run in its head
    assert mutation.main([*common, "--sample", "3", "--seed", "3"]) == 0
    assert len(runs) == 1
    # a larger one extends it: only the new names run
    assert mutation.main([*common, "--sample", "8", "--seed", "3"]) == 0
    assert runs[1] == sorted(mutation.draw(NAMES, 8, 3, "alpha")[5:])
    # another seed is refused while this sample holds
    with pytest.raises(SystemExit):
        mutation.main([*common, "--sample", "8", "--seed", "4"])


def test_a_retested_module_outside_only_is_judged_in_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--retest beta --only alpha``: beta's survivors are judged again and recorded by this
    run, with or without ``--sample`` (they used to wait for the driver's next start)."""
    monkeypatch.chdir(tmp_path)
    _project(tmp_path, "def f():\n    return 1\n")
    (tmp_path / "src/referralkit/rules/beta.py").write_text("def g():\n    return 1\n")
    beta = [f"referralkit.rules.beta.x_g__mutmut_{i}" for i in (1, 2)]
    _meta(tmp_path, {A: 1, B: 1})
    meta = tmp_path / "mutants/src/referralkit/rules/beta.py.meta"
    meta.write_text(json.dumps({"exit_code_by_key": {beta[0]: 1, beta[1]: 0}}), encoding="utf-8")
    runs: list[list[str]] = []

    def fake_mutmut(arguments: list[str]) -> int:  # kills what it is given
        names = arguments[3:]
        runs.append(names)
        for module in ("alpha", "beta"):
            codes = mutation.codes_of(module)
            codes.update({n: 1 for n in names if n in codes})
            mutation.save_codes(module, codes)
        return 0

    monkeypatch.setattr(mutation, "mutmut", fake_mutmut)
    common = ["--max-children", "2", "--progress", str(tmp_path / "p.md"), "--only", "alpha"]
    recorded = mutation.read_verdicts()
    for module in ("alpha", "beta"):
        mutation.sync(recorded, module)
    mutation.write_verdicts(recorded)
    assert mutation.read_verdicts()["modules"]["beta"]["verdicts"][beta[1]] == "survived"

    assert mutation.main([*common, "--retest", "beta"]) == 0
    assert runs == [[beta[1]]]
    assert mutation.read_verdicts()["modules"]["beta"]["verdicts"][beta[1]] == "killed"

    codes = mutation.codes_of("beta")  # the survivor back, then the sampled path
    codes[beta[1]] = 0
    mutation.save_codes("beta", codes)
    recorded = mutation.read_verdicts()
    mutation.sync(recorded, "beta", again=True)
    mutation.write_verdicts(recorded)
    _meta(tmp_path, {A: 1, B: 1})
    meta.write_text(json.dumps({"exit_code_by_key": {beta[0]: 1, beta[1]: 0}}), encoding="utf-8")
    recorded = mutation.read_verdicts()
    mutation.sync(recorded, "beta")
    mutation.write_verdicts(recorded)
    assert mutation.main([*common, "--retest", "beta", "--sample", "2"]) == 0
    assert runs[-1] == [beta[1]]
    assert mutation.read_verdicts()["modules"]["beta"]["verdicts"][beta[1]] == "killed"
