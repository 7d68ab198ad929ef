"""The public Hypothesis strategies of referralkit.testing: valid values, checked arguments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from referralkit import Code, CodeSystem, Provider, Referral, Status
from referralkit.testing import codes, providers, referrals, sample_request


class TestStrategies:
    @pytest.mark.parametrize(
        "system", [CodeSystem.ICD10CM, CodeSystem.CPT, CodeSystem.HCPCS, CodeSystem.SNOMED]
    )
    @given(data=st.data())
    def test_codes_in_a_system(self, system: str, data: st.DataObject) -> None:
        """codes(system) keeps to that system."""
        assert data.draw(codes(system)).system == system

    def test_codes_checks_its_argument(self) -> None:
        """An unknown code system is refused up front."""
        with pytest.raises(InvalidArgument):
            codes("http://example.org/not-a-system")

    @settings(max_examples=10)
    @given(referrals(status=Status.SEEN))
    def test_referrals_in_a_status(self, referral: Referral) -> None:
        """referrals(status=...) gives referrals in that status."""
        assert referral.status is Status.SEEN

    @given(providers(specialty="urology"))
    def test_providers_of_a_specialty(self, provider: Provider) -> None:
        """providers(specialty=...) gives providers of that specialty."""
        assert provider.specialty == "urology"


class TestSampleRequest:
    def test_complete_and_incomplete(self) -> None:
        """The sample request has a medical history unless complete=False."""
        assert sample_request().attachments
        assert sample_request(complete=False).attachments == ()
        assert sample_request("REQ-9").source_id == "REQ-9"

    def test_is_synthetic_cardiology(self) -> None:
        """The sample is a cardiology referral with an ICD-10-CM diagnosis and a CPT service."""
        request = sample_request()
        assert request.specialty == "cardiology"
        assert request.diagnoses[0] == Code.icd10("R07.9", "Chest pain, unspecified")
        assert request.services[0].system == CodeSystem.CPT
