"""Rank the providers who can take a referral, and say why.

:func:`~referralkit.directory.match` finds every active practitioner role and healthcare
service whose NUCC specialty satisfies the referral's (a specialization satisfies its
classification), then:

1. **excludes** the candidates the policy rules out: out of the coverage's networks
   (answered by the network index: such candidates are counted, not read), speaking neither
   the patient's language nor offering an interpreter, not accepting new patients, farther
   than ``max_distance_km`` (unless they offer telehealth). Every exclusion is counted by
   reason; the first ``excluded`` (20) are listed with every reason;
2. **scores** the others: points for being in network, for the language, for accepting new
   patients, for telehealth, minus points per kilometre from the patient, plus points for the
   soonest free slot inside the urgency window (the sooner, the more), from a
   :class:`~referralkit.scheduling.SchedulingAdapter`;
3. **ranks** them by score, then by id, and returns the first ``limit`` with every reason.

Every number is in :class:`MatchPolicy`, a frozen value you replace (``attrs.evolve(
DEFAULT_POLICY, per_km=0.5)``) to weigh things differently.

Where the patient is: the model's :class:`~referralkit.model.Patient` has no address, so the
origin of distances is an argument (``origin=GeoPoint(...)``, from wherever the deployment
keeps addresses); without one, distance does not count and the reasons say so. The directory
gives positions (FHIR ``Location.position``); nothing is geocoded and no network is called.

Slots are looked up best-first and only while a candidate could still enter the top
``limit`` (its score before slots plus the most a slot can add), so a match asks the
scheduling system about a handful of candidates, not all of them.

What a match costs grows with the in-network candidates of the specialty, not with the
directory: the specialty and network indexes select them (``Directory.find``), the others
are counted (``count_found``), every candidate is screened without formatting a reason, only
the ranked and the listed exclusions are explained, and locations are read only for the
candidates whose locations can still change the outcome. A stored directory's candidates
are screened a group at a time (``screen_groups``: the database groups them by what the
screen reads and counts them): a group is excluded, or scored, as a whole, and its rows are
read (``screen_rows``) only when the ranking reaches it, or to list its first exclusions.
When distance excludes nobody (no ``max_distance_km``), distances are computed only for
the candidates that may still rank: they are taken best first by the most each can score
(a distance only lowers it), and within a group of equal points by a bound from latitude
alone (a great-circle distance is at least the Earth's radius times the difference of
latitudes), so that only the candidates near enough to come next get a haversine; the
ranking is exactly what computing every distance gives.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar

import attrs

from .. import _validators as v
from ..errors import ValidationError
from ..model import Coverage, NetworkStatus, PlanType, Priority, Referral
from ..scheduling import SchedulingAdapter, SchedulingError, Slot, Window
from ._model import (
    EARTH_RADIUS_KM,
    Entry,
    GeoPoint,
    HealthcareService,
    InsurancePlan,
    Location,
    Organization,
    Practitioner,
    PractitionerRole,
    language_matches,
)
from ._port import CandidateGroup, Directory, M, Matchable, MatchRow
from .taxonomy import SPECIALTIES, Taxonomy, default_taxonomy

__all__ = [
    "DEFAULT_POLICY",
    "Candidate",
    "Exclusion",
    "MatchPolicy",
    "MatchResult",
    "Reason",
    "coverage_networks",
    "match",
    "requested_specialty",
]

E = TypeVar("E", bound=Entry)
_Entry = Matchable | MatchRow
"""A candidate as matching reads it: the entry, or its :class:`MatchRow` (same attributes)."""


def _windows() -> Mapping[Priority, dt.timedelta]:
    return MappingProxyType(
        {
            # California timely access (28 CCR 1300.67.2.2): non-urgent specialist within
            # 15 business days (about 21 calendar days); urgent within 96 hours when prior
            # authorization is needed; asap and stat tighter still
            Priority.ROUTINE: dt.timedelta(days=21),
            Priority.URGENT: dt.timedelta(hours=96),
            Priority.ASAP: dt.timedelta(hours=48),
            Priority.STAT: dt.timedelta(hours=24),
        }
    )


@attrs.frozen
class MatchPolicy:
    """How :func:`~referralkit.directory.match` excludes and scores candidates. Points add
    up; higher ranks first.

    Exclusions (each can be turned off, and then costs points instead):

    - ``require_in_network``: out of the coverage's networks is excluded (otherwise
      ``out_of_network`` points, negative);
    - ``require_language``: neither the patient's language nor an interpreter is excluded
      (otherwise ``no_language`` points);
    - ``require_accepting``: not accepting new patients is excluded (otherwise
      ``not_accepting`` points);
    - ``max_distance_km``: farther is excluded unless the candidate offers telehealth.

    Points: ``in_network``, ``network_unknown`` (the coverage names no network, or the
    candidate none), ``speaks_language``, ``interpreter``, ``accepting``,
    ``accepting_unknown``, ``telehealth``, ``subspecialty`` (asked for a classification, found
    a specialization of it), ``per_km`` (subtracted per kilometre, at most ``max_km_penalty``),
    ``distance_unknown``; and for slots, ``soonest_slot`` for a slot at the start of the
    window, falling linearly to ``slot_at_deadline`` at its end, or ``no_slot`` when there is
    none in the window (or the scheduling system cannot say).

    ``windows`` is the urgency window by priority when the referral has no ``due_by``;
    ``slot_lookahead`` is how many slots are read per candidate (the first is the soonest).
    """

    require_in_network: bool = True
    require_language: bool = True
    require_accepting: bool = True
    max_distance_km: float | None = None
    in_network: float = 30.0
    out_of_network: float = -40.0
    network_unknown: float = 0.0
    speaks_language: float = 20.0
    interpreter: float = 8.0
    no_language: float = -30.0
    accepting: float = 10.0
    accepting_unknown: float = 0.0
    not_accepting: float = -30.0
    telehealth: float = 3.0
    subspecialty: float = -2.0
    per_km: float = 0.2
    max_km_penalty: float = 30.0
    distance_unknown: float = -5.0
    soonest_slot: float = 25.0
    slot_at_deadline: float = 5.0
    no_slot: float = 0.0
    windows: Mapping[Priority, dt.timedelta] = attrs.field(factory=_windows)
    slot_lookahead: int = 1

    def __attrs_post_init__(self) -> None:
        for name in ("per_km", "max_km_penalty"):
            if getattr(self, name) < 0:
                raise ValidationError(name, "expected a non-negative number")
        if self.soonest_slot < self.slot_at_deadline or self.slot_at_deadline < self.no_slot:
            raise ValidationError(
                "soonest_slot", "expected soonest_slot >= slot_at_deadline >= no_slot"
            )
        if min(self.in_network, self.network_unknown) < self.out_of_network:
            raise ValidationError("out_of_network", "must not score above in or unknown")
        if self.speaks_language < self.interpreter or self.interpreter < self.no_language:
            raise ValidationError(
                "interpreter", "expected speaks_language >= interpreter >= no_language"
            )
        missing = [p.value for p in Priority if p not in self.windows]
        if missing:
            raise ValidationError("windows", f"no window for {', '.join(missing)}")

    @property
    def slot_bonus(self) -> float:
        """The most a slot can add over having none."""
        return self.soonest_slot - self.no_slot


DEFAULT_POLICY: Final = MatchPolicy()
"""The policy :func:`~referralkit.directory.match` uses unless told otherwise."""


@attrs.frozen
class Reason:
    """One thing that moved a candidate up or down: the factor, its points, and why."""

    factor: str
    points: float
    text: str

    def __str__(self) -> str:
        return f"{self.text} ({self.points:+g})"


@attrs.frozen
class Candidate:
    """A provider who can take the referral, where it ranks and why.

    ``reference`` is ``PractitionerRole/<id>`` or ``HealthcareService/<id>``, what a
    scheduling adapter's :meth:`~referralkit.scheduling.SchedulingAdapter.find_slots` takes.
    """

    rank: int
    reference: str
    name: str
    score: float
    reasons: tuple[Reason, ...]
    network: NetworkStatus
    specialty: str
    distance_km: float | None = None
    location_id: str | None = None
    slot: Slot | None = None

    @property
    def kind(self) -> str:
        return self.reference.split("/", 1)[0]

    @property
    def id(self) -> str:
        return self.reference.split("/", 1)[1]


@attrs.frozen
class Exclusion:
    """A provider of the right specialty who was ruled out, and every reason why."""

    reference: str
    name: str
    reasons: tuple[str, ...]


@attrs.frozen
class MatchResult:
    """The ranked candidates, the excluded ones, and what the match looked for.

    ``considered`` is every active candidate of the specialty; ``excluded_count`` how many
    of them were ruled out and ``excluded_by`` how many for each factor (``network``,
    ``language``, ``accepting``, ``distance``; a candidate ruled out for two counts under
    both). ``excluded`` lists some of them with every reason, in reference order: at most
    the ``excluded`` that :func:`~referralkit.directory.match` was given, and, when the
    network index answered (the coverage names networks that the policy requires), only
    candidates of the coverage's networks: the others are counted, not read. Pass
    ``excluded=None`` to list every one.

    .. versionchanged:: 0.1
       ``excluded`` is a bounded sample; ``excluded_by`` and ``excluded_count`` count them all.
    """

    ranked: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...]
    specialty: str
    networks: frozenset[str] | None
    window: Window
    considered: int
    excluded_by: Mapping[str, int] = attrs.field(factory=dict)
    excluded_count: int = 0

    def __iter__(self) -> Any:
        return iter(self.ranked)

    def __len__(self) -> int:
        return len(self.ranked)


# --------------------------------------------------------------------------- inputs


def requested_specialty(referral: Referral, specialty: str | None = None) -> str:
    """The NUCC code a referral asks for: ``specialty`` when given, else the code of
    ``referral.specialty`` in :data:`~referralkit.directory.SPECIALTIES`."""
    if specialty is not None:
        return specialty
    code = SPECIALTIES.get(referral.specialty)
    if code is None:
        raise ValidationError(
            "specialty",
            "no NUCC taxonomy code is known for the referral's specialty; pass specialty=",
        )
    return code


def coverage_networks(coverage: Coverage | None, directory: Directory) -> frozenset[str] | None:
    """The networks a coverage may use: its own ``networks`` and those of the directory's
    insurance plans it names (by id, name or identifier). None when networks do not apply
    (no coverage, self-pay)."""
    if coverage is None or coverage.plan_type is PlanType.SELF_PAY:
        return None
    found = set(coverage.networks)
    plan = directory.get(InsurancePlan, coverage.plan)
    plans = (
        [plan]
        if plan is not None
        else [p for p in directory.entries(InsurancePlan) if p.known_as(coverage.plan)]
    )
    for p in plans:
        if p.active:
            found.update(p.network_ids)
    return frozenset(found)


def _window(referral: Referral, as_of: dt.datetime, policy: MatchPolicy) -> Window:
    due = referral.due_by
    if due is not None and due > as_of:
        return Window(as_of, due)
    return Window(as_of, as_of + policy.windows[referral.effective_priority])


def _get_many(directory: Directory, kind: type[E], ids: Iterable[str]) -> dict[str, E]:
    wanted = set(ids)
    bulk = getattr(directory, "get_many", None)
    if bulk is not None:
        found: dict[str, E] = bulk(kind, wanted)
        return found
    out: dict[str, E] = {}
    for id in wanted:
        entry = directory.get(kind, id)
        if entry is not None:
            out[id] = entry
    return out


# --------------------------------------------------------------------------- matching


@attrs.define
class _Scored:
    entry: _Entry
    person: Practitioner | None
    static: float
    network: NetworkStatus
    specialty: str
    distance: float | None
    location_id: str | None
    reference: str = ""
    slot_reason: Reason | None = None
    slot: Slot | None = None
    total: float = 0.0


@attrs.frozen
class _Context:
    """What every candidate of one match is assessed against (computed once)."""

    wanted: str
    codes: frozenset[str]
    taxonomy: Taxonomy
    networks: frozenset[str] | None
    in_network: frozenset[str]
    origin: GeoPoint | None
    policy: MatchPolicy
    language: str
    english_ok: bool
    places: dict[str, Location]  # read as needed, by match()
    organizations: dict[str, Organization]  # only the named ones: ranked and listed
    network_refusal: str
    language_refusal: str
    network_checked: bool = True  # False: every candidate came from the network index
    origin_terms: tuple[float, float, float] = (0.0, 1.0, 0.0)  # radians(lat), cos, lon


class _Explain:
    """Collects the reasons of one candidate; a plain sum of points when not explaining
    (formatting reasons costs more than scoring, and only the ranked few need them)."""

    __slots__ = ("points", "reasons")

    def __init__(self, explain: bool) -> None:
        self.points = 0.0
        self.reasons: list[Reason] | None = [] if explain else None

    def add(self, factor: str, points: float, text: str, *args: object) -> None:
        self.points += points
        if self.reasons is not None:
            self.reasons.append(Reason(factor, points, text.format(*args) if args else text))


def match(
    referral: Referral,
    directory: Directory,
    *,
    as_of: dt.datetime,
    limit: int = 10,
    policy: MatchPolicy = DEFAULT_POLICY,
    scheduler: SchedulingAdapter | None = None,
    origin: GeoPoint | None = None,
    specialty: str | None = None,
    taxonomy: Taxonomy | None = None,
    excluded: int | None = 20,
) -> MatchResult:
    """Rank the directory's candidates for ``referral`` as of ``as_of``; see the module.

    ``specialty`` overrides the NUCC code asked for; ``taxonomy`` the hierarchy (the shipped
    subset by default; :meth:`Taxonomy.from_csv` reads the full NUCC file); ``scheduler``
    adds the soonest slot inside the urgency window (``referral.due_by``, or the policy's
    window for its priority); ``origin`` is where the patient is, for distances.
    ``excluded`` bounds how many excluded candidates are listed with their reasons (all are
    counted, :class:`MatchResult`); None lists every one, reading the out-of-network ones
    too, at a cost that grows with the directory.

    .. versionchanged:: 0.1
       The ``excluded`` bound; out-of-network candidates are counted from the index.

    >>> import datetime as dt
    >>> from referralkit.directory import MemoryDirectory, PractitionerRole, Practitioner
    >>> from referralkit.testing import sample_request
    >>> now = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    >>> referral = sample_request().referral("ref-1", now)   # cardiology, Acme HMO network
    >>> directory = MemoryDirectory([
    ...     Practitioner("p1", "Dr Ana Ruiz", languages=("en", "es")),
    ...     PractitionerRole("r1", practitioner_id="p1", specialties=("207RC0000X",),
    ...                      network_ids=("acme-hmo-west",), accepting_new_patients=True),
    ...     PractitionerRole("r2", name="Heart Clinic", specialties=("207RC0000X",),
    ...                      network_ids=("other",)),
    ... ])
    >>> result = match(referral, directory, as_of=now)
    >>> [(c.rank, c.name, c.network.value) for c in result]
    [(1, 'Dr Ana Ruiz', 'in-network')]
    >>> result.excluded_count, dict(result.excluded_by)   # counted from the network index
    (1, {'network': 1})
    >>> match(referral, directory, as_of=now, excluded=None).excluded[0].reasons
    ('not in the coverage networks (acme-hmo-west)',)
    >>> for reason in result.ranked[0].reasons:
    ...     print(reason)
    Internal Medicine, Cardiovascular Disease (207RC0000X), as asked (+0)
    in network (+30)
    speaks es (+20)
    accepting new patients (+10)
    """
    as_of = v.as_utc(as_of, "as_of")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError("limit", "expected a positive integer")
    if excluded is not None and (
        isinstance(excluded, bool) or not isinstance(excluded, int) or excluded < 0
    ):
        raise ValidationError("excluded", "expected a non-negative integer or None")
    taxonomy = taxonomy or default_taxonomy()
    wanted = requested_specialty(referral, specialty)
    codes = taxonomy.satisfying(wanted)
    networks = coverage_networks(referral.coverage, directory)
    window = _window(referral, as_of, policy)
    out_of_network_rule = bool(networks) and policy.require_in_network

    counts: Counter[str] = Counter()
    in_network: frozenset[str] = frozenset()
    found: list[_Entry]
    # distance excludes nobody: computed only for the candidates that may rank (best
    # first, by the most each can score), not for all
    lazy = origin is not None and policy.max_distance_km is None
    index = out_of_network_rule and excluded is not None  # the network index answers
    grouping = getattr(directory, "screen_groups", None)
    groups: list[CandidateGroup] | None = None
    if grouping is not None and lazy and (index or not networks):
        # every candidate read has one network status: screened a group at a time, and
        # only the rows of the groups that may rank (or are listed) are read
        asked = networks if index else None
        every = [
            *grouping(PractitionerRole, specialties=codes, networks=asked),
            *grouping(HealthcareService, specialties=codes, networks=asked),
        ]
        considered = sum(g.size for g in every)  # what count_found counts
        groups = [g for g in every if g.in_networks]
        outside = considered - sum(g.size for g in groups)
        if outside:  # counted, not read, as the network index answers them below
            counts["network"] = outside
        checked = not index
        # a group whose rows differ in what screens them (new patients from the locations,
        # languages from the practitioner) is screened row by row, as without groups
        found = _group_rows(
            directory,
            [g for g in groups if g.accepting_new_patients is None or g.practitioner_languages],
        )
    elif index:
        # the network index answers: only the coverage's networks are read; the others of
        # the specialty are counted (measured: reading and excluding them cost 4/5 of a
        # match over 100,000 roles)
        found = [
            *_find(directory, PractitionerRole, codes, networks),
            *_find(directory, HealthcareService, codes, networks),
        ]
        considered = _count(directory, PractitionerRole, codes) + _count(
            directory, HealthcareService, codes
        )
        outside = considered - len(found)
        if outside:
            counts["network"] = outside
        checked = False
    else:
        found = [
            *_find(directory, PractitionerRole, codes, None),
            *_find(directory, HealthcareService, codes, None),
        ]
        considered = len(found)
        if networks:
            in_network = frozenset(
                e.reference for e in _find(directory, PractitionerRole, codes, networks)
            ) | frozenset(e.reference for e in _find(directory, HealthcareService, codes, networks))
        checked = True
    people = _get_many(
        directory,
        Practitioner,
        (p for e in found if (p := getattr(e, "practitioner_id", None))),
    )
    language = referral.patient.preferred_language
    places: dict[str, Location] = {}
    organizations: dict[str, Organization] = {}
    ctx = _Context(
        wanted=wanted,
        codes=codes,
        taxonomy=taxonomy,
        networks=networks,
        in_network=in_network,
        origin=origin,
        policy=policy,
        language=language,
        english_ok=language_matches(language, "en") and not referral.patient.interpreter_needed,
        places=places,
        organizations=organizations,
        network_refusal=f"not in the coverage networks ({', '.join(sorted(networks or ()))})",
        language_refusal=f"does not list {language} and offers no interpreter",
        network_checked=checked,
        origin_terms=(0.0, 1.0, 0.0)
        if origin is None
        else (
            math.radians(origin.latitude),
            math.cos(math.radians(origin.latitude)),
            origin.longitude,
        ),
    )

    # first what the entries say themselves; then, for those whose locations can still
    # matter (new patients not stated; distance), their locations, read in one go
    refused: list[tuple[str, _Entry, Practitioner | None]] = []
    wanted_places: list[str] = []
    speaks: dict[tuple[str, ...], bool] = {}
    far = origin is not None and not lazy  # every distance is needed, to count exclusions
    inside = found
    if checked and out_of_network_rule:
        inside = []
        for entry in found:
            if entry.reference in in_network:
                inside.append(entry)
            else:  # the index already answered: excluded for its network, not assessed
                person = people.get(getattr(entry, "practitioner_id", None) or "")
                counts["network"] += 1
                refused.append((entry.reference, entry, person))
    screened, scored, excluded_here = _screen_all(inside, people, ctx, speaks, lazy, far)
    uncounted = considered - len(found)  # excluded, not in `refused`: not read
    later: dict[float, list[CandidateGroup]] = {}
    if groups is not None:
        uncounted = counts["network"]
        refusing: list[CandidateGroup] = []
        for g in groups:
            if g.accepting_new_patients is None or g.practitioner_languages:
                continue  # read above
            row = MatchRow(
                g.kind, "", "", None, None, None, g.specialties, g.languages, (),
                g.accepting_new_patients, g.telehealth, g.interpreter_available,
            )  # fmt: skip
            _, done, no = _screen_all([row], {}, ctx, speaks, True, False)
            if no:  # the whole group is excluded, for the same factors
                for factor in no[0][1]:
                    counts[factor] += g.size
                refusing.append(g)
                uncounted += g.size
            else:  # read when the ranking reaches its bound
                later.setdefault(done[0][0], []).append(g)
        if refusing and (excluded is None or excluded > 0):
            listed = _group_rows(directory, refusing, excluded)
            uncounted -= len(listed)
            refused += [(e.reference, e, None) for e in listed]
    for first, factors in excluded_here:
        for factor in factors:
            counts[factor] += 1
        refused.append((first[0].reference, first[0], first[1]))
    for first in screened:
        # its locations matter while new patients are not stated, or for the distance of
        # a candidate not excluded yet
        location_ids = first[0].location_ids
        if location_ids and (first[6] is None or (far and not first[5])):
            wanted_places += location_ids
    places.update(_get_many(directory, Location, wanted_places))
    for first in screened:  # scored: _Pending, or _Bound when lazy
        outcome = _finish(first, ctx, lazy)
        if type(outcome[0]) is str:  # the excluding factors
            for factor in outcome:
                counts[factor] += 1
            refused.append((first[0].reference, first[0], first[1]))
        else:
            scored.append(outcome)

    ordered: Iterator[_Pending]
    if lazy:
        ordered = _in_order(scored, ctx, directory, later)
    elif scheduler is None:
        ordered = iter(heapq.nsmallest(limit, scored))
    else:
        heapq.heapify(scored)
        ordered = (heapq.heappop(scored) for _ in range(len(scored)))
    ranked = _rank(ordered, limit, policy, scheduler, window)
    shown = (
        sorted(refused, key=_first)
        if excluded is None
        else heapq.nsmallest(excluded, refused, key=_first)
    )
    if groups is not None:  # their practitioners (for the names) were not read yet
        ranked_people = _get_many(
            directory,
            Practitioner,
            (
                p
                for s in ranked
                if s.person is None and (p := getattr(s.entry, "practitioner_id", None))
            ),
        )
        for s in ranked:
            if s.person is None:
                s.person = ranked_people.get(getattr(s.entry, "practitioner_id", None) or "")
        listed_people = _get_many(
            directory,
            Practitioner,
            (
                p
                for _, e, person in shown
                if person is None and (p := getattr(e, "practitioner_id", None))
            ),
        )
        shown = [
            (r, e, person or listed_people.get(getattr(e, "practitioner_id", None) or ""))
            for r, e, person in shown
        ]
    named = [s.entry for s in ranked] + [entry for _, entry, _ in shown]
    organizations.update(
        _get_many(directory, Organization, (e.organization_id for e in named if e.organization_id))
    )
    places.update(  # the listed exclusions' reasons may need their locations
        _get_many(
            directory,
            Location,
            (i for _, e, _ in shown for i in e.location_ids if i not in places),
        )
    )
    candidates = []
    for k, s in enumerate(ranked, start=1):
        explained = _Explain(True)
        _assess(s.entry, s.person, ctx, explained)  # the same points, now with their texts
        reasons = [*(explained.reasons or []), *([s.slot_reason] if s.slot_reason else [])]
        candidates.append(
            Candidate(
                rank=k,
                reference=s.reference,
                name=_name(s.entry, s.person, ctx.organizations),
                score=round(s.total, 6),
                reasons=tuple(reasons),
                network=s.network,
                specialty=s.specialty,
                distance_km=None if s.distance is None else round(s.distance, 3),
                location_id=s.location_id,
                slot=s.slot,
            )
        )
    return MatchResult(
        tuple(candidates),
        tuple(_exclusion(entry, person, ctx) for _, entry, person in shown),
        wanted,
        networks,
        window,
        considered,
        excluded_by=MappingProxyType(dict(sorted(counts.items()))),
        excluded_count=len(refused) + uncounted,
    )


def _first(item: tuple[str, Any, Any]) -> str:
    return item[0]


def _exclusion(entry: _Entry, person: Practitioner | None, ctx: _Context) -> Exclusion:
    """An excluded candidate with every reason (assessed again: only the listed few are)."""
    if (
        ctx.network_checked
        and ctx.networks
        and ctx.policy.require_in_network
        and entry.reference not in ctx.in_network
    ):
        return Exclusion(
            entry.reference, _name(entry, person, ctx.organizations), (ctx.network_refusal,)
        )
    outcome = _assess(entry, person, ctx, _Explain(False))
    assert not isinstance(outcome, _Scored)  # _score and _assess agree (tests check it)
    return Exclusion(entry.reference, _name(entry, person, ctx.organizations), outcome[1])


def _find(
    directory: Directory, kind: type[M], codes: frozenset[str], networks: frozenset[str] | None
) -> list[M] | list[MatchRow]:
    """The active candidates of ``kind`` with one of ``codes`` (in one of ``networks``
    unless None): the directory's ``screen`` when it has one (the SQL directory reads them
    from an indexed table, without decoding entries), else :meth:`Directory.find`."""
    screen = getattr(directory, "screen", None)
    if screen is not None:
        rows: list[MatchRow] = screen(kind, specialties=codes, networks=networks)
        return rows
    return directory.find(kind, specialties=codes, networks=networks)


def _count(directory: Directory, kind: type[M], codes: frozenset[str]) -> int:
    """How many active entries of ``kind`` have one of ``codes``: the directory's
    ``count_found`` when it has one (memory and SQL do, without reading the entries), else
    the length of :meth:`~referralkit.directory.Directory.find`."""
    counting = getattr(directory, "count_found", None)
    if counting is not None:
        return int(counting(kind, specialties=codes))
    return len(directory.find(kind, specialties=codes))


def _group_rows(
    directory: Any, groups: Sequence[CandidateGroup], limit: int | None = None
) -> list[_Entry]:
    """The rows of ``groups`` (the first ``limit`` of each kind by id), roles then services:
    the directory's ``screen_rows`` of their members."""
    out: list[_Entry] = []
    for kind in (PractitionerRole, HealthcareService):
        keys = [key for g in groups if g.kind == kind.KIND for key in g.members]
        if keys and limit is not None:
            keys = heapq.nsmallest(limit, keys, key=_second)
        if keys:
            out += directory.screen_rows(kind, keys)
    return out


