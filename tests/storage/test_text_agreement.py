"""Every store keeps everything the model accepts, and reads it back equal.

The model decides which text and numbers are valid (no NUL character, no lone surrogate, no
NaN or infinity); memory, SQLite and PostgreSQL must then agree on all of it. Generated
referrals get adversarial text in every text field the model lets take it (ids, names,
free text, codes' text, tuple items): control characters, every script, astral characters,
byte-order marks, noncharacters, quotes, backslash escapes, JSON and SQL syntax. Each is
written with its ``created`` event and read back: snapshot, events, the lookups by id, source
id and patient id must all give back exactly what was written.
"""

from __future__ import annotations

import datetime as dt
import itertools
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referralkit import EventType, MemoryStore, Query, Referral, ReferralEvent, ValidationError
from referralkit.storage import ReferralStore, open_store
from referralkit.testing import referrals, sample_request

NASTY = [
    "\x01\x02\x1f\x7f",
    "tab\tnew\nline\r\n",
    "\u2028\u2029",
    "\ufeffBOM",
    "\ufffe\uffff",
    "\U0010ffff\U0001f600",
    "'; DROP TABLE referrals; --",
    '{"json": [1, 2]}',
    "\\u0000 \\ud800 \\\\",
    "\u05e2\u05d1\u05e8\u05d9\u05ea \u202e",
    "e\u0301 \u00e9",
    "%s %(x)s ? :1 $1",
]

TEXT = st.one_of(
    st.sampled_from(NASTY),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=24
    ),
).filter(lambda s: s.strip() != "")


def _text_kind(annotation: Any) -> str | None:
    args = typing.get_args(annotation)
    if annotation is str or (args and set(args) == {str, type(None)}):
        return "text"
    if typing.get_origin(annotation) is tuple and args and args[0] is str:
        return "items"
    return None


