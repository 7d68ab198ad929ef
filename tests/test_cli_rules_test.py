"""referralkit rules test and rules facts (issue 11, item 3)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from referralkit import cli
from referralkit.rules import FACTS
from referralkit.rules.model import Kind
from referralkit.rules.policies import shipped_paths

NEW_PAYER = Path(__file__).parent / "data" / "rules" / "new_payer.toml"
FALLBACK = next(p for p in shipped_paths(Kind.COVERAGE) if p.name.endswith("fallback.toml"))


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


class TestRulesTest:
    def test_a_new_payer_file_alone_is_not_total(self) -> None:
        """The payer's file decides only its own members: totality fails, exit 1, and the
        counterexample prints as JSON with the facts that show why."""
        status, stdout, _ = run_main(["rules", "test", str(NEW_PAYER), "--examples", "60"])
        assert status == 1
        assert "failed   totality" in stdout
        start = stdout.index("{")
        example, _ = json.JSONDecoder().raw_decode(stdout[start:])
        assert example["check"] == "totality"
        assert example["facts"]["coverage.payer"] != "Cascade Health Alliance"
        assert example["referral"]["id"] == "drawn"

    def test_json_output_and_the_fallback_option(self) -> None:
        """With the shipped fallback after it the payer's policy is total; --no-fallback
        counts a decision by the catch-all alone as undecided; --json prints every result."""
        args = ["rules", "test", str(NEW_PAYER), str(FALLBACK), "--examples", "60", "--json"]
        status, stdout, _ = run_main(args)
        results = {r["check"]: r for r in json.loads(stdout)}
        assert results["totality"]["status"] == "passed"
        assert results["effective dates"]["status"] == "passed"
        assert status == (1 if any(r["status"] == "failed" for r in results.values()) else 0)
        status, stdout, _ = run_main([*args, "--no-fallback"])
        assert status == 1
        totality = next(r for r in json.loads(stdout) if r["check"] == "totality")
        assert totality["status"] == "failed"
        assert totality["counterexample"]["rules"] == ["example-fallback/manual-review"]

    def test_the_shipped_urgency_rules_pass(self) -> None:
        """Every check holds on the shipped urgency policy (exit 0); an event file is noted
        and left out."""
        urgency = [str(p) for p in shipped_paths(Kind.URGENCY)]
        events = [str(p) for p in shipped_paths(Kind.EVENT)]
        status, stdout, stderr = run_main(["rules", "test", *urgency, *events, "--examples", "40"])
        assert status == 0, stdout
        assert "passed   monotonic urgency  example-urgency" in stdout
        assert "holds event rules; not tested" in stderr

    def test_without_hypothesis_it_says_which_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without hypothesis the command names the test extra and exits 2."""
        real = importlib.import_module

        def missing(name: str, *args: Any) -> Any:
            if name == "hypothesis":
                raise ImportError(name)
            return real(name, *args)

        monkeypatch.setattr(cli.importlib, "import_module", missing)
        status, _, stderr = run_main(["rules", "test", str(NEW_PAYER)])
        assert status == 2
        assert "test extra" in stderr


class TestRulesFacts:
    def test_every_fact_with_type_and_examples(self) -> None:
        """One entry per fact of FACTS, each with its type and some example values."""
        status, stdout, _ = run_main(["rules", "facts", "--json"])
        assert status == 0
        facts = json.loads(stdout)
        assert [f["fact"] for f in facts] == list(FACTS)
        assert all(f["examples"] for f in facts)
        assert {f["fact"]: f["type"] for f in facts}["patient.age"] == "integer"
        status, text, _ = run_main(["rules", "facts"])
        assert status == 0
        assert text.splitlines()[0].startswith("patient.age")

    def test_with_files_the_values_those_rules_name(self) -> None:
        """With a rule file, the examples are the values its rules compare each fact with."""
        status, stdout, _ = run_main(["rules", "facts", str(NEW_PAYER), "--json"])
        assert status == 0
        by_fact = {f["fact"]: f["examples"] for f in json.loads(stdout)}
        assert by_fact["coverage.payer"] == ["Cascade Health Alliance"]
        assert {18, 19} <= set(by_fact["patient.age"])
        assert "95810" in by_fact["services"]
