"""Bulk reads stream: a dump and the KPI summary read the store in pages and write or count
as they go, so their peak memory does not grow with the store (issue 16 item 1)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from storage_support import fresh_schema

from referralkit import Actor, FakeClock, MemoryStore, ReferralDesk, Role, analytics, synth
from referralkit.storage import History, dump, open_store
from referralkit.storage import postgres as postgres_module
from referralkit.storage import sqlite as sqlite_module

SMALL, LARGE = 50, 200
AS_OF = synth.DEFAULT_START + dt.timedelta(weeks=4)


@pytest.fixture(scope="module")
def histories() -> list[History]:
    """200 referrals simulated for three weeks: histories of a dozen events on average."""
    clock = FakeClock(synth.DEFAULT_START)
    store = MemoryStore()
    desk = ReferralDesk(store, clock=clock, new_id=synth.id_factory(8))
    team = Actor("stream-coordinator", {Role.COORDINATOR})
    synth.simulate(desk, team, clock, list(synth.population(LARGE, 8)), weeks=3, seed=8)
    return list(store.export())


class Digest(io.TextIOBase):
    """A text file that keeps only a hash and a line count of what is written to it."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.lines = 0

    def write(self, text: str) -> int:
        self.hash.update(text.encode("utf-8"))
        self.lines += text.count("\n")
        return len(text)


def traced(run: Callable[[], Any]) -> tuple[int, Any]:
    """The peak traced memory of ``run()``, and what it returned."""
    tracemalloc.start()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def digest_of_dump(url: str) -> Digest:
    sink = Digest()
    with open_store(url) as store:
        dump(store, sink)
    return sink


def kpis_of(url: str) -> analytics.Kpis:
    with open_store(url) as store:
        return analytics.summary(store, AS_OF)


@contextlib.contextmanager
def sqlite_urls(tmp_path: Path, histories: list[History]) -> Iterator[dict[int, str]]:
    urls = {}
    for size in (SMALL, LARGE):
        urls[size] = f"sqlite:///{tmp_path / f'{size}.db'}"
        with open_store(urls[size]) as store:
            store.restore_many(histories[:size])
    yield urls


@contextlib.contextmanager
def postgres_urls(postgres_url: str, histories: list[History]) -> Iterator[dict[int, str]]:
    with fresh_schema(postgres_url) as small, fresh_schema(postgres_url) as large:
        urls = {SMALL: small, LARGE: large}
        for size, url in urls.items():
            with open_store(url) as store:
                store.restore_many(histories[:size])
        yield urls


def assert_flat(measure: Callable[[str], Any], urls: dict[int, str]) -> Any:
    """``measure`` of the large store peaks at under 1.5 times its peak on the small one
    (after a warm-up: imports and caches are not what is measured); its result."""
    measure(urls[SMALL])
    small, _ = traced(lambda: measure(urls[SMALL]))
    large, result = traced(lambda: measure(urls[LARGE]))
    assert large < 1.5 * small, f"peak {large / 2**20:.2f} MiB vs {small / 2**20:.2f} MiB"
    return result


class TestSQLite:
    def test_dump_peak_does_not_grow_with_the_store(
        self, histories: list[History], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A dump of 200 referrals, 10 a page, peaks at about what a dump of 50 does, and
        writes the same bytes as a dump held whole in memory."""
        monkeypatch.setattr(sqlite_module, "_EXPORT_BATCH", 10)
        with sqlite_urls(tmp_path, histories) as urls:
            sink = assert_flat(digest_of_dump, urls)
            whole = io.StringIO()
            with open_store(urls[LARGE]) as store:
                dump(store, whole)
        assert sink.lines == LARGE + 1
        assert sink.hash.hexdigest() == hashlib.sha256(whole.getvalue().encode()).hexdigest()

    def test_summary_peak_does_not_grow_with_the_store(
        self, histories: list[History], tmp_path: Path
    ) -> None:
        """The KPI summary of 200 referrals peaks at about what the summary of 50 does, and
        equals the summary of the same histories in a memory store."""
        with sqlite_urls(tmp_path, histories) as urls:
            kpis = assert_flat(kpis_of, urls)
        memory = MemoryStore()
        memory.restore_many(histories)
        assert kpis == analytics.summary(memory, AS_OF)
        assert kpis.total == LARGE


class TestPostgres:
    def test_dump_peak_does_not_grow_with_the_store(
        self, histories: list[History], postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A dump of 200 referrals, 10 a page, peaks at about what a dump of 50 does."""
        monkeypatch.setattr(postgres_module, "_EXPORT_BATCH", 10)
        with postgres_urls(postgres_url, histories) as urls:
            sink = assert_flat(digest_of_dump, urls)
        assert sink.lines == LARGE + 1

    def test_summary_peak_does_not_grow_with_the_store(
        self, histories: list[History], postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The KPI summary of 200 referrals, rows arriving 100 at a time, peaks at about what
        the summary of 50 does."""
        monkeypatch.setattr(postgres_module, "_HISTORY_ROWS", 100)
        with postgres_urls(postgres_url, histories) as urls:
            kpis = assert_flat(kpis_of, urls)
        assert kpis.total == LARGE


class TestMemory:
    def test_dump_peak_does_not_grow_with_the_store(self, histories: list[History]) -> None:
        """A memory store's export unpacks one history at a time: a dump of 200 referrals
        peaks at about what a dump of 50 does (the stores themselves are not traced)."""
        stores = {}
        for size in (SMALL, LARGE):
            stores[size] = MemoryStore()
            stores[size].restore_many(histories[:size])

        def dump_of(size: int) -> Digest:
            sink = Digest()
            dump(stores[size], sink)
            return sink

        dump_of(SMALL)
        small, _ = traced(lambda: dump_of(SMALL))
        large, sink = traced(lambda: dump_of(LARGE))
        assert large < 1.5 * small, f"peak {large / 2**20:.2f} MiB vs {small / 2**20:.2f} MiB"
        assert sink.lines == LARGE + 1
