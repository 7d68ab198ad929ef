"""The FHIR writer's fast fullUrls and ``ifNoneExist`` quoting give exactly what
``uuid.uuid5`` and ``urllib.parse.quote`` give (the Bundles must not change)."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from referralkit.interop.fhir._datatypes import _NAMESPACE, _quoted, _quoted_system, _uuid5


@given(st.text())
def test_fast_uuid5_is_uuid5(name: str) -> None:
    try:
        expected = str(uuid.uuid5(_NAMESPACE, name))
    except UnicodeEncodeError:  # a lone surrogate: both refuse it
        return
    assert _uuid5(name) == expected


@given(st.text() | st.from_regex(r"[A-Za-z0-9_.~-]*", fullmatch=True))
def test_fast_quote_is_quote(value: str) -> None:
    try:
        expected = quote(value, safe="")
    except UnicodeEncodeError:
        return
    assert _quoted(value) == expected
    assert _quoted_system(value) == expected


def test_examples() -> None:
    assert _quoted("r-1_a.b~c") == "r-1_a.b~c"
    assert _quoted("a b/c|d") == "a%20b%2Fc%7Cd"
    assert _quoted("é") == "%C3%A9"
    assert _uuid5("r-1/Patient") == str(uuid.uuid5(_NAMESPACE, "r-1/Patient"))
