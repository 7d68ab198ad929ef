"""Encryption at rest (issue 13) with the worklist's stored rank keys (issue 10), rule
provenance (issue 11) and the access log (issue 13): every read those features added goes
through the store's record codec, so an encrypted SQLite store serves them, and the file
still holds no plaintext PHI afterwards."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
import sys
from contextlib import closing, redirect_stdout
from pathlib import Path

import pytest

from referralkit import Actor, FakeClock, ReferralDesk, Role, cli, tamper
from referralkit.access import AccessQuery
from referralkit.crypto import KeyRing
from referralkit.errors import CorruptRecordError, EncryptionKeyError
from referralkit.storage import ReferralStore, upgrade
from referralkit.storage.sqlite import SCHEMA_VERSION, SQLiteStore
from referralkit.worklist import rank_entries

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_phi_canary import canary_request

COORDINATOR = Actor("coord-1", {Role.COORDINATOR})
AUDITOR = Actor("audit-1", {Role.AUDITOR})
AT = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
NEEDLES = (b"CANARY", b"1899-02-03", b"1901-02-03")
REASON = "CANARY-break-glass: patient in the emergency room"


def _raw(path: Path) -> bytes:
    wal = Path(f"{path}-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _scan(path: Path) -> None:
    data = _raw(path)
    for needle in NEEDLES:
        assert needle not in data, f"plaintext PHI {needle!r} found in {path.name}"


def _stored_keys(store: ReferralStore) -> dict[str, set[tuple[int, float]]]:
    found: dict[str, set[tuple[int, float]]] = {}
    for bucket in store.rank_buckets():
        for key, referral_id in store.rank_page(bucket, None, 10_000):
            found.setdefault(referral_id, set()).add((bucket, key))
    return found


def _desk(store: ReferralStore, clock: FakeClock) -> ReferralDesk:
    counter = iter(range(10_000))
    return ReferralDesk(store, clock=clock, new_id=lambda: f"ref-{next(counter):04d}")


def _fill(desk: ReferralDesk, clock: FakeClock, count: int = 6) -> list[str]:
    made = []
    for k in range(count):
        referral = desk.intake(COORDINATOR, canary_request(f"SRC-{k}"))
        clock.advance(minutes=7)
        made.append(referral.id)
    # a change after intake: its rank keys are computed from the history read back
    desk.reassess(COORDINATOR, made[0])
    clock.advance(minutes=7)
    return made


class TestEncryptedWorklistAndExplain:
    def test_stored_head_explain_and_no_plaintext(self, tmp_path: Path) -> None:
        """The worklist's stored head and ``explain`` work on an encrypted SQLite store, agree
        with the assessed worklist, and leave no plaintext PHI in the file or its WAL."""
        ring = KeyRing.generate()
        path = tmp_path / "enc.db"
        clock = FakeClock(AT)
        with SQLiteStore(path, keys=ring) as store:
            desk = _desk(store, clock)
            made = _fill(desk, clock)
            assert store.keeps_rank_keys
            assert desk._keys_usable(clock.now())  # the head below is read off the rank keys
            expected = {
                r.id: {(e.bucket, e.sort_key) for e in rank_entries(r, events)}
                for r, events in store.export()
                if not r.status.is_terminal
            }
            assert _stored_keys(store) == expected
            head = desk.worklist(COORDINATOR, limit=4)
            assessed = desk.worklist(COORDINATOR)  # no limit: every referral assessed
            assert [i.referral_id for i in head] == [i.referral_id for i in assessed[:4]]
            assert [h[0].id for h in store.histories(made[:3])] == made[:3]
            explained = desk.explain(AUDITOR, made[0])
            assert explained.coverage is not None
            assert explained.coverage.reproduced is True
            assert "CANARY" not in str(explained)
            desk.flush_access_log()
            _scan(path)
        _scan(path)

    def test_a_corrupt_event_is_caught_by_the_rank_keys_read(self, tmp_path: Path) -> None:
        """The rank keys' read-back of a history verifies it: a flipped checksum in a stored
        event fails the next change with CorruptRecordError, never wrong keys."""
        ring = KeyRing.generate()
        path = tmp_path / "enc.db"
        clock = FakeClock(AT)
        with SQLiteStore(path, keys=ring) as store:
            desk = _desk(store, clock)
            made = _fill(desk, clock, count=1)
        with closing(sqlite3.connect(path)) as conn, conn:
            payload = conn.execute(
                "SELECT payload FROM events WHERE referral_id = ? AND version = 1 AND idx = 0",
                (made[0],),
            ).fetchone()[0]
            digest_end = payload.index('"', len('{"~c":"'))
            flipped = "0" if payload[digest_end - 1] != "0" else "1"
            conn.execute(
                "UPDATE events SET payload = ? WHERE referral_id = ? AND version = 1 AND idx = 0",
                (payload[: digest_end - 1] + flipped + payload[digest_end:], made[0]),
            )
        with SQLiteStore(path, keys=ring) as store:
            with pytest.raises(CorruptRecordError):
                store.histories([made[0]])
            with pytest.raises(CorruptRecordError):
                _desk(store, clock).reassess(COORDINATOR, made[0])

    def test_version_3_encrypted_file_gets_its_rank_keys(self, tmp_path: Path) -> None:
        """The version 4 migration computes the rank keys of an encrypted file's referrals by
        decrypting them with the store's key ring; without it, the upgrade is refused."""
        ring = KeyRing.generate()
        path = tmp_path / "old.db"
        clock = FakeClock(AT)
        old = SQLiteStore(path, migrate=False, keys=ring)
        old.upgrade(target=3)
        assert not old.keeps_rank_keys
        desk = _desk(old, clock)
        _fill(desk, clock, count=4)  # writes only: schema 3 has no access log to audit reads
        desk.close()
        with pytest.raises(EncryptionKeyError):
            upgrade(f"sqlite:///{path}")
        with SQLiteStore(path, keys=ring) as store:
            assert store.schema_version() == SCHEMA_VERSION
            expected = {
                r.id: {(e.bucket, e.sort_key) for e in rank_entries(r, events)}
                for r, events in store.export()
                if not r.status.is_terminal
            }
            assert expected
            assert _stored_keys(store) == expected
            desk = _desk(store, clock)
            assessed = desk.worklist(COORDINATOR)[:3]  # no limit: every referral assessed
            assert desk.worklist(COORDINATOR, limit=3) == assessed
        _scan(path)


