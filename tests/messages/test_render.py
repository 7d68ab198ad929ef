"""Messages: every moment in every language, plain language, no codes, no PHI, overrides."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import textstat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referralkit import (
    Appointment,
    Authorization,
    AuthStatus,
    Cause,
    Code,
    ContactPoint,
    ContactSystem,
    Coverage,
    CoverageDecision,
    Covered,
    PaNeeded,
    PlanType,
    Provider,
    Referral,
    RuleHit,
    TemplateError,
    ValidationError,
    synth,
)
from referralkit.messages import (
    FACTS,
    TEMPLATE_DIR,
    Audience,
    Message,
    Moment,
    Money,
    Organization,
    Renderer,
)
from referralkit.testing import referrals
from referralkit.testing.notifiers import staged

AT = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
ORG = Organization("Riverside Health", phone="555-0100", website="https://example.org/care")
LANGUAGES = ("en", "es")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(organization=ORG, timezone="America/Chicago")


def synthetic(count: int = 40) -> list[Referral]:
    """Generated referrals across every specialty of the synthetic population."""
    return list(synth.referrals(count, seed=11, start=AT))


def render_all(renderer: Renderer, moment: Moment, language: str) -> Iterator[Message]:
    for referral in synthetic():
        ready, extra = staged(referral, moment, AT)
        yield renderer.render(ready, moment, language=language, **extra)


class TestEveryMoment:
    @pytest.mark.parametrize("language", LANGUAGES)
    @pytest.mark.parametrize("moment", list(Moment), ids=lambda m: m.value)
    def test_renders_for_generated_referrals(
        self, renderer: Renderer, moment: Moment, language: str
    ) -> None:
        """Every moment renders in every language for generated referrals, in full."""
        for message in render_all(renderer, moment, language):
            assert message.subject
            assert message.text
            assert message.sms
            assert message.html
            assert message.language == language
            assert message.complete
            assert message.missing == ()
            assert message.moment is moment
            assert message.audience is moment.audience
            assert message.key == f"{message.referral_id}/{moment.value}/{message.version}"
            assert set(message.facts) <= FACTS[moment]
            assert "\n\n\n" not in message.text
            assert "None" not in message.text

    @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
    @given(referral=referrals(), moment=st.sampled_from(list(Moment)))
    def test_any_valid_referral_renders(
        self, renderer: Renderer, referral: Referral, moment: Moment
    ) -> None:
        """Whatever the strategies generate, a staged referral renders (never an error)."""
        ready, extra = staged(referral, moment, AT)
        message = renderer.render(ready, moment, **extra)
        assert message.text.strip()
        assert message.language in renderer.languages

    def test_patient_messages_greet_by_first_name_and_sign(self, renderer: Renderer) -> None:
        """The patient's first name opens the message; the organisation signs it."""
        referral = synthetic(1)[0]
        message = renderer.render(referral, Moment.RECEIVED, language="en")
        assert message.text.startswith(f"Hello {referral.patient.given_name},")
        assert message.text.rstrip().endswith("https://example.org/care")
        assert "Call us at 555-0100" in message.text

    def test_consult_note_goes_to_the_referrer_in_the_default_language(
        self, renderer: Renderer
    ) -> None:
        """The loop-closing message is for the clinician: English, no patient name."""
        referral = attrs.evolve(
            synthetic(1)[0],
            patient=attrs.evolve(synthetic(1)[0].patient, preferred_language="es"),
        )
        ready, _ = staged(referral, Moment.CONSULT_NOTE, AT)
        message = renderer.render(ready, Moment.CONSULT_NOTE)
        assert message.audience is Audience.REFERRER
        assert message.language == "en"
        assert referral.patient.given_name not in message.text
        assert str(referral.source_id) in message.text
        assert message.channels[0].value == "portal"


