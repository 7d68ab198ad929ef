"""The analytics cache: referral rows computed once, kept in the store, reused while valid.

Replaying a referral's history into its row (:func:`~referralkit.analytics.read_row`) costs
hundreds of microseconds; a frame of a million referrals cannot afford it each time. So the
rows a frame computes are kept in the store
(:meth:`~referralkit.storage.ReferralStore.write_analytics_blocks`, Arrow IPC blocks,
zstd-compressed), each with

- the referral's **version** it was computed from: a referral changed since is replayed
  again (the store's :meth:`~referralkit.storage.ReferralStore.referral_versions` says);
- its **validity span**: the instants ``as_of`` may take without changing the row. A row
  depends on ``as_of`` only through the moments its history names (events, payload instants,
  clock deadlines, stops and pauses): between two consecutive such moments every column is
  constant, except ``overdue`` and ``open_age_days``, which are recomputed for each frame from
  ``due_by``, ``received_at`` and the status, as :func:`read_row` computes them. A row computed
  exactly at one of those moments is valid at that instant only.

A row is reused when its version is the referral's current one and ``as_of`` lies in its
span; every other referral is replayed from its events (the reference path), and its new row
is added to the cache when all its events were read (``as_of`` at or after its last event:
point-in-time rows of the past are computed, not kept). Only the columns a de-identified
frame holds are kept, before pseudonyms and date shifts (those need the
:class:`~referralkit.analytics.Deidentifier`'s key, which is never stored): no name, MRN,
member id, contact, birth date or free text is written. Identified frames
(``deidentify=False``) and clock rules other than the default are always replayed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..clocks import DEFAULT_CLOCKS, ClockReading, ClockRules, Timeline
from ..errors import ReferralKitError
from ..model import ReferralEvent
from ..storage import ReferralStore
from ._deid import Column, columns_kept
from ._rows import COLUMNS, Row, read_row_with

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "cached_columns",
    "cached_events",
    "cached_referrals",
    "events_name",
    "referrals_name",
    "row_span",
]

logger = logging.getLogger("referralkit.analytics")

FORMAT: Final = 1
"""Bumped when what a cached row means changes (the columns are in the name already)."""


def cached_columns() -> tuple[Column, ...]:
    """The columns kept in the cache: those of a de-identified frame, read from the PHI
    declaration at each call (a field declared PHI leaves the cache too)."""
    return tuple(columns_kept(COLUMNS, deidentify=True))


def _name(kind: str, columns: Sequence[Column]) -> str:
    digest = hashlib.sha256(repr((FORMAT, [(c.name, c.dtype) for c in columns])).encode())
    return f"{kind}-{digest.hexdigest()[:16]}"


def referrals_name() -> str:
    """The referral cache's name in the store: another column set is another cache."""
    return _name("referrals", cached_columns())


RECOMPUTED: Final = ("overdue", "open_age_days")
"""Columns that move with ``as_of`` between the moments of a history: computed per frame."""

COMPACT_AFTER: Final = 8
"""Blocks under the name before a refresh rewrites the cache as one set of blocks."""

BLOCK_ROWS: Final = 100_000
"""Rows per stored block."""