def _second(item: tuple[str, str]) -> str:
    return item[1]


_Screened = tuple[_Entry, Practitioner | None, float, NetworkStatus, str, list[str], bool | None]
"""A candidate as far as its own entry tells: entry, person, the points so far, network
status, the code it holds, the excluding factors so far, and whether new patients are stated
(None: its locations decide). A tuple: one is made per candidate of every match."""


def _screen_all(
    found: Sequence[_Entry],
    people: Mapping[str, Practitioner],
    ctx: _Context,
    speaks: dict[tuple[str, ...], bool],
    lazy: bool,
    far: bool,
) -> tuple[list[_Screened], list[Any], list[tuple[_Screened, list[str]]]]:
    """The first half of what :func:`_assess` decides, for every candidate, without a
    reason's text (measured, the texts were half the cost of assessing), in one loop with
    what it reads of the policy and the context taken once; remembering per match whether a
    tuple of language tags serves the patient.

    A candidate whose entry states whether it accepts new patients, when distance excludes
    nobody (``far`` false), is finished here as :func:`_finish` would (``lazy`` as there):
    returned are the candidates its locations decide (for :func:`_finish`), those finished
    (a :data:`_Pending`, or a :data:`_Bound` when ``lazy``), and those excluded with their
    factors."""
    policy = ctx.policy
    accepting_points = policy.accepting
    not_accepting = policy.not_accepting
    require_accepting = policy.require_accepting
    unknown_km = policy.distance_unknown
    placed = ctx.origin is not None
    done: list[Any] = []
    done_append = done.append
    refused: list[tuple[_Screened, list[str]]] = []
    wanted = ctx.wanted
    codes = ctx.codes
    networks = ctx.networks
    checked = ctx.network_checked
    in_network = ctx.in_network
    language = ctx.language
    english_ok = ctx.english_ok
    require_in_network = policy.require_in_network
    require_language = policy.require_language
    subspecialty = policy.subspecialty
    network_unknown = policy.network_unknown
    in_points = policy.in_network
    out_points = policy.out_of_network
    speaks_points = policy.speaks_language
    interpreter_points = policy.interpreter
    no_language = policy.no_language
    telehealth_points = policy.telehealth
    unknown = NetworkStatus.UNKNOWN
    inside = NetworkStatus.IN_NETWORK
    outside = NetworkStatus.OUT_OF_NETWORK
    out: list[_Screened] = []
    append = out.append
    for entry in found:
        # no practitioner read (services; roles without one): no lookup per candidate
        person = people.get(getattr(entry, "practitioner_id", None) or "") if people else None
        factors: list[str] = []
        points = 0.0
        specialties = entry.specialties
        held = wanted
        if wanted not in specialties:
            for held in specialties:
                if held in codes:
                    break
            points += subspecialty
        if not networks:
            status = unknown
            points += network_unknown
        elif not checked or entry.reference in in_network:
            status = inside
            points += in_points
        else:
            status = outside
            if require_in_network:
                factors.append("network")
            else:
                points += out_points
        spoken = entry.languages or (person.languages if person is not None else ())
        served = speaks.get(spoken)
        if served is None:
            served = speaks[spoken] = any(language_matches(language, tag) for tag in spoken)
        if served:
            points += speaks_points
        elif entry.interpreter_available:
            points += interpreter_points
        elif not spoken and english_ok:
            pass
        elif require_language:
            factors.append("language")
        else:
            points += no_language
        if entry.telehealth:
            points += telehealth_points
        accepting = entry.accepting_new_patients
        screened = (entry, person, points, status, held, factors, accepting)
        if accepting is None or far:  # its locations decide
            append(screened)
            continue
        if accepting:
            points += accepting_points
        elif require_accepting:
            factors.append("accepting")
        else:
            points += not_accepting
        if factors:
            refused.append((screened, factors))
        elif not placed:
            done_append((-points, entry.reference, screened, None, None))
        else:  # lazy (an origin, and distance excludes nobody): what it scores at most,
            # as a distance only lowers it (or distance_unknown)
            bound = points + unknown_km if unknown_km > 0 else points
            done_append((-bound, entry.reference, screened, points))
    return out, done, refused


