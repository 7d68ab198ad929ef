"""Validation against the FHIR R4B models of ``fhir.resources`` (the ``fhir`` extra)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._json import FhirError


def validate(resource: Mapping[str, Any]) -> None:
    """Check ``resource`` (a Bundle or any resource) against the FHIR R4B models of
    ``fhir.resources``; raise :class:`FhirError` naming the first invalid element.

    Needs the ``fhir`` extra: ``pip install "referralkit[fhir]"`` from a package index,
    ``pip install ".[fhir]"`` in a checkout of referralkit.
    """
    try:
        import pydantic
        from fhir.resources.R4B import get_fhir_model_class
    except ImportError as exc:  # pragma: no cover - the test environment has the extra
        raise ImportError(
            "FHIR validation needs the fhir extra: pip install 'referralkit[fhir]' "
            "(from a checkout: pip install '.[fhir]')"
        ) from exc
    if not isinstance(resource, Mapping):
        raise FhirError("", "expected a JSON object")
    kind = resource.get("resourceType")
    try:
        model = get_fhir_model_class(kind) if isinstance(kind, str) else None
    except (KeyError, ValueError):
        model = None
    if model is None:
        raise FhirError("resourceType", "not a FHIR R4B resource type")
    # The refusal is raised after the handlers, not inside them: pydantic's error holds the
    # input (PHI), and an exception raised in a handler keeps it as __context__ even "from
    # None", where error reporters (and traceback.format_exception) still find it.
    failure: tuple[str, str] | None = None
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        loc = list(error["loc"])
        reason = f"does not validate as FHIR R4B ({error['type']})"
        if error["type"] == "extra_forbidden":  # the element's name is input: do not repeat it
            loc, reason = loc[:-1], "has an element FHIR R4B does not define"
        failure = (_json_path(loc), reason)
    except Exception as exc:  # fhir.resources' own lookups (an unknown nested resourceType)
        failure = ("", f"does not validate as FHIR R4B ({type(exc).__name__})")
    if failure is not None:
        raise FhirError(*failure)


def _validate(resource: Mapping[str, Any]) -> None:
    validate(resource)


def _json_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier():
            path += f".{part}" if path else part
        else:  # pydantic's own labels ("function-after[...]"): not a JSON element
            continue
    return path
