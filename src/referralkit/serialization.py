"""JSON-compatible dictionaries from and to the model, with a cattrs converter.

:func:`to_dict` turns any model value into plain ``dict``/``list``/``str``/``int``/``float``/
``bool``/``None`` (datetimes and dates as ISO 8601 strings); :func:`from_dict` turns such data
back into the type, raising :class:`~referralkit.errors.ValidationError` with a path such as
``patient.birth_date`` or ``diagnoses[1].code``. Error messages never repeat an input value:
the input may be PHI.

>>> from referralkit.model import Code
>>> to_dict(Code.cpt("99204"))
{'system': 'http://www.ama-assn.org/go/cpt', 'code': '99204', 'display': None}
>>> from_dict(Code, {"system": "http://snomed.info/sct", "code": "183521005"}).code
'183521005'
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import types
import typing
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from types import NoneType
from typing import Any, Final, TypeVar

import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.fns import identity

from . import model
from ._redaction import boundary
from ._validators import JsonObject
from .errors import ValidationError

__all__ = ["converter", "from_dict", "to_dict"]

T = TypeVar("T")

converter = cattrs.Converter(
    forbid_extra_keys=True,
    detailed_validation=True,
    # JSON has no sets: they become sorted lists, so dumps are stable
    unstruct_collection_overrides={AbstractSet: sorted},
)
"""The cattrs converter for every model type."""


def _structure_datetime(value: Any, _: type) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise ValidationError("", "expected an ISO 8601 datetime string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None:  # raised outside the handler: the ValueError quotes the input
        raise ValidationError("", "expected an ISO 8601 datetime string")
    # an offset other than UTC is the same instant; a naive time is refused by the model
    return parsed.astimezone(dt.UTC) if parsed.tzinfo is not None else parsed


def _structure_date(value: Any, _: type) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise ValidationError("", "expected an ISO 8601 date string")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        pass
    # raised outside the handler: the ValueError quotes the input, which may be PHI
    raise ValidationError("", "expected an ISO 8601 date string")


def _strict(kind: type, description: str) -> Any:
    """A structure hook that refuses other JSON types instead of converting them
    (cattrs would turn ``"false"`` into ``True`` and ``7.9`` into ``7``)."""

    def hook(value: Any, _: type) -> Any:
        if type(value) is kind:  # the common case first
            return value
        if isinstance(value, bool) and kind is not bool:
            raise ValidationError("", f"expected {description}")
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise ValidationError("", f"expected {description}")
        return value

    return hook


_STRICT: Final = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}

for _kind, _description in _STRICT.items():
    converter.register_structure_hook(_kind, _strict(_kind, _description))


def _enum_hook(kind: type[enum.StrEnum]) -> Callable[[Any, type], Any]:
    """The structure hook of one enum, built once: its members by value and its messages are
    worked out here, not at every read of a field."""
    members: dict[str, Any] = {m.value: m for m in kind}
    allowed = ", ".join(members)

    def hook(value: Any, _: type) -> Any:
        if not isinstance(value, str):
            raise ValidationError("", f"expected one of {allowed}")
        found = members.get(value)
        if found is None:
            # not kind(value): enum's ValueError quotes the input
            raise ValidationError("", f"not one of {allowed}")
        return found

    return hook


@functools.cache
def _enum_hook_of(kind: type[enum.StrEnum]) -> Callable[[Any, type], Any]:
    return _enum_hook(kind)


def _structure_enum(value: Any, kind: type[enum.StrEnum]) -> Any:
    # registered for StrEnum, which singledispatch prefers over the strict ``str`` hook; the
    # model's enums have hooks of their own (below), this serves any other StrEnum
    return _enum_hook_of(kind)(value, kind)


converter.register_structure_hook(enum.StrEnum, _structure_enum)
for _enum in vars(model).values():
    if isinstance(_enum, type) and issubclass(_enum, enum.StrEnum) and _enum is not enum.StrEnum:
        # singledispatch prefers a class's own hook to the StrEnum one
        converter.register_structure_hook(_enum, _enum_hook(_enum))


def _optional_of(union: Any) -> Any:
    """``X`` of ``X | None`` (``Optional[X]``), or ``None`` when ``union`` is not such."""
    if typing.get_origin(union) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in union.__args__ if a is not NoneType]
    return args[0] if len(args) == 1 and len(union.__args__) == 2 else None


def _optional_hook(union: Any) -> Callable[[Any, type], Any]:
    """``X | None`` with ``X``'s hook found once (cattrs looks it up at every read)."""
    inner_type = _optional_of(union)
    inner = converter.get_structure_hook(inner_type)

    def hook(value: Any, _: type) -> Any:
        return None if value is None else inner(value, inner_type)

    return hook


