"""Tamper evidence for the events (issue 13 item 4): the events' hash chain, in every store.

An edit (of a field or of a payload), a deletion, an insertion, a reordering and a
truncation past a checkpoint are each detected, on SQLite and PostgreSQL and in memory;
encrypted stores verify without their key ring; a key rotation (and the migration to
encryption) leaves the chain and the checkpoints made before it valid; the version 7 to 8
upgrade chains the events already stored; concurrent writers keep one intact chain.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from referralkit import Actor, KeyRing, ReferralDesk, Role, StorageError, ValidationError, cli
from referralkit.access import GENESIS, AccessOutcome, AccessRecord, chain_hash
from referralkit.storage import ReferralStore, dump, load_dump, open_store, rotate_keys
from referralkit.storage.memory import MemoryStore
from referralkit.storage.postgres import PostgresStore, connection_settings
from referralkit.storage.sqlite import SQLiteStore
from referralkit.tamper import checkpoint, new_signing_key, read_checkpoints, verify
from referralkit.testing import FakeClock, sample_request

ACTOR = Actor("coord-1", {Role.COORDINATOR})
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


@attrs.frozen
class Target:
    url: str
    execute: Callable[[str], None]
    keys: KeyRing | None = None

    def open(self, **kw: Any) -> ReferralStore:
        return open_store(self.url, keys=kw.pop("keys", self.keys), **kw)


def _sqlite(path: Path) -> Callable[[str], None]:
    def run(sql: str) -> None:
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.executescript(sql.replace("{s}.", ""))

    return run


def _postgres(url: str) -> Callable[[str], None]:
    settings, schema = connection_settings(url)

    def run(sql: str) -> None:
        with psycopg.connect(settings, autocommit=True) as conn:
            conn.execute(sql.replace("{s}", f'"{schema}"'))  # type: ignore[call-overload]

    return run


@pytest.fixture(params=["sqlite", "postgres", "sqlite-encrypted", "postgres-encrypted"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    keys = KeyRing.generate() if request.param.endswith("encrypted") else None
    if request.param.startswith("sqlite"):
        path = tmp_path / "t.db"
        yield Target(f"sqlite:///{path}", _sqlite(path), keys)
        return
    url = request.getfixturevalue("postgres_schema")
    yield Target(url, _postgres(url), keys)


def write(store: ReferralStore, referrals: int = 4) -> ReferralDesk:
    """``referrals`` intakes, then an assignment of each: 3 events an intake, 1 an assignment
    (16 events for 4 referrals: the intakes' 12 first)."""
    desk = ReferralDesk(store, clock=FakeClock(T0))
    made = [
        desk.intake(ACTOR, sample_request(f"REQ-{uuid.uuid4().hex}")).id for _ in range(referrals)
    ]
    for n, referral_id in enumerate(made):
        desk.assign(ACTOR, referral_id, f"owner-{n}")
    return desk


def filled(target: Target) -> ReferralStore:
    store = target.open()
    write(store)
    return store


def report_of(target: Target, *, keys: bool = False, **kw: Any) -> Any:
    """``verify`` of the target's store, opened without its key ring unless ``keys``."""
    with target.open(keys=target.keys if keys else None) as store:
        return verify(store, **kw)


class TestDetected:
    def test_an_intact_chain_verifies_without_keys(self, target: Target) -> None:
        filled(target).close()
        report = report_of(target)
        assert (report.ok, report.events, report.broken_at) == (True, 16, None)

    def test_an_edited_field(self, target: Target) -> None:
        filled(target).close()
        target.execute("UPDATE {s}.events SET actor = 'someone-else' WHERE seq = 4")
        report = report_of(target)
        assert (report.ok, report.broken_in, report.broken_at) == (False, "events", 4)

    def test_an_edited_time(self, target: Target) -> None:
        filled(target).close()
        if target.url.startswith("sqlite"):
            target.execute("UPDATE events SET at = '2025-01-01T00:00:00+00:00' WHERE seq = 9")
        else:
            target.execute("UPDATE {s}.events SET at = at - interval '1 day' WHERE seq = 9")
        assert report_of(target).broken_at == 9

    def test_an_edited_payload(self, target: Target) -> None:
        """The payload rewritten (and its seal recomputed, as an attacker would): the digest
        its link recorded no longer matches."""
        store = filled(target)
        row = next(r for r in store.event_chain() if r[0] == 5)
        store.close()
        text = row[3].reveal()
        # a change of one character inside the record's last string (ciphertext or clear
        # JSON: still JSON, as PostgreSQL's json type wants)
        position = text.rindex('"') - 2
        changed = text[:position] + ("A" if text[position] != "A" else "B") + text[position + 1 :]
        quoted = changed.replace("'", "''")
        target.execute(f"UPDATE {{s}}.events SET payload = '{quoted}' WHERE seq = 5")
        report = report_of(target)
        assert (report.ok, report.broken_at) == (False, 5)
        assert report.reason == "the event's payload was changed"

    def test_a_deletion(self, target: Target) -> None:
        filled(target).close()
        target.execute("DELETE FROM {s}.events WHERE seq = 6")
        report = report_of(target)
        assert (report.ok, report.broken_at) == (False, 7)

    def test_an_insertion_without_a_link(self, target: Target) -> None:
        filled(target).close()
        target.execute(
            "INSERT INTO {s}.events (referral_id, version, idx, at, actor, type, payload) "
            "SELECT referral_id, version + 10, idx, at, actor, type, payload "
            "FROM {s}.events WHERE seq = 2"
        )
        report = report_of(target)
        assert (report.ok, report.broken_at) == (False, 0)

    def test_a_reordering(self, target: Target) -> None:
        """Events 3 and 4 swapped, their chain values moved with them."""
        filled(target).close()
        target.execute("UPDATE {s}.events SET seq = -1 WHERE seq = 3")
        target.execute("UPDATE {s}.events SET seq = 3 WHERE seq = 4")
        target.execute("UPDATE {s}.events SET seq = 4 WHERE seq = -1")
        report = report_of(target)
        assert (report.ok, report.broken_at) == (False, 3)

    def test_a_truncation_past_the_last_checkpoint(self, target: Target, tmp_path: Path) -> None:
        store = filled(target)
        marks = tmp_path / "checkpoints.jsonl"
        private, public = new_signing_key()
        mark = checkpoint(store, signing_key=private, out=marks)
        assert mark.events_seq == 16
        write(store, 1)  # 4 more events: 17 to 20
        store.close()
        target.execute("DELETE FROM {s}.worklist_keys")  # (a referral's rows go with it)
        target.execute("DELETE FROM {s}.events WHERE seq >= 12")
        report = report_of(target, checkpoints=read_checkpoints(marks), public_key=public)
        assert (report.ok, report.broken_in, report.broken_at) == (False, "events", 12)
        assert "truncated" in (report.reason or "")
        # without the file, the checkpoint recorded in the log sees it too
        assert report_of(target).broken_at == 12

    def test_a_truncation_after_the_checkpoint_is_not_a_break(self, target: Target) -> None:
        store = filled(target)
        checkpoint(store)
        write(store, 1)
        store.close()
        target.execute("DELETE FROM {s}.events WHERE seq > 16")
        assert report_of(target).ok

    def test_a_recomputed_chain_breaks_the_signed_checkpoint(
        self, target: Target, tmp_path: Path
    ) -> None:
        """An attacker reorders two events and recomputes every chain value from there:
        the checkpoint no longer matches."""
        store = filled(target)
        marks = tmp_path / "checkpoints.jsonl"
        private, public = new_signing_key()
        checkpoint(store, signing_key=private, out=marks)
        store.close()
        target.execute("UPDATE {s}.events SET seq = -1 WHERE seq = 2")
        target.execute("UPDATE {s}.events SET seq = 2 WHERE seq = 3")
        target.execute("UPDATE {s}.events SET seq = 3 WHERE seq = -1")
        assert report_of(target).broken_at == 2
        with target.open() as store:
            rows = list(store.event_chain())
        previous = GENESIS
        for seq, fields, _, _ in rows:
            previous = chain_hash(previous, fields)
            target.execute(f"UPDATE {{s}}.events SET chain = '{previous}' WHERE seq = {seq}")
        report = report_of(target, checkpoints=read_checkpoints(marks), public_key=public)
        assert (report.ok, report.broken_in, report.broken_at) == (False, "events", 16)
        assert report.reason == "a checkpoint does not match the events' chain"

    def test_a_checkpoint_with_a_forged_events_head_fails_its_signature(
        self, target: Target, tmp_path: Path
    ) -> None:
        store = filled(target)
        private, public = new_signing_key()
        mark = checkpoint(store, signing_key=private)
        store.close()
        forged = attrs.evolve(mark, events_chain="0" * 64)
        report = report_of(target, checkpoints=[forged], public_key=public)
        assert report.reason == "a checkpoint's signature is bad"


class TestRotation:
    def test_rotation_keeps_the_chain_and_its_checkpoints(self, tmp_path: Path) -> None:
        path = tmp_path / "r.db"
        ring = KeyRing.generate()
        with SQLiteStore(path, keys=ring) as store:
            write(store, 6)
            private, public = new_signing_key()
            checkpoint(store, signing_key=private)
        new = ring.with_new_key()
        with SQLiteStore(path, keys=new) as store:
            assert rotate_keys(store, batch=2).rewritten > 0
            write(store, 1)
            report = verify(store, public_key=public)
        assert (report.ok, report.events) == (True, 28)
        # a payload edited after the rotation is still caught
        _sqlite(path)("UPDATE events SET payload = replace(payload, 'A', 'B') WHERE seq = 3")
        with SQLiteStore(path) as store:
            assert verify(store).broken_at == 3

    def test_the_migration_to_encryption_keeps_the_chain(self, tmp_path: Path) -> None:
        path = tmp_path / "plain.db"
        with SQLiteStore(path) as store:
            write(store, 3)
            mark = checkpoint(store)
        with SQLiteStore(path, keys=KeyRing.generate()) as store:
            assert rotate_keys(store).rewritten == 3 + 12
        with SQLiteStore(path) as store:
            report = verify(store, checkpoints=[mark])
        assert (report.ok, report.events) == (True, 12)

    def test_rotation_on_postgresql(self, postgres_schema: str) -> None:
        ring = KeyRing.generate()
        with PostgresStore(postgres_schema, keys=ring) as store:
            write(store, 3)
            checkpoint(store)
        with PostgresStore(postgres_schema, keys=ring.with_new_key()) as store:
            assert rotate_keys(store).rewritten > 0
        with PostgresStore(postgres_schema) as store:
            assert verify(store).ok


class TestUpgrade:
    def test_sqlite_version_7_is_chained_on_upgrade(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        store = SQLiteStore(path, migrate=False)
        assert store.upgrade(target=7) == 7
        write(store, 3)
        assert list(store.event_chain()) == []
        store.close()
        with SQLiteStore(path) as store:
            assert store.schema_version() >= 8
            assert (verify(store).ok, verify(store).events) == (True, 12)
            write(store, 1)
            report = verify(store)
        assert (report.ok, report.events) == (True, 16)

    def test_postgresql_version_7_is_chained_on_upgrade(self, postgres_schema: str) -> None:
        store = PostgresStore(postgres_schema, migrate=False)
        assert store.upgrade(target=7) == 7
        write(store, 3)
        store.close()
        with PostgresStore(postgres_schema) as store:
            assert store.schema_version() >= 8
            assert (verify(store).ok, verify(store).events) == (True, 12)
            write(store, 1)
            report = verify(store)
        assert (report.ok, report.events) == (True, 16)

    def test_an_encrypted_store_is_chained_on_upgrade(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        ring = KeyRing.generate()
        store = SQLiteStore(path, migrate=False, keys=ring)
        store.upgrade(target=7)
        write(store, 2)
        store.close()
        with SQLiteStore(path) as store:  # the upgrade needs no key ring either
            assert verify(store).ok


class TestConcurrentWriters:
    @pytest.mark.parametrize("kind", ["sqlite", "postgres"])
    def test_writers_at_once_keep_one_chain(
        self, kind: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        url = (
            f"sqlite:///{tmp_path / 'c.db'}"
            if kind == "sqlite"
            else request.getfixturevalue("postgres_schema")
        )
        open_store(url).close()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with open_store(url) as store:  # a store (and connections) of its own
                    write(store, 5)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with open_store(url) as store:
            report = verify(store)
            seqs = [row[0] for row in store.event_chain()]
        assert (report.ok, report.events) == (True, 4 * 5 * 4)
        assert seqs == list(range(1, 81))


class TestMemory:
    def store(self) -> MemoryStore:
        store = MemoryStore()
        write(store)
        return store

    def test_intact(self) -> None:
        report = verify(self.store())
        assert (report.ok, report.events) == (True, 16)

    def test_an_edit_a_deletion_a_reordering(self) -> None:
        store = self.store()
        first = next(iter(store._events))
        store._events[first][1] = store._events[first][0]  # the assignment's event replaced
        assert not verify(store).ok
        store = self.store()
        del store._chain[5]
        assert verify(store).broken_at == 6
        store = self.store()
        store._chain[2], store._chain[3] = store._chain[3], store._chain[2]
        assert verify(store).broken_at == 3
        store = self.store()
        del store._events[next(iter(store._events))]
        assert not verify(store).ok

    def test_a_truncation(self) -> None:
        store = self.store()
        mark = checkpoint(store)
        del store._chain[10:]
        report = verify(store, checkpoints=[mark])
        assert (report.ok, report.broken_at) == (False, 11)

    def test_a_restored_store_is_chained(self) -> None:
        store = self.store()
        copy = MemoryStore()
        copy.restore_many(list(store.export()))
        assert verify(copy).events == 16


class TestCli:
    def test_verify_names_the_chain(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        with open_store(url) as store:
            write(store, 2)
        out = io.StringIO()
        args = cli.build_parser().parse_args(["verify", "--db", url])
        assert args.handler(args, out, io.StringIO()) == 0
        assert out.getvalue().strip() == "ok: 0 records, 8 events, 0 checkpoint(s)"
        _sqlite(tmp_path / "cli.db")("UPDATE events SET type = 'noted' WHERE seq = 2")
        out = io.StringIO()
        assert args.handler(args, out, io.StringIO()) == 1
        assert out.getvalue().startswith("BROKEN at event 2: the event or the one before it")


def _break_glass(store: ReferralStore, n: int) -> None:
    store.append_access(
        [
            AccessRecord(
                at=T0 + dt.timedelta(minutes=k),
                actor=f"u-{k}",
                action="get",
                outcome=AccessOutcome.BREAK_GLASS,
                referral_ids=(f"r-{k}",),
                roles=("coordinator",),
                reason=f"REASON-CANARY {k}",
                flagged=True,
            )
            for k in range(n)
        ]
    )


class TestDumps:
    """Dumps carry the access log with its chain: dump -> load keeps the audit trail
    verifiable (against the checkpoint file kept outside the dumped store)."""

    @pytest.mark.parametrize("into", ["sqlite", "postgres", "memory"])
    @pytest.mark.parametrize("encrypted", [False, True])
    def test_a_loaded_store_verifies_against_the_old_checkpoints(
        self, into: str, encrypted: bool, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        ring = KeyRing.generate() if encrypted else None
        marks = tmp_path / "marks.jsonl"
        private, public = new_signing_key()
        with SQLiteStore(tmp_path / "source.db", keys=ring) as source:
            desk = write(source, 3)
            desk.get(ACTOR, next(iter(source.export()))[0].id)
            desk.flush_access_log()
            _break_glass(source, 3)
            checkpoint(source, signing_key=private, out=marks)
            _break_glass(source, 2)
            expected = source.access_records()
            out = io.StringIO()
            dump(source, out)
        text = out.getvalue()
        assert ("REASON-CANARY" in text) is (not encrypted)
        url = {
            "sqlite": f"sqlite:///{tmp_path / 'copy.db'}",
            "memory": "memory://",
            "postgres": request.getfixturevalue("postgres_schema") if into == "postgres" else "",
        }[into]
        with open_store(url, keys=ring) as copy:
            assert load_dump(copy, io.StringIO(text), signing_key=private) == 3
            report = verify(copy, checkpoints=read_checkpoints(marks), public_key=None)
            assert (report.ok, report.events) == (True, 12), report
            restored = copy.access_records()
            if into == "memory" and encrypted:  # nothing at rest: reasons kept as dumped
                restored = [
                    *(
                        attrs.evolve(r, reason=e.reason)
                        for r, e in zip(restored, expected, strict=False)
                    ),
                    *restored[len(expected) :],
                ]
            assert restored[: len(expected)] == expected
            last = restored[-1]
            assert (last.actor, last.action) == ("referralkit-checkpoint", "checkpoint")
            assert '"restored": true' in (last.reason or "")
            # checkpoints made since cover the new events' chain
            write(copy, 1)
            checkpoint(copy, signing_key=private, out=marks)
            assert verify(copy, checkpoints=read_checkpoints(marks), public_key=public).ok

    def test_an_encrypted_dump_of_a_clear_log_hides_its_reasons(self, tmp_path: Path) -> None:
        ring = KeyRing.generate()
        with SQLiteStore(tmp_path / "plain.db") as source:
            _break_glass(source, 3)
            out = io.StringIO()
            dump(source, out, keys=ring)
            expected = source.access_records()
        assert "REASON-CANARY" not in out.getvalue()
        assert '"reason_sealed"' in out.getvalue()
        copy = MemoryStore(keys=ring)
        load_dump(copy, io.StringIO(out.getvalue()))
        assert copy.access_records() == expected
        assert verify(copy).ok

    def test_a_tampered_access_line_is_refused(self) -> None:
        source = MemoryStore()
        _break_glass(source, 4)
        out = io.StringIO()
        dump(source, out)
        lines = out.getvalue().splitlines(keepends=True)
        lines[2] = lines[2].replace('"u-1"', '"u-9"')
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), lines)
        assert info.value.path == "line 3"
        # without verify, loaded as it is: verify then finds it
        copy = MemoryStore()
        load_dump(copy, lines, verify=False)
        assert verify(copy).broken_at == 2

    def test_into_a_store_with_a_log_of_its_own(self) -> None:
        source = MemoryStore()
        _break_glass(source, 2)
        out = io.StringIO()
        dump(source, out)
        target = MemoryStore()
        _break_glass(target, 1)
        with pytest.raises(StorageError):
            load_dump(target, io.StringIO(out.getvalue()))

    def test_version_2_dumps_still_load(self) -> None:
        source = MemoryStore()
        write(source, 2)
        _break_glass(source, 2)
        out = io.StringIO()
        dump(source, out)
        lines = [
            line.replace('"version":3', '"version":2')
            for line in out.getvalue().splitlines(keepends=True)
            if not line.startswith('{"access"')
        ]
        copy = MemoryStore()
        assert load_dump(copy, lines) == 2
        assert copy.access_records() == []
        assert verify(copy).ok

    def test_bad_access_lines(self) -> None:
        ring = KeyRing.generate()
        source = MemoryStore()
        _break_glass(source, 1)
        out = io.StringIO()
        dump(source, out, keys=ring)
        header, line = out.getvalue().splitlines()[:2]
        data = json.loads(line)
        cases = [
            ({"access": [], "x": 1}, "line 2: access"),
            ({"access": {**data["access"], "actor": 7}}, "line 2: access"),
            (
                {"access": {**data["access"], "seq": 2}},  # the sealed reason moved
                "line 2: access.reason_sealed",
            ),
        ]
        for bad, path in cases:
            with pytest.raises(ValidationError) as info:
                load_dump(MemoryStore(keys=ring), [header + "\n", json.dumps(bad) + "\n"])
            assert info.value.path == path
        plain_header = header.replace('"encrypted":true,', "")
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), [plain_header + "\n", line + "\n"])
        assert info.value.path == "line 2: access.reason_sealed"


def test_chain_rows_given_the_datetimes_link_as_when_they_parse_the_text() -> None:
    """The bulk writers pass each row's time as the datetime its text was written from:
    the same links as parsing the text (UTC, another offset, microseconds or none)."""
    from referralkit._redaction import Sealed
    from referralkit.storage._chain import chain_rows

    moments = [
        dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, 9, 30, 0, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=9))),
    ]
    rows = [
        ("ref-1", 1, n, at.isoformat(), "coord-1", "created", Sealed(f'{{"n":{n}}}'))
        for n, at in enumerate(moments)
    ]
    assert chain_rows(4, GENESIS, rows, moments) == chain_rows(4, GENESIS, rows)
    other = [moments[0], moments[0], moments[2]]
    assert chain_rows(4, GENESIS, rows, other) != chain_rows(4, GENESIS, rows)