class TestPlainLanguage:
    def test_english_is_at_most_grade_8(self, renderer: Renderer) -> None:
        """Flesch–Kincaid grade ≤ 8 for every moment and every specialty's preparation text."""
        grades: dict[str, float] = {}
        for moment in Moment:
            for message in render_all(renderer, moment, "en"):
                key = "+".join(message.templates)
                grade = textstat.flesch_kincaid_grade(message.text)
                grades[key] = max(grades.get(key, grade), grade)
        specialties = {
            t.split("/")[1].removesuffix(".txt")
            for key in grades
            for t in key.split("+")
            if "/" in t
        }
        assert specialties >= set(synth.SPECIALTIES)
        worst = max(grades, key=grades.__getitem__)
        assert grades[worst] <= 8, f"{worst}: grade {grades[worst]}"

    def test_no_internal_codes(self, renderer: Renderer) -> None:
        """Diagnosis and procedure codes, rule ids, reason codes never reach a message."""
        codes = ("C50.911", "R07.9", "99204", "70551", "canary-rule", "canary-ruleset")
        for moment in Moment:
            for referral in synthetic(5):
                coded = attrs.evolve(
                    referral,
                    diagnoses=(Code.icd10("C50.911", "Malignant neoplasm"), Code.icd10("R07.9")),
                    services=(Code.cpt("99204"), Code.cpt("70551", "MRI brain")),
                )
                ready, extra = staged(coded, moment, AT)
                if ready.coverage_decision is not None:
                    decision = attrs.evolve(
                        ready.coverage_decision,
                        hits=(RuleHit("canary-ruleset", "v1", "canary-rule"),),
                        explanation="CANARY staff explanation",
                    )
                    ready = attrs.evolve(ready, coverage_decision=decision)
                for language in LANGUAGES:
                    message = renderer.render(ready, moment, language=language, **extra)
                    text = f"{message.subject}\n{message.text}\n{message.sms}\n{message.html}"
                    for code in (*codes, "CANARY", "auth-out-network", "not-covered"):
                        assert code not in text, f"{code} in {moment.value}/{language}"

    def test_unknown_reason_and_alternative_are_still_readable(self, renderer: Renderer) -> None:
        """A reason code no table knows gives the generic sentence, never the code."""
        referral = attrs.evolve(
            synthetic(1)[0],
            coverage_decision=CoverageDecision(
                Covered.NOT_COVERED, reason="x-internal-42", alternatives=("a local clinic",)
            ),
        )
        english = renderer.render(referral, Moment.NOT_COVERED, language="en")
        assert "x-internal-42" not in english.text
        assert "Your plan does not pay for this service." in english.text
        assert "- a local clinic" in english.text
        assert english.complete
        spanish = renderer.render(referral, Moment.NOT_COVERED, language="es")
        assert spanish.missing == ("a local clinic",)
        assert not spanish.complete


# PHI the patient is meant to be told about their own referral: a not-covered message says
# why (the decision's reason, said through a phrase table, never as written) and names the
# concrete alternatives (issue 15, item 1). Every other PHI field gets a canary.
TOLD: Final = frozenset({(CoverageDecision, "alternatives"), (CoverageDecision, "reason")})


def _canaries(value: Any, counter: Iterator[int]) -> Any:
    """``value`` with a fresh canary in every PHI field of every attrs object inside it
    (except the ones in :data:`TOLD`)."""
    if isinstance(value, tuple):
        return tuple(_canaries(item, counter) for item in value)
    if not attrs.has(type(value)):
        return value
    changes = {}
    for field in attrs.fields(type(value)):
        current = getattr(value, field.name)
        if (type(value), field.name) in TOLD:
            changes[field.name] = current
        elif field.metadata.get("phi"):
            changes[field.name] = _canary_for(field, current, counter)
        else:
            changes[field.name] = _canaries(current, counter)
    return attrs.evolve(value, **changes)


