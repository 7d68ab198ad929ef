"""``match`` over a stored directory (SQLite, PostgreSQL) gives exactly what it gives over
the memory directory: the same ranking, scores, reasons, exclusions and counts, for random
directories (roles and services, practitioners' languages, locations' new-patient answers
and positions, affiliations, inactive and replaced entries) and every policy shape; and the
``directory_candidates`` table matching reads is filled for a directory made before it
existed, and kept in step by every write."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_support import IN_CI, POSTGRES_URL, fresh_schema, postgres_unavailable

from referralkit import Coverage, PlanType, Referral
from referralkit.directory import (
    DEFAULT_POLICY,
    Entry,
    GeoPoint,
    HealthcareService,
    InsurancePlan,
    Location,
    MatchRow,
    MemoryDirectory,
    Organization,
    OrganizationAffiliation,
    Practitioner,
    PractitionerRole,
    SqlDirectory,
    load_nppes,
    match,
    open_directory,
)
from referralkit.scheduling import MemoryScheduler
from referralkit.testing import sample_request, write_nppes

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CARDIOLOGY, INTERVENTIONAL, INTERNAL = "207RC0000X", "207RI0011X", "207R00000X"
CODES = [CARDIOLOGY, INTERVENTIONAL, INTERNAL, "207RE0101X", "208D00000X"]
NETWORKS = ["acme-hmo-west", "net-b", "net-c"]
LANGUAGES = ["en", "es", "es-MX", "zh", "vi", "ES"]
HARTFORD = GeoPoint(41.7658, -72.6734)

POLICIES = [
    DEFAULT_POLICY,
    attrs.evolve(
        DEFAULT_POLICY,
        require_in_network=False,
        require_language=False,
        require_accepting=False,
        max_distance_km=60,
    ),
    attrs.evolve(DEFAULT_POLICY, max_distance_km=40, distance_unknown=4.0),
    # screened in SQL (no distance rule), with points whose sums round: the SQL order must
    # be the order of the Python sums, to the last bit
    attrs.evolve(
        DEFAULT_POLICY,
        require_language=False,
        require_accepting=False,
        in_network=0.1,
        subspecialty=-0.7,
        speaks_language=0.3,
        interpreter=0.2,
        no_language=-0.6,
        telehealth=0.7,
        accepting=0.1,
        not_accepting=-0.3,
        distance_unknown=0.35,
        per_km=0.01,
    ),
    attrs.evolve(DEFAULT_POLICY, require_accepting=False, distance_unknown=2.5, telehealth=0.1),
]


def some(rng: random.Random, items: list[str], most: int) -> tuple[str, ...]:
    return tuple(dict.fromkeys(rng.sample(items, rng.randint(0, most))))


def directory_entries(seed: int, size: int = 40) -> list[Entry]:
    """A random directory: every branch of the screen has candidates."""
    rng = random.Random(seed)
    out: list[Entry] = [InsurancePlan("plan-1", "Acme Bronze", network_ids=("net-c",))]
    out += [Practitioner(f"p{k}", f"Dr {k}", languages=some(rng, LANGUAGES, 2)) for k in range(6)]
    out += [Organization(f"o{k}", f"Clinic {k}") for k in range(3)]
    for k in range(8):
        position = (
            GeoPoint(41.7 + rng.uniform(-0.8, 0.8), -72.7 + rng.uniform(-0.8, 0.8))
            if rng.random() < 0.8
            else None
        )
        accepting = rng.choice([None, True, False])
        out.append(Location(f"l{k}", position=position, accepting_new_patients=accepting))
    places = [f"l{k}" for k in range(9)]  # l8 is never added
    for k in range(size):
        fields: dict[str, Any] = {
            "specialties": some(rng, CODES, 2),
            "network_ids": some(rng, NETWORKS, 2),
            "languages": some(rng, LANGUAGES, 2) if rng.random() < 0.6 else (),
            "location_ids": some(rng, places, 2),
            "accepting_new_patients": rng.choice([None, True, False, True]),
            "telehealth": rng.random() < 0.3,
            "interpreter_available": rng.random() < 0.3,
            "active": rng.random() < 0.9,
            "organization_id": rng.choice([None, "o0", "o1", "o9"]),
        }
        if rng.random() < 0.75:
            out.append(
                PractitionerRole(
                    f"r{k:02d}",
                    practitioner_id=rng.choice([None, "p0", "p1", "p2", "p3", "p4", "p5", "p9"]),
                    name=rng.choice([None, f"Role {k}"]),
                    **fields,
                )
            )
        else:
            out.append(
                HealthcareService(f"s{k:02d}", name=rng.choice([None, f"Svc {k}"]), **fields)
            )
    services = [e.id for e in out if isinstance(e, HealthcareService)]
    for k in range(2):
        out.append(
            OrganizationAffiliation(
                f"a{k}",
                network_ids=some(rng, NETWORKS, 2),
                healthcare_service_ids=(*some(rng, services, 3), "s-missing"),
                active=rng.random() < 0.8,
            )
        )
    return out


def replacements(seed: int, entries: list[Entry]) -> list[Entry]:
    """Some entries again, changed: their index and candidate rows must follow."""
    rng = random.Random(seed + 1)
    out: list[Entry] = []
    for e in entries:
        if isinstance(e, PractitionerRole | HealthcareService) and rng.random() < 0.2:
            out.append(
                attrs.evolve(
                    e,
                    specialties=some(rng, CODES, 2),
                    network_ids=some(rng, NETWORKS, 1),
                    accepting_new_patients=rng.choice([None, True, False]),
                    active=rng.random() < 0.8,
                )
            )
        elif isinstance(e, OrganizationAffiliation) and rng.random() < 0.5:
            out.append(attrs.evolve(e, network_ids=("net-b",)))
    return out


def referrals() -> list[Referral]:
    base = sample_request().referral("ref-1", NOW)  # cardiology, Spanish, Acme HMO West
    patient = base.patient
    return [
        base,
        attrs.evolve(base, patient=attrs.evolve(patient, preferred_language="en")),
        attrs.evolve(base, coverage=Coverage("c1", "Acme", "Acme Bronze", PlanType.HMO)),
        attrs.evolve(base, coverage=None),
    ]


def scheduler_for(entries: list[Entry], seed: int) -> MemoryScheduler:
    rng = random.Random(seed + 2)
    scheduler = MemoryScheduler()
    for e in entries:
        if isinstance(e, PractitionerRole | HealthcareService) and rng.random() < 0.6:
            scheduler.open_slots(
                e.reference, NOW + dt.timedelta(hours=rng.randint(1, 800)), count=1
            )
    return scheduler


def assert_same_matches(stored: SqlDirectory, seed: int) -> None:
    entries = directory_entries(seed)
    later = replacements(seed, entries)
    memory = MemoryDirectory(entries)
    memory.add(later)
    stored.add(entries)
    stored.add(later)
    scheduler = scheduler_for(entries, seed)
    for referral in referrals():
        for policy in POLICIES:
            for code in (CARDIOLOGY, INTERNAL):
                for kwargs in (
                    {"origin": HARTFORD, "scheduler": scheduler},
                    {"origin": None, "scheduler": None, "excluded": None},
                    {"origin": HARTFORD, "scheduler": None, "limit": 3, "excluded": 2},
                    {"origin": HARTFORD, "scheduler": scheduler, "limit": 1, "excluded": 0},
                ):
                    expected = match(
                        referral, memory, as_of=NOW, policy=policy, specialty=code, **kwargs
                    )
                    got = match(
                        referral, stored, as_of=NOW, policy=policy, specialty=code, **kwargs
                    )
                    assert got == expected, (seed, policy, code, kwargs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6))
def test_sqlite_matches_as_memory_does(seed: int) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        stored = SqlDirectory(conn)
        stored.ensure_schema()
        assert_same_matches(stored, seed)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def postgres() -> str:
    reason = postgres_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
        pytest.skip(f"PostgreSQL tests need a server: {reason}")
    return POSTGRES_URL


@pytest.mark.parametrize("seed", range(6))
def test_postgres_matches_as_memory_does(postgres: str, seed: int) -> None:
    with fresh_schema(postgres) as url:
        stored = open_directory(url)
        assert isinstance(stored, SqlDirectory)
        try:
            assert_same_matches(stored, seed)
        finally:
            stored.close()


# --------------------------------------------------------------------------- the table


def candidate_rows(directory: SqlDirectory) -> list[tuple[Any, ...]]:
    rows = directory.connection.execute("SELECT * FROM directory_candidates").fetchall()
    return sorted((tuple(row) for row in rows), key=lambda row: row[:3])


def every_row(directory: SqlDirectory) -> list[MatchRow]:
    return [
        *directory.screen(PractitionerRole),
        *directory.screen(HealthcareService),
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlDirectory]:
    if request.param == "sqlite":
        directory = open_directory(f"sqlite:///{tmp_path / 'd.db'}")
        assert isinstance(directory, SqlDirectory)
        yield directory
        directory.close()
        return
    url = request.getfixturevalue("postgres")
    with fresh_schema(url) as schema_url:
        directory = open_directory(schema_url)
        assert isinstance(directory, SqlDirectory)
        yield directory
        directory.close()


class TestCandidatesTable:
    def test_a_directory_made_before_the_table_gets_it_filled(self, stored: SqlDirectory) -> None:
        """Upgrade path: a directory whose ``directory_candidates`` table does not exist
        (made by an earlier version) gets it, filled from its entries, when its schema is
        ensured; matching then gives what it gave, and what memory gives."""
        entries = directory_entries(7)
        stored.add(entries)
        stored.add(replacements(7, entries))
        before = candidate_rows(stored)
        assert before  # roles and services have their rows
        wanted = every_row(stored)
        stored.connection.execute("DROP TABLE directory_candidates")  # autocommit
        stored.ensure_schema()
        assert candidate_rows(stored) == before
        assert every_row(stored) == wanted
        stored.ensure_schema()  # idempotent: nothing added twice
        assert candidate_rows(stored) == before

    def test_the_fill_reads_in_batches(
        self, stored: SqlDirectory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """More roles than one batch of the fill: every one gets its rows."""
        import referralkit.directory._sql as sql

        monkeypatch.setattr(sql, "_FILL", 3)
        stored.add([PractitionerRole(f"r{k}", specialties=(CARDIOLOGY,)) for k in range(10)])
        stored.add([HealthcareService("s1"), PractitionerRole("r-none")])
        before = candidate_rows(stored)
        stored.connection.execute("DROP TABLE directory_candidates")  # autocommit
        stored.ensure_schema()
        assert candidate_rows(stored) == before
        assert len(before) == 12

    def test_rows_follow_every_write(self, stored: SqlDirectory) -> None:
        """Adding, replacing (new codes, inactive) and a code-less entry: one row per code,
        none left behind."""
        stored.add([PractitionerRole("r1", specialties=(CARDIOLOGY, INTERNAL))])
        assert [(r[1], r[2]) for r in candidate_rows(stored)] == [
            (INTERNAL, "r1"),
            (CARDIOLOGY, "r1"),
        ]
        stored.add([PractitionerRole("r1", specialties=(INTERNAL,), active=False)])
        assert [(r[1], r[2], r[4]) for r in candidate_rows(stored)] == [(INTERNAL, "r1", 0)]
        stored.add([PractitionerRole("r1")])
        assert [(r[1], r[2]) for r in candidate_rows(stored)] == [("", "r1")]
        assert stored.screen(PractitionerRole, specialties=[""]) == []
        assert [r.id for r in stored.screen(PractitionerRole)] == ["r1"]

    def test_nppes_rows_are_the_rows_of_the_entries(
        self, stored: SqlDirectory, tmp_path: Path
    ) -> None:
        """The NPPES loader writes the candidate rows itself: the same as ``add`` would."""
        path = tmp_path / "npi.csv"
        write_nppes(path, 300, seed=3)
        load_nppes(stored, path)
        loaded = candidate_rows(stored)
        via_add = MemoryDirectory()
        load_nppes(via_add, path)
        conn = sqlite3.connect(":memory:")
        again = SqlDirectory(conn)
        again.ensure_schema()
        again.add(list(via_add.entries(PractitionerRole)))
        again.add(list(via_add.entries(HealthcareService)))
        assert loaded == candidate_rows(again)
        conn.close()


# --------------------------------------------------------------------------- groups


class TestCandidateGroups:
    @pytest.mark.parametrize("seed", range(4))
    def test_groups_hold_what_screen_finds(self, stored: SqlDirectory, seed: int) -> None:
        """``screen_groups`` splits the candidates ``screen`` finds (without networks) into
        groups alike in what matching screens on: those in network, with the keys of their
        rows (which ``screen_rows`` reads back as ``screen`` gives them), and the others
        counted; every row holds its group's values."""
        entries = directory_entries(seed)
        stored.add(entries)
        stored.add(replacements(seed, entries))
        for kind in (PractitionerRole, HealthcareService):
            for codes in ([CARDIOLOGY], [CARDIOLOGY, INTERVENTIONAL, INTERNAL], ["none"]):
                for networks in (None, ["acme-hmo-west"], ["net-b", "net-c"], []):
                    groups = stored.screen_groups(kind, specialties=codes, networks=networks)
                    inside = [g for g in groups if g.in_networks]
                    assert sum(g.size for g in groups) == stored.count_found(
                        kind, specialties=codes
                    )
                    assert sum(g.size for g in inside) == len(
                        stored.screen(kind, specialties=codes, networks=networks)
                        if networks != []
                        else []
                    )
                    expected = stored.screen(kind, specialties=codes, networks=networks)
                    keys = [key for g in inside for key in g.members]
                    assert stored.screen_rows(kind, keys) == (expected if networks != [] else [])
                    for g in inside:
                        assert g.size == len(g.members)
                        for row in stored.screen_rows(kind, g.members):
                            person = not row.languages and row.practitioner_id is not None
                            assert (
                                row.kind,
                                row.specialties,
                                row.languages,
                                row.accepting_new_patients,
                                row.interpreter_available,
                                row.telehealth,
                                person,
                            ) == (
                                g.kind,
                                g.specialties,
                                g.languages,
                                g.accepting_new_patients,
                                g.interpreter_available,
                                g.telehealth,
                                g.practitioner_languages,
                            )

    def test_only_the_groups_that_can_rank_are_read(self, stored: SqlDirectory) -> None:
        """Of 200 alike candidates in network, split in groups by language and new
        patients, a match for 3 reads the rows of the best group (those speaking the
        patient's language, accepting) and the listed exclusions only, and gives what
        memory gives."""
        entries: list[Entry] = []
        for k in range(200):
            entries.append(Location(f"l{k}", position=GeoPoint(41.7 + k / 1000, -72.7)))
            entries.append(
                PractitionerRole(
                    f"r{k:03d}",
                    specialties=(CARDIOLOGY,),
                    network_ids=("acme-hmo-west",),
                    languages=("es",) if k % 10 == 0 else ("en",),
                    interpreter_available=k % 2 == 1,
                    accepting_new_patients=k % 3 != 0,
                    location_ids=(f"l{k}",),
                )
            )
        stored.add(entries)
        read: list[int] = []
        screen_rows = stored.screen_rows
        screen = stored.screen

        def counted(kind: Any, *args: Any, **kwargs: Any) -> Any:
            rows = (screen_rows if args else screen)(kind, *args, **kwargs)
            read.append(len(rows))
            return rows

        stored.screen_rows = counted  # type: ignore[method-assign]
        stored.screen = counted  # type: ignore[method-assign]
        referral = sample_request().referral("ref-1", NOW)  # Spanish, Acme HMO West
        for excluded in (20, 0):
            read.clear()
            got = match(referral, stored, as_of=NOW, limit=3, origin=HARTFORD,
                        specialty=CARDIOLOGY, excluded=excluded)  # fmt: skip
            expected = match(referral, MemoryDirectory(entries), as_of=NOW, limit=3,
                             origin=HARTFORD, specialty=CARDIOLOGY, excluded=excluded)  # fmt: skip
            assert got == expected
            assert len(got.ranked) == 3
            assert got.excluded_count == expected.excluded_count > 100
            # the 13 speaking Spanish and accepting (+20 +10), and the listed exclusions
            assert sum(read) == 13 + excluded
