"""load_nppes into a SQL directory writes rows without building entries: the directory it
loads equals the one the entry path loads (``SqlDirectory.add`` of what ``read_nppes``
reads), row for row, bad rows, duplicates, replacements and all; the report is the same."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_support import IN_CI, POSTGRES_URL, fresh_schema, postgres_unavailable

from referralkit.directory import (
    NPPES_COLUMNS,
    Location,
    MemoryDirectory,
    Practitioner,
    PractitionerRole,
    Refusal,
    SqlDirectory,
    load_nppes,
    open_directory,
    read_nppes,
)
from referralkit.testing import nppes_rows

COL = {name: i for i, name in enumerate(NPPES_COLUMNS)}
PRACTICE = "Provider Business Practice Location Address"


def with_values(row: list[str], **values: str) -> list[str]:
    out = list(row)
    for name, value in values.items():
        out[COL[name]] = value
    return out


def awkward_file(count: int = 400) -> str:
    """A generated file with the rows NPPES and people get wrong mixed in: bad NPIs, an
    unknown entity type, a bad taxonomy code, nameless rows, over-long fields, short and
    blank lines, the same NPI twice (as an individual, then an organisation), quotes,
    backslashes, commas, line breaks and non-ASCII in names and addresses."""
    rows = list(nppes_rows(count, seed=7))
    good = next(r for r in rows if r[COL["Entity Type Code"]] == "1")
    org = next(r for r in rows if r[COL["Entity Type Code"]] == "2")
    rows[10] = with_values(good, NPI="12345")
    rows[20] = with_values(good, **{"NPI": "1000000020", "Entity Type Code": "3"})
    rows[30] = with_values(
        good, **{"NPI": "1000000030", "Healthcare Provider Taxonomy Code_1": "x"}
    )
    rows[40] = with_values(
        good,
        **{
            "NPI": "1000000040",
            "Provider First Name": "",
            "Provider Last Name (Legal Name)": "",
        },
    )
    rows[50] = with_values(org, **{"NPI": "1000000050", f"{PRACTICE} City Name": "X" * 201})
    rows[60] = with_values(
        good,
        **{
            "NPI": "1000000060",
            "Provider First Name": 'JOSÉ "PEPE"',
            "Provider Last Name (Legal Name)": "O'NEIL\\GARCÍA, JR",
            "Provider Second Line Business Practice Location Address": "SUITE 4\r\nBACK",
            f"{PRACTICE} City Name": "SAN JOSÉ",
            "Healthcare Provider Taxonomy Code_1": "",
            "Healthcare Provider Taxonomy Code_2": "",
            "Healthcare Provider Taxonomy Code_3": "",
        },
    )
    rows[70] = with_values(org, **{"NPI": "1000000060", f"{PRACTICE} State Name": ""})
    rows[80] = with_values(good, **{"NPI": "1000000080", f"{PRACTICE} Postal Code": ""})
    rows[90] = with_values(rows[5], **{"Provider First Name": "SECOND"})  # rows[5]'s NPI again
    rows[100] = with_values(
        good,
        **{
            "NPI": "1000000100",
            "Provider First Line Business Practice Location Address": "",
            f"{PRACTICE} City Name": "",
            f"{PRACTICE} State Name": "",
            f"{PRACTICE} Postal Code": "",
            f"{PRACTICE} Country Code (If outside U.S.)": "",
        },
    )
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(NPPES_COLUMNS)
    writer.writerows(rows[:200])
    out.write("\r\n")  # a blank line
    out.write('"1000000999","1"\r\n')  # a short one
    writer.writerows(rows[200:])
    return out.getvalue()


def tables(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "entries": conn.execute(
            "SELECT kind, id, data FROM directory_entries ORDER BY kind, id"
        ).fetchall(),
        "specialties": conn.execute(
            "SELECT kind, code, id FROM directory_specialties ORDER BY kind, code, id"
        ).fetchall(),
        "networks": conn.execute(
            "SELECT kind, network, id, source FROM directory_networks "
            "ORDER BY kind, network, id, source"
        ).fetchall(),
        "candidates": conn.execute(
            "SELECT * FROM directory_candidates ORDER BY kind, code, id"
        ).fetchall(),
    }


def entry_path(directory: SqlDirectory, text: str, batch: int) -> None:
    """What load_nppes did before: every entry built, then ``add`` in batches."""
    pending: list[Any] = []
    for item in read_nppes(io.StringIO(text)):
        if isinstance(item, Refusal):
            continue
        pending.append(item)
        if len(pending) >= 3 * batch:
            directory.add(pending)
            pending = []
    directory.add(pending)


def preloaded() -> list[Any]:
    """What was in the directory before the file: a Plan-Net role and location under an NPI
    the file has (replaced, with its network rows), and one it has not (kept)."""
    npi = next(iter(nppes_rows(1, seed=7)))[0]
    return [
        PractitionerRole(npi, specialties=("207RC0000X",), network_ids=("net-a",)),
        Location(f"{npi}-practice", name="old"),
        Practitioner("kept", "Dr Kept"),
        PractitionerRole("kept", specialties=("207R00000X",), network_ids=("net-b",)),
    ]


@contextmanager
def sqlite_directory() -> Iterator[SqlDirectory]:
    """An in-memory SQL directory, closed (with its connection) on leaving, failed or not."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    with closing(SqlDirectory(conn, owns_connection=True)) as directory:
        directory.ensure_schema()
        yield directory


