"""The directory tests use the storage tests' PostgreSQL helpers (``storage_support.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

STORAGE = str(Path(__file__).parents[1] / "storage")
if STORAGE not in sys.path:
    sys.path.insert(0, STORAGE)
