"""The first hour: what the README, the docs and the examples show runs after ``pip install .``.

``referralkit.testing`` imports without Hypothesis (its strategies and checks load on first
use); a snippet that needs an optional extra is flagged ``+EXTRA_<NAME>`` and says so in its
text; the root ``conftest.py`` skips exactly those, and counts them, under
``--skip-missing-extras`` (the ``snippets`` nox session, which installs referralkit alone).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

import referralkit.testing

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT_EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "optional-dependencies"
]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FLAG = re.compile(r"#\s*doctest:.*\+EXTRA_(\w+)")

# Installed first in a child interpreter: importing hypothesis then fails as if it were not
# installed, whatever this environment has.
NO_HYPOTHESIS = textwrap.dedent(
    """
    import sys

    class NoHypothesis:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "hypothesis":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoHypothesis())
    """
)


def without_hypothesis(code: str, *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where hypothesis cannot be imported."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", NO_HYPOTHESIS + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        # no plugin from an entry point (Hypothesis registers one with pytest)
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )


class TestTestingWithoutHypothesis:
    def test_the_readme_import_works(self) -> None:
        """``from referralkit.testing import FakeClock, sample_request`` works without
        hypothesis and does not import it; __all__ and dir() still list every name."""
        result = without_hypothesis(
            """
            import referralkit.testing as testing
            from referralkit.testing import FakeClock, sample_request
            assert "hypothesis" not in sys.modules
            assert sample_request().specialty == "cardiology"
            assert FakeClock().now().tzinfo is not None
            assert set(testing.__all__) <= set(dir(testing))
            print(len(testing.__all__))
            """
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(len(referralkit.testing.__all__))

    @pytest.mark.parametrize("name", ["referrals", "check_totality", "rulesets", "STRATEGIES"])
    def test_a_strategy_or_check_names_the_extra(self, name: str) -> None:
        """Using a strategy or a check without hypothesis raises an ImportError
        (ModuleNotFoundError for hypothesis) that names the ``test`` extra."""
        result = without_hypothesis(
            f"""
            try:
                from referralkit.testing import {name}
            except ModuleNotFoundError as error:
                assert error.name == "hypothesis", error.name
                assert error.__suppress_context__
                print(error)
            """
        )
        assert result.returncode == 0, result.stderr
        message = result.stdout.strip()
        assert message.startswith(f"referralkit.testing.{name} needs hypothesis")
        assert "'test' extra" in message
        assert "pip install '.[test]'" in message


class BlockModule(importlib.abc.MetaPathFinder):
    """A finder that fails the import of one module with ``error``."""

    def __init__(self, module: str, error: ModuleNotFoundError) -> None:
        self.module, self.error = module, error

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name == self.module:
            raise self.error
        return None


class TestLazyNames:
    @pytest.mark.parametrize("name", sorted(referralkit.testing._LAZY))
    def test_each_lazy_name_comes_from_its_module(self, name: str) -> None:
        """Every lazily imported name is defined by the module the table names."""
        module = importlib.import_module(f"referralkit.testing.{referralkit.testing._LAZY[name]}")
        assert getattr(referralkit.testing, name) is getattr(module, name)

    def test_the_eager_and_lazy_names_are_all_of_them(self) -> None:
        """The names that need only referralkit are eager; every other public name is lazy."""
        eager = set(referralkit.testing.__all__) - set(referralkit.testing._LAZY)
        assert eager == {"FakeClock", "sample_request", "nppes_rows", "write_nppes"}

    def test_an_unknown_name_is_an_attribute_error(self) -> None:
        """A name the package does not have is an AttributeError, as for any module."""
        with pytest.raises(AttributeError, match="has no attribute 'strategies'"):
            referralkit.testing.strategies  # noqa: B018

    def _forget(self, monkeypatch: pytest.MonkeyPatch, name: str, module: str) -> None:
        monkeypatch.delitem(vars(referralkit.testing), name, raising=False)
        monkeypatch.delitem(sys.modules, module, raising=False)

    def test_missing_hypothesis_becomes_a_clear_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When importing the module fails for lack of hypothesis, the error names the extra
        and does not chain the original one."""
        module = "referralkit.testing._rules"
        self._forget(monkeypatch, "conditions", module)
        missing = ModuleNotFoundError("No module named 'hypothesis'", name="hypothesis")
        monkeypatch.setattr(sys, "meta_path", [BlockModule(module, missing), *sys.meta_path])
        with pytest.raises(ModuleNotFoundError, match="'test' extra") as info:
            referralkit.testing.conditions  # noqa: B018
        assert info.value.name == "hypothesis"
        assert info.value.__cause__ is None

    def test_any_other_import_error_is_not_disguised(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A module missing for another reason raises its own error, not the extra's."""
        module = "referralkit.testing._rules"
        self._forget(monkeypatch, "conditions", module)
        other = ModuleNotFoundError("No module named 'somewhere'", name="somewhere")
        monkeypatch.setattr(sys, "meta_path", [BlockModule(module, other), *sys.meta_path])
        with pytest.raises(ModuleNotFoundError) as info:
            referralkit.testing.conditions  # noqa: B018
        assert info.value is other


def flagged(path: Path) -> set[str]:
    """The extras named by the +EXTRA_ flags in a Markdown file."""
    return {name.lower() for name in FLAG.findall(path.read_text(encoding="utf-8"))}


class TestDocumentedSnippets:
    @pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
    def test_a_snippet_needing_an_extra_says_so(self, path: Path) -> None:
        """Each flag names one of pyproject's extras, and the page tells how to install it."""
        text = path.read_text(encoding="utf-8")
        for name in flagged(path):
            assert name in PYPROJECT_EXTRAS, name
            assert f"`{name}` extra" in text, f"{path.name} does not say it needs {name}"

    @pytest.mark.parametrize(
        "name", ["README.md", "docs/tutorial.md", "docs/howto-embed.md", "docs/lifecycle.md"]
    )
    def test_the_first_hour_needs_no_extra(self, name: str) -> None:
        """The README, the tutorial and the embedding guide need nothing but ``pip install .``."""
        assert flagged(ROOT / name) == set()

    def test_the_flagged_snippets_are_found(self) -> None:
        """The pages that need an extra are the ones expected (a broken pattern hides none)."""
        needs = {str(p.relative_to(ROOT)): flagged(p) for p in DOCUMENTS if flagged(p)}
        assert needs == {
            "docs/howto-analytics.md": {"analytics"},
            "docs/howto-fhir.md": {"fhir"},
            "docs/howto-property-test.md": {"test"},
        }


class TestSkipMissingExtras:
    """The root conftest.py's --skip-missing-extras, run on pages written here."""

    @pytest.fixture
    def pages(self, tmp_path: Path) -> Path:
        shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
        (tmp_path / "flagged.md").write_text(
            "Needs the `test` extra.\n\n"
            ">>> 1 + 1\n2\n"
            ">>> from referralkit.testing import referrals  # doctest: +EXTRA_TEST\n"
            ">>> referrals  # doctest: +EXTRA_TEST\n<function ...>\n",
            encoding="utf-8",
        )
        (tmp_path / "broken.md").write_text(">>> 1 + 1\n3\n", encoding="utf-8")
        return tmp_path

    def pytest(self, pages: Path, *args: str) -> subprocess.CompletedProcess[str]:
        options = ["-p", "no:cacheprovider", "--doctest-glob=*.md", "-o", "addopts=", "-rfs"]
        return without_hypothesis(
            f"import pytest; sys.exit(pytest.main({[*options, *args]!r}))", cwd=pages
        )

    def test_flagged_snippets_are_skipped_and_counted(self, pages: Path) -> None:
        """With the option, the flagged snippets of a page are skipped (the rest of the page
        runs) and counted; an unflagged failing snippet still fails the run."""
        result = self.pytest(pages, "--skip-missing-extras", "flagged.md", "broken.md")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 failed, 1 passed" in result.stdout
        assert "skipped for a missing extra" in result.stdout
        assert "2 snippets needing test: flagged.md::flagged.md" in result.stdout
        assert "FAILED broken.md::broken.md" in result.stdout

    def test_without_the_option_nothing_is_skipped(self, pages: Path) -> None:
        """By default a flag changes nothing: the snippet runs and fails with the error that
        names the extra."""
        result = self.pytest(pages, "flagged.md")
        assert result.returncode == 1
        assert "needs hypothesis" in result.stdout
        assert "skipped for a missing extra" not in result.stdout

    def test_an_extra_that_is_installed_runs(self, pages: Path) -> None:
        """Only missing extras are skipped: a snippet flagged with an installed extra runs."""
        (pages / "flagged.md").write_text(
            ">>> import referralkit  # doctest: +EXTRA_TEST\n", encoding="utf-8"
        )
        result = subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts="),
                *("--doctest-glob=*.md", "--skip-missing-extras", "flagged.md"),
            ],
            cwd=pages,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout
        assert "skipped for a missing extra" not in result.stdout
