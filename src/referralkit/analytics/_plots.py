"""Plots of the frames, each returning the matplotlib ``Axes`` it drew on (analytics extra).

Every function takes a frame (:func:`~referralkit.analytics.referrals_frame`, or
:func:`~referralkit.analytics.events_frame` for the status flow) and an optional ``ax``; without
one it makes a figure with :mod:`matplotlib.pyplot`, so a notebook shows it. What they draw is
categories and counts: they show whatever the frame holds and nothing else, so a de-identified
frame gives a de-identified plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ..clocks import ClockName
from ..model import Priority, Status
from ._extra import require

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = [
    "plot_auth_turnaround",
    "plot_funnel",
    "plot_sla_breaches",
    "plot_status_flow",
    "plot_time_to_appointment",
]

_BAR: Final = "#3b6ea5"
_LIMIT: Final = "#b00020"


def _axes(ax: Axes | None, size: tuple[float, float] = (7.0, 4.0)) -> Axes:
    require("matplotlib", "pandas")
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, made = plt.subplots(figsize=size)
    return made


def _empty(ax: Axes, title: str) -> Axes:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_funnel(frame: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """The lifecycle funnel: how many referrals reached each milestone (recorded, received,
    accepted, scheduled, seen, consult note back, completed), with the share of received."""
    ax = _axes(ax)
    stages = [
        ("recorded", len(frame)),
        ("received", int(frame["received_at"].notna().sum())),
        ("accepted", int(frame["accepted_at"].notna().sum())),
        ("scheduled", int(frame["first_booked_at"].notna().sum())),
        ("seen", int(frame["seen_at"].notna().sum())),
        ("consult note back", int(frame["closed_loop"].sum())),
        ("completed", int(frame["completed"].sum())),
    ]
    title = "Referral lifecycle funnel"
    if not len(frame):
        return _empty(ax, title)
    labels = [s for s, _ in stages][::-1]
    counts = [n for _, n in stages][::-1]
    bars = ax.barh(labels, counts, color=_BAR)
    received = stages[1][1] or 1
    for bar, label, count in zip(bars, labels, counts, strict=True):
        share = "" if label == "recorded" else f" ({count / received:.0%} of received)"
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {count:,}{share}",
            va="center",
            fontsize=8,
        )
    ax.set_xlabel("referrals")
    ax.set_title(title)
    ax.set_xlim(0, max(counts) * 1.45 or 1)
    return ax


def _band(ax: Axes, y0: tuple[float, float], y1: tuple[float, float], colour: Any) -> None:
    """A band from the left node span ``y0`` to the right node span ``y1`` (cubic edges)."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    x0, x1, mid = 0.1, 0.9, 0.5
    vertices = [
        (x0, y0[0]),
        (mid, y0[0]),
        (mid, y1[0]),
        (x1, y1[0]),
        (x1, y1[1]),
        (mid, y1[1]),
        (mid, y0[1]),
        (x0, y0[1]),
        (x0, y0[0]),
    ]
    codes = [Path.MOVETO, *[Path.CURVE4] * 3, Path.LINETO, *[Path.CURVE4] * 3, Path.CLOSEPOLY]
    ax.add_patch(PathPatch(Path(vertices, codes), facecolor=colour, alpha=0.45, lw=0))


