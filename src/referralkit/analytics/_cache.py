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
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..clocks import DEFAULT_CLOCKS, ClockReading, ClockRules, Timeline
from ..errors import ReferralKitError
from ..model import ReferralEvent
from ..storage import ReferralStore
from ._deid import Column, Deidentifier, columns_kept
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


_IGNORE, _MOMENT, _ITEMS, _MAPPING, _SLOTS = range(5)
_KINDS: dict[type, int] = {}


def _kind(cls: type) -> int:
    """How :func:`_gather` reads a value of ``cls`` (decided once per type, by the same
    ``isinstance`` tests a value-by-value walk would make)."""
    if issubclass(cls, dt.datetime):
        kind = _MOMENT
    elif issubclass(cls, tuple | list):
        kind = _ITEMS
    elif issubclass(cls, dict):
        kind = _MAPPING
    elif hasattr(cls, "__slots__") and not issubclass(cls, ReferralEvent):
        kind = _SLOTS
    else:
        kind = _IGNORE
    _KINDS[cls] = kind
    return kind


def _gather(value: Any, out: set[dt.datetime]) -> None:
    """Every datetime inside ``value`` (tuples, lists, dicts and the timeline's slotted
    records; events are skipped: their instants are added from the history)."""
    stack = [value]
    pop, push, add, kinds = stack.pop, stack.append, out.add, _KINDS
    while stack:
        item = pop()
        cls = type(item)
        kind = kinds.get(cls)
        if kind is None:
            kind = _kind(cls)
        if kind == _MOMENT:
            add(item)
            continue
        if kind == _ITEMS:
            inner: Iterable[Any] = item
        elif kind == _MAPPING:
            inner = item.values()
        elif kind == _SLOTS:
            inner = [getattr(item, slot, None) for slot in cls.__slots__]
        else:
            continue
        # the items read in place: a datetime is added, a scalar dropped, without the stack
        for sub in inner:
            sub_kind = kinds.get(type(sub))
            if sub_kind is None:
                sub_kind = _kind(type(sub))
            if sub_kind == _MOMENT:
                add(sub)
            elif sub_kind != _IGNORE:
                push(sub)


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
    moments.update([v for v in row if isinstance(v, dt.datetime)])  # a flat row
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
            # one record batch a block (rows replayed in batches come as several chunks):
            # a block is then read back as one chunk, converted without a copy
            writer.write_table(table.slice(start, BLOCK_ROWS).combine_chunks())
        blocks.append(sink.getvalue().to_pybytes())
    return blocks