def _canary_for(field: Any, current: Any, counter: Iterator[int]) -> Any:
    tag = f"CANARY{next(counter):03d}"
    if isinstance(current, bool):
        return not current
    if isinstance(current, str) or (current is None and "str" in str(field.type)):
        return tag
    if isinstance(current, dt.datetime):
        return dt.datetime(1901, 2, 3, tzinfo=dt.UTC)
    if isinstance(current, dt.date):
        return dt.date(1901, 2, 3)
    if isinstance(current, tuple):
        return tuple(
            attrs.evolve(item, value=f"{tag}@example.org")
            if isinstance(item, ContactPoint)
            else _canaries(item, counter)
            for item in current
        )
    if isinstance(current, dict):
        return {"note": tag}
    raise AssertionError(f"no canary for PHI field {field.name} of type {field.type}")


class TestNoPhi:
    def test_canaries_in_every_phi_field_never_appear(self, renderer: Renderer) -> None:
        """Every PHI field the model declares gets a canary; only the first name may show."""
        counter = itertools.count()
        for moment in Moment:
            for referral in synthetic(6):
                ready, extra = staged(referral, moment, AT)
                ready = attrs.evolve(
                    ready,
                    patient=attrs.evolve(
                        ready.patient,
                        contacts=(ContactPoint(ContactSystem.EMAIL, "x@example.org"),),
                    ),
                )
                planted = _canaries(ready, counter)
                first_name = planted.patient.given_name
                for language in LANGUAGES:
                    message = renderer.render(planted, moment, language=language, **extra)
                    # what the patient reads; ``facts`` (the record of what was used, PHI
                    # itself and redacted in the message's repr) may hold the decision's reason
                    shown = "\n".join(
                        [message.subject, message.text, message.sms, str(message.html)]
                    ).replace(first_name, "")
                    assert "CANARY" not in shown, f"{moment.value}/{language}"
                    assert "1901" not in shown
                    assert "CANARY" not in repr(message)

    def test_phi_fields_do_not_change_the_message(self, renderer: Renderer) -> None:
        """Two referrals that differ only in PHI other than the first name read the same."""
        counter = itertools.count()
        referral = synthetic(1)[0]
        for moment in Moment:
            ready, extra = staged(referral, moment, AT)
            planted = _canaries(ready, counter)
            planted = attrs.evolve(
                planted,
                patient=attrs.evolve(planted.patient, given_name=ready.patient.given_name),
            )
            one = renderer.render(ready, moment, language="en", **extra)
            two = renderer.render(planted, moment, language="en", **extra)
            assert (one.subject, one.text, one.sms, one.html) == (
                two.subject,
                two.text,
                two.sms,
                two.html,
            )


