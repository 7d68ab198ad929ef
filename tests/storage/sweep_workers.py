"""Work done in child processes by the sweep concurrency test (test_sweep_processes.py).

Started with the ``forkserver`` method: everything here is importable by module name
(conftest.py puts this directory on ``sys.path``). Each child opens its own desk over the
store's URL, as a second scheduler on another host would.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import multiprocessing.context
import multiprocessing.synchronize
from typing import Any

from referralkit import Actor, FakeClock, ReferralDesk, Role, open_store
from referralkit.rules import load
from referralkit.rules.model import Kind
from referralkit.rules.policies import shipped_paths
from referralkit.rules.timeline import EventRules

SWEEPER = Actor("sweeper", {Role.COORDINATOR})


def context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, its server preloaded with referralkit and this module."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sweep_workers", "referralkit"])
    return ctx


def sweep(
    url: str,
    now: dt.datetime,
    engine: str,
    barrier: multiprocessing.synchronize.Barrier,
    results: Any,
) -> None:
    """Wait for the other sweeper, then sweep ``url`` as of ``now``; put what was done."""
    [path] = shipped_paths(Kind.EVENT)
    rules = EventRules(load(path), engine=engine)  # type: ignore[arg-type]
    with ReferralDesk(
        open_store(url, create=False), clock=FakeClock(now), event_rules=rules
    ) as desk:
        barrier.wait(timeout=60)
        report = desk.sweep(SWEEPER)
    results.put((len(report.raised), report.written, report.retried, report.skipped))
