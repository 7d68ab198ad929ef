"""Plain-language phrases for the coded values a message mentions.

A referral holds codes (a specialty slug, a coverage reason, a delay cause) and staff-facing
text (a rule's alternatives); a patient reads none of those. Each table maps a code to an
English source text that ``pybabel extract`` collects (``N_`` marks it), so the catalogs
translate it like any template text. A code a table does not know is shown by
:func:`unknown`'s fallback and reported as untranslated.
"""

from __future__ import annotations

from typing import Final


def N_(message: str) -> str:  # noqa: N802 - the gettext convention pybabel looks for
    """Mark ``message`` for extraction; it is translated when the message is rendered."""
    return message


SPECIALTIES: Final = {
    "cardiology": N_("heart care (cardiology)"),
    "dermatology": N_("skin care (dermatology)"),
    "endocrinology": N_("hormone and diabetes care (endocrinology)"),
    "gastroenterology": N_("stomach and gut care (gastroenterology)"),
    "neurology": N_("brain and nerve care (neurology)"),
    "obstetrics": N_("pregnancy care (obstetrics)"),
    "oncology": N_("cancer care (oncology)"),
    "orthopedics": N_("bone and joint care (orthopedics)"),
    "psychiatry": N_("mental health care (psychiatry)"),
    "pulmonology": N_("lung care (pulmonology)"),
    "urology": N_("bladder and kidney care (urology)"),
    "rheumatology": N_("joint and immune care (rheumatology)"),
    "otolaryngology": N_("ear, nose and throat care"),
    "family-medicine": N_("family medicine"),
    "internal-medicine": N_("internal medicine"),
}

REASONS: Final = {
    "no-active-coverage": N_("We could not find insurance that is active on the day of the visit."),
    "auth-out-network": N_("This specialist is not in your plan's network."),
    "out-of-network": N_("This specialist is not in your plan's network."),
    "self-pay": N_("You plan to pay for this care yourself."),
}
"""Coverage decision reasons (``CoverageDecision.reason``), said to the patient."""

DEFAULT_REASON: Final = N_("Your plan does not pay for this service.")

ALTERNATIVES: Final = {
    "an in-network specialist": N_("See a specialist in your plan's network."),
    "self-pay or payment plan": N_("Pay for the visit yourself. You can pay over time."),
    "payment plan": N_("Pay over time with a payment plan."),
    "sliding-scale fee": N_("Pay a lower fee based on your income."),
    "financial assistance screening": N_("Ask us if you can get help to pay."),
    "verify eligibility": N_("Check your insurance with us. It may have changed."),
    "verify coverage": N_("Check your insurance with us. It may have changed."),
}
"""The alternatives the shipped coverage rules name (``CoverageDecision.alternatives``)."""

CAUSES: Final = {
    "administrative": N_("We are still waiting for some papers we need."),
    "insurance": N_("We are still waiting for an answer from your health plan."),
    "communication": N_("We have not been able to reach you."),
    "scheduling": N_("The specialist does not have an open time yet."),
    "patient": N_("We need to hear from you before we can go on."),
}
"""Delay causes (:class:`~referralkit.clocks.Cause`, the worklist's vocabulary), said to
the patient."""


def unknown(table: str, code: str) -> str:
    """What a message shows for a code its table does not know: readable, never blank."""
    if table == "specialties":
        return code.replace("-", " ").replace("_", " ")
    if table == "reasons":
        return DEFAULT_REASON
    return code
