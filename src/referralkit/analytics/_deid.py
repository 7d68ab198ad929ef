"""De-identification of analytics columns, driven by the model's PHI declaration.

Every column of a frame names the model fields its values come from (``sources``, dotted
paths such as ``Referral.patient.birth_date``). Whether a column holds PHI is read at run
time from the attrs metadata those fields carry (:data:`referralkit.model.PHI`, the same
declaration that redacts ``repr`` and encrypts at rest): nothing here keeps its own list of
PHI fields, so a field declared PHI tomorrow leaves the de-identified frames tomorrow.

With ``deidentify=True`` each column gets one of the HIPAA Safe Harbor treatments
(45 CFR 164.514(b)(2)):

- a column with any PHI source is **dropped** (names, MRN, member id, contacts, birth date,
  every free-text field: (b)(2)(i)(A), (C), (D)-(H), (R));
- unless its rule is ``age band``: the age on the referral's date, in five-year bands with
  every age of 90 or more pooled into ``90+`` ((b)(2)(i)(C));
- identifiers that link rows (the referral id, the patient id) are replaced by
  **pseudonyms**: a keyed hash (HMAC-SHA-256) under a secret key that never leaves the
  :class:`Deidentifier`, the re-identification code Safe Harbor allows in 164.514(c) (it is
  not derived from information about the patient and cannot be reversed without the key);
- optionally every timestamp of a patient is **shifted** by one random number of days for
  that patient, so intervals (days to appointment, turnaround hours) are exact while calendar
  dates are not.

Service dates are kept unless shifted: every KPI is a difference between two of them. Safe
Harbor's dates clause (b)(2)(i)(C) names "all elements of dates (except year) directly related
to an individual": a data set that must meet Safe Harbor to the letter uses
``Deidentifier(date_shift_days=...)`` and is released under an expert determination
(164.514(b)(1)), or is aggregated (the KPI tables hold no dates of individuals).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import hmac
import os
import types
import typing
from collections.abc import Iterable
from typing import Any, Final

import attrs

from .. import model
from .._validators import is_phi
from ..errors import ValidationError

__all__ = ["AGE_BANDS", "Column", "Deidentifier", "Rule", "age_band"]


class Rule(enum.StrEnum):
    """What de-identification does to a column."""

    KEEP = "keep"
    """Kept as is while none of its sources is PHI; dropped as soon as one is."""
    AGE_BAND = "age band"
    """Derived from the birth date by Safe Harbor's own generalisation: always kept."""
    PSEUDONYM = "pseudonym"
    """A linking identifier: replaced by its keyed pseudonym."""


@attrs.frozen
class Column:
    """One column of an analytics frame: its name, pandas dtype, the model fields it is read
    from, its de-identification rule and what it means."""

    name: str
    dtype: str
    sources: tuple[str, ...]
    doc: str
    rule: Rule = Rule.KEEP
    classifies: tuple[str, ...] = ()
    """PHI fields the column only sorts into a category and never copies (a hold's reason
    read as its :class:`~referralkit.clocks.Cause`; whether a contact's counterpart is the
    patient): they do not make the column PHI."""

    @property
    def phi(self) -> bool:
        """Whether any source field (or a field on the way to it) is declared PHI."""
        return any(_is_phi_path(path) for path in self.sources)

    def kept(self, deidentify: bool) -> bool:
        """Whether the column appears in a frame made with ``deidentify``."""
        return not deidentify or self.rule is not Rule.KEEP or not self.phi


def _attrs_class(annotation: Any) -> type | None:
    """The attrs class an annotation names, looking inside ``X | None`` and ``tuple[X, ...]``."""
    if isinstance(annotation, type) and attrs.has(annotation):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple):
        for argument in typing.get_args(annotation):
            found = _attrs_class(argument)
            if found is not None:
                return found
    return None


@functools.cache
def _resolved(cls: type) -> dict[str, attrs.Attribute[Any]]:
    attrs.resolve_types(cls, globalns=vars(model))
    return {a.name: a for a in attrs.fields(cls)}


def _is_phi_path(path: str) -> bool:
    """Read the declaration along ``Type.field.field``; a path that does not resolve is a bug
    in a column's definition (a test checks every column's sources resolve)."""
    head, *names = path.split(".")
    cls: Any = getattr(model, head)
    for name in names:
        if cls is None:
            raise ValidationError("sources", f"{path}: {name} is not inside a model type")
        try:
            attribute = _resolved(cls)[name]
        except KeyError:
            raise ValidationError("sources", f"{path}: no field {name}") from None
        if is_phi(attribute):
            return True
        cls = _attrs_class(attribute.type)
    return False