class TestLanguages:
    def test_preferred_language_picks_the_catalog(self, renderer: Renderer) -> None:
        """A Spanish-speaking patient gets Spanish; a regional tag formats for its region."""
        referral = synthetic(1)[0]
        mexican = attrs.evolve(
            referral, patient=attrs.evolve(referral.patient, preferred_language="es-MX")
        )
        message = renderer.render(mexican, Moment.RECEIVED)
        assert (message.language, message.locale, message.requested_language) == (
            "es",
            "es_MX",
            "es-MX",
        )
        assert message.complete
        assert "Hola" in message.text

    def test_language_without_catalog_falls_back_to_english_and_says_so(
        self, renderer: Renderer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Vietnamese has no catalog: the message is English, marked incomplete, and logged."""
        referral = synthetic(1)[0]
        vietnamese = attrs.evolve(
            referral,
            patient=attrs.evolve(
                referral.patient, preferred_language="vi", interpreter_needed=True
            ),
        )
        message = renderer.render(vietnamese, Moment.RECEIVED)
        assert message.language == "en"
        assert message.requested_language == "vi"
        assert not message.complete
        assert "Vietnamese interpreter" in message.text
        unknown = attrs.evolve(
            referral, patient=attrs.evolve(referral.patient, preferred_language="qqq")
        )
        assert renderer.render(unknown, Moment.RECEIVED).language == "en"

    def test_partial_catalog_reports_what_fell_back(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A deployment catalog translating one text: the rest is English, listed in missing."""
        folder = tmp_path / "catalogs" / "fr" / "LC_MESSAGES"
        folder.mkdir(parents=True)
        (folder / "referralkit.po").write_text(
            'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
            'msgid "Hello %(first_name)s,"\nmsgstr "Bonjour %(first_name)s,"\n',
            encoding="utf-8",
        )
        renderer = Renderer(catalogs=tmp_path / "catalogs")
        assert "fr" in renderer.languages
        referral = synthetic(1)[0]
        with caplog.at_level(logging.WARNING, logger="referralkit.messages"):
            message = renderer.render(referral, Moment.RECEIVED, language="fr")
        assert message.language == "fr"
        assert message.text.startswith("Bonjour")
        assert "What happens next:" in message.text
        assert "What happens next:" in message.missing
        assert "Hello %(first_name)s," not in message.missing
        assert not message.complete
        assert "no fr translation" in caplog.text
        assert referral.patient.given_name not in caplog.text

    def test_dates_times_and_money_follow_the_locale(self, renderer: Renderer) -> None:
        """Babel formats the visit and the estimate for the reader's locale."""
        referral, extra = staged(synthetic(1)[0], Moment.BOOKED, AT)
        english = renderer.render(referral, Moment.BOOKED, language="en")
        spanish = renderer.render(referral, Moment.BOOKED, language="es")
        # 09:00 UTC on 9 March 2026 is 04:00 in Chicago: daylight saving time began on the 8th
        # CLDR puts a narrow no-break space before AM
        assert "Monday, March 9, 2026 at 4:00\u202fAM" in english.text
        assert "lunes, 9 de marzo de 2026 a las 4:00" in spanish.text
        self_pay, extra = staged(synthetic(1)[0], Moment.SELF_PAY, AT)
        assert "$185.00" in renderer.render(self_pay, Moment.SELF_PAY, language="en", **extra).text
        assert "185,00" in renderer.render(self_pay, Moment.SELF_PAY, language="es", **extra).text

    def test_interpreter_note_when_needed(self, renderer: Renderer) -> None:
        """An interpreter is promised exactly when the patient needs one."""
        referral = synthetic(1)[0]
        needs = attrs.evolve(
            referral,
            patient=attrs.evolve(
                referral.patient, preferred_language="es", interpreter_needed=True
            ),
        )
        message = renderer.render(needs, Moment.RECEIVED)
        assert message.interpreter
        assert "intérprete de español" in message.text
        assert message.channels[0].value == "phone"
        plain = renderer.render(
            attrs.evolve(needs, patient=attrs.evolve(needs.patient, interpreter_needed=False)),
            Moment.RECEIVED,
        )
        assert not plain.interpreter
        assert "intérprete" not in plain.text


class TestMomentsRefuseWrongFacts:
    @pytest.mark.parametrize(
        ("moment", "path"),
        [
            (Moment.BOOKED, "appointments"),
            (Moment.MISSED, "appointments"),
            (Moment.AUTH_APPROVED, "authorization"),
            (Moment.AUTH_DENIED, "authorization"),
            (Moment.AUTH_REQUESTED, "authorization"),
            (Moment.COVERED, "coverage_decision"),
            (Moment.NOT_COVERED, "coverage_decision"),
            (Moment.CONSULT_NOTE, "attachments"),
            (Moment.DELAYED, "cause"),
        ],
    )
    def test_a_message_about_what_did_not_happen_is_refused(
        self, renderer: Renderer, moment: Moment, path: str
    ) -> None:
        """A booked message without a booked visit (and so on) is a ValidationError."""
        referral = attrs.evolve(synthetic(1)[0], coverage_decision=None)
        with pytest.raises(ValidationError) as info:
            renderer.render(referral, moment)
        assert info.value.path == path

    @pytest.mark.parametrize(
        ("kwargs", "path"),
        [
            ({"moment": "no-such-moment"}, "moment"),
            ({"version": "2"}, "version"),
            ({"estimate": 12}, "estimate"),
        ],
    )
    def test_bad_arguments(self, renderer: Renderer, kwargs: dict[str, Any], path: str) -> None:
        """Bad arguments are typed errors naming the argument."""
        referral, _extra = staged(synthetic(1)[0], Moment.NOT_COVERED, AT)
        arguments: dict[str, Any] = {"moment": Moment.NOT_COVERED, **kwargs}
        with pytest.raises(ValidationError) as info:
            renderer.render(referral, **arguments)
        assert info.value.path == path

    def test_delay_needs_a_date_not_a_datetime(self, renderer: Renderer) -> None:
        """The new expected date is a date."""
        with pytest.raises(ValidationError, match="new_date"):
            renderer.render(
                synthetic(1)[0],
                Moment.DELAYED,
                cause="insurance",
                new_date=AT,  # type: ignore[arg-type]
            )

    def test_not_a_referral(self, renderer: Renderer) -> None:
        """Rendering something that is not a Referral is a ValidationError."""
        with pytest.raises(ValidationError, match="referral"):
            renderer.render("r-1", Moment.RECEIVED)  # type: ignore[arg-type]

    def test_delay_without_new_date_promises_news(self, renderer: Renderer) -> None:
        """Without a new date the delay notice says the date will follow."""
        message = renderer.render(
            synthetic(1)[0], Moment.DELAYED, language="en", cause=Cause.COMMUNICATION
        )
        assert "We have not been able to reach you." in message.text
        assert "as soon as we know it" in message.text

    @pytest.mark.parametrize("cause", list(Cause))
    def test_every_worklist_cause_is_said_in_plain_words(
        self, renderer: Renderer, cause: Cause
    ) -> None:
        """The delay notice takes the worklist's causes (one vocabulary, clocks.Cause), as the
        member or its value, and says each in English and in Spanish."""
        referral = synthetic(1)[0]
        english = renderer.render(referral, Moment.DELAYED, language="en", cause=cause)
        assert english.facts["cause_text"] == cause.value
        assert english.complete
        spanish = renderer.render(referral, Moment.DELAYED, language="es", cause=cause.value)
        assert spanish.complete
        assert spanish.text != english.text

    def test_a_delay_cause_outside_the_vocabulary_is_refused(self, renderer: Renderer) -> None:
        """A cause that is not a Cause is a ValidationError naming the choices."""
        with pytest.raises(ValidationError, match="cause: expected a Cause \\(administrative, "):
            renderer.render(synthetic(1)[0], Moment.DELAYED, cause="weather")

    def test_version_makes_the_key(self, renderer: Renderer) -> None:
        """The same referral, moment and version give the same key; another version another."""
        referral = synthetic(1)[0]
        one = renderer.render(referral, Moment.RECEIVED, version=3)
        assert one.key == renderer.render(referral, Moment.RECEIVED, version=3).key
        assert one.key != renderer.render(referral, Moment.RECEIVED, version=4).key


class TestCoverageMoment:
    @pytest.mark.parametrize(
        ("decision", "plan", "moment"),
        [
            (CoverageDecision(Covered.COVERED, PaNeeded.NO_AUTH), PlanType.HMO, Moment.COVERED),
            (
                CoverageDecision(Covered.COVERED, PaNeeded.AUTH_NEEDED),
                PlanType.HMO,
                Moment.PRIOR_AUTH_NEEDED,
            ),
            (CoverageDecision(Covered.NOT_COVERED), PlanType.HMO, Moment.NOT_COVERED),
            (CoverageDecision(Covered.NOT_COVERED), PlanType.SELF_PAY, Moment.SELF_PAY),
            (
                CoverageDecision(Covered.INDETERMINATE, PaNeeded.INDETERMINATE),
                PlanType.PPO,
                Moment.COVERAGE_PENDING,
            ),
            (
                CoverageDecision(Covered.CONDITIONAL, PaNeeded.NO_AUTH),
                PlanType.PPO,
                Moment.COVERAGE_PENDING,
            ),
        ],
    )
    def test_for_coverage(self, decision: CoverageDecision, plan: PlanType, moment: Moment) -> None:
        """The decision picks the coverage moment."""
        referral = attrs.evolve(
            synthetic(1)[0],
            coverage=Coverage("c", "Acme", "Acme", plan),
            coverage_decision=decision,
        )
        assert Moment.for_coverage(referral) is moment

    def test_acknowledged_self_pay(self) -> None:
        """A patient who agreed to pay for a not-covered service gets the self-pay message."""
        referral = attrs.evolve(
            synthetic(1)[0],
            coverage_decision=CoverageDecision(Covered.NOT_COVERED),
            self_pay_acknowledged=True,
        )
        assert Moment.for_coverage(referral) is Moment.SELF_PAY

    def test_no_decision(self) -> None:
        """Without a decision there is no coverage moment."""
        with pytest.raises(ValidationError):
            Moment.for_coverage(attrs.evolve(synthetic(1)[0], coverage_decision=None))


class TestHtml:
    def test_values_are_escaped_in_html_only(self, renderer: Renderer) -> None:
        """A provider name with markup is escaped in the HTML part, kept as is in the text."""
        referral, _ = staged(synthetic(1)[0], Moment.BOOKED, AT)
        target = attrs.evolve(
            referral.target or Provider("p", "x", "cardiology"),
            name="<script>alert(1)</script> & Co",
        )
        referral = attrs.evolve(
            referral,
            target=target,
            appointments=tuple(
                attrs.evolve(a, provider_id=target.id) for a in referral.appointments
            ),
        )
        message = renderer.render(referral, Moment.BOOKED, language="en")
        assert "<script>alert(1)</script> & Co" in message.text
        assert message.html is not None
        assert "<script>" not in message.html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in message.html
        assert '<html lang="en">' in message.html


SUBJECT = "{% set subject %}x{% endset %}\n"
VISIT = '{% extends "_visit.txt" %}\n'


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class TestOverrides:
    def test_a_folder_overrides_a_template_and_adds_a_specialty(self, tmp_path: Path) -> None:
        """Deployment templates win over the shipped ones; a new prep/ file is used."""
        shipped = (TEMPLATE_DIR / "received.txt").read_text()
        changed = shipped.replace("{% block content %}", "{% block content %}\nFROM US\n")
        write(tmp_path, "received.txt", changed)
        write(
            tmp_path,
            "prep/sports-medicine.txt",
            "{% trans %}Bring your running shoes.{% endtrans %}\n",
        )
        renderer = Renderer(templates=tmp_path)
        assert "sports-medicine" in renderer.preps
        referral = synthetic(1)[0]
        assert "FROM US" in renderer.render(referral, Moment.RECEIVED, language="en").text
        sports = attrs.evolve(referral, specialty="sports-medicine")
        booked, _ = staged(sports, Moment.BOOKED, AT)
        message = renderer.render(booked, Moment.BOOKED, language="es")
        assert "Bring your running shoes." in message.text
        # the deployment's text and the specialty's name have no Spanish: both reported
        assert message.missing == ("Bring your running shoes.", "sports medicine")
        assert "prep/sports-medicine.txt" in message.templates
        assert "sports medicine" in message.subject or "sports medicine" in message.text

    @pytest.mark.parametrize(
        ("name", "text", "line", "reason"),
        [
            ("booked.txt", f"{VISIT}{SUBJECT}{{{{ diagnosis }}}}\n", 3, "unknown placeholder"),
            ("received.txt", f"{SUBJECT}line\n{{% if %}}\n", 3, "Expected an expression"),
            ("received.txt", f"{SUBJECT}\n{{{{ first_name|nope }}}}\n", 3, "No filter named"),
            (
                "received.txt",
                f'{SUBJECT}{{% include "_no.txt" %}}\n',
                2,
                "'_no.txt' does not exist",
            ),
            ("covered.txt", f"{SUBJECT}\n{{{{ org_phone }}}}\n", 3, "an empty fact is printed"),
            ("covered.txt", f"{SUBJECT}{{{{ first_name.__class__ }}}}\n", 2, "unsafe"),
            ("covered.txt", "no subject here\n", None, "sets no subject"),
            ("boked.txt", "typo\n", None, "not a template referralkit knows"),
        ],
        ids=[
            "unknown-placeholder",
            "syntax",
            "filter",
            "include",
            "unguarded-none",
            "sandbox",
            "subject",
            "name",
        ],
    )
    def test_broken_templates_fail_at_load_naming_template_and_line(
        self, tmp_path: Path, name: str, text: str, line: int | None, reason: str
    ) -> None:
        """Problems are found when the renderer is built, not when a message is sent."""
        write(tmp_path, name, text)
        with pytest.raises(TemplateError) as info:
            Renderer(templates=tmp_path)
        assert info.value.template == name
        assert info.value.line == line
        assert reason in info.value.reason
        assert name in str(info.value)

    def test_broken_translation_fails_at_load(self, tmp_path: Path) -> None:
        """A translation with a placeholder the source lacks is refused with its line."""
        folder = tmp_path / "de" / "LC_MESSAGES"
        folder.mkdir(parents=True)
        (folder / "referralkit.po").write_text(
            'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
            '#, python-format\nmsgid "Hello %(first_name)s,"\nmsgstr "Hallo %(name)s,"\n',
            encoding="utf-8",
        )
        with pytest.raises(TemplateError) as info:
            Renderer(catalogs=tmp_path)
        assert info.value.template.endswith("referralkit.po")
        assert info.value.line == 6

    def test_unparsable_catalog(self, tmp_path: Path) -> None:
        """A .po file that is not one is a TemplateError, not a crash."""
        folder = tmp_path / "de" / "LC_MESSAGES"
        folder.mkdir(parents=True)
        (folder / "referralkit.po").write_text("garbage line\n", encoding="utf-8")
        with pytest.raises(TemplateError) as info:
            Renderer(catalogs=tmp_path)
        assert info.value.line == 1

    @pytest.mark.parametrize(
        ("kwargs", "path"),
        [
            ({"templates": "/no/such/folder"}, "templates"),
            ({"templates": [3]}, "templates"),
            ({"catalogs": "/no/such/folder"}, "catalogs"),
            ({"timezone": "Mars/Olympus"}, "timezone"),
            ({"organization": "Riverside"}, "organization"),
        ],
    )
    def test_bad_configuration(self, kwargs: dict[str, Any], path: str) -> None:
        """A bad folder, zone or organisation is a ValidationError naming it."""
        with pytest.raises(ValidationError) as info:
            Renderer(**kwargs)
        assert info.value.path == path


class TestValues:
    def test_money(self) -> None:
        """Amounts are finite, non-negative decimals with an ISO currency."""
        assert Money(12).amount == 12
        for bad in ("abc", "-1", "NaN", 1.5, True):
            with pytest.raises(ValidationError):
                Money(bad)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            Money("1", "dollars")

    def test_organization_validates(self) -> None:
        """An organisation needs a name."""
        with pytest.raises(ValidationError):
            Organization(" ")

    def test_message_repr_is_redacted(self, renderer: Renderer) -> None:
        """A message's repr shows no text and no facts."""
        referral = synthetic(1)[0]
        message = renderer.render(referral, Moment.RECEIVED)
        assert referral.patient.given_name not in repr(message)
        assert "<redacted>" in repr(message)

    def test_appointment_at_an_unknown_provider(self, renderer: Renderer) -> None:
        """A visit with a provider the referral does not name still renders, without a name."""
        referral = attrs.evolve(
            synthetic(1)[0],
            appointments=(Appointment("a", AT + dt.timedelta(days=3), "someone-else"),),
        )
        message = renderer.render(referral, Moment.BOOKED, language="en")
        assert "Who:" not in message.text
        assert "When:" in message.text

    def test_approved_authorization_without_end(self, renderer: Renderer) -> None:
        """An approval without an end date says nothing about one."""
        referral = attrs.evolve(synthetic(1)[0], authorization=Authorization(AuthStatus.APPROVED))
        message = renderer.render(referral, Moment.AUTH_APPROVED, language="en")
        assert "lasts until" not in message.text
