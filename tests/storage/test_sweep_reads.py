"""The sweep's reads (issue 10): the events of a page of referrals decoded one referral at a
time, as the sweep evaluates them, and each event row read as the general path reads it.

``RecordCodec.selected`` builds a sealed, unencrypted row in UTC directly (the time parsed
once for the seal's context and the event); every other row goes the general way. The
result, and the error for a damaged row, must be the general path's.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import referralkit as rk
from referralkit import KeyRing
from referralkit.errors import CorruptRecordError, StorageError
from referralkit.rules._patterns import SIGNAL_EVENT_TYPES
from referralkit.storage._json import RecordCodec, _fast_event, event_from_row
from referralkit.storage.sqlite import SQLiteStore
from referralkit.testing import FakeClock, sample_request

ACTOR = rk.Actor("coord-1", {rk.Role.COORDINATOR})
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
COLUMNS = "referral_id, version, idx, at, actor, type, payload"


def filled(path: Path, keys: KeyRing | None = None, count: int = 3) -> list[str]:
    """A SQLite file of ``count`` referrals with a few changes each; their ids."""
    clock = FakeClock(T0)
    ids = []
    with SQLiteStore(path, keys=keys) as store:
        desk = rk.ReferralDesk(store, clock=clock)
        for n in range(count):
            referral = desk.intake(ACTOR, sample_request(source_id=f"src-{n}"))
            clock.advance(hours=1)
            desk.send(ACTOR, referral.id)
            clock.advance(hours=1)
            desk.accept(ACTOR, referral.id)
            clock.advance(hours=1)
            ids.append(referral.id)
    return ids


def rows_of(store: SQLiteStore) -> list[Any]:
    return store._read(
        f"SELECT {COLUMNS} FROM events ORDER BY referral_id, version, idx",
        (),
        sealed=True,
    )


def general(codec: RecordCodec, rows: Sequence[Any]) -> list[rk.ReferralEvent]:
    """The events of ``rows`` the general way (what ``selected`` did for every row)."""
    events = []
    for row in rows:
        body, count = codec.payload_body(row)
        events.append((_fast_event if count != "-" else event_from_row)((*row[:6], body)))
    return events


def outcome(read: Callable[[], list[rk.ReferralEvent]]) -> Any:
    try:
        events = read()
    except StorageError as error:
        return type(error), str(error)
    return [(e, type(e.payload), e.at.tzinfo) for e in events]


def edit(path: Path, sql: str, *params: Any) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(sql, params)


@pytest.mark.parametrize("encrypted", [False, True])
def test_events_read_are_the_general_paths(tmp_path: Path, encrypted: bool) -> None:
    keys = KeyRing.generate() if encrypted else None
    filled(tmp_path / "s.db", keys)
    with SQLiteStore(tmp_path / "s.db", keys=keys) as store:
        rows = rows_of(store)
        assert rows
        assert outcome(lambda: store._codec.selected(rows)) == outcome(
            lambda: general(store._codec, rows)
        )


def _moved_zone(at: str) -> str:
    return dt.datetime.fromisoformat(at).astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()


@pytest.mark.parametrize(
    "damage",
    [
        # the payload edited under its seal: its checksum no longer matches
        lambda p, r: edit(
            p, "UPDATE events SET payload = replace(payload, 'accept', 'acceXt') WHERE type = ?", r
        ),
        # the time edited: the seal's context no longer matches
        lambda p, r: edit(p, "UPDATE events SET at = replace(at, 'T1', 'T2') WHERE type = ?", r),
        # the time not a time
        lambda p, r: edit(p, "UPDATE events SET at = 'soon' WHERE type = ?", r),
        # the same instant in another zone: read as the general path reads it
        None,
        # an unsealed (older) payload
        lambda p, r: edit(
            p,
            "UPDATE events SET payload = '{' || substr(payload, instr(payload, '\",') + 2)"
            " WHERE type = ?",
            r,
        ),
        # a damaged seal head
        lambda p, r: edit(
            p,
            "UPDATE events SET payload = replace(payload, '{\"~c\"', '{\"~d\"') WHERE type = ?",
            r,
        ),
    ],
)
def test_a_damaged_or_unusual_row_is_read_as_the_general_path_reads_it(
    tmp_path: Path, damage: Callable[[Path, str], None] | None
) -> None:
    path = tmp_path / "s.db"
    filled(path)
    if damage is None:
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.create_function("moved", 1, _moved_zone)
            conn.execute("UPDATE events SET at = moved(at) WHERE type = 'status_changed'")
    else:
        damage(path, "status_changed")
    with SQLiteStore(path) as store:
        rows = rows_of(store)
        found = outcome(lambda: store._codec.selected(rows))
        assert found == outcome(lambda: general(store._codec, rows))
        if damage is None:
            assert isinstance(found, list)
            assert found


def test_the_sweeps_reads_decode_a_referral_at_a_time(tmp_path: Path) -> None:
    """``_sweep_reads`` reads its rows at once, and decodes each referral's events only when
    the caller comes to it: a damaged event of the second referral is found after the first
    referral was given (and the rows read before the damage are the ones decoded)."""
    path = tmp_path / "s.db"
    ids = sorted(filled(path, count=2))
    with SQLiteStore(path) as store:
        reads = iter(store._sweep_reads(ids, SIGNAL_EVENT_TYPES))
        # damaged after the read: what is decoded is what was read
        edit(
            path,
            "UPDATE events SET payload = replace(payload, 'accept', 'acceXt')"
            " WHERE referral_id = ?",
            ids[1],
        )
        first = next(reads)
        assert first[0] == ids[0]
        assert first[2]
        assert {e.type for e in first[2]} <= SIGNAL_EVENT_TYPES
        second = next(reads)
        assert second[0] == ids[1]
        assert list(reads) == []
    with SQLiteStore(path) as store:
        reads = iter(store._sweep_reads(ids, SIGNAL_EVENT_TYPES))
        assert next(reads)[0] == ids[0]
        with pytest.raises(CorruptRecordError):
            next(reads)