_Pending = tuple[float, str, "_Screened", float | None, str | None]
"""A candidate not excluded: minus its points before slots, its reference (together the
ranking key: references are unique), what the screen found, its distance and location.
A tuple, sorted and heaped as is; only the ranked few become a :class:`_Scored`."""

_TERMS: dict[int, tuple[Location, float, float, float]] = {}
"""Per location object (by identity, checked): radians(latitude), its cosine and the
longitude, what the haversine needs of it, computed once, not once per match."""
_TERMS_MAX = 500_000


def _terms(place: Location, position: GeoPoint) -> tuple[Location, float, float, float]:
    found = _TERMS.get(id(place))
    if found is None or found[0] is not place:
        if len(_TERMS) >= _TERMS_MAX:
            _TERMS.clear()
        p2 = math.radians(position.latitude)
        found = _TERMS[id(place)] = (place, p2, math.cos(p2), position.longitude)
    return found


def _finish(c: _Screened, ctx: _Context, lazy: bool = False) -> _Pending | _Bound | tuple[str, ...]:
    """The second half: new patients as the locations say, and distance (the haversine of
    :meth:`GeoPoint.km_to`, step for step, so the same number, with the origin's part
    computed once per match). ``lazy`` (only when distance excludes nobody): not the
    distance yet, but the bound :func:`_in_order` resolves it from."""
    entry, _, points, _, _, factors, accepting = c
    policy = ctx.policy
    places = ctx.places
    if accepting is None:
        known = [
            places[i].accepting_new_patients
            for i in entry.location_ids
            if i in places and places[i].accepting_new_patients is not None
        ]
        accepting = any(known) if known else None
    if accepting is True:
        points += policy.accepting
    elif accepting is None:
        points += policy.accepting_unknown
    elif policy.require_accepting:
        factors.append("accepting")
    else:
        points += policy.not_accepting

    if ctx.origin is not None and not factors:
        if lazy:  # what it scores at most: a distance only lowers it (or distance_unknown)
            unknown = ctx.policy.distance_unknown
            return (-(points + unknown if unknown > 0 else points), entry.reference, c, points)
        pending, too_far = _placed(c, points, ctx)
        if not too_far:
            return pending
        factors.append("distance")
    if factors:
        return tuple(factors)
    return (-points, entry.reference, c, None, None)


