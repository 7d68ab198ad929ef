"""No PHI in anything analytics produces from de-identified data.

A history is built through the desk, then a canary is planted in every field the model
declares PHI, found by reading the declaration (attrs metadata) at run time: a field declared
PHI tomorrow gets a canary tomorrow. Every frame, plot (as SVG with its text kept as text),
HTML repr, report and Parquet file is then scanned: no canary may appear with
``deidentify=True``; with ``deidentify=False`` they do (the scan can see them).
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

pd = pytest.importorskip("pandas", reason="the analytics extra is not installed")
matplotlib = pytest.importorskip("matplotlib", reason="the analytics extra is not installed")

from matplotlib.figure import Figure  # noqa: E402

from referralkit import (  # noqa: E402
    Actor,
    AttachmentKind,
    Channel,
    Code,
    Direction,
    FollowUpKind,
    MemoryStore,
    ReferralDesk,
    ReferralEvent,
    Role,
    Status,
    analytics,
    cli,
    model,
    replay,
)
from referralkit._validators import is_phi  # noqa: E402
from referralkit.analytics import _deid  # noqa: E402
from referralkit.rules import load  # noqa: E402
from referralkit.rules.policies import CoveragePolicy, shipped_paths  # noqa: E402
from referralkit.rules.whatif import what_if  # noqa: E402
from referralkit.testing import FakeClock, sample_request  # noqa: E402

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
NEEDLES = ("CANARY", "1901")

# event type -> (payload key, the model type it holds); a new event type must be added here,
# or the test says so
PAYLOADS: dict[str, tuple[str, type]] = {
    "created": ("referral", model.Referral),
    "coverage_decided": ("decision", model.CoverageDecision),
    "urgency_assessed": ("assessment", model.UrgencyAssessment),
    "authorization_changed": ("authorization", model.Authorization),
    "appointment_booked": ("appointment", model.Appointment),
    "attachment_added": ("attachment", model.Attachment),
    "communication_logged": ("communication", model.Communication),
    "follow_up_added": ("follow_up", model.FollowUp),
    "target_assigned": ("provider", model.Provider),
    "survey_recorded": ("survey", model.SurveyResponse),
}
# payloads without a model type: which model field each key carries
LOOSE: dict[str, dict[str, tuple[type, str]]] = {
    "status_changed": {"reason": (model.Referral, "status_reason")},
    "owner_assigned": {"owner": (model.Referral, "owner")},
    "appointment_changed": {},
    "follow_up_completed": {},
    "self_pay_acknowledged": {},
}


# --------------------------------------------------------------------------- planting


def _fields(cls: type) -> dict[str, attrs.Attribute[Any]]:
    attrs.resolve_types(cls, globalns=vars(model))
    return attrs.fields_dict(cls)


def _inner(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


class Planter:
    """Replaces every PHI value in JSON data of a model type by a canary, and records which
    (type, field) got one."""

    def __init__(self) -> None:
        self.planted: set[tuple[type, str]] = set()

    def canary(self, annotation: Any, tag: str) -> Any:
        for option in _inner(annotation):
            if option is bool:
                # a flag carries no text to find: it is set, and the scans look for a column
                # or a value derived from it by name (see TestNothingLeaks.test_frames)
                return True
            if option is str:
                return f"CANARY-{tag}"
            if option is dt.date:
                return "1901-02-03"
            if option is dt.datetime:
                return "1901-02-03T00:00:00+00:00"
            if typing.get_origin(option) is tuple:
                (item, *_) = typing.get_args(option)
                return [self.canary(item, tag)]
            if isinstance(option, type) and attrs.has(option):
                # the whole value is PHI: every field inside it gets a canary
                self.planted.update((option, name) for name in _fields(option))
                return {
                    name: self.canary(f.type, f"{tag}.{name}")
                    if not (isinstance(f.type, type) and issubclass(f.type, enum.Enum))
                    else next(iter(f.type)).value
                    for name, f in _fields(option).items()
                    if f.type is not bool
                }
        return None  # not text: a number or a flag cannot carry a canary

    def plant(self, cls: type, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in _fields(cls).items():
            if name not in out:
                continue
            if is_phi(field):
                value = self.canary(field.type, f"{cls.__name__}.{name}")
                if value is not None:
                    out[name] = value
                    self.planted.add((cls, name))
                continue
            for option in _inner(field.type):
                if typing.get_origin(option) is tuple:
                    (option, *_) = typing.get_args(option)
                    if isinstance(option, type) and attrs.has(option):
                        out[name] = [self.plant(option, item) for item in out[name] or ()]
                elif isinstance(option, type) and attrs.has(option):
                    out[name] = self.plant(option, out[name])
        return out

    def event(self, event: ReferralEvent) -> ReferralEvent:
        payload = dict(event.payload)
        if event.type in PAYLOADS:
            key, cls = PAYLOADS[event.type]
            payload[key] = self.plant(cls, payload.get(key))
        elif event.type in LOOSE:
            for key, (cls, name) in LOOSE[event.type].items():
                if key in payload and is_phi(_fields(cls)[name]) and payload[key] is not None:
                    payload[key] = f"CANARY-{cls.__name__}.{name}"
                    self.planted.add((cls, name))
        else:
            pytest.fail(f"unknown event type {event.type!r}: say what its payload holds")
        return attrs.evolve(event, payload=payload)


def declared_phi() -> set[tuple[type, str]]:
    """Every PHI field of the model types a stored referral is made of."""
    return {
        (cls, name)
        for cls in model.model_types()
        for name, field in _fields(cls).items()
        if is_phi(field) and cls is not model.ReferralEvent
    }


def build_store() -> tuple[MemoryStore, set[tuple[type, str]]]:
    """A store whose referrals went through every desk operation, then PHI canaries planted
    in every declared PHI field of every event."""
    counter = itertools.count(1)
    clock = FakeClock(START)
    shipped = CoveragePolicy.shipped()

    class Explained:
        """The shipped rules, deciding with their trace, so rule traces are stored too."""

        def decide(self, referral: Any, at: dt.datetime) -> Any:
            return shipped.decide(referral, at, explain=True)

    desk = ReferralDesk(
        MemoryStore(),
        clock=clock,
        coverage=Explained(),
        new_id=lambda: f"id-{next(counter):04d}",
    )
    actor = Actor("coord-1", {Role.COORDINATOR})
    later = START + dt.timedelta(days=9)
    full = desk.intake(actor, sample_request("REQ-1")).id
    desk.attach(actor, full, AttachmentKind.LAB, title="Labs", text="labs text")
    desk.log_communication(
        actor, full, Channel.PHONE, Direction.OUTBOUND, "patient (mother)", summary="called"
    )
    due = desk.add_follow_up(
        actor, full, FollowUpKind.CALL, dt.date(2026, 1, 9), description="call back"
    )
    desk.complete_follow_up(actor, full, due.follow_ups[-1].id)
    desk.assign(actor, full, "coord-2")
    desk.send(actor, full)
    desk.hold(actor, full, "patient: travelling")
    desk.resume(actor, full)
    desk.accept(actor, full)
    clock.advance(days=1)
    desk.schedule(actor, full, later)
    desk.record_no_show(actor, full)
    desk.reschedule(actor, full, later + dt.timedelta(days=2))
    desk.cancel_appointment(actor, full, "clinic closed")
    desk.reschedule(actor, full, later + dt.timedelta(days=3))
    clock.advance(days=13)
    desk.record_visit(actor, full)
    desk.add_interim_note(actor, full, "interim words")
    desk.complete(actor, full, "consult words")
    desk.record_survey(actor, full, 4, comment="survey words")
    mri = attrs.evolve(sample_request("REQ-2"), services=(Code.cpt("70551", "MRI brain"),))
    pa = desk.intake(actor, mri).id
    desk.send(actor, pa)
    desk.request_authorization(actor, pa, expedited=True)
    clock.advance(hours=30)
    desk.record_authorization(actor, pa, approved=False)
    desk.request_authorization(actor, pa)
    desk.record_authorization(actor, pa, approved=True, valid_from=dt.date(2026, 1, 1))
    other = desk.intake(actor, sample_request("REQ-3")).id
    desk.send(actor, other)
    desk.decline(actor, other, "decline words")
    planter = Planter()
    histories = []
    for events in desk.store.event_histories():
        planted = [planter.event(e) for e in events]
        histories.append((replay(planted), planted))
    store = MemoryStore()
    store.restore_many(histories)
    return store, planter.planted


@pytest.fixture(scope="module")
def planted() -> tuple[MemoryStore, set[tuple[type, str]]]:
    return build_store()


AS_OF = START + dt.timedelta(days=40)


# Raw bytes (a SQLite file, a Parquet file) hold hex digests and random bytes, in which a bare
# year such as "1901" turns up by chance (the events' hash chain alone writes a few hundred
# digests): there the birth-date canary is looked for as the date it is stored as. Read-back
# frames are text written from values and are scanned for the year too.
RAW_NEEDLES = ("CANARY", "1901-02-03")


def assert_clean(text: str, where: str, needles: tuple[str, ...] = NEEDLES) -> None:
    for needle in needles:
        assert needle not in text, f"PHI canary {needle!r} in {where}: {text[:200]}"


def frame_text(frame: Any) -> str:
    parts = [frame.to_csv(index=False), repr(frame), " ".join(map(str, frame.columns))]
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            parts.append(" ".join(map(str, frame[name].cat.categories)))
    parts.append(repr(frame.attrs))
    return "\n".join(parts)


def svg_text(draw: Any) -> str:
    """A plot as SVG with its text kept as text (matplotlib draws glyphs as paths by
    default, which no scan could read)."""
    import io

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure = Figure(figsize=(7, 4))
        draw(figure.add_subplot())
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
    return buffer.getvalue()


class TestPlanting:
    def test_every_declared_phi_field_got_a_canary(self, planted: Any) -> None:
        """The planter read the declaration and found a value for every PHI field a stored
        referral has (so the scans below cover all of them)."""
        _, fields = planted
        assert declared_phi() <= fields

    def test_the_canaries_are_in_the_identified_frames(self, planted: Any) -> None:
        """Positive control: an identified frame holds the canaries (the scan sees them)."""
        store, _ = planted
        actor = Actor("coord-1", {Role.COORDINATOR})
        frame = analytics.referrals_frame(store, as_of=AS_OF, deidentify=False, actor=actor)
        text = frame_text(frame)
        assert "CANARY-Patient.mrn" in text
        assert "1901-02-03" in text
        events = analytics.events_frame(store, as_of=AS_OF, deidentify=False, actor=actor)
        assert "CANARY-Communication.summary" in frame_text(events)


class TestNothingLeaks:
    @pytest.mark.parametrize("shift", [0, 30])
    def test_frames(self, planted: Any, shift: int) -> None:
        """Both frames, with and without a date shift."""
        store, _ = planted
        deid = analytics.Deidentifier(date_shift_days=shift)
        frame = analytics.referrals_frame(store, as_of=AS_OF, deidentify=deid)
        events = analytics.events_frame(store, as_of=AS_OF, deidentify=deid)
        assert len(frame) == 3
        assert len(events) > 40
        assert_clean(frame_text(frame), "referrals frame")
        assert_clean(frame_text(events), "events frame")
        # the PHI flag (pregnancy) was set in every referral: no column may carry it
        assert not [c for c in [*frame.columns, *events.columns] if "pregnan" in c.lower()]
        table = analytics.kpis(frame, by=["specialty", "payer", "month"])
        assert_clean(frame_text(table), "KPI table")

    def test_plots(self, planted: Any) -> None:
        """Every plot, as SVG with text kept as text."""
        store, _ = planted
        frame = analytics.referrals_frame(store, as_of=AS_OF)
        events = analytics.events_frame(store, as_of=AS_OF)
        for draw in (
            lambda ax: analytics.plot_funnel(frame, ax),
            lambda ax: analytics.plot_status_flow(events, ax),
            lambda ax: analytics.plot_time_to_appointment(frame, ax),
            lambda ax: analytics.plot_sla_breaches(frame, ax),
            lambda ax: analytics.plot_auth_turnaround(frame, ax),
        ):
            text = svg_text(draw)
            assert "<text" in text
            assert_clean(text, "plot")

    def test_html_reprs(self, planted: Any) -> None:
        """Every rich display: referrals, decisions, KPIs, what-if results, rulesets; and
        the plain reprs stay redacted."""
        store, _ = planted
        shown: list[str] = []
        referrals = store.query()
        for referral in referrals:
            shown += [referral._repr_html_(), pretty(referral), repr(referral)]
            card = analytics_card(referral, store)
            shown += [card._repr_html_(), card.text]
            for decision in (referral.coverage_decision, referral.urgency):
                if decision is not None:
                    shown += [decision._repr_html_(), pretty(decision)]
        kpis = analytics.summary(store, AS_OF)
        shown += [kpis._repr_html_(), pretty(kpis), repr(kpis)]
        coverage = next(load(p) for p in shipped_paths() if "coverage-40" in p.name)
        result = what_if(coverage, coverage, referrals)
        shown += [result._repr_html_(), pretty(result), coverage._repr_html_()]
        for text in shown:
            assert_clean(text, "a display")

    def test_report_and_cli(
        self, planted: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The HTML report, and the command line's report and export (from SQLite)."""
        store, _ = planted
        frame = analytics.referrals_frame(store, as_of=AS_OF)
        events = analytics.events_frame(store, as_of=AS_OF)
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            page = analytics.report_html(frame, events, by="payer")
        assert "<svg" in page
        assert_clean(page, "HTML report")
        url = f"sqlite:///{tmp_path / 'canary.db'}"
        from referralkit import open_store

        with open_store(url) as sqlite:
            sqlite.restore_many(list(store.export()))
        as_of = AS_OF.isoformat()
        html = tmp_path / "report.html"
        assert cli.main(["report", "--db", url, "--as-of", as_of, "--html", str(html)]) == 0
        assert cli.main(["export", "parquet", "--db", url, str(tmp_path / "pq")]) == 0
        out, err = capsys.readouterr()
        assert_clean(out + err, "command line output")
        assert_clean(html.read_text(encoding="utf-8"), "report file")
        for path in (tmp_path / "pq").rglob("*"):
            if path.is_file():
                assert_clean(path.read_bytes().decode("latin-1"), str(path))

    def test_parquet(self, planted: Any, tmp_path: Path) -> None:
        """Every Parquet file, raw and read back, and the manifest."""
        store, _ = planted
        written = analytics.export_parquet(store, tmp_path, as_of=AS_OF)
        assert written["referrals"] == 3
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert_clean(path.read_bytes().decode("latin-1"), str(path))
        referrals, events = analytics.read_parquet(tmp_path)
        assert_clean(frame_text(referrals), "Parquet referrals")
        assert_clean(frame_text(events), "Parquet events")

    def test_parquet_of_an_encrypted_store(
        self,
        planted: Any,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Encryption on (issue 13): the canaries stored encrypted in SQLite, then the Parquet
        export (``referralkit export parquet`` with ``REFERRALKIT_KEYS``, and the library
        call) holds none, raw or read back; the identified export of the same store shows
        them (the store decrypted, and the scan sees them)."""
        from referralkit import KeyRing, open_store

        store, _ = planted
        ring = KeyRing.generate()
        keys = tmp_path / "keys.json"
        ring.save(keys)
        url = f"sqlite:///{tmp_path / 'encrypted.db'}"
        with open_store(url, keys=ring) as encrypted:
            encrypted.restore_many(list(store.export()))
        for path in tmp_path.glob("encrypted.db*"):  # the file (its WAL checkpointed)
            assert_clean(path.read_bytes().decode("latin-1"), str(path), RAW_NEEDLES)

        monkeypatch.setenv("REFERRALKIT_KEYS", str(keys))
        as_of = AS_OF.isoformat()
        command = ["export", "parquet", "--db", url, "--as-of", as_of, str(tmp_path / "cli")]
        assert cli.main(command) == 0
        out, err = capsys.readouterr()
        assert "3 referrals" in out
        assert_clean(out + err, "command line output")
        with open_store(url, keys=ring) as encrypted:
            assert analytics.export_parquet(encrypted, tmp_path / "lib", as_of=AS_OF) == {
                "referrals": 3,
                "events": analytics.events_frame(store, as_of=AS_OF).shape[0],
            }
            identified = analytics.export_parquet(
                encrypted,
                tmp_path / "identified",
                as_of=AS_OF,
                deidentify=False,
                actor=Actor("analyst", {Role.COORDINATOR}),
            )
        assert identified["referrals"] == 3
        for folder in ("cli", "lib"):
            for path in (tmp_path / folder).rglob("*"):
                if path.is_file():
                    assert_clean(path.read_bytes().decode("latin-1"), str(path), RAW_NEEDLES)
            referrals, events = analytics.read_parquet(tmp_path / folder)
            assert len(referrals) == 3
            assert_clean(frame_text(referrals), f"Parquet referrals ({folder})")
            assert_clean(frame_text(events), f"Parquet events ({folder})")
        referrals, _ = analytics.read_parquet(tmp_path / "identified")
        assert "CANARY" in frame_text(referrals)


def pretty(value: Any) -> str:
    """What IPython's pretty printer shows for ``value`` (through its _repr_pretty_)."""
    from IPython.lib.pretty import pretty as ipython_pretty

    return str(ipython_pretty(value))


def analytics_card(referral: Any, store: MemoryStore) -> Any:
    from referralkit.display import referral_card

    return referral_card(referral, store.events(referral.id), as_of=AS_OF)


def test_declaration_drives_the_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Declaring one more field PHI removes its column from de-identified frames and keeps it
    in identified ones: nothing keeps its own list."""
    store, _ = build_store()
    before = analytics.referrals_frame(store, as_of=AS_OF)
    assert "payer" in before.columns
    original = _deid.is_phi

    def also_payer(attribute: Any) -> bool:
        return attribute.name == "payer" or original(attribute)

    monkeypatch.setattr(_deid, "is_phi", also_payer)
    after = analytics.referrals_frame(store, as_of=AS_OF)
    assert "payer" not in after.columns
    assert set(before.columns) - set(after.columns) == {"payer"}
    actor = Actor("coord-1", {Role.COORDINATOR})
    identified = analytics.referrals_frame(store, as_of=AS_OF, deidentify=False, actor=actor)
    assert "payer" in identified.columns


def _statuses(frame: Any) -> Iterator[str]:
    yield from frame["status"].astype(str)


def test_planted_store_still_replays(planted: Any) -> None:
    """Sanity: the planted histories are valid (their statuses are what the desk made)."""
    store, _ = planted
    frame = analytics.referrals_frame(store, as_of=AS_OF)
    assert sorted(_statuses(frame)) == sorted(
        [Status.COMPLETED.value, Status.RECEIVED.value, Status.DECLINED.value]
    )
