"""Key rings, key ring files, the KeyProvider port and the blind index (issue 13, item 3)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from referralkit import (
    CorruptRecordError,
    EncryptionKeyError,
    KeyProvider,
    KeyRing,
    StorageError,
    ValidationError,
    open_store,
)
from referralkit.crypto import CIPHER_PREFIX, FieldCipher, _hmac_sha256, blind_index, load_keys
from referralkit.storage._json import PLAIN, RecordCodec, phi_plan
from referralkit.testing import FakeClock, sample_request


class TestKeyRing:
    def test_generate_add_and_read_keys(self) -> None:
        """A new ring has one primary key; a new key becomes the primary and the old one
        stays, to read."""
        ring = KeyRing.generate()
        assert ring.key_ids() == [ring.primary_id]
        assert len(ring.key(ring.primary_id)) == 32
        grown = ring.with_new_key()
        assert grown.primary_id != ring.primary_id
        assert set(grown.key_ids()) == {ring.primary_id, grown.primary_id}
        assert grown.key(ring.primary_id) == ring.key(ring.primary_id)
        assert grown.index_key() == ring.index_key()
        assert isinstance(ring, KeyProvider)
        assert repr(grown) == "KeyRing(<2 keys>)"
        with pytest.raises(EncryptionKeyError, match="does not hold key 'nope'"):
            ring.key("nope")

    @pytest.mark.parametrize(
        ("keys", "primary", "index", "path"),
        [
            ({}, "a", b"i" * 32, "keys"),
            ({"bad id!": b"k" * 32}, "bad id!", b"i" * 32, "keys"),
            ({"a": b"short"}, "a", b"i" * 32, "keys"),
            ({"a": b"k" * 32}, "b", b"i" * 32, "primary"),
            ({"a": b"k" * 32}, "a", b"short", "index_key"),
        ],
    )
    def test_a_bad_ring_is_refused(
        self, keys: dict[str, bytes], primary: str, index: bytes, path: str
    ) -> None:
        with pytest.raises(ValidationError) as info:
            KeyRing(keys, primary, index)
        assert info.value.path == path

    def test_the_blind_index_is_keyed_and_per_field(self) -> None:
        ring, other = KeyRing.generate(), KeyRing.generate()
        index = ring.blind_index("patient.id", "p-1")
        assert index.startswith("~b")
        assert "p-1" not in index
        assert index == blind_index(ring, "patient.id", "p-1")
        assert index != ring.blind_index("patient.mrn", "p-1")
        assert index != other.blind_index("patient.id", "p-1")

    @pytest.mark.parametrize("size", [0, 1, 32, 63, 64, 65, 200])
    def test_the_blind_index_is_hmac_sha256(self, size: int) -> None:
        """The HMAC made from cached padded-key states is RFC 2104's (as ``hmac`` makes
        it) for keys shorter than, equal to and longer than SHA-256's block."""
        key, message = os.urandom(size), os.urandom(size)
        assert _hmac_sha256(key, message) == hmac.digest(key, message, "sha256")
        assert _hmac_sha256(key, message) == hmac.digest(key, message, "sha256")  # cached
        ring = KeyRing.generate()
        mac = hmac.new(ring.index_key(), "patient.id\x00p-ü".encode(), hashlib.sha256)
        assert ring.blind_index("patient.id", "p-ü") == "~b" + mac.hexdigest()[:32]