FEW: Final = 50
"""Stale referrals read one query each; more (and more than 5%) are read in one pass."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US: Final = dt.timedelta(microseconds=1)
_LOWEST: Final = -(2**63) + 1
_HIGHEST: Final = 2**63 - 1


def _micros(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // _US


# --------------------------------------------------------------------------- spans


def _gather(value: Any, out: set[dt.datetime]) -> None:
    """Every datetime inside ``value`` (tuples, lists, dicts and the timeline's slotted
    records; events are skipped: their instants are added from the history)."""
    if isinstance(value, dt.datetime):
        out.add(value)
    elif isinstance(value, tuple | list):
        for item in value:
            _gather(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _gather(item, out)
    elif hasattr(value, "__slots__") and not isinstance(value, ReferralEvent):
        for slot in value.__slots__:
            _gather(getattr(value, slot, None), out)


def row_span(
    events: Sequence[ReferralEvent],
    as_of: dt.datetime,
    row: Row,
    timeline: Timeline,
    readings: Iterable[ClockReading],
) -> tuple[int, int]:
    """The instants (microseconds since the epoch, both ends included) at which ``row``,
    computed at ``as_of``, is the referral's row too, ``overdue`` and ``open_age_days``
    aside."""
    moments: set[dt.datetime] = {e.at for e in events}
    for slot in Timeline.__slots__:
        if slot not in ("as_of", "referral_id"):
            _gather(getattr(timeline, slot), moments)
    for reading in readings:
        _gather(reading._replace(as_of=reading.start), moments)  # as_of is no moment
    _gather(tuple(row), moments)
    if as_of in moments:
        exact = _micros(as_of)
        return exact, exact
    before = [m for m in moments if m < as_of]
    after = [m for m in moments if m > as_of]
    low = _micros(max(before)) + 1 if before else _LOWEST
    high = _micros(min(after)) - 1 if after else _HIGHEST
    return low, high


# --------------------------------------------------------------------------- blocks


def _schema(columns: Sequence[Column]) -> pa.Schema:
    import pyarrow as pa

    from ._parquet import _schema as columns_schema

    schema = columns_schema(columns)
    for name in ("_version", "_low", "_high"):
        schema = schema.append(pa.field(name, pa.int64()))
    return schema


def _encode(table: pa.Table) -> list[bytes]:
    import pyarrow as pa

    blocks = []
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    for start in range(0, table.num_rows, BLOCK_ROWS):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table.slice(start, BLOCK_ROWS))
        blocks.append(sink.getvalue().to_pybytes())
    return blocks


def _decode(
    blocks: Sequence[bytes], schema: pa.Schema, sizes: list[int] | None = None
) -> pa.Table | None:
    """The blocks as one table, or ``None`` when one of them is not a block of this
    schema (a damaged or foreign block: the whole cache is then recomputed); each block's
    row count is added to ``sizes`` when given."""
    import pyarrow as pa

    tables = []
    for block in blocks:
        try:
            table = pa.ipc.open_stream(block).read_all()
        except (pa.ArrowException, OSError, ValueError):
            return None
        if not table.schema.equals(schema):
            return None
        tables.append(table)
        if sizes is not None:
            sizes.append(table.num_rows)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _rows_table(
    columns: Sequence[Column],
    rows: Sequence[Row],
    versions: Sequence[int],
    spans: Sequence[tuple[int, int]],
) -> pa.Table:
    import pyarrow as pa

    from ._frames import _convert

    frame = _convert([tuple(r) for r in rows], COLUMNS, columns)
    schema = _schema(columns)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.append_column("_version", pa.array(versions, pa.int64()))
    table = table.append_column("_low", pa.array([s[0] for s in spans], pa.int64()))
    table = table.append_column("_high", pa.array([s[1] for s in spans], pa.int64()))
    return table.cast(schema)


def _latest(table: pa.Table) -> pa.Table:
    """One row per referral: the one added last."""
    import numpy as np
    import pyarrow as pa

    if table.num_rows == 0:
        return table
    numbered = pa.table(
        {"referral_id": table["referral_id"], "_n": pa.array(np.arange(table.num_rows))}
    )
    last = numbered.group_by("referral_id").aggregate([("_n", "max")])["_n_max"]
    return table.take(pa.array(np.sort(last.to_numpy())))


# --------------------------------------------------------------------------- frames


def _to_pandas(table: pa.Table, columns: Sequence[Column]) -> pd.DataFrame:
    """The cached columns as the frame's dtypes, built column by column in C (the same
    dtypes as the replayed rows' :func:`~referralkit.analytics._frames._convert`)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    data: dict[str, Any] = {}
    for column in columns:
        values = table[column.name]
        kind = column.dtype
        if kind == "datetime":
            micros = pc.fill_null(values.cast(pa.int64()), -(2**63)).to_numpy()
            data[column.name] = pd.DatetimeIndex(micros.view("M8[us]")).tz_localize("UTC")
        elif kind == "category":
            categories = pc.drop_null(pc.unique(values)).to_pylist()
            categories.sort()
            if not categories:
                # what pandas makes of a column of nothing but missing values
                data[column.name] = pd.Categorical([None] * len(values))
                continue
            codes = pc.index_in(values, value_set=pa.array(categories, pa.string()))
            data[column.name] = pd.Categorical.from_codes(
                pc.fill_null(codes, -1).to_numpy().astype(np.int64),
                categories=pd.Index(categories),
            )
        elif kind == "string":
            data[column.name] = pd.array(values.to_numpy(zero_copy_only=False), dtype="string")
        elif kind == "float":
            data[column.name] = values.to_numpy(zero_copy_only=False).astype("float64")
        elif kind in ("boolean", "Int64"):
            mask = pc.is_null(values).to_numpy(zero_copy_only=False)
            filled = pc.fill_null(values, False if kind == "boolean" else 0)
            array = filled.to_numpy(zero_copy_only=False)
            data[column.name] = (
                pd.arrays.BooleanArray(array.astype(bool), mask)
                if kind == "boolean"
                else pd.arrays.IntegerArray(array.astype(np.int64), mask)
            )
        else:
            data[column.name] = values.to_numpy(zero_copy_only=False).astype(kind)
    return pd.DataFrame(data, index=pd.RangeIndex(table.num_rows))


