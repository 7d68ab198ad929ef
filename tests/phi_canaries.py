"""Canaries in every PHI field, found from the model's declaration.

The walk the PHI tests share (``tests/test_phi_canary.py``, ``tests/storage/test_tracebacks.py``):
:func:`plant` puts a canary in every field declared PHI (``phi`` in the attrs field's metadata,
as :func:`referralkit.model.phi_fields` reads it) of a model value, at every depth, found by
reading the classes and their annotations, never listed by hand. A new PHI field gets its
canary without touching the tests; one whose type the walk cannot fill fails loudly.

Each text canary names its field (``CANARY-Patient-mrn``); every one shares the prefix
``CANARY``. A PHI date is :data:`PLANTED_DATE`, outside the dates the strategies draw, and a
PHI flag is set. :data:`PLANTED_NEEDLES` is what a scan searches for.
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from referralkit import Code, CodeSystem, ContactPoint, ContactSystem

# outside the dates the strategies draw (1900 to 2040), so a generated date never matches
PLANTED_DATE = dt.date(1899, 2, 3)

# every text canary shares the prefix; the date shows in ISO form or as a date's repr; a flag
# (pregnancy) shows set in a repr, a dict or JSON
PLANTED_NEEDLES = (
    "CANARY",
    "1899-02-03",
    "date(1899, 2, 3)",
    "pregnant=True",
    "'pregnant': True",
    '"pregnant": true',
    '"pregnant":true',
)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of each field of ``cls``."""
    return typing.get_type_hints(cls)


def type_parts(annotation: Any) -> Iterator[Any]:
    """The types an annotation is made of (``tuple[Code, ...] | None`` gives Code, None)."""
    args = typing.get_args(annotation)
    if not args:
        yield annotation
        return
    for arg in args:
        if arg is not Ellipsis:
            yield from type_parts(arg)


def canary(cls: type, name: str) -> str:
    """The canary text planted in ``cls.name``."""
    return f"CANARY-{cls.__name__}-{name}"


def plant(value: Any) -> Any:
    """``value`` with a canary in every PHI field, at every depth (tuples walked, attrs
    values rebuilt with :func:`attrs.evolve`, so the model's validators accept each one)."""
    if isinstance(value, tuple):
        return tuple(plant(item) for item in value)
    if not attrs.has(type(value)):
        return value
    cls = type(value)
    hints = field_types(cls)
    changes: dict[str, Any] = {}
    for field in attrs.fields(cls):
        current = getattr(value, field.name)
        if field.metadata.get("phi"):
            changes[field.name] = _canary_value(cls, field.name, hints[field.name], current)
        else:
            planted = plant(current)
            if planted is not current:
                changes[field.name] = planted
    return attrs.evolve(value, **changes) if changes else value


# The item a PHI tuple gets when it is empty, so that there is somewhere to plant.
_ITEMS: dict[type, Callable[[], Any]] = {
    ContactPoint: lambda: ContactPoint(ContactSystem.PHONE, "x"),
    Code: lambda: Code(CodeSystem.ICD10CM, "x"),
}


def _canary_value(cls: type, name: str, annotation: Any, current: Any) -> Any:
    text = canary(cls, name)
    parts = set(type_parts(annotation))
    if annotation is bool:
        return True
    if dt.date in parts:
        return PLANTED_DATE
    if typing.get_origin(annotation) in (Mapping, dict) or annotation is Any:
        return {"note": text, "nested": [{"value": text}]}
    if str in parts and typing.get_origin(annotation) is not tuple:
        return text
    item = next(p for p in parts if p is not type(None))
    if item is str:
        return (text,)
    assert item in _ITEMS, f"no canary planting for {cls.__name__}.{name}: add one to _ITEMS"
    items = tuple(current) or (_ITEMS[item](),)
    return tuple(plant(i) for i in items)


def objects(value: Any) -> Iterator[Any]:
    """``value`` and every model object inside it."""
    if isinstance(value, tuple):
        for item in value:
            yield from objects(item)
    elif attrs.has(type(value)):
        yield value
        for field in attrs.fields(type(value)):
            yield from objects(getattr(value, field.name))