class TestKeyRingFiles:
    def test_save_is_private_and_never_overwrites(self, tmp_path: Path) -> None:
        ring = KeyRing.generate()
        path = tmp_path / "keys.json"
        ring.save(path)
        assert path.stat().st_mode & 0o777 == 0o600
        loaded = KeyRing.load(path)
        assert loaded.primary_id == ring.primary_id
        assert loaded.key(ring.primary_id) == ring.key(ring.primary_id)
        assert loaded.index_key() == ring.index_key()
        with pytest.raises(EncryptionKeyError, match="never overwritten"):
            KeyRing.generate().save(path)
        grown = ring.with_new_key()
        grown.save(path, replace=True)
        assert path.stat().st_mode & 0o777 == 0o600
        assert KeyRing.load(path).primary_id == grown.primary_id
        assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("not json", "not a referralkit key ring file"),
            ('{"format": "other"}', "not a referralkit key ring file"),
            ('{"format": "referralkit-keys", "version": 2}', "unsupported"),
            ('{"format": "referralkit-keys", "version": 1}', "has no keys"),
            (
                '{"format": "referralkit-keys", "version": 1, "keys": {"a": "%%%"}}',
                "not base64",
            ),
            (
                '{"format": "referralkit-keys", "version": 1, "keys": {"a": 5}}',
                "not base64",
            ),
            (
                '{"format": "referralkit-keys", "version": 1, "keys": {"a": "AAAA"}, '
                '"primary": "a", "index_key": "AAAA"}',
                "invalid",
            ),
        ],
    )
    def test_a_bad_file_is_a_clear_error(self, tmp_path: Path, text: str, message: str) -> None:
        path = tmp_path / "keys.json"
        path.write_text(text)
        with pytest.raises(EncryptionKeyError, match=message) as info:
            KeyRing.load(path)
        assert "%%%" not in str(info.value)

    def test_a_missing_or_binary_file(self, tmp_path: Path) -> None:
        with pytest.raises(EncryptionKeyError, match="cannot read the key ring file"):
            KeyRing.load(tmp_path / "missing.json")
        (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
        with pytest.raises(EncryptionKeyError, match="not a referralkit key ring"):
            KeyRing.load(tmp_path / "binary")

    def test_load_keys(self, tmp_path: Path) -> None:
        ring = KeyRing.generate()
        ring.save(tmp_path / "k.json")
        assert load_keys(None) is None
        assert load_keys(ring) is ring
        found = load_keys(str(tmp_path / "k.json"))
        assert found is not None
        assert found.primary_id == ring.primary_id
        with pytest.raises(ValidationError, match="KeyProvider"):
            load_keys(42)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="KeyProvider"):
            open_store("memory://", keys=42)  # type: ignore[arg-type]


class TestFieldCipher:
    def test_round_trip_and_refusals(self) -> None:
        cipher = FieldCipher(KeyRing.generate())
        token = cipher.encrypt(b'"x"', b"r\x00patient.mrn")
        assert token.startswith(CIPHER_PREFIX + cipher.primary_id + ":")
        assert cipher.decrypt(token, b"r\x00patient.mrn") == b'"x"'
        from cryptography.exceptions import InvalidTag

        for bad in (5, "plain", token[:-4], CIPHER_PREFIX + cipher.primary_id + ":%%%"):
            with pytest.raises(InvalidTag):
                cipher.decrypt(bad, b"r\x00patient.mrn")
        with pytest.raises(InvalidTag):
            cipher.decrypt(token, b"r\x00patient.given_name")


class TestRecords:
    def test_plans_come_from_the_declaration(self) -> None:
        from referralkit import Patient, Referral

        plan = {name: kind for name, kind, _ in phi_plan(Referral)}
        assert plan["reason"] == "phi"
        assert plan["patient"] == "one"
        assert plan["communications"] == "many"
        assert {n for n, k, _ in phi_plan(Patient)} >= {"mrn", "birth_date", "contacts"}
        assert "status" not in plan

    def test_unsealed_rows_still_read_and_a_damaged_seal_is_refused(self, tmp_path: Path) -> None:
        """Rows written before sealing read as they are; a seal a flipped bit made
        unrecognisable is refused, not read as an old row."""
        import referralkit as rk

        path = tmp_path / "old.db"
        with open_store(f"sqlite:///{path}") as store:
            desk = rk.ReferralDesk(store, clock=FakeClock())
            me = rk.Actor("c", {rk.Role.COORDINATOR})
            made = desk.intake(me, sample_request())
        with closing(sqlite3.connect(path)) as conn, conn:
            text = conn.execute("SELECT snapshot FROM referrals").fetchone()[0]
            body, _, _ = PLAIN.unseal(text, made.id + "\x00snapshot", made.id, "snapshot")
            conn.execute("UPDATE referrals SET snapshot = ?", (body,))
            for key, payload in conn.execute("SELECT idx, payload FROM events").fetchall():
                unsealed = "{" + payload.split(",", 1)[1] if "," in payload else "{}"
                conn.execute("UPDATE events SET payload = ? WHERE idx = ?", (unsealed, key))
        with open_store(f"sqlite:///{path}") as store:
            assert store.load(made.id) == made
            assert len(store.events(made.id)) >= 1
        for damaged in ('{"~x":"', '{"zc":"'):
            with closing(sqlite3.connect(path)) as conn, conn:
                conn.execute("UPDATE referrals SET snapshot = ?", (damaged + 'x","id":1}',))
            with (
                open_store(f"sqlite:///{path}") as store,
                pytest.raises(CorruptRecordError, match="seal is damaged"),
            ):
                store.load(made.id)

    @pytest.mark.parametrize(
        "text",
        ['{"~c":"', '{"~c":"a:b"}', '{"~c":"::0000000000000000"x', '{"~c":"::0000000000000000"}'],
    )
    def test_broken_seals(self, text: str) -> None:
        with pytest.raises(CorruptRecordError):
            PLAIN.snapshot_data(text, "r-1")

    def test_not_text_and_not_objects(self) -> None:
        codec = RecordCodec(KeyRing.generate())
        for stored in (b"\xff", 5, [1]):
            with pytest.raises(CorruptRecordError, match="not JSON text"):
                codec.snapshot_data(stored, "r-1")
        from referralkit.storage._json import _seal

        for body in ("[1]", "{"):
            with pytest.raises(StorageError):
                codec.snapshot_data(_seal("{}", "r-1\x00snapshot")[:-1] + body, "r-1")
        sealed = _seal('{"patient":5}', "r-1\x00snapshot", "k")
        with pytest.raises(CorruptRecordError, match="shape"):
            codec.snapshot_data(sealed, "r-1")

    def test_parsed_json_from_a_driver_is_verified_too(self) -> None:
        """A driver that parses JSON columns (psycopg's default) gives a dict: its text is
        made again exactly and verified."""
        from referralkit.storage._json import _seal

        text = _seal('{"a":1,"b":"x"}', "r-1\x00snapshot")
        data = PLAIN.snapshot_data(json.loads(text), "r-1")
        assert data == {"a": 1, "b": "x"}
        assert RecordCodec._text(bytes(text, "ascii")) == text
        assert RecordCodec._text({"bad": {1, 2}}) is None


