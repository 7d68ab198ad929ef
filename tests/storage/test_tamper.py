"""Tamper evidence (issue 13 item 4, for the access log): an edit, a deletion, a reordering,
a truncation past a checkpoint and a recomputed chain are each detected, on SQLite and
PostgreSQL; the CLI's verify and checkpoint."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from referralkit import cli
from referralkit.access import GENESIS, AccessOutcome, AccessRecord, chain_hash
from referralkit.errors import ValidationError
from referralkit.storage import ReferralStore, open_store
from referralkit.storage.postgres import connection_settings
from referralkit.tamper import (
    Checkpoint,
    checkpoint,
    new_signing_key,
    read_checkpoints,
    verify,
)

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def records(start: int, count: int) -> list[AccessRecord]:
    return [
        AccessRecord(
            at=T0 + dt.timedelta(minutes=start + n),
            actor=f"u-{(start + n) % 3}",
            action="get",
            outcome=AccessOutcome.ALLOWED,
            referral_ids=(f"r-{start + n}",),
            roles=("coordinator",),
        )
        for n in range(count)
    ]


Execute = Callable[[str], None]


@attrs.frozen
class Target:
    url: str
    execute: Execute


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        path = tmp_path / "t.db"

        def run_sqlite(sql: str) -> None:
            with closing(sqlite3.connect(path)) as conn, conn:
                for table in ("access_log", "access_log_referrals"):
                    for verb in ("update", "delete"):
                        conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
                conn.executescript(sql.replace("{s}.", ""))

        yield Target(f"sqlite:///{path}", run_sqlite)
        return
    url = request.getfixturevalue("postgres_schema")
    settings, schema = connection_settings(url)

    def run_postgres(sql: str) -> None:
        with psycopg.connect(settings, autocommit=True) as conn:
            for table in ("access_log", "access_log_referrals"):
                conn.execute(
                    f'DROP TRIGGER IF EXISTS {table}_append_only ON "{schema}".{table}'  # type: ignore[call-overload]
                )
            conn.execute(sql.replace("{s}", f'"{schema}"'))  # type: ignore[call-overload]

    yield Target(url, run_postgres)


def filled(target: Target, count: int = 10) -> ReferralStore:
    store = open_store(target.url)
    store.append_access(records(0, count // 2))
    store.append_access(records(count // 2, count - count // 2))
    return store


def report_of(target: Target, **kw: Any) -> Any:
    with open_store(target.url) as store:
        return verify(store, **kw)


SWAP = """
UPDATE {s}.access_log SET actor = CASE seq WHEN 3 THEN 'u-1' ELSE 'u-0' END,
    referral_ids = CASE seq WHEN 3 THEN '["r-4"]' ELSE '["r-3"]' END,
    at = CASE seq WHEN 3 THEN (SELECT at FROM {s}.access_log WHERE seq = 5)
                  ELSE (SELECT at FROM {s}.access_log WHERE seq = 4) END,
    chain = CASE seq WHEN 3 THEN (SELECT chain FROM {s}.access_log WHERE seq = 5)
                     ELSE (SELECT chain FROM {s}.access_log WHERE seq = 4) END
