"""The NPPES data file reader: the real header (330 columns, by name, in any order), the
quoting NPPES uses and any other, deactivated NPIs, refused rows, a bad header, streaming."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from referralkit.directory import (
    NPPES_COLUMNS,
    HealthcareService,
    Location,
    MemoryDirectory,
    Organization,
    Practitioner,
    PractitionerRole,
    load_nppes,
    read_nppes,
)
from referralkit.directory.nppes import _Columns, _records
from referralkit.errors import ValidationError
from referralkit.testing import nppes_rows, write_nppes

COL = {name: i for i, name in enumerate(NPPES_COLUMNS)}


def row(**values: str) -> list[str]:
    out = [""] * len(NPPES_COLUMNS)
    for name, value in values.items():
        out[COL[name.replace("__", " ").replace("_x_", "_")]] = value
    return out


def individual(npi: str = "1245319599", **extra: str) -> list[str]:
    r = row()
    fields = {
        "NPI": npi,
        "Entity Type Code": "1",
        "Provider Name Prefix Text": "DR.",
        "Provider First Name": "ANA",
        "Provider Middle Name": "M",
        "Provider Last Name (Legal Name)": "RUIZ",
        "Provider Credential Text": "M.D.",
        "Provider First Line Business Practice Location Address": "12 MAIN ST",
        "Provider Second Line Business Practice Location Address": "SUITE 4",
        "Provider Business Practice Location Address City Name": "HARTFORD",
        "Provider Business Practice Location Address State Name": "CT",
        "Provider Business Practice Location Address Postal Code": "061031234",
        "Provider Business Practice Location Address Country Code (If outside U.S.)": "US",
        "Healthcare Provider Taxonomy Code_1": "207R00000X",
        "Healthcare Provider Primary Taxonomy Switch_1": "N",
        "Healthcare Provider Taxonomy Code_2": "207RC0000X",
        "Healthcare Provider Primary Taxonomy Switch_2": "Y",
        **extra,
    }
    for name, value in fields.items():
        r[COL[name]] = value
    return r


def text(
    rows: list[list[str]], header: tuple[str, ...] = NPPES_COLUMNS, quoting: int = csv.QUOTE_ALL
) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=quoting, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def test_the_header_is_the_real_one() -> None:
    """330 columns, NPI first, Certification Date last, 15 taxonomy slots of 4 columns."""
    assert len(NPPES_COLUMNS) == 330
    assert len(set(NPPES_COLUMNS)) == 330
    assert NPPES_COLUMNS[:2] == ("NPI", "Entity Type Code")
    assert NPPES_COLUMNS[47:51] == (
        "Healthcare Provider Taxonomy Code_1",
        "Provider License Number_1",
        "Provider License Number State Code_1",
        "Healthcare Provider Primary Taxonomy Switch_1",
    )
    assert NPPES_COLUMNS[-1] == "Certification Date"


def test_an_individual() -> None:
    """A practitioner named in full with credential, a role with the primary taxonomy first,
    and the practice location."""
    entries = list(read_nppes(io.StringIO(text([individual()]))))
    assert [type(e) for e in entries] == [Practitioner, PractitionerRole, Location]
    practitioner, role, location = entries
    assert practitioner == Practitioner("1245319599", "DR. ANA M RUIZ, M.D.", npi="1245319599")
    assert role.specialties == ("207RC0000X", "207R00000X")
    assert role.practitioner_id == "1245319599"
    assert role.location_ids == ("1245319599-practice",)
    assert location.address is not None
    assert location.address.lines == ("12 MAIN ST", "SUITE 4")
    assert (location.address.city, location.address.postal_code) == ("HARTFORD", "061031234")


def test_an_organization() -> None:
    """An organisation and its service, named by the legal business name."""
    r = individual(
        "1234567893",
        **{
            "Entity Type Code": "2",
            "Provider Organization Name (Legal Business Name)": "HARTFORD HEART GROUP LLC",
        },
    )
    entries = list(read_nppes(io.StringIO(text([r]))))
    assert [type(e) for e in entries] == [Organization, HealthcareService, Location]
    assert entries[1].name == "HARTFORD HEART GROUP LLC"
    assert entries[2].organization_id == "1234567893"


def test_deactivated_refused_and_blank_rows() -> None:
    """A deactivated NPI is skipped and counted; bad rows are refused with line and column;
    the rest loads."""
    rows = [
        individual("1111111111"),
        row(NPI="2222222222", **{"NPI Deactivation Date": "05/15/2023"}),
        individual(
            "3333333333",
            **{"NPI Deactivation Date": "01/01/2020", "NPI Reactivation Date": "02/01/2020"},
        ),
        individual("12345"),
        individual("4444444444", **{"Entity Type Code": "3"}),
        individual("5555555555", **{"Healthcare Provider Taxonomy Code_2": "cardiology"}),
        individual(
            "6666666666",
            **{
                "Provider First Name": "",
                "Provider Last Name (Legal Name)": "",
                "Provider Name Prefix Text": "",
                "Provider Middle Name": "",
            },
        ),
        individual("7777777777", **{"Entity Type Code": "2"}),
        individual(
            "8888888888", **{"Provider Business Practice Location Address City Name": "X" * 300}
        ),
    ]
    directory = MemoryDirectory()
    source = text(rows) + "\r\n" + '"9999999999","1"\r\n'
    report = load_nppes(directory, io.StringIO(source))
    assert report.skipped == {"deactivated": 1}
    assert report.added["Practitioner"] == 2  # the first and the reactivated one
    assert [(r.path, r.reason) for r in report.refused] == [
        ("line 5.NPI", "an NPI has 10 digits"),
        ("line 6.Entity Type Code", "expected 1 (individual) or 2 (organization)"),
        ("line 7.Healthcare Provider Taxonomy Code_2", "not a NUCC taxonomy code"),
        ("line 8.Provider Last Name (Legal Name)", "an individual needs a name"),
        ("line 9.Provider Organization Name (Legal Business Name)", "an organization needs a name"),
        ("line 10.city", "longer than 200 characters"),
        ("line 12", "fewer columns than the header"),
    ]
    assert directory.count(PractitionerRole) == 2


def test_a_bad_header_refuses_the_file_before_anything_loads() -> None:
    """Missing columns are named; an empty file is refused."""
    directory = MemoryDirectory()
    with pytest.raises(ValidationError, match=r"missing column.*Entity Type Code"):
        load_nppes(directory, io.StringIO('"NPI","Provider First Name"\r\n"1111111111","A"\r\n'))
    with pytest.raises(ValidationError, match="empty"):
        load_nppes(directory, io.StringIO(""))
    assert directory.count() == 0


def test_columns_in_another_order_and_unquoted() -> None:
    """The reader goes by column name, and reads files that quote only where needed."""
    order = list(reversed(NPPES_COLUMNS))
    source_row = individual()
    by_name = dict(zip(NPPES_COLUMNS, source_row, strict=True))
    shuffled = [[by_name[name] for name in order]]
    expected = list(read_nppes(io.StringIO(text([individual()]))))
    assert list(read_nppes(io.StringIO(text(shuffled, tuple(order))))) == expected
    assert (
        list(read_nppes(io.StringIO(text([individual()], quoting=csv.QUOTE_MINIMAL)))) == expected
    )


field_text = st.text(alphabet=st.sampled_from(list('ab ,"\n\r-Ñ')), max_size=8)


@given(st.lists(st.lists(field_text, min_size=3, max_size=3), min_size=1, max_size=5))
def test_the_fast_path_reads_what_csv_reads(values: list[list[str]]) -> None:
    """Whatever the fields hold (quotes, delimiters, line breaks), the split fast path gives
    the csv module's answer for the columns read."""
    rows = []
    for first, last, city in values:
        rows.append(
            individual(
                **{
                    "Provider First Name": first,
                    "Provider Last Name (Legal Name)": last,
                    "Provider Business Practice Location Address City Name": city,
                }
            )
        )
    source = text(rows)
    header_line, _, body = source.partition("\r\n")
    cols = _Columns(next(csv.reader([header_line])))
    fast = [r for _, r in _records(iter(io.StringIO(body, newline="")), cols, True)]
    slow = list(csv.reader(io.StringIO(body, newline="")))
    assert [r[: cols.needed] for r in fast if r] == [r[: cols.needed] for r in slow]


def test_a_generated_file_streams_into_a_directory(tmp_path: Path) -> None:
    """The synthetic file generator writes the real layout; every row loads or is skipped."""
    path = write_nppes(tmp_path / "npidata_pfile.csv", 300, seed=3)
    seen: list[int] = []
    directory = MemoryDirectory()
    report = load_nppes(directory, path, batch=50, progress=seen.append)
    rows = 300 - report.skipped["deactivated"]
    assert report.refused == ()
    assert report.added["Location"] == rows
    assert report.added.get("Practitioner", 0) + report.added.get("Organization", 0) == rows
    assert seen[-1] == 300
    assert seen == sorted(seen)
    assert len(seen) > 2
    with path.open(newline="", encoding="utf-8") as handle:
        lines = csv.reader(handle)
        assert tuple(next(lines)) == NPPES_COLUMNS
        assert next(lines) == next(iter(nppes_rows(1, seed=3)))
