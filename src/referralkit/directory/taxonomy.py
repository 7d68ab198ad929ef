"""The NUCC Health Care Provider Taxonomy: specialty codes and their hierarchy.

NUCC codes have three levels: a *grouping* (Allopathic & Osteopathic Physicians), a
*classification* (Internal Medicine, ``207R00000X``) and an *area of specialization*
(Cardiovascular Disease, ``207RC0000X``). A specialization satisfies its classification: a
referral asking for internal medicine may go to a cardiologist, not the other way round. Some
boards' general certificates sit at the specialization level with no classification code of
their own (Psychiatry & Neurology: Neurology is ``2084N0400X``), so there the hierarchy is flat.

:func:`~referralkit.directory.default_taxonomy` is the subset shipped with referralkit (see
``directory/data/README.md`` for its source); :meth:`Taxonomy.from_csv` reads the full file
the NUCC publishes, unchanged.

>>> t = default_taxonomy()
>>> t.satisfies("207RC0000X", "207R00000X"), t.satisfies("207R00000X", "207RC0000X")
(True, False)
>>> t["207RC0000X"].display
'Internal Medicine, Cardiovascular Disease'
>>> SPECIALTIES["cardiology"]
'207RC0000X'
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Final

import attrs

from .. import _validators as v
from ..errors import ValidationError

__all__ = ["SPECIALTIES", "Taxonomy", "TaxonomyCode", "default_taxonomy"]

_CODE: Final = re.compile(r"[0-9]{3}[0-9A-Z][0-9A-Z]{5}X")
"""Ten characters, ending in X: the NUCC code format."""

_COLUMNS: Final = ("Code", "Grouping", "Classification", "Specialization")


@attrs.frozen
class TaxonomyCode:
    """One NUCC code and where it sits: grouping, classification, specialization."""

    code: str = attrs.field(validator=v.text(pattern=_CODE.pattern))
    grouping: str = attrs.field(validator=v.text(max_length=200))
    classification: str = attrs.field(validator=v.text(max_length=200))
    specialization: str | None = attrs.field(
        default=None, validator=v.optional(v.text(max_length=200))
    )

    @property
    def display(self) -> str:
        """``Classification, Specialization``, or the classification alone."""
        if self.specialization is None:
            return self.classification
        return f"{self.classification}, {self.specialization}"


@attrs.frozen
class Taxonomy(Mapping[str, TaxonomyCode]):
    """A set of NUCC codes with their hierarchy; a read-only mapping from code to entry.

    Codes outside the taxonomy are not errors: they satisfy only themselves, so a directory
    carrying codes newer than the taxonomy still matches on exact codes.
    """

    _codes: Mapping[str, TaxonomyCode] = attrs.field(repr=False)
    _children: Mapping[str, frozenset[str]] = attrs.field(repr=False)
    _parents: Mapping[str, str] = attrs.field(repr=False)

    @classmethod
    def of(cls, entries: Iterable[TaxonomyCode]) -> Taxonomy:
        """A taxonomy of ``entries``; a specialization's parent is the classification-level
        code (no specialization) of the same grouping and classification, when there is one."""
        codes: dict[str, TaxonomyCode] = {}
        for entry in entries:
            if entry.code in codes:
                raise ValidationError(f"code[{entry.code}]", "listed twice")
            codes[entry.code] = entry
        heads = {
            (e.grouping, e.classification): e.code
            for e in codes.values()
            if e.specialization is None
        }
        parents: dict[str, str] = {}
        children: dict[str, set[str]] = {}
        for e in codes.values():
            head = heads.get((e.grouping, e.classification))
            if e.specialization is not None and head is not None:
                parents[e.code] = head
                children.setdefault(head, set()).add(e.code)
        return cls(
            MappingProxyType(codes),
            MappingProxyType({k: frozenset(s) for k, s in children.items()}),
            MappingProxyType(parents),
        )

    @classmethod
    def from_csv(cls, source: str | Path | io.TextIOBase) -> Taxonomy:
        """Read the NUCC's published CSV (columns ``Code, Grouping, Classification,
        Specialization`` and others, which are ignored); a file path or an open text file.

        A bad row raises :class:`~referralkit.errors.ValidationError` naming its line.
        """
        if isinstance(source, str | Path):
            with open(source, encoding="utf-8-sig", newline="") as handle:
                return cls.of(list(_read_rows(handle)))
        return cls.of(list(_read_rows(source)))

    def __getitem__(self, code: str) -> TaxonomyCode:
        return self._codes[code]

    def __iter__(self) -> Iterator[str]:
        return iter(self._codes)

    def __len__(self) -> int:
        return len(self._codes)

    def parent(self, code: str) -> str | None:
        """The classification-level code above ``code``, if it has one."""
        return self._parents.get(code)

    def satisfying(self, wanted: str) -> frozenset[str]:
        """Every code that satisfies a request for ``wanted``: itself and, for a
        classification, all of its specializations."""
        return frozenset({wanted}) | self._children.get(wanted, frozenset())

    def satisfies(self, have: str, wanted: str) -> bool:
        """Whether a provider with code ``have`` satisfies a request for ``wanted``."""
        return have == wanted or self._parents.get(have) == wanted


def _read_rows(handle: Iterable[str]) -> Iterator[TaxonomyCode]:
    reader = csv.DictReader(handle)
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValidationError("header", f"missing column(s): {', '.join(missing)}")
    for row in reader:
        line = reader.line_num
        code = (row["Code"] or "").strip()
        if not _CODE.fullmatch(code):
            raise ValidationError(f"line {line}.Code", "not a NUCC taxonomy code")
        specialization = (row["Specialization"] or "").strip() or None
        try:
            yield TaxonomyCode(
                code,
                (row["Grouping"] or "").strip(),
                (row["Classification"] or "").strip(),
                specialization,
            )
        except ValidationError as error:
            raise error.at(f"line {line}") from None


@functools.cache
def default_taxonomy() -> Taxonomy:
    """The NUCC subset shipped with referralkit (96 codes; ``directory/data/README.md``)."""
    text = (
        resources.files(__package__)
        .joinpath("data/nucc-taxonomy-subset.csv")
        .read_text(encoding="utf-8")
    )
    return Taxonomy.from_csv(io.StringIO(text))


SPECIALTIES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cardiology": "207RC0000X",
        "dermatology": "207N00000X",
        "emergency-medicine": "207P00000X",
        "endocrinology": "207RE0101X",
        "family-medicine": "207Q00000X",
        "gastroenterology": "207RG0100X",
        "internal-medicine": "207R00000X",
        "nephrology": "207RN0300X",
        "neurology": "2084N0400X",
        "obstetrics": "207VX0000X",
        "obstetrics-gynecology": "207V00000X",
        "oncology": "207RX0202X",
        "orthopedics": "207X00000X",
        "otolaryngology": "207Y00000X",
        "pediatrics": "208000000X",
        "psychiatry": "2084P0800X",
        "pulmonology": "207RP1001X",
        "rheumatology": "207RR0500X",
        "urology": "208800000X",
    }
)
"""The NUCC code of each specialty name a :class:`~referralkit.model.Referral` may carry in
``specialty`` (the names :mod:`referralkit.synth` and the shipped rules use)."""
