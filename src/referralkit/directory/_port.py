"""The :class:`Directory` port and its errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

from ..errors import ReferralKitError
from ._model import Entry, HealthcareService, PractitionerRole

__all__ = ["Directory", "DirectoryError", "Matchable"]

E = TypeVar("E", bound=Entry)
Matchable = PractitionerRole | HealthcareService
"""What a referral is matched to: a practitioner's role, or an organisation's service."""
M = TypeVar("M", PractitionerRole, HealthcareService)


class DirectoryError(ReferralKitError):
    """A directory could not be read or written (its backend failed)."""


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
    contract suite checks them where they exist.

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
