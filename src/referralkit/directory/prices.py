"""A deployment's self-pay price list: service code → price, read from a simple CSV.

The file has a header with at least ``code`` and ``price``; ``system`` (a code system URI,
or ``CPT``, ``HCPCS``, ``SNOMED``), ``description`` and ``currency`` (ISO 4217, USD by
default) are optional::

    code,price,description
    99204,245.00,New patient visit
    93306,610.50,Echocardiogram

A bad row is a :class:`PriceListError` (a :class:`~referralkit.errors.ValidationError`)
naming its line and column; nothing half-loads. The CMS hospital price-transparency
machine-readable format is not read (a stretch goal of issue 14).
"""

from __future__ import annotations

import csv
import decimal
import io
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Final

import attrs

from ..errors import ValidationError
from ..model import Code, CodeSystem

__all__ = ["PriceList", "PriceListError", "SelfPayEstimate"]

_SYSTEMS: Final = {
    "cpt": CodeSystem.CPT,
    "hcpcs": CodeSystem.HCPCS,
    "snomed": CodeSystem.SNOMED,
    "icd10cm": CodeSystem.ICD10CM,
}


class PriceListError(ValidationError):
    """A price list row (or its header) is malformed; ``path`` is ``line N.column``."""


@attrs.frozen
class SelfPayEstimate:
    """What the referral's services would cost the patient: the priced lines, their total,
    and the services the list has no price for (the total leaves them out)."""

    total: Decimal
    currency: str
    lines: tuple[tuple[Code, Decimal], ...]
    unpriced: tuple[Code, ...]

    @property
    def complete(self) -> bool:
        return not self.unpriced


@attrs.frozen
class PriceList:
    """Self-pay prices by code (and system, when the file says it).

    >>> prices = PriceList.from_csv(io.StringIO("code,price\\n99204,245.00\\n93306,610.50\\n"))
    >>> prices.price(Code.cpt("93306"))
    Decimal('610.50')
    >>> prices.estimate([Code.cpt("99204"), Code.cpt("93306"), Code.cpt("78452")]).total
    Decimal('855.50')
    """

    prices: Mapping[tuple[str | None, str], Decimal]
    currency: str = "USD"

    @classmethod
    def from_csv(cls, source: str | Path | io.TextIOBase) -> PriceList:
        """Read a price list file (a path or an open text file)."""
        if isinstance(source, str | Path):
            with open(source, encoding="utf-8-sig", newline="") as handle:
                return cls._read(handle)
        return cls._read(source)

    @classmethod
    def _read(cls, handle: Iterable[str]) -> PriceList:
        reader = csv.DictReader(handle)
        fields = [f.strip().lower() for f in reader.fieldnames or ()]
        missing = [c for c in ("code", "price") if c not in fields]
        if missing:
            raise PriceListError("line 1", f"missing column(s): {', '.join(missing)}")
        reader.fieldnames = fields
        prices: dict[tuple[str | None, str], Decimal] = {}
        currencies: set[str] = set()
        try:
            for row in reader:
                line = reader.line_num
                code = (row.get("code") or "").strip()
                if not code:
                    raise PriceListError(f"line {line}.code", "empty")
                system = _system(row.get("system"), line)
                price = _price(row.get("price"), line)
                currency = (row.get("currency") or "USD").strip().upper() or "USD"
                if len(currency) != 3 or not currency.isalpha():
                    raise PriceListError(f"line {line}.currency", "not an ISO 4217 code")
                currencies.add(currency)
                key = (system, code)
                if key in prices:
                    raise PriceListError(f"line {line}.code", "listed twice")
                prices[key] = price
        except csv.Error:
            raise PriceListError(f"line {reader.line_num}", "malformed CSV") from None
        if len(currencies) > 1:
            raise PriceListError("currency", "one price list, one currency")
        return cls(prices, currencies.pop() if currencies else "USD")

    def price(self, code: Code) -> Decimal | None:
        """The price of ``code``: a row naming its system, else a row naming none."""
        found = self.prices.get((code.system, code.code))
        return found if found is not None else self.prices.get((None, code.code))

    def estimate(self, services: Iterable[Code]) -> SelfPayEstimate:
        """The self-pay estimate for ``services``."""
        lines: list[tuple[Code, Decimal]] = []
        unpriced: list[Code] = []
        for code in services:
            price = self.price(code)
            if price is None:
                unpriced.append(code)
            else:
                lines.append((code, price))
        total = sum((p for _, p in lines), Decimal("0.00"))
        return SelfPayEstimate(total, self.currency, tuple(lines), tuple(unpriced))


def _system(value: str | None, line: int) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    if "://" in text or text.startswith("urn:"):
        return text
    known = _SYSTEMS.get(text.lower().replace("-", ""))
    if known is None:
        raise PriceListError(f"line {line}.system", "not a code system URI or CPT, HCPCS, SNOMED")
    return known


def _price(value: str | None, line: int) -> Decimal:
    text = (value or "").strip().replace(",", "")
    try:
        price = Decimal(text)
    except decimal.InvalidOperation:
        raise PriceListError(f"line {line}.price", "not a number") from None
    if not price.is_finite() or price < 0:
        raise PriceListError(f"line {line}.price", "expected a price of zero or more")
    if price.as_tuple().exponent < -2:  # type: ignore[operator]
        raise PriceListError(f"line {line}.price", "more than two decimals")
    return price
