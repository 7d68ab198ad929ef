"""Drawing referrals from rules stays the same draw when its caches fill (issue 11: the values
meeting each set of comparisons are worked out once per drawer, within a bound)."""

from __future__ import annotations

import random

import pytest

from referralkit.rules.policies import default_policies
from referralkit.testing import _derive, sample_referrals


def test_a_full_cache_changes_no_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for one set of comparisons only (the caches emptied on almost every draw),
    the seeded draw gives the same referrals."""
    policies = default_policies()
    expected = sample_referrals(policies, 150, seed=5)
    monkeypatch.setattr(_derive, "_MAX_CACHED", 1)
    assert sample_referrals(policies, 150, seed=5) == expected


def test_the_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A drawer keeps at most ``_MAX_CACHED`` sets of comparisons in each cache."""
    monkeypatch.setattr(_derive, "_MAX_CACHED", 3)
    drawer = _derive._Drawer(_derive.rulesets_of(default_policies()), 0.95, 0.05)
    pick = _derive._Seeded(random.Random(1))
    for _ in range(100):
        drawer.draw(pick)
    assert 0 < len(drawer.fitting) <= 3
    assert 0 < len(drawer.items) <= 3