def _adversarial(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with adversarial text in every text field whose validator takes it (a field
    with a pattern, such as a specialty or an ICD-10 code, keeps its generated value)."""
    if isinstance(value, tuple):
        return tuple(_adversarial(draw, item) for item in value)
    cls = type(value)
    if not attrs.has(cls):
        return value
    hints = typing.get_type_hints(cls)
    changes: dict[str, Any] = {}
    for field in attrs.fields(cls):
        current = getattr(value, field.name)
        kind = _text_kind(hints[field.name])
        if kind is None:
            nested = _adversarial(draw, current)
            if nested is not current:
                changes[field.name] = nested
            continue
        if current is None and not draw(st.booleans()):
            continue
        candidate = draw(TEXT) if kind == "text" else tuple(draw(st.lists(TEXT, max_size=3)))
        try:
            if field.validator is not None:
                field.validator(value, field, candidate)
        except ValidationError:
            continue
        changes[field.name] = candidate
    return attrs.evolve(value, **changes) if changes else value


@st.composite
def adversarial_referrals(draw: st.DrawFn) -> Referral:
    """Generated referrals (version 1) with adversarial text everywhere the model takes it."""
    return attrs.evolve(_adversarial(draw, draw(referrals())), version=1)


def _created(referral: Referral) -> ReferralEvent:
    from referralkit import to_dict

    return ReferralEvent(
        referral.id,
        1,
        0,
        referral.updated_at,
        referral.owner or "importer",
        EventType.CREATED.value,
        {"referral": to_dict(referral)},
    )


def _check_store(store: ReferralStore) -> None:
    unique = itertools.count()

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(referral=adversarial_referrals())
    def check(referral: Referral) -> None:
        # ids stay adversarial but unique across examples (one store serves them all)
        n = next(unique)
        referral = attrs.evolve(
            referral,
            id=f"{referral.id}#{n}",
            source_id=None if referral.source_id is None else f"{referral.source_id}#{n}",
        )
        event = _created(referral)
        store.save(referral, [event], 0)
        assert store.load(referral.id) == referral
        assert store.events(referral.id) == [event]
        if referral.source_id is not None:
            assert store.find_source(referral.source_id) == referral.id
        by_patient = store.query(Query(patient_id=referral.patient.id))
        assert referral in by_patient
        assert store.count(Query(owner=referral.owner, patient_id=referral.patient.id)) >= 1

    check()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[ReferralStore]:
    with open_store(f"sqlite:///{tmp_path / 'agreement.db'}") as store:
        yield store


@pytest.fixture
def postgres_store(postgres_schema: str) -> Iterator[ReferralStore]:
    with open_store(postgres_schema) as store:
        yield store


class TestEveryStoreKeepsWhatTheModelAccepts:
    def test_the_generator_is_adversarial(self) -> None:
        """Sanity: the referrals written really hold hostile text in ids and free text."""
        seen: dict[str, set[bool]] = {"id": set(), "mrn": set(), "summary": set()}

        @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
        @given(referral=adversarial_referrals())
        def look(referral: Referral) -> None:
            seen["id"].add(not referral.id.isascii() or referral.id in NASTY)
            seen["mrn"].add(not referral.patient.mrn.isascii())
            for communication in referral.communications:
                seen["summary"].add(not (communication.summary or "x").isprintable())

        look()
        assert all(True in found for found in seen.values()), seen

    def test_memory(self) -> None:
        """The reference store."""
        _check_store(MemoryStore())

    def test_sqlite(self, sqlite_store: ReferralStore) -> None:
        """SQLite: text columns and JSON snapshots keep everything the model accepts."""
        _check_store(sqlite_store)

    def test_postgresql(self, postgres_store: ReferralStore) -> None:
        """PostgreSQL: text columns (no NUL allowed) and json snapshots keep everything the
        model accepts."""
        _check_store(postgres_store)


class TestStoredTextNoStoreKeeps:
    """A row holding text the model refuses (written by hand, or by an older referralkit) is
    read as a StorageError naming the referral and the field, never as a value that another
    store would then fail to write."""

    @pytest.mark.parametrize("escape", ["\\u0000", "\\ud800"], ids=["nul", "surrogate"])
    def test_sqlite(self, sqlite_store: ReferralStore, tmp_path: Path, escape: str) -> None:
        import contextlib
        import sqlite3

        from referralkit import StorageError

        referral = attrs.evolve(_minimal(), id="r-1")
        store = sqlite_store
        store.save(referral, [_created(referral)], 0)
        payload = f'{{"referral": {{"id": "r-1", "reason": "x{escape}"}}}}'
        snapshot = f'{{"id": "r-1{escape}"}}'
        with contextlib.closing(sqlite3.connect(tmp_path / "agreement.db")) as conn, conn:
            conn.execute("UPDATE events SET payload = ?", (payload,))
            conn.execute("UPDATE referrals SET snapshot = ?", (snapshot,))
        with pytest.raises(StorageError) as info:
            store.events("r-1")
        assert "stored event 1.0 of referral 'r-1'" in str(info.value)
        with pytest.raises(StorageError) as loaded:
            store.load("r-1")
        assert "stored snapshot of referral 'r-1'" in str(loaded.value)
        assert "x\x00" not in str(info.value)

    def test_payloads_the_desk_builds_are_not_checked_twice(self) -> None:
        """The desk's payloads are JSON by construction (to_dict of validated values) and
        say so; a payload given by hand is checked."""
        from referralkit import Actor, ReferralDesk, Role
        from referralkit._validators import JsonObject

        desk = ReferralDesk(MemoryStore())
        actor = Actor("c", {Role.COORDINATOR})
        made = desk.intake(actor, sample_request())
        assert all(type(e.payload) is JsonObject for e in desk.history(actor, made.id))
        with pytest.raises(ValidationError):
            ReferralEvent("r", 1, 0, made.created_at, "c", "created", {"x": (1,)})


def _minimal() -> Referral:
    return sample_request().referral("r-1", dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
