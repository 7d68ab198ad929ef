"""Book through a FHIR R4 server: Slot search and Appointment create, or ``$find``/``$book``.

:class:`FhirScheduler` is a :class:`~referralkit.scheduling.SchedulingAdapter` over ``httpx``
(the ``scheduling`` extra: ``pip install "referralkit[scheduling]"``, or
``pip install ".[scheduling]"`` in a checkout):

- **find**: ``GET [base]/Slot?schedule.actor=<target>&status=free&start=ge..&start=lt..``,
  following the Bundle's ``next`` links until ``limit`` slots; an empty answer is told apart
  from an unknown target with ``GET [base]/Schedule?actor=<target>&_summary=count``. Where the
  server's CapabilityStatement lists the Argonaut Scheduling ``$find`` operation on
  Appointment, ``GET [base]/Appointment/$find?start=..&end=..&provider=<target>`` instead: its
  proposed Appointments are the slots.
- **book**: ``POST [base]/Appointment`` (status ``booked``, the slot, the target and the
  patient as participants, the referral's ServiceRequest in ``basedOn``) with the idempotency
  key as an identifier and ``If-None-Exist: identifier=<system>|<key>``, FHIR's conditional
  create: a retried booking finds the first one instead of making a second. Where the server
  lists ``$book``, ``POST [base]/Appointment/$book`` with the appointment as ``appt-resource``.
  ``409 Conflict`` or ``412 Precondition Failed`` is
  :class:`~referralkit.scheduling.SlotTakenError`.
- **cancel**: read the Appointment, ``PUT`` it back ``cancelled`` with ``If-Match`` on its
  version; **status**: ``GET [base]/Appointment/<id>``; **reschedule**: book the new slot,
  then cancel the old appointment.

Every request has a timeout. Reads, PUTs and the conditional create are retried on
timeouts, connection failures, 429 and 5xx (with exponential backoff, honouring
``Retry-After``); nothing else is. What still fails is a
:class:`~referralkit.scheduling.SchedulingUnavailableError` (``outcome_unknown`` when a
booking may have been made), and an answer that is not FHIR JSON is one too. The adapter keeps
no state but the server's CapabilityStatement, so a failure changes nothing on this side.

The readers :func:`slot_from_fhir` and :func:`booking_from_fhir` need no extra.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urljoin

import attrs

from ..errors import ValidationError
from ..interop.fhir import FhirError
from ..model import Referral
from ._errors import (
    SchedulingError,
    SchedulingUnavailableError,
    SlotTakenError,
    UnknownBookingError,
    UnknownTargetError,
)
from ._model import REFERENCE, Booking, BookingStatus, Slot, SlotStatus, Window

if TYPE_CHECKING:
    import httpx

__all__ = ["IDEMPOTENCY_SYSTEM", "FhirScheduler", "booking_from_fhir", "slot_from_fhir"]

IDEMPOTENCY_SYSTEM: Final = "urn:referralkit:booking-key"
"""The identifier system under which a booking's idempotency key is written."""

JSON = Mapping[str, Any]
_FHIR_JSON: Final = "application/fhir+json"
_RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_TARGET_KINDS: Final = ("PractitionerRole", "Practitioner", "HealthcareService", "Location")


# --------------------------------------------------------------------------- readers


def _instant(value: Any, path: str) -> dt.datetime:
    if not isinstance(value, str):
        raise FhirError(path, "expected an instant")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError(path, "not an instant") from None
    if parsed.tzinfo is None:
        raise FhirError(path, "an instant needs a time zone")
    return parsed.astimezone(dt.UTC)


def _ref(value: Any, path: str) -> str | None:
    if not isinstance(value, Mapping):
        return None
    reference = value.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        return None
    parts = reference.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2:
        raise FhirError(f"{path}.reference", "expected Kind/id")
    return f"{parts[-2]}/{parts[-1]}"


def slot_from_fhir(resource: JSON, *, target: str) -> Slot:
    """The :class:`~referralkit.scheduling.Slot` a FHIR ``Slot`` describes, on the schedule
    of ``target`` (a Slot names its Schedule, not whose it is).

    Raises :class:`~referralkit.interop.fhir.FhirError` naming the element when the resource
    is not a usable slot, among others one whose end is not after its start.
    """
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Slot":
        raise FhirError("resourceType", "expected a Slot")
    slot_id = resource.get("id")
    if not isinstance(slot_id, str) or not slot_id:
        raise FhirError("id", "a slot needs an id")
    status = resource.get("status")
    if status not in {s.value for s in SlotStatus}:
        raise FhirError("status", "not a SlotStatus")
    start = _instant(resource.get("start"), "start")
    end = _instant(resource.get("end"), "end")
    if end <= start:
        raise FhirError("end", "the slot has no length (its end is not after its start)")
    schedule = _ref(resource.get("schedule"), "schedule")
    overbooked = resource.get("overbooked", False)
    try:
        return Slot(
            slot_id,
            target,
            start,
            end,
            status=SlotStatus(status),
            schedule_id=schedule.split("/", 1)[1] if schedule else None,
            overbooked=overbooked is True,
        )
    except ValidationError as error:
        raise FhirError(error.path, error.reason) from None


