"""Development sessions: ``nox`` runs the tests on Python 3.11 and 3.13, the documented
snippets on a bare install, lint, typecheck and docs; ``nox -s slow`` (the soak and scale runs),
``nox -s bench`` and ``nox -s demo`` on request."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

# pyproject.toml claims 3.11 to 3.13: the oldest and the newest are tested. durable-rules does
# not install on 3.13 (DESIGN §5), so the durable engine's own code runs only on 3.11, and the
# coverage bar applies to that run.
PYTHONS = ["3.11", "3.13"]
COVERAGE_PYTHON = "3.11"

nox.options.sessions = ["tests", "snippets", "lint", "typecheck", "docs"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

LINTED = [
    "src",
    "tests",
    "benchmarks",
    "examples",
    "docs/conf.py",
    "docs/_ext",
    "noxfile.py",
    "conftest.py",
]

# What the snippets session must not have: the modules of the optional extras.
EXTRA_MODULES = (
    "hypothesis",
    "fhir",
    "pydantic",
    "psycopg",
    "psycopg_pool",
    "httpx",
    "pandas",
    "pyarrow",
    "matplotlib",
)


def _runs(python: str) -> bool:
    """Whether ``python`` on PATH starts (a pyenv shim for an unselected version does not)."""
    found = shutil.which(python)
    if found is None:
        return False
    result = subprocess.run([found, "-c", ""], capture_output=True, check=False)
    return result.returncode == 0


def _pyenv_root() -> Path:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return Path.home() / ".pyenv"
    return Path(out.stdout.strip())


def _patch(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name  # .../versions/3.13.0/bin/python3.13
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _locate_pythons(versions: list[str]) -> list[str]:
    """Put an interpreter for each version on PATH, for nox to find; the versions not found.

    pyenv installs them as ``$(pyenv root)/versions/X.Y.Z/bin/pythonX.Y``, where nox does not
    look, and pyenv's shims answer only for the selected version; the newest patch release of
    each version is taken.
    """
    missing = []
    for version in versions:
        if _runs(f"python{version}"):
            continue
        pattern = str(_pyenv_root() / "versions" / f"{version}.*" / "bin" / f"python{version}")
        found = sorted(glob.glob(pattern), key=_patch)
        if found:
            os.environ["PATH"] = os.pathsep.join([str(Path(found[-1]).parent), os.environ["PATH"]])
        else:
            missing.append(version)
    return missing


if _missing := _locate_pythons(PYTHONS):
    message = (
        f"nox: no Python {', '.join(_missing)} on PATH nor under {_pyenv_root()}/versions; "
        f"the tests run on {' and '.join(PYTHONS)} (install with: pyenv install {_missing[0]})"
    )
    if os.environ.get("CI", "").lower() == "true":
        sys.exit(message)  # before any session runs: CI fails at once, and says why
    print(message, file=sys.stderr)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """pytest with doctests (src, docs, README); on 3.11 with branch coverage of at least 90%.

    The tests run on every CPU (pytest-xdist ``-n auto``; ``nox -s tests -- -n 0`` runs them in
    one process), and without the soak and scale runs marked ``slow``, which ``nox -s slow``
    runs: CI's whole run stays inside 30 minutes on a 2-CPU machine.
    """
    session.install("-e", ".[test]")
    coverage = [
        "--cov=referralkit",
        "--cov-branch",
        "--cov-report=term-missing:skip-covered",
        "--cov-fail-under=90",
    ]
    # the CI Hypothesis profile (more examples) runs once, with coverage on 3.11; 3.13 checks
    # the same properties with the dev profile, which keeps CI's run inside its time budget
    profile = {} if session.python == COVERAGE_PYTHON else {"REFERRALKIT_HYPOTHESIS_PROFILE": "dev"}
    session.run(
        "pytest",
        "--numprocesses=auto",
        "-m",
        "not slow",
        *(coverage if session.python == COVERAGE_PYTHON else []),
        *session.posargs,
        env={"CI": os.environ.get("CI", ""), **profile},
    )


@nox.session(python=COVERAGE_PYTHON)
def slow(session: nox.Session) -> None:
    """The long soak and scale runs (marked ``slow``), on request: not part of ``nox``.

    On 3.11, where durable-rules installs (the durable engine's memory soak needs it), in one
    process: the soaks measure their own process's memory and start their own workers.
    """
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "slow", *session.posargs, env={"CI": os.environ.get("CI", "")})


@nox.session
def snippets(session: nox.Session) -> None:
    """The README, the docs and the examples after the README's ``pip install .`` alone.

    referralkit is installed without extras, plus pytest to run the doctests and nothing else.
    A snippet flagged ``+EXTRA_<NAME>`` or an example declaring ``# extras:`` is skipped, and
    counted, when its extra is missing (``--skip-missing-extras``, see conftest.py); any other
    snippet that fails fails the session.
    """
    session.install(".", "pytest>=8")
    check = (
        "import importlib.util, sys; "
        f"present = [m for m in {EXTRA_MODULES!r} if importlib.util.find_spec(m)]; "
        "sys.exit(f'snippets: extras are installed: {present}' if present else 0)"
    )
    session.run("python", "-c", check)
    session.run(
        "pytest",
        "--skip-missing-extras",
        "README.md",
        "docs",
        "tests/test_examples.py",
        *session.posargs,
        env={"CI": os.environ.get("CI", "")},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/ and on a file of typical API use."""
    session.install("-e", ".[test]", "mypy>=1.11")
    session.run("mypy", "--strict", "src/referralkit")
    session.run("mypy", "--strict", "tests/typing/api.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Sphinx HTML with -n -W, then the doctest builder.

    Both builds share one doctree folder: the doctest builder reuses the pages the HTML build
    read (and the notebooks it executed) instead of reading and executing them again.
    """
    session.install("-e", ".[docs]")
    common = ["-n", "-W", "--keep-going", "-q", "-d", "docs/_build/doctrees"]
    session.run("sphinx-build", *common, "-b", "html", "docs", "docs/_build/html")
    session.run("sphinx-build", *common, "-b", "doctest", "docs", "docs/_build/doctest")


MESSAGES = "src/referralkit/messages"
CATALOGS = f"{MESSAGES}/locale"


@nox.session
def i18n(session: nox.Session) -> None:
    """Message catalogs: extract the source texts, update every language, check each compiles.

    ``pybabel extract`` reads the templates and phrase tables (``babel.cfg``) into
    ``referralkit.pot``; ``pybabel update`` merges it into every ``<lang>/.../referralkit.po``
    (new texts empty, changed ones fuzzy: translate them, then run again); ``pybabel compile
    --statistics`` checks each catalog and prints how much is translated. The package ships
    only the ``.po`` files (they are compiled in memory at first use), so the ``.mo`` files go
    to a temporary folder. ``tests/messages/test_catalogs.py`` fails while a catalog is out
    of date or Spanish is incomplete. Start a new language with
    ``nox -s i18n -- init LANG`` (``pybabel init``), then translate its ``.po`` file.
    """
    session.install("Babel>=2.12", "Jinja2>=3.1")
    pot = f"{CATALOGS}/referralkit.pot"
    session.run(
        "pybabel", "-q", "extract", "-F", "babel.cfg", "--sort-output", "--no-location",
        "--width", "100",
        "--project", "referralkit", "--copyright-holder", "referralkit developers",
        "--msgid-bugs-address", "-", "-o", pot, ".",
    )  # fmt: skip
    if session.posargs[:1] == ["init"] and len(session.posargs) == 2:
        language = session.posargs[1]
        session.run(
            "pybabel", "init", "-i", pot, "-d", CATALOGS, "-D", "referralkit", "-l", language,
            "--width", "100",
        )  # fmt: skip
    session.run(
        "pybabel", "-q", "update", "-i", pot, "-d", CATALOGS, "-D", "referralkit",
        "--ignore-obsolete", "--width", "100",
    )  # fmt: skip
    out = session.create_tmp()
    for po in sorted(Path(CATALOGS).glob("*/LC_MESSAGES/referralkit.po")):
        language = po.parts[-3]
        session.run(
            "pybabel", "compile", "--statistics", "-i", str(po), "-l", language,
            "-o", f"{out}/{language}.mo",
        )  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, printed as tables with ratios against a baseline from the same run.

    The peer engines (zen-engine 2.1.3, rule-engine, business-rules) are installed here only:
    they are measured beside referralkit on the shared peer problem, never imported by it.
    """
    session.install(
        "-e",
        ".[postgres,fhir,scheduling,analytics]",
        "zen-engine==2.1.3",
        "rule-engine",
        "business-rules",
    )
    for script in sorted(os.listdir("benchmarks")):
        if script.startswith("bench_") and script.endswith(".py"):
            session.run("python", f"benchmarks/{script}", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The demo on the embedded default store."""
    session.install("-e", ".")
    session.run("referralkit", "demo", *session.posargs)


MUTATION_SCORE = 90.0  # percent of the mutants with a verdict that the tests kill


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing of ``referralkit.rules`` with mutmut; on request only, never by default.

    mutmut 3 copies ``src/`` and ``tests/`` into ``mutants/``, mutates every module of
    ``src/referralkit/rules`` (``[tool.mutmut]`` in pyproject.toml), and runs for each mutant
    the tests of ``tests/rules/`` (and ``tests/test_rules_explain.py``) that reached the
    mutated function, with the ``mutation`` Hypothesis profile (derandomized, 10 examples).
    ``benchmarks/mutation.py`` drives it one module at a time, smallest first, and resumes
    where a stopped run left off, on this machine or another: every verdict is recorded in
    the committed ``benchmarks/mutation-verdicts.json`` (dropped for a module whose source
    changes), and commit it before a session ends. It writes the table of verdicts to
    ``mutants/mutation-progress.md`` as it goes, prints it, and fails under MUTATION_SCORE.
    ``nox -s mutation -- --only engine limits`` runs some modules, ``-- --report`` prints the
    table from the verdicts file without running anything; ``mutmut results`` lists the
    survivors and ``mutmut show NAME`` shows one. ``-- --sample 40 --seed 11`` runs only a
    seeded random sample of each module (40 mutants, or ``0.1`` for a tenth), recorded in the
    verdicts file and extended, never redrawn, by a larger size later: the table gives each
    complete module's exact score and the others' estimated from their sample, each with a
    Wilson 95% interval, and the score over all of ``rules/``, in a session.
    Durable engine mutants need durable-rules, so run it on Python 3.11. Figures, the time it
    takes and the survivors judged equivalent: benchmarks/README.md, "Mutation testing".
    """
    session.install("-e", ".[test]", "mutmut>=3.8,<4")
    session.run(
        "python",
        "benchmarks/mutation.py",
        "--max-children",
        str(os.cpu_count() or 2),
        "--fail-under",
        str(MUTATION_SCORE),
        *session.posargs,
        env={"REFERRALKIT_HYPOTHESIS_PROFILE": "mutation", "PYTHONPATH": ""},
    )
