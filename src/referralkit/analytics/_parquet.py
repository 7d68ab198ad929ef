"""The frames as Parquet files partitioned by month, for DuckDB, Polars or Spark.

:func:`export_parquet` writes two Hive-partitioned datasets under a directory::

    DIR/referralkit.json                      what was written: as of, columns, counts
    DIR/referrals/month=2026-01/part-0.parquet   referrals by the month they were recorded
    DIR/events/month=2026-01/part-0.parquet      events by the month they were recorded

Through the analytics cache (the default, for de-identified files) both datasets are written
straight from the cache's Arrow blocks, a block at a time: the rows still valid are filtered,
de-identified and split by month in Arrow (no pandas, no Python per row), and only the referrals
changed since the cache was filled are replayed, a chunk at a time; memory holds about one block
(100,000 rows), not the population. With ``cache=False`` every history is replayed (the
reference path), also in chunks. The files are de-identified by default, exactly as
:func:`~referralkit.analytics.referrals_frame` is; rows are grouped by the month a file holds,
in no set order within it.

Each file has min/max statistics for its timestamp, number and boolean columns, not for its
strings: the rows of a month are in no set order, so a row group holds nearly every value of a
category and pseudonyms are random, and their min/max would let a reader skip nothing while
costing about a tenth of the writing.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..clocks import DEFAULT_CLOCKS, ClockRules
from ..errors import ValidationError
from ..privacy import Actor
from ..storage import ReferralStore
from ._deid import Column, Deidentifier, columns_kept
from ._extra import require
from ._frames import (
    EVENT_COLUMNS,
    _as_of,
    _check_store,
    _deidentifier,
    event_chunks,
    referral_chunks,
)
from ._rows import COLUMNS

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = ["MANIFEST", "export_parquet", "read_parquet"]

MANIFEST: Final = "referralkit.json"
"""The file beside the datasets that says what they hold."""

_DATASETS: Final = {"referrals": (COLUMNS, "created_at"), "events": (EVENT_COLUMNS, "at")}


def _arrow_type(column: Column) -> pa.DataType:
    import pyarrow as pa

    return {
        "datetime": pa.timestamp("us", tz="UTC"),
        "date": pa.timestamp("us"),
        "float": pa.float64(),
        "int": pa.int64(),
        "Int64": pa.int64(),
        "bool": pa.bool_(),
        "boolean": pa.bool_(),
    }.get(column.dtype, pa.string())


def _with_statistics(schema: pa.Schema) -> list[str]:
    """The columns given min/max statistics in the files: all but the strings (see the
    module docstring)."""
    import pyarrow as pa

    return [field.name for field in schema if not pa.types.is_string(field.type)]


def _schema(columns: Sequence[Column]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(c.name, _arrow_type(c)) for c in columns])


class _Months:
    """One dataset's Parquet files, ``directory/month=YYYY-MM/part-0.parquet``: one writer
    per month, opened at its first row and kept open until :meth:`close`."""

    def __init__(self, directory: Path, schema: pa.Schema, month_of: str) -> None:
        self.directory = directory
        self.schema = schema
        self.month_of = month_of
        self.rows = 0
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._statistics = _with_statistics(schema)

    def write(self, table: pa.Table) -> None:
        """Add ``table``'s rows (of :attr:`schema`) to their months' files: the month (UTC,
        as the column) computed in Arrow, one filter per month present."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if not table.num_rows:
            return
        stamps = table[self.month_of]
        months = pc.add(pc.multiply(pc.year(stamps), 100), pc.month(stamps))
        found = sorted(pc.unique(months).to_pylist())
        if len(found) > 1:  # one copy in month order, then a zero-copy slice per month
            order = pc.sort_indices(months)
            table = table.take(order)
            months = pc.take(months, order)
        counts = pc.value_counts(months).to_pylist() if len(found) > 1 else []
        sizes = {c["values"]: c["counts"] for c in counts}
        start = 0
        for month in found:
            size = sizes.get(month, table.num_rows)
            part = table.slice(start, size)
            start += size
            writer = self._writers.get(month)
            if writer is None:
                folder = self.directory / f"month={month // 100:04d}-{month % 100:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(
                    folder / "part-0.parquet", self.schema, write_statistics=self._statistics
                )
                self._writers[month] = writer
            writer.write_table(part)
            self.rows += part.num_rows

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def _write(
    chunks: Iterator[pd.DataFrame], schema: pa.Schema, month_of: str, directory: Path
) -> int:
    """Write ``chunks`` into ``directory/month=YYYY-MM/part-0.parquet``, one writer per month
    kept open until the end; the number of rows written.

    Written here, in the calling thread, rather than by ``pyarrow.dataset.write_dataset``,
    whose threads would run this generator's Python (and the frames') outside the caller's
    tracing and error handling.
    """
    import pyarrow as pa

    months = _Months(directory, schema, month_of)
    try:
        for chunk in chunks:
            # categories become plain strings: each file dictionary-encodes its own
            months.write(pa.Table.from_pandas(chunk, preserve_index=False).cast(schema))
    finally:
        months.close()
    return months.rows


