"""Analytics: KPIs that mean what they say, de-identified DataFrames, plots and Parquet.

Everything here is computed from the events, counted per referral, as of an instant: a
referral's history is replayed up to ``as_of``, so a past date gives that date's figures.

- :func:`summary` and :class:`Kpis`: the KPI summary of a store (pure Python, no extra);
- :func:`referrals_frame` and :func:`events_frame`: pandas DataFrames, one row per referral
  or per event, **de-identified by default** (HIPAA Safe Harbor, driven by the model's PHI
  declaration: see :class:`Deidentifier` and :data:`COLUMNS`);
- :func:`kpis`: every KPI over a period, grouped by specialty, payer, plan type, referring or
  target organisation, priority, week or month, as a DataFrame; :data:`KPIS` holds each KPI's
  definition, numerator, denominator and source;
- plots returning matplotlib ``Axes``: :func:`plot_funnel`, :func:`plot_status_flow`,
  :func:`plot_time_to_appointment`, :func:`plot_sla_breaches`, :func:`plot_auth_turnaround`;
- :func:`export_parquet` and :func:`read_parquet`: the de-identified frames as Parquet files
  partitioned by month, for DuckDB, Polars or Spark; :func:`report_html`: a self-contained
  HTML report; :func:`survey_responses_fhir`: the patient satisfaction survey answers as FHIR
  QuestionnaireResponses, de-identified by default.

Frames, plots, Parquet and the HTML report need the ``analytics`` extra (pandas, pyarrow,
matplotlib): ``pip install "referralkit[analytics]"`` (``pip install ".[analytics]"`` in a
checkout); without it they raise
:class:`ImportError` saying so, and the rest of the package works as before.

>>> import datetime as dt
>>> import referralkit as rk
>>> from referralkit import analytics
>>> from referralkit.testing import FakeClock, sample_request
>>> clock = FakeClock(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC))
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock)
>>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> r = desk.send(actor, desk.intake(actor, sample_request()).id)
>>> df = analytics.referrals_frame(desk.store, as_of=clock.now())
>>> df.loc[0, ["specialty", "status", "age_band"]].tolist()
['cardiology', 'received', '60-64']
>>> "mrn" in df.columns, "birth_date" in df.columns
(False, False)
"""

from __future__ import annotations

from typing import Final

from . import _deid, _frames, _kpis, _rows, _tables
from ._deid import Column, Deidentifier, Rule, age_band
from ._frames import events_frame, referrals_frame
from ._kpis import Kpi, KpiKind
from ._parquet import export_parquet, read_parquet
from ._plots import (
    plot_auth_turnaround,
    plot_funnel,
    plot_sla_breaches,
    plot_status_flow,
    plot_time_to_appointment,
)
from ._report import report_html
from ._rows import Row, read_row
from ._summary import Kpis, summary
from ._surveys import survey_responses_fhir
from ._tables import kpis

__all__ = [
    "AGE_BANDS",
    "COLUMNS",
    "EVENT_COLUMNS",
    "GROUPINGS",
    "KPIS",
    "Column",
    "Deidentifier",
    "Kpi",
    "KpiKind",
    "Kpis",
    "Row",
    "Rule",
    "age_band",
    "events_frame",
    "export_parquet",
    "kpis",
    "plot_auth_turnaround",
    "plot_funnel",
    "plot_sla_breaches",
    "plot_status_flow",
    "plot_time_to_appointment",
    "read_parquet",
    "read_row",
    "referrals_frame",
    "report_html",
    "summary",
    "survey_responses_fhir",
]

COLUMNS: Final = _rows.COLUMNS
"""Every column of :func:`referrals_frame`, in order: name, dtype, the model fields it is read
from, its de-identification rule and its meaning."""

EVENT_COLUMNS: Final = _frames.EVENT_COLUMNS
"""Every column of :func:`events_frame`, in order."""

KPIS: Final = _kpis.KPIS
"""Every KPI: definition, numerator, denominator, source (see :func:`kpis`)."""

AGE_BANDS: Final = _deid.AGE_BANDS
"""The age bands of de-identified frames: five years each, 90 and over pooled (Safe Harbor)."""

GROUPINGS: Final = _tables.GROUPINGS
"""The groupings reports offer (:func:`kpis` takes any column, ``week`` and ``month``)."""
