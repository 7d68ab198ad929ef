"""Seeds, ids and argument checks shared by the generators and the simulation.

Every generator builds its own :class:`random.Random` from a purpose and a seed, so there is no
global random state and independent purposes draw independent streams.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from ..errors import ValidationError

__all__ = ["DEFAULT_START", "check_count", "check_utc", "id_factory", "random_for", "weighted"]

_T = TypeVar("_T")

# documented where referralkit.synth exports it
DEFAULT_START: Final = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def check_count(count: object, name: str = "count") -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValidationError(name, "expected a non-negative integer")
    return count


def check_utc(value: object, name: str) -> dt.datetime:
    if (
        not isinstance(value, dt.datetime)
        or value.tzinfo is None
        or value.utcoffset() != dt.timedelta(0)
    ):
        raise ValidationError(name, "expected a timezone-aware UTC datetime")
    return value


def random_for(purpose: str, seed: int) -> random.Random:
    # a string seed is hashed with SHA-512 by random.Random: stable across runs and
    # processes (unlike hash()), and independent streams for independent purposes
    return random.Random(f"referralkit.synth:{purpose}:{seed}")  # noqa: S311 - not secrets


def weighted(rng: random.Random, items: Sequence[_T], weights: Sequence[float]) -> _T:
    return rng.choices(items, weights=weights)[0]


def id_factory(seed: int) -> Callable[[], str]:
    """A seeded source of 32-hex-digit ids, for a desk whose ids must be reproducible.

    Pass it as :class:`~referralkit.desk.ReferralDesk`'s ``new_id`` so that the same seed gives
    the same referral, appointment and document ids.

    >>> make = id_factory(7)
    >>> first = make()
    >>> first == id_factory(7)(), first == make(), len(first)
    (True, False, 32)
    """
    rng = random_for("ids", seed)
    return lambda: f"{rng.getrandbits(128):032x}"