def _moving(frame: pd.DataFrame, as_of: dt.datetime) -> None:
    """``overdue`` and ``open_age_days`` as of ``as_of``, as :func:`read_row` computes them:
    open, not seen, due before ``as_of``; days from receipt to ``as_of`` of an open one."""
    import numpy as np

    is_open = frame["is_open"].to_numpy(dtype=bool)
    due = frame["due_by"]
    frame["overdue"] = (
        due.notna().to_numpy()
        & (due < as_of).to_numpy(dtype=bool)
        & is_open
        & (frame["status"] != "seen").to_numpy(dtype=bool)
    )
    received = frame["received_at"].array.asi8
    age = (_micros(as_of) - received).astype("float64") / 1e6 / 86_400.0
    frame["open_age_days"] = np.where(
        is_open & frame["received_at"].notna().to_numpy(), age, np.nan
    )


def cached_referrals(
    store: ReferralStore, as_of: dt.datetime, rules: ClockRules, *, keep: bool = True
) -> pd.DataFrame | None:
    """The de-identifiable columns of every referral's row as of ``as_of`` (not yet
    pseudonymised nor shifted), in referral id order, reusing the store's cache and adding
    the rows it had to replay (when ``keep``); ``None`` when the cache does not apply (the
    store keeps none, or ``rules`` are not the default)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._frames import _concat, _convert

    if rules != DEFAULT_CLOCKS:
        return None
    columns = cached_columns()
    name = referrals_name()
    blocks = store.read_analytics_blocks(name)
    if blocks is None:
        return None
    schema = _schema(columns)
    decoded = _decode(blocks, schema)
    damaged = decoded is None
    table = schema.empty_table() if decoded is None else decoded
    if len(blocks) > 1:
        table = _latest(table)  # a block holds one row per referral
    pairs = list(store.referral_versions())
    ids = pa.array([p[0] for p in pairs], pa.string())
    versions = pa.array([p[1] for p in pairs], pa.int64())
    moment = _micros(as_of)

    position = pc.index_in(table["referral_id"], value_set=ids)
    current = pc.take(versions, position)
    fresh = pc.fill_null(pc.equal(current, table["_version"]), False)
    in_span = pc.and_(
        pc.less_equal(table["_low"], moment), pc.greater_equal(table["_high"], moment)
    )
    valid = pc.and_(fresh, in_span)
    not_yet = pc.and_(
        fresh, pc.greater(table["created_at"], pa.scalar(as_of, pa.timestamp("us", tz="UTC")))
    )
    settled = pc.filter(table["referral_id"], pc.or_(valid, not_yet))
    stale = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=settled))).to_pylist()
    wanted = pc.and_(valid, pc.invert(not_yet))
    # (no copy when every cached row is reused, the common case of a warm cache)
    reused = table if pc.all(wanted).as_py() is not False else table.filter(wanted)

    rows: list[Row] = []
    kept_rows: list[Row] = []
    kept_versions: list[int] = []
    kept_spans: list[tuple[int, int]] = []
    for events in _histories(store, stale, len(pairs)):
        found = read_row_with(events, as_of, rules)
        if found is None:
            continue
        row, timeline, readings = found
        rows.append(row)
        if events[-1].at <= as_of:
            kept_rows.append(row)
            kept_versions.append(events[-1].version)
            kept_spans.append(row_span(events, as_of, row, timeline, readings))
    logger.debug("analytics cache: %d rows reused, %d replayed", reused.num_rows, len(stale))

    if keep and (kept_rows or damaged):
        added = _rows_table(columns, kept_rows, kept_versions, kept_spans)
        _keep(store, name, table, added, fresh, compact=damaged or len(blocks) >= COMPACT_AFTER)

    del table, decoded, blocks  # only the rows reused are kept from here on
    # blocks one after another (and a compacted block) are not in id order
    if not _ascending(reused["referral_id"]):
        reused = reused.take(pc.sort_indices(reused["referral_id"]))
    parts = [_to_pandas(reused, columns)] if reused.num_rows or not rows else []
    if rows:
        parts.append(_convert([tuple(r) for r in rows], COLUMNS, columns))
    frame = _concat(iter(parts)) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        ids = pa.array(frame["referral_id"].to_numpy(dtype=object), pa.string())
        order = pc.sort_indices(ids).to_numpy()
        frame = frame.iloc[order].reset_index(drop=True)
    _moving(frame, as_of)
    return frame


def _ascending(ids: Any) -> bool:
    """Whether ``ids`` (a pyarrow string column) are in strictly ascending order."""
    import pyarrow.compute as pc

    if len(ids) < 2:
        return True
    return bool(pc.all(pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py())


def _keep(
    store: ReferralStore, name: str, table: pa.Table, added: pa.Table, fresh: Any, *, compact: bool
) -> None:
    """Add the replayed rows to the cache; rewrite it whole (its current rows and the new
    ones) when it has grown to many blocks or could not be read. A store that refuses the
    write (read-only) is logged: the frame is right either way."""
    import pyarrow as pa

    try:
        if compact:
            merged = pa.concat_tables([table.filter(fresh), added])
            store.write_analytics_blocks(name, _encode(_latest(merged)), replace=True)
        else:
            store.write_analytics_blocks(name, _encode(added))
    except ReferralKitError as error:
        logger.info("analytics cache not written (%s)", type(error).__name__)


def _histories(
    store: ReferralStore, ids: Sequence[str], total: int
) -> Iterable[Sequence[ReferralEvent]]:
    """The histories of ``ids``: one query each when they are few, else one pass over
    every history keeping theirs."""
    if not ids:
        return
    if len(ids) <= max(FEW, total // 20):
        for referral_id in ids:
            yield store.events(referral_id)
        return
    wanted = set(ids)
    for events in store.event_histories():
        if events and events[0].referral_id in wanted:
            yield events


# --------------------------------------------------------------------------- events


def cached_event_columns() -> tuple[Column, ...]:
    """The event columns kept in the cache: those of a de-identified events frame."""
    from ._frames import EVENT_COLUMNS

    return tuple(columns_kept(EVENT_COLUMNS, deidentify=True))


def events_name() -> str:
    """The events cache's name in the store."""
    return _name("events", cached_event_columns())