def test_an_encrypted_store_without_keys_on_every_read(tmp_path: Path) -> None:
    """load, events, query, export, event_histories: each says the store is encrypted."""
    import referralkit as rk

    ring = KeyRing.generate()
    url = f"sqlite:///{tmp_path / 'e.db'}"
    with open_store(url, keys=ring) as store:
        made = rk.ReferralDesk(store, clock=FakeClock()).intake(
            rk.Actor("c", {rk.Role.COORDINATOR}), sample_request()
        )
    with open_store(url) as store:
        for read in (
            lambda: store.load(made.id),
            lambda: store.events(made.id),
            lambda: store.query(rk.Query()),
            lambda: list(store.export()),
            lambda: list(store.event_histories()),
        ):
            with pytest.raises(EncryptionKeyError):
                read()
    assert os.path.exists(tmp_path / "e.db")


def test_a_desk_opens_an_encrypted_store(tmp_path: Path) -> None:
    """``ReferralDesk.open(url, keys=...)`` passes the key ring to the store."""
    import referralkit as rk

    ring = KeyRing.generate()
    url = f"sqlite:///{tmp_path / 'd.db'}"
    desk = rk.ReferralDesk.open(url, keys=ring, clock=FakeClock())
    made = desk.intake(rk.Actor("c", {rk.Role.COORDINATOR}), sample_request())
    desk.close()
    with open_store(url, keys=ring) as store:
        assert store.load(made.id) == made


class TestSnapshotFormat2:
    """The format 2 codec's edges (the store-level cases are in
    ``tests/storage/test_encryption.py``)."""

    def test_a_record_with_no_clear_part_and_no_phi(self) -> None:
        from referralkit.storage._json import _one_cipher, _open_one_cipher, _opened_values

        cipher = FieldCipher(KeyRing.generate())
        text = _one_cipher(cipher, {}, "r-1", cipher.primary_id)
        body, key_id, _ = PLAIN.unseal(text, "r-1\x00snapshot", "r-1", "snapshot")
        assert body.endswith('"}')
        assert _opened_values(cipher, key_id, body, "r-1")[:3] == ("", [], "{}")
        data = json.loads(body)
        _open_one_cipher(cipher, body, data, key_id, "r-1")
        assert data == {}

    def test_a_path_with_no_place_in_the_record(self) -> None:
        from referralkit.storage._json import _one_cipher, _open_one_cipher

        cipher = FieldCipher(KeyRing.generate())
        text = _one_cipher(
            cipher, {"id": "r-1", "patient": {"id": "p-1"}}, "r-1", cipher.primary_id
        )
        body, key_id, _ = PLAIN.unseal(text, "r-1\x00snapshot", "r-1", "snapshot")
        data = json.loads(body)
        data["patient"] = []  # what the parse gave, damaged after the checks
        with pytest.raises(CorruptRecordError, match=r"field patient\.id has no place"):
            _open_one_cipher(cipher, body, data, key_id, "r-1")

    def test_the_format_is_read_from_the_head(self) -> None:
        from referralkit.storage._json import _in_format_2, _seal

        assert not _in_format_2(None)
        assert not _in_format_2('{"~c":"k::0"')
        assert not _in_format_2(_seal('{"a":1}', "r\x00snapshot", "k"))
        assert _in_format_2(_seal('{"~v":2,"~f":"","~e":"x"}', "r\x00snapshot", "k"))
