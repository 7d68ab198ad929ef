"""Memory of the event evaluators stays bounded (issue 9, item 18).

durable-rules keeps each session in C memory (about 260 KB each with the shipped rules) and
used to lose it on every host rebuild past its 1,024-session limit (about 260 MB per rebuild,
2.1 GB after 8) and for every engine dropped with open referrals. These tests measure the
process's resident memory (``VmRSS``) while 10,000 referrals go through an engine, while
engines are created and dropped, and across forced rebuilds, and bound its growth. Each
scenario runs in a fresh interpreter, so what earlier tests registered on the process's
durable host does not blur the figure. Measured
on the development machine: 9,000 referrals after a 1,000-referral warm-up +0.6 MB (durable)
and +0.0 MB (python); 25 dropped engines with 100 open referrals each +0.0 MB (was about
+26 MB per engine, 1,083 MB after 40); 4 rebuilds with 1,000 live sessions +9 MB in all (was
+264 MB per rebuild, 2,406 MB after 8).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from referralkit.model import ReferralEvent
from referralkit.rules.durable import runtime
from referralkit.rules.loader import load
from referralkit.rules.model import Ruleset
from referralkit.rules.timeline import EventRules

STATUS = Path("/proc/self/status")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not STATUS.exists(), reason="reads VmRSS from /proc (Linux)"),
]

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
MB = 1024 * 1024


def rss() -> int:
    """The resident set size of this process, in bytes, after a full collection."""
    gc.collect()
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")  # pragma: no cover


def shipped() -> Ruleset:
    return load(str(resources.files("referralkit.rules") / "data" / "event-10-cms-0057-f.toml"))


@pytest.fixture(scope="module")
def cms() -> Ruleset:
    return shipped()


def history(referral_id: str, start: dt.datetime, *, closed: bool) -> list[ReferralEvent]:
    """A referral's events as the desk writes them: assessed, received, authorization
    requested (expedited), accepted, and (when ``closed``) completed."""
    rows: list[tuple[dt.datetime, str, dict[str, Any]]] = [
        (start, "urgency_assessed", {"assessment": {"priority": "urgent", "due_by": None}}),
        (start, "status_changed", {"event": "send", "source": "draft", "target": "received"}),
        (start + H, "authorization_changed", {"authorization": {"status": "requested"}}),
        (
            start + 2 * H,
            "status_changed",
            {"event": "accept", "source": "received", "target": "accepted"},
        ),
    ]
    rows[0][2]["assessment"]["due_by"] = (start + 48 * H).isoformat()
    rows[2][2]["authorization"]["expedited"] = True
    if closed:
        rows.append(
            (
                start + 90 * H,
                "status_changed",
                {"event": "o", "source": "accepted", "target": "completed"},
            )
        )
    return [
        ReferralEvent(referral_id, version, 0, at, "desk", kind, payload)
        for version, (at, kind, payload) in enumerate(rows, start=1)
    ]


def run_referrals(engine: EventRules, prefix: str, count: int) -> None:
    """Observe each referral, ask what is due, then observe its closing event."""
    for i in range(count):
        rid = f"{prefix}-{i}"
        start = T0 + dt.timedelta(minutes=i)
        events = history(rid, start, closed=True)
        engine.observe(rid, events[:-1])
        assert [a.rule_id for a in engine.due(rid, start + 80 * H)] == [
            "not-scheduled-in-urgency-window",
            "auth-decision-overdue-expedited",
        ]
        engine.observe(rid, events)


@pytest.mark.parametrize(
    "engine_name", ["python", pytest.param("durable", marks=pytest.mark.durable)]
)
def test_ten_thousand_referrals_in_bounded_memory(cms: Ruleset, engine_name: str) -> None:
    """10,000 referrals through one engine, each closed by its terminal status: after the
    first 1,000 (which fill the engine's sessions) memory grows by less than 20 MB, and the
    durable host is never rebuilt."""
    engine = EventRules(cms, engine=engine_name, max_sessions=200)  # type: ignore[arg-type]
    rebuilds = runtime().rebuilds if engine_name == "durable" else 0
    run_referrals(engine, "warm", 1_000)
    before = rss()
    run_referrals(engine, "bulk", 9_000)
    growth = rss() - before
    print(f"{engine_name}: 9,000 referrals after warm-up: {growth / MB:+.1f} MB")
    assert growth < 20 * MB
    assert engine.open == frozenset()
    assert engine.sessions == 0
    if engine_name == "durable":
        assert runtime().rebuilds == rebuilds


def dropped_engines() -> dict[str, Any]:
    """30 engines, each dropped with 100 referrals still open."""
    rt = runtime()
    ruleset = shipped()
    before = 0
    for k in range(30):
        engine = EventRules(ruleset, engine="durable", max_sessions=100)
        for i in range(100):
            rid = f"dropped-{k}-{i}"
            engine.observe(rid, history(rid, T0, closed=False))
        del engine
        if k == 4:
            before = rss()
    return {"growth": rss() - before, "rebuilds": rt.rebuilds}


def rebuilds() -> dict[str, Any]:
    """Four forced rebuilds, each with 1,000 live sessions (after one to warm up)."""
    rt = runtime()
    engine = EventRules(shipped(), engine="durable", max_sessions=1_000)

    def fill(round_: int) -> None:
        for i in range(1_000):
            rid = f"rebuild-{round_}-{i}"
            engine.observe(rid, history(rid, T0, closed=False))

    fill(0)
    rt.rebuild()
    fill(1)
    before = rss()
    for round_ in range(2, 6):
        rt.rebuild()
        fill(round_)
    growth = rss() - before
    right = [a.rule_id for a in engine.due("rebuild-5-7", T0 + 80 * H)]
    for round_ in range(6):
        for i in range(1_000):
            engine.close(f"rebuild-{round_}-{i}")
    return {"growth": growth, "sessions": engine.sessions, "due": right}


def in_fresh_interpreter(scenario: str) -> dict[str, Any]:
    """Run a scenario of this module in a new Python process; its result, as JSON."""
    code = (
        "import json, runpy, sys; "
        f"ns = runpy.run_path({str(Path(__file__))!r}); "
        f"print(json.dumps(ns[{scenario!r}]()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.durable
def test_dropped_engines_do_not_keep_their_sessions() -> None:
    """30 engines, each dropped with 100 referrals still open: their durable sessions are
    deleted (each engine used to leave about 26 MB behind, and every fourth caused a
    rebuild); memory grows by less than 20 MB after the first five, with no rebuild."""
    result = in_fresh_interpreter("dropped_engines")
    print(f"25 dropped engines after warm-up: {result['growth'] / MB:+.1f} MB")
    assert result["growth"] < 20 * MB
    assert result["rebuilds"] == 0


@pytest.mark.durable
def test_a_rebuild_gives_back_the_old_hosts_memory() -> None:
    """Four forced rebuilds, each with 1,000 live sessions: the old host's sessions and
    rulesets are freed (each rebuild used to keep about 260 MB), so memory grows by less than
    40 MB over all four, and the engine answers as before."""
    result = in_fresh_interpreter("rebuilds")
    print(f"4 rebuilds with 1,000 live sessions: {result['growth'] / MB:+.1f} MB")
    assert result["growth"] < 40 * MB
    assert result["sessions"] == 0
    assert result["due"] == ["not-scheduled-in-urgency-window", "auth-decision-overdue-expedited"]
