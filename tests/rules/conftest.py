"""The ``durable`` marker: a test that needs durable-rules itself (the durable engine, the
durable event evaluator, durable's own behaviour) is skipped, with the reason, only where
durable-rules is not installed. It does not build on Python 3.13; everything else, the
python evaluators included, runs there too."""

from __future__ import annotations

import pytest

from referralkit.rules.timeline import durable_available

DURABLE_MISSING = (
    "durable-rules is not installed here (it does not build on Python 3.13): this test is "
    "about the durable engine itself; the python engines' tests run everywhere"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "durable: needs durable-rules; skipped, with the reason, where it is missing"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if durable_available():
        return
    skip = pytest.mark.skip(reason=DURABLE_MISSING)
    for item in items:
        if item.get_closest_marker("durable") is not None:
            item.add_marker(skip)