class TestEncryptedAccessLog:
    def test_break_glass_reason_encrypted_and_the_chain_verifies(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A break-glass reason (free text) is encrypted at rest; the access log reads it
        back with the keys, refuses without them, and ``referralkit verify`` checks the hash
        chain of the encrypted store (with or without the keys: it hashes the stored text)."""
        ring = KeyRing.generate()
        keys_file = tmp_path / "keys.json"
        ring.save(keys_file)
        path = tmp_path / "enc.db"
        clock = FakeClock(AT)
        with SQLiteStore(path, keys=ring) as store:
            desk = _desk(store, clock)
            made = _fill(desk, clock, count=2)
            glass = desk.break_glass(COORDINATOR, REASON)
            desk.get(glass, made[1])
            desk.flush_access_log()
            tamper.checkpoint(store, now=clock.now())
            records = store.access_records(AccessQuery(flagged=True))
            assert REASON in [r.reason for r in records]
            assert tamper.verify(store).ok
        _scan(path)
        with SQLiteStore(path) as unkeyed:
            with pytest.raises(EncryptionKeyError):
                unkeyed.access_records(AccessQuery(flagged=True))
            assert tamper.verify(unkeyed).ok
        for environment in (str(keys_file), ""):
            monkeypatch.setenv("REFERRALKIT_KEYS", environment)
            out = io.StringIO()
            with redirect_stdout(out):
                assert cli.main(["verify", "--db", f"sqlite:///{path}"]) == 0, out.getvalue()
        # a changed stored reason breaks the chain
        with closing(sqlite3.connect(path)) as conn, conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'trigger' AND tbl_name = 'access_log'"
                )
            ]
            for name in names:
                conn.execute(f'DROP TRIGGER "{name}"')
            conn.execute(
                "UPDATE access_log SET reason = 'something else' WHERE action = 'break_glass'"
            )
        monkeypatch.setenv("REFERRALKIT_KEYS", str(keys_file))
        out = io.StringIO()
        with redirect_stdout(out):
            assert cli.main(["verify", "--db", f"sqlite:///{path}"]) == 1


def test_postgresql_rank_keys_histories_and_access_log_encrypted(postgres_schema: str) -> None:
    """The same on PostgreSQL: the rank keys written from a history read back and decrypted,
    ``histories`` decrypted, the break-glass reason encrypted in the table and the chain
    verified."""
    from referralkit.storage.postgres import PostgresStore

    ring = KeyRing.generate()
    clock = FakeClock(AT)
    with PostgresStore(postgres_schema, keys=ring) as store:
        desk = _desk(store, clock)
        made = _fill(desk, clock, count=3)
        expected = {
            r.id: {(e.bucket, e.sort_key) for e in rank_entries(r, events)}
            for r, events in store.export()
            if not r.status.is_terminal
        }
        assert _stored_keys(store) == expected
        head = desk.worklist(COORDINATOR, limit=2)
        assert [i.referral_id for i in head] == [
            i.referral_id for i in desk.worklist(COORDINATOR)[:2]
        ]
        assert [h[0].id for h in store.histories(made)] == made
        desk.break_glass(COORDINATOR, REASON)
        desk.flush_access_log()
        assert REASON in [r.reason for r in store.access_records(AccessQuery(flagged=True))]
        assert tamper.verify(store).ok
        with store._pool.connection() as conn:
            stored = conn.execute(
                store._sql("SELECT reason FROM {s}.access_log WHERE action = 'break_glass'")
            ).fetchall()
        assert stored
        assert all("CANARY" not in row[0] for row in stored)
    with PostgresStore(postgres_schema) as unkeyed:
        assert tamper.verify(unkeyed).ok
        with pytest.raises(EncryptionKeyError):
            unkeyed.histories(made[:1])