def columns_kept(columns: Iterable[Column], deidentify: bool) -> list[Column]:
    """The columns a frame made with ``deidentify`` has, in order."""
    return [c for c in columns if c.kept(deidentify)]


# --------------------------------------------------------------------------- age bands

AGE_BANDS: Final = (*(f"{low}-{low + 4}" for low in range(0, 90, 5)), "90+")
"""Five-year age bands; Safe Harbor pools every age of 90 or more into one."""


def age_band(birth: dt.date, on: dt.date) -> str:
    """The age band of someone born on ``birth``, on day ``on``.

    >>> age_band(dt.date(1990, 6, 15), dt.date(2026, 1, 5))
    '35-39'
    >>> age_band(dt.date(1901, 2, 3), dt.date(2026, 1, 5))
    '90+'
    """
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if age >= 90:
        return "90+"
    return AGE_BANDS[max(age, 0) // 5]


# --------------------------------------------------------------------------- the key holder


def _key(_: Any, attribute: attrs.Attribute[bytes], value: Any) -> None:
    if not isinstance(value, bytes) or len(value) < 16:
        raise ValidationError("key", "expected at least 16 bytes")


def _shift(_: Any, attribute: attrs.Attribute[int], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3650:
        raise ValidationError("date_shift_days", "expected a whole number of days, 0 to 3650")


@attrs.frozen
class Deidentifier:
    """How frames are de-identified: the secret key of the pseudonyms and the date shift.

    ``key`` (random by default, never shown) makes pseudonyms: the same id gives the same
    pseudonym under the same key, so frames made with one :class:`Deidentifier` join on
    ``referral_id`` and ``patient_key``; under another key they share nothing.
    ``date_shift_days`` N > 0 moves every timestamp of a patient by the same number of days,
    drawn from -N..N (never 0) by the key and the patient id; 0 keeps dates.

    ``deidentify=True`` uses one :class:`Deidentifier` made when the process starts, so the
    frames of one session join; keep your own to join frames across sessions.

    >>> d = Deidentifier(key=b"0123456789abcdef", date_shift_days=30)
    >>> d.pseudonym("patient", "pat-1") == d.pseudonym("patient", "pat-1")
    True
    >>> d
    Deidentifier(date_shift_days=30)
    >>> 1 <= abs(d.shift_days("pat-1")) <= 30
    True
    """

    key: bytes = attrs.field(factory=lambda: os.urandom(32), validator=_key, repr=False)
    date_shift_days: int = attrs.field(default=0, validator=_shift)

    def pseudonym(self, kind: str, value: str) -> str:
        """A 16-hex-digit pseudonym of ``value`` (a ``kind`` of identifier)."""
        # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).digest()
        return hmac.digest(self.key, f"{kind}\x00{value}".encode(), "sha256").hex()[:16]

    def pseudonyms(self, kind: str, values: Iterable[str]) -> list[str]:
        """:meth:`pseudonym` of each of ``values``, in order (for whole columns)."""
        # HMAC by its definition, H(K ^ opad || H(K ^ ipad || m)), from the two padded-key
        # states hashed once: a third of the cost of an HMAC set up per value
        key = self.key if len(self.key) <= 64 else hashlib.sha256(self.key).digest()
        key = key.ljust(64, b"\0")
        # the inner state past the kind's prefix too: one update a value
        started = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        started.update(f"{kind}\x00".encode())
        inner = started.copy
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in key)).copy
        found: list[str] = []
        add = found.append
        for value in values:
            step = inner()
            step.update(f"{value}".encode())
            last = outer()
            last.update(step.digest())
            add(last.digest()[:8].hex())  # the first 16 hex digits
        return found

    def shift_days(self, patient_id: str) -> int:
        """The days ``patient_id``'s timestamps move (0 without a date shift)."""
        if not self.date_shift_days:
            return 0
        digest = hmac.digest(self.key, f"shift\x00{patient_id}".encode(), "sha256")
        span = self.date_shift_days
        # 2N values without 0: -N..-1 and 1..N
        drawn = int.from_bytes(digest[:8], "big") % (2 * span)
        return drawn - span if drawn < span else drawn - span + 1


SESSION: Final = Deidentifier()
"""The :class:`Deidentifier` of ``deidentify=True``: one random key per process."""
