"""KPIs over a period, grouped, as a DataFrame (analytics extra)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from .. import _validators as v
from ..clocks import DEFAULT_CLOCKS, ClockRules
from ..errors import ValidationError
from ..privacy import Actor
from ..storage import ReferralStore
from ._deid import Column, Deidentifier
from ._extra import require
from ._frames import referrals_frame
from ._kpis import KPIS, Kpi, KpiKind, definitions_rst

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GROUPINGS", "kpis"]

GROUPINGS: Final = (
    "specialty",
    "payer",
    "plan_type",
    "referring_org",
    "target_org",
    "priority",
    "effective_priority",
    "week",
    "month",
)
"""The groupings the reports offer; any other column of the frame works too."""


def _instant(value: dt.date | dt.datetime | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return v.as_utc(value, name)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC)
    raise ValidationError(name, "expected a date or a timezone-aware datetime")


def _truthy(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    if str(series.dtype) == "boolean":
        return series.fillna(False).astype(bool)
    return series.notna()


def _mask(frame: pd.DataFrame, kpi: Kpi) -> pd.Series | None:
    if kpi.where is None:
        return None
    column, wanted = kpi.where
    series = frame[column]
    if wanted:
        return _truthy(series)
    return (series == False).fillna(False).astype(bool)  # noqa: E712 - elementwise


def _period(frame: pd.DataFrame, freq: str) -> pd.Series:
    import pandas as pd

    when = frame["received_at"].fillna(frame["created_at"]).dt.tz_convert(None)
    if freq == "week":
        # the Monday that starts the week (ISO 8601)
        start = when.dt.normalize() - pd.to_timedelta(when.dt.day_of_week, "D")
        label = "%Y-%m-%d"
    else:
        start = pd.Series(when.to_numpy().astype("datetime64[M]"), index=when.index)
        label = "%Y-%m"
    # format the few distinct periods, not every row (a million strftime calls take seconds)
    periods = pd.Categorical(start)
    named = periods.rename_categories([t.strftime(label) for t in periods.categories])
    return pd.Series(named, index=frame.index, name=freq)


_PRESENCE: Final = ("bool", "boolean")
"""The dtypes whose truth is their value, not their presence (see :func:`_truthy`)."""


def _read(groups: Sequence[str]) -> tuple[list[Column], list[str]] | None:
    """What the KPI table grouped by ``groups`` reads of a de-identified frame: the columns
    whose values it uses (in the frame's order), and those it only tests for presence (a
    ``COUNT`` field or a ``where`` that keeps the set ones, neither flag nor grouping: their
    values, a referral id's keyed hash for one, are never computed). ``None`` when a group
    is no column of that frame (the frame path then says so)."""
    from ._cache import cached_columns

    columns = {c.name: c for c in cached_columns()}
    values = {"received_at"}  # the period's filter
    presence: set[str] = set()
    for name in groups:
        if name in ("week", "month"):
            values.update(("received_at", "created_at"))
        elif name in columns:
            values.add(name)
        else:
            return None
    for kpi in KPIS:
        uses = [(kpi.field, kpi.kind is KpiKind.COUNT)]
        if kpi.where is not None:
            uses.append(kpi.where)
        for name, present in uses:
            if present and columns[name].dtype not in _PRESENCE:
                presence.add(name)
            else:
                values.add(name)
    return [c for c in columns.values() if c.name in values], sorted(presence - values)


def _store_frame(
    store: ReferralStore,
    groups: Sequence[str],
    as_of: dt.datetime | None,
    deidentify: bool | Deidentifier,
    rules: ClockRules,
) -> pd.DataFrame | None:
    """The columns of :func:`referrals_frame` the KPI table grouped by ``groups`` reads,
    straight from the analytics cache: only those columns are decompressed, de-identified
    and converted (a column tested only for presence becomes a flag), so the whole frame
    never exists. The same values, rows and order as the frame's; ``None`` when the frame
    would not go through the cache (identified, other clock rules, no cache)."""
    import pyarrow.compute as pc

    from . import _cache
    from ._frames import _as_of, _deidentifier

    read = _read(groups)
    if deidentify is False or read is None:
        return None
    moment = _as_of(as_of)
    deid = _deidentifier(deidentify, None, "referrals frame")
    if deid is None:  # (deidentify is not False: never)
        return None
    kept, presence = read
    names = [c.name for c in kept]
    shifted = bool(deid.date_shift_days) and any(c.dtype == "datetime" for c in kept)
    fields = {*names, *presence, *(["patient_key"] if shifted else [])}
    table = _cache.cached_referrals_table(store, moment, rules, fields=fields)
    if table is None:
        return None
    flags = {name: pc.is_valid(table[name]).to_numpy(zero_copy_only=False) for name in presence}
    table = _cache.deidentified(table, kept, deid)  # the columns read: shifted, pseudonymised
    data = _cache.columns_of(table.select(names))
    del table
    frame = _cache.to_pandas(data, kept)
    for name, flag in flags.items():
        frame[name] = flag
    frame.attrs.update(as_of=moment, deidentified=True)
    return frame


def kpis(
    data: pd.DataFrame | ReferralStore,
    *,
    by: str | Sequence[str] = (),
    start: dt.date | dt.datetime | None = None,
    end: dt.date | dt.datetime | None = None,
    as_of: dt.datetime | None = None,
    deidentify: bool | Deidentifier = True,
    actor: Actor | None = None,
    rules: ClockRules = DEFAULT_CLOCKS,
) -> pd.DataFrame:
    """Every KPI of :data:`~referralkit.analytics.KPIS`, one row per group, one column per
    KPI (counts, rates as shares 0-1, medians and means in days, hours or score points).

    ``data`` is a :func:`~referralkit.analytics.referrals_frame` (made as of the instant the
    KPIs are for) or a store, read with ``as_of``, ``deidentify`` and ``actor`` as
    :func:`~referralkit.analytics.referrals_frame` reads it. The period ``[start, end)``
    selects the cohort: referrals received in it (a date means midnight UTC); without a
    period every referral counts, drafts included, as :func:`summary` counts them. ``by``
    names columns of the frame, or ``"week"`` (the Monday starting the week received) or
    ``"month"`` (``YYYY-MM`` received; drafts by the day they were recorded); with no ``by``
    the one row is labelled ``all``. Groups with no referral are left out.

    The KPIs, with each one's definition, numerator, denominator and source:

    """
    require("pandas")
    import pandas as pd

    groups = [by] if isinstance(by, str) else list(by)
    if isinstance(data, ReferralStore):
        # only the columns the KPIs read, when the cache serves them: a third of the memory
        found = _store_frame(data, groups, as_of, deidentify, rules)
        frame = (
            found
            if found is not None
            else referrals_frame(data, as_of=as_of, deidentify=deidentify, actor=actor, rules=rules)
        )
        del found  # one reference: the frame's columns are dropped before the grouping
    elif isinstance(data, pd.DataFrame):
        frame = data
    else:
        raise ValidationError("data", "expected a referrals frame or a ReferralStore")
    low, high = _instant(start, "start"), _instant(end, "end")
    if low is not None or high is not None:
        received = frame["received_at"]
        keep = received.notna()
        if low is not None:
            keep &= received >= low
        if high is not None:
            keep &= received < high
        frame = frame[keep.to_numpy()]

    keys: list[pd.Series] = []
    for name in groups:
        if name in ("week", "month"):
            keys.append(_period(frame, name))
        elif name in frame.columns:
            keys.append(frame[name].rename(name))
        else:
            raise ValidationError("by", f"no column {name!r} to group by")
    if not keys:
        keys = [pd.Series("all", index=frame.index, name="group")]

    work: dict[str, pd.Series] = {}
    for kpi in KPIS:
        series = frame[kpi.field]
        mask = _mask(frame, kpi)
        if kpi.kind is KpiKind.COUNT:
            counted = _truthy(series)
            work[kpi.name] = counted if mask is None else counted & mask
        elif kpi.kind is KpiKind.RATE:
            known = series.notna()
            if mask is not None:
                known &= mask
            work[f"{kpi.name}:den"] = known
            work[f"{kpi.name}:num"] = known & _truthy(series)
        else:
            values = series.astype("float64")
            work[kpi.name] = values if mask is None else values.where(mask)
    table = pd.DataFrame(work, index=frame.index)
    attrs = dict(frame.attrs)
    # the KPIs' columns are copied into ``table``: their inputs go before the grouping's
    # copies are made (at a million rows, a few hundred MB of the peak)
    del work, frame
    grouped = table.groupby(keys, observed=True, sort=True, dropna=False)
    summed_names = [
        c for c in table.columns if c.endswith((":den", ":num")) or table[c].dtype == bool
    ]
    summed = grouped[summed_names].sum()
    medians = [k.name for k in KPIS if k.kind is KpiKind.MEDIAN]
    means = [k.name for k in KPIS if k.kind is KpiKind.MEAN]
    middle = grouped[medians].median()
    average = grouped[means].mean()
    out: dict[str, pd.Series] = {}
    for kpi in KPIS:
        if kpi.kind is KpiKind.COUNT:
            out[kpi.name] = summed[kpi.name].astype("int64")
        elif kpi.kind is KpiKind.RATE:
            den = summed[f"{kpi.name}:den"]
            out[kpi.name] = (summed[f"{kpi.name}:num"] / den.where(den > 0)).astype("float64")
        elif kpi.kind is KpiKind.MEDIAN:
            out[kpi.name] = middle[kpi.name]
        else:
            out[kpi.name] = average[kpi.name]
    result = pd.DataFrame(out, index=summed.index)
    result.attrs.update(attrs)
    result.attrs.update(start=low, end=high, by=tuple(groups))
    return result


if kpis.__doc__ is not None:  # pragma: no branch - stripped only under python -OO
    kpis.__doc__ = (
        kpis.__doc__.rstrip(" ")
        + "\n".join("    " + line for line in definitions_rst().splitlines())
        + "\n"
    )
