"""FHIR datatypes both ways: Coding, Identifier, Reference, HumanName, Period, Extension and
the ``urn:uuid`` fullUrls of a written Bundle."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
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
    identifiers = resource.get("identifier", ())
    # a list on most resources, one Identifier on some (QuestionnaireResponse in R4)
    for identifier in [identifiers] if isinstance(identifiers, dict) else identifiers:
        system = identifier.get("system", "")
        if system.startswith(_SID):
            request["ifNoneExist"] = (
                f"identifier={_quoted_system(system)}|{_quoted(identifier['value'])}"
            )
            break
    return {"fullUrl": url, "resource": resource, "request": request}


_UNRESERVED: Final = re.compile(r"[A-Za-z0-9_.~-]*")
"""Text ``quote(text, safe="")`` leaves as it is (RFC 3986's unreserved characters)."""


def _quoted(value: str) -> str:
    """``quote(value, safe="")``, without its work for the ids that need no quoting (and
    once for those that do and recur: organisation names, role ids)."""
    return value if _UNRESERVED.fullmatch(value) else _quoted_system(value)


@functools.lru_cache(maxsize=1024)
def _quoted_system(system: str) -> str:
    """``quote(system, safe="")`` of an identifier system or a recurring value (a few,
    each quoted once)."""
    return quote(system, safe="")


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))``: the same digest and version bits, without
    building a :class:`uuid.UUID` (a Bundle names a dozen or more resources): the namespace
    hashed once, the version and variant set on the hex text."""
    digest = _NAMESPACE_SHA1.copy()
    digest.update(name.encode())
    text = digest.hexdigest()
    # version 5 (the 13th digit) and the RFC 4122 variant (the top bits of the 17th)
    return f"{text[:8]}-{text[8:12]}-5{text[13:16]}-{_VARIANT[text[16]]}{text[17:20]}-{text[20:32]}"


_VARIANT: Final = {f"{n:x}": f"{n & 0x3 | 0x8:x}" for n in range(16)}
"""A hex digit with its top two bits set to ``10`` (the RFC 4122 variant)."""


class _Urls:
    """The ``urn:uuid`` fullUrls of one referral's resources: stable for a referral id."""

    __slots__ = ("_prefix", "patient", "sr", "task")

    def __init__(self, referral_id: str) -> None:
        self._prefix = referral_id
        self.sr = self("ServiceRequest")
        self.task = self("Task")
        self.patient = self("Patient")

    def __call__(self, *parts: str) -> str:
        return f"urn:uuid:{_uuid5('/'.join((self._prefix, *parts)))}"


_NAMESPACE: Final = uuid.UUID("5b0f4a2e-6c1d-5e9a-9c84-3f1f6a7d2b10")
_NAMESPACE_BYTES: Final = _NAMESPACE.bytes
_NAMESPACE_SHA1: Final = hashlib.sha1(_NAMESPACE_BYTES, usedforsecurity=False)


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


# Where an identifier's type says MR (v2 table 0203): HL7's system, under its current URL and
# the two older ones EHRs still send; or, as Epic labels them, a type with only a text.
_V2_0203_SYSTEMS: Final = frozenset(
    {V2_0203, "http://hl7.org/fhir/v2/0203", "urn:oid:2.16.840.1.113883.18.108"}
)


def _typed_identifier(resource: _Node, code: str, *texts: str) -> str | None:
    """The value of the first identifier whose type is ``code`` (v2 table 0203, in any of its
    systems) or, without a coded type, whose type's text is one of ``texts``."""
    found = _typed_identifier_node(resource, code, *texts)
    return found.text("value") if found is not None else None


def _typed_identifier_node(resource: _Node, code: str, *texts: str) -> _Node | None:
    """The first identifier with a value whose type is ``code`` (see :func:`_typed_identifier`)."""
    for identifier in resource.objs("identifier"):
        kind = identifier.obj("type")
        if kind is None:
            continue
        codes = {
            c.text("code") for c in kind.objs("coding") if c.data.get("system") in _V2_0203_SYSTEMS
        }
        label = (kind.text("text") or "").strip().upper()
        if (code in codes or (not codes and label in texts)) and identifier.text("value"):
            return identifier
    return None


def _local_id(resource: _Node, system: str) -> str | None:
    """referralkit's id of ``resource``: our identifier, else the resource id, else the id its
    Bundle entry's fullUrl gives (a ``urn:uuid:``'s UUID, a URL's last segment)."""
    return _identifier_value(resource, system) or resource.text("id") or _url_id(resource)


def _url_id(resource: _Node) -> str | None:
    url = resource.full_url
    if url is None:
        return None
    for scheme in ("urn:uuid:", "urn:oid:"):
        if url.startswith(scheme):
            return url[len(scheme) :] or None
    tail = url.split("/_history/")[0].rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def _business_id(resource: _Node, *elements: str) -> str | None:
    """An id derived from the first business identifier of ``resource`` (or from one of the
    string ``elements``, such as Coverage.subscriberId): a UUID-5 of its system and value, so
    that the same identifier gives the same id and the id does not show the value (an MRN or
    a member id is PHI)."""
    for identifier in resource.objs("identifier"):
        value = identifier.text("value")
        if value is not None:
            return str(uuid.uuid5(_IDS, f"{resource.type}|{identifier.string('system')}|{value}"))
    for element in elements:
        value = resource.text(element)
        if value is not None:
            return str(uuid.uuid5(_IDS, f"{resource.type}|{element}|{value}"))
    return None


_IDS: Final = uuid.UUID("8c1d3f52-0a4e-5b7c-9d21-6e0f4b3a7c58")


def _need_id(resource: _Node, system: str, what: str, *elements: str) -> str:
    """referralkit's id of ``resource``: :func:`_local_id`, else :func:`_business_id`; a
    refusal naming ``what`` when nothing identifies it."""
    found = _local_id(resource, system) or _business_id(resource, *elements)
    if found is None:
        raise resource.error(
            "identifier", f"nothing identifies the {what}: no identifier, no id, no fullUrl"
        )
    return found


def _display_id(kind: str, display: str) -> str:
    """The id of a party known only by its display name (a UUID-5 of it: stable)."""
    return str(uuid.uuid5(_IDS, f"{kind}|display|{display}"))


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
