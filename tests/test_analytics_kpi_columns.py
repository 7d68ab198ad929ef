"""``analytics.kpis(store)`` reads only the columns its KPIs need from the analytics cache.

The reference is the table of the whole frame: ``kpis(referrals_frame(store, ...))``, the
path ``kpis(store)`` took before. The table of the store must equal it exactly (values,
dtypes, index, attrs) whatever the grouping, period, instant and date shift, through a cold
cache, a warm one, stale rows, a compacted cache and a damaged one; and no column the KPIs do
not read is converted to pandas.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from referralkit import Actor, ReferralDesk, Role
from referralkit.errors import ReferralKitError, ValidationError
from referralkit.storage import ReferralStore

pd = pytest.importorskip("pandas", reason="the analytics extra is not installed")
pytest.importorskip("pyarrow", reason="the analytics extra is not installed")

from referralkit import analytics  # noqa: E402
from referralkit.analytics import _cache  # noqa: E402
from referralkit.clocks import DEFAULT_CLOCKS, Window  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "analytics_cache_tests", Path(__file__).with_name("test_analytics_cache.py")
)
assert _spec is not None
assert _spec.loader is not None
cache_tests: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cache_tests)
kpis_tests = cache_tests.kpis_tests

KEY = b"kpi-columns-key-0123456789abcdef"
ACTOR = Actor("coord-1", {Role.COORDINATOR})
GROUPINGS: list[Any] = [
    (),
    "specialty",
    "month",
    ["payer", "week"],
    "referral_id",
    ["patient_key", "status"],
]


def tables_equal(
    store: ReferralStore,
    as_of: dt.datetime,
    deid: analytics.Deidentifier,
    by: Any = (),
    **period: Any,
) -> Any:
    """The store's table equals the whole frame's, exactly; the store's table."""
    frame = analytics.referrals_frame(store, as_of=as_of, deidentify=deid)
    expected = analytics.kpis(frame, by=by, **period)
    got = analytics.kpis(store, as_of=as_of, deidentify=deid, by=by, **period)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got.attrs == expected.attrs
    return got


