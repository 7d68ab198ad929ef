"""Synthetic provider-directory data in real formats, for tests and benchmarks."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from ..directory.nppes import NPPES_COLUMNS

__all__ = ["nppes_rows", "write_nppes"]

_TAXONOMIES: Final = (
    "207R00000X",
    "207RC0000X",
    "207RI0011X",
    "207RE0101X",
    "207RG0100X",
    "207RX0202X",
    "207RP1001X",
    "207RR0500X",
    "207N00000X",
    "207Q00000X",
    "207X00000X",
    "207XS0114X",
    "207Y00000X",
    "2084N0400X",
    "2084P0800X",
    "208000000X",
    "208800000X",
    "207VX0000X",
    "363L00000X",
    "363A00000X",
)
_ORG_TAXONOMIES: Final = ("282N00000X", "193200000X", "3336C0003X", "261Q00000X")
_FIRST: Final = ("ANA", "JOHN", "MEI", "LUIS", "GRACE", "OMAR", "LINH", "SARA", "DAVID", "NOOR")
_LAST: Final = ("RUIZ", "SMITH", "CHEN", "NGUYEN", "PATEL", "KIM", "GARCIA", "COHEN", "OKAFOR")
_CITIES: Final = (("HARTFORD", "CT", "06103"), ("BOSTON", "MA", "02114"), ("AUSTIN", "TX", "78701"))


def _npi(number: int) -> str:
    """A ten-digit NPI with a valid check digit (Luhn over the ``80840`` prefix)."""
    base = f"{100_000_000 + number % 900_000_000:09d}"
    digits = [int(c) for c in "80840" + base]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return base + str((10 - total % 10) % 10)


def nppes_rows(count: int, seed: int = 0) -> Iterator[list[str]]:
    """``count`` rows in the NPPES data file layout (``NPPES_COLUMNS``),
    made up and seeded: nine in ten individuals, one in ten organisations, one in fifty
    deactivated (published, as NPPES does, with only the NPI and the deactivation date);
    one to three taxonomy codes each, one of them primary."""
    rng = random.Random(f"referralkit.testing.nppes:{seed}")  # noqa: S311 - not secrets
    index = {name: i for i, name in enumerate(NPPES_COLUMNS)}
    width = len(NPPES_COLUMNS)
    for k in range(count):
        row = [""] * width
        npi = _npi(seed * 10_000_019 + k)
        row[index["NPI"]] = npi
        if rng.random() < 0.02:
            row[index["NPI Deactivation Date"]] = "05/15/2023"
            yield row
            continue
        organization = rng.random() < 0.1
        row[index["Entity Type Code"]] = "2" if organization else "1"
        row[index["Provider Enumeration Date"]] = "05/23/2007"
        row[index["Last Update Date"]] = "07/08/2024"
        if organization:
            row[index["Provider Organization Name (Legal Business Name)"]] = (
                f"{rng.choice(_LAST)} MEDICAL GROUP {k}"
            )
            pool: tuple[str, ...] = _ORG_TAXONOMIES
        else:
            row[index["Provider First Name"]] = rng.choice(_FIRST)
            row[index["Provider Last Name (Legal Name)"]] = rng.choice(_LAST)
            row[index["Provider Credential Text"]] = rng.choice(("M.D.", "MD", "D.O.", "NP"))
            row[index["Provider Sex Code"]] = rng.choice("MF")
            pool = _TAXONOMIES
        city, state, postal = rng.choice(_CITIES)
        practice = "Provider Business Practice Location Address"
        row[index["Provider First Line Business Practice Location Address"]] = (
            f"{rng.randint(1, 999)} MAIN ST"
        )
        row[index[f"{practice} City Name"]] = city
        row[index[f"{practice} State Name"]] = state
        row[index[f"{practice} Postal Code"]] = postal + f"{rng.randint(0, 9999):04d}"
        row[index[f"{practice} Country Code (If outside U.S.)"]] = "US"
        codes = rng.sample(pool, rng.randint(1, 3 if not organization else 2))
        primary = rng.randrange(len(codes))
        for n, code in enumerate(codes, start=1):
            row[index[f"Healthcare Provider Taxonomy Code_{n}"]] = code
            row[index[f"Healthcare Provider Primary Taxonomy Switch_{n}"]] = (
                "Y" if n - 1 == primary else "N"
            )
            row[index[f"Provider License Number_{n}"]] = f"L{rng.randint(10_000, 99_999)}"
            row[index[f"Provider License Number State Code_{n}"]] = state
        yield row


def write_nppes(path: str | Path, count: int, seed: int = 0) -> Path:
    """Write :func:`nppes_rows` to ``path`` as the NPPES file is written: every field
    quoted, CRLF line ends. Returns the path."""
    target = Path(path)
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(NPPES_COLUMNS)
        writer.writerows(nppes_rows(count, seed))
    return target
