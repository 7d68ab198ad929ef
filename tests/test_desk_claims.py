"""Claims at the desk: a coordinator leases worklist rows; the actor's permission is checked and
only the holder renews or releases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import attrs
import pytest

import referralkit as rk
from referralkit.errors import PermissionDeniedError, ValidationError
from referralkit.testing import FakeClock, sample_request
from referralkit.worklist import WorklistItem, rank

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ANA = rk.Actor("coord-ana", {rk.Role.COORDINATOR})
BEN = rk.Actor("coord-ben", {rk.Role.COORDINATOR})
AUDITOR = rk.Actor("auditor", {rk.Role.AUDITOR})


@pytest.fixture(params=["memory://", "sqlite://:memory:"])
def desk(request: pytest.FixtureRequest) -> Iterator[rk.ReferralDesk]:
    clock = FakeClock(START)
    counter = iter(range(1, 1000))
    with rk.open_store(request.param) as store:
        desk = rk.ReferralDesk(store, clock=clock, new_id=lambda: f"r{next(counter):03d}")
        for k, specialty in enumerate(["cardiology", "cardiology", "dermatology", "cardiology"]):
            request_ = attrs.evolve(sample_request(f"S-{k}", complete=True), specialty=specialty)
            desk.send(ANA, desk.intake(ANA, request_).id)
            clock.advance(hours=2)
        yield desk


def test_claim_leases_rows_to_the_actor(desk: rk.ReferralDesk) -> None:
    before = {r.id: r.version for r in desk.store.query()}
    mine = desk.claim(ANA, 2)
    assert len(mine) == 2
    assert all(isinstance(i, WorklistItem) for i in mine)
    assert mine == rank(mine)  # most at risk first
    theirs = desk.claim(BEN, 10)
    assert {i.referral_id for i in mine}.isdisjoint(i.referral_id for i in theirs)
    assert len(theirs) == 2
    assert desk.claim(BEN, 1) == []
    assert {r.id: r.version for r in desk.store.query()} == before  # nothing written


def test_claim_filters(desk: rk.ReferralDesk) -> None:
    found = desk.claim(ANA, 5, specialty="dermatology")
    assert [i.specialty for i in found] == ["dermatology"]
    with pytest.raises(ValidationError):
        desk.claim(ANA, 1, shoe_size=9)


def test_only_the_holder_releases_or_renews(desk: rk.ReferralDesk) -> None:
    clock = desk.clock
    assert isinstance(clock, FakeClock)
    [item] = desk.claim(ANA, 1, lease=dt.timedelta(minutes=10))
    assert desk.release(BEN, [item.referral_id]) == []
    assert desk.renew(BEN, [item.referral_id]) == []
    clock.advance(minutes=5)
    assert desk.renew(ANA, [item.referral_id], lease=dt.timedelta(minutes=10)) == [item.referral_id]
    clock.advance(minutes=9)  # still held: renewed at 5 for 10 more
    assert item.referral_id not in {i.referral_id for i in desk.claim(BEN, 10)}
    desk.release(BEN, [r.id for r in desk.store.query()])
    assert desk.release(ANA, [item.referral_id]) == [item.referral_id]
    assert item.referral_id in {i.referral_id for i in desk.claim(BEN, 10)}


def test_lease_ends(desk: rk.ReferralDesk) -> None:
    clock = desk.clock
    assert isinstance(clock, FakeClock)
    taken = {i.referral_id for i in desk.claim(ANA, 4, lease=dt.timedelta(minutes=15))}
    assert desk.claim(BEN, 4) == []
    clock.advance(minutes=15)
    assert {i.referral_id for i in desk.claim(BEN, 4)} == taken


def test_claims_need_the_permission(desk: rk.ReferralDesk) -> None:
    for call in (
        lambda: desk.claim(AUDITOR, 1),
        lambda: desk.renew(AUDITOR, ["r001"]),
        lambda: desk.release(AUDITOR, ["r001"]),
    ):
        with pytest.raises(PermissionDeniedError):
            call()
    assert AUDITOR.may("worklist")
    assert not AUDITOR.may("claim")
    assert rk.Actor("admin", {rk.Role.ADMIN}).may("claim")
