"""Development sessions: ``nox`` runs tests, lint, typecheck and docs; ``nox -s bench`` and
``nox -s demo`` on request."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

LINTED = ["src", "tests", "benchmarks", "examples", "docs/conf.py", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """pytest with doctests (src, docs, README) and branch coverage of at least 90%."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "--cov=referralkit",
        "--cov-branch",
        "--cov-report=term-missing:skip-covered",
        "--cov-fail-under=90",
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
    """Sphinx HTML with -n -W, then the doctest builder."""
    session.install("-e", ".[docs]")
    common = ["-n", "-W", "--keep-going", "-q"]
    session.run("sphinx-build", *common, "-b", "html", "docs", "docs/_build/html")
    session.run("sphinx-build", *common, "-b", "doctest", "docs", "docs/_build/doctest")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, printed as tables with ratios against a baseline from the same run.

    The peer engines (zen-engine 2.1.3, rule-engine, business-rules) are installed here only:
    they are measured beside referralkit on the shared peer problem, never imported by it.
    """
    session.install("-e", ".[postgres,fhir]", "zen-engine==2.1.3", "rule-engine", "business-rules")
    for script in sorted(os.listdir("benchmarks")):
        if script.startswith("bench_") and script.endswith(".py"):
            session.run("python", f"benchmarks/{script}", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The demo on the embedded default store."""
    session.install("-e", ".")
    session.run("referralkit", "demo", *session.posargs)