class TestBothPathsLoadTheSame:
    @pytest.mark.parametrize("batch", [7, 64, 5_000])
    def test_sqlite(self, batch: int) -> None:
        """Row for row the same tables, whatever the batch size (duplicates within a batch
        and across batches, replaced entries and their index rows)."""
        text = awkward_file()
        with sqlite_directory() as old, sqlite_directory() as new:
            old.add(preloaded())
            new.add(preloaded())
            entry_path(old, text, batch)
            report = load_nppes(new, io.StringIO(text), batch=batch)
            assert tables(new.connection) == tables(old.connection)
            # what the SQL path wrote decodes to what the entry path builds
            memory = MemoryDirectory(preloaded())
            load_nppes(memory, io.StringIO(text))
            for kind in (Practitioner, PractitionerRole, Location):
                assert list(new.entries(kind)) == list(memory.entries(kind))
        assert report == load_nppes(MemoryDirectory(), io.StringIO(text), batch=batch)
        assert len(report.refused) == 6

    def test_the_refusals_name_line_and_column(self) -> None:
        """The SQL path refuses the awkward rows with their line (the header is line 1, a
        field spanning lines counts both) and column, as the entry path does."""
        with sqlite_directory() as directory:
            report = load_nppes(directory, io.StringIO(awkward_file()))
        assert [(r.path, r.reason) for r in report.refused] == [
            ("line 12.NPI", "an NPI has 10 digits"),
            ("line 22.Entity Type Code", "expected 1 (individual) or 2 (organization)"),
            ("line 32.Healthcare Provider Taxonomy Code_1", "not a NUCC taxonomy code"),
            ("line 42.Provider Last Name (Legal Name)", "an individual needs a name"),
            ("line 52.city", "longer than 200 characters"),
            ("line 204", "fewer columns than the header"),
        ]

    def test_progress_and_constant_batches(self, tmp_path: Path) -> None:
        """Progress after each batch, rising to the number of rows read."""
        seen: list[int] = []
        with closing(open_directory(f"sqlite:///{tmp_path / 'd.db'}")) as directory:
            report = load_nppes(
                directory, io.StringIO(awkward_file()), batch=100, progress=seen.append
            )
            assert report.added["Location"] == directory.count(Location) + 2  # two NPIs twice
        assert seen == sorted(seen)
        assert len(seen) >= 4
        assert seen[-1] == 401  # 400 rows and the short one; the blank line is no row

    @given(
        st.lists(
            st.tuples(
                st.text(alphabet=st.sampled_from(list('aZ ,"\\\n-ÑЖ€\t')), max_size=6),
                st.sampled_from(["1", "2"]),
            ),
            min_size=1,
            max_size=4,
        )
    )
    @settings(max_examples=30, deadline=None)
    def test_any_text_is_encoded_as_the_codec_does(self, values: list[tuple[str, str]]) -> None:
        """Whatever a name or address holds, the row is the JSON ``encode`` writes."""
        base = list(nppes_rows(40, seed=3))
        good = [r for r in base if r[COL["Entity Type Code"]] in ("1", "2")]
        rows = [
            with_values(
                good[k],
                **{
                    "Entity Type Code": kind,
                    "Provider First Name": value,
                    "Provider Organization Name (Legal Business Name)": value or "X",
                    f"{PRACTICE} City Name": value,
                    "Provider Second Line Business Practice Location Address": value,
                },
            )
            for k, (value, kind) in enumerate(values)
        ]
        out = io.StringIO()
        csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(
            [list(NPPES_COLUMNS), *rows]
        )
        with sqlite_directory() as old, sqlite_directory() as new:
            entry_path(old, out.getvalue(), 100)
            load_nppes(new, io.StringIO(out.getvalue()))
            assert tables(new.connection) == tables(old.connection)


@pytest.fixture(scope="module")
def postgres() -> str:
    reason = postgres_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
        pytest.skip(f"PostgreSQL tests need a server: {reason}")
    return POSTGRES_URL


@pytest.fixture
def postgres_pair(postgres: str) -> Iterator[tuple[SqlDirectory, SqlDirectory]]:
    with (
        fresh_schema(postgres) as a,
        fresh_schema(postgres) as b,
        closing(open_directory(a)) as old,
        closing(open_directory(b)) as new,
    ):
        assert isinstance(old, SqlDirectory)
        assert isinstance(new, SqlDirectory)
        yield old, new


def test_postgres_loads_the_same(postgres_pair: tuple[SqlDirectory, SqlDirectory]) -> None:
    """On PostgreSQL too, both paths give the same tables."""
    old, new = postgres_pair
    text = awkward_file(150)
    old.add(preloaded())
    new.add(preloaded())
    entry_path(old, text, 40)
    load_nppes(new, io.StringIO(text), batch=40)
    assert tables(new.connection) == tables(old.connection)