_FAR_FUTURE: Final = dt.datetime.max.replace(tzinfo=dt.UTC)


def _events_schema(columns: Sequence[Column]) -> pa.Schema:
    import pyarrow as pa

    from ._parquet import _schema as columns_schema

    return columns_schema(columns).append(pa.field("_version", pa.int64()))


def cached_events(
    store: ReferralStore, as_of: dt.datetime, *, keep: bool = True
) -> pd.DataFrame | None:
    """The de-identifiable columns of every event recorded up to ``as_of`` (not yet
    pseudonymised nor shifted), in referral id then history order, from the store's cache;
    the histories of referrals changed since are read again (and kept when ``keep``).
    ``None`` when the store keeps no cache.

    An event's row never changes once recorded, so a referral's cached rows hold while its
    version is the one they were read at; ``as_of`` only decides which of them are listed:
    those before its first event recorded after ``as_of``, as the replay stops there.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._frames import _convert, _event_rows

    columns = cached_event_columns()
    name = events_name()
    blocks = store.read_analytics_blocks(name)
    if blocks is None:
        return None
    schema = _events_schema(columns)
    sizes: list[int] = []
    decoded = _decode(blocks, schema, sizes)
    damaged = decoded is None
    table = schema.empty_table() if decoded is None else decoded
    if len(blocks) > 1 and decoded is not None:
        # a referral's rows are those of the last block that holds it (two frames refreshing
        # at once may both have written it)
        numbered = pa.table(
            {
                "referral_id": table["referral_id"],
                "_block": pa.array(np.repeat(np.arange(len(sizes)), sizes)),
            }
        )
        last = numbered.group_by("referral_id").aggregate([("_block", "max")])
        newest = pc.take(last["_block_max"], pc.index_in(table["referral_id"], last["referral_id"]))
        table = table.filter(pc.equal(numbered["_block"], newest))
    pairs = list(store.referral_versions())
    ids = pa.array([p[0] for p in pairs], pa.string())
    versions = pa.array([p[1] for p in pairs], pa.int64())
    # each distinct referral looked up once (a history has many rows)
    encoded = pc.dictionary_encode(table["referral_id"]).combine_chunks()
    current = pc.take(
        pc.take(versions, pc.index_in(encoded.dictionary, value_set=ids)), encoded.indices
    )
    fresh = pc.fill_null(pc.equal(current, table["_version"]), False)
    if pc.all(fresh).as_py() is False:
        table = table.filter(fresh)
        present = pc.unique(table["referral_id"])
    else:
        present = encoded.dictionary
    stale = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=present))).to_pylist()

    found: list[tuple[Any, ...]] = []
    found_versions: list[int] = []
    for events in _histories(store, stale, len(pairs)):
        rows = list(_event_rows(events, _FAR_FUTURE))
        found.extend(tuple(getattr(r, c.name) for c in columns) for r in rows)
        found_versions.extend([events[-1].version] * len(rows))
    if found:
        added = pa.Table.from_pandas(_convert(found, columns, columns), preserve_index=False)
        added = added.append_column("_version", pa.array(found_versions, pa.int64()))
        added = added.cast(schema)
        cached = table.num_rows
        table = pa.concat_tables([table, added])
        if cached:
            table = _sorted_events(table)
    elif len(blocks) > 1:
        table = _sorted_events(table)
    if keep and (found or damaged):
        try:
            if damaged or len(blocks) >= COMPACT_AFTER:
                store.write_analytics_blocks(name, _encode(table), replace=True)
            elif found:
                store.write_analytics_blocks(name, _encode(added))
        except ReferralKitError as error:
            logger.info("analytics cache not written (%s)", type(error).__name__)

    return _listed(table, as_of, columns)


def _sorted_events(table: pa.Table) -> pa.Table:
    """In referral id then history order (one block is written in that order already)."""
    import pyarrow.compute as pc

    order = pc.sort_indices(
        table,
        [("referral_id", "ascending"), ("version", "ascending"), ("event_index", "ascending")],
    )
    return table.take(order)


def _listed(table: pa.Table, as_of: dt.datetime, columns: Sequence[Column]) -> pd.DataFrame:
    """The events a replay up to ``as_of`` reads: each history up to its first event after
    ``as_of``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    late = pc.fill_null(
        pc.greater(table["at"], pa.scalar(as_of, pa.timestamp("us", tz="UTC"))), False
    ).to_numpy(zero_copy_only=False)
    if late.any():
        referral = table["referral_id"].to_numpy(zero_copy_only=False)
        starts = (
            np.flatnonzero(np.r_[True, referral[1:] != referral[:-1]])
            if len(referral)
            else np.array([], dtype=np.int64)
        )
        position = np.arange(len(late))
        first_late = np.minimum.reduceat(np.where(late, position, len(late)), starts)
        group = np.cumsum(np.r_[True, referral[1:] != referral[:-1]]) - 1
        table = table.filter(pa.array(position < first_late[group]))
    return _to_pandas(table, columns)
