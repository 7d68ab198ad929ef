"""The peer benchmark's problem (../shared/bench/peers: 20 first-hit coverage rules written
once as data), compiled through our loader: both engines agree with the hand-written if/elif
reference on every record."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from referralkit.rules.durable import DurableEngine
from referralkit.rules.engine import PythonEngine
from referralkit.rules.loader import parse
from referralkit.rules.model import Ruleset

PEERS = Path(__file__).resolve().parents[3] / "shared" / "bench" / "peers"
RECORDS = 2_000
DAY = dt.date(2026, 1, 1)

# Outside CI the shared folder may be elsewhere; under CI (shared/ beside the clone) its
# absence is a failure, not a skip.
pytestmark = [
    pytest.mark.skipif(
        not (PEERS / "rulesdata.py").exists() and os.environ.get("CI") != "true",
        reason="the peer benchmark (../shared/bench/peers) is not checked out beside",
    ),
    pytest.mark.durable,
]


def peer_modules() -> tuple[Any, Any]:
    if str(PEERS) not in sys.path:
        sys.path.insert(0, str(PEERS))
    import handwritten  # type: ignore[import-not-found]
    import rulesdata  # type: ignore[import-not-found]

    return rulesdata, handwritten


def peer_ruleset(rulesdata: Any) -> Ruleset:
    """The peer rules in our format, translated by the benchmark's own ``peer_rules`` (one
    translation, so the test checks what the benchmark measures)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_rules.py"
    spec = importlib.util.spec_from_file_location("bench_rules", path)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return parse(
        {
            "ruleset": {"name": "peer", "kind": "coverage", "hit_policy": "first"},
            "rules": bench.peer_rules(rulesdata),
        }
    )


def test_peer_problem_has_no_mismatches_on_either_engine() -> None:
    rulesdata, handwritten = peer_modules()
    rs = peer_ruleset(rulesdata)
    records = rulesdata.make_records(RECORDS)
    expected = [handwritten.decide(r)["rule"] for r in records]
    python, durable = PythonEngine(rs), DurableEngine(rs)
    mismatches = {"python": 0, "durable": 0}
    for record, want in zip(records, expected, strict=True):
        facts = {
            "coverage.payer": record["payer"],
            "coverage.plan": record["plan_type"],
            "specialty": record["specialty"],
            "services": [record["cpt"]],
            "patient.age": record["age"],
        }
        for name, engine in (("python", python), ("durable", durable)):
            index = engine.first(facts, DAY)
            if index is None or rs.rules[index].id != want:
                mismatches[name] += 1
    assert mismatches == {"python": 0, "durable": 0}
