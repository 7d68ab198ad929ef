"""The NUCC taxonomy subset and reader: code format, hierarchy, the specialty names."""

from __future__ import annotations

import io
import re

import pytest

from referralkit import synth
from referralkit.directory import SPECIALTIES, Taxonomy, TaxonomyCode, default_taxonomy
from referralkit.errors import ValidationError

HEADER = "Code,Grouping,Classification,Specialization,Definition,Notes,Display Name,Section\n"


def test_the_shipped_subset() -> None:
    """Every code has the NUCC format; every specialization under a classification that
    has a code points to it; every specialty name's code is in it."""
    taxonomy = default_taxonomy()
    assert len(taxonomy) == 96
    for code, entry in taxonomy.items():
        assert re.fullmatch(r"[0-9]{3}[0-9A-Z]{6}X", code)
        parent = taxonomy.parent(code)
        if parent is not None:
            assert taxonomy[parent].classification == entry.classification
            assert taxonomy[parent].specialization is None
    assert set(SPECIALTIES.values()) <= set(taxonomy)


def test_specialty_names_agree_with_the_synthetic_directory() -> None:
    """The specialty names referrals carry map to the codes the synthetic directory uses."""
    for name, code in synth.TAXONOMY.items():
        assert SPECIALTIES[name] == code.code, name


def test_hierarchy() -> None:
    """A specialization satisfies its classification; codes outside satisfy themselves."""
    t = default_taxonomy()
    assert t.satisfies("207RC0000X", "207R00000X")
    assert not t.satisfies("207R00000X", "207RC0000X")
    assert t.satisfies("999999999X", "999999999X")
    assert t.satisfying("207N00000X") >= {"207N00000X", "207ND0101X"}
    assert t.satisfying("2084N0400X") == {"2084N0400X"}  # Psychiatry & Neurology is flat
    assert t["2084N0400X"].display == "Psychiatry & Neurology, Neurology"
    assert t.parent("2084N0400X") is None


def test_reading_the_official_layout() -> None:
    """The NUCC file's columns are read by name; extra columns are ignored."""
    source = HEADER + (
        "207R00000X,Allopathic & Osteopathic Physicians,Internal Medicine,,"
        '"A long, quoted definition",,Internal Medicine Physician,Individual\n'
        "207RC0000X,Allopathic & Osteopathic Physicians,Internal Medicine,"
        "Cardiovascular Disease,,,,Individual\n"
    )
    t = Taxonomy.from_csv(io.StringIO(source))
    assert t["207RC0000X"] == TaxonomyCode(
        "207RC0000X",
        "Allopathic & Osteopathic Physicians",
        "Internal Medicine",
        "Cardiovascular Disease",
    )
    assert t.parent("207RC0000X") == "207R00000X"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Code,Grouping\n", "missing column"),
        (HEADER + "207R0000X,A,B,,,,,\n", "line 2.Code: not a NUCC taxonomy code"),
        (HEADER + "207R00000X,A,,,,,,\n", "line 2.classification"),
        (HEADER + "207R00000X,A,B,,,,,\n207R00000X,A,B,,,,,\n", "listed twice"),
    ],
)
def test_bad_files(source: str, message: str) -> None:
    """A bad header or row is a ValidationError naming the line."""
    with pytest.raises(ValidationError, match=message):
        Taxonomy.from_csv(io.StringIO(source))