def _slot_from_proposal(resource: JSON, target: str) -> Slot:
    """A proposed Appointment from ``$find``, as a slot (its id is the proposal's)."""
    booking = booking_from_fhir(resource)
    if booking.status is not BookingStatus.PROPOSED:
        raise FhirError("status", "a $find answer proposes appointments")
    if booking.end <= booking.start:
        raise FhirError("end", "the slot has no length (its end is not after its start)")
    return Slot(booking.id, target, booking.start, booking.end, location_id=booking.location_id)


def booking_from_fhir(resource: JSON) -> Booking:
    """The :class:`~referralkit.scheduling.Booking` a FHIR ``Appointment`` describes.

    Its target is the first participant that is a practitioner role, practitioner,
    healthcare service or location (in that order of preference); the location, the first
    Location participant; the idempotency key, the identifier in
    :data:`~referralkit.scheduling.fhir.IDEMPOTENCY_SYSTEM`; the referral, a ``basedOn``
    ServiceRequest.
    """
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Appointment":
        raise FhirError("resourceType", "expected an Appointment")
    appointment_id = resource.get("id")
    if not isinstance(appointment_id, str) or not appointment_id:
        raise FhirError("id", "an appointment needs an id")
    status = resource.get("status")
    if status not in {s.value for s in BookingStatus}:
        raise FhirError("status", "not an AppointmentStatus")
    start = _instant(resource.get("start"), "start")
    end = _instant(resource.get("end"), "end")
    actors: list[str] = []
    participants = resource.get("participant", [])
    if not isinstance(participants, list):
        raise FhirError("participant", "expected a list")
    for i, participant in enumerate(participants):
        if isinstance(participant, Mapping):
            found = _ref(participant.get("actor"), f"participant[{i}].actor")
            if found is not None:
                actors.append(found)
    targets = sorted(
        (a for a in actors if a.split("/")[0] in _TARGET_KINDS),
        key=lambda a: _TARGET_KINDS.index(a.split("/")[0]),
    )
    if not targets:
        raise FhirError("participant", "no practitioner, service or location takes part")
    locations = [a.split("/", 1)[1] for a in actors if a.startswith("Location/")]
    key = next(
        (
            item.get("value")
            for item in resource.get("identifier", []) or []
            if isinstance(item, Mapping) and item.get("system") == IDEMPOTENCY_SYSTEM
        ),
        None,
    )
    referral = next(
        (
            ref.split("/", 1)[1]
            for i, item in enumerate(resource.get("basedOn", []) or [])
            if (ref := _ref(item, f"basedOn[{i}]")) and ref.startswith("ServiceRequest/")
        ),
        None,
    )
    slots = [
        ref.split("/", 1)[1]
        for i, item in enumerate(resource.get("slot", []) or [])
        if (ref := _ref(item, f"slot[{i}]"))
    ]
    try:
        return Booking(
            appointment_id,
            targets[0],
            start,
            end,
            status=BookingStatus(status),
            slot_id=slots[0] if slots else None,
            referral_id=referral,
            idempotency_key=key if isinstance(key, str) else None,
            location_id=locations[0] if locations else None,
        )
    except ValidationError as error:
        raise FhirError(error.path, error.reason) from None


def _resources(bundle: JSON, kind: str) -> Iterator[tuple[str, JSON]]:
    entries = bundle.get("entry", []) or []
    if not isinstance(entries, list):
        raise FhirError("entry", "expected a list")
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, Mapping) and resource.get("resourceType") == kind:
            yield f"entry[{i}].resource", resource


def _next_link(bundle: JSON) -> str | None:
    for link in bundle.get("link", []) or []:
        if isinstance(link, Mapping) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) else None
    return None


# --------------------------------------------------------------------------- the adapter


@attrs.frozen
class _Capabilities:
    find: bool
    book: bool


