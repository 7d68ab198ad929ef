"""Directory entries to and from compact JSON, for the SQL directory.

An entry is stored as a JSON object of its fields that differ from their defaults (an NPPES
role has 5 of its 15 fields set), nested Address as an object and GeoPoint as
``[latitude, longitude]``. Reading validates again: a row edited by hand that breaks a
rule is refused with a :class:`~referralkit.errors.ValidationError`, not trusted.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from ..errors import ValidationError
from ._model import KINDS, Address, Entry, GeoPoint

__all__ = ["decode", "dumps", "encode"]

_FIELDS: Final = {
    cls: tuple((a.name, a.default) for a in attrs.fields(cls)) for cls in KINDS.values()
}
_ADDRESS: Final = tuple((a.name, a.default) for a in attrs.fields(Address))


_NESTED: Final = frozenset({"address", "position"})
dumps: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""Compact JSON, as :func:`encode` writes it (the NPPES loader writes rows with it)."""


def _plain(name: str, value: Any) -> Any:
    if isinstance(value, Address):
        return {n: getattr(value, n) for n, d in _ADDRESS if getattr(value, n) != d}
    if isinstance(value, GeoPoint):
        return [value.latitude, value.longitude]
    return value


def encode(entry: Entry) -> str:
    """The entry's fields that differ from their defaults, as compact JSON."""
    data = {}
    for name, default in _FIELDS[type(entry)]:
        value = getattr(entry, name)
        if value != default:
            data[name] = _plain(name, value) if name in _NESTED else value
    return dumps(data)


def decode(kind: str, text: str) -> Entry:
    """The entry of ``kind`` stored as ``text`` by :func:`encode`."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ValidationError("kind", "not a directory entry kind")
    try:
        data = json.loads(text)
    except ValueError:
        raise ValidationError(f"{kind}", "the stored entry is not JSON") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{kind}", "the stored entry is not a JSON object")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name == "address" and isinstance(value, dict):
            fields: Any = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            value = Address(**fields)
        elif name == "position" and isinstance(value, list) and len(value) == 2:
            value = GeoPoint(*value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    try:
        return cls(**values)
    except TypeError:
        raise ValidationError(f"{kind}", "the stored entry has unknown or missing fields") from None
