"""The optional dependencies of the analytics extra, checked before first use."""

from __future__ import annotations

import importlib.util
from typing import Final

INSTALL_HINT: Final = (
    'pip install "referralkit[analytics]" (in a checkout: pip install ".[analytics]")'
)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module blocked with sys.modules[name] = None
        return False


def require(*modules: str) -> None:
    """Raise :class:`ImportError` naming the analytics extra unless ``modules`` import.

    ``import referralkit`` and the core never need them: only frames, plots, Parquet and the
    HTML report do, and they call this first so the message says what to install.
    """
    missing = [name for name in modules if not _importable(name)]
    if missing:
        raise ImportError(
            f"this needs {', '.join(missing)}, from the analytics extra: {INSTALL_HINT}",
            name=missing[0],
        )