def _placed(c: _Screened, points: float, ctx: _Context) -> tuple[_Pending, bool]:
    """A candidate's distance (its nearest location with a position) and points with it;
    and whether it is farther than ``max_distance_km`` (and offers no telehealth)."""
    entry = c[0]
    policy = ctx.policy
    places = ctx.places
    distance: float | None = None
    location_id: str | None = None
    p1, cos1, lon1 = ctx.origin_terms
    for i in entry.location_ids:
        place = places.get(i)
        if place is None or (position := place.position) is None:
            continue
        _, p2, cos2, lon2 = _terms(place, position)
        dl = math.radians(lon2 - lon1)
        h = math.sin((p2 - p1) / 2) ** 2 + cos1 * cos2 * math.sin(dl / 2) ** 2
        km = 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
        if distance is None or (km, i) < (distance, location_id or ""):
            distance, location_id = km, i
    too_far = False
    if distance is not None:
        points -= min(policy.max_km_penalty, distance * policy.per_km)
        too_far = (
            policy.max_distance_km is not None
            and distance > policy.max_distance_km
            and not entry.telehealth
        )
    else:
        points += policy.distance_unknown
    return (-points, entry.reference, c, distance, location_id), too_far


_Bound = tuple[float, str, _Screened, float]
"""A candidate whose distance is not computed yet: minus the most it can score before
slots, its reference, the screen, and its points before distance."""

