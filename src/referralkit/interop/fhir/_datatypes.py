"""FHIR datatypes both ways: Coding, Identifier, Reference, HumanName, Period, Extension and
the ``urn:uuid`` fullUrls of a written Bundle."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final
from urllib.parse import quote

from ...model import Code
from ._codesystems import _SID, V2_0203
from ._json import JSON, _build, _Node

# --------------------------------------------------------------------------- writing


def _instant(value: dt.datetime) -> str:
    return value.isoformat()


def _coding(code: Code) -> JSON:
    out: JSON = {"system": code.system, "code": code.code}
    if code.display is not None:
        out["display"] = code.display
    return out


def _identifier(system: str, value: str) -> JSON:
    return {"system": system, "value": value}


def _ext(url: str, kind: str, value: Any) -> JSON:
    return {"url": url, f"value{kind}": value}


def _complex(url: str, parts: Iterable[JSON]) -> JSON:
    return {"url": url, "extension": list(parts)}


def _period(start: dt.date | None, end: dt.date | None) -> JSON:
    out: JSON = {}
    if start is not None:
        out["start"] = start.isoformat()
    if end is not None:
        out["end"] = end.isoformat()
    return out


def _ref(url: str) -> JSON:
    return {"reference": url}


def _entry(url: str, resource: JSON) -> JSON:
    """A transaction entry: a create, conditional on referralkit's identifier when it has one
    (so sending the same Bundle twice creates nothing new)."""
    request: JSON = {"method": "POST", "url": resource["resourceType"]}
    for identifier in resource.get("identifier", ()):
        system = identifier.get("system", "")
        if system.startswith(_SID):
            request["ifNoneExist"] = (
                f"identifier={quote(system, safe='')}|{quote(identifier['value'], safe='')}"
            )
            break
    return {"fullUrl": url, "resource": resource, "request": request}


class _Urls:
    """The ``urn:uuid`` fullUrls of one referral's resources: stable for a referral id."""

    __slots__ = ("_prefix", "patient", "sr", "task")

    def __init__(self, referral_id: str) -> None:
        self._prefix = referral_id
        self.sr = self("ServiceRequest")
        self.task = self("Task")
        self.patient = self("Patient")

    def __call__(self, *parts: str) -> str:
        name = "/".join((self._prefix, *parts))
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, name)}"


_NAMESPACE: Final = uuid.UUID("5b0f4a2e-6c1d-5e9a-9c84-3f1f6a7d2b10")


# --------------------------------------------------------------------------- reading


def _code(coding: _Node) -> Code | None:
    """A coding as a :class:`Code`; unknown systems are kept. ``None`` when it has no code or
    no system (a code without its system means nothing certain)."""
    code = coding.text("code")
    system = coding.text("system")
    if code is None or system is None:
        return None
    return _build(
        coding.path,
        Code,
        system=system,
        code=code,
        display=coding.text("display"),
    )


def _codes(concept: _Node | None) -> Iterator[Code | None]:
    if concept is None:
        return
    for coding in concept.objs("coding"):
        yield _code(coding)


def _firsts(node: _Node) -> dict[str, _Node]:
    """The first sub-extension of each url."""
    return {url: found[0] for url, found in node.parts().items()}


def _identifier_value(resource: _Node, system: str) -> str | None:
    for identifier in resource.objs("identifier"):
        if identifier.data.get("system") == system:
            return identifier.text("value")
    return None


def _typed_identifier(resource: _Node, code: str) -> str | None:
    for identifier in resource.objs("identifier"):
        kind = identifier.obj("type")
        if kind is not None and kind.code_in(V2_0203) == code:
            return identifier.text("value")
    return None


def _local_id(resource: _Node, system: str) -> str | None:
    """referralkit's id of ``resource``: our identifier, else the resource id."""
    return _identifier_value(resource, system) or resource.text("id")


def _need_id(resource: _Node, system: str, what: str) -> str:
    """referralkit's id of ``resource`` (:func:`_local_id`), or a refusal naming ``what``."""
    found = _local_id(resource, system)
    if found is None:
        raise resource.error("identifier", f"no {what} identifier and no resource id")
    return found


def _ref_tail(ref: _Node) -> str | None:
    target = ref.text("reference")
    if target is None:
        return None
    tail = target.split("/_history/")[0].rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def _ref_type(ref: _Node) -> str | None:
    """The resource type a literal reference names (``Practitioner/7`` -> ``Practitioner``)."""
    parts = (ref.text("reference") or "").split("/_history/")[0].split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2][:1].isupper() else None


def _display_or_name(ref: _Node | None, resolved: _Node | None) -> str | None:
    if resolved is not None:
        name = _person_name(resolved)
        if name is not None:
            return name
    return ref.text("display") if ref is not None else None


def _person_name(resource: _Node) -> str | None:
    name = resource.data.get("name")
    if isinstance(name, str):
        return resource.text("name")
    names = resource.objs("name")
    if not names:
        return None
    human = _current_name(names)
    text = human.text("text")
    if text is not None:
        return text
    parts = [*human.strs("prefix"), *human.strs("given")]
    family = human.text("family")
    if family is not None:
        parts.append(family)
    return " ".join(parts) or None


def _current_name(names: list[_Node]) -> _Node:
    """The name in use: not ended, official before usual before any."""
    current = [n for n in names if (n.obj("period") is None or n.obj("period").text("end") is None)]  # type: ignore[union-attr]
    pool = current or names
    for use in ("official", "usual"):
        for name in pool:
            if name.data.get("use") == use:
                return name
    return pool[0]
