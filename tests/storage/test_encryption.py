"""Encryption at rest and integrity on read (issue 13, items 3 and 5).

A canary is planted in every PHI field the model declares (``plant`` of
``tests/phi_canaries.py``, which reads the declaration), the referral is stored with
encryption on, and the raw bytes a deployment keeps are scanned: the SQLite file and its
WAL, a backup, a dump, a ``pg_dump`` of the test schema. Then every way a ciphertext can be
wrong (moved to another referral or field, a wrong key, truncated) is a typed error, never
data; rotation resumes after ``kill -9``; and single-bit flips of a SQLite file are either
detected on read or change no value.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import pytest

from referralkit import (
    Actor,
    Appointment,
    Authorization,
    AuthStatus,
    Channel,
    Communication,
    CorruptRecordError,
    Direction,
    EncryptionKeyError,
    FollowUp,
    FollowUpKind,
    KeyRing,
    Query,
    Referral,
    ReferralDesk,
    ReferralEvent,
    ReferralKitError,
    Role,
    StorageError,
    SurveyResponse,
)
from referralkit.model import phi_fields
from referralkit.serialization import to_dict
from referralkit.storage import dump, load_dump, open_store, rotate_keys
from referralkit.storage._json import phi_plan
from referralkit.storage.sqlite import SQLiteStore
from referralkit.testing import FakeClock

sys.path.insert(0, str(Path(__file__).parents[1]))
from phi_canaries import plant
from test_phi_canary import CanaryPolicy, canary_request

ACTOR = Actor("coord-1", {Role.COORDINATOR})
AT = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
NEEDLES = (b"CANARY", b"1899-02-03", b"1901-02-03")


# --------------------------------------------------------------------------- data


def full_referral(referral_id: str = "ref-0001") -> Referral:
    """A referral with one of every part, then a canary in every PHI field of every part
    (found by reading the model's declaration)."""
    desk = ReferralDesk(
        open_store("memory://"),
        clock=FakeClock(AT),
        coverage=CanaryPolicy(),
        urgency=CanaryPolicy(),
        new_id=lambda: referral_id,
    )
    base = desk.intake(ACTOR, canary_request(f"SRC-{referral_id}"))
    whole = attrs.evolve(
        base,
        status_reason="x",
        authorization=Authorization(AuthStatus.APPROVED, number="x", service_codes=("x",)),
        appointments=(Appointment("a1", AT, "prov-card"),),
        communications=(Communication("c1", AT, Channel.FAX, Direction.INBOUND, "x", summary="x"),),
        follow_ups=(FollowUp("f1", FollowUpKind.CALL, dt.date(2026, 2, 1), description="x"),),
        surveys=(SurveyResponse("s1", AT, 4, comment="x"),),
        version=2,
    )
    return plant(whole)  # type: ignore[no-any-return]


def history(referral: Referral) -> list[ReferralEvent]:
    """Two changes: the first with two events, payloads full of canaries."""
    payload = {"note": "CANARY-payload", "patient": {"birth_date": "1899-02-03"}}
    return [
        ReferralEvent(referral.id, 1, 0, AT, "coord-1", "created", payload),
        ReferralEvent(referral.id, 1, 1, AT, "coord-1", "assessed", payload),
        ReferralEvent(referral.id, 2, 0, AT, "coord-1", "note_added", payload),
    ]


def test_every_phi_field_holds_a_canary() -> None:
    """Sanity: every PHI value the plan (read from the declaration) reaches holds a planted
    canary, so a scan that finds none means the values are encrypted."""
    from referralkit import to_dict

    leaves: list[tuple[str, Any]] = []

    def walk(data: Any, plan: Any, prefix: str) -> None:
        for name, kind, inner in plan:
            value = data.get(name)
            if kind == "phi":
                leaves.append((prefix + name, value))
            elif kind == "one" and value is not None:
                walk(value, inner, f"{prefix}{name}.")
            elif kind == "many":
                assert value, f"{prefix}{name} is empty: nothing planted there"
                for item in value:
                    walk(item, inner, f"{prefix}{name}.")

    walk(to_dict(full_referral()), phi_plan(Referral), "")
    assert len(leaves) >= 25
    for path, value in leaves:
        text = json.dumps(value)
        assert "CANARY" in text or "1899-02-03" in text or text == "true", path
    declared = {(c.__name__, f) for c in (Referral,) for f in phi_fields(c)}
    assert {("Referral", p) for p, _ in leaves if "." not in p} == declared


def _reference_leaves(data: Any, plan: Any, prefix: str, strict: bool) -> list[Any]:
    """The PHI walk as a plain recursion over the plan (what the generated walker unrolls)."""
    into: list[Any] = []
    if strict and type(data) is not dict:
        raise TypeError(prefix)
    for name, kind, inner in plan:
        value = data.get(name)
        if value is None:
            continue
        if kind == "phi":
            into.append((data, name, prefix + name))
        elif kind == "one":
            into += _reference_leaves(value, inner, f"{prefix}{name}.", strict)
        else:
            if strict and type(value) is not list:
                raise TypeError(prefix)
            for position, item in enumerate(value):
                into += _reference_leaves(item, inner, f"{prefix}{name}.{position}.", strict)
    return into


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("prefix", ["", "x."])
def test_the_generated_phi_walk_finds_what_the_recursive_walk_does(
    strict: bool, prefix: str
) -> None:
    """The same containers, keys and paths in the same order: a full referral (every list
    with two items), one with its optional parts and values ``None``, and an empty one."""
    from referralkit.storage._json import _phi_leaves

    full = to_dict(full_referral())
    for name, kind, _ in phi_plan(Referral):
        if kind == "many":
            full[name] = full[name] * 2
    sparse = to_dict(full_referral())
    for name, _, _ in phi_plan(Referral)[1::2]:
        sparse[name] = None
    sparse["patient"]["mrn"] = None
    for data in (full, sparse, {}):
        found: list[Any] = []
        _phi_leaves(data, phi_plan(Referral), prefix, found, strict)
        expected = _reference_leaves(data, phi_plan(Referral), prefix, strict)
        assert [(id(c), k, p) for c, k, p in found] == [(id(c), k, p) for c, k, p in expected]
    assert len(_reference_leaves(full, phi_plan(Referral), "", False)) > 30


@pytest.mark.parametrize(
    "data",
    [
        ["not", "a", "dict"],
        {"patient": "not a dict"},
        {"attachments": {"not": "a list"}},
        {"attachments": ["not a dict"]},
        {"coverage_decision": {"hits": [{"rule_id": "r"}, 3]}},
    ],
)
def test_the_strict_phi_walk_refuses_a_part_of_the_wrong_shape(data: Any) -> None:
    from referralkit.storage._json import _phi_leaves

    with pytest.raises(TypeError):
        _phi_leaves(data, phi_plan(Referral), "", [], strict=True)


def _raw(path: Path) -> bytes:
    """A SQLite file's bytes and its WAL's, if any."""
    wal = Path(f"{path}-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def scan(data: bytes, where: str) -> None:
    for needle in NEEDLES:
        assert needle not in data, f"plaintext PHI {needle!r} found in {where}"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


def filled(url: str, ring: KeyRing, count: int = 3) -> list[tuple[Referral, list[ReferralEvent]]]:
    with open_store(url, keys=ring) as store:
        return fill(store, count)


def fill(store: Any, count: int) -> list[tuple[Referral, list[ReferralEvent]]]:
    """``count`` full referrals restored, and one taken in and changed through the desk."""
    histories = [(r, history(r)) for r in (full_referral(f"ref-{k:04d}") for k in range(count))]
    store.restore_many(histories)
    desk = ReferralDesk(
        store,
        clock=FakeClock(AT),
        coverage=CanaryPolicy(),
        urgency=CanaryPolicy(),
        new_id=lambda: "desk-0001",
    )
    made = desk.intake(ACTOR, canary_request("SRC-desk"))
    desk.log_communication(ACTOR, made.id, Channel.PHONE, Direction.OUTBOUND, "CANARY-x")
    return histories


# --------------------------------------------------------------------------- canary scans


class TestNoPlaintextAtRest:
    def test_sqlite_file_wal_backup_and_dump(self, tmp_path: Path, ring: KeyRing) -> None:
        """The file, its WAL (read before a checkpoint folds it in), a backup and a dump hold
        no canary; the same data reads back whole."""
        path = tmp_path / "e.db"
        with SQLiteStore(path, keys=ring) as store:
            histories = fill(store, 3)
            wal = Path(f"{path}-wal").read_bytes()
            assert wal  # the WAL is really there to scan
            scan(wal, "the WAL")
            scan(path.read_bytes(), "the database file")
            store.backup(tmp_path / "backup.db")
            scan((tmp_path / "backup.db").read_bytes(), "the backup")
            dump(store, tmp_path / "dump.jsonl")
            scan((tmp_path / "dump.jsonl").read_bytes(), "the dump")
            for referral, events in histories:
                assert store.load(referral.id) == referral
                assert store.events(referral.id) == events
            assert store.query(Query(patient_id=histories[0][0].patient.id))
        lines = (tmp_path / "dump.jsonl").read_text().splitlines(keepends=True)
        with open_store("memory://", keys=ring) as target:
            assert load_dump(target, lines, verify=False) == 4
            assert target.load(histories[0][0].id) == histories[0][0]
        with pytest.raises(EncryptionKeyError):
            load_dump(open_store("memory://"), lines)

    def test_the_canaries_are_found_without_encryption(self, tmp_path: Path) -> None:
        """The scan can fail: unencrypted, the same data shows its canaries."""
        path = tmp_path / "plain.db"
        with open_store(f"sqlite:///{path}") as store:
            referral = full_referral()
            store.restore_many([(referral, history(referral))])
        raw = _raw(path)
        assert b"CANARY" in raw
        assert b"1899-02-03" in raw

    def test_postgresql_pg_dump(self, postgres_schema: str, ring: KeyRing) -> None:
        """pg_dump of the test schema holds no canary; the store reads it back whole."""
        if shutil.which("pg_dump") is None:  # pragma: no cover - pg_dump is installed here
            pytest.skip("pg_dump is not installed")
        histories = filled(postgres_schema, ring)
        schema = postgres_schema.rsplit("schema=", 1)[1]
        base = postgres_schema.split("?", 1)[0]
        dumped = subprocess.run(
            ["pg_dump", "--dbname", base, "--schema", schema, "--data-only"],
            capture_output=True,
            check=True,
        ).stdout
        assert b"~e1:" in dumped  # the rows are there, encrypted
        scan(dumped, "pg_dump")
        with open_store(postgres_schema, keys=ring) as store:
            for referral, events in histories:
                assert store.load(referral.id) == referral
                assert store.events(referral.id) == events
            assert [r.id for r in store.query(Query(patient_id=histories[1][0].patient.id))]
            exported = {r.id: (r, e) for r, e in store.export()}
            assert exported[histories[0][0].id] == (histories[0][0], histories[0][1])
            assert len(list(store.event_histories())) == len(histories) + 1
        with open_store(postgres_schema) as store, pytest.raises(EncryptionKeyError):
            store.load(histories[0][0].id)


# --------------------------------------------------------------------------- wrong ciphertexts


def _rows(path: Path) -> dict[str, str]:
    with closing(sqlite3.connect(path)) as conn, conn:
        return dict(conn.execute("SELECT id, snapshot FROM referrals"))


def _put(path: Path, referral_id: str, snapshot: str) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE referrals SET snapshot = ? WHERE id = ?", (snapshot, referral_id))


def _reseal(text: str, referral_id: str) -> str:
    """``text`` with a correct checksum again: what an attacker who knows the format can
    do; then only GCM's tag and associated data stand in the way."""
    from referralkit.storage._json import _seal

    head, rest = text.split(",", 1)
    key_id = head.split('"')[3].split(":")[0]
    return _seal("{" + rest, referral_id + "\x00snapshot", key_id)


def _field(text: str, *path: str) -> str:
    body = json.loads("{" + text.split(",", 1)[1])
    for step in path:
        body = body[step]
    return str(body)


FORMAT_1 = Path(__file__).parents[1] / "data" / "snapshot-format-1"


def format_1_store(folder: Path) -> tuple[Path, KeyRing]:
    """A copy of the store the code before snapshot format 2 wrote
    (``tests/data/snapshot-format-1``: ``fill(store, 3)``, one ciphertext per PHI field) and
    its key ring."""
    path = folder / "format-1.db"
    shutil.copyfile(FORMAT_1 / "store.db", path)
    return path, KeyRing.load(FORMAT_1 / "keys.json")


def _body(text: str) -> dict[str, Any]:
    return dict(json.loads("{" + text.split(",", 1)[1]))


@pytest.fixture(params=["format 1", "format 2"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, KeyRing]:
    """An encrypted SQLite store holding ref-0000, ref-0001 and desk-0001 (at least), its
    snapshots in the format named, and its ring."""
    if request.param == "format 1":
        return format_1_store(tmp_path)
    ring = KeyRing.generate()
    path = tmp_path / "e.db"
    filled(f"sqlite:///{path}", ring, count=2)
    return path, ring


def _error(path: Path, ring: KeyRing, referral_id: str) -> ReferralKitError:
    with SQLiteStore(path, keys=ring) as store:
        with pytest.raises(StorageError) as info:
            store.load(referral_id)
        for found in (str(info.value), repr(info.value)):
            assert "CANARY" not in found
    return info.value


class TestWrongCiphertexts:
    """In either snapshot format."""

    def test_a_whole_snapshot_moved_to_another_row(self, stored: tuple[Path, KeyRing]) -> None:
        path, ring = stored
        rows = _rows(path)
        _put(path, "ref-0001", rows["ref-0000"])
        error = _error(path, ring, "ref-0001")
        assert isinstance(error, CorruptRecordError)
        assert error.referral_id == "ref-0001"

    def test_a_whole_snapshot_moved_to_another_row_and_resealed(
        self, stored: tuple[Path, KeyRing]
    ) -> None:
        path, ring = stored
        _put(path, "ref-0001", _reseal(_rows(path)["ref-0000"], "ref-0001"))
        assert isinstance(_error(path, ring, "ref-0001"), CorruptRecordError)

    def test_an_event_payload_moved(self, stored: tuple[Path, KeyRing]) -> None:
        path, ring = stored
        with closing(sqlite3.connect(path)) as conn, conn:
            payload = conn.execute(
                "SELECT payload FROM events WHERE referral_id = 'ref-0000' AND version = 2"
            ).fetchone()[0]
            conn.execute(
                "UPDATE events SET payload = ? WHERE referral_id = 'ref-0001' AND version = 2",
                (payload,),
            )
        with SQLiteStore(path, keys=ring) as store:
            with pytest.raises(CorruptRecordError, match="ref-0001"):
                store.events("ref-0001")
            with pytest.raises(CorruptRecordError, match="ref-0001"):
                list(store.event_histories())

    def test_a_wrong_key_ring(self, stored: tuple[Path, KeyRing]) -> None:
        path, _ = stored
        with SQLiteStore(path, keys=KeyRing.generate()) as store, pytest.raises(EncryptionKeyError):
            store.load("ref-0000")

    def test_a_wrong_key_under_the_right_id(self, stored: tuple[Path, KeyRing]) -> None:
        path, ring = stored
        forged = KeyRing({ring.primary_id: os.urandom(32)}, ring.primary_id, os.urandom(32))
        error = _error(path, forged, "ref-0000")
        assert isinstance(error, CorruptRecordError)

    def test_no_key_ring_at_all(self, stored: tuple[Path, KeyRing]) -> None:
        path, _ = stored
        with SQLiteStore(path) as store:
            with pytest.raises(EncryptionKeyError, match="open the store with its key ring"):
                store.load("ref-0000")
            with pytest.raises(EncryptionKeyError):
                store.events("ref-0000")


class TestWrongFieldCiphertextsFormat1:
    """Format 1 (bytes the code before format 2 wrote): each PHI field its own ciphertext,
    bound to its referral and field path."""

    @pytest.fixture
    def stored(self, tmp_path: Path) -> tuple[Path, KeyRing]:
        return format_1_store(tmp_path)

    def test_the_fixture_is_format_1_and_reads(self, stored: tuple[Path, KeyRing]) -> None:
        path, ring = stored
        text = _rows(path)["ref-0000"]
        assert _field(text, "patient", "mrn").startswith("~e1:" + ring.primary_id + ":")
        assert '"~v"' not in text
        with SQLiteStore(path, keys=ring) as store:
            assert store.load("ref-0000") == full_referral("ref-0000")
            assert store.events("ref-0000") == history(full_referral("ref-0000"))

    def test_a_field_moved_to_another_row_even_resealed(self, stored: tuple[Path, KeyRing]) -> None:
        path, ring = stored
        rows = _rows(path)
        theirs = _field(rows["ref-0000"], "patient", "mrn")
        ours = _field(rows["ref-0001"], "patient", "mrn")
        moved = _reseal(rows["ref-0001"].replace(ours, theirs), "ref-0001")
        _put(path, "ref-0001", moved)
        error = _error(path, ring, "ref-0001")
        assert isinstance(error, CorruptRecordError)
        assert "patient.mrn" in str(error)

    def test_a_field_moved_to_another_field_even_resealed(
        self, stored: tuple[Path, KeyRing]
    ) -> None:
        path, ring = stored
        text = _rows(path)["ref-0001"]
        mrn = _field(text, "patient", "mrn")
        given = _field(text, "patient", "given_name")
        moved = _reseal(text.replace(given, mrn), "ref-0001")
        _put(path, "ref-0001", moved)
        error = _error(path, ring, "ref-0001")
        assert isinstance(error, CorruptRecordError)
        assert "patient.given_name" in str(error)

    def test_a_truncated_ciphertext_even_resealed(self, stored: tuple[Path, KeyRing]) -> None:
        path, ring = stored
        text = _rows(path)["ref-0001"]
        mrn = _field(text, "patient", "mrn")
        for cut in (1, 4, 17, len(mrn) - 8):
            _put(path, "ref-0001", _reseal(text.replace(mrn, mrn[:-cut]), "ref-0001"))
            assert isinstance(_error(path, ring, "ref-0001"), CorruptRecordError)


def _format_2_damaged(rows: dict[str, str], damage: str) -> str:
    """ref-0001's format 2 snapshot damaged as named (resealed unless ``checksum``)."""
    text = rows["ref-0001"]
    body = _body(text)
    other = _body(rows["ref-0000"])
    if damage == "ciphertext moved":
        body["~e"] = other["~e"]
    elif damage == "ciphertext truncated":
        body["~e"] = body["~e"][:-6]
    elif damage == "ciphertext cut short":
        body["~e"] = body["~e"][:30]
    elif damage == "field list changed":
        fields = body["~f"].split(",")
        fields[1], fields[2] = fields[2], fields[1]  # patient.mrn <-> patient.given_name
        body["~f"] = ",".join(fields)
    elif damage == "field list shortened":
        body["~f"] = body["~f"].rsplit(",", 1)[0]
    elif damage == "clear part edited":
        body["status"] = "completed" if body["status"] != "completed" else "draft"
    elif damage == "clear part reshaped":
        body["patient"] = [body["patient"]]
    elif damage == "field in clear":
        body["patient"]["pregnant"] = True
    elif damage == "layout":
        body = {k: v for k, v in body.items() if k != "~e"} | {"~e": body["~e"]}
    elif damage == "not JSON":
        return _reseal(text.split(",", 1)[0] + ',"~v":2,"~f":"x', "ref-0001")
    elif damage == "checksum":
        return text.replace(body["~e"], body["~e"][:-8] + "AAAAAAA=")
    else:  # pragma: no cover - a damage the list does not name
        raise AssertionError(damage)
    return _reseal(
        text.split(",", 1)[0] + "," + json.dumps(body, separators=(",", ":"))[1:], "ref-0001"
    )


FORMAT_2_DAMAGES = [
    "ciphertext moved",
    "ciphertext truncated",
    "ciphertext cut short",
    "field list changed",
    "field list shortened",
    "clear part edited",
    "clear part reshaped",
    "field in clear",
    "layout",
    "not JSON",
    "checksum",
]


class TestWrongCiphertextFormat2:
    """Format 2: one ciphertext per snapshot, bound to its referral, the record kind, the
    list of PHI field paths and the record's clear part."""

    @pytest.fixture
    def stored(self, tmp_path: Path) -> tuple[Path, KeyRing]:
        ring = KeyRing.generate()
        path = tmp_path / "e.db"
        filled(f"sqlite:///{path}", ring, count=2)
        return path, ring

    def test_one_ciphertext_and_the_field_list(self, stored: tuple[Path, KeyRing]) -> None:
        path, _ = stored
        text = _rows(path)["ref-0000"]
        body = _body(text)
        assert list(body)[:3] == ["~v", "~f", "~e"]
        assert body["~v"] == 2
        assert text.count("~e1:") == 0
        fields = body["~f"].split(",")
        assert fields[:3] == ["patient.id", "patient.mrn", "patient.given_name"]
        assert "communications.0.summary" in fields
        assert "mrn" not in body["patient"]
        assert "id" not in body["patient"]
        scan(text.encode(), "a format 2 snapshot")

    @pytest.mark.parametrize("damage", FORMAT_2_DAMAGES)
    def test_a_damaged_snapshot_is_a_corrupt_record(
        self, stored: tuple[Path, KeyRing], damage: str
    ) -> None:
        path, ring = stored
        _put(path, "ref-0001", _format_2_damaged(_rows(path), damage))
        error = _error(path, ring, "ref-0001")
        assert isinstance(error, CorruptRecordError)
        assert error.referral_id == "ref-0001"
        with SQLiteStore(path, keys=ring) as store:
            assert store.load("ref-0000") == full_referral("ref-0000")

    def test_a_snapshot_ciphertext_put_in_an_event_payload(
        self, stored: tuple[Path, KeyRing]
    ) -> None:
        from referralkit.storage._json import _event_context, _seal

        path, ring = stored
        token = _body(_rows(path)["ref-0001"])["~e"]
        with closing(sqlite3.connect(path)) as conn, conn:
            row = conn.execute(
                "SELECT referral_id, version, idx, at, actor, type FROM events "
                "WHERE referral_id = 'ref-0001' AND version = 2"
            ).fetchone()
            payload = '{"~p":"~e1:' + ring.primary_id + ":" + token + '"}'
            conn.execute(
                "UPDATE events SET payload = ? WHERE referral_id = 'ref-0001' AND version = 2",
                (_seal(payload, _event_context(*row), ring.primary_id, "1"),),
            )
        with (
            SQLiteStore(path, keys=ring) as store,
            pytest.raises(CorruptRecordError, match="ref-0001"),
        ):
            store.events("ref-0001")


# --------------------------------------------------------------------------- snapshot formats

_TOKEN = re.compile(r"~e1:[A-Za-z0-9_-]+:[A-Za-z0-9+/=]+")


def format_1_text(ring: KeyRing, referral: Referral) -> str:
    """A snapshot's stored text in format 1, written by the per-field encryption the
    store keeps for dumps (checked against the committed fixture below)."""
    from referralkit.storage._json import RecordCodec, _seal, _snapshot_dump

    codec = RecordCodec(ring)
    data = to_dict(referral)
    codec._encrypt(data, phi_plan(Referral), referral.id, "", ring.primary_id)
    return _seal(_snapshot_dump(data), referral.id + "\x00snapshot", ring.primary_id)


def to_format_1(path: Path, ring: KeyRing, referrals: list[Referral]) -> None:
    """Rewrite the snapshots of ``referrals`` in ``path`` in format 1."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "UPDATE referrals SET snapshot = ? WHERE id = ?",
            [(format_1_text(ring, r), r.id) for r in referrals],
        )


def _formats(path: Path) -> dict[str, tuple[str, int]]:
    """Each referral's snapshot ``(key id, format)``."""
    found = {}
    for referral_id, text in _rows(path).items():
        key_id = text.split('"')[3].split(":")[0]
        found[referral_id] = (key_id, 2 if text.split(",", 1)[1].startswith('"~v":2,') else 1)
    return found


class TestSnapshotFormats:
    def test_the_old_writer_kept_here_writes_the_fixture_s_format(self, tmp_path: Path) -> None:
        """The committed format 1 store (bytes the code before format 2 wrote) and the text
        ``format_1_text`` writes are the same but for the ciphertexts (fresh nonces)."""
        path, ring = format_1_store(tmp_path)
        rows = _rows(path)
        for referral_id in ("ref-0000", "ref-0001", "ref-0002"):
            ours = format_1_text(ring, full_referral(referral_id))
            theirs = rows[referral_id]
            assert (
                _TOKEN.sub("~", ours).split(",", 1)[1] == _TOKEN.sub("~", theirs).split(",", 1)[1]
            )
            assert len(_TOKEN.findall(ours)) == len(_TOKEN.findall(theirs)) >= 25

    def test_a_format_1_store_reads_everywhere(self, tmp_path: Path) -> None:
        path, ring = format_1_store(tmp_path)
        expected = {r.id: r for r in (full_referral(f"ref-{k:04d}") for k in range(3))}
        with SQLiteStore(path, keys=ring) as store:
            assert all(store.load(i) == r for i, r in expected.items())
            exported = {r.id: (r, events) for r, events in store.export()}
            assert {i: exported[i][0] for i in expected} == expected
            assert all(exported[i][1] == history(r) for i, r in expected.items())
            patient = expected["ref-0001"].patient.id
            found = [r.id for r in store.query(Query(patient_id=patient))]
            assert "ref-0001" in found
            assert all(store.load(i).patient.id == patient for i in found)
            assert len(store.query(Query())) == 4

    def test_a_format_1_snapshot_reads_on_postgresql(
        self, tmp_path: Path, postgres_schema: str
    ) -> None:
        """The fixture's format 1 texts, put into a PostgreSQL store (its json column), read
        back equal; rotation rewrites them in format 2."""
        import psycopg

        from referralkit.storage.postgres import connection_settings

        path, ring = format_1_store(tmp_path)
        rows = _rows(path)
        histories = filled(postgres_schema, ring, count=3)
        url, schema = connection_settings(postgres_schema)
        with psycopg.connect(url, autocommit=True) as conn:
            for referral, _ in histories:
                conn.execute(
                    f"UPDATE {schema}.referrals SET snapshot = %s WHERE id = %s",
                    (rows[referral.id], referral.id),
                )
        with open_store(postgres_schema, keys=ring) as store:
            for referral, events in histories:
                assert store.load(referral.id) == referral
                assert store.events(referral.id) == events
            new = ring.with_new_key()
        with open_store(postgres_schema, keys=new) as store:
            assert rotate_keys(store).rewritten > 0
            assert rotate_keys(store).rewritten == 0
            for referral, _ in histories:
                assert store.load(referral.id) == referral
        with psycopg.connect(url, autocommit=True) as conn:
            texts = [t for (t,) in conn.execute(f"SELECT snapshot::text FROM {schema}.referrals")]
        assert texts
        assert all('"~v":2,' in t and new.primary_id in t.split(",", 1)[0] for t in texts)

    def test_a_mixed_store_during_rotation(self, tmp_path: Path) -> None:
        """Format 1 and format 2 snapshots, on the old key and the new, side by side (a
        rotation half done, writes meanwhile): every referral reads; the rotation finishes
        with every snapshot in format 2 on the new key."""
        path, ring = format_1_store(tmp_path)
        new = ring.with_new_key()
        expected = {r.id: r for r in (full_referral(f"ref-{k:04d}") for k in range(3))}
        with SQLiteStore(path, keys=new) as store:
            last, count = store._rotate_batch("", 1)  # one batch of one referral
            assert last == "desk-0001"
            assert count == 1 + len(store.events("desk-0001"))
            desk = ReferralDesk(store, clock=FakeClock(AT))
            changed = desk.assign(ACTOR, "ref-0002", "owner-x")  # written in format 2 (new key)
            expected["ref-0002"] = changed
            assert _formats(path) == {
                "desk-0001": (new.primary_id, 2),
                "ref-0000": (ring.primary_id, 1),
                "ref-0001": (ring.primary_id, 1),
                "ref-0002": (new.primary_id, 2),
            }
            assert all(store.load(i) == r for i, r in expected.items())
            done = rotate_keys(store, after=last)
            # two snapshots and their three events each, ref-0002's three older events
            assert done.rewritten == 2 * 4 + 3
            assert rotate_keys(store).rewritten == 0
            assert all(store.load(i) == r for i, r in expected.items())
        assert set(_formats(path).values()) == {(new.primary_id, 2)}

    def test_a_format_1_record_on_the_primary_key_is_rewritten(self, tmp_path: Path) -> None:
        """Rotation onto the key a format 1 store already uses moves its snapshots into
        format 2 (the events, one ciphertext each already, stay as they are)."""
        path, ring = format_1_store(tmp_path)
        with SQLiteStore(path, keys=ring) as store:
            assert rotate_keys(store).rewritten == 4
            assert rotate_keys(store).rewritten == 0
            assert store.load("ref-0001") == full_referral("ref-0001")
        assert set(_formats(path).values()) == {(ring.primary_id, 2)}

    def test_rotation_killed_and_resumed_across_formats(self, tmp_path: Path) -> None:
        """kill -9 at random points of a rotation of a format 1 store onto a new key, then
        run again: every referral reads, nothing is lost, every snapshot ends in format 2."""
        path = tmp_path / "e.db"
        ring = KeyRing.generate()
        histories = [(r, history(r)) for r in (full_referral(f"ref-{k:05d}") for k in range(300))]
        with open_store(f"sqlite:///{path}", keys=ring) as store:
            store.restore_many(histories)
        to_format_1(path, ring, [r for r, _ in histories])
        assert set(_formats(path).values()) == {(ring.primary_id, 1)}
        new = ring.with_new_key()
        new.save(tmp_path / "new.json")
        chance = random.Random(29)
        for _ in range(3):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from referralkit.storage import open_store, rotate_keys; "
                    "s = open_store(sys.argv[1], keys=sys.argv[2]); "
                    "rotate_keys(s, batch=7, progress=lambda last, n: print(last, flush=True))",
                    f"sqlite:///{path}",
                    str(tmp_path / "new.json"),
                ],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            assert process.stdout is not None
            for _ in range(chance.randint(1, 15)):
                if not process.stdout.readline():
                    break
            time.sleep(chance.random() * 0.05)
            process.send_signal(signal.SIGKILL)
            process.wait()
            process.stdout.close()
        formats = set(_formats(path).values())
        assert (new.primary_id, 2) in formats  # some batches done before the kills
        with open_store(f"sqlite:///{path}", keys=new) as store:
            rotate_keys(store)
            assert rotate_keys(store).rewritten == 0
            for referral, events in histories:
                assert store.load(referral.id) == referral
                assert store.events(referral.id) == events
        assert set(_formats(path).values()) == {(new.primary_id, 2)}


# --------------------------------------------------------------------------- migration, rotation


def _plain_store(path: Path, count: int) -> list[tuple[Referral, list[ReferralEvent]]]:
    histories = [(r, history(r)) for r in (full_referral(f"ref-{k:05d}") for k in range(count))]
    with open_store(f"sqlite:///{path}") as store:
        store.restore_many(histories)
    return histories


class TestRotation:
    def test_an_unencrypted_store_is_encrypted_by_rotation(self, tmp_path: Path) -> None:
        """The documented migration: rotate an unencrypted store onto a key ring."""
        path = tmp_path / "plain.db"
        histories = _plain_store(path, 12)
        ring = KeyRing.generate()
        with open_store(f"sqlite:///{path}", keys=ring) as store:
            # mixed rows read (and the patient lookup finds clear and blind-indexed rows)
            assert store.load("ref-00000") == histories[0][0]
            done = rotate_keys(store, batch=5)
            assert done.batches == 3
            assert done.rewritten == 12 * 4
            assert rotate_keys(store).rewritten == 0
            for referral, events in histories:
                assert store.load(referral.id) == referral
                assert store.events(referral.id) == events
            patient = histories[3][0].patient.id
            assert histories[3][0] in store.query(Query(patient_id=patient))
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
        scan(path.read_bytes(), "the encrypted file")

    def test_rotation_onto_a_new_key_while_the_store_is_in_use(self, tmp_path: Path) -> None:
        path = tmp_path / "e.db"
        ring = KeyRing.generate()
        histories = filled(f"sqlite:///{path}", ring, count=30)
        new = ring.with_new_key()
        with SQLiteStore(path, keys=new) as store:
            desk = ReferralDesk(store, clock=FakeClock(AT))
            stop = threading.Event()
            written: list[int] = []

            def work() -> None:
                for k in itertools.count():
                    if stop.is_set():
                        return
                    referral_id = histories[k % 30][0].id
                    desk.assign(ACTOR, referral_id, f"owner-{k}")
                    written.append(k)

            worker = threading.Thread(target=work)
            worker.start()
            try:
                rotate_keys(store, batch=4)
            finally:
                stop.set()
                worker.join()
            assert written
            rotate_keys(store)  # what the worker wrote meanwhile is on the new key already
            assert rotate_keys(store).rewritten == 0
        old_only = KeyRing(
            {ring.primary_id: ring.key(ring.primary_id)}, ring.primary_id, ring.index_key()
        )
        with SQLiteStore(path, keys=old_only) as store, pytest.raises(EncryptionKeyError):
            store.load(histories[0][0].id)
        with SQLiteStore(path, keys=new) as store:
            for referral, _ in histories:
                assert store.load(referral.id).id == referral.id
                assert len(store.events(referral.id)) >= 3

    def test_rotation_killed_and_resumed(self, tmp_path: Path) -> None:
        """kill -9 at a random point of a rotation, then run it again: every referral
        decrypts with the new ring and nothing is lost."""
        path = tmp_path / "e.db"
        ring = KeyRing.generate()
        ring.save(tmp_path / "old.json")
        histories = _plain_store(path, 400)
        with open_store(f"sqlite:///{path}", keys=ring) as store:
            rotate_keys(store)
        new = ring.with_new_key()
        new.save(tmp_path / "new.json")
        chance = random.Random(13)
        for attempt in range(3):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from referralkit.storage import open_store, rotate_keys; "
                    "s = open_store(sys.argv[1], keys=sys.argv[2]); "
                    "rotate_keys(s, batch=7, progress=lambda last, n: print(last, flush=True))",
                    f"sqlite:///{path}",
                    str(tmp_path / "new.json"),
                ],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            assert process.stdout is not None
            for _ in range(chance.randint(1, 20)):
                if not process.stdout.readline():
                    break
            time.sleep(chance.random() * 0.05)
            process.send_signal(signal.SIGKILL)
            process.wait()
            process.stdout.close()
            if attempt == 0:
                assert process.returncode == -signal.SIGKILL
        with open_store(f"sqlite:///{path}", keys=new) as store:
            rotate_keys(store)
            assert rotate_keys(store).rewritten == 0
            for referral, events in histories:
                assert store.load(referral.id) == referral
                assert store.events(referral.id) == events
            assert sum(1 for _ in store.export()) == len(histories)
        with closing(sqlite3.connect(path)) as conn, conn:
            head = '{"~c":"' + new.primary_id + ":"
            for table, column in (("referrals", "snapshot"), ("events", "payload")):
                rows = conn.execute(f"SELECT {column} FROM {table}").fetchall()
                assert rows
                assert all(row[0].startswith(head) for row in rows)

    def test_rotation_on_postgresql(self, postgres_schema: str) -> None:
        ring = KeyRing.generate()
        histories = filled(postgres_schema, ring, count=9)
        new = ring.with_new_key()
        with open_store(postgres_schema, keys=new) as store:
            done = rotate_keys(store, batch=4)
            assert done.batches == 3
            assert done.rewritten == 9 * 4 + 1 + 4
            assert rotate_keys(store).rewritten == 0
            for referral, events in histories:
                assert store.load(referral.id) == referral
                assert store.events(referral.id) == events

    @pytest.mark.parametrize(
        "damage",
        [
            "field moved",
            "field truncated",
            "field cut short",
            "wrong shape",
            "field in clear",
            "patient id gone",
            "not JSON",
            "checksum",
            "payload moved",
            "payload replaced",
            "event time",
        ],
    )
    def test_a_damaged_record_stops_the_rotation(
        self, tmp_path: Path, ring: KeyRing, damage: str
    ) -> None:
        """Rotation opens every ciphertext (its associated data checked) before it seals it
        again: a ciphertext moved, cut or replaced, resealed or not, stops it with a
        CorruptRecordError naming the referral, and the batch is not written. The field
        damages are done to a format 1 store (one ciphertext per field); the format 2 ones
        below."""
        from referralkit.storage._json import _event_context, _seal

        path, ring = format_1_store(tmp_path)
        rows = _rows(path)
        text = rows["ref-0001"]
        mrn = _field(text, "patient", "mrn")
        head, rest = text.split(",", 1)
        body = json.loads("{" + rest)
        with closing(sqlite3.connect(path)) as conn, conn:
            if damage == "field moved":
                _put(
                    path,
                    "ref-0001",
                    _reseal(
                        text.replace(mrn, _field(rows["ref-0000"], "patient", "mrn")), "ref-0001"
                    ),
                )
            elif damage == "field truncated":
                _put(path, "ref-0001", _reseal(text.replace(mrn, mrn[:-6]), "ref-0001"))
            elif damage == "field cut short":
                _put(path, "ref-0001", _reseal(text.replace(mrn, mrn[:30]), "ref-0001"))
            elif damage == "wrong shape":
                body["patient"] = [body["patient"]]
                _put(path, "ref-0001", _reseal(head + "," + json.dumps(body)[1:], "ref-0001"))
            elif damage == "field in clear":
                _put(path, "ref-0001", _reseal(text.replace(mrn, "MRN-1"), "ref-0001"))
            elif damage == "patient id gone":
                del body["patient"]["id"]
                _put(path, "ref-0001", _reseal(head + "," + json.dumps(body)[1:], "ref-0001"))
            elif damage == "not JSON":
                _put(path, "ref-0001", _reseal(head + ",broken", "ref-0001"))
            elif damage == "checksum":
                _put(path, "ref-0001", text.replace(mrn, mrn[:-4] + "AAA="))
            else:
                row = conn.execute(
                    "SELECT referral_id, version, idx, at, actor, type, payload FROM events "
                    "WHERE referral_id = 'ref-0001' AND version = 2"
                ).fetchone()
                key_id = row[6].split('"')[3].split(":")[0]
                if damage == "payload moved":
                    other = conn.execute(
                        "SELECT payload FROM events WHERE referral_id = 'ref-0000' AND version = 2"
                    ).fetchone()[0]
                    body_text = "{" + other.split(",", 1)[1]
                    stored = _seal(body_text, _event_context(*row[:6]), key_id, "1")
                elif damage == "payload replaced":
                    stored = _seal('{"note":"x"}', _event_context(*row[:6]), key_id, "1")
                else:
                    stored = row[6]
                    conn.execute(
                        "UPDATE events SET at = 'not a time' WHERE referral_id = 'ref-0001' "
                        "AND version = 2"
                    )
                conn.execute(
                    "UPDATE events SET payload = ? WHERE referral_id = 'ref-0001' AND version = 2",
                    (stored,),
                )
        before = _rows(path)
        with SQLiteStore(path, keys=ring.with_new_key()) as store:
            with pytest.raises(CorruptRecordError, match="ref-0001") as info:
                rotate_keys(store, batch=10)
            assert "CANARY" not in str(info.value)
        assert _rows(path) == before

    @pytest.mark.parametrize("damage", FORMAT_2_DAMAGES)
    def test_a_damaged_format_2_snapshot_stops_the_rotation(
        self, tmp_path: Path, ring: KeyRing, damage: str
    ) -> None:
        """A format 2 snapshot is rotated without parsing it, but its ciphertext is opened
        first, with the field list and the whole clear part as associated data: any damage,
        resealed or not, stops the rotation before its batch is written."""
        path = tmp_path / "e.db"
        filled(f"sqlite:///{path}", ring, count=2)
        _put(path, "ref-0001", _format_2_damaged(_rows(path), damage))
        before = _rows(path)
        with SQLiteStore(path, keys=ring.with_new_key()) as store:
            with pytest.raises(CorruptRecordError, match="ref-0001") as info:
                rotate_keys(store, batch=10)
            assert "CANARY" not in str(info.value)
        assert _rows(path) == before

    def test_rotation_needs_a_key_ring(self, tmp_path: Path) -> None:
        with open_store(f"sqlite:///{tmp_path / 'x.db'}") as store:
            with pytest.raises(EncryptionKeyError):
                rotate_keys(store)
            with pytest.raises(ReferralKitError):
                rotate_keys(store, batch=0)
        assert rotate_keys(open_store("memory://", keys=KeyRing.generate())).batches == 0


# --------------------------------------------------------------------------- bit flips


def _read_all(path: Path, ring: KeyRing | None, ids: list[str]) -> Any:
    with SQLiteStore(path, keys=ring, migrate=False) as store:
        return [(store.load(i), store.events(i)) for i in ids], list(store.export())


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_bit_flips_are_detected_or_harmless(tmp_path: Path, encrypted: bool) -> None:
    """300 random single-bit flips of a SQLite file (checkpointed, so every row is in the
    main file): every flip is either detected on read (a StorageError: a corrupt record, or
    SQLite's own malformed-database error) or changes no value read back."""
    ring = KeyRing.generate() if encrypted else None
    path = tmp_path / "f.db"
    histories = [(r, history(r)) for r in (full_referral(f"ref-{k:04d}") for k in range(6))]
    with SQLiteStore(path, keys=ring) as store:
        store.restore_many(histories)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    ids = [r.id for r, _ in histories]
    expected = _read_all(path, ring, ids)
    pristine = path.read_bytes()
    chance = random.Random(20261130)
    detected = harmless = 0
    for _ in range(300):
        data = bytearray(pristine)
        position = chance.randrange(len(data))
        data[position] ^= 1 << chance.randrange(8)
        path.write_bytes(bytes(data))
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        try:
            found = _read_all(path, ring, ids)
        except StorageError:  # anything else (a bug, a non-library error) fails the test
            detected += 1
            continue
        assert found == expected, f"a flip at byte {position} changed data with no error"
        harmless += 1
    assert detected > 0
    assert detected + harmless == 300


# --------------------------------------------------------------------------- the command line


class TestCommandLine:
    def test_keys_init_add_rotate_and_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from referralkit.cli import build_parser, main

        keys = tmp_path / "keys.json"
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        assert main(["keys", "init", str(keys)]) == 0
        assert keys.stat().st_mode & 0o777 == 0o600
        assert main(["keys", "init", str(keys)]) == 2
        assert "never overwritten" in err.getvalue()
        db = f"sqlite:///{tmp_path / 'demo.db'}"
        monkeypatch.setenv("REFERRALKIT_KEYS", str(keys))
        assert main(["demo", "--db", db, "--count", "15", "--weeks", "1"]) == 0
        assert b"~e1:" in _raw(tmp_path / "demo.db")
        assert main(["worklist", "--db", db, "--top", "3"]) == 0
        monkeypatch.delenv("REFERRALKIT_KEYS")
        err.truncate(0)
        assert main(["worklist", "--db", db]) == 2
        assert "REFERRALKIT_KEYS" in err.getvalue()
        assert main(["keys", "rotate", "--db", db]) == 2
        assert "--keys FILE or REFERRALKIT_KEYS" in err.getvalue()
        for bad in ("0", "x"):
            with pytest.raises(SystemExit):
                build_parser().parse_args(["keys", "rotate", "--db", db, "--batch", bad])
        assert main(["keys", "add", str(keys)]) == 0
        assert keys.stat().st_mode & 0o777 == 0o600
        assert len(KeyRing.load(keys).key_ids()) == 2
        out.truncate(0)
        assert main(["keys", "rotate", "--db", db, "--keys", str(keys), "--verbose"]) == 0
        assert "records moved onto key" in out.getvalue()
        monkeypatch.setenv("REFERRALKIT_KEYS", str(keys))
        assert main(["show", "--db", db, "--json", _first_id(tmp_path / "demo.db")]) == 0


def _first_id(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn, conn:
        return str(conn.execute("SELECT min(id) FROM referrals").fetchone()[0])