def _write_behind(months: _Months, tables: Iterator[pa.Table]) -> None:
    """``months.write`` of each of ``tables``, in order, in a second thread while this one
    makes the next table (pyarrow's kernels and its Parquet writer release the GIL, so the
    two overlap on a second core); one table at most waits to be written. An error of
    either side is raised here, after the writer has stopped."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="referralkit-parquet") as pool:
        pending: Future[None] | None = None
        try:
            for table in tables:
                if pending is not None:
                    pending.result()
                pending = pool.submit(months.write, table)
        except BaseException:
            if pending is not None:
                wait([pending])
            raise
        if pending is not None:
            pending.result()


def _write_cached(
    store: ReferralStore, root: Path, moment: dt.datetime, deid: Deidentifier, rules: ClockRules
) -> dict[str, int] | None:
    """Both datasets written straight from the analytics cache's Arrow blocks, a block at a
    time (de-identified in Arrow, no pandas, nothing per row in Python but the replay of
    the referrals changed since): memory holds a block, not the population. ``None`` when
    the cache does not apply or a block is damaged (nothing is left written then)."""
    from ._cache import (
        DamagedCacheError,
        Pseudonyms,
        Versions,
        deidentified,
        event_parts,
        referral_parts,
    )

    if rules != DEFAULT_CLOCKS:
        return None
    names = Pseudonyms(deid)  # each referral hashed once for both datasets
    versions = Versions(store)  # read once for both
    written: dict[str, int] = {}
    for name, (columns, month_of) in _DATASETS.items():
        parts = (
            referral_parts(store, moment, rules, versions=versions)
            if name == "referrals"
            else event_parts(store, moment, versions=versions)
        )
        if parts is None:  # (a store keeps both caches or neither)
            for done in _DATASETS:
                shutil.rmtree(root / done, ignore_errors=True)
            return None
        kept = columns_kept(columns, deidentify=True)
        (root / name).mkdir()
        months = _Months(root / name, _schema(kept), month_of)
        try:
            _write_behind(months, (deidentified(part, kept, deid, names) for part in parts))
        except DamagedCacheError:
            months.close()
            for done in _DATASETS:
                shutil.rmtree(root / done, ignore_errors=True)
            return None
        finally:
            months.close()
        written[name] = months.rows
    return written


def export_parquet(
    store: ReferralStore,
    directory: str | Path,
    *,
    as_of: dt.datetime | None = None,
    deidentify: bool | Deidentifier = True,
    actor: Actor | None = None,
    rules: ClockRules = DEFAULT_CLOCKS,
    overwrite: bool = False,
    cache: bool = True,
) -> dict[str, int]:
    """Write the referrals and events frames of ``store`` (as of ``as_of``, default now)
    under ``directory`` as Parquet, partitioned by month (``month=YYYY-MM``); return how many
    rows each dataset got.

    De-identified unless ``deidentify=False`` (which needs the ``actor``, as the frames do);
    a :class:`~referralkit.analytics.Deidentifier` keeps pseudonyms stable across exports.
    An existing ``referrals`` or ``events`` dataset under ``directory`` is refused unless
    ``overwrite`` (then it is replaced). The referrals go through the store's analytics
    cache as :func:`~referralkit.analytics.referrals_frame` does, unless ``cache=False``.
    """
    require("pandas", "pyarrow")
    from .. import __version__

    store = _check_store(store)
    moment = _as_of(as_of)
    deid = _deidentifier(deidentify, actor, "Parquet export")
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ValidationError("directory", "exists and is not a directory")
    for name in _DATASETS:
        target = root / name
        if target.exists():
            if not overwrite:
                raise ValidationError(
                    "directory", f"{name}/ exists there already (overwrite=True replaces it)"
                )
            shutil.rmtree(target)
    root.mkdir(parents=True, exist_ok=True)
    found = _write_cached(store, root, moment, deid, rules) if cache and deid is not None else None
    written: dict[str, int] = found if found is not None else {}
    for name, (columns, month_of) in _DATASETS.items():
        if found is not None:
            break
        kept = columns_kept(columns, deidentify=deid is not None)
        chunks = (
            referral_chunks(store, moment, deid, rules, cache=cache)
            if name == "referrals"
            else event_chunks(store, moment, deid, cache=cache)
        )
        (root / name).mkdir()
        written[name] = _write(chunks, _schema(kept), month_of, root / name)
    manifest: dict[str, Any] = {
        "producer": f"referralkit {__version__}",
        "as_of": moment.isoformat(),
        "deidentified": deid is not None,
        "date_shift_days": deid.date_shift_days if deid is not None else 0,
        "rows": written,
        "partitioning": "hive: month=YYYY-MM (referrals: created_at; events: at), UTC",
        "columns": {
            name: {c.name: c.doc for c in columns_kept(cols, deidentify=deid is not None)}
            for name, (cols, _) in _DATASETS.items()
        },
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return written


def _restore(frame: pd.DataFrame, columns: Sequence[Column]) -> pd.DataFrame:
    import pandas as pd

    for column in columns:
        if column.name not in frame.columns:
            continue
        if column.dtype == "category":
            frame[column.name] = frame[column.name].astype("category")
        elif column.dtype in ("string", "Int64", "boolean"):
            frame[column.name] = frame[column.name].astype(column.dtype)
    frame["month"] = pd.Categorical(frame["month"].astype(str))
    return frame


def read_parquet(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The referrals and events frames :func:`export_parquet` wrote under ``directory``,
    with their column types restored and a ``month`` column (the partition)."""
    require("pandas", "pyarrow")
    import pandas as pd

    root = Path(directory)
    found = []
    for name, (columns, _) in _DATASETS.items():
        if not (root / name).is_dir():
            raise ValidationError("directory", f"no {name}/ dataset there")
        if any((root / name).rglob("*.parquet")):
            frame = pd.read_parquet(root / name, engine="pyarrow")
        else:  # an empty store: no month, no file
            manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
            frame = pd.DataFrame(columns=[*manifest["columns"][name], "month"])
        found.append(_restore(frame, columns))
    return found[0], found[1]
