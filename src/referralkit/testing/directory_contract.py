"""The contract every :class:`~referralkit.directory.Directory` implementation passes.

Subclass :class:`DirectoryContract` and provide a ``directory`` fixture returning a fresh,
empty directory; pytest collects the inherited tests::

    class TestMyDirectory(DirectoryContract):
        @pytest.fixture
        def directory(self):
            d = MyDirectory(...)
            yield d
            d.close()

The tests cover: every kind of entry round trips; an entry replaces the one with its kind and
id, and its old index entries go with it; ``find`` by specialty, by network and by both, with
None meaning any and an empty collection nothing; networks an OrganizationAffiliation gives
to healthcare services; inactive entries are never found; ``entries`` and ``find`` come in id
order; and, where a directory offers them, ``count_found`` and ``get_many`` (the bulk reads
matching uses) agree with ``find`` and ``get``. referralkit runs it against the memory,
SQLite and PostgreSQL directories.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..directory import (
    Address,
    Directory,
    Entry,
    GeoPoint,
    HealthcareService,
    InsurancePlan,
    Location,
    MatchRow,
    Network,
    Organization,
    OrganizationAffiliation,
    Practitioner,
    PractitionerRole,
)

__all__ = ["DirectoryContract", "sample_entries"]

CARDIOLOGY, INTERNAL, DERMATOLOGY = "207RC0000X", "207R00000X", "207N00000X"


def sample_entries() -> list[Entry]:
    """One entry of every kind, every optional field set, plus a few roles to search."""
    return [
        Organization(
            "org-1", "Hartford Heart Group", npi="1234567893", part_of="org-0", types=("prvgrp",)
        ),
        Network("net-a", "Acme Standard", owner_id="payer-1"),
        InsurancePlan(
            "plan-1",
            "Acme Bronze",
            network_ids=("net-a",),
            owner_id="payer-1",
            identifiers=("ACME-BRONZE",),
            types=("qhp",),
        ),
        Location(
            "loc-1",
            name="Main St clinic",
            address=Address(
                ("12 Main St", "Suite 4"),
                city="Hartford",
                state="CT",
                postal_code="06103",
                country="US",
            ),
            position=GeoPoint(41.7658, -72.6734),
            organization_id="org-1",
            accepting_new_patients=True,
        ),
        Practitioner(
            "p-1",
            "Dr Ana Ruiz",
            npi="1245319599",
            languages=("es", "en"),
            qualifications=(CARDIOLOGY,),
        ),
        PractitionerRole(
            "r-1",
            practitioner_id="p-1",
            organization_id="org-1",
            specialties=(CARDIOLOGY, INTERNAL),
            location_ids=("loc-1",),
            network_ids=("net-a",),
            healthcare_service_ids=("svc-1",),
            languages=("es",),
            accepting_new_patients=True,
            telehealth=True,
            interpreter_available=True,
            name="Cardiology, Main St",
        ),
        PractitionerRole("r-2", specialties=(DERMATOLOGY,), network_ids=("net-b",)),
        PractitionerRole("r-3", specialties=(CARDIOLOGY,), network_ids=("net-b",)),
        PractitionerRole("r-0", specialties=(CARDIOLOGY,), network_ids=("net-a",), active=False),
        HealthcareService(
            "svc-1",
            name="Echo lab",
            organization_id="org-1",
            specialties=(CARDIOLOGY,),
            categories=("outpat",),
            location_ids=("loc-1",),
            languages=("en",),
            accepting_new_patients=False,
            telehealth=False,
        ),
        OrganizationAffiliation(
            "aff-1",
            organization_id="org-0",
            participating_id="org-1",
            network_ids=("net-c",),
            healthcare_service_ids=("svc-1",),
            location_ids=("loc-1",),
            specialties=(CARDIOLOGY,),
        ),
    ]


def _ids(entries: list[PractitionerRole] | list[HealthcareService]) -> list[str]:
    return [e.id for e in entries]


class DirectoryContract:
    """Shared semantics of every directory. Provide a ``directory`` fixture."""

    @pytest.fixture
    def directory(self) -> Iterator[Directory]:  # pragma: no cover - overridden
        raise NotImplementedError("define a `directory` fixture returning an empty directory")

    @pytest.fixture
    def filled(self, directory: Directory) -> Directory:
        directory.add(sample_entries())
        return directory

    def test_is_a_directory(self, directory: Directory) -> None:
        """The implementation satisfies the Directory protocol."""
        assert isinstance(directory, Directory)

    def test_every_kind_round_trips(self, directory: Directory) -> None:
        """What is added comes back equal, every field of every kind."""
        entries = sample_entries()
        assert directory.add(entries) == len(entries)
        for entry in entries:
            assert directory.get(type(entry), entry.id) == entry
        assert directory.count() == len(entries)
        assert directory.count(PractitionerRole) == 4

    def test_unknown_ids_and_kinds_are_separate(self, filled: Directory) -> None:
        """An unknown id is None; the same id under another kind is another entry."""
        assert filled.get(Practitioner, "nobody") is None
        assert filled.get(Practitioner, "r-1") is None
        assert filled.get(PractitionerRole, "r-1") is not None

    def test_adding_again_replaces(self, filled: Directory) -> None:
        """An entry with an existing kind and id replaces it; the count does not grow."""
        before = filled.count()
        filled.add([Practitioner("p-1", "Dr Ana Ruiz-Lopez")])
        practitioner = filled.get(Practitioner, "p-1")
        assert practitioner is not None
        assert practitioner.name == "Dr Ana Ruiz-Lopez"
        assert practitioner.languages == ()
        assert filled.count() == before

    def test_the_last_of_duplicates_in_one_batch_wins(self, directory: Directory) -> None:
        """Two entries with one kind and id in one call: the later one is kept."""
        directory.add([Practitioner("p", "First"), Practitioner("p", "Second")])
        found = directory.get(Practitioner, "p")
        assert found is not None
        assert found.name == "Second"
        assert directory.count() == 1

    def test_empty_add_writes_nothing(self, directory: Directory) -> None:
        """Adding nothing is allowed and changes nothing."""
        assert directory.add([]) == 0
        assert directory.count() == 0

    def test_find_by_specialty(self, filled: Directory) -> None:
        """Roles having any of the codes, active only, in id order."""
        assert _ids(filled.find(PractitionerRole, specialties=[CARDIOLOGY])) == ["r-1", "r-3"]
        assert _ids(filled.find(PractitionerRole, specialties=[CARDIOLOGY, DERMATOLOGY])) == [
            "r-1",
            "r-2",
            "r-3",
        ]
        assert _ids(filled.find(PractitionerRole, specialties=["207X00000X"])) == []

    def test_find_by_network_and_both(self, filled: Directory) -> None:
        """Network membership narrows; both filters intersect."""
        assert _ids(filled.find(PractitionerRole, networks=["net-b"])) == ["r-2", "r-3"]
        assert _ids(
            filled.find(PractitionerRole, specialties=[CARDIOLOGY], networks=["net-b"])
        ) == ["r-3"]
        assert _ids(
            filled.find(PractitionerRole, specialties=[CARDIOLOGY], networks=["net-a", "net-b"])
        ) == ["r-1", "r-3"]

    def test_none_is_any_and_empty_is_nothing(self, filled: Directory) -> None:
        """No filter finds every active entry; an empty filter finds none."""
        assert _ids(filled.find(PractitionerRole)) == ["r-1", "r-2", "r-3"]
        assert filled.find(PractitionerRole, specialties=[]) == []
        assert filled.find(PractitionerRole, networks=[]) == []

    def test_inactive_entries_are_never_found(self, filled: Directory) -> None:
        """An inactive role is kept (get) but never found."""
        assert filled.get(PractitionerRole, "r-0") is not None
        assert "r-0" not in _ids(filled.find(PractitionerRole, networks=["net-a"]))

    def test_replacing_an_entry_moves_its_index_entries(self, filled: Directory) -> None:
        """After a role changes specialty and network, it is found under the new ones only."""
        filled.add([PractitionerRole("r-3", specialties=(DERMATOLOGY,), network_ids=("net-a",))])
        assert _ids(filled.find(PractitionerRole, specialties=[CARDIOLOGY])) == ["r-1"]
        assert _ids(filled.find(PractitionerRole, networks=["net-b"])) == ["r-2"]
        assert _ids(filled.find(PractitionerRole, networks=["net-a"])) == ["r-1", "r-3"]

    def test_affiliations_put_services_in_their_networks(self, filled: Directory) -> None:
        """A service listed by an affiliation is found in the affiliation's networks, and
        leaves them when the affiliation is replaced."""
        assert _ids(filled.find(HealthcareService, networks=["net-c"])) == ["svc-1"]
        assert _ids(
            filled.find(HealthcareService, specialties=[CARDIOLOGY], networks=["net-c"])
        ) == ["svc-1"]
        filled.add(
            [
                OrganizationAffiliation(
                    "aff-1", network_ids=("net-d",), healthcare_service_ids=("svc-1",)
                )
            ]
        )
        assert filled.find(HealthcareService, networks=["net-c"]) == []
        assert _ids(filled.find(HealthcareService, networks=["net-d"])) == ["svc-1"]
        filled.add(
            [
                OrganizationAffiliation(
                    "aff-1", network_ids=("net-d",), healthcare_service_ids=("svc-1",), active=False
                )
            ]
        )
        assert filled.find(HealthcareService, networks=["net-d"]) == []

    def test_a_service_stays_in_its_networks_when_it_changes(self, filled: Directory) -> None:
        """Replacing a service keeps the networks its affiliations give it."""
        filled.add(
            [HealthcareService("svc-1", name="Echo and stress lab", specialties=(CARDIOLOGY,))]
        )
        assert _ids(filled.find(HealthcareService, networks=["net-c"])) == ["svc-1"]

    def test_entries_come_in_id_order(self, directory: Directory) -> None:
        """entries(kind) lists every entry of that kind, inactive too, by id."""
        directory.add([Practitioner(i, f"Dr {i}") for i in ("p-3", "p-1", "p-2")])
        directory.add([PractitionerRole("r-1", active=False)])
        assert [p.id for p in directory.entries(Practitioner)] == ["p-1", "p-2", "p-3"]
        assert [r.id for r in directory.entries(PractitionerRole)] == ["r-1"]

    def test_many_entries_in_one_call(self, directory: Directory) -> None:
        """A large batch (more than any IN list chunk) is written whole and indexed."""
        roles = [
            PractitionerRole(f"r-{k:04d}", specialties=(CARDIOLOGY,), network_ids=("net-a",))
            for k in range(1_200)
        ]
        directory.add(roles)
        directory.add(roles[:700])  # replacing many at once
        assert directory.count(PractitionerRole) == 1_200
        assert (
            len(directory.find(PractitionerRole, specialties=[CARDIOLOGY], networks=["net-a"]))
            == 1_200
        )

    def test_count_found_agrees_with_find(self, filled: Directory) -> None:
        """Where a directory offers ``count_found`` (matching counts candidates with it,
        else with ``len(find(...))``), it equals ``len(find(...))`` for every query:
        inactive entries, affiliations' networks, services an affiliation lists but the
        directory lacks, empty and None arguments."""
        counting = getattr(filled, "count_found", None)
        if counting is None:
            pytest.skip("this directory has no count_found: matching uses len(find(...))")
        filled.add(
            [
                OrganizationAffiliation(
                    "aff-2", network_ids=("net-c",), healthcare_service_ids=("svc-missing",)
                ),
                PractitionerRole("r-9", specialties=(INTERNAL,), network_ids=("net-a",)),
                PractitionerRole("r-8", specialties=(CARDIOLOGY,), active=False),
            ]
        )
        queries: list[dict[str, list[str] | None]] = [
            {},
            {"specialties": [CARDIOLOGY]},
            {"specialties": [CARDIOLOGY, INTERNAL, DERMATOLOGY]},
            {"networks": ["net-a"]},
            {"networks": ["net-c"]},
            {"specialties": [CARDIOLOGY], "networks": ["net-a", "net-b", "net-c"]},
            {"specialties": [], "networks": None},
            {"specialties": [CARDIOLOGY], "networks": []},
        ]
        for query in queries:
            roles = filled.find(PractitionerRole, **query)
            services = filled.find(HealthcareService, **query)
            assert counting(PractitionerRole, **query) == len(roles), query
            assert counting(HealthcareService, **query) == len(services), query

    def test_screen_agrees_with_find(self, filled: Directory) -> None:
        """Where a directory offers ``screen`` (matching reads candidates with it, else
        with ``find``), it gives :class:`~referralkit.directory.MatchRow` values equal to
        those of ``find``'s entries, in the same order, for every query: inactive entries,
        affiliations' networks, entries without codes, codes, ids, networks and languages
        holding separators, every new-patients answer."""
        screen = getattr(filled, "screen", None)
        if screen is None:
            pytest.skip("this directory has no screen: matching uses find")
        odd = "odd\x1fnet\x1e"
        filled.add(
            [
                OrganizationAffiliation(
                    "aff-2", network_ids=("net-c", odd), healthcare_service_ids=("svc-2",)
                ),
                HealthcareService(
                    "svc-2", name="Clinique Saint-Éloi", specialties=(CARDIOLOGY,),
                    accepting_new_patients=False, telehealth=True,
                ),
                PractitionerRole("r-9", specialties=(INTERNAL, CARDIOLOGY), network_ids=("net-a",)),
                PractitionerRole("r-8", specialties=(CARDIOLOGY,), active=False),
                PractitionerRole("r-7", network_ids=("net-a",), languages=("es-MX", "x\x1fy")),
                PractitionerRole(
                    "r-6", specialties=("c\x1ed",), network_ids=(odd, "net-e"),
                    location_ids=("l\x1fm",), accepting_new_patients=True,
                    interpreter_available=True,
                ),
                PractitionerRole("r-5", specialties=("c\x1ed", CARDIOLOGY), languages=("fr",)),
            ]
        )  # fmt: skip
        queries: list[dict[str, list[str] | None]] = [
            {},
            {"specialties": [CARDIOLOGY]},
            {"specialties": [CARDIOLOGY, INTERNAL, DERMATOLOGY]},
            {"specialties": ["c\x1ed"]},
            {"networks": ["net-a"]},
            {"networks": ["net-c"]},
            {"networks": [odd]},
            {"networks": ["net-e"]},
            {"specialties": [CARDIOLOGY], "networks": ["net-a", "net-b", "net-c"]},
            {"specialties": [CARDIOLOGY, "c\x1ed"], "networks": [odd, "net-c"]},
            {"specialties": [], "networks": None},
            {"specialties": [CARDIOLOGY], "networks": []},
        ]
        for query in queries:
            roles = [MatchRow.of(e) for e in filled.find(PractitionerRole, **query)]
            assert screen(PractitionerRole, **query) == roles, query
            services = [MatchRow.of(e) for e in filled.find(HealthcareService, **query)]
            assert screen(HealthcareService, **query) == services, query

    def test_get_many(self, filled: Directory) -> None:
        """Where a directory offers ``get_many`` (matching reads locations, practitioners
        and organisations with it, else with ``get``), it gives what ``get`` gives."""
        many = getattr(filled, "get_many", None)
        if many is None:
            pytest.skip("this directory has no get_many: matching uses get")
        ids = ["loc-1", "nowhere", "loc-1"]
        assert many(Location, ids) == {"loc-1": filled.get(Location, "loc-1")}
        assert many(Practitioner, []) == {}
        roles = [f"r-{k}" for k in range(4)] + [f"x-{k}" for k in range(600)]
        assert many(PractitionerRole, roles) == {
            i: filled.get(PractitionerRole, i) for i in roles[:4]
        }
