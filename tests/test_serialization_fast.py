"""from_dict's fast path (a structure function generated once per model class) against cattrs.

The fast path builds the same values with the same constructors from well-formed data and
declines anything else, which cattrs then structures (and refuses with its path). What must
hold: on data cattrs accepts, the fast path gives an equal value or declines; on data cattrs
refuses, the fast path never returns a value.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referralkit import Referral, ValidationError, from_dict, to_dict
from referralkit.serialization import _fast_of, converter
from referralkit.testing import STRATEGIES, sample_request

TYPES = sorted(STRATEGIES, key=lambda t: t.__name__)


def _cattrs(cls: type, data: Any) -> tuple[bool, Any]:
    try:
        return True, converter.structure(copy.deepcopy(data), cls)
    except Exception:
        return False, None


def _fast(cls: type, data: Any) -> tuple[bool, Any]:
    try:
        return True, _fast_of(cls)(copy.deepcopy(data))
    except Exception:
        return False, None


@pytest.mark.parametrize("cls", TYPES, ids=lambda t: t.__name__)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_takes_the_fast_path(cls: type, data: st.DataObject) -> None:
    value = data.draw(STRATEGIES[cls]())
    ok, built = _fast(cls, to_dict(value))
    assert ok
    assert built == value
    assert from_dict(cls, to_dict(value)) == value


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _mutated(data: Any, path: tuple[Any, ...], how: str, new: Any) -> Any:
    if not path:
        return new
    data = copy.deepcopy(data)
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "delete" and isinstance(parent, dict):
        del parent[last]
    elif how == "extra" and isinstance(parent, dict):
        parent["unknown_field"] = new
    else:
        parent[last] = new
    return data


@pytest.mark.parametrize("cls", TYPES, ids=lambda t: t.__name__)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_data_never_gets_a_value_cattrs_refuses(cls: type, data: st.DataObject) -> None:
    """A leaf replaced by any JSON value, a key deleted or an unknown one added: the fast
    path's answer, when it gives one, is cattrs' answer."""
    base = to_dict(data.draw(STRATEGIES[cls]()))
    path = data.draw(st.sampled_from(_paths(base)))
    how = data.draw(st.sampled_from(["replace", "delete", "extra"]))
    changed = _mutated(base, path, how, data.draw(JSON))
    fast_ok, fast = _fast(cls, changed)
    slow_ok, slow = _cattrs(cls, changed)
    if fast_ok:
        assert slow_ok
        assert fast == slow


def test_refusals_still_name_the_field() -> None:
    """Declined by the fast path, the data is refused by cattrs with its path, as before."""
    request = sample_request()
    data = to_dict(request.referral("r-1", synth_time(), received=True))
    data["patient"]["birth_date"] = "not a date"
    with pytest.raises(ValidationError) as info:
        from_dict(Referral, data)
    assert info.value.path == "patient.birth_date"
    data = to_dict(request.referral("r-1", synth_time(), received=True))
    data["surprise"] = 1
    with pytest.raises(ValidationError, match="unknown field"):
        from_dict(Referral, data)
    data = to_dict(request.referral("r-1", synth_time(), received=True))
    data["version"] = True  # a bool where an int belongs: refused, not taken as 1
    with pytest.raises(ValidationError) as info:
        from_dict(Referral, data)
    assert info.value.path == "version"


def synth_time() -> Any:
    from referralkit import synth

    return synth.DEFAULT_START
