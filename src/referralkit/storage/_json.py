"""JSON text for the SQL adapters: snapshots and event payloads as they are stored."""

from __future__ import annotations

import json
from typing import Any

from ..errors import ValidationError
from ..serialization import to_dict

__all__ = ["payload_json", "snapshot_json"]


def snapshot_json(value: Any) -> str:
    """A model value (a referral) as compact JSON."""
    return _dumps(to_dict(value), "referral")


def payload_json(payload: Any) -> str:
    """An event payload as compact JSON.

    Payloads are JSON-compatible already (the desk builds them with ``to_dict``), so they are
    encoded directly, with ``to_dict`` only for what the encoder does not know (a datetime, a
    model value): the same text as ``json.dumps(to_dict(payload))`` at a third of the cost
    (walking every payload through the converter was 60% of a bulk intake's time).
    """
    return _dumps(payload, "payload", default=to_dict)


def _dumps(value: Any, path: str, default: Any = None) -> str:
    try:
        # allow_nan=False: NaN and infinity are not JSON, and PostgreSQL's json type refuses
        # them; refusing them here keeps every SQL adapter the same
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=default)
    except (TypeError, ValueError):
        raise ValidationError(path, "is not JSON-compatible (or holds NaN or infinity)") from None
