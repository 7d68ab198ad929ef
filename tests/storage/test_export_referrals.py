"""``export_referrals``: every referral's snapshot in id order without its events, the read
``referralkit fhir export`` makes (a Bundle is made from the referral alone). It gives
:meth:`export`'s referrals, reads no event row, and the Bundles made from it are the ones made
from :meth:`export`; the desk records it in the access log as it records :meth:`export`.

On the simulated stores of ``test_bulk_reads`` (memory, SQLite file and ``:memory:``,
PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from test_bulk_reads import ACTOR, KINDS, History, open_stores, simulated

import referralkit as rk
from referralkit import synth
from referralkit.interop.fhir import to_fhir
from referralkit.storage import memory
from referralkit.storage._json import RecordCodec

__all__ = ["open_stores"]  # the fixture, shared with test_bulk_reads


def _no_events(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("an event was read")


@pytest.mark.parametrize("kind", KINDS)
def test_the_referrals_export_is_the_whole_export_without_histories(
    kind: str, open_stores: Callable[[str], rk.ReferralStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_stores(kind)
    whole = [r for r, _ in store.export()]
    assert len(whole) > 1
    for name in ("history", "selected", "histories", "event", "payload_body"):
        monkeypatch.setattr(RecordCodec, name, _no_events)
    monkeypatch.setattr(memory, "_unpack", _no_events)
    referrals = list(store.export_referrals())
    assert referrals == whole
    assert [r.id for r in referrals] == sorted(r.id for r in referrals)
    assert [json.dumps(to_fhir(r)) for r in referrals] == [json.dumps(to_fhir(r)) for r in whole]


def _id(history: History) -> str:
    return history[0].id


def test_the_default_referrals_export_drops_the_histories() -> None:
    """A store without its own reader (the audited view here) gives the referrals of its
    :meth:`export`; the desk records them in the access log as :meth:`ReferralDesk.export`
    does, and refuses an actor who may not export."""
    histories, _ = simulated(3)
    stores = []
    for _ in range(3):
        store = rk.open_store("memory://")
        store.restore_many(list(histories))
        stores.append(store)
    desks = [rk.ReferralDesk(s, clock=rk.FakeClock(synth.DEFAULT_START)) for s in stores]
    in_order = [r for r, _ in sorted(histories, key=_id)]
    assert list(desks[0].view(ACTOR).export_referrals()) == in_order
    assert list(desks[1].export_referrals(ACTOR)) == in_order
    assert [r for r, _ in desks[2].export(ACTOR)] == in_order

    def recorded(store: rk.ReferralStore) -> list[tuple[str, str, tuple[str, ...]]]:
        return [(a.action, a.outcome.value, a.referral_ids) for a in store.access_records()]

    assert recorded(stores[0]) == recorded(stores[1]) == recorded(stores[2])
    assert recorded(stores[1])
    with pytest.raises(rk.PermissionDeniedError):
        desks[1].export_referrals(rk.Actor("nobody", set()))