def _decode(
    blocks: list[bytes],
    schema: pa.Schema,
    sizes: list[int] | None = None,
    fields: Collection[str] | None = None,
    *,
    free: bool = False,
) -> pa.Table | None:
    """The blocks as one table, or ``None`` when one of them is not a block of this
    schema (a damaged or foreign block: the whole cache is then recomputed); each block's
    row count is added to ``sizes`` when given. With ``fields`` (names of ``schema``) only
    those columns are read, in the schema's order: the others' buffers are neither
    decompressed nor kept. With ``free``, each of ``blocks`` is replaced by ``b""`` once
    read (its bytes are dropped as the table grows, not after)."""
    import pyarrow as pa

    options = None
    if fields is not None:
        at = [i for i, name in enumerate(schema.names) if name in fields]
        schema = pa.schema([schema.field(i) for i in at])
        options = pa.ipc.IpcReadOptions(included_fields=at)
    tables = []
    for at_block, block in enumerate(blocks):
        try:
            table = pa.ipc.open_stream(block, options=options).read_all()
        except (pa.ArrowException, OSError, ValueError):
            return None
        if free:
            blocks[at_block] = block = b""
        if not table.schema.equals(schema):
            return None
        tables.append(table)
        if sizes is not None:
            sizes.append(table.num_rows)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def arrow_rows(
    records: Sequence[tuple[Any, ...]], columns: Sequence[Column], kept: Sequence[Column]
) -> pa.Table:
    """The ``kept`` columns of ``records`` (tuples of every one of ``columns``) as an Arrow
    table of the cache's types, built column by column from the Python values (the same
    values the pandas conversion of the replay path gives)."""
    import pyarrow as pa

    from ._parquet import _schema as columns_schema

    schema = columns_schema(kept)
    position = {c.name: i for i, c in enumerate(columns)}
    arrays = []
    for field in schema:
        at = position[field.name]
        arrays.append(pa.array([r[at] for r in records], type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _with_versions(
    table: pa.Table, versions: Sequence[int], spans: Sequence[tuple[int, int]]
) -> pa.Table:
    """``table`` (cached columns) with each row's version and validity span appended."""
    import pyarrow as pa

    table = table.append_column("_version", pa.array(versions, pa.int64()))
    table = table.append_column("_low", pa.array([s[0] for s in spans], pa.int64()))
    return table.append_column("_high", pa.array([s[1] for s in spans], pa.int64()))


def _latest(table: pa.Table) -> pa.Table:
    """One row per referral: the one added last."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0 or pc.count_distinct(table["referral_id"]).as_py() == table.num_rows:
        return table  # no referral twice (the blocks of one write): nothing to drop, no copy
    numbered = pa.table(
        {"referral_id": table["referral_id"], "_n": pa.array(np.arange(table.num_rows))}
    )
    last = numbered.group_by("referral_id").aggregate([("_n", "max")])["_n_max"]
    return table.take(pa.array(np.sort(last.to_numpy())))


# --------------------------------------------------------------------------- frames


def columns_of(table: pa.Table) -> dict[str, Any]:
    """``table``'s columns by name: :func:`to_pandas` frees each one once converted, so
    drop every other reference to the table first."""
    return dict(zip(table.column_names, table.columns, strict=True))


def to_pandas(data: dict[str, Any], columns: Sequence[Column]) -> pd.DataFrame:
    """The Arrow columns ``data`` (taken out of it one by one, so that each column's Arrow
    memory is released as soon as its pandas column is built) as the frame's dtypes, built
    in C (the same dtypes as the replayed rows'
    :func:`~referralkit.analytics._frames._convert`)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    built: dict[str, Any] = {}
    rows = len(next(iter(data.values()))) if data else 0
    for column in columns:
        values = data.pop(column.name)
        if isinstance(values, pa.ChunkedArray):
            values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
        kind = column.dtype
        if kind == "datetime":
            micros = pc.fill_null(values.cast(pa.int64()), -(2**63)).to_numpy()
            built[column.name] = pd.DatetimeIndex(micros.view("M8[us]")).tz_localize("UTC")
        elif kind == "category":
            encoded = pc.dictionary_encode(values)
            distinct = encoded.dictionary
            if not len(distinct):
                # what pandas makes of a column of nothing but missing values
                built[column.name] = pd.Categorical([None] * rows)
                continue
            order = pc.sort_indices(distinct).to_numpy()
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            codes = pc.fill_null(encoded.indices.cast(pa.int64()), -1).to_numpy()
            codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
            built[column.name] = pd.Categorical.from_codes(
                codes, categories=pd.Index(distinct.take(pa.array(order)).to_pylist())
            )
        elif kind == "string":
            built[column.name] = pd.array(values.to_numpy(zero_copy_only=False), dtype="string")
        elif kind == "float":
            built[column.name] = values.to_numpy(zero_copy_only=False).astype("float64")
        elif kind in ("boolean", "Int64"):
            mask = pc.is_null(values).to_numpy(zero_copy_only=False)
            filled = pc.fill_null(values, False if kind == "boolean" else 0)
            array = filled.to_numpy(zero_copy_only=False)
            built[column.name] = (
                pd.arrays.BooleanArray(array.astype(bool), mask)
                if kind == "boolean"
                else pd.arrays.IntegerArray(array.astype(np.int64), mask)
            )
        else:
            built[column.name] = values.to_numpy(zero_copy_only=False).astype(kind)
        del values
    return pd.DataFrame(built, index=pd.RangeIndex(rows), copy=False)


def _to_pandas(table: pa.Table, columns: Sequence[Column]) -> pd.DataFrame:
    return to_pandas(columns_of(table), columns)


def moving(table: pa.Table, as_of: dt.datetime) -> pa.Table:
    """``overdue`` and ``open_age_days`` as of ``as_of``, as :func:`read_row` computes them:
    open, not seen, due before ``as_of``; days from receipt to ``as_of`` of an open one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    is_open = table["is_open"]
    moment = pa.scalar(as_of, pa.timestamp("us", tz="UTC"))
    overdue = pc.fill_null(
        pc.and_(
            pc.and_(pc.less(table["due_by"], moment), is_open),
            pc.not_equal(table["status"], "seen"),
        ),
        False,
    )
    received = table["received_at"]
    elapsed = pc.subtract(pa.scalar(_micros(as_of), pa.int64()), received.cast(pa.int64()))
    age = pc.divide(pc.divide(elapsed.cast(pa.float64()), 1e6), 86_400.0)
    age = pc.if_else(is_open, age, pa.scalar(None, pa.float64()))
    for name, values in (("overdue", overdue), ("open_age_days", age)):
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def cached_referrals(
    store: ReferralStore, as_of: dt.datetime, rules: ClockRules, *, keep: bool = True
) -> pd.DataFrame | None:
    """:func:`cached_referrals_table` as a pandas frame (``None`` when the cache does not
    apply)."""
    table = cached_referrals_table(store, as_of, rules, keep=keep)
    if table is None:
        return None
    data = columns_of(table)
    del table
    return to_pandas(data, cached_columns())


def versions_of(store: ReferralStore) -> tuple[pa.Array, pa.Array]:
    """Every referral's id and version (two Arrow arrays, in id order), built a slice at a
    time (no list of a million Python tuples)."""
    import pyarrow as pa

    ids: list[pa.Array] = []
    versions: list[pa.Array] = []
    batch: list[tuple[str, int]] = []

    def flush() -> None:
        ids.append(pa.array([p[0] for p in batch], pa.string()))
        versions.append(pa.array([p[1] for p in batch], pa.int64()))
        batch.clear()

    for pair in store.referral_versions():
        batch.append(pair)
        if len(batch) == BLOCK_ROWS:
            flush()
    flush()
    return pa.concat_arrays(ids), pa.concat_arrays(versions)


def _read_too(fields: Collection[str]) -> set[str]:
    """``fields`` and the cached columns that reading them through the cache needs too:
    those that decide whether a row is reused, and the inputs of the columns recomputed
    for each ``as_of``."""
    wanted = set(fields) | {"referral_id", "created_at", "_version", "_low", "_high"}
    if wanted & set(RECOMPUTED):
        wanted |= {*RECOMPUTED, "is_open", "due_by", "status", "received_at"}
    return wanted


def cached_referrals_table(
    store: ReferralStore,
    as_of: dt.datetime,
    rules: ClockRules,
    *,
    keep: bool = True,
    fields: Collection[str] | None = None,
) -> pa.Table | None:
    """The de-identifiable columns of every referral's row as of ``as_of`` (not yet
    pseudonymised nor shifted) as an Arrow table of the cache's types, in referral id order,
    reusing the store's cache and adding the rows it had to replay (when ``keep``); ``None``
    when the cache does not apply (the store keeps none, or ``rules`` are not the
    default).

    With ``fields`` (names of cached columns) the table holds those columns and the few the
    cache reads to decide which rows hold (``referral_id``, ``created_at``; the inputs of
    ``overdue`` and ``open_age_days`` when one of them is asked for), in the cache's order:
    only they are decompressed from the blocks, so a caller needing a third of the columns
    holds about a third of the memory. The rows are the same either way. (A cache due for
    compaction is read whole: it is rewritten with whole rows.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    if rules != DEFAULT_CLOCKS:
        return None
    columns = cached_columns()
    name = referrals_name()
    blocks = store.read_analytics_blocks(name)
    if blocks is None:
        return None
    schema = _schema(columns)
    read = None if fields is None or len(blocks) >= COMPACT_AFTER else _read_too(fields)
    if read is not None:
        columns = tuple(c for c in columns if c.name in read)
    # the versions before the blocks are decoded: the rows read from the store are freed
    # before the table is made, not held beside it (at a million referrals, hundreds of MB)
    ids, versions = versions_of(store)
    decoded = _decode(blocks, schema, fields=read, free=True)
    damaged = decoded is None
    table = schema.empty_table() if decoded is None else decoded
    if len(blocks) > 1:
        table = _latest(table)  # a block holds one row per referral
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

    rows, kept = replay_rows(store, stale, len(ids), as_of, rules)
    logger.debug("analytics cache: %d rows reused, %d replayed", reused.num_rows, len(stale))
    if keep and (kept is not None or damaged):
        added = kept if kept is not None else schema.empty_table()
        _keep(store, name, table, added, fresh, compact=damaged or len(blocks) >= COMPACT_AFTER)

    del table, decoded, blocks, ids, versions  # only the rows reused are kept from here on
    names = [c.name for c in columns]
    reused = reused.select(names)
    if rows is not None:
        reused = pa.concat_tables([reused, rows.select(names)])
    # blocks one after another (and a compacted block) are not in id order
    if not _ascending(reused["referral_id"]):
        reused = reused.take(pc.sort_indices(reused["referral_id"]))
    return moving(reused, as_of) if "overdue" in names else reused


def replay_rows(
    store: ReferralStore,
    stale: Sequence[str],
    total: int,
    as_of: dt.datetime,
    rules: ClockRules,
) -> tuple[pa.Table | None, pa.Table | None]:
    """The rows of the ``stale`` referrals replayed as of ``as_of`` (the cached columns; in
    the order read) and those to keep in the cache (the referrals whose every event was read,
    with their version and span): ``None`` for none. Made Arrow 5,000 rows at a time
    (each history dropped once read): the Python rows alive at once are one batch's, not the
    population's (a cold cache's first frame reads every history)."""
    import pyarrow as pa

    found: list[pa.Table] = []
    kept: list[pa.Table] = []
    for rows, keep in _replays(_histories(store, stale, total), as_of, rules):
        found.append(rows)
        if keep is not None:
            kept.append(keep)
    return (
        pa.concat_tables(found) if found else None,
        pa.concat_tables(kept) if kept else None,
    )


def _replays(
    histories: Iterable[Sequence[ReferralEvent]],
    as_of: dt.datetime,
    rules: ClockRules,
    size: int | None = None,
) -> Iterator[tuple[pa.Table, pa.Table | None]]:
    """The histories' rows (the cached columns) and those to keep (with version and span;
    the same Arrow buffers, no copy when every row is kept), ``size`` rows at a time
    (default ``BLOCK_ROWS // 20``); a history is dropped once its row is read."""
    batch = size or BLOCK_ROWS // 20
    found: list[Row] = []
    kept_at: list[int] = []
    kept_versions: list[int] = []
    kept_spans: list[tuple[int, int]] = []
    for events in histories:
        read = read_row_with(events, as_of, rules)
        if read is None:
            continue
        row, timeline, readings = read
        if events[-1].at <= as_of:
            kept_at.append(len(found))
            kept_versions.append(events[-1].version)
            kept_spans.append(row_span(events, as_of, row, timeline, readings))
        found.append(row)
        del events, read, timeline, readings
        if len(found) == batch:
            yield _replayed(found, kept_at, kept_versions, kept_spans)
            found, kept_at, kept_versions, kept_spans = [], [], [], []
    if found:
        yield _replayed(found, kept_at, kept_versions, kept_spans)


def _replayed(
    found: list[Row],
    kept_at: list[int],
    versions: list[int],
    spans: list[tuple[int, int]],
) -> tuple[pa.Table, pa.Table | None]:
    import pyarrow as pa

    rows = arrow_rows(found, COLUMNS, cached_columns())
    if not kept_at:
        return rows, None
    base = rows if len(kept_at) == rows.num_rows else rows.take(pa.array(kept_at, pa.int64()))
    return rows, _with_versions(base, versions, spans)


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
    """:func:`cached_events_table` as a pandas frame (``None`` without a cache)."""
    table = cached_events_table(store, as_of, keep=keep)
    if table is None:
        return None
    data = columns_of(table)
    del table
    return to_pandas(data, cached_event_columns())


def cached_events_table(
    store: ReferralStore, as_of: dt.datetime, *, keep: bool = True
) -> pa.Table | None:
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
        # a referral's rows are those of the last write that holds it (two frames refreshing
        # at once may both have written it): from the last block holding its history's first
        # row on, since one write's rows of a referral may run on into the next block
        block = pa.array(np.repeat(np.arange(len(sizes), dtype=np.int64), sizes))
        numbered = pa.table(
            {
                "referral_id": table["referral_id"],
                "_block": block,
                "_start": pc.if_else(_first_rows(table), block, pa.scalar(-1, pa.int64())),
            }
        )
        last = numbered.group_by("referral_id").aggregate([("_block", "max"), ("_start", "max")])
        start = pc.if_else(pc.equal(last["_start_max"], -1), last["_block_max"], last["_start_max"])
        from_block = pc.take(start, pc.index_in(table["referral_id"], last["referral_id"]))
        table = table.filter(pc.greater_equal(block, from_block))
    ids, versions = versions_of(store)
    fresh = _fresh_events(table, ids, versions)
    if pc.all(fresh).as_py() is False:
        table = table.filter(fresh)
    present = pc.unique(table["referral_id"])
    stale = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=present))).to_pylist()

    added = replay_events(store, stale, len(ids))
    if added is not None:
        cached = table.num_rows
        table = pa.concat_tables([table, added])
        if cached:
            table = _sorted_events(table)
    elif len(blocks) > 1:
        table = _sorted_events(table)
    if keep and (added is not None or damaged):
        try:
            if damaged or len(blocks) >= COMPACT_AFTER:
                store.write_analytics_blocks(name, _encode(table), replace=True)
            elif added is not None:
                store.write_analytics_blocks(name, _encode(added))
        except ReferralKitError as error:
            logger.info("analytics cache not written (%s)", type(error).__name__)
    del blocks, decoded
    return listed(table, as_of).drop_columns(["_version"])


