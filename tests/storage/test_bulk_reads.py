"""The fast bulk reads of issue 10, each held to the plain way it replaces.

- A sealed snapshot is built without cattrs (``storage/_snapshot.py``) and a sealed event
  without the constructor's validators (``_json._fast_event``): the same values, of the same
  types, as :func:`~referralkit.serialization.from_dict` and the model give; anything odd takes
  the slow path and is read, or refused, as before.
- ``export_selected`` / ``histories_selected`` are ``export`` / ``histories`` filtered.
- The store audit (``desk.audit``) reads each referral's last status change only: its findings
  are those of ``audit_all(store.export())``, the reference.
- The sweep reads a page at a time, the signal and alert events only, and writes a page's
  alerts in one transaction: its reports and the store it leaves are those of the reference
  sweep (``desk._sweep(..., reference=True)``), sweep after sweep.

On random stores (simulated desks) in memory, in SQLite and in PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_support import fresh_schema

import referralkit as rk
from referralkit import synth
from referralkit.discrepancies import AUDIT_EVENT_TYPES, audit_all
from referralkit.errors import CorruptRecordError, StorageError
from referralkit.rules import load
from referralkit.rules._patterns import SIGNAL_EVENT_TYPES, signals
from referralkit.rules.model import Kind
from referralkit.rules.policies import shipped_paths
from referralkit.rules.timeline import EventRules
from referralkit.serialization import from_dict, to_dict
from referralkit.storage import _json, _snapshot
from referralkit.storage._json import PLAIN
from referralkit.storage._snapshot import AuditEvent, AuditSnapshot, Slow, fast_referral
from referralkit.storage.sqlite import SQLiteStore
from referralkit.testing import referral_events, referrals, sample_request

ACTOR = rk.Actor("bulk-reads", {rk.Role.COORDINATOR})
History = tuple[rk.Referral, list[rk.ReferralEvent]]


def same_types(a: Any, b: Any, path: str = "") -> None:
    """``a == b`` and every value of the same type (a float stays a float, a tuple a tuple,
    an enum member a member, a time in UTC the same tzinfo)."""
    assert type(a) is type(b), path
    if attrs.has(type(a)):
        for field in attrs.fields(type(a)):
            same_types(getattr(a, field.name), getattr(b, field.name), f"{path}.{field.name}")
    elif isinstance(a, tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_types(x, y, f"{path}[{i}]")
    elif isinstance(a, dt.datetime):
        assert a.tzinfo is b.tzinfo, path
    assert a == b, path


# --------------------------------------------------------------------------- the decoders


def sample() -> rk.Referral:
    """A referral as a desk takes it in (the sample request)."""
    desk = rk.ReferralDesk(rk.open_store("memory://"), clock=rk.FakeClock(synth.DEFAULT_START))
    return desk.intake(ACTOR, sample_request())


@settings(max_examples=60, deadline=None)
@given(referrals())
def test_a_snapshot_built_fast_is_the_one_cattrs_builds(referral: rk.Referral) -> None:
    data = json.loads(json.dumps(to_dict(referral)))
    same_types(fast_referral(json.loads(json.dumps(data))), from_dict(rk.Referral, data))
    same_types(fast_referral(data), referral)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.update(unknown=1), "an unknown field"),
        (lambda d: d.pop("patient"), "a missing required field"),
        (lambda d: d.update(status="nonsense"), "not an enum member"),
        (lambda d: d.update(version="3"), "a string for an integer"),
        (lambda d: d.update(version=True), "a boolean for an integer"),
        (lambda d: d.update(created_at="2026-01-05T09:00:00"), "a naive time"),
        (lambda d: d.update(created_at="not a time"), "not a time"),
        (lambda d: d["patient"].update(birth_date="1990-13-45"), "not a date"),
        (lambda d: d.update(appointments={}), "an object for a list"),
        (lambda d: d["authorization"].update(service_codes=[1]), "a number in a string list"),
        (lambda d: d.update(patient=[]), "a list for an object"),
        (lambda d: d.update(created_at=5), "a number for a time"),
        (lambda d: d.update(created_at="0001-01-01T00:00:00+01:00"), "a time before UTC's"),
        (lambda d: d["patient"].update(birth_date=5), "a number for a date"),
        (lambda d: d.update(urgency={"priority": "urgent", "score": "3"}), "a float as text"),
        (lambda d: d.update(priority=3), "a number for an enum"),
        (lambda d: d.update(services=[{"code": 3}]), "a number for a code"),
        (lambda d: d.update(held_from=5), "a number for an optional enum"),
        (lambda d: d.update(source_id=5), "a number for an optional string"),
    ],
)
def test_odd_data_takes_the_slow_path(change: Callable[[Any], Any], why: str) -> None:
    """What the fast builder does not recognise is left to cattrs and the validators, which
    read it or refuse it as before (a StorageError from the store's codec, even in a sealed
    record)."""
    data = to_dict(sample())
    change(data)
    with pytest.raises(Slow):
        fast_referral(data)
    body = json.dumps(data, separators=(",", ":"))
    referral_id = data.get("id", "x")
    sealed = _json._seal(body, referral_id + "\x00snapshot")
    try:
        slow = from_dict(rk.Referral, json.loads(body))
    except rk.ValidationError:
        with pytest.raises(StorageError):
            PLAIN.referral(sealed, referral_id)
    else:  # an empty object where a list goes: cattrs reads it as an empty tuple
        same_types(PLAIN.referral(sealed, referral_id), slow)


def test_times_in_another_offset_are_converted_as_cattrs_converts_them() -> None:
    data = to_dict(sample())
    data["created_at"] = "2026-01-05T04:00:00-05:00"
    data["patient"]["birth_date"] = "1990-06-15"
    same_types(fast_referral(data), from_dict(rk.Referral, data))
    data.pop("authorization")  # a default from its factory
    data["urgency"] = {"priority": "urgent", "score": 3, "due_by": None}  # an int in a float
    same_types(fast_referral(data), from_dict(rk.Referral, data))


def test_a_model_the_builders_do_not_know_is_always_read_slowly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A field type the generated builders do not handle makes the class's reads slow (the
    builder is never half made)."""

    @attrs.frozen
    class Odd:
        values: dict[str, int]

    @attrs.frozen
    class Pair:
        both: tuple[int, str]

    @attrs.frozen
    class Either:
        value: int | str | None

    for cls in (Odd, Pair, Either):
        with pytest.raises(TypeError):
            _snapshot._builder(cls)

    def unknown(cls: type) -> Any:
        raise TypeError(cls)

    _snapshot._referral_builder.cache_clear()
    monkeypatch.setattr(_snapshot, "_builder", unknown)
    try:
        with pytest.raises(Slow):
            fast_referral(to_dict(sample()))
    finally:
        _snapshot._referral_builder.cache_clear()


