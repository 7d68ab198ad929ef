"""FHIR R4 import and export: a referral as a Bundle, and back.

:func:`to_fhir` writes a :class:`~referralkit.model.Referral` as a FHIR R4 ``transaction``
Bundle (a JSON-ready ``dict``): the ServiceRequest (the referral itself), the Task that tracks
it through the lifecycle (HL7 BSeR ``businessStatus``), the Patient, the Coverage, the
referring and target Practitioner / PractitionerRole / Organization, a ClaimResponse for the
prior authorization, and the Appointments, DocumentReferences, Communications, follow-up
Tasks and satisfaction survey answers (QuestionnaireResponse). :func:`from_fhir` reads such a
Bundle back, and reads what EHRs send: missing optional elements, references by ``urn:uuid``
fullUrl, by relative ``Type/id`` or to a contained resource, extensions it does not know
(ignored) and codes in systems it does not know (kept).

For every referral, ``from_fhir(to_fhir(r)) == r``: what FHIR has no element for (the
referralkit identifiers, the rules behind a decision, the urgency score) travels in the
extensions and code systems under :data:`BASE_URL`. The :doc:`/howto-fhir` guide has the
field-by-field mapping.

Input that cannot be a referral is refused with a :class:`FhirError` whose ``path`` is the
JSON path of the offending element (``entry[2].resource.birthDate``). Nothing is half
imported, and messages never repeat an input value: it may be PHI.

>>> from referralkit.testing import sample_request
>>> import datetime as dt
>>> referral = sample_request().referral("r-1", dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
>>> bundle = to_fhir(referral)
>>> [e["resource"]["resourceType"] for e in bundle["entry"]][:3]
['ServiceRequest', 'Task', 'Patient']
>>> from_fhir(bundle) == referral
True

Validation against the FHIR R4B models of ``fhir.resources`` (the ``fhir`` extra) is
:func:`validate`, or ``to_fhir(referral, validate=True)``.
"""

from __future__ import annotations

from typing import Final

from . import _codesystems, _surveys
from ._json import FhirError
from ._limits import FhirLimitError, Limits, loads, read_ndjson
from ._reading import Part as _Part
from ._reading import from_fhir, intake_from_fhir, part_from_fhir
from ._surveys import questionnaire_response
from ._validation import validate
from ._writing import to_fhir

__all__ = [
    "BASE_URL",
    "SATISFACTION_QUESTIONNAIRE",
    "UNSPECIFIED",
    "FhirError",
    "FhirLimitError",
    "Limits",
    "Part",
    "from_fhir",
    "intake_from_fhir",
    "loads",
    "part_from_fhir",
    "questionnaire_response",
    "read_ndjson",
    "to_fhir",
    "validate",
]

BASE_URL: Final = _codesystems.BASE_URL
"""Where referralkit's own identifier systems, code systems and extensions live."""

SATISFACTION_QUESTIONNAIRE: Final = _surveys.SATISFACTION_QUESTIONNAIRE
"""The canonical URL of referralkit's patient satisfaction questionnaire, which survey
answers (:class:`~referralkit.model.SurveyResponse`) are QuestionnaireResponses to: item
``score`` (1-5) and item ``comment``."""

UNSPECIFIED: Final = _codesystems.UNSPECIFIED
"""The specialty (or plan) of an import that does not say which."""

Part = _Part
"""What :func:`part_from_fhir` returns."""

# The implementation lives in private modules named after the parts of the mapping:
#   _writing        the Bundle a referral is written as (the ServiceRequest, and every entry)
#   _reading        a Bundle read back as a referral; one resource as the part it is
#   _bundle         a Bundle's resources and how references among them resolve
#   _patients       Patient, pregnancy Observation and Coverage
#   _providers      Practitioner, PractitionerRole, Organization; requester, performer, specialty
#   _authorizations ClaimResponse (prior authorization)
#   _appointments, _documents, _communications    Appointment, DocumentReference, Communication
#   _tasks          the referral's Task (BSeR businessStatus) and the follow-up Tasks
#   _surveys        QuestionnaireResponse (patient satisfaction survey answers)
#   _decisions      the CRD coverage-information and urgency extensions, rule hits and traces
#   _codesystems    identifier systems, code systems, extensions and the tables between codes
#   _datatypes      Coding, Identifier, Reference, HumanName, Period, Extension; fullUrls
#   _json           typed reading of JSON with paths; FhirError
#   _limits         Limits on input size; loads() and read_ndjson() that keep to them
#   _validation     validate() against fhir.resources
# Each resource module holds its writer (_write_x) and its reader (_x). The public names read
# as this package's own, as httpx does, so that documentation, reprs and tracebacks name
# ``referralkit.interop.fhir``.
for _name in (
    "FhirError",
    "FhirLimitError",
    "Limits",
    "loads",
    "read_ndjson",
    "from_fhir",
    "intake_from_fhir",
    "part_from_fhir",
    "questionnaire_response",
    "to_fhir",
    "validate",
):
    globals()[_name].__module__ = __name__
del _name