_LAT_MARGIN: Final = 1 - 1e-9
"""Shrinks the latitude bound so that it stays below the computed haversine whatever its
rounding (a few units in the last place; this is a micrometre per kilometre)."""


def _in_order(
    bounded: list[_Bound],
    ctx: _Context,
    directory: Directory,
    later: Mapping[float, list[CandidateGroup]] | None = None,
) -> Iterator[_Pending]:
    """The candidates best first, as ``sorted`` on their exact points would give them, with
    distances computed only for those that may come next.

    The candidates are grouped by the most they can score (their points before distance:
    a handful of distinct values); the groups are entered best first, and only while a
    candidate of theirs may come next. Entering a group reads the locations of all its
    members at once (one read per group, not per batch) and gives each a tighter bound from
    its latitude alone: a great-circle distance is at least ``R·|Δφ|``, so a candidate
    scores at most its points minus the penalty of that. The exact distance (the haversine)
    is computed only when that tighter bound is the best left; a candidate is yielded when
    its exact key beats every bound left. Measured at 100,000 roles, the worst query enters
    groups of 75 and 601 candidates and computes 238 distances (was 688) for the 91 that
    its ranking takes.

    ``later`` are the candidate groups of a stored directory whose rows are not read yet,
    by minus their bound (the most they score, the same for every row of a group): read
    (``screen_rows``) and screened when entered."""
    groups: dict[float, list[_Bound]] = {}
    for b in bounded:
        found = groups.get(b[0])
        if found is None:
            groups[b[0]] = [b]
        else:
            found.append(b)
    later = later or {}
    order = sorted(groups.keys() | later.keys())  # minus the bound: the best group first
    exact: list[_Pending] = []
    tight: list[tuple[float, str, _Bound]] = []  # entered, distance not computed yet
    places = ctx.places
    policy = ctx.policy
    per_km, most, unknown = policy.per_km, policy.max_km_penalty, policy.distance_unknown
    p1 = ctx.origin_terms[0]
    reach = EARTH_RADIUS_KM * _LAT_MARGIN
    g = 0
    while True:
        # the best key still possible: of a group not entered (as (bound, "")), or a bound
        left = (order[g], "") if g < len(order) else None
        if tight and (left is None or tight[0][:2] < left):
            left = tight[0][:2]
        if exact and (left is None or exact[0][:2] <= left):
            yield heapq.heappop(exact)
            continue
        if left is None:
            return
        if tight and tight[0][:2] == left:  # the best bound left: its exact distance
            b = heapq.heappop(tight)[2]
            heapq.heappush(exact, _placed(b[2], b[3], ctx)[0])
            continue
        members = groups.get(order[g], [])
        waiting = later.get(order[g])
        g += 1
        if waiting:
            rows = _group_rows(directory, waiting)
            _, done, _ = _screen_all(rows, {}, ctx, {}, True, False)
            members = [*members, *done]
        missing = [i for b in members for i in b[2][0].location_ids if i not in places]
        if missing:
            places.update(_get_many(directory, Location, missing))
        bounds = len(tight)
        for b in members:
            near: float | None = None
            for i in b[2][0].location_ids:
                place = places.get(i)
                if place is None or (position := place.position) is None:
                    continue
                lat = abs(_terms(place, position)[1] - p1) * reach
                if near is None or lat < near:
                    near = lat
            if near is None:  # no position: its points are exact
                points = b[3] + unknown
                heapq.heappush(exact, (-points, b[1], b[2], None, None))
            else:
                tight.append((-(b[3] - min(most, near * per_km)), b[1], b))
        if len(tight) > bounds:
            heapq.heapify(tight)  # once per group, not a push per member