def _homogeneous(kind: Any) -> bool:
    args = getattr(kind, "__args__", None)
    return (
        getattr(kind, "__origin__", None) is tuple
        and args is not None
        and len(args) == 2
        and args[1] is Ellipsis
        and args[0] is not Any
    )


def _tuple_hook(kind: Any) -> Callable[[Any, type], Any]:
    """``tuple[X, ...]`` with ``X``'s hook found once; a bad item is named by its index, as
    cattrs names it."""
    item_type = kind.__args__[0]
    item = converter.get_structure_hook(item_type)

    def hook(value: Any, _: type) -> Any:
        items: list[Any] = []
        errors: list[Exception] = []
        for index, e in enumerate(value):
            try:
                items.append(item(e, item_type))
            except Exception as exc:
                note = IterableValidationNote(
                    f"Structuring {kind} @ index {index}", index, item_type
                )
                exc.__notes__ = [*getattr(exc, "__notes__", []), note]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {kind!r}", errors, kind)
        return tuple(items)

    return hook


converter.register_structure_hook_factory(lambda t: _optional_of(t) is not None, _optional_hook)
converter.register_structure_hook_factory(_homogeneous, _tuple_hook)


def _structure_payload(value: Any, _: type) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("", "expected a JSON object")
    # a payload the library checked already keeps its mark (see JsonObject)
    return value if type(value) is JsonObject else dict(value)


# StrEnum members are str instances; without this cattrs passes them through as members
converter.register_unstructure_hook(enum.StrEnum, lambda e: e.value)
converter.register_unstructure_hook(
    frozenset, lambda s: sorted(converter.unstructure(v) for v in s)
)
converter.register_unstructure_hook(dt.datetime, lambda d: d.isoformat())
converter.register_structure_hook(dt.datetime, _structure_datetime)
converter.register_unstructure_hook(dt.date, lambda d: d.isoformat())
converter.register_structure_hook(dt.date, _structure_date)
converter.register_structure_hook_func(lambda t: t == Mapping[str, Any], _structure_payload)


def _unstructure_optional(union: Any) -> Callable[[Any], Any]:
    """``X | None`` where ``X`` is written as it is (text, a number, a flag): cattrs'
    ``identity``, which the generated class functions then inline (the default is a call
    per value that only passes it on: a third of a referral's ``to_dict``)."""
    inner = converter.get_unstructure_hook(_optional_of(union))
    if inner is identity:
        return identity

    def hook(value: Any) -> Any:
        return None if value is None else inner(value)

    return hook


def _unstructure_tuple(kind: Any) -> Callable[[Any], Any]:
    """``tuple[X, ...]`` as a list, with ``X``'s hook found once (cattrs' default builds the
    list from a generator: the same list, slower)."""
    item = converter.get_unstructure_hook(kind.__args__[0])
    if item is identity:
        return list

    def hook(value: Any) -> Any:
        return [item(one) for one in value]

    return hook


converter.register_unstructure_hook_factory(
    lambda t: _optional_of(t) is not None, _unstructure_optional
)
converter.register_unstructure_hook_factory(_homogeneous, _unstructure_tuple)


def to_dict(value: Any) -> Any:
    """``value`` as JSON-compatible data."""
    return converter.unstructure(value)


@boundary
def from_dict(cls: type[T], data: Any) -> T:
    """Build a ``cls`` from JSON-compatible ``data``.

    Raises :class:`~referralkit.errors.ValidationError` naming the first bad field, with a
    traceback that holds neither ``data`` nor cattrs' frames (see
    :doc:`/explanation`).
    """
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # cattrs raises many kinds; each becomes one typed error
        error = _first_error(exc, "")
    # raised outside the handler: neither __context__ nor the members of cattrs' exception
    # group (which can quote the input) travel with the error
    raise error


def _join(path: str, step: str) -> str:
    if step.startswith("["):
        return path + step
    return f"{path}.{step}" if path else step


def _first_error(exc: BaseException, path: str) -> ValidationError:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for inner in exc.exceptions:
            step = ""
            for note in getattr(inner, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    step = note.name
                elif isinstance(note, IterableValidationNote):
                    step = f"[{note.index}]"
            return _first_error(inner, _join(path, step) if step else path)
    if isinstance(exc, ValidationError):
        return ValidationError(_join(path, exc.path) if exc.path else path, exc.reason)
    if isinstance(exc, KeyError):
        return ValidationError(path, "required field is missing")
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(sorted(exc.extra_fields))
        return ValidationError(path, f"unknown field(s): {keys}")
    if isinstance(exc, ValueError) and "is not a valid" in str(exc):
        return ValidationError(path, "not one of the allowed values")
    if isinstance(exc, TypeError | AttributeError):
        return ValidationError(path, "expected a JSON object or list of the right shape")
    return ValidationError(path, f"invalid value ({type(exc).__name__})")
