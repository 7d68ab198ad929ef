"""The :class:`Directory` port and its errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol, TypeVar, runtime_checkable

from ..errors import ReferralKitError
from ._model import Entry, HealthcareService, PractitionerRole

__all__ = ["CandidateGroup", "Directory", "DirectoryError", "MatchRow", "Matchable"]

E = TypeVar("E", bound=Entry)
Matchable = PractitionerRole | HealthcareService
"""What a referral is matched to: a practitioner's role, or an organisation's service."""
M = TypeVar("M", PractitionerRole, HealthcareService)


class DirectoryError(ReferralKitError):
    """A directory could not be read or written (its backend failed)."""


class MatchRow(NamedTuple):
    """What matching reads of an active practitioner role or healthcare service, without
    the entry itself: what a stored directory's ``screen`` returns (read from its
    ``directory_candidates`` table, not decoded from the entry's JSON).

    The fields are those of the entry (``practitioner_id`` is None for a service) plus
    ``kind`` and ``reference`` (``Kind/id``). Matching screens, ranks and explains from
    these alone; a directory without ``screen`` gives it the entries, which have the same
    attributes. A tuple: one is made per candidate of a match, and tuples are cheap.

    >>> from referralkit.directory import PractitionerRole
    >>> row = MatchRow.of(PractitionerRole("r1", specialties=("207RC0000X",)))
    >>> row.reference, row.languages, row.accepting_new_patients
    ('PractitionerRole/r1', (), None)
    >>> row
    MatchRow('PractitionerRole/r1')
    """

    kind: str
    id: str
    reference: str
    practitioner_id: str | None
    organization_id: str | None
    name: str | None
    specialties: tuple[str, ...]
    languages: tuple[str, ...]
    location_ids: tuple[str, ...]
    accepting_new_patients: bool | None
    telehealth: bool
    interpreter_available: bool

    @classmethod
    def of(cls, entry: Matchable) -> MatchRow:
        """The row of an entry (what the stored directory gives for it)."""
        return cls(
            entry.KIND,
            entry.id,
            entry.reference,
            getattr(entry, "practitioner_id", None),
            entry.organization_id,
            entry.name,
            entry.specialties,
            entry.languages,
            entry.location_ids,
            entry.accepting_new_patients,
            entry.telehealth,
            entry.interpreter_available,
        )

    def __repr__(self) -> str:  # the reference only: a role's name may be a person's
        return f"MatchRow({self.reference!r})"


class CandidateGroup(NamedTuple):
    """Candidates that matching screens alike: what a stored directory's
    ``screen_groups`` returns (``GROUP BY`` on its ``directory_candidates`` table), so that
    matching counts the exclusions of a whole group at once and reads the rows of only the
    groups that can rank (``screen_rows``).

    The fields are what matching's screen reads of an entry, besides its locations:
    ``practitioner_languages`` is true when the entry lists no language and names a
    practitioner (whose languages then decide: such a group is screened row by row);
    ``in_networks`` whether they are in one of the networks asked (true when none were);
    ``size`` how many they are; ``members`` the code and id of each one's row, for
    ``screen_rows`` (only for the groups in network: the others are counted).
    """

    kind: str
    specialties: tuple[str, ...]
    languages: tuple[str, ...]
    accepting_new_patients: bool | None
    interpreter_available: bool
    telehealth: bool
    practitioner_languages: bool
    in_networks: bool
    size: int
    members: tuple[tuple[str, str], ...]

    def __repr__(self) -> str:
        return f"CandidateGroup({self.kind!r}, size={self.size})"


@runtime_checkable
class Directory(Protocol):
    """Where provider-directory entries live: add them, get one, find candidates.

    Entries are keyed by kind and id; adding an entry whose kind and id exist replaces it.
    References between entries are ids resolved on use, so entries may be added in any
    order. :meth:`find` is served by indexes on specialty code and network, never by a scan.
    An OrganizationAffiliation puts the healthcare services it lists into its networks, as
    Plan-Net defines it: :meth:`find` by network sees them there.

    Two bulk reads are optional, and matching uses them when present: ``count_found(kind,
    *, specialties=None, networks=None)`` (``len(find(...))`` without reading the entries;
    otherwise matching calls :meth:`find`) and ``get_many(kind, ids)`` (a dict of the
    entries among ``ids`` that exist; otherwise matching calls :meth:`get` for each). The
    contract suite checks them where they exist. A stored directory may also offer
    ``screen(kind, *, specialties, networks)`` (:class:`MatchRow` values instead of
    entries), and ``screen_groups`` with ``screen_rows`` (:class:`CandidateGroup`): matching
    then screens a group of alike candidates at a time and reads the rows of only the groups
    that can rank.

    Implementations: :class:`~referralkit.directory.MemoryDirectory` and the SQL directory
    (:class:`~referralkit.directory.SqlDirectory`, SQLite or PostgreSQL). Every one passes
    :class:`referralkit.testing.directory_contract.DirectoryContract`.
    """

    def add(self, entries: Iterable[Entry]) -> int:
        """Add or replace ``entries`` (atomically, where the backend has transactions);
        returns how many were written."""
        ...

    def get(self, kind: type[E], id: str) -> E | None:
        """The entry of ``kind`` with ``id``, or None."""
        ...

    def find(
        self,
        kind: type[M],
        *,
        specialties: Iterable[str] | None = None,
        networks: Iterable[str] | None = None,
    ) -> list[M]:
        """Active roles or services having one of ``specialties`` (exact NUCC codes) and in
        one of ``networks`` (ids); None means "any", an empty collection matches nothing.
        Ordered by id."""
        ...

    def entries(self, kind: type[E]) -> Iterator[E]:
        """Every entry of ``kind``, ordered by id."""
        ...

    def count(self, kind: type[Entry] | None = None) -> int:
        """How many entries of ``kind`` (of every kind when None)."""
        ...

    def close(self) -> None:
        """Release the backend's resources (a no-op for memory)."""
        ...