class TestTheSameTable:
    @settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
    @given(
        history=kpis_tests.histories(),
        picks=st.lists(st.integers(0, 500), min_size=1, max_size=3),
        shift=st.sampled_from([0, 30]),
        data=st.data(),
    )
    def test_random_histories_every_grouping(
        self, history: Any, picks: list[int], shift: int, data: st.DataObject
    ) -> None:
        store, clock = history
        deid = analytics.Deidentifier(key=KEY, date_shift_days=shift)
        for i, as_of in enumerate(cache_tests.moments(store, picks)):
            for by in (GROUPINGS[0], GROUPINGS[1 + i % 5]):
                tables_equal(store, as_of, deid, by)
        cache_tests.drive(store, clock, data.draw, data.draw(st.integers(1, 10)))
        for as_of in [*cache_tests.moments(store, picks), clock.now()]:
            tables_equal(store, as_of, deid, data.draw(st.sampled_from(GROUPINGS)))
            start = as_of - dt.timedelta(days=data.draw(st.integers(0, 60)))
            tables_equal(store, as_of, deid, "month", start=start, end=as_of)

    def test_the_demo_database(self, tmp_path: Path) -> None:
        """A synthetic population in SQLite: every grouping, several instants, periods."""
        from referralkit import FakeClock, synth

        clock = FakeClock(synth.DEFAULT_START)
        desk = ReferralDesk(_sqlite(tmp_path / "demo.db"), clock=clock, new_id=synth.id_factory(5))
        synth.simulate(desk, ACTOR, clock, synth.population(80, 5), weeks=6, seed=5)
        store = desk.store
        try:
            now = clock.now()
            for shift in (0, 11):
                deid = analytics.Deidentifier(key=KEY, date_shift_days=shift)
                for as_of in (now - dt.timedelta(days=20), now, now + dt.timedelta(days=9)):
                    for by in [*GROUPINGS, ["target_org", "effective_priority", "plan_type"]]:
                        if shift == 0 or by in ((), "month", "referral_id"):
                            tables_equal(store, as_of, deid, by)
                tables_equal(store, now, deid, "week", start=now - dt.timedelta(days=21))
                tables_equal(store, now, deid, (), start=dt.date(2000, 1, 1), end=now.date())
            assert len(analytics.kpis(store, as_of=now, deidentify=deid, by="referral_id")) == 80
        finally:
            store.close()  # type: ignore[attr-defined]

    def test_stale_compacted_and_damaged_caches(self) -> None:
        store, clock = kpis_tests.build([(0, "send", 1), (1, "send", 2), (1, "accept", 3)])
        desk = ReferralDesk(store, clock=clock)
        ids = sorted(r.id for r in store.query())
        deid = analytics.Deidentifier(key=KEY)
        # the KPI table alone fills and refreshes the cache (whole rows kept)
        for step in range(_cache.COMPACT_AFTER + 2):
            clock.advance(hours=5)
            with contextlib.suppress(ReferralKitError):
                desk.send(ACTOR, ids[step % 4])
                desk.accept(ACTOR, ids[step % 4])
            analytics.kpis(store, as_of=clock.now(), deidentify=deid, by="status")
            blocks = store.read_analytics_blocks(_cache.referrals_name()) or []
            assert 1 <= len(blocks) <= _cache.COMPACT_AFTER
            cache_tests.frames_equal(store, clock.now(), deid)  # the rows kept are whole
            tables_equal(store, clock.now(), deid, "status")
        store.write_analytics_blocks(_cache.referrals_name(), [b"not arrow"])
        tables_equal(store, clock.now(), deid)
        assert b"not arrow" not in (store.read_analytics_blocks(_cache.referrals_name()) or [])
        cache_tests.frames_equal(store, clock.now(), deid)

    def test_the_paths_without_the_cache(self) -> None:
        """Identified tables, other clock rules and an unknown grouping go through the
        frame, as before."""
        store, clock = kpis_tests.build([(0, "send", 1), (0, "accept", 3)])
        got = analytics.kpis(store, as_of=clock.now(), deidentify=False, actor=ACTOR)
        frame = analytics.referrals_frame(store, as_of=clock.now(), deidentify=False, actor=ACTOR)
        pd.testing.assert_frame_equal(got, analytics.kpis(frame), check_exact=True)
        rules = attrs.evolve(
            DEFAULT_CLOCKS,
            first_contact_by=attrs.evolve(DEFAULT_CLOCKS.first_contact_by, window=Window.hours(4)),
        )
        got = analytics.kpis(store, as_of=clock.now(), rules=rules)
        frame = analytics.referrals_frame(store, as_of=clock.now(), rules=rules)
        pd.testing.assert_frame_equal(got, analytics.kpis(frame), check_exact=True)
        with pytest.raises(ValidationError, match="no column 'nope'"):
            analytics.kpis(store, as_of=clock.now(), by="nope")
        with pytest.raises(ValidationError, match="actor"):
            analytics.kpis(store, as_of=clock.now(), deidentify=False)


class TestOnlyTheColumnsRead:
    def converted(self, monkeypatch: pytest.MonkeyPatch, by: Any) -> set[str]:
        """The cached columns converted to pandas by a warm ``kpis(store, by=by)``."""
        store, clock = kpis_tests.build([(0, "send", 1), (1, "send", 2), (1, "accept", 3)])
        deid = analytics.Deidentifier(key=KEY)
        analytics.referrals_frame(store, as_of=clock.now(), deidentify=deid)  # warm
        seen: set[str] = set()
        original = _cache.to_pandas

        def spied(data: dict[str, Any], columns: Any) -> Any:
            seen.update(c.name for c in columns)
            return original(data, columns)

        with monkeypatch.context() as patch:
            patch.setattr(_cache, "to_pandas", spied)
            table = analytics.kpis(store, as_of=clock.now(), deidentify=deid, by=by)
        assert int(table["referrals"].sum()) == 4
        return seen

    def test_ungrouped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen = self.converted(monkeypatch, ())
        assert {"received_at", "is_open", "completed", "days_to_schedule"} <= seen
        # neither identifiers (counted by presence: never hashed) nor unused columns
        assert not seen & {"referral_id", "patient_key", "specialty", "payer", "due_by"}
        assert len(seen) < len(_cache.cached_columns()) / 2

    def test_grouped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        seen = self.converted(monkeypatch, ["specialty", "month"])
        assert {"specialty", "created_at", "received_at"} <= seen
        assert not seen & {"referral_id", "patient_key", "payer", "plan"}


def _sqlite(path: Path) -> ReferralStore:
    from referralkit.storage.sqlite import SQLiteStore

    return SQLiteStore(path)
