"""Reading FHIR JSON: a :class:`_Node` is a JSON object and its path, whose typed getters refuse
a wrong value with a :class:`FhirError` at that path (never repeating the value: it may be
PHI); :func:`_build` moves the model's own validation errors to the same path."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

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

    __slots__ = ("container", "data", "full_url", "path")

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path
        self.container: _Node | None = None  # the resource holding this one in ``contained``
        self.full_url: str | None = None  # the Bundle entry's fullUrl, for a resource

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
            raise self.error(
                key,
                "expected a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss "
                "with a UTC offset)",
            )
        return parsed

    def date(self, key: str) -> dt.date | None:
        value = self.text(key)
        if value is None:
            return None
        # a dateTime counts by its own calendar day, whatever its offset
        match = _DATETIME.fullmatch(value)
        if match is not None and match["day"] is not None:
            try:
                return dt.date(int(match["year"]), int(match["month"]), int(match["day"]))
            except ValueError:  # 30 February
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


# FHIR R4 dateTime (and instant): a year, a year-month, a date, or a date and a time to the
# second with a fraction and a mandatory offset ("If hours and minutes are specified, a time
# zone SHALL be populated", datatypes.html#dateTime). Basic ISO forms (20261102T142000Z), week
# dates (2026-W45-1) and times without offset are not FHIR, though fromisoformat reads them.
_DATETIME: Final = re.compile(
    r"(?P<year>[0-9]{4})(?:-(?P<month>0[1-9]|1[0-2])(?:-(?P<day>0[1-9]|[12][0-9]|3[01])"
    r"(?:T(?P<time>(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])(?P<fraction>\.[0-9]{1,9})?"
    r"(?P<offset>Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00))?)?)?",
    re.ASCII,
)


def _parse_datetime(value: str) -> dt.datetime | None:
    """A FHIR dateTime / instant / date as a UTC datetime (dates at midnight UTC); ``None``
    when ``value`` is not one (or names a day or an instant that does not exist)."""
    match = _DATETIME.fullmatch(value)
    if match is None:
        return None
    year, month, day = match["year"], match["month"], match["day"]
    try:
        if match["time"] is None:
            return dt.datetime(int(year), int(month or 1), int(day or 1), tzinfo=dt.UTC)
        # Python keeps microseconds: a finer fraction is cut, not rounded (no day rollover)
        fraction = (match["fraction"] or "")[:7]
        offset = "+00:00" if match["offset"] == "Z" else match["offset"]
        parsed = dt.datetime.fromisoformat(
            f"{year}-{month}-{day}T{match['time']}{fraction}{offset}"
        )
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # 30 February; an offset past year 1 or 9999
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
    # the refusal is raised outside the ``except`` block, so that it has no context: the
    # model's error may hold the value (PHI), and error reporters show chained exceptions
    refusal: FhirError | None = None
    try:
        return cls(**fields)
    except ValidationError as exc:
        reason = exc.reason.split(", got ")[0]
        refusal = FhirError(path, f"{exc.path}: {reason}" if exc.path else reason)
    raise refusal


def _enum(node: _Node, key: str, kind: type[T], value: str | None) -> T | None:
    if value is None:
        return None
    try:
        return kind(value)  # type: ignore[call-arg]
    except ValueError:
        pass  # raised below, without the enum's error (it repeats the value) as its context
    names = ", ".join(str(m.value) for m in kind)  # type: ignore[attr-defined]
    raise node.error(key, f"not one of {names}")
