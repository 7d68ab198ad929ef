"""Analytics: frames, de-identification rules, grouped KPIs, plots, Parquet, the HTML report,
rich display and the command line."""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

pd = pytest.importorskip("pandas", reason="the analytics extra is not installed")
matplotlib = pytest.importorskip("matplotlib", reason="the analytics extra is not installed")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from referralkit import (  # noqa: E402
    Actor,
    AttachmentKind,
    Code,
    MemoryStore,
    PermissionDeniedError,
    ReferralDesk,
    Role,
    ValidationError,
    analytics,
    cli,
    open_store,
)
from referralkit.analytics import _deid, _extra  # noqa: E402
from referralkit.display import Card, decision_html, decision_text, referral_card  # noqa: E402
from referralkit.rules import load  # noqa: E402
from referralkit.rules.policies import shipped_paths  # noqa: E402
from referralkit.rules.whatif import what_if  # noqa: E402
from referralkit.testing import FakeClock, sample_request  # noqa: E402

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
COORDINATOR = Actor("coord-1", {Role.COORDINATOR})


@pytest.fixture(autouse=True)
def _close_figures() -> Any:
    yield
    plt.close("all")


def make_store(count: int = 6) -> tuple[MemoryStore, FakeClock]:
    """A few referrals at different stages, one with an expedited authorization and a
    survey."""
    counter = itertools.count(1)
    clock = FakeClock(START)
    desk = ReferralDesk(MemoryStore(), clock=clock, new_id=lambda: f"id-{next(counter):04d}")
    a = COORDINATOR
    for n in range(count):
        request = sample_request(f"REQ-{n}")
        if n % 3 == 1:
            request = attrs.evolve(request, services=(Code.cpt("70551", "MRI"),))
        r = desk.send(a, desk.intake(a, request).id)
        clock.advance(hours=5)
        if n % 3 == 1:
            desk.attach(a, r.id, AttachmentKind.PRIOR_AUTH_FORM, text="form")
            desk.request_authorization(a, r.id, expedited=n % 2 == 1)
            clock.advance(hours=30 + n)
            desk.record_authorization(a, r.id, approved=True, valid_from=dt.date(2026, 1, 1))
        if n % 3 != 2:
            desk.accept(a, r.id)
            clock.advance(days=1)
            desk.schedule(a, r.id, clock.now() + dt.timedelta(days=3 + n))
        if n % 3 == 0:
            clock.advance(days=4 + n)
            desk.record_visit(a, r.id)
            desk.complete(a, r.id, "consult")
            desk.record_survey(a, r.id, 3 + n % 3)
    return desk.store, clock  # type: ignore[return-value]


@pytest.fixture(scope="module")
def built() -> tuple[MemoryStore, FakeClock]:
    return make_store()