WHERE seq IN (3, 4)
"""


class TestDetected:
    def test_an_intact_log_verifies(self, target: Target) -> None:
        filled(target).close()
        report = report_of(target)
        assert (report.ok, report.records, report.broken_at) == (True, 10, None)

    def test_an_edit(self, target: Target) -> None:
        filled(target).close()
        target.execute("UPDATE {s}.access_log SET actor = 'someone-else' WHERE seq = 4")
        report = report_of(target)
        assert (report.ok, report.broken_at) == (False, 4)

    def test_a_deletion(self, target: Target) -> None:
        filled(target).close()
        target.execute("DELETE FROM {s}.access_log_referrals WHERE seq = 6")
        target.execute("DELETE FROM {s}.access_log WHERE seq = 6")
        report = report_of(target)
        assert (report.ok, report.broken_at) == (False, 7)

    def test_a_reordering(self, target: Target) -> None:
        """Records 3 and 4 swapped (their contents and chain values moved together)."""
        filled(target).close()
        target.execute(SWAP)
        report = report_of(target)
        assert not report.ok
        assert report.broken_at == 3

    def test_a_truncation_past_the_last_checkpoint(self, target: Target, tmp_path: Path) -> None:
        store = filled(target)
        marks = tmp_path / "checkpoints.jsonl"
        private, public = new_signing_key()
        mark = checkpoint(store, signing_key=private, out=marks)
        assert mark.seq == 10
        store.append_access(records(20, 5))
        store.close()
        target.execute("DELETE FROM {s}.access_log_referrals WHERE seq >= 8")
        target.execute("DELETE FROM {s}.access_log WHERE seq >= 8")
        report = report_of(target, checkpoints=read_checkpoints(marks), public_key=public)
        assert not report.ok
        assert report.broken_at == 8
        assert report.reason is not None
        assert "truncated" in report.reason

    def test_a_truncation_short_of_the_checkpoint_is_not_a_break(
        self, target: Target, tmp_path: Path
    ) -> None:
        store = filled(target)
        marks = tmp_path / "checkpoints.jsonl"
        checkpoint(store, out=marks)
        store.append_access(records(20, 5))
        store.close()
        target.execute("DELETE FROM {s}.access_log_referrals WHERE seq > 11")
        target.execute("DELETE FROM {s}.access_log WHERE seq > 11")
        assert report_of(target, checkpoints=read_checkpoints(marks)).ok

    def test_a_recomputed_chain_breaks_the_signed_checkpoint(
        self, target: Target, tmp_path: Path
    ) -> None:
        """An attacker who edits a record and recomputes every chain value after it."""
        store = filled(target)
        marks = tmp_path / "checkpoints.jsonl"
        private, public = new_signing_key()
        checkpoint(store, signing_key=private, out=marks)
        store.close()
        target.execute("UPDATE {s}.access_log SET actor = 'someone-else' WHERE seq = 2")
        with open_store(target.url) as store:
            rows = list(store.access_chain())
        previous = GENESIS
        for seq, fields, _ in rows:
            previous = chain_hash(previous, fields)
            target.execute(f"UPDATE {{s}}.access_log SET chain = '{previous}' WHERE seq = {seq}")
        assert report_of(target).broken_at == 10  # the checkpoint recorded in the log
        # the attacker also deletes the checkpoint record: the file still has it
        target.execute("DELETE FROM {s}.access_log WHERE seq = 11")
        report = report_of(target, checkpoints=read_checkpoints(marks), public_key=public)
        assert (report.ok, report.broken_at) == (False, 10)


class TestCheckpoints:
    def test_signatures(self, tmp_path: Path) -> None:
        store = open_store("memory://")
        store.append_access(records(0, 3))
        private, public = new_signing_key()
        _, other_public = new_signing_key()
        checkpoint(store, signing_key=private)
        assert verify(store, public_key=public).ok
        report = verify(store, public_key=other_public)
        assert report.reason == "a checkpoint's signature is bad"
        unsigned = Checkpoint(3, store.access_records()[2].chain or "", "2026-01-05")
        assert verify(store, checkpoints=[unsigned], public_key=public).reason == (
            "an unsigned checkpoint"
        )
        assert verify(store, checkpoints=[unsigned]).ok
        wrong = attrs.evolve(unsigned, chain="0" * 64)
        assert verify(store, checkpoints=[wrong]).broken_at == 3

    def test_bad_keys_and_files(self, tmp_path: Path) -> None:
        store = open_store("memory://")
        with pytest.raises(ValidationError):
            checkpoint(store, signing_key=b"not a key")
        _, public = new_signing_key()
        with pytest.raises(ValidationError):
            checkpoint(store, signing_key=public)
        with pytest.raises(ValidationError):
            verify(store, public_key=b"nope")
        bad = tmp_path / "bad.jsonl"
        bad.write_text("{}\n", encoding="utf-8")
        with pytest.raises(ValidationError):
            read_checkpoints(bad)
        bad.write_text("nope\n", encoding="utf-8")
        with pytest.raises(ValidationError):
            read_checkpoints(bad)

    def test_an_empty_log(self) -> None:
        store = open_store("memory://")
        mark = checkpoint(store)
        assert (mark.seq, mark.chain) == (0, GENESIS)
        assert verify(store).ok


class TestCli:
    def run(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        args = cli.build_parser().parse_args(list(argv))
        return args.handler(args, out, io.StringIO()), out.getvalue()

    def test_checkpoint_and_verify(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        with open_store(url) as store:
            store.append_access(records(0, 4))
        key = tmp_path / "key.pem"
        status, out = self.run("checkpoint", "--new-key", str(key))
        assert status == 0
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        assert cli.main(["checkpoint", "--new-key", str(key)]) == 2  # exists already
        marks = tmp_path / "marks.jsonl"
        status, out = self.run(
            "checkpoint", "--db", url, "--signing-key", str(key), "--out", str(marks)
        )
        assert (status, "signed" in out) == (0, True)
        status, out = self.run(
            "verify", "--db", url, "--checkpoints", str(marks), "--public-key", f"{key}.pub"
        )
        assert (status, out.strip()) == (0, "ok: 5 records, 0 events, 2 checkpoint(s)")
        with closing(sqlite3.connect(tmp_path / "cli.db")) as conn, conn:
            conn.execute("DROP TRIGGER access_log_no_update")
            conn.execute("UPDATE access_log SET action = 'history' WHERE seq = 2")
        status, out = self.run("verify", "--db", url)
        assert status == 1
        assert out.startswith("BROKEN at record 2")
        assert cli.main(["checkpoint"]) == 2  # no --db