def _first_rows(table: pa.Table) -> Any:
    """Which event rows are the first of their history (event 1.0): a write of a referral's
    rows starts with it."""
    import pyarrow.compute as pc

    return pc.and_(pc.equal(table["version"], 1), pc.equal(table["event_index"], 0))


def _fresh_events(table: pa.Table, ids: pa.Array, versions: pa.Array) -> Any:
    """Which event rows were read at their referral's current version (each distinct
    referral looked up once: a history has many rows)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(table["referral_id"]).combine_chunks()
    current = pc.take(
        pc.take(versions, pc.index_in(encoded.dictionary, value_set=ids)), encoded.indices
    )
    return pc.fill_null(pc.equal(current, table["_version"]), False)


def replay_events(store: ReferralStore, stale: Sequence[str], total: int) -> pa.Table | None:
    """The event rows of the ``stale`` referrals' whole histories with their versions (the
    cache's schema), or ``None`` for none; made Arrow a batch of histories at a time."""
    import pyarrow as pa

    found = [
        table
        for batch in _batched(_histories(store, stale, total), BLOCK_ROWS // 20)
        if (table := _event_table(batch)) is not None
    ]
    return pa.concat_tables(found) if found else None


def _event_table(histories: Iterable[Sequence[ReferralEvent]]) -> pa.Table | None:
    import pyarrow as pa

    from ._frames import _event_rows

    columns = cached_event_columns()
    found: list[tuple[Any, ...]] = []
    found_versions: list[int] = []
    for events in histories:
        rows = list(_event_rows(events, _FAR_FUTURE))
        found.extend(rows)
        found_versions.extend([events[-1].version] * len(rows))
    if not found:
        return None
    from ._frames import EVENT_COLUMNS

    table = arrow_rows(found, EVENT_COLUMNS, columns)
    return table.append_column("_version", pa.array(found_versions, pa.int64()))


def _sorted_events(table: pa.Table) -> pa.Table:
    """In referral id then history order (one block is written in that order already)."""
    import pyarrow.compute as pc

    order = pc.sort_indices(
        table,
        [("referral_id", "ascending"), ("version", "ascending"), ("event_index", "ascending")],
    )
    return table.take(order)


def listed(table: pa.Table, as_of: dt.datetime) -> pa.Table:
    """The events a replay up to ``as_of`` reads: each history (its rows one after another,
    in history order) up to its first event after ``as_of``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    late = pc.fill_null(
        pc.greater(table["at"], pa.scalar(as_of, pa.timestamp("us", tz="UTC"))), False
    )
    if not pc.any(late).as_py():
        return table
    late_at = late.to_numpy(zero_copy_only=False)
    encoded = pc.dictionary_encode(table["referral_id"]).combine_chunks()
    referral = encoded.indices.to_numpy(zero_copy_only=False)
    changes = np.r_[True, referral[1:] != referral[:-1]]
    starts = np.flatnonzero(changes)
    position = np.arange(len(late_at))
    first_late = np.minimum.reduceat(np.where(late_at, position, len(late_at)), starts)
    group = np.cumsum(changes) - 1
    return table.filter(pa.array(position < first_late[group]))


# --------------------------------------------------------------------------- de-identifying


class Pseudonyms:
    """A :class:`~referralkit.analytics.Deidentifier`'s pseudonyms of whole Arrow columns:
    one keyed hash per distinct value, remembered (an export names each referral in both
    datasets, a block at a time: it is hashed once), spread back to the rows in Arrow."""

    def __init__(self, deid: Deidentifier) -> None:
        self.deid = deid
        self._known: dict[str, dict[str, str]] = {}

    def __call__(self, kind: str, values: Any) -> Any:
        """The pseudonyms of ``values`` (a string array, chunked or not), in order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = pc.dictionary_encode(values)
        distinct = encoded.dictionary.to_pylist()
        known = self._known.setdefault(kind, {})
        missing = [v for v in distinct if v not in known]
        if missing:
            known.update(zip(missing, self.deid.pseudonyms(kind, missing), strict=True))
        names = pa.array([known[v] for v in distinct], pa.string())
        return pc.take(names, encoded.indices)


def deidentified(
    table: pa.Table, columns: Sequence[Column], deid: Deidentifier, names: Pseudonyms | None = None
) -> pa.Table:
    """``table`` (the cached columns) de-identified as the frames' ``_apply`` does it: each
    patient's timestamps moved by its shift, then the pseudonyms."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._deid import Rule

    if deid.date_shift_days and table.num_rows:
        patients = pc.dictionary_encode(table["patient_key"].combine_chunks())
        shifts = [deid.shift_days(p) * 86_400_000_000 for p in patients.dictionary.to_pylist()]
        by_row = pc.take(pa.array(shifts, pa.int64()), patients.indices)
        for column in columns:
            if column.dtype == "datetime":
                at = table.schema.get_field_index(column.name)
                micros = pc.add(table[column.name].cast(pa.int64()), by_row)
                table = table.set_column(at, column.name, micros.cast(table.schema[at].type))
    names = names if names is not None else Pseudonyms(deid)
    for column in columns:
        if column.rule is Rule.PSEUDONYM:
            at = table.schema.get_field_index(column.name)
            table = table.set_column(at, column.name, names(column.name, table[column.name]))
    return table


# --------------------------------------------------------------------------- streaming


class DamagedCacheError(ReferralKitError):
    """A cached block could not be read while streaming (the frames' paths repair the
    cache: the caller starts again through them)."""


def referral_parts(
    store: ReferralStore,
    as_of: dt.datetime,
    rules: ClockRules,
    *,
    keep: bool = True,
    versions: Versions | None = None,
) -> Iterator[pa.Table] | None:
    """:func:`cached_referrals_table` a block at a time, for writers that stream: the rows
    reused from each cached block (the newest block first; not in id order), then the
    replayed ones a chunk at a time; their ``overdue`` and ``open_age_days`` as of
    ``as_of``. Memory holds one block, the ids and versions, not the population. ``None``
    when the cache does not apply; :class:`DamagedCacheError` is raised while iterating when a block
    cannot be read. ``versions`` (the store's, read once) may be shared with
    :func:`event_parts`."""
    if rules != DEFAULT_CLOCKS:
        return None
    blocks = store.read_analytics_blocks(referrals_name())
    if blocks is None:
        return None
    return _referral_parts(store, blocks, as_of, rules, keep, versions or Versions(store))


def _referral_parts(
    store: ReferralStore,
    blocks: list[bytes],
    as_of: dt.datetime,
    rules: ClockRules,
    keep: bool,
    known: Versions,
) -> Iterator[pa.Table]:
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = cached_columns()
    names = [c.name for c in columns]
    schema = _schema(columns)
    ids, versions = known.ids, known.versions
    moment = _micros(as_of)
    when = pa.scalar(as_of, pa.timestamp("us", tz="UTC"))
    seen: list[pa.Array] = []
    settled: list[pa.Array] = []
    while blocks:
        table = _decode([blocks.pop()], schema)  # the newest first; each freed once read
        if table is None:
            raise DamagedCacheError("analytics cache")
        if seen:  # a referral's row is the one added last
            table = table.filter(
                pc.invert(pc.is_in(table["referral_id"], value_set=pa.concat_arrays(seen)))
            )
        seen.append(table["referral_id"].combine_chunks())
        current = pc.take(versions, pc.index_in(table["referral_id"], value_set=ids))
        fresh = pc.fill_null(pc.equal(current, table["_version"]), False)
        valid = pc.and_(
            fresh,
            pc.and_(pc.less_equal(table["_low"], moment), pc.greater_equal(table["_high"], moment)),
        )
        not_yet = pc.and_(fresh, pc.greater(table["created_at"], when))
        settled.append(pc.filter(table["referral_id"], pc.or_(valid, not_yet)).combine_chunks())
        part = table.filter(pc.and_(valid, pc.invert(not_yet))).select(names)
        if part.num_rows:
            yield moving(part, as_of)
    done = pa.concat_arrays(settled) if settled else pa.array([], pa.string())
    stale = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=done))).to_pylist()
    total = len(ids)
    del seen, settled, done, ids, versions, known
    added: list[pa.Table] = []
    # parts of a fifth of a block: each becomes a row group of the Parquet files
    for rows, kept in _replays(_histories(store, stale, total), as_of, rules, BLOCK_ROWS // 5):
        if kept is not None:
            added.append(kept)
        yield rows
    if keep and added:
        try:
            store.write_analytics_blocks(referrals_name(), _encode(pa.concat_tables(added)))
        except ReferralKitError as error:
            logger.info("analytics cache not written (%s)", type(error).__name__)


def event_parts(
    store: ReferralStore,
    as_of: dt.datetime,
    *,
    keep: bool = True,
    versions: Versions | None = None,
) -> Iterator[pa.Table] | None:
    """:func:`cached_events_table` a block at a time (see :func:`referral_parts`): each
    referral's rows one after another in history order, the referrals in no set order."""
    blocks = store.read_analytics_blocks(events_name())
    if blocks is None:
        return None
    return _event_parts(store, blocks, as_of, keep, versions or Versions(store))


def _event_parts(
    store: ReferralStore, blocks: list[bytes], as_of: dt.datetime, keep: bool, known: Versions
) -> Iterator[pa.Table]:
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = _events_schema(cached_event_columns())
    current = known.by_id()
    whole: set[str] = set()  # referrals whose first row a later block holds
    present: set[str] = set()
    while blocks:
        table = _decode([blocks.pop()], schema)  # the newest first; each freed once read
        if table is None:
            raise DamagedCacheError("analytics cache")
        # per referral (a history has many rows), in Python once each, spread in Arrow
        encoded = pc.dictionary_encode(table["referral_id"].combine_chunks())
        distinct = encoded.dictionary.to_pylist()
        version_of = pa.array([current.get(r) for r in distinct], pa.int64())
        keep_rows = pc.fill_null(
            pc.equal(pc.take(version_of, encoded.indices), table["_version"]), False
        )
        # a referral's rows are those of the last write that holds it: a write's rows of a
        # referral may run on from one block into the next, so a later block replaces this
        # one's rows only when it holds the history's first row
        again = [i for i, r in enumerate(distinct) if r in whole]
        if again:
            keep_rows = pc.and_(
                keep_rows, pc.invert(pc.is_in(encoded.indices, value_set=pa.array(again)))
            )
        starts = pc.unique(pc.filter(encoded.indices, _first_rows(table))).to_pylist()
        whole.update(distinct[i] for i in starts)
        if pc.all(keep_rows).as_py() is False:
            table = table.filter(keep_rows)
            kept = pc.unique(pc.filter(encoded.indices, keep_rows)).to_pylist()
            present.update(distinct[i] for i in kept)
        else:
            present.update(distinct)
        del encoded, distinct
        if table.num_rows:
            part = listed(table, as_of).drop_columns(["_version"])
            if part.num_rows:
                yield part
    stale = [r for r in current if r not in present]
    total = len(current)
    del whole, present, current, known
    added: list[pa.Table] = []
    for batch in _batched(_histories(store, stale, total), BLOCK_ROWS // 20):
        found = _event_table(batch)
        if found is not None:
            added.append(found)
            part = listed(found, as_of).drop_columns(["_version"])
            if part.num_rows:
                yield part
    if keep and added:
        try:
            store.write_analytics_blocks(events_name(), _encode(pa.concat_tables(added)))
        except ReferralKitError as error:
            logger.info("analytics cache not written (%s)", type(error).__name__)


class Versions:
    """The store's referral ids and versions, read once (Arrow arrays, in id order) and
    shared by an export's two datasets."""

    def __init__(self, store: ReferralStore) -> None:
        self.ids, self.versions = versions_of(store)
        self._by_id: dict[str, int] | None = None

    def by_id(self) -> dict[str, int]:
        """The versions by referral id (in id order), built at the first call."""
        if self._by_id is None:
            self._by_id = dict(zip(self.ids.to_pylist(), self.versions.to_pylist(), strict=True))
        return self._by_id


def _batched(
    histories: Iterable[Sequence[ReferralEvent]], size: int
) -> Iterator[list[Sequence[ReferralEvent]]]:
    batch: list[Sequence[ReferralEvent]] = []
    for events in histories:
        batch.append(events)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