@settings(max_examples=60, deadline=None)
@given(referral_events())
def test_an_event_built_fast_is_the_one_the_model_builds(event: rk.ReferralEvent) -> None:
    row = (
        event.referral_id,
        event.version,
        event.index,
        event.at.isoformat(),
        event.actor,
        event.type,
        json.dumps(dict(event.payload)),
    )
    fast, slow = _json._fast_event(row), _json._stored_event(row)
    same_types(fast, slow)
    assert type(fast.payload) is type(slow.payload)
    moved = (*row[:3], event.at.astimezone(dt.timezone(dt.timedelta(hours=2))), *row[4:])
    same_types(_json._fast_event(moved), slow)  # converted by the model, as before


def test_only_the_selected_event_types_give_signals() -> None:
    """The sweep reads only SIGNAL_EVENT_TYPES (and alerts): every other event gives none."""
    at = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    for kind in rk.EventType:
        if kind.value in SIGNAL_EVENT_TYPES:
            continue
        payload = {"target": "received", "authorization": {"status": "requested"}}
        event = rk.ReferralEvent("r1", 1, 0, at, "a", kind.value, payload)
        assert signals(event) is None, kind


# --------------------------------------------------------------------------- random stores


@functools.cache
def simulated(seed: int) -> tuple[tuple[History, ...], dt.datetime]:
    clock = rk.FakeClock(synth.DEFAULT_START)
    desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock, new_id=synth.id_factory(seed))
    report = synth.simulate(desk, ACTOR, clock, synth.population(40, seed), weeks=5, seed=seed)
    found = tuple((desk.get(ACTOR, i), desk.history(ACTOR, i)) for i in report.referral_ids)
    return found, clock.now()


