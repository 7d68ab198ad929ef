"""The analytics cache: frames through it equal the replay reference (``cache=False``).

The reference is the path every frame took before the cache: each history replayed by
``read_row``. Random histories (the desk driven by Hypothesis, as in the point-in-time KPI
tests) are read at instants before, at, between and after their events, with the cache
growing, going stale (more operations after a frame), being compacted and damaged; plus the
demo database and SQLite and PostgreSQL stores.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import logging
import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from referralkit import Actor, ReferralDesk, Role
from referralkit.errors import ReferralKitError, StorageError
from referralkit.storage import MemoryStore, ReferralStore
from referralkit.storage.sqlite import SCHEMA_VERSION, SQLiteStore

pd = pytest.importorskip("pandas", reason="the analytics extra is not installed")
pytest.importorskip("pyarrow", reason="the analytics extra is not installed")

from referralkit import analytics  # noqa: E402
from referralkit.analytics import _cache  # noqa: E402
from referralkit.clocks import DEFAULT_CLOCKS, Window  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "analytics_kpis_histories", Path(__file__).with_name("test_analytics_kpis.py")
)
assert _spec is not None
assert _spec.loader is not None
kpis_tests: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kpis_tests)

KEY = b"cache-test-key-0123456789abcdef!"
ACTOR = Actor("coord-1", {Role.COORDINATOR})


def frames_equal(store: ReferralStore, as_of: dt.datetime, deid: analytics.Deidentifier) -> None:
    """The cached frames (which also refresh the cache) equal the replayed ones."""
    cached = analytics.referrals_frame(store, as_of=as_of, deidentify=deid)
    replayed = analytics.referrals_frame(store, as_of=as_of, deidentify=deid, cache=False)
    pd.testing.assert_frame_equal(cached, replayed)
    cached = analytics.events_frame(store, as_of=as_of, deidentify=deid)
    replayed = analytics.events_frame(store, as_of=as_of, deidentify=deid, cache=False)
    pd.testing.assert_frame_equal(cached, replayed)


def export_equal(
    store: ReferralStore, as_of: dt.datetime, deid: analytics.Deidentifier
) -> dict[str, int]:
    """The Parquet export through the cache (streamed from its blocks) reads back equal to
    the replayed frames; the rows written."""
    with tempfile.TemporaryDirectory() as folder:
        written = analytics.export_parquet(store, folder, as_of=as_of, deidentify=deid)
        back = analytics.read_parquet(folder)
    replayed = (
        analytics.referrals_frame(store, as_of=as_of, deidentify=deid, cache=False),
        analytics.events_frame(store, as_of=as_of, deidentify=deid, cache=False),
    )
    assert written == {"referrals": len(replayed[0]), "events": len(replayed[1])}
    for read, original in zip(back, replayed, strict=True):
        if original.empty:
            assert read.empty
            continue
        key = ["referral_id", "version", "event_index"] if "version" in original else []
        key = key or ["referral_id"]
        left = read.drop(columns="month").sort_values(key).reset_index(drop=True)
        right = original.sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(left, right, check_categorical=False)
    return written


def moments(store: ReferralStore, extra: list[int]) -> list[dt.datetime]:
    """Before everything, at events' exact instants, a second and half an hour after some,
    and long after the end."""
    times = sorted({e.at for events in store.event_histories() for e in events})
    chosen = [times[0] - dt.timedelta(hours=1), times[-1], times[-1] + dt.timedelta(days=40)]
    for i in extra:
        at = times[i % len(times)]
        chosen += [at, at + dt.timedelta(seconds=1), at + dt.timedelta(minutes=30)]
    chosen.append(times[-1] + dt.timedelta(days=400))
    return chosen


def drive(store: MemoryStore, clock: Any, draw: Any, count: int) -> None:
    """``count`` more plausible operations on ``store``'s referrals."""
    desk = ReferralDesk(store, clock=clock)
    ids = sorted(r.id for r in store.query())
    for _ in range(count):
        which = draw(st.integers(0, len(ids) - 1))
        status = store.load(ids[which]).status
        operation = draw(
            st.sampled_from([*kpis_tests.PLAUSIBLE.get(status, kpis_tests._AFTER), "any"])
        )
        if operation == "any":
            operation = draw(st.sampled_from(sorted(kpis_tests.OPERATIONS)))
        clock.advance(hours=draw(st.integers(0, 96)))
        with contextlib.suppress(ReferralKitError):
            kpis_tests.OPERATIONS[operation](desk, ACTOR, ids[which], clock)


