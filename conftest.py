"""Optional extras in documented snippets and examples.

The README's first command installs referralkit without extras (``pip install .``), and every
snippet in the README and the docs, and every example, must run after it. A snippet that needs
an extra says so in the text around it and carries a doctest flag naming the extra
(``# doctest: +EXTRA_FHIR``); an example script says so in its docstring and in a line
``# extras: fhir``, which ``tests/test_examples.py`` turns into the ``extras`` marker.

By default the flags change nothing: every snippet runs, and one whose extra is missing fails
with the ImportError that names the extra. ``pytest --skip-missing-extras`` (the ``snippets``
nox session, which installs referralkit alone) skips exactly the flagged snippets and marked
examples whose extra is not installed, counts them, and still fails on any other snippet.

This file is loaded for every path pytest collects here (README.md, docs/, tests/, src/), and
imports nothing beyond the standard library and pytest, so that it loads without the extras.
"""

from __future__ import annotations

import collections
import doctest
import importlib.util
from collections.abc import Iterable

import pytest

# Each extra of pyproject.toml's [project.optional-dependencies] that a snippet may need, and
# the modules whose absence means it is not installed (tests/test_examples.py checks that the
# names are pyproject's).
EXTRAS: dict[str, tuple[str, ...]] = {
    "analytics": ("pandas", "pyarrow", "matplotlib"),
    "fhir": ("fhir.resources",),
    "postgres": ("psycopg", "psycopg_pool"),
    "test": ("hypothesis",),
}

# +EXTRA_ANALYTICS, +EXTRA_FHIR, +EXTRA_POSTGRES, +EXTRA_TEST; Sphinx's doctest builder
# registers the same flags in docs/conf.py, and hides them in the HTML (trim_doctest_flags)
FLAGS: dict[int, str] = {
    doctest.register_optionflag(f"EXTRA_{name.upper()}"): name for name in EXTRAS
}

# +DURABLE_RULES: the example runs the durable engine. durable-rules is a dependency where it
# builds (not on Python 3.13, DESIGN §5), so where it is missing the example is skipped, and
# counted, in every run; the pure-Python twins' examples run everywhere.
DURABLE_RULES = doctest.register_optionflag("DURABLE_RULES")

# (what, extras, node id) -> how many were skipped
_skipped: collections.Counter[tuple[str, str, str]] = collections.Counter()


def missing_extras(names: Iterable[str]) -> list[str]:
    """The extras among ``names`` that are not installed (an unknown name is an error)."""
    missing = []
    for name in names:
        if name not in EXTRAS:
            raise pytest.UsageError(f"unknown extra {name!r}; known: {', '.join(EXTRAS)}")
        if any(_absent(module) for module in EXTRAS[name]):
            missing.append(name)
    return missing


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # the parent package (fhir of fhir.resources) is absent
        return True


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--skip-missing-extras",
        action="store_true",
        help="skip the doc snippets flagged +EXTRA_<NAME> and the examples marked "
        "extras(name) whose extra is not installed, and count them",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "extras(name, ...): needs these optional extras; skipped when one is missing under "
        "--skip-missing-extras",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _absent("durable"):
        for item in items:
            test = getattr(item, "dtest", None)
            if isinstance(test, doctest.DocTest):
                for example in test.examples:
                    if example.options.get(DURABLE_RULES):
                        example.options[doctest.SKIP] = True
                        _skipped[("snippet", "durable-rules", item.nodeid)] += 1
    if not config.getoption("--skip-missing-extras"):
        return
    for item in items:
        marker = item.get_closest_marker("extras")
        if marker is not None and (missing := missing_extras(marker.args)):
            reason = f"needs the {', '.join(missing)} extra, not installed"
            item.add_marker(pytest.mark.skip(reason=reason))
            _skipped[("test", ", ".join(missing), item.nodeid)] += 1
        test = getattr(item, "dtest", None)
        if isinstance(test, doctest.DocTest):
            for example in test.examples:
                needs = [name for flag, name in FLAGS.items() if example.options.get(flag)]
                if missing := missing_extras(needs):
                    example.options[doctest.SKIP] = True
                    _skipped[("snippet", ", ".join(missing), item.nodeid)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _skipped:
        return
    terminalreporter.section("skipped for a missing extra")
    for (kind, extras, nodeid), count in sorted(_skipped.items()):
        plural = "s" * (count > 1)
        terminalreporter.write_line(f"{count:4} {kind}{plural} needing {extras}: {nodeid}")
    terminalreporter.write_line(f"{sum(_skipped.values()):4} in all")