KINDS = ["memory", "sqlite", "sqlite-memory", "postgres"]


@pytest.fixture
def open_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], rk.ReferralStore]]:
    """``open_stores(kind)``: a new store of that kind holding seed 3's simulated histories."""
    with ExitStack() as stack:
        count = 0

        def make(kind: str) -> rk.ReferralStore:
            nonlocal count
            count += 1
            if kind == "memory":
                url = "memory://"
            elif kind == "sqlite":
                url = f"sqlite:///{tmp_path / f'store{count}.db'}"
            elif kind == "sqlite-memory":  # one shared connection, read under the lock
                url = "sqlite://:memory:"
            else:
                base = request.getfixturevalue("postgres_url")
                url = stack.enter_context(fresh_schema(base))
            store = stack.enter_context(rk.open_store(url))
            histories, _ = simulated(3)
            store.restore_many(list(histories))
            return store

        yield make


@pytest.mark.parametrize("kind", KINDS)
def test_selected_reads_are_the_whole_ones_filtered(
    kind: str, open_stores: Callable[[str], rk.ReferralStore]
) -> None:
    store = open_stores(kind)
    whole = list(store.export())
    ids = [r.id for r, _ in whole][::3]
    for types in (AUDIT_EVENT_TYPES, SIGNAL_EVENT_TYPES | {"alert_raised"}, {"nothing_like"}):
        picked = [(r, [e for e in h if e.type in types]) for r, h in whole]
        assert list(store.export_selected(types)) == picked
        latest = [(r, h[-1:]) for r, h in picked]
        assert list(store.export_selected(types, latest=True)) == latest
        assert store.histories_selected(ids, types) == [
            (r, [e for e in h if e.type in types]) for r, h in store.histories(ids)
        ]
    with pytest.raises(rk.ValidationError):
        list(store.export_selected("status_changed"))
    with pytest.raises(rk.ValidationError):
        store.histories_selected(ids, ["Bad Type"])


@pytest.mark.parametrize("kind", KINDS)
def test_the_store_audit_finds_what_the_reference_finds(
    kind: str, open_stores: Callable[[str], rk.ReferralStore]
) -> None:
    store = open_stores(kind)
    _, end = simulated(3)
    for as_of in (end, end + dt.timedelta(days=1), end + dt.timedelta(days=30)):
        reference = list(audit_all(store.export(), as_of))
        desk = rk.ReferralDesk(store, clock=rk.FakeClock(as_of))
        assert list(desk.audit(ACTOR)) == reference
        assert reference  # the simulation plants findings
        selected = store.export_selected(AUDIT_EVENT_TYPES, latest=True)
        assert list(audit_all(selected, as_of)) == reference


def event_rules() -> EventRules:
    [path] = shipped_paths(Kind.EVENT)
    return EventRules(load(path), engine="python")


