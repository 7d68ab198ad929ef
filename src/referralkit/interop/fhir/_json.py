"""Reading FHIR JSON: a :class:`_Node` is a JSON object and its path, whose typed getters refuse
a wrong value with a :class:`FhirError` at that path (never repeating the value: it may be
PHI); :func:`_build` moves the model's own validation errors to the same path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ...errors import ValidationError

T = TypeVar("T")
JSON = dict[str, Any]


class FhirError(ValidationError):
    """FHIR input was refused, or an export did not validate.

    ``path`` is the JSON path of the offending element, from the document's root
    (``entry[2].resource.subject``); ``reason`` says what is wrong without repeating a value.
    """


class _Node:
    """A JSON object and its path; typed getters raise :class:`FhirError` at that path."""

    __slots__ = ("container", "data", "path")

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path
        self.container: _Node | None = None  # the resource holding this one in ``contained``

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, reason: str) -> FhirError:
        return FhirError(self.at(key) if key else self.path, reason)

    @property
    def type(self) -> str | None:
        kind = self.data.get("resourceType")
        return kind if isinstance(kind, str) else None

    def obj(self, key: str) -> _Node | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, "expected a JSON object")
        return _Node(value, self.at(key))

    def objs(self, key: str) -> list[_Node]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, "expected a JSON array")
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise FhirError(f"{self.at(key)}[{index}]", "expected a JSON object")
            out.append(_Node(item, f"{self.at(key)}[{index}]"))
        return out

    def strs(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected an array of strings")
        return [v for v in value if v.strip()]

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, "expected a string")
        return value if value.strip() else None

    def string(self, key: str) -> str:
        """A string as it is, blank or not (``""`` when absent)."""
        value = self.data.get(key, "")
        if not isinstance(value, str):
            raise self.error(key, "expected a string")
        return value

    def need_text(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise self.error(key, "required, missing")
        return value

    def flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.error(key, "expected true or false")
        return value

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "expected an integer")
        return value

    def number(self, key: str) -> float | int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "expected a number")
        return value

    def datetime(self, key: str) -> dt.datetime | None:
        value = self.text(key)
        if value is None:
            return None
        parsed = _parse_datetime(value)
        if parsed is None:
            raise self.error(key, "expected a FHIR dateTime")
        return parsed

    def date(self, key: str) -> dt.date | None:
        value = self.text(key)
        if value is None:
            return None
        # a dateTime counts by its own calendar day, whatever its offset
        if len(value) == 10 or (len(value) > 10 and value[10] == "T"):
            try:
                return dt.date.fromisoformat(value[:10])
            except ValueError:
                pass
        raise self.error(key, "expected a full FHIR date (YYYY-MM-DD)")

    def extensions(self, url: str) -> list[_Node]:
        return [e for e in self.objs("extension") if e.data.get("url") == url]

    def extension(self, url: str) -> _Node | None:
        found = self.extensions(url)
        return found[0] if found else None

    def parts(self) -> dict[str, list[_Node]]:
        """The sub-extensions of this complex extension, by url."""
        out: dict[str, list[_Node]] = {}
        for part in self.objs("extension"):
            out.setdefault(str(part.data.get("url")), []).append(part)
        return out

    def any_code(self) -> str | None:
        """The code of this CodeableConcept's first coding that has one, whatever its system."""
        return next((c.text("code") for c in self.objs("coding") if c.text("code")), None)

    def code_in(self, system: str) -> str | None:
        """The code of this CodeableConcept's first coding in ``system``."""
        for coding in self.objs("coding"):
            if coding.data.get("system") == system:
                return coding.text("code")
        return None


def _parse_datetime(value: str) -> dt.datetime | None:
    """A FHIR dateTime / instant / date as a UTC datetime (dates at midnight UTC)."""
    text = value.strip()
    try:
        if len(text) == 4:
            return dt.datetime(int(text), 1, 1, tzinfo=dt.UTC)
        if len(text) == 7:
            return dt.datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
        return None


def _root(data: Any) -> _Node:
    if not isinstance(data, Mapping):
        raise FhirError("", "expected a JSON object")
    node = _Node(data, "")
    if node.type is None:
        raise FhirError("resourceType", "required, missing")
    return node


def _build(path: str, cls: Callable[..., T], **fields: Any) -> T:
    """``cls(**fields)``, with the model's validation errors moved to the JSON ``path``."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        reason = exc.reason.split(", got ")[0]
        raise FhirError(path, f"{exc.path}: {reason}" if exc.path else reason) from None


def _enum(node: _Node, key: str, kind: type[T], value: str | None) -> T | None:
    if value is None:
        return None
    try:
        return kind(value)  # type: ignore[call-arg]
    except ValueError:
        names = ", ".join(str(m.value) for m in kind)  # type: ignore[attr-defined]
        raise node.error(key, f"not one of {names}") from None