class TestReferralsFrame:
    def test_columns_and_types(self, built: Any) -> None:
        """Flat typed columns: categories, UTC timestamps, nullable flags; PHI columns absent."""
        store, clock = built
        frame = analytics.referrals_frame(store, as_of=clock.now())
        assert len(frame) == 6
        assert isinstance(frame["specialty"].dtype, pd.CategoricalDtype)
        assert str(frame["received_at"].dtype) == "datetime64[us, UTC]"
        assert str(frame["auth_denied"].dtype) == "boolean"
        assert str(frame["satisfaction"].dtype) == "Int64"
        for name in ("mrn", "given_name", "family_name", "birth_date", "member_id", "reason"):
            assert name not in frame.columns
        assert frame.attrs["deidentified"] is True
        assert set(frame["age_band"].astype(str)) == {"60-64"}

    def test_as_of_leaves_out_later_referrals_and_changes(self, built: Any) -> None:
        """Referrals recorded after as_of are absent; the others are as they were then."""
        store, _ = built
        early = analytics.referrals_frame(store, as_of=START + dt.timedelta(hours=1))
        assert len(early) == 1
        assert early.loc[0, "status"] == "received"
        assert pd.isna(early.loc[0, "accepted_at"])

    def test_identified_frame_needs_an_actor_allowed_to_read(self, built: Any) -> None:
        """deidentify=False needs an actor; one whose roles may not read is refused."""
        store, clock = built
        with pytest.raises(ValidationError) as info:
            analytics.referrals_frame(store, as_of=clock.now(), deidentify=False)
        assert info.value.path == "actor"
        with pytest.raises(ValidationError):
            analytics.referrals_frame(store, deidentify=False, actor="coord-1")  # type: ignore[arg-type]
        auditor = Actor("audit-1", {Role.AUDITOR})
        frame = analytics.referrals_frame(store, as_of=clock.now(), deidentify=False, actor=auditor)
        assert frame.loc[0, "mrn"] == "MRN-000001"
        assert str(frame["birth_date"].iloc[0].date()) == "1961-04-02"
        assert frame.attrs["deidentified"] is False

    def test_a_role_that_may_not_read_is_denied(
        self, built: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The check is the desk's own permission table."""
        from referralkit import privacy

        store, _clock = built
        table = dict(privacy.PERMISSIONS)
        table[Role.AUDITOR] = frozenset()
        monkeypatch.setattr(privacy, "PERMISSIONS", table)
        with pytest.raises(PermissionDeniedError):
            analytics.referrals_frame(
                store, deidentify=False, actor=Actor("audit-1", {Role.AUDITOR})
            )

    def test_bad_arguments(self, built: Any) -> None:
        """Typed errors for a bad store, a bad deidentify value and a naive as_of."""
        store, _ = built
        with pytest.raises(ValidationError):
            analytics.referrals_frame(object())  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            analytics.referrals_frame(store, deidentify="yes")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            analytics.referrals_frame(store, as_of=dt.datetime(2026, 1, 5))

    def test_as_of_defaults_to_now(self, built: Any) -> None:
        """Without as_of, the wall clock: every referral of 2026 January is there."""
        store, _ = built
        assert len(analytics.referrals_frame(store)) == 6

    def test_empty_store(self) -> None:
        """An empty store gives an empty frame with every column."""
        frame = analytics.referrals_frame(MemoryStore(), as_of=START)
        assert frame.empty
        assert "specialty" in frame.columns
        assert analytics.events_frame(MemoryStore(), as_of=START).empty

    def test_chunks_join_with_their_categories(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rows converted a chunk at a time come back as one frame with one category set."""
        from referralkit.analytics import _frames

        store, clock = make_store(7)
        whole = analytics.referrals_frame(store, as_of=clock.now())
        monkeypatch.setattr(_frames, "CHUNK", 2)
        monkeypatch.setattr(_frames.referral_chunks, "__defaults__", (_frames.DEFAULT_CLOCKS, 2))
        chunked = analytics.referrals_frame(store, as_of=clock.now(), deidentify=_deid.SESSION)
        pd.testing.assert_frame_equal(whole, chunked)


class TestDeidentifier:
    def test_pseudonyms_are_keyed(self, built: Any) -> None:
        """One key, one pseudonym per id (frames join); another key shares nothing."""
        store, clock = built
        one = analytics.Deidentifier(key=b"a" * 32)
        two = analytics.Deidentifier(key=b"b" * 32)
        a = analytics.referrals_frame(store, as_of=clock.now(), deidentify=one)
        b = analytics.referrals_frame(store, as_of=clock.now(), deidentify=one)
        c = analytics.referrals_frame(store, as_of=clock.now(), deidentify=two)
        assert a["referral_id"].tolist() == b["referral_id"].tolist()
        assert not set(a["referral_id"]) & set(c["referral_id"])
        events = analytics.events_frame(store, as_of=clock.now(), deidentify=one)
        assert set(events["referral_id"]) == set(a["referral_id"])
        raw = {r.id for r in store.query()} | {r.patient.id for r in store.query()}
        assert not raw & (set(a["referral_id"]) | set(a["patient_key"]))

    def test_date_shift_moves_dates_and_keeps_intervals(self, built: Any) -> None:
        """Every timestamp of a patient moves by one number of whole days; durations stay."""
        store, clock = built
        plain = analytics.referrals_frame(store, as_of=clock.now(), deidentify=_deid.SESSION)
        shifted = analytics.referrals_frame(
            store,
            as_of=clock.now(),
            deidentify=attrs.evolve(_deid.SESSION, date_shift_days=20),
        )
        delta = shifted["received_at"] - plain["received_at"]
        assert (delta != pd.Timedelta(0)).all()
        assert (delta.dt.total_seconds() % 86_400 == 0).all()
        assert (delta.abs() <= pd.Timedelta(days=20)).all()
        pd.testing.assert_series_equal(shifted["days_to_appointment"], plain["days_to_appointment"])
        moved = shifted["first_booked_at"] - plain["first_booked_at"]
        assert (moved.dropna() == delta[moved.notna()]).all()

    def test_validation_and_repr(self) -> None:
        """A short key or an odd shift is refused; the key never shows."""
        with pytest.raises(ValidationError):
            analytics.Deidentifier(key=b"short")
        with pytest.raises(ValidationError):
            analytics.Deidentifier(date_shift_days=-1)
        with pytest.raises(ValidationError):
            analytics.Deidentifier(date_shift_days=True)
        secret = b"s" * 32
        assert repr(secret) not in repr(analytics.Deidentifier(key=secret))
        assert analytics.Deidentifier().shift_days("p") == 0

    @pytest.mark.parametrize(
        ("birth", "on", "band"),
        [
            (dt.date(2000, 6, 1), dt.date(2026, 5, 31), "25-29"),
            (dt.date(2000, 6, 1), dt.date(2026, 6, 1), "25-29"),
            (dt.date(1936, 6, 2), dt.date(2026, 6, 1), "85-89"),
            (dt.date(1936, 6, 1), dt.date(2026, 6, 1), "90+"),
            (dt.date(1901, 2, 3), dt.date(2026, 6, 1), "90+"),
            (dt.date(2026, 6, 2), dt.date(2026, 6, 1), "0-4"),
        ],
    )
    def test_age_bands(self, birth: dt.date, on: dt.date, band: str) -> None:
        """Five-year bands; every age of 90 or more is one band (Safe Harbor)."""
        assert analytics.age_band(birth, on) == band
        assert band in analytics.AGE_BANDS

    @pytest.mark.parametrize(
        "column",
        [*analytics.COLUMNS, *analytics.EVENT_COLUMNS],
        ids=lambda c: c.name,
    )
    def test_every_source_resolves(self, column: analytics.Column) -> None:
        """Each column names real model fields (the declaration is read along them)."""
        for path in (*column.sources, *column.classifies):
            _deid._is_phi_path(path)

    def test_a_bad_source_path_is_an_error(self) -> None:
        """A column naming a field that does not exist fails loudly."""
        with pytest.raises(ValidationError):
            _deid._is_phi_path("Referral.nothing")
        with pytest.raises(ValidationError):
            _deid._is_phi_path("Referral.specialty.deeper")

    def test_phi_columns_follow_the_declaration(self) -> None:
        """The identified-only columns are those with a PHI source: today at least these."""
        dropped = {c.name for c in analytics.COLUMNS if not c.kept(True)}
        assert dropped >= {
            "mrn",
            "given_name",
            "family_name",
            "birth_date",
            "member_id",
            "reason",
            "status_reason",
            "survey_comment",
        }
        assert all(c.phi for c in analytics.COLUMNS if c.name in dropped)
        assert "age_band" not in dropped
        assert analytics.COLUMNS[18].phi
        assert [c.name for c in analytics.EVENT_COLUMNS if not c.kept(True)] == ["payload"]


class TestEventsFrame:
    def test_one_row_per_event(self, built: Any) -> None:
        """Every event up to as_of, with its status change and facets, no payload."""
        store, clock = built
        frame = analytics.events_frame(store, as_of=clock.now())
        total = sum(len(store.events(r.id)) for r in store.query())
        assert len(frame) == total
        assert "payload" not in frame.columns
        changes = frame[frame["type"] == "status_changed"]
        assert set(changes["status_to"].astype(str)) >= {"received", "accepted", "completed"}
        assert frame["survey_score"].notna().sum() == 2
        early = analytics.events_frame(store, as_of=START)
        assert set(early["referral_id"]) == {frame.loc[0, "referral_id"]}
        assert len(early) < len(frame)

    def test_identified_events_have_the_payload(self, built: Any) -> None:
        """With deidentify=False the whole payload is a JSON column."""
        store, clock = built
        frame = analytics.events_frame(
            store, as_of=clock.now(), deidentify=False, actor=COORDINATOR
        )
        created = json.loads(frame.loc[0, "payload"])
        assert created["referral"]["patient"]["mrn"] == "MRN-000001"


class TestKpiTable:
    def test_groupings(self, built: Any) -> None:
        """Every offered grouping works; week and month labels are calendar labels."""
        store, clock = built
        frame = analytics.referrals_frame(store, as_of=clock.now())
        for by in analytics.GROUPINGS:
            table = analytics.kpis(frame, by=by)
            assert table["referrals"].sum() == 6
        assert analytics.kpis(frame, by="month").index.tolist() == ["2026-01"]
        assert analytics.kpis(frame, by="week").index[0] == "2026-01-05"
        assert list(analytics.kpis(frame).columns) == [k.name for k in analytics.KPIS]

    def test_period_selects_by_receipt(self, built: Any) -> None:
        """[start, end) on the received date; dates are midnight UTC."""
        store, clock = built
        frame = analytics.referrals_frame(store, as_of=clock.now())
        received = frame["received_at"].sort_values().tolist()
        table = analytics.kpis(frame, start=received[2], end=received[4])
        assert table.loc["all", "referrals"] == 2
        assert analytics.kpis(frame, end=dt.date(2026, 1, 5)).empty
        assert analytics.kpis(frame, start=dt.date(2026, 1, 5)).loc["all", "referrals"] == 6

    def test_from_a_store(self, built: Any) -> None:
        """A store is read into a frame first."""
        store, clock = built
        table = analytics.kpis(store, as_of=clock.now(), by="specialty")
        assert table.loc["cardiology", "referrals"] == 6
        assert table.loc["cardiology", "satisfaction_responses"] == 2
        assert table.loc["cardiology", "satisfaction_mean"] == pytest.approx(3.0)

    def test_bad_arguments(self, built: Any) -> None:
        """Typed errors for bad data, a grouping that is not a column and a bad date."""
        store, clock = built
        frame = analytics.referrals_frame(store, as_of=clock.now())
        with pytest.raises(ValidationError):
            analytics.kpis([1, 2])  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            analytics.kpis(frame, by="nothing")
        with pytest.raises(ValidationError):
            analytics.kpis(frame, start="2026-01-01")  # type: ignore[arg-type]

    def test_definitions_are_complete(self) -> None:
        """Every KPI says what it counts, over what, and where the definition comes from;
        the docstrings carry them."""
        for kpi in analytics.KPIS:
            assert kpi.definition
            assert kpi.numerator
            assert kpi.denominator
            assert kpi.source
            assert kpi.field in {c.name for c in analytics.COLUMNS}
            assert f"``{kpi.name}``" in (analytics.kpis.__doc__ or "")
        assert "CMS50" in (analytics.Kpis.__doc__ or "")
        assert "CMS-0057-F" in (analytics.kpis.__doc__ or "")


class TestPlots:
    PLOTS = (
        ("funnel", lambda f, e, ax: analytics.plot_funnel(f, ax)),
        ("flow", lambda f, e, ax: analytics.plot_status_flow(e, ax)),
        ("time", lambda f, e, ax: analytics.plot_time_to_appointment(f, ax)),
        ("breaches", lambda f, e, ax: analytics.plot_sla_breaches(f, ax)),
        ("auth", lambda f, e, ax: analytics.plot_auth_turnaround(f, ax)),
    )

    @pytest.mark.parametrize(("name", "draw"), PLOTS, ids=[p[0] for p in PLOTS])
    def test_plots_return_axes(self, built: Any, name: str, draw: Any) -> None:
        """Each plot draws on the given axes or makes its own, with data or without."""
        store, clock = built
        frame = analytics.referrals_frame(store, as_of=clock.now())
        events = analytics.events_frame(store, as_of=clock.now())
        _, ax = plt.subplots()
        assert draw(frame, events, ax) is ax
        assert ax.get_title()
        own = draw(frame, events, None)
        assert isinstance(own, Axes)
        assert own is not ax
        empty = draw(frame.iloc[0:0], events.iloc[0:0], None)
        assert any(t.get_text() == "no data" for t in empty.texts)

    def test_breaches_by_month(self, built: Any) -> None:
        """Months work; another frequency is refused."""
        store, clock = built
        frame = analytics.referrals_frame(store, as_of=clock.now() + dt.timedelta(days=60))
        ax = analytics.plot_sla_breaches(frame, freq="M")
        assert ax.get_ylabel() == "breaches per month"
        with pytest.raises(ValidationError):
            analytics.plot_sla_breaches(frame, freq="D")


class TestParquet:
    def test_round_trip(self, built: Any, tmp_path: Path) -> None:
        """The files read back equal to the frames, partitioned by month, with a manifest."""
        store, clock = built
        deid = analytics.Deidentifier(key=b"k" * 32)
        written = analytics.export_parquet(store, tmp_path, as_of=clock.now(), deidentify=deid)
        frame = analytics.referrals_frame(store, as_of=clock.now(), deidentify=deid)
        events = analytics.events_frame(store, as_of=clock.now(), deidentify=deid)
        assert written == {"referrals": len(frame), "events": len(events)}
        assert (tmp_path / "referrals" / "month=2026-01" / "part-0.parquet").exists()
        manifest = json.loads((tmp_path / "referralkit.json").read_text())
        assert manifest["deidentified"] is True
        assert manifest["rows"] == written
        referrals, back = analytics.read_parquet(tmp_path)
        for original, read in ((frame, referrals), (events, back)):
            key = ["referral_id"] if "version" not in original else ["referral_id", "version"]
            key += ["event_index"] if "event_index" in original else []
            left = read.drop(columns="month").sort_values(key).reset_index(drop=True)
            right = original.sort_values(key).reset_index(drop=True)
            pd.testing.assert_frame_equal(left, right, check_categorical=False)

    @pytest.mark.parametrize("cache", [True, False])
    def test_statistics_for_all_but_the_strings(
        self, built: Any, tmp_path: Path, cache: bool
    ) -> None:
        """Every file has min/max statistics for its timestamp, number and boolean columns
        and none for its strings (which would prune nothing), through the cache or not."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        store, clock = built
        analytics.export_parquet(store, tmp_path, as_of=clock.now(), cache=cache)
        files = sorted(tmp_path.rglob("*.parquet"))
        assert {f.parent.parent.name for f in files} == {"referrals", "events"}
        for file in files:
            found = pq.ParquetFile(file)
            schema = found.schema_arrow
            group = found.metadata.row_group(0)
            for at, field in enumerate(schema):
                stats = group.column(at).statistics
                if pa.types.is_string(field.type):
                    assert stats is None, field.name
                else:
                    assert stats is not None, field.name
                    assert stats.has_null_count, field.name
            month_of = "at" if file.parent.parent.name == "events" else "created_at"
            assert group.column(schema.get_field_index(month_of)).statistics.has_min_max

    def test_existing_datasets_are_refused_unless_overwrite(
        self, built: Any, tmp_path: Path
    ) -> None:
        """A second export into the same place needs overwrite=True, and replaces."""
        store, clock = built
        analytics.export_parquet(store, tmp_path, as_of=clock.now())
        with pytest.raises(ValidationError):
            analytics.export_parquet(store, tmp_path, as_of=clock.now())
        again = analytics.export_parquet(store, tmp_path, as_of=START, overwrite=True)
        assert again["referrals"] == 1
        assert len(analytics.read_parquet(tmp_path)[0]) == 1

    def test_an_empty_store(self, tmp_path: Path) -> None:
        """No referral: no month, no file; reading back gives empty frames."""
        assert analytics.export_parquet(MemoryStore(), tmp_path, as_of=START) == {
            "referrals": 0,
            "events": 0,
        }
        referrals, events = analytics.read_parquet(tmp_path)
        assert referrals.empty
        assert "specialty" in referrals.columns
        assert events.empty

    def test_bad_places(self, built: Any, tmp_path: Path) -> None:
        """A file where the directory should be, and a directory with no datasets."""
        store, _ = built
        file = tmp_path / "file"
        file.write_text("x")
        with pytest.raises(ValidationError):
            analytics.export_parquet(store, file)
        with pytest.raises(ValidationError):
            analytics.read_parquet(tmp_path)

    def test_the_documented_duckdb_query(self, built: Any, tmp_path: Path) -> None:
        """The DuckDB query of the how-to runs over the files and counts what the frame
        counts."""
        duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed")
        store, clock = built
        analytics.export_parquet(store, tmp_path, as_of=clock.now())
        query = (Path(__file__).parent.parent / "docs" / "howto-analytics.md").read_text()
        sql = re.search(r"```sql\n(.*?)```", query, re.DOTALL)
        assert sql is not None
        text = sql.group(1).replace("exports/referrals", str(tmp_path / "referrals"))
        rows = duckdb.sql(text).fetchall()
        assert sum(row[2] for row in rows) == 6


class TestReport:
    def test_self_contained(self, built: Any) -> None:
        """The page has the KPIs, grouped, the definitions and inline SVG plots, and
        nothing that loads from elsewhere."""
        store, clock = built
        frame = analytics.referrals_frame(store, as_of=clock.now())
        events = analytics.events_frame(store, as_of=clock.now())
        page = analytics.report_html(frame, events, by="plan_type", start=dt.date(2026, 1, 1))
        assert page.count("<svg") == 5
        assert "KPIs by plan_type" in page
        assert "CMS-0057-F" in page
        assert "<script" not in page
        assert "<link" not in page
        assert "@import" not in page
        assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page)
        assert "<!DOCTYPE svg" not in page
        assert "De-identified" in page


class TestDisplay:
    def test_referral_card(self, built: Any) -> None:
        """A snapshot shows as a card; with its history the clocks are exact; repr stays."""
        store, clock = built
        referral = store.query()[0]
        html = referral._repr_html_()
        assert referral.id in html
        assert "next action" in html
        assert "MRN" not in html
        assert "<redacted>" in repr(referral)
        card = referral_card(referral, store.events(referral.id), as_of=clock.now())
        assert isinstance(card, Card)
        assert str(card) == card.text
        assert "clocks (as of" in card.text

    def test_decisions_rulesets_whatif_and_kpis(self, built: Any) -> None:
        """Decisions with hits and trace, a rule table, a what-if table, the KPIs."""
        from IPython.lib.pretty import pretty

        store, clock = built
        referral = store.query()[0]
        assert referral.coverage_decision is not None
        assert referral.urgency is not None
        traced = attrs.evolve(
            referral.coverage_decision,
            trace=(
                analytics_trace("r1", matched=True),
                analytics_trace("r2", matched=False, failed="plan_type == 'PPO'"),
            ),
        )
        html = decision_html(traced)
        assert "trace" in html
        # the rule ids and the failed condition are PHI: shown only when revealed
        assert "plan_type" not in html
        assert "&lt;redacted&gt;" in html
        assert "plan_type == &#x27;PPO&#x27;" in decision_html(traced, reveal=True)
        assert "Urgency" in pretty(referral.urgency)
        assert "hit:" in pretty(referral.urgency)
        assert "trace: <redacted>: <redacted>" in pretty(traced)
        assert "trace: r2: plan_type" in decision_text(traced, reveal=True)
        ruleset = next(load(p) for p in shipped_paths() if "coverage-40" in p.name)
        assert ruleset.rules[0].id in ruleset._repr_html_()
        assert pretty(ruleset).startswith("Ruleset ")
        result = what_if(ruleset, ruleset, store.query())
        assert "What-if" in result._repr_html_()
        assert "referrals change" in pretty(result)
        kpis = analytics.summary(store, clock.now())
        assert "closed loop rate" in kpis._repr_html_()
        assert pretty(kpis).startswith("KPIs as of")


def analytics_trace(rule: str, *, matched: bool, failed: str | None = None) -> Any:
    from referralkit import RuleTrace

    return RuleTrace("demo", "1", rule, matched=matched, failed=failed)


class TestCommandLine:
    @pytest.fixture
    def db(self, built: Any, tmp_path: Path) -> str:
        store, _ = built
        url = f"sqlite:///{tmp_path / 'a.db'}"
        with open_store(url) as sqlite:
            sqlite.restore_many(list(store.export()))
        return url

    def test_report(self, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The KPI table on stdout, grouped and for a period; --html writes the page."""
        html = tmp_path / "r.html"
        argv = ["report", "--db", db, "--as-of", "2026-02-15", "--by", "plan_type"]
        assert cli.main([*argv, "--from", "2026-01-01", "--to", "2026-01-31"]) == 0
        out = capsys.readouterr().out
        assert "KPIs as of 2026-02-15 00:00 UTC, received 2026-01-01 to 2026-01-31" in out
        assert re.search(r"referrals\s+6\s*$", out, re.MULTILINE) or "HMO" in out
        assert cli.main(["report", "--db", db, "--as-of", "2026-02-15", "--html", str(html)]) == 0
        assert html.read_text().startswith("<!DOCTYPE html>")

    def test_export(self, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """export parquet writes the datasets; again without --overwrite is an error."""
        target = tmp_path / "out"
        argv = ["export", "parquet", "--db", db, str(target), "--date-shift", "10"]
        assert cli.main(argv) == 0
        assert "6 referrals" in capsys.readouterr().out
        assert cli.main(argv) == 2
        assert "overwrite" in capsys.readouterr().err
        assert cli.main([*argv, "--overwrite"]) == 0
        assert json.loads((target / "referralkit.json").read_text())["date_shift_days"] == 10

    def test_bad_dates(self, db: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Dates that are not ISO 8601 are usage errors."""
        assert cli.main(["report", "--db", db, "--from", "yesterday"]) == 2
        assert cli.main(["report", "--db", db, "--as-of", "soon"]) == 2
        assert "not an ISO 8601" in capsys.readouterr().err

    def test_without_the_extra(
        self, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        """Without pandas the commands say which extra to install and exit 1."""
        real = importlib.import_module

        def missing(name: str, *args: Any) -> Any:
            if name == "pyarrow":
                raise ImportError(name)
            return real(name, *args)

        monkeypatch.setattr(cli.importlib, "import_module", missing)
        assert cli.main(["report", "--db", db]) == 1
        assert cli.main(["export", "parquet", "--db", db, str(tmp_path / "x")]) == 1
        assert "referralkit[analytics]" in capsys.readouterr().err


importlib_import = importlib.import_module


def test_the_functions_say_which_extra_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pandas a frame raises ImportError naming the analytics extra."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        _extra.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pandas" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"referralkit\[analytics\]") as info:
        analytics.referrals_frame(MemoryStore())
    assert info.value.name == "pandas"


def test_the_core_works_without_the_extra(tmp_path: Path) -> None:
    """In a child interpreter where pandas, pyarrow and matplotlib cannot be imported: the
    package, the desk, the KPI summary, the cards and the demo work; frames raise ImportError
    naming the extra; the report command says what to install and exits 1."""
    import subprocess
    import sys

    script = """
import sys
sys.modules.update(pandas=None, pyarrow=None, matplotlib=None)
import datetime as dt
import referralkit as rk
from referralkit import analytics, cli
from referralkit.testing import FakeClock, sample_request
clock = FakeClock(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock)
actor = rk.Actor("c", {rk.Role.COORDINATOR})
r = desk.send(actor, desk.intake(actor, sample_request()).id)
assert analytics.summary(desk.store, clock.now()).total == 1
assert "next action" in r._repr_html_()
try:
    analytics.referrals_frame(desk.store)
except ImportError as error:
    print("frame:", error)
assert cli.main(["demo", "--count", "3", "--weeks", "1", "--db", "memory://"]) == 0
assert cli.main(["report", "--db", "memory://"]) == 1
print("modules:", [m for m in ("pandas", "pyarrow", "matplotlib") if sys.modules.get(m)])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert 'frame: this needs pandas, from the analytics extra: pip install "referralkit' in (
        done.stdout
    )
    assert "modules: []" in done.stdout
    assert "needs the analytics extra" in done.stderr


def test_summary_needs_no_extra() -> None:
    """The KPI summary is pure Python (it runs where pandas is absent, as in the demo)."""
    import sys

    from referralkit.analytics import _summary

    assert "pandas" not in _summary.__dict__
    assert all(not name.startswith("pandas") for name in vars(_summary))
    assert "referralkit.analytics._summary" in sys.modules