@pytest.mark.parametrize("kind", KINDS)
def test_the_sweep_records_what_the_reference_records(
    kind: str, open_stores: Callable[[str], rk.ReferralStore]
) -> None:
    """Sweep after sweep (the first, one with nothing new, a catch-up a month later), the
    paged sweep reports and writes what the reference sweep does on a copy."""
    fast_store, reference_store = open_stores(kind), open_stores(kind)
    _, end = simulated(3)
    clock = rk.FakeClock(end)
    fast = rk.ReferralDesk(fast_store, clock=clock, event_rules=event_rules())
    reference = rk.ReferralDesk(reference_store, clock=clock, event_rules=event_rules())
    written = 0
    for step in (0, 0, 1, 3, 30, 30):
        clock.advance(days=step)
        mine, theirs = fast.sweep(ACTOR), reference._sweep(ACTOR, None, reference=True)
        assert mine == theirs
        written += mine.written
        assert list(fast_store.export()) == list(reference_store.export())
        if fast_store.keeps_rank_keys:
            for bucket in fast_store.rank_buckets():
                page = fast_store.rank_page(bucket, None, 10_000)
                assert page == reference_store.rank_page(bucket, None, 10_000)
    assert written  # the simulation leaves alerts to record


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_sweeps_rank_keys_come_from_the_events_it_read(
    kind: str, open_stores: Callable[[str], rk.ReferralStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The referrals a sweep writes get their rank keys from the events the sweep read and
    those of the clocks' other types (one read a page): no history is read back whole, and
    the keys are :func:`rank_entries` of the whole history."""
    store = open_stores(kind)
    _, end = simulated(3)
    desk = rk.ReferralDesk(store, clock=rk.FakeClock(end), event_rules=event_rules())
    real = _json.RecordCodec.history
    whole_reads = []

    def counting(self: Any, rows: Any, referral_id: str, version: int | None = None) -> Any:
        whole_reads.append(referral_id)
        return real(self, rows, referral_id, version)

    monkeypatch.setattr(_json.RecordCodec, "history", counting)
    assert desk.sweep(ACTOR).written
    assert whole_reads == []
    monkeypatch.undo()
    for referral, history in store.export():
        stored = sorted(
            (b, k)
            for b in store.rank_buckets()
            if b != rk.worklist.SWEEP_BUCKET
            for k, i in store.rank_page(b, None, 10_000)
            if i == referral.id
        )
        expected = rk.worklist.rank_entries(referral, history)
        assert stored == sorted(e for e in expected if e.bucket != rk.worklist.SWEEP_BUCKET)


def test_the_sweep_reads_no_timeline_of_a_changed_referral(
    open_stores: Callable[[str], rk.ReferralStore],
) -> None:
    """A referral changed since the sweep read it gets no timeline (its write is refused);
    nor does any on a store that keeps no rank keys."""
    store = open_stores("sqlite")
    _, end = simulated(3)
    desk = rk.ReferralDesk(store, clock=rk.FakeClock(end), event_rules=event_rules())
    [opened, *_] = store.query(rk.Query(open_only=True))
    history = store.events(opened.id)
    stale = attrs.evolve(opened, version=opened.version - 1)
    write: Any = (opened, history, [], [], 0.0)
    [timeline] = desk._sweep_timelines([write])
    assert timeline is not None
    assert [e.type for e in timeline] == [
        e.type for e in history if e.type in rk.clocks.TIMELINE_EVENT_TYPES
    ]
    assert desk._sweep_timelines([(stale, history, [], [], 0.0)]) == [None]
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as patch:
        patch.setattr(type(store), "keeps_rank_keys", False)
        assert desk._sweep_timelines([write]) == [None]


def test_a_page_whose_write_loses_a_race_is_written_referral_by_referral(
    open_stores: Callable[[str], rk.ReferralStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's one transaction is refused (another change came first): each referral is
    then written on its own, and the result is still the reference's."""
    fast_store, reference_store = open_stores("sqlite"), open_stores("sqlite")
    _, end = simulated(3)
    clock = rk.FakeClock(end)
    fast = rk.ReferralDesk(fast_store, clock=clock, event_rules=event_rules())
    reference = rk.ReferralDesk(reference_store, clock=clock, event_rules=event_rules())
    real = fast_store._save_swept
    refused = []

    def refuse_pages(changes: Any, timelines: Any) -> None:
        if len(changes) > 1:
            refused.append(len(changes))
            raise rk.ConcurrencyError(changes[0][0].id, 1, 2)
        real(changes, timelines)

    monkeypatch.setattr(fast_store, "_save_swept", refuse_pages)
    assert fast.sweep(ACTOR) == reference._sweep(ACTOR, None, reference=True)
    assert refused
    assert list(fast_store.export()) == list(reference_store.export())


# --------------------------------------------------------------------------- the audit's projection


def projected(text: str, referral_id: str) -> Any:
    """What the SQLite adapter reads of a stored snapshot for the audit: the parts SQLite's
    ``json_extract`` gives (:data:`referralkit.storage.sqlite._AUDIT_PARTS`), built by the
    codec."""
    import sqlite3

    from referralkit.storage.sqlite import _AUDIT_PARTS

    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE referrals (snapshot TEXT)")
        conn.execute("INSERT INTO referrals VALUES (?)", (text,))
        parts = conn.execute(f"SELECT {_AUDIT_PARTS} FROM referrals").fetchone()
    return PLAIN.audited(text, referral_id, parts)


@settings(max_examples=150, deadline=None)
@given(
    referrals(),
    st.timedeltas(dt.timedelta(0), dt.timedelta(days=60)),
    st.lists(st.sampled_from(sorted(AUDIT_EVENT_TYPES)), max_size=1),
)
def test_the_audited_parts_find_what_the_whole_snapshot_finds(
    referral: rk.Referral, later: dt.timedelta, last: list[str]
) -> None:
    """On random referrals (every part, every state), a snapshot stored and read back as
    its audited parts is an AuditSnapshot, and the audit finds exactly what it finds in the
    referral itself, duplicates included (the referral beside a copy of itself under other
    ids)."""
    view = projected(PLAIN.snapshot_text(referral), referral.id)
    assert isinstance(view, AuditSnapshot)
    as_of = referral.updated_at + later
    events = [
        rk.ReferralEvent(referral.id, 1, 0, referral.created_at, "a", kind, {}) for kind in last
    ]
    twin = attrs.evolve(referral, id=referral.id + "-2", source_id="other-source")
    twin_view = projected(PLAIN.snapshot_text(twin), twin.id)
    expected = list(audit_all([(referral, events), (twin, events)], as_of))
    assert list(audit_all([(view, events), (twin_view, events)], as_of)) == expected


def stored_text(store: rk.ReferralStore, referral_id: str) -> str:
    import sqlite3

    assert isinstance(store, SQLiteStore)
    with closing(sqlite3.connect(store.path)) as conn:
        found: str = conn.execute(
            "SELECT snapshot FROM referrals WHERE id = ?", (referral_id,)
        ).fetchone()[0]
    return found


def store_text(store: rk.ReferralStore, referral_id: str, text: str) -> None:
    import sqlite3

    assert isinstance(store, SQLiteStore)
    with closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute("UPDATE referrals SET snapshot = ? WHERE id = ?", (text, referral_id))


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-memory", "postgres"])
def test_the_sql_store_audit_reads_the_audited_parts(
    kind: str, open_stores: Callable[[str], rk.ReferralStore]
) -> None:
    """Every sealed snapshot is read as its audited parts, extracted in SQL (the projection
    is what runs), with its last status change, and the findings are the reference's."""
    store = open_stores(kind)
    _, end = simulated(3)
    read = list(store._audit_histories(AUDIT_EVENT_TYPES))
    assert read
    assert all(isinstance(r, AuditSnapshot) for r, _ in read)
    # the last status change: only its type and time (the payload no check reads is not
    # decoded) where the row is sealed and its time read as text (SQLite)
    if kind != "postgres":
        assert all(isinstance(e, AuditEvent) for _, events in read for e in events)
    assert [[(e.type, e.at) for e in events] for _, events in read] == [
        [(e.type, e.at) for e in events]
        for _, events in store.export_selected(AUDIT_EVENT_TYPES, latest=True)
    ]
    for as_of in (end, end + dt.timedelta(days=30)):
        reference = list(audit_all(store.export(), as_of))
        assert list(audit_all(store._audit_histories(AUDIT_EVENT_TYPES), as_of)) == reference


def reseal(text: str, referral_id: str, change: Callable[[dict[str, Any]], None]) -> str:
    """``text`` (a sealed snapshot) with its data changed by ``change`` and sealed again."""
    body, _, _ = _json.RecordCodec.unseal(text, referral_id + "\x00snapshot", referral_id, "s")
    data = json.loads(body)
    change(data)
    return _json._seal(json.dumps(data, separators=(",", ":")), referral_id + "\x00snapshot")


@pytest.mark.parametrize(
    ("change", "read_whole"),
    [
        # a snapshot written before sealing: read whole, every check run
        (lambda text, rid: "{" + text[text.index('",') + 2 :], True),
        # a part the audit reads left out (its default only the whole read gives)
        (lambda text, rid: reseal(text, rid, lambda d: d.pop("authorization")), True),
        (lambda text, rid: reseal(text, rid, lambda d: d.pop("status")), True),
        # a part of another type: read whole (and refused there if it must be)
        (lambda text, rid: reseal(text, rid, lambda d: d.update(appointments=None)), True),
        # a part no check reads, left out: still read as its audited parts
        (lambda text, rid: reseal(text, rid, lambda d: d.pop("reason")), False),
    ],
)
def test_what_the_projection_does_not_recognise_is_read_whole(
    change: Callable[[str, str], str],
    read_whole: bool,
    open_stores: Callable[[str], rk.ReferralStore],
) -> None:
    store = open_stores("sqlite")
    _, end = simulated(3)
    first = next(iter(store.export()))[0].id
    store_text(store, first, change(stored_text(store, first), first))
    try:
        reference: Any = list(audit_all(store.export(), end))
    except rk.ReferralKitError as error:
        reference = type(error)
    try:
        read: Any = next(iter(store._audit_histories(AUDIT_EVENT_TYPES)))[0]
    except rk.ReferralKitError:
        read = None  # read whole, and refused there as the reference refuses it
    assert isinstance(read, rk.Referral | None) is read_whole
    try:
        found: Any = list(audit_all(store._audit_histories(AUDIT_EVENT_TYPES), end))
    except rk.ReferralKitError as error:
        found = type(error)
    assert found == reference


@pytest.mark.parametrize(
    "change",
    [
        # the text changed under its seal: the checksum no longer matches
        lambda text: text.replace('"status":"', '"status":"x', 1),
        # not JSON at all, sealed or not
        lambda text: text[:-1],
        lambda text: "{" + text[text.index('",') + 2 : -1],
    ],
)
def test_a_damaged_snapshot_is_refused_as_the_reference_refuses_it(
    change: Callable[[str], str], open_stores: Callable[[str], rk.ReferralStore]
) -> None:
    store = open_stores("sqlite")
    _, end = simulated(3)
    first = next(iter(store.export()))[0].id
    store_text(store, first, change(stored_text(store, first)))
    with pytest.raises(CorruptRecordError) as reference:
        list(audit_all(store.export(), end))
    with pytest.raises(CorruptRecordError) as found:
        list(audit_all(store._audit_histories(AUDIT_EVENT_TYPES), end))
    assert str(found.value) == str(reference.value)


def last_status_change(store: rk.ReferralStore, referral_id: str) -> tuple[int, int, str, str]:
    """``(version, idx, at, payload)`` of the SQLite row of ``referral_id``'s last event of
    the audit's types."""
    import sqlite3

    assert isinstance(store, SQLiteStore)
    marks = ", ".join("?" for _ in AUDIT_EVENT_TYPES)
    with closing(sqlite3.connect(store.path)) as conn:
        found: tuple[int, int, str, str] = conn.execute(
            f"SELECT version, idx, at, payload FROM events WHERE referral_id = ? "
            f"AND type IN ({marks}) ORDER BY version DESC, idx DESC LIMIT 1",
            (referral_id, *sorted(AUDIT_EVENT_TYPES)),
        ).fetchone()
    return found


def set_event(
    store: rk.ReferralStore, referral_id: str, version: int, idx: int, **values: str
) -> None:
    import sqlite3

    assert isinstance(store, SQLiteStore)
    columns = ", ".join(f"{name} = ?" for name in values)
    with closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute(
            f"UPDATE events SET {columns} WHERE referral_id = ? AND version = ? AND idx = ?",
            (*values.values(), referral_id, version, idx),
        )


@pytest.mark.parametrize(
    "change",
    [
        # the payload changed under its seal (the audit never decodes it): still verified
        lambda at, payload: {"payload": payload.replace('"~c":"', '"~c":"0', 1)},
        # the time changed: the seal covers it
        lambda at, payload: {"at": at.replace(":00+00:00", ":01+00:00", 1)},
        # not a time at all
        lambda at, payload: {"at": "yesterday"},
    ],
)
def test_a_damaged_last_status_change_is_refused_as_the_reference_refuses_it(
    change: Callable[[str, str], dict[str, str]],
    open_stores: Callable[[str], rk.ReferralStore],
) -> None:
    store = open_stores("sqlite")
    _, end = simulated(3)
    first = next(iter(store.export()))[0].id
    version, idx, at, payload = last_status_change(store, first)
    assert payload.startswith('{"~c":"')
    assert at.endswith("+00:00")
    set_event(store, first, version, idx, **change(at, payload))
    with pytest.raises(CorruptRecordError) as reference:
        list(audit_all(store.export_selected(AUDIT_EVENT_TYPES, latest=True), end))
    with pytest.raises(CorruptRecordError) as found:
        list(audit_all(store._audit_histories(AUDIT_EVENT_TYPES), end))
    assert str(found.value) == str(reference.value)


@pytest.mark.parametrize(
    "change",
    [
        # written before sealing: read whole, every check run
        lambda at, payload: {"payload": "{" + payload[payload.index('",') + 2 :]},
        # a time in another offset (sealed as its UTC form): read whole
        lambda at, payload: {
            "at": dt.datetime.fromisoformat(at)
            .astimezone(dt.timezone(dt.timedelta(hours=2)))
            .isoformat()
        },
    ],
)
def test_a_last_status_change_the_projection_does_not_recognise_is_read_whole(
    change: Callable[[str, str], dict[str, str]],
    open_stores: Callable[[str], rk.ReferralStore],
) -> None:
    store = open_stores("sqlite")
    _, end = simulated(3)
    first = next(iter(store.export()))[0].id
    version, idx, at, payload = last_status_change(store, first)
    set_event(store, first, version, idx, **change(at, payload))
    _, events = next(iter(store._audit_histories(AUDIT_EVENT_TYPES)))
    assert [type(e) for e in events] == [rk.ReferralEvent]
    for as_of in (end, end + dt.timedelta(days=30)):
        reference = list(audit_all(store.export(), as_of))
        assert list(audit_all(store._audit_histories(AUDIT_EVENT_TYPES), as_of)) == reference


def test_the_audited_parts_no_check_reads_are_not_built(
    open_stores: Callable[[str], rk.ReferralStore],
) -> None:
    """An open referral's follow-ups (empty), a cancelled, declined, failed or
    entered-in-error one's authorization and appointments (unset): never read by a check,
    so never built; the findings are still the reference's (above)."""
    store = open_stores("sqlite")
    whole = {r.id: r for r, _ in store.export()}
    skipped_follow_ups = 0
    statuses = set()
    for view, _ in store._audit_histories(AUDIT_EVENT_TYPES):
        assert isinstance(view, AuditSnapshot)
        statuses.add(view.status)
        referral = whole[view.id]
        authorized = hasattr(view, "authorization"), hasattr(view, "appointments")
        if view.status is rk.Status.COMPLETED or not view.status.is_terminal:
            assert authorized == (True, True)
            assert view.appointments == referral.appointments
        else:
            assert authorized == (False, False)
        if view.status in (rk.Status.COMPLETED, rk.Status.FAILED):
            assert view.follow_ups == referral.follow_ups
        else:
            assert view.follow_ups == ()
            skipped_follow_ups += bool(referral.follow_ups)
    assert skipped_follow_ups
    assert {rk.Status.COMPLETED, rk.Status.CANCELLED, rk.Status.SCHEDULED} <= statuses


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_encrypted_store_is_audited_from_whole_snapshots(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """PHI the audit reads (service codes, the patient id, who was spoken to) is encrypted
    field by field: the database cannot read it, so the snapshots are read whole."""
    from referralkit.crypto import KeyRing

    histories, end = simulated(3)
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'e.db'}"
    else:
        url = request.getfixturevalue("postgres_schema")
    with rk.open_store(url, keys=KeyRing.generate()) as store:
        store.restore_many(list(histories))
        read = list(store._audit_histories(AUDIT_EVENT_TYPES))
        assert all(isinstance(r, rk.Referral) for r, _ in read)
        desk = rk.ReferralDesk(store, clock=rk.FakeClock(end))
        assert list(desk.audit(ACTOR)) == list(audit_all(store.export(), end))


def test_a_scoped_actor_audits_the_referrals_it_reaches(
    open_stores: Callable[[str], rk.ReferralStore],
) -> None:
    """A scoped actor's store audit reads whole snapshots (the scope test reads the
    parties): the findings are those of the referrals it reaches."""
    store = open_stores("sqlite")
    _, end = simulated(3)
    desk = rk.ReferralDesk(store, clock=rk.FakeClock(end))
    first = next(iter(store.export()))[0]
    assert first.referring.organization is not None
    scoped = rk.Actor(
        "aud",
        {rk.Role.COORDINATOR},
        organization=first.referring.organization,
        providers={first.referring.id},
    )
    reached = [h for h in store.export() if desk._reaches(scoped, "audit", h[0])]
    assert 0 < len(reached) < store.count()
    assert list(desk.audit(scoped)) == list(audit_all(reached, end))


def test_a_postgres_snapshot_changed_under_its_seal_is_refused(
    open_stores: Callable[[str], rk.ReferralStore], postgres_url: str
) -> None:
    import psycopg

    store = open_stores("postgres")
    _, end = simulated(3)
    first = next(iter(store.export()))[0].id
    schema = store.schema  # type: ignore[attr-defined]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            f'UPDATE "{schema}".referrals SET snapshot = '
            "replace(snapshot::text, %s, %s)::json WHERE id = %s",
            ['"status":"', '"status":"x', first],
        )
    with pytest.raises(CorruptRecordError) as reference:
        list(audit_all(store.export(), end))
    with pytest.raises(CorruptRecordError) as found:
        list(audit_all(store._audit_histories(AUDIT_EVENT_TYPES), end))
    assert str(found.value) == str(reference.value)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_referral_changed_between_the_sweeps_reads_is_read_again(
    kind: str, open_stores: Callable[[str], rk.ReferralStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep evaluates the events it read and then reads the snapshots of the referrals
    it writes: one changed in between is read again and recorded on its own (a retry),
    and the store ends as the reference's, to which the same change came first."""
    fast_store, reference_store = open_stores(kind), open_stores(kind)
    _, end = simulated(3)
    clock = rk.FakeClock(end)
    fast = rk.ReferralDesk(fast_store, clock=clock, event_rules=event_rules())
    reference = rk.ReferralDesk(reference_store, clock=clock, event_rules=event_rules())
    real = fast_store._load_many
    changed = []

    def change_first(ids: Any) -> list[rk.Referral]:
        ids = list(ids)
        if not changed:
            changed.append(ids[0])
            fast.assign(ACTOR, ids[0], "someone-else")
        return real(ids)

    monkeypatch.setattr(fast_store, "_load_many", change_first)
    mine = fast.sweep(ACTOR)
    assert changed
    assert mine.retried == 1
    reference.assign(ACTOR, changed[0], "someone-else")
    theirs = reference._sweep(ACTOR, None, reference=True)
    # the changed referral is recorded on its own, before the rest of its page: the same
    # alerts, in another order
    assert (mine.swept, mine.written, mine.skipped) == (theirs.swept, theirs.written, 0)
    assert sorted(mine.raised, key=repr) == sorted(theirs.raised, key=repr)
    assert sorted(mine.cleared, key=repr) == sorted(theirs.cleared, key=repr)
    assert list(fast_store.export()) == list(reference_store.export())


@pytest.mark.parametrize("kind", KINDS)
def test_the_sweeps_reads_are_the_selected_histories_without_snapshots(
    kind: str, open_stores: Callable[[str], rk.ReferralStore]
) -> None:
    """``_sweep_reads``: the open referrals' ids, versions and selected events, in the order
    asked (unknown and closed ids left out); ``_load_many``: the snapshots of the ids stored."""
    store = open_stores(kind)
    whole = list(store.export())
    ids = ["no-such-referral", *[r.id for r, _ in whole][::-1]]
    types = SIGNAL_EVENT_TYPES | {"alert_raised"}
    assert list(store._sweep_reads(ids, types)) == [
        (r.id, r.version, [e for e in h if e.type in types])
        for r, h in reversed(whole)
        if not r.status.is_terminal
    ]
    assert list(store._sweep_reads([], types)) == []
    assert sorted(store._load_many(ids), key=lambda r: r.id) == [r for r, _ in whole]
    assert store._load_many([]) == []
