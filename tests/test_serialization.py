"""to_dict / from_dict: JSON-compatible round trips and errors with a path, never a value."""

from __future__ import annotations

import copy
import datetime as dt
import enum
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from referralkit import (
    Actor,
    AttachmentKind,
    Code,
    Communication,
    Coverage,
    IntakeRequest,
    Priority,
    Referral,
    ReferralEvent,
    UrgencyAssessment,
    ValidationError,
    from_dict,
    to_dict,
)
from referralkit.model import model_types
from referralkit.testing import STRATEGIES, sample_request

CANARY = "CANARY-SER-7f3a"


def json_leaves(value: Any) -> list[Any]:
    """Every leaf of a to_dict() result, after checking containers are dicts and lists."""
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        return [leaf for v in value.values() for leaf in json_leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in json_leaves(v)]
    return [value]


def referral_data() -> dict[str, Any]:
    """A complete referral as JSON data (from the sample request)."""
    request = sample_request()
    referral = Referral(
        id="r1",
        source_id=request.source_id,
        patient=request.patient,
        referring=request.referring,
        target=request.target,
        specialty=request.specialty,
        reason=request.reason,
        diagnoses=(*request.diagnoses, Code.icd10("I10", "Hypertension")),
        services=request.services,
        coverage=request.coverage,
        attachments=request.attachments,
        created_at=dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC),
        updated_at=dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC),
        version=1,
    )
    data = to_dict(referral)
    assert from_dict(Referral, data) == referral
    return data


class TestRoundTrip:
    @pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
    @given(data=st.data())
    def test_from_dict_of_to_dict_is_identity(self, cls: type, data: st.DataObject) -> None:
        """from_dict(T, to_dict(x)) == x, through JSON text too; to_dict gives plain JSON."""
        value = data.draw(STRATEGIES[cls]())
        assert type(value) is cls
        plain = to_dict(value)
        assert from_dict(cls, plain) == value
        assert from_dict(cls, json.loads(json.dumps(plain))) == value
        # only dict/list/str/int/float/bool/None: enums become plain str
        for leaf in json_leaves(plain):
            assert not isinstance(leaf, enum.Enum)
            assert leaf is None or type(leaf) in (str, int, float, bool)

    @pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
    @given(data=st.data())
    def test_to_dict_is_what_cattrs_default_hooks_give(
        self, cls: type, data: st.DataObject
    ) -> None:
        """The converter's own hooks for ``X | None`` and ``tuple[X, ...]`` (found once,
        inlined where they only pass the value on) give the data cattrs' defaults gave."""
        from collections.abc import Set

        import cattrs

        plain = cattrs.Converter(unstruct_collection_overrides={Set: sorted})
        plain.register_unstructure_hook(enum.StrEnum, lambda e: e.value)
        plain.register_unstructure_hook(
            frozenset, lambda s: sorted(plain.unstructure(v) for v in s)
        )
        plain.register_unstructure_hook(dt.datetime, lambda d: d.isoformat())
        plain.register_unstructure_hook(dt.date, lambda d: d.isoformat())
        value = data.draw(STRATEGIES[cls]())
        ours = to_dict(value)
        assert ours == plain.unstructure(value)
        assert json.dumps(ours) == json.dumps(plain.unstructure(value))

    def test_strategies_cover_every_model_type(self) -> None:
        """STRATEGIES has a strategy for every model type, IntakeRequest and Actor."""
        assert set(model_types()) | {IntakeRequest, Actor} <= set(STRATEGIES)

    def test_datetimes_and_dates_are_iso_strings(self) -> None:
        """Datetimes and dates are written as ISO 8601 text."""
        data = referral_data()
        assert data["created_at"] == "2026-01-05T09:00:00+00:00"
        assert data["patient"]["birth_date"] == "1961-04-02"
        assert data["status"] == "draft"
        assert type(data["status"]) is str

    def test_other_offsets_are_the_same_instant_in_utc(self) -> None:
        """A datetime with another UTC offset is read as the same instant, in UTC."""
        data = referral_data()
        data["created_at"] = "2026-01-05T11:00:00+02:00"
        assert from_dict(Referral, data).created_at == dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)

    def test_python_values_are_accepted_as_is(self) -> None:
        """from_dict accepts date and datetime objects where strings are expected."""
        data = referral_data()
        data["created_at"] = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
        data["patient"]["birth_date"] = dt.date(1961, 4, 2)
        assert from_dict(Referral, data) == from_dict(Referral, referral_data())

    def test_subclasses_of_json_types_are_accepted(self) -> None:
        """A str or int subclass (an enum member, say) is taken where a string or an integer
        belongs, as its plain value would be."""

        class Tag(enum.StrEnum):
            CARDIOLOGY = "cardiology"

        class Count(enum.IntEnum):
            SEVEN = 7

        data = referral_data() | {"specialty": Tag.CARDIOLOGY, "version": Count.SEVEN}
        plain = referral_data() | {"specialty": "cardiology", "version": 7}
        assert from_dict(Referral, data) == from_dict(Referral, plain)

    def test_event_payload_is_a_copy(self) -> None:
        """An event payload is structured as a plain dict."""
        event = from_dict(
            ReferralEvent,
            {
                "referral_id": "r1",
                "version": 1,
                "index": 0,
                "at": "2026-01-05T09:00:00+00:00",
                "actor": "u1",
                "type": "owner_assigned",
                "payload": {"owner": "u2"},
            },
        )
        assert event.payload == {"owner": "u2"}

    def test_a_communication_stored_before_its_language_loads(self) -> None:
        """A communication stored without ``language`` (written before the field existed)
        loads with no language; one with a language keeps it."""
        data = {
            "id": "c1",
            "at": "2026-01-05T09:00:00+00:00",
            "channel": "phone",
            "direction": "outbound",
            "counterpart": "patient",
            "summary": None,
            "interpreter_used": True,
        }
        assert from_dict(Communication, data).language is None
        spanish = from_dict(Communication, {**data, "language": "es"})
        assert spanish.language == "es"
        assert to_dict(spanish)["language"] == "es"

    @pytest.mark.parametrize("score", ["100", True, None])
    def test_score_must_be_a_number(self, score: Any) -> None:
        """An urgency score that is not a JSON number is refused, naming score."""
        with pytest.raises(ValidationError) as info:
            from_dict(UrgencyAssessment, {"priority": "urgent", "score": score})
        assert info.value.path == "score"

    def test_integer_score_round_trips(self) -> None:
        """An integer urgency score survives a round trip (as an equal number)."""
        value = UrgencyAssessment(Priority.URGENT, 100)
        assert from_dict(UrgencyAssessment, to_dict(value)) == value