def _name(entry: _Entry, person: Practitioner | None, orgs: Mapping[str, Organization]) -> str:
    if person is not None:
        return person.name
    if entry.name:
        return entry.name
    org = orgs.get(entry.organization_id or "")
    return org.name if org is not None else entry.reference


def _assess(
    entry: _Entry, person: Practitioner | None, ctx: _Context, out: _Explain
) -> _Scored | tuple[tuple[str, ...], tuple[str, ...]]:
    """Exclude ``entry`` (the factors and every reason), or score it (reasons in ``out`` if
    explaining)."""
    policy = ctx.policy
    refusals: list[str] = []
    factors: list[str] = []

    # specialty: an exact code, or a specialization of the classification asked for
    wanted = ctx.wanted
    held = (
        wanted
        if wanted in entry.specialties
        else next(c for c in entry.specialties if c in ctx.codes)
    )
    if out.reasons is not None:
        label = ctx.taxonomy[held].display if held in ctx.taxonomy else held
        if held == wanted:
            out.add("specialty", 0.0, "{} ({}), as asked", label, held)
        else:
            out.add(
                "specialty",
                policy.subspecialty,
                "{} ({}), a specialization of {}",
                label,
                held,
                wanted,
            )
    elif held != wanted:
        out.points += policy.subspecialty

    # network
    if ctx.networks is None:
        status = NetworkStatus.UNKNOWN
        out.add(
            "network", policy.network_unknown, "networks do not apply (self-pay or no coverage)"
        )
    elif not ctx.networks:
        status = NetworkStatus.UNKNOWN
        out.add("network", policy.network_unknown, "the coverage names no network: not checked")
    elif not ctx.network_checked or entry.reference in ctx.in_network:
        status = NetworkStatus.IN_NETWORK
        out.add("network", policy.in_network, "in network")
    else:
        status = NetworkStatus.OUT_OF_NETWORK
        if policy.require_in_network:
            factors.append("network")
            refusals.append(ctx.network_refusal)
        else:
            out.add("network", policy.out_of_network, ctx.network_refusal)

    # language: the role's own, else its practitioner's
    spoken = entry.languages or (person.languages if person is not None else ())
    language = ctx.language
    if any(language_matches(language, tag) for tag in spoken):
        out.add("language", policy.speaks_language, "speaks {}", language)
    elif entry.interpreter_available:
        out.add("language", policy.interpreter, "an interpreter for {} is available", language)
    elif not spoken and ctx.english_ok:
        out.add("language", 0.0, "languages not listed; the patient speaks English")
    elif policy.require_language:
        factors.append("language")
        refusals.append(ctx.language_refusal)
    else:
        out.add("language", policy.no_language, ctx.language_refusal)

    # new patients: the entry's own answer, else its locations'
    places = ctx.places
    accepting = entry.accepting_new_patients
    if accepting is None:
        known = [
            places[i].accepting_new_patients
            for i in entry.location_ids
            if i in places and places[i].accepting_new_patients is not None
        ]
        accepting = any(known) if known else None
    if accepting is True:
        out.add("accepting", policy.accepting, "accepting new patients")
    elif accepting is None:
        out.add("accepting", policy.accepting_unknown, "new patients: not stated")
    elif policy.require_accepting:
        factors.append("accepting")
        refusals.append("not accepting new patients")
    else:
        out.add("accepting", policy.not_accepting, "not accepting new patients")

    # distance: the nearest of its locations with a position
    distance: float | None = None
    location_id: str | None = None
    origin = ctx.origin
    if origin is not None and not refusals:
        placed = [
            (origin.km_to(position), i)
            for i in entry.location_ids
            if i in places and (position := places[i].position) is not None
        ]
        if placed:
            distance, location_id = min(placed)
            penalty = min(policy.max_km_penalty, distance * policy.per_km)
            out.add("distance", -penalty, "{:.1f} km away", distance)
            if (
                policy.max_distance_km is not None
                and distance > policy.max_distance_km
                and not entry.telehealth
            ):
                factors.append("distance")
                refusals.append(f"farther than {policy.max_distance_km:g} km ({distance:.1f} km)")
        else:
            out.add("distance", policy.distance_unknown, "no position known: distance unknown")
    if entry.telehealth:
        out.add("telehealth", policy.telehealth, "offers telehealth")

    if refusals:
        return tuple(factors), tuple(refusals)
    return _Scored(entry, person, out.points, status, held, distance, location_id, entry.reference)


