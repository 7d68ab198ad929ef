"""A self-contained HTML report: KPI tables, their definitions and the plots (analytics extra).

The page has no outside reference at all (no script, stylesheet, font or image to fetch): the
plots are inline SVG, the styles inline. It opens offline and can be mailed as one file.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ._extra import require
from ._kpis import KPIS, definitions_table
from ._plots import (
    plot_auth_turnaround,
    plot_funnel,
    plot_sla_breaches,
    plot_status_flow,
    plot_time_to_appointment,
)
from ._tables import kpis

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["report_html", "svg_of"]

_PROLOG: Final = re.compile(r"^.*?(?=<svg)", re.DOTALL)
_CSS: Final = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:12px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.defs td{text-align:left;vertical-align:top}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots div{flex:1 1 520px}
svg{max-width:100%;height:auto}
.note{color:#666;font-size:12px}
"""


def svg_of(draw: Callable[[Any], Any], size: tuple[float, float] = (7.0, 4.0)) -> str:
    """Draw on a fresh figure (no pyplot state) and return it as inline SVG markup."""
    require("matplotlib")
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    draw(figure.add_subplot())
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    # the XML prolog and DOCTYPE do not belong inside HTML (the DOCTYPE names a DTD by URL)
    return _PROLOG.sub("", buffer.getvalue(), count=1)


def _cell(value: Any, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "share":
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _kpi_table(table: pd.DataFrame) -> str:
    units = {k.name: k.unit for k in KPIS}
    groups = [" / ".join(map(str, g)) if isinstance(g, tuple) else str(g) for g in table.index]
    head = "<tr><th>KPI</th>" + "".join(f"<th>{html.escape(g)}</th>" for g in groups) + "</tr>"
    rows = []
    for kpi in KPIS:
        cells = "".join(
            f"<td>{html.escape(_cell(v, units[kpi.name]))}</td>" for v in table[kpi.name].tolist()
        )
        rows.append(f"<tr><td>{html.escape(kpi.label)}</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _definitions() -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
        for row in definitions_table()
    )
    head = "".join(
        f"<th>{h}</th>" for h in ("KPI", "definition", "numerator", "denominator", "unit", "source")
    )
    return f'<table class="defs"><tr>{head}</tr>{rows}</table>'


def report_html(
    frame: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    by: str | Sequence[str] = (),
    start: dt.date | dt.datetime | None = None,
    end: dt.date | dt.datetime | None = None,
    title: str = "Referral performance",
) -> str:
    """A whole HTML page: the KPIs of ``frame`` (overall, and by ``by`` when given) for the
    cohort received in ``[start, end)``, every KPI's definition, and the plots (the status
    flow only with ``events``). Self-contained: nothing is fetched when it opens.

    It shows what the frames hold: made from de-identified frames (the default), it holds no
    PHI.
    """
    require("pandas", "matplotlib")
    overall = kpis(frame, start=start, end=end)
    grouped = kpis(frame, by=by, start=start, end=end) if by else None
    cohort = frame
    if start is not None or end is not None:
        from ._tables import _instant

        low, high = _instant(start, "start"), _instant(end, "end")
        received = frame["received_at"]
        keep = received.notna()
        if low is not None:
            keep &= received >= low
        if high is not None:
            keep &= received < high
        cohort = frame[keep.to_numpy()]
    as_of = frame.attrs.get("as_of")
    period = (
        f"received from {start or 'the first'} to {end or 'the last'} (end excluded)"
        if start is not None or end is not None
        else "every referral"
    )
    plots = [
        svg_of(lambda ax: plot_funnel(cohort, ax)),
        svg_of(lambda ax: plot_time_to_appointment(cohort, ax)),
        svg_of(lambda ax: plot_sla_breaches(cohort, ax), (8.0, 4.0)),
        svg_of(lambda ax: plot_auth_turnaround(cohort, ax), (8.0, 4.5)),
    ]
    if events is not None:
        plots.insert(1, svg_of(lambda ax: plot_status_flow(events, ax), (8.0, 6.0)))
    deidentified = frame.attrs.get("deidentified")
    privacy = (
        "De-identified (HIPAA Safe Harbor as the model declares PHI)."
        if deidentified
        else "Identified data: handle as PHI."
        if deidentified is False
        else ""
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">As of {html.escape(str(as_of))}; {html.escape(period)}; '
        f"{len(cohort):,} referrals. Counted per referral. {html.escape(privacy)}</p>",
        "<h2>KPIs</h2>",
        _kpi_table(overall),
    ]
    if grouped is not None:
        names = ", ".join([by] if isinstance(by, str) else list(by))
        parts += [f"<h2>KPIs by {html.escape(names)}</h2>", _kpi_table(grouped)]
    parts += [
        "<h2>Plots</h2>",
        '<div class="plots">' + "".join(f"<div>{svg}</div>" for svg in plots) + "</div>",
        "<h2>Definitions</h2>",
        _definitions(),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
