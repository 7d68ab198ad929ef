"""A small FHIR R4 scheduling server for tests: Schedule, Slot and Appointment in memory.

It answers what :class:`~referralkit.scheduling.fhir.FhirScheduler` asks, as a real server
would: ``GET /metadata``; Slot search by ``schedule.actor``, ``status`` and ``start``
(``ge``/``lt``), sorted, paged with ``_count`` and ``next`` links; ``Schedule?actor=`` with
``_summary=count``; conditional create of an Appointment (``If-None-Exist`` on an
identifier), which takes its slot or answers ``409 Conflict`` when the slot is busy;
``GET``/``PUT`` of an Appointment with versions (``If-Match``, ``412`` when stale), a
cancelled appointment freeing its slot; and, when ``operations=True``, the Argonaut
``Appointment/$find`` and ``$book`` operations, listed in its CapabilityStatement.

Faults are queued with :meth:`FhirTestServer.fail_next`: ``"500"``, ``"503"``, ``"429"``
(with ``Retry-After``), ``"timeout"`` (no answer; over a socket, the server waits past the
client's timeout), ``"slow"`` (answers after ``delay`` seconds), ``"malformed"`` (a 200 whose
body is not JSON), ``"taken"`` (someone else books the slot just before this request), and
``"lost"`` (the booking is made, then the answer is lost as by a timeout).

Use it in process as an ``httpx`` transport (:meth:`~FhirTestServer.transport`), or over a
real socket on 127.0.0.1 (:meth:`~FhirTestServer.serve`), which is how timeouts and slow
answers are tested. It is not a FHIR server for anything else.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..errors import ReferralKitError

__all__ = ["FhirTestServer"]

_KEY_SYSTEM = "urn:referralkit:booking-key"

Answer = tuple[int, dict[str, str], bytes]


class _NoAnswerError(ReferralKitError):
    """Raised inside the server to mean "no answer" (never leaves it)."""


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


class FhirTestServer:
    """An in-memory FHIR scheduling server (see the module). ``base`` is its FHIR base URL
    for the in-process transport; :meth:`serve` gives the socket's."""

    def __init__(self, *, operations: bool = False, base: str = "http://fhir.test/r4/") -> None:
        self.base = base
        self.operations = operations
        self.schedules: dict[str, dict[str, Any]] = {}
        self.slots: dict[str, dict[str, Any]] = {}
        self.appointments: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.delay = 0.5
        self._faults: deque[str] = deque()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._socket_timeout = 0.0

    # ------------------------------------------------------------------ content

    def add_schedule(self, schedule_id: str, actor: str) -> None:
        """A Schedule whose actor is ``actor`` (``PractitionerRole/r1``)."""
        self.schedules[schedule_id] = {
            "resourceType": "Schedule",
            "id": schedule_id,
            "active": True,
            "actor": [{"reference": actor}],
        }

    def add_slot(
        self,
        slot_id: str,
        schedule_id: str,
        start: dt.datetime,
        minutes: int = 30,
        status: str = "free",
    ) -> None:
        """A Slot on a schedule."""
        self.slots[slot_id] = {
            "resourceType": "Slot",
            "id": slot_id,
            "schedule": {"reference": f"Schedule/{schedule_id}"},
            "status": status,
            "start": start.isoformat(),
            "end": (start + dt.timedelta(minutes=minutes)).isoformat(),
        }

    def load(self, resource: Mapping[str, Any]) -> None:
        """Keep a Schedule, Slot or Appointment resource as given (public examples)."""
        table = {
            "Schedule": self.schedules,
            "Slot": self.slots,
            "Appointment": self.appointments,
        }[resource["resourceType"]]
        table[resource["id"]] = json.loads(json.dumps(resource))

    def fail_next(self, *faults: str) -> None:
        """Queue faults for the next requests, one each, in order."""
        self._faults.extend(faults)

    # ------------------------------------------------------------------ transports

    def transport(self) -> Any:
        """An ``httpx.MockTransport`` answering in process (a ``"timeout"`` fault raises
        ``httpx.ReadTimeout``, as the client would after waiting)."""
        import httpx

        def handler(request: httpx.Request) -> httpx.Response:
            try:
                status, headers, body = self.handle(
                    request.method, str(request.url), dict(request.headers), request.read()
                )
            except _NoAnswerError:
                raise httpx.ReadTimeout("no answer", request=request) from None
            return httpx.Response(status, headers=headers, content=body)

        return httpx.MockTransport(handler)

    @contextmanager
    def serve(self, *, timeout: float) -> Iterator[str]:
        """Serve over HTTP on 127.0.0.1 (a free port) while in the block; yields the base
        URL. A ``"timeout"`` fault holds the answer ``timeout`` + 1 seconds (longer than a
        client waiting ``timeout``); ``"slow"`` holds it ``delay`` seconds."""
        server_ref = self
        self._socket_timeout = timeout

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = f"http://{self.headers.get('Host')}{self.path}"
                try:
                    status, headers, content = server_ref.handle(
                        self.command, url, dict(self.headers.items()), body
                    )
                except _NoAnswerError:
                    time.sleep(server_ref._socket_timeout + 1.0)
                    return
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the client gave up waiting

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 - the names http.server calls

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/r4/"
        finally:
            httpd.shutdown()
            httpd.server_close()

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one request: ``(status, headers, body)``."""
        parts = urlsplit(url)
        path = parts.path.split("/r4/", 1)[-1].strip("/")
        query = parse_qsl(parts.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.requests.append((method, path))
            fault = self._faults.popleft() if self._faults else None
        if fault == "timeout":
            raise _NoAnswerError
        if fault == "slow":
            time.sleep(self.delay)
        if fault in ("500", "503"):
            return self._outcome(int(fault), "exception", "the server failed")
        if fault == "429":
            status, extra, content = self._outcome(429, "throttled", "too many requests")
            return status, {**extra, "Retry-After": "1"}, content
        if fault == "malformed":
            return 200, {"Content-Type": "application/fhir+json"}, b'{"resourceType": "Bun'
        with self._lock:
            if fault == "taken":
                self._take_any_slot(body)
            answer = self._route(method, path, query, headers, body)
        if fault == "lost":
            raise _NoAnswerError
        return answer

    def _route(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Answer:
        if method == "GET" and path == "metadata":
            return self._json(200, self._capability())
        if method == "GET" and path == "Slot":
            return self._search_slots(query)
        if method == "GET" and path == "Schedule":
            return self._search_schedules(query)
        if method == "GET" and path == "Appointment/$find" and self.operations:
            return self._find(query)
        if method == "POST" and path == "Appointment/$book" and self.operations:
            return self._book_operation(body)
        if method == "POST" and path == "Appointment":
            return self._create(headers, body)
        if path.startswith("Appointment/") and path.count("/") == 1:
            appointment_id = path.split("/", 1)[1]
            if method == "GET":
                found = self.appointments.get(appointment_id)
                if found is None:
                    return self._outcome(404, "not-found", "no such appointment")
                return self._json(200, found)
            if method == "PUT":
                return self._update(appointment_id, headers, body)
        return self._outcome(400, "not-supported", "not supported by the test server")

    # ------------------------------------------------------------------ handlers

    def _json(self, status: int, resource: Any, extra: Mapping[str, str] | None = None) -> Answer:
        return (
            status,
            {"Content-Type": "application/fhir+json", **(extra or {})},
            json.dumps(resource).encode(),
        )

    def _outcome(self, status: int, code: str, text: str) -> Answer:
        return self._json(
            status,
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": code, "diagnostics": text}],
            },
        )

    def _capability(self) -> dict[str, Any]:
        operations = (
            [
                {
                    "name": "find",
                    "definition": "http://fhir.org/guides/argonaut-scheduling/OperationDefinition/appointment-find",
                },
                {
                    "name": "book",
                    "definition": "http://fhir.org/guides/argonaut-scheduling/OperationDefinition/appointment-book",
                },
            ]
            if self.operations
            else []
        )
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {"type": "Slot", "interaction": [{"code": "search-type"}]},
                        {"type": "Schedule", "interaction": [{"code": "search-type"}]},
                        {
                            "type": "Appointment",
                            "interaction": [
                                {"code": c} for c in ("read", "create", "update", "search-type")
                            ],
                            "conditionalCreate": True,
                            "operation": operations,
                        },
                    ],
                }
            ],
        }

    def _actor_schedules(self, actor: str) -> set[str]:
        return {
            sid
            for sid, schedule in self.schedules.items()
            if any(a.get("reference") == actor for a in schedule.get("actor", []))
        }

    def _search_schedules(self, query: list[tuple[str, str]]) -> Answer:
        actor = dict(query).get("actor", "")
        found = sorted(self._actor_schedules(actor))
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
        }
        if dict(query).get("_summary") != "count":
            bundle["entry"] = [{"resource": self.schedules[s]} for s in found]
        return self._json(200, bundle)

    def _free_slots(
        self, actor: str, start: dt.datetime | None, end: dt.datetime | None
    ) -> list[dict[str, Any]]:
        schedules = self._actor_schedules(actor)
        found = []
        for slot in self.slots.values():
            if slot.get("status") != "free":
                continue
            if slot.get("schedule", {}).get("reference", "").split("/")[-1] not in schedules:
                continue
            begins = _instant(slot["start"])
            if (start is None or begins >= start) and (end is None or begins < end):
                found.append(slot)
        return sorted(found, key=lambda s: (_instant(s["start"]), s["id"]))

    def _search_slots(self, query: list[tuple[str, str]]) -> Answer:
        actor, start, end, status = "", None, None, None
        count, offset = 20, 0
        for name, value in query:
            if name == "schedule.actor":
                actor = value
            elif name == "status":
                status = value
            elif name == "start" and value.startswith("ge"):
                start = _instant(value[2:])
            elif name == "start" and value.startswith("lt"):
                end = _instant(value[2:])
            elif name == "_count":
                count = int(value)
            elif name == "_offset":
                offset = int(value)
        if status != "free":
            return self._outcome(400, "not-supported", "the test server searches free slots")
        found = self._free_slots(actor, start, end)
        page = found[offset : offset + count]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {
                    "fullUrl": f"{self.base}Slot/{s['id']}",
                    "resource": s,
                    "search": {"mode": "match"},
                }
                for s in page
            ],
        }
        if offset + count < len(found):
            rest = [(k, v) for k, v in query if k != "_offset"] + [("_offset", str(offset + count))]
            bundle["link"] = [{"relation": "next", "url": f"{self.base}Slot?{urlencode(rest)}"}]
        return self._json(200, bundle)

    def _find(self, query: list[tuple[str, str]]) -> Answer:
        params = dict(query)
        found = self._free_slots(
            params.get("provider", ""), _instant(params["start"]), _instant(params["end"])
        )
        actor = params.get("provider", "")
        proposals = [
            {
                "resourceType": "Appointment",
                "id": slot["id"],
                "status": "proposed",
                "start": slot["start"],
                "end": slot["end"],
                "participant": [
                    {
                        "actor": {"reference": actor},
                        "required": "required",
                        "status": "needs-action",
                    }
                ],
            }
            for slot in found
        ]
        return self._json(
            200,
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(proposals),
                "entry": [{"resource": p, "search": {"mode": "match"}} for p in proposals],
            },
        )

    def _by_key(self, resource: Mapping[str, Any]) -> dict[str, Any] | None:
        keys = {
            i.get("value") for i in resource.get("identifier", []) if i.get("system") == _KEY_SYSTEM
        }
        for appointment in self.appointments.values():
            for identifier in appointment.get("identifier", []):
                if identifier.get("system") == _KEY_SYSTEM and identifier.get("value") in keys:
                    return appointment
        return None

    def _store(self, resource: dict[str, Any], slot_id: str) -> dict[str, Any]:
        slot = self.slots.get(slot_id)
        appointment = dict(resource)
        appointment["id"] = f"appt-{next(self._ids)}"
        appointment["meta"] = {"versionId": "1"}
        appointment["slot"] = [{"reference": f"Slot/{slot_id}"}]
        if slot is not None:
            slot["status"] = "busy"
            appointment["start"], appointment["end"] = slot["start"], slot["end"]
        self.appointments[appointment["id"]] = appointment
        return appointment

    def _create(self, headers: Mapping[str, str], body: bytes) -> Answer:
        try:
            resource = json.loads(body)
        except ValueError:
            return self._outcome(400, "structure", "not JSON")
        condition = headers.get("if-none-exist", "")
        if condition.startswith("identifier="):
            system, _, value = condition[len("identifier=") :].partition("|")
            for appointment in self.appointments.values():
                if {"system": system, "value": value} in [
                    {"system": i.get("system"), "value": i.get("value")}
                    for i in appointment.get("identifier", [])
                ]:
                    return self._json(200, appointment)
        slots = [s["reference"].split("/")[-1] for s in resource.get("slot", [])]
        if not slots or slots[0] not in self.slots:
            return self._outcome(422, "business-rule", "the appointment names no known slot")
        if self.slots[slots[0]]["status"] != "free":
            return self._outcome(409, "conflict", "the slot is not free")
        appointment = self._store(resource, slots[0])
        return self._json(
            201, appointment, {"Location": f"{self.base}Appointment/{appointment['id']}/_history/1"}
        )

    def _book_operation(self, body: bytes) -> Answer:
        parameters = json.loads(body)
        resource = next(
            p["resource"]
            for p in parameters.get("parameter", [])
            if p.get("name") == "appt-resource"
        )
        existing = self._by_key(resource)
        if existing is None:
            slot_id = resource.get("id", "")
            if slot_id not in self.slots:
                return self._outcome(422, "business-rule", "no such proposal")
            if self.slots[slot_id]["status"] != "free":
                return self._outcome(409, "conflict", "the slot is not free")
            existing = self._store({k: v for k, v in resource.items() if k != "id"}, slot_id)
        return self._json(
            200,
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": 1,
                "entry": [{"resource": existing, "search": {"mode": "match"}}],
            },
        )

    def _update(self, appointment_id: str, headers: Mapping[str, str], body: bytes) -> Answer:
        current = self.appointments.get(appointment_id)
        if current is None:
            return self._outcome(404, "not-found", "no such appointment")
        version = current.get("meta", {}).get("versionId", "1")
        expected = headers.get("if-match")
        if expected is not None and expected != f'W/"{version}"':
            return self._outcome(412, "conflict", "the appointment changed")
        resource = json.loads(body)
        resource["id"] = appointment_id
        resource["meta"] = {"versionId": str(int(version) + 1)}
        if resource.get("status") == "cancelled":
            for ref in current.get("slot", []):
                slot = self.slots.get(ref["reference"].split("/")[-1])
                if slot is not None:
                    slot["status"] = "free"
        self.appointments[appointment_id] = resource
        return self._json(200, resource)

    def _take_any_slot(self, body: bytes) -> None:
        """Someone else books the slot this request is about, just before it arrives."""
        try:
            resource = json.loads(body) if body else {}
        except ValueError:
            return
        if resource.get("resourceType") == "Parameters":
            resource = resource["parameter"][0]["resource"]
            slot_ids = [resource.get("id", "")]
        else:
            slot_ids = [s["reference"].split("/")[-1] for s in resource.get("slot", [])]
        for slot_id in slot_ids:
            if slot_id in self.slots and self.slots[slot_id]["status"] == "free":
                self._store(
                    {
                        "resourceType": "Appointment",
                        "status": "booked",
                        "participant": [{"actor": {"reference": "Patient/someone-else"}}],
                    },
                    slot_id,
                )