class FhirScheduler:
    """A :class:`~referralkit.scheduling.SchedulingAdapter` for a FHIR R4 server.

    ``base_url`` is the server's FHIR base. ``client`` is an ``httpx.Client`` to use (its own
    auth, headers, TLS and transport); by default one is made with ``timeout``. ``retries``
    is how many times a retryable request is tried again, after ``backoff``, twice that, and
    so on (at most ``max_backoff``); ``sleep`` waits (tests pass a fake). ``operations``
    forces the ``$find``/``$book`` choice (None: read it from ``GET [base]/metadata`` once).
    ``patient`` gives the patient's reference on the server for a referral (by default
    ``Patient/<referral.patient.id>``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        operations: bool | None = None,
        patient: Callable[[Referral], str] | None = None,
        page_size: int = 50,
    ) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - the extra is installed for the tests
            raise SchedulingError(
                "the FHIR scheduler needs httpx: pip install 'referralkit[scheduling]' "
                "(in a checkout: pip install '.[scheduling]')"
            ) from None
        self._httpx = httpx
        self._base = base_url.rstrip("/") + "/"
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._owns_client = client is None
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._forced = operations
        self._capabilities: _Capabilities | None = None
        self._patient = patient or (lambda r: f"Patient/{r.patient.id}")
        self._page_size = page_size

    def close(self) -> None:
        """Close the HTTP client if this adapter made it."""
        if self._owns_client:
            self._client.close()

    # ------------------------------------------------------------------ HTTP

    def _url(self, path: str) -> str:
        return urljoin(self._base, path)

    def _request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        retryable: bool,
        params: Mapping[str, Any] | None = None,
        json_body: JSON | None = None,
        headers: Mapping[str, str] | None = None,
        books: bool = False,
    ) -> httpx.Response:
        """Send, retrying what may be retried; any answer but a retryable failure returns."""
        httpx = self._httpx
        sent_headers = {"Accept": _FHIR_JSON, **(headers or {})}
        body = None
        if json_body is not None:
            sent_headers["Content-Type"] = _FHIR_JSON
            body = json.dumps(json_body).encode()
        attempts = 1 + (self._retries if retryable else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._client.request(
                    method,
                    url,
                    params=params,
                    content=body,
                    headers=sent_headers,
                    timeout=self._timeout,
                )
            except httpx.TimeoutException:
                if last:
                    raise SchedulingUnavailableError(
                        f"{operation}: the scheduling server did not answer in time",
                        outcome_unknown=books,
                    ) from None
                self._wait(attempt, None)
                continue
            except httpx.TransportError as error:
                if last:
                    raise SchedulingUnavailableError(
                        f"{operation}: the scheduling server cannot be reached "
                        f"({type(error).__name__})",
                        # a connection that failed before sending books nothing
                        outcome_unknown=books and not isinstance(error, httpx.ConnectError),
                    ) from None
                self._wait(attempt, None)
                continue
            if response.status_code in _RETRY_STATUS:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                if last:
                    raise SchedulingUnavailableError(
                        f"{operation}: the scheduling server answered HTTP {response.status_code}",
                        retry_after=retry_after,
                        outcome_unknown=books and response.status_code != 429,
                        status_code=response.status_code,
                    )
                self._wait(attempt, retry_after)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self._max_backoff, self._backoff * (2**attempt))
        if retry_after is not None:
            delay = min(self._max_backoff, max(delay, retry_after))
        self._sleep(delay)

    def _json(self, response: httpx.Response, operation: str, kind: str) -> JSON:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, Mapping) or data.get("resourceType") != kind:
            raise SchedulingUnavailableError(
                f"{operation}: the scheduling server answered HTTP {response.status_code} "
                f"with something that is not a FHIR {kind}",
                status_code=response.status_code,
            )
        return data

    def _refused(self, response: httpx.Response, operation: str) -> SchedulingError:
        return SchedulingError(
            f"{operation}: the scheduling server refused the request (HTTP {response.status_code})"
        )

    # ------------------------------------------------------------------ capabilities

    def _ops(self) -> _Capabilities:
        if self._forced is not None:
            return _Capabilities(self._forced, self._forced)
        if self._capabilities is None:
            self._capabilities = self._read_capabilities()
        return self._capabilities

    def _read_capabilities(self) -> _Capabilities:
        try:
            response = self._request(
                "GET", self._url("metadata"), operation="capabilities", retryable=True
            )
            statement = (
                self._json(response, "capabilities", "CapabilityStatement")
                if response.status_code == 200
                else {}
            )
        except SchedulingError:
            # no statement: plain Slot search and Appointment create are FHIR's baseline
            return _Capabilities(False, False)
        names: set[str] = set()
        for rest in statement.get("rest", []) or []:
            if not isinstance(rest, Mapping):
                continue
            ops = list(rest.get("operation", []) or [])
            for resource in rest.get("resource", []) or []:
                if isinstance(resource, Mapping) and resource.get("type") == "Appointment":
                    ops += list(resource.get("operation", []) or [])
            names |= {
                op["name"].lstrip("$")
                for op in ops
                if isinstance(op, Mapping) and isinstance(op.get("name"), str)
            }
        return _Capabilities("find" in names, "book" in names)

    # ------------------------------------------------------------------ the port

    def find_slots(self, target: str, window: Window, *, limit: int | None = None) -> list[Slot]:
        _check_target(target)
        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise ValidationError("limit", "expected a positive integer")
        if self._ops().find:
            slots = self._find_operation(target, window)
        else:
            slots = self._search_slots(target, window, limit)
        slots = sorted(
            (s for s in slots if s.status is SlotStatus.FREE and window.contains(s.start)),
            key=lambda s: (s.start, s.id),
        )
        if not slots and not self._known(target):
            raise UnknownTargetError(target)
        return slots[:limit] if limit is not None else slots

    def _search_slots(self, target: str, window: Window, limit: int | None) -> list[Slot]:
        params: Any = [
            ("schedule.actor", target),
            ("status", "free"),
            ("start", f"ge{window.start.isoformat()}"),
            ("start", f"lt{window.end.isoformat()}"),
            ("_sort", "start"),
            ("_count", str(self._page_size if limit is None else min(limit, self._page_size))),
        ]
        url: str | None = self._url("Slot")
        found: list[Slot] = []
        while url is not None:
            response = self._request(
                "GET", url, operation="find slots", retryable=True, params=params
            )
            if response.status_code != 200:
                raise self._refused(response, "find slots")
            bundle = self._json(response, "find slots", "Bundle")
            for _, resource in _resources(bundle, "Slot"):
                try:
                    found.append(slot_from_fhir(resource, target=target))
                except FhirError:
                    continue  # not bookable (a zero-length slot, a missing time): skipped
            url, params = _next_link(bundle), None
            if limit is not None and len(found) >= limit:
                break
        return found

    def _find_operation(self, target: str, window: Window) -> list[Slot]:
        response = self._request(
            "GET",
            self._url("Appointment/$find"),
            operation="find slots",
            retryable=True,
            params={
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
                "provider": target,
            },
        )
        if response.status_code != 200:
            raise self._refused(response, "find slots")
        bundle = self._json(response, "find slots", "Bundle")
        found: list[Slot] = []
        for _, resource in _resources(bundle, "Appointment"):
            try:
                found.append(_slot_from_proposal(resource, target))
            except (FhirError, ValidationError):
                continue
        return found

    def _known(self, target: str) -> bool:
        response = self._request(
            "GET",
            self._url("Schedule"),
            operation="find slots",
            retryable=True,
            params={"actor": target, "_summary": "count"},
        )
        if response.status_code != 200:
            raise self._refused(response, "find slots")
        bundle = self._json(response, "find slots", "Bundle")
        total = bundle.get("total")
        return bool(total) if isinstance(total, int) else bool(bundle.get("entry"))

    def book(self, slot: Slot, referral: Referral, *, idempotency_key: str) -> Booking:
        return self._book(slot, referral.id, self._patient(referral), idempotency_key)

    def _book(self, slot: Slot, referral_id: str, patient: str, idempotency_key: str) -> Booking:
        key = _key(idempotency_key)
        appointment: dict[str, Any] = {
            "resourceType": "Appointment",
            "status": "booked",
            "identifier": [{"system": IDEMPOTENCY_SYSTEM, "value": key}],
            "start": slot.start.isoformat(),
            "end": slot.end.isoformat(),
            "basedOn": [{"reference": f"ServiceRequest/{referral_id}"}],
            "participant": [
                {"actor": {"reference": slot.target}, "status": "accepted"},
                {"actor": {"reference": patient}, "status": "accepted"},
            ],
        }
        if self._ops().book:
            appointment["id"] = slot.id
            response = self._request(
                "POST",
                self._url("Appointment/$book"),
                operation="book",
                retryable=True,
                books=True,
                json_body={
                    "resourceType": "Parameters",
                    "parameter": [{"name": "appt-resource", "resource": appointment}],
                },
            )
        else:
            appointment["slot"] = [{"reference": f"Slot/{slot.id}"}]
            response = self._request(
                "POST",
                self._url("Appointment"),
                operation="book",
                retryable=True,  # safe: the conditional create below finds a first attempt
                books=True,
                json_body=appointment,
                headers={
                    "If-None-Exist": f"identifier={IDEMPOTENCY_SYSTEM}|{key}",
                    "Prefer": "return=representation",
                },
            )
        if response.status_code in (409, 412):
            raise SlotTakenError(slot.id)
        if response.status_code == 404:
            raise UnknownTargetError(slot.target)
        if response.status_code not in (200, 201):
            raise self._refused(response, "book")
        data = self._json_any(response, "book", ("Appointment", "Bundle"))
        if data.get("resourceType") == "Bundle":
            booked = [r for _, r in _resources(data, "Appointment")]
            if not booked:
                raise SchedulingUnavailableError(
                    "book: the $book answer holds no appointment", outcome_unknown=True
                )
            data = booked[0]
        try:
            return booking_from_fhir(data)
        except FhirError as error:
            raise SchedulingUnavailableError(
                f"book: the server's appointment is not readable ({error.path})",
                outcome_unknown=True,
            ) from None

    def _json_any(self, response: httpx.Response, operation: str, kinds: tuple[str, ...]) -> JSON:
        for kind in kinds:
            try:
                return self._json(response, operation, kind)
            except SchedulingUnavailableError:
                continue
        raise SchedulingUnavailableError(
            f"{operation}: the scheduling server answered HTTP {response.status_code} "
            "with something that is not FHIR",
            outcome_unknown=operation == "book",
            status_code=response.status_code,
        )

    def _read(self, booking_id: str, operation: str) -> JSON:
        _check_id(booking_id)
        response = self._request(
            "GET", self._url(f"Appointment/{booking_id}"), operation=operation, retryable=True
        )
        if response.status_code in (404, 410):
            raise UnknownBookingError(booking_id)
        if response.status_code != 200:
            raise self._refused(response, operation)
        return self._json(response, operation, "Appointment")

    def status(self, booking_id: str) -> Booking:
        data = self._read(booking_id, "status")
        try:
            return booking_from_fhir(data)
        except FhirError as error:
            raise SchedulingUnavailableError(
                f"status: the server's appointment is not readable ({error.path})"
            ) from None

    def cancel(self, booking_id: str) -> Booking:
        data = dict(self._read(booking_id, "cancel"))
        if data.get("status") == "cancelled":
            return self.status(booking_id)
        data["status"] = "cancelled"
        headers = {}
        meta = data.get("meta")
        version = meta.get("versionId") if isinstance(meta, Mapping) else None
        if isinstance(version, str):
            headers["If-Match"] = f'W/"{version}"'
        response = self._request(
            "PUT",
            self._url(f"Appointment/{booking_id}"),
            operation="cancel",
            retryable=True,  # PUT is idempotent
            json_body=data,
            headers=headers,
        )
        if response.status_code in (404, 410):
            raise UnknownBookingError(booking_id)
        if response.status_code == 412:
            raise SchedulingError(
                "cancel: the appointment changed on the server meanwhile; read it again"
            )
        if response.status_code not in (200, 201):
            raise self._refused(response, "cancel")
        return self.status(booking_id)

    def reschedule(self, booking_id: str, slot: Slot, *, idempotency_key: str) -> Booking:
        old = self._read(booking_id, "reschedule")
        referral_id = None
        for item in old.get("basedOn", []) or []:
            ref = _ref(item, "basedOn")
            if ref and ref.startswith("ServiceRequest/"):
                referral_id = ref.split("/", 1)[1]
        patient = next(
            (
                ref
                for p in old.get("participant", []) or []
                if isinstance(p, Mapping)
                and (ref := _ref(p.get("actor"), "participant"))
                and ref.startswith("Patient/")
            ),
            None,
        )
        if referral_id is None or patient is None:
            raise SchedulingError("reschedule: the appointment names no referral or patient")
        new = self._book(slot, referral_id, patient, idempotency_key)
        if new.id != booking_id:
            self.cancel(booking_id)
        return new


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _key(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200 or "|" in value:
        raise ValidationError(
            "idempotency_key", "expected a non-blank string of at most 200, without '|'"
        )
    return value


def _check_target(target: object) -> None:
    if not isinstance(target, str) or not re.fullmatch(REFERENCE, target):
        raise ValidationError("target", "expected a reference Kind/id")


def _check_id(value: object) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9\-\.]{1,64}", value):
        raise ValidationError("booking_id", "expected a FHIR id")