class TestErrorPaths:
    def test_nested_field_path(self) -> None:
        """A bad nested field is named by its dotted path."""
        data = referral_data()
        data["patient"]["birth_date"] = "not a date"
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "patient.birth_date"

    def test_item_in_a_list_path(self) -> None:
        """A bad item of a list is named by its index."""
        data = referral_data()
        data["diagnoses"][1]["code"] = ""
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "diagnoses[1].code"

    def test_enum_in_a_list_item_path(self) -> None:
        """A bad enumeration value inside an item of a list is named by index and field."""
        data = referral_data()
        data["attachments"][0]["kind"] = "fax"
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert (info.value.path, info.value.reason) == (
            "attachments[0].kind",
            "not one of " + ", ".join(k.value for k in AttachmentKind),
        )

    def test_first_bad_item_is_named(self) -> None:
        """With several bad items in a list, the first is the one named."""
        data = referral_data()
        data["diagnoses"][1] = "I10"
        data["diagnoses"][0]["system"] = 7
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "diagnoses[0].system"

    @pytest.mark.parametrize("field", ["diagnoses", "services"])
    def test_a_list_given_a_number(self, field: str) -> None:
        """A list field given something that is not a list names that field."""
        data = referral_data() | {field: 5}
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == field

    def test_optional_field_given_the_wrong_type(self) -> None:
        """An optional nested object given the wrong JSON type names the field; null is
        accepted."""
        data = referral_data()
        assert from_dict(Referral, data | {"target": None}).target is None
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data | {"target": 5})
        assert info.value.path == "target"

    def test_deep_path(self) -> None:
        """Paths go as deep as the data: patient.contacts[0].value."""
        data = referral_data()
        data["patient"]["contacts"][0]["value"] = " "
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "patient.contacts[0].value"

    def test_cross_field_rule_path(self) -> None:
        """A rule spanning fields names the field it reports (coverage.period_end)."""
        data = referral_data()
        data["coverage"]["period_end"] = "2025-01-01"
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "coverage.period_end"

    @pytest.mark.parametrize(
        ("remove", "path"), [(("specialty",), "specialty"), (("patient", "mrn"), "patient.mrn")]
    )
    def test_missing_field(self, remove: tuple[str, ...], path: str) -> None:
        """A missing required field is named and said to be missing."""
        data = referral_data()
        target = data
        for key in remove[:-1]:
            target = target[key]
        del target[remove[-1]]
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == path
        assert "missing" in info.value.reason

    def test_unknown_key(self) -> None:
        """An unknown key is refused and named (keys are not PHI)."""
        data = referral_data()
        data["patient"]["favourite_colour"] = "blue"
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "patient"
        assert "favourite_colour" in info.value.reason

    def test_unknown_top_level_key(self) -> None:
        """An unknown top-level key is refused with an empty path."""
        data = referral_data() | {"extra": 1}
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == ""
        assert "extra" in info.value.reason

    @pytest.mark.parametrize("data", ["a referral", ["r1"], 42, None])
    def test_non_dict_input(self, data: Any) -> None:
        """Input that is not a JSON object is a ValidationError, not a TypeError."""
        with pytest.raises(ValidationError):
            from_dict(Referral, data)

    def test_non_dict_nested(self) -> None:
        """A nested object given as a string names that field."""
        data = referral_data()
        data["patient"] = "Alex Example"
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "patient"

    def test_bad_enum_value(self) -> None:
        """A value outside an enumeration is refused, naming the field."""
        data = referral_data()
        data["status"] = "lost"
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "status"

    @pytest.mark.parametrize("value", [3, None, ["draft"], {"value": "draft"}])
    def test_enum_given_another_type(self, value: Any) -> None:
        """An enumeration given something other than a string names the field."""
        data = referral_data() | {"status": value}
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "status"

    @pytest.mark.parametrize(
        ("cls", "value"),
        [(dt.date, "2026-02-30"), (dt.date, 20260201), (dt.datetime, "noon"), (dt.datetime, 5)],
    )
    def test_top_level_dates(self, cls: type, value: Any) -> None:
        """from_dict of a bare date or datetime refuses bad text with an empty path."""
        with pytest.raises(ValidationError) as info:
            from_dict(cls, value)
        assert info.value.path == ""
        assert from_dict(dt.date, "2026-02-01") == dt.date(2026, 2, 1)

    @pytest.mark.parametrize(
        ("field", "value"),
        [("created_at", "yesterday"), ("created_at", 1767603600), ("updated_at", None)],
    )
    def test_bad_datetime(self, field: str, value: Any) -> None:
        """A datetime that is not ISO 8601 text is refused, naming the field."""
        data = referral_data() | {field: value}
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == field

    def test_naive_datetime_is_refused(self) -> None:
        """An ISO datetime without an offset is refused by the model."""
        data = referral_data() | {"created_at": "2026-01-05T09:00:00"}
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == "created_at"

    def test_bad_payload(self) -> None:
        """An event payload that is not an object is refused, naming payload."""
        with pytest.raises(ValidationError) as info:
            from_dict(
                ReferralEvent,
                {
                    "referral_id": "r1",
                    "version": 1,
                    "index": 0,
                    "at": "2026-01-05T09:00:00+00:00",
                    "actor": "u1",
                    "type": "created",
                    "payload": ["not", "an", "object"],
                },
            )
        assert info.value.path == "payload"

    @pytest.mark.parametrize(
        ("cls", "data", "path"),
        [
            (Actor, {"id": "u1", "roles": ["superuser"]}, "roles[0]"),
            (Coverage, {"id": "c", "payer": "p", "plan": "q", "plan_type": "Gold"}, "plan_type"),
        ],
    )
    def test_other_types(self, cls: type, data: dict[str, Any], path: str) -> None:
        """Errors name the field for every type, not only Referral."""
        with pytest.raises(ValidationError) as info:
            from_dict(cls, data)
        assert info.value.path == path

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (("patient", "interpreter_needed"), "false"),
            (("patient", "pregnant"), 1),
            (("patient", "mrn"), 12345),
            (("patient", "given_name"), {"first": "Alex"}),
            (("version",), "7"),
            (("version",), 7.9),
            (("self_pay_acknowledged",), "no"),
            (("version",), True),
            (("patient", "given_name"), False),
        ],
    )
    def test_wrong_json_types_are_refused_not_coerced(
        self, path: tuple[str, ...], value: Any
    ) -> None:
        """A JSON value of the wrong type is refused, not silently converted ("false" -> True)."""
        data = referral_data()
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert info.value.path == ".".join(path)


class TestErrorsNeverRepeatValues:
    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (("patient", "mrn"), CANARY * 20),
            (("patient", "given_name"), " " * 3),
            (("patient", "birth_date"), CANARY),
            (("patient", "sex"), CANARY),
            (("patient", "contacts"), [{"system": "phone", "value": CANARY * 20}]),
            (("coverage", "member_id"), CANARY * 20),
            (("coverage", "plan_type"), CANARY),
            (("reason",), CANARY * 1000),
            (("status_reason",), CANARY * 200),
            (("version",), CANARY),
            (("created_at",), CANARY),
            (("diagnoses",), CANARY),
            (("patient",), CANARY),
        ],
    )
    def test_message_has_no_input_value(self, path: tuple[str, ...], value: Any) -> None:
        """A from_dict error message never repeats the bad value (the input may be PHI)."""
        data = copy.deepcopy(referral_data())
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(ValidationError) as info:
            from_dict(Referral, data)
        assert CANARY not in str(info.value)
        assert CANARY not in repr(info.value)
        assert CANARY not in info.value.reason
        assert info.value.__cause__ is None