def plot_status_flow(events: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """The flow between statuses, Sankey-style: every status change of ``events`` (an
    :func:`~referralkit.analytics.events_frame`) as a band from the status it left (left)
    to the status it reached (right), as wide as the number of changes."""
    ax = _axes(ax, (8.0, 6.0))
    title = "Status changes (from → to)"
    changes = events[events["type"] == "status_changed"]
    if changes.empty:
        return _empty(ax, title)
    counts = (
        changes.groupby(["status_from", "status_to"], observed=True).size().loc[lambda s: s > 0]
    )
    order = {s.value: i for i, s in enumerate(Status)}
    sources = sorted({a for a, _ in counts.index}, key=lambda s: order.get(s, 99))
    targets = sorted({b for _, b in counts.index}, key=lambda s: order.get(s, 99))
    total = float(counts.sum())
    gap = 0.02
    height = 1.0 - gap * max(len(sources), len(targets))

    def spans(names: Sequence[str], side: int) -> dict[str, list[float]]:
        found, y = {}, 1.0
        for name in names:
            size = counts.xs(name, level=side).sum() / total * height
            found[name] = [y, y - size]
            y -= size + gap
        return found

    left, right = spans(sources, 0), spans(targets, 1)
    import matplotlib as mpl

    palette = mpl.colormaps["tab20"]
    colours = {name: palette(order.get(name, 0) % 20) for name in {*sources, *targets}}
    for (a, b), count in sorted(
        counts.items(), key=lambda item: (order.get(item[0][0], 99), order.get(item[0][1], 99))
    ):
        size = count / total * height
        top_a, top_b = left[a][0], right[b][0]
        _band(ax, (top_a, top_a - size), (top_b, top_b - size), colours[a])
        left[a][0] -= size
        right[b][0] -= size
    for names, x, align, side in ((sources, 0.1, "right", 0), (targets, 0.9, "left", 1)):
        y = 1.0
        for name in names:
            size = counts.xs(name, level=side).sum() / total * height
            ax.add_patch(
                mpl.patches.Rectangle((x - 0.01, y - size), 0.02, size, color=colours[name])
            )
            n = int(counts.xs(name, level=side).sum())
            offset = -0.015 if align == "right" else 0.015
            ax.text(x + offset, y - size / 2, f"{name} ({n:,})", ha=align, va="center", fontsize=8)
            y -= size + gap
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(-0.02, 1.02)
    ax.axis("off")
    ax.set_title(title)
    return ax


def _boxes(ax: Axes, groups: list[tuple[str, Any]], vertical: bool) -> None:
    ax.boxplot(
        [values for _, values in groups],
        tick_labels=[f"{name}\n(n={len(values):,})" for name, values in groups],
        orientation="vertical" if vertical else "horizontal",
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": "#c9d8ea"},
        medianprops={"color": _BAR},
    )


def plot_time_to_appointment(frame: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Days from receipt to the first appointment, one box per priority (assessed, else
    requested), routine to stat; outliers not drawn, ``n`` under each box."""
    ax = _axes(ax)
    title = "Time to appointment by priority"
    groups = []
    for priority in Priority:
        values = frame.loc[
            frame["effective_priority"] == priority.value, "days_to_appointment"
        ].dropna()
        if len(values):
            groups.append((priority.value, values.to_numpy()))
    if not groups:
        return _empty(ax, title)
    _boxes(ax, groups, vertical=True)
    ax.set_ylabel("days from receipt")
    ax.set_title(title)
    return ax


def plot_sla_breaches(frame: pd.DataFrame, ax: Axes | None = None, *, freq: str = "W") -> Axes:
    """Breaches over time: for each clock, how many referrals breached it in each week
    (``freq="W"``) or month (``"M"``), by the day the deadline passed."""
    import pandas as pd

    ax = _axes(ax, (8.0, 4.0))
    title = "Clock breaches over time"
    rule = {"W": "W-SUN", "M": "MS"}.get(freq)
    if rule is None:
        from ..errors import ValidationError

        raise ValidationError("freq", "expected 'W' (weeks) or 'M' (months)")
    drawn = False
    for name in ClockName:
        when = frame[f"{name.value}_breached_at"].dropna()
        if when.empty:
            continue
        series = pd.Series(1, index=when.dt.tz_convert(None)).resample(rule).sum()
        ax.plot(series.index, series.to_numpy(), marker="o", ms=3, label=name.value)
        drawn = True
    if not drawn:
        return _empty(ax, title)
    ax.set_ylabel(f"breaches per {'week' if freq == 'W' else 'month'}")
    ax.legend(fontsize=8)
    ax.set_title(title)
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    return ax


def plot_auth_turnaround(frame: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Hours from each referral's first authorization request to its decision, one box per
    payer, with the CMS-0057-F limits (72 hours expedited, 7 days standard) marked."""
    ax = _axes(ax, (8.0, 4.5))
    title = "Prior authorization turnaround by payer"
    decided = frame[frame["auth_turnaround_hours"].notna()]
    groups = [
        (str(payer), rows["auth_turnaround_hours"].to_numpy())
        for payer, rows in decided.groupby("payer", observed=True)
        if len(rows)
    ]
    if not groups:
        return _empty(ax, title)
    _boxes(ax, groups, vertical=False)
    for hours, label in ((72, "72 h expedited"), (168, "7 days standard")):
        ax.axvline(hours, color=_LIMIT, ls="--", lw=1)
        ax.text(hours, 1.01, label, color=_LIMIT, fontsize=7, transform=ax.get_xaxis_transform())
    ax.set_xlabel("hours from request to decision")
    ax.set_title(title, pad=14)
    return ax