class TestAgainstTheReplay:
    @settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
    @given(
        history=kpis_tests.histories(),
        picks=st.lists(st.integers(0, 500), min_size=1, max_size=4),
        shift=st.sampled_from([0, 30]),
        data=st.data(),
    )
    def test_random_histories_at_random_instants(
        self, history: Any, picks: list[int], shift: int, data: st.DataObject
    ) -> None:
        """Frames through a growing cache equal the replay at every instant; after more
        operations (stale rows) too."""
        store, clock = history
        deid = analytics.Deidentifier(key=KEY, date_shift_days=shift)
        for as_of in moments(store, picks):
            frames_equal(store, as_of, deid)
        drive(store, clock, data.draw, data.draw(st.integers(1, 20)))
        for as_of in [*moments(store, picks), clock.now()]:
            frames_equal(store, as_of, deid)

    def test_every_operation_at_many_instants(self) -> None:
        """A long fixed plan touching every operation on every referral, read at many
        instants, then each instant again from the cache alone."""
        plan = [(i % 4, op, 7 + i % 30) for i, op in enumerate(sorted(kpis_tests.OPERATIONS) * 3)]
        store, _ = kpis_tests.build(plan)
        deid = analytics.Deidentifier(key=KEY)
        instants = moments(store, list(range(0, 200, 7)))
        for as_of in instants:
            frames_equal(store, as_of, deid)
        for as_of in instants:
            frames_equal(store, as_of, deid)

    @settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
    @given(
        history=kpis_tests.histories(),
        picks=st.lists(st.integers(0, 500), min_size=1, max_size=2),
        shift=st.sampled_from([0, 30]),
        data=st.data(),
    )
    def test_the_streamed_parquet_export(
        self, history: Any, picks: list[int], shift: int, data: st.DataObject
    ) -> None:
        """The export streamed from the cache's blocks reads back equal to the replay, at
        every instant, through a cold cache, a warm one and stale rows."""
        store, clock = history
        deid = analytics.Deidentifier(key=KEY, date_shift_days=shift)
        for as_of in moments(store, picks):
            export_equal(store, as_of, deid)
        drive(store, clock, data.draw, data.draw(st.integers(1, 10)))
        for as_of in [*moments(store, picks), clock.now()]:
            export_equal(store, as_of, deid)

    def test_the_export_streams_blocks_and_keeps_what_it_replays(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A warm cache is exported block by block (the whole-table path is not taken); the
        rows it had to replay are kept, so the next frame replays nothing; blocks written
        twice count once; a damaged block sends the export through the repairing path."""
        plan = [(i % 4, op, 7 + i % 30) for i, op in enumerate(sorted(kpis_tests.OPERATIONS))]
        store, clock = kpis_tests.build(plan)
        deid = analytics.Deidentifier(key=KEY)
        frames_equal(store, clock.now(), deid)  # fills both caches
        desk = ReferralDesk(store, clock=clock)
        clock.advance(hours=3)
        with contextlib.suppress(ReferralKitError):
            desk.send(ACTOR, sorted(r.id for r in store.query())[0])

        def whole(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the whole-table path was taken")

        with monkeypatch.context() as patch:
            patch.setattr(_cache, "cached_referrals_table", whole)
            patch.setattr(_cache, "cached_events_table", whole)
            export_equal(store, clock.now(), deid)
        with monkeypatch.context() as patch:
            patch.setattr(_cache, "read_row_with", whole)
            patch.setattr(_cache, "_event_table", whole)
            export_equal(store, clock.now(), deid)  # nothing stale is left
        for name in (_cache.referrals_name(), _cache.events_name()):
            store.write_analytics_blocks(name, (store.read_analytics_blocks(name) or [])[-1:])
        export_equal(store, clock.now(), deid)
        store.write_analytics_blocks(_cache.events_name(), [b"not arrow"])
        export_equal(store, clock.now(), deid)
        assert b"not arrow" not in (store.read_analytics_blocks(_cache.events_name()) or [])

    def test_row_spans_hold_what_they_say(self) -> None:
        """Within a row's span, replaying at any instant gives the same row (the two
        as-of columns aside); just outside an exact one it may not."""
        from referralkit.analytics._rows import read_row, read_row_with

        plan = [(i % 4, op, 5 + i % 40) for i, op in enumerate(sorted(kpis_tests.OPERATIONS) * 2)]
        store, clock = kpis_tests.build(plan)
        moving = {"overdue", "open_age_days"}
        checked = 0
        for events in store.event_histories():
            for as_of in (events[-1].at, events[-1].at + dt.timedelta(hours=7), clock.now()):
                found = read_row_with(events, as_of)
                assert found is not None
                row, timeline, readings = found
                low, high = _cache.row_span(events, as_of, row, timeline, readings)
                assert low <= _cache._micros(as_of) <= high
                epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
                for micros in {low, high, (low + high) // 2, low + 1}:
                    if not (low <= micros <= high) or abs(micros) > 2**62:
                        continue
                    other = read_row(events, epoch + dt.timedelta(microseconds=micros))
                    assert other is not None
                    for name in row._fields:
                        if name not in moving:
                            assert getattr(other, name) == getattr(row, name), name
                    checked += 1
        assert checked > 10

    def test_the_demo_database(self, tmp_path: Path) -> None:
        """The synthetic demo population in SQLite, read now and at a past instant, through
        a cold cache, a warm one, and a new store object on the same file."""
        from referralkit import FakeClock, synth

        clock = FakeClock(synth.DEFAULT_START)
        path = tmp_path / "demo.db"
        desk = ReferralDesk(SQLiteStore(path), clock=clock, new_id=synth.id_factory(3))
        synth.simulate(desk, ACTOR, clock, synth.population(60, 3), weeks=6, seed=3)
        deid = analytics.Deidentifier(key=KEY)
        past = clock.now() - dt.timedelta(days=20)
        for as_of in (clock.now(), clock.now(), past, clock.now() + dt.timedelta(days=9)):
            frames_equal(desk.store, as_of, deid)
        again = SQLiteStore(path)
        try:
            assert again.read_analytics_blocks(_cache.referrals_name())
            frames_equal(again, clock.now(), deid)
        finally:
            again.close()
            desk.store.close()  # type: ignore[attr-defined]


class TestTheCache:
    def test_a_warm_cache_replays_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        store, clock = kpis_tests.build([(0, "send", 1), (1, "send", 2), (1, "accept", 3)])
        as_of = clock.now() + dt.timedelta(minutes=5)
        first = analytics.referrals_frame(store, as_of=as_of)
        replays: list[str] = []
        original = _cache.read_row_with

        def counted(events: Any, *args: Any) -> Any:
            replays.append(events[0].referral_id)
            return original(events, *args)

        monkeypatch.setattr(_cache, "read_row_with", counted)
        pd.testing.assert_frame_equal(analytics.referrals_frame(store, as_of=as_of), first)
        assert replays == []
        # one referral changes: only it is replayed
        desk = ReferralDesk(store, clock=clock)
        target = sorted(r.id for r in store.query())[2]
        clock.advance(hours=1)
        desk.send(ACTOR, target)
        later = clock.now() + dt.timedelta(minutes=1)
        analytics.referrals_frame(store, as_of=later)
        assert target in replays

    def test_identified_frames_and_other_rules_bypass_it(self) -> None:
        store, clock = kpis_tests.build([(0, "send", 1), (0, "accept", 3)])
        analytics.referrals_frame(store, as_of=clock.now(), deidentify=False, actor=ACTOR)
        assert store.read_analytics_blocks(_cache.referrals_name()) == []
        analytics.events_frame(store, as_of=clock.now(), deidentify=False, actor=ACTOR)
        assert store.read_analytics_blocks(_cache.events_name()) == []
        rules = attrs.evolve(
            DEFAULT_CLOCKS,
            first_contact_by=attrs.evolve(DEFAULT_CLOCKS.first_contact_by, window=Window.hours(4)),
        )
        assert rules != DEFAULT_CLOCKS
        got = analytics.referrals_frame(store, as_of=clock.now(), rules=rules)
        assert store.read_analytics_blocks(_cache.referrals_name()) == []
        expected = analytics.referrals_frame(store, as_of=clock.now(), rules=rules, cache=False)
        pd.testing.assert_frame_equal(got, expected)
        assert _cache.cached_referrals(store, clock.now(), rules) is None

    def test_a_store_without_a_cache(self) -> None:
        """The port's defaults keep nothing: frames replay every time."""

        class Plain(MemoryStore):
            read_analytics_blocks = ReferralStore.read_analytics_blocks
            write_analytics_blocks = ReferralStore.write_analytics_blocks
            referral_versions = ReferralStore.referral_versions

        store, clock = kpis_tests.build([(0, "send", 1)])
        plain = Plain()
        plain.restore_many(list(store.export()))
        assert plain.write_analytics_blocks("x", [b"1"]) is False
        assert list(plain.referral_versions()) == [(r.id, r.version) for r, _ in store.export()]
        frame = analytics.referrals_frame(plain, as_of=clock.now())
        assert len(frame) == 4
        events = analytics.events_frame(plain, as_of=clock.now())
        pd.testing.assert_frame_equal(
            events, analytics.events_frame(plain, as_of=clock.now(), cache=False)
        )
        assert plain.read_analytics_blocks(_cache.referrals_name()) is None

    def test_compaction_and_damage(self) -> None:
        store, clock = kpis_tests.build([])
        desk = ReferralDesk(store, clock=clock)
        ids = sorted(r.id for r in store.query())
        deid = analytics.Deidentifier(key=KEY)
        for step in range(_cache.COMPACT_AFTER + 2):
            clock.advance(hours=5)
            with contextlib.suppress(ReferralKitError):
                desk.send(ACTOR, ids[step % 4])
                desk.accept(ACTOR, ids[step % 4])
            frames_equal(store, clock.now(), deid)
        assert (
            1
            <= len(store.read_analytics_blocks(_cache.referrals_name()) or [])
            <= _cache.COMPACT_AFTER
        )
        store.write_analytics_blocks(_cache.referrals_name(), [b"not arrow"])
        store.write_analytics_blocks(_cache.events_name(), [b"not arrow"])
        frames_equal(store, clock.now(), deid)
        blocks = store.read_analytics_blocks(_cache.referrals_name()) or []
        assert len(blocks) == 1
        assert b"not arrow" not in blocks
        events = store.read_analytics_blocks(_cache.events_name()) or []
        assert len(events) == 1
        # a block of another schema is refused whole too
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        other = pa.table({"referral_id": ["x"]})
        with pa.ipc.new_stream(sink, other.schema) as writer:
            writer.write_table(other)
        store.write_analytics_blocks(_cache.referrals_name(), [sink.getvalue().to_pybytes()])
        frames_equal(store, clock.now(), deid)

    def test_blocks_written_twice_count_once(self) -> None:
        """Two frames refreshing at once may both write a referral's rows: read once."""
        store, clock = kpis_tests.build([(0, "send", 1), (1, "send", 1), (1, "accept", 2)])
        deid = analytics.Deidentifier(key=KEY)
        frames_equal(store, clock.now(), deid)
        for name in (_cache.referrals_name(), _cache.events_name()):
            [block] = store.read_analytics_blocks(name) or []
            store.write_analytics_blocks(name, [block])
        frames_equal(store, clock.now(), deid)

    def test_a_refused_write_leaves_the_frame_right(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        store, clock = kpis_tests.build([(0, "send", 1)])

        def refuse(*args: Any, **kwargs: Any) -> bool:
            raise StorageError("read-only")

        monkeypatch.setattr(store, "write_analytics_blocks", refuse)
        with caplog.at_level(logging.INFO, logger="referralkit.analytics"):
            frames_equal(store, clock.now(), analytics.Deidentifier(key=KEY))
        assert "analytics cache not written (StorageError)" in caplog.text

    def test_many_stale_referrals_are_read_in_one_pass(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store, clock = kpis_tests.build([])
        calls: list[str] = []
        monkeypatch.setattr(_cache, "FEW", 0)
        original = store.events

        def events(referral_id: str) -> Any:
            calls.append(referral_id)
            return original(referral_id)

        monkeypatch.setattr(store, "events", events)
        frames_equal(store, clock.now(), analytics.Deidentifier(key=KEY))
        assert calls == []  # every referral stale: one pass over the histories
        monkeypatch.undo()
        frames_equal(store, clock.now(), analytics.Deidentifier(key=KEY))

    def test_the_blocks_hold_no_phi(self) -> None:
        """What the cache writes: no name, MRN, member id, contact, birth date or text."""
        from referralkit.testing import sample_request

        store, clock = kpis_tests.build([(0, "send", 1), (0, "accept", 2), (0, "call_patient", 1)])
        analytics.referrals_frame(store, as_of=clock.now())
        analytics.events_frame(store, as_of=clock.now())
        import pyarrow as pa

        [stored] = store.read_analytics_blocks(_cache.referrals_name()) or []
        table = pa.ipc.open_stream(stored).read_all()
        [stored_events] = store.read_analytics_blocks(_cache.events_name()) or []
        events = pa.ipc.open_stream(stored_events).read_all()
        assert "payload" not in events.column_names
        text = repr(table.to_pylist()) + repr(events.to_pylist())
        patient = sample_request().patient
        for value in (patient.given_name, patient.family_name, patient.mrn):
            assert str(value) not in text
        assert str(patient.birth_date) not in text
        names = set(table.column_names)
        for phi in ("mrn", "given_name", "family_name", "birth_date", "member_id", "reason"):
            assert phi not in names
        assert "age_band" in names


class TestSQLite:
    def test_an_older_file_upgrades(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        with SQLiteStore(path, migrate=False) as old:
            assert old.upgrade(target=3) == 3
        store = SQLiteStore(path)
        try:
            assert store.schema_version() == SCHEMA_VERSION >= 7
            assert store.read_analytics_blocks("x") == []
            assert store.write_analytics_blocks("x", [b"a", b"b"])
            assert store.write_analytics_blocks("x", [b"c"])
            assert store.read_analytics_blocks("x") == [b"a", b"b", b"c"]
            assert store.write_analytics_blocks("x", [b"d"], replace=True)
            assert store.read_analytics_blocks("x") == [b"d"]
            with pytest.raises(ReferralKitError):
                store.write_analytics_blocks("x", ["text"])  # type: ignore[list-item]
        finally:
            store.close()

    def test_versions_and_frames(self, tmp_path: Path) -> None:
        memory, clock = kpis_tests.build([(0, "send", 1), (2, "send", 1), (2, "accept", 1)])
        store = SQLiteStore(tmp_path / "s.db")
        try:
            store.restore_many(list(memory.export()))
            assert list(store.referral_versions()) == [
                (r.id, r.version) for r, _ in memory.export()
            ]
            deid = analytics.Deidentifier(key=KEY, date_shift_days=10)
            for as_of in (clock.now(), clock.now(), clock.now() - dt.timedelta(hours=2)):
                frames_equal(store, as_of, deid)
        finally:
            store.close()


def test_chunks_with_a_column_of_only_missing_values_join() -> None:
    """A chunk whose categorical column holds nothing but missing values joins the others
    (the replayed path failed on 100,000 referrals: chunks of 20,000 without a target)."""
    from referralkit.analytics._frames import _concat

    empty = pd.DataFrame({"x": pd.Categorical([None, None]), "n": [1, 2]})
    typed = pd.DataFrame({"x": pd.Categorical(["b", "a"]), "n": [3, 4]})
    joined = _concat(iter([empty, typed]))
    expected = pd.DataFrame({"x": pd.Categorical([None, None, "b", "a"]), "n": [1, 2, 3, 4]})
    pd.testing.assert_frame_equal(joined, expected)
    both_empty = _concat(iter([empty, empty]))
    assert both_empty["x"].isna().all()


@pytest.mark.parametrize("size", [16, 64, 65, 100])
def test_bulk_pseudonyms_are_the_hmac(size: int) -> None:
    """The bulk pseudonyms (from the HMAC's padded-key states) equal the one-at-a-time ones,
    for keys shorter and longer than SHA-256's block."""
    import hashlib
    import hmac

    key = bytes(range(size))
    deid = analytics.Deidentifier(key=key)
    values = ["r-1", "pat-\u00e9", "", "x" * 300]
    expected = [
        hmac.new(key, f"patient_key\x00{v}".encode(), hashlib.sha256).hexdigest()[:16]
        for v in values
    ]
    assert deid.pseudonyms("patient_key", values) == expected
    assert [deid.pseudonym("patient_key", v) for v in values] == expected
