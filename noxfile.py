"""Development sessions: ``nox`` runs tests, lint, typecheck and docs; ``nox -s bench`` and
``nox -s demo`` on request."""

from __future__ import annotations

import os
from pathlib import Path

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
    session.install("-e", ".[postgres,fhir]", "zen-engine==2.1.3", "rule-engine", "business-rules")
    for script in sorted(os.listdir("benchmarks")):
        if script.startswith("bench_") and script.endswith(".py"):
            session.run("python", f"benchmarks/{script}", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The demo on the embedded default store."""
    session.install("-e", ".")
    session.run("referralkit", "demo", *session.posargs)
