"""Synthetic referral populations, and a simulated referral desk to run them through.

Everything here is made up and seeded: the same ``seed`` gives the same specialists, patients,
requests and simulated weeks, with no global random state (each function builds its own
:class:`random.Random`). Patient names carry digits the way Synthea's do (``Linh418
Nguyen607``), medical record numbers start with ``SYN-``, phone numbers are in the fictional
``555-01xx`` range and e-mail addresses use ``example.org``, so nothing can be mistaken for a
real person. The clinical codes are real ICD-10-CM, CPT and HCPCS codes chosen to fit each
specialty; the mixes and probabilities are illustrative, not epidemiology.

- :func:`directory`: the specialists (specialty, payer networks, languages, accepting new
  patients) and the referring primary-care practices;
- :func:`population`: :class:`~referralkit.intake.IntakeRequest` values: specialties, diagnoses
  (some suspected cancer), services (some advanced imaging that needs prior authorization),
  payers and plan types, languages and interpreter needs, ages, pregnancies, urgencies, and some
  incomplete requests;
- :func:`simulate`: drives the requests through a few simulated weeks of a referral desk's
  public operations with a :class:`~referralkit.clock.FakeClock`, so that at the end some
  referrals are completed, many are in progress and some are overdue.


The parts, one module each: ``_catalogue`` (the specialty profiles, languages, payers and plans,
places, taxonomy), ``_people`` (patients and their coverage), ``_directory`` (specialists and
referring practices), ``_requests`` (requests and referrals), ``_simulation`` (the simulated
desk) and ``_seeding`` (seeds, ids and argument checks).

>>> import referralkit as rk
>>> from referralkit import synth
>>> requests = list(synth.population(20, seed=1))
>>> len(requests), requests[0] == next(synth.population(1, seed=1))
(20, True)
>>> clock = rk.FakeClock(synth.DEFAULT_START)
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock, new_id=synth.id_factory(1))
>>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> report = synth.simulate(desk, actor, clock, requests, weeks=2, seed=1)
>>> len(report.referral_ids)
20
"""

from . import _catalogue, _seeding
from ._directory import directory
from ._requests import population, referrals
from ._seeding import id_factory
from ._simulation import SimulationReport, simulate

# The constants are bound here, with their docstrings, so that the reference documents them
# where users import them from (autodoc reads attribute docstrings of the module it documents).
DEFAULT_START = _seeding.DEFAULT_START
"""A Monday morning: where populations and simulations start unless told otherwise."""

SPECIALTIES = _catalogue.SPECIALTIES
"""The specialties :func:`population` refers patients to."""

TAXONOMY = _catalogue.TAXONOMY
"""The NUCC provider taxonomy code of every specialty the synthetic directory knows (FHIR
export writes it as ``performerType``; import reads a specialty back from it)."""

__all__ = [
    "DEFAULT_START",
    "SPECIALTIES",
    "TAXONOMY",
    "SimulationReport",
    "directory",
    "id_factory",
    "population",
    "referrals",
    "simulate",
]
