"""Fixtures for the storage tests: PostgreSQL for real, one schema per test, and the figures
the reliability tests report.

PostgreSQL is found at ``$REFERRALKIT_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When no server answers (or psycopg is not
installed) the PostgreSQL tests are skipped with the reason, except under ``CI=true``, where
a missing server fails them: CI must run every adapter for real.

Every PostgreSQL test gets a fresh schema (``rk_test_<random>``) through the URL's
``schema`` parameter and drops it afterwards, so tests never see each other's rows and
several runs can share one database.

The reliability tests record their counts with the ``figures`` fixture; they are printed at
the end of the run (whatever ``-s``/``-q`` say) and attached to the JUnit XML as properties.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The reliability tests start worker processes with the "forkserver" and "spawn" start
# methods; the children import their worker functions from this directory by module name.
HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from storage_support import IN_CI, POSTGRES_URL, fresh_schema, postgres_unavailable  # noqa: E402


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; skips (or, under CI=true, fails) when there is none."""
    reason = postgres_unavailable()
    if reason is not None:
        message = f"PostgreSQL tests need a server at $REFERRALKIT_TEST_POSTGRES: {reason}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: a missing server is a failure, not a skip)")
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A store URL of this test's own schema (dropped after the test)."""
    with fresh_schema(postgres_url) as url:
        yield url


@pytest.fixture
def figures(record_property: Callable[[str, object], None]) -> Callable[..., None]:
    """``figures("name", count=3, ...)`` records counts for the end-of-run summary."""

    def record(name: str, **values: Any) -> None:
        for key, value in values.items():
            record_property(f"{name}.{key}", value)

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures, read from the test reports' properties: pytest-xdist's workers send their
    reports to the process that writes this summary, not their module state."""
    figures: dict[str, list[str]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for prop, value in report.user_properties:
                name, _, key = prop.rpartition(".")
                figures.setdefault(name, []).append(f"{key}={value}")
    if not figures:
        return
    terminalreporter.write_sep("=", "storage reliability figures")
    for name, shown in figures.items():
        terminalreporter.write_line(f"{name}: {', '.join(shown)}")