def _rank(
    ordered: Iterator[_Pending],
    limit: int,
    policy: MatchPolicy,
    scheduler: SchedulingAdapter | None,
    window: Window,
) -> list[_Scored]:
    """The best ``limit`` by total score, then reference; slots looked up best-first while a
    candidate can still make the cut (branch and bound on ``policy.slot_bonus``).
    ``ordered`` gives the candidates by points before slots, then reference: only those
    taken from it are looked at."""
    if scheduler is None:
        best = [_scored(p) for p in itertools.islice(ordered, limit)]
        for s in best:
            s.total = s.static
        return best
    best = []  # the top `limit` so far, best first
    for p in ordered:
        s = _scored(p)
        if len(best) == limit:
            worst = best[-1]
            reach = s.static + policy.soonest_slot
            if (-reach, s.reference) > (-worst.total, worst.reference):
                break  # in order of points before slots: nobody after can make the cut
        _add_slot(s, policy, scheduler, window)
        best.append(s)
        best.sort(key=lambda x: (-x.total, x.reference))
        del best[limit:]
    return best


def _scored(p: _Pending) -> _Scored:
    minus, reference, (entry, person, _, status, held, _, _), distance, location_id = p
    return _Scored(entry, person, -minus, status, held, distance, location_id, reference)


def _add_slot(
    s: _Scored,
    policy: MatchPolicy,
    scheduler: SchedulingAdapter,
    window: Window,
) -> None:
    reason: Reason
    try:
        slots: Sequence[Slot] = scheduler.find_slots(
            s.entry.reference, window, limit=policy.slot_lookahead
        )
    except SchedulingError as error:
        slots = ()
        reason = Reason("slot", policy.no_slot, f"slots unknown ({type(error).__name__})")
    else:
        reason = Reason(
            "slot", policy.no_slot, f"no free slot before {window.end:%Y-%m-%d %H:%M} UTC"
        )
    inside = [slot for slot in slots if window.contains(slot.start)]
    if inside:
        s.slot = min(inside, key=lambda slot: (slot.start, slot.id))
        share = (s.slot.start - window.start) / window.length
        points = policy.soonest_slot - share * (policy.soonest_slot - policy.slot_at_deadline)
        reason = Reason("slot", points, f"free slot {s.slot.start:%Y-%m-%d %H:%M} UTC")
    s.slot_reason = reason
    s.total = s.static + reason.points
