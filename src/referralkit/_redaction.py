"""Keeping PHI out of exception reports: sealed values and the library's error boundary.

Error reporters (Sentry by default, ``traceback.TracebackException(..., capture_locals=True)``)
send every frame's local variables with an exception. The model's ``repr`` redacts PHI fields,
but a frame also holds plain strings and dictionaries: a note being attached, a serialized
snapshot, an event payload. Two tools keep those out of reports:

- :func:`boundary` wraps every public method of the desk and the stores (and
  :func:`~referralkit.serialization.from_dict`, :func:`~referralkit.events.replay`): a
  :class:`~referralkit.errors.ReferralKitError` leaves it with its traceback cut at that frame
  (no frame below it, where arguments and values under construction live, is reported) and
  with no chained exception. The error's message and attributes say what went wrong, and
  never hold PHI.
- :class:`Sealed` holds a PHI value (a string, a payload, JSON text) while library frames pass
  it on: its ``repr`` and ``str`` are ``<sealed>``. It is deliberately not a ``str`` or ``dict``
  subclass: reporters serialize strings, mappings and sequences by value and everything else
  by ``repr``. So a failure that is not a library error (a bug, an interrupt, an exception
  from your own policy or store adapter) passing through those frames shows no PHI in them
  either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Final, Generic, ParamSpec, TypeVar

from .errors import ReferralKitError

__all__ = ["SEALED", "Sealed", "boundary", "boundary_iter"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

SEALED: Final = "<sealed>"


class Sealed(Generic[T]):
    """A value that never shows itself: ``repr`` and ``str`` are ``<sealed>``.

    >>> note = Sealed("Biopsy: malignant")
    >>> note, f"{note}"
    (<sealed>, '<sealed>')
    >>> note.reveal()
    'Biopsy: malignant'
    """

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        """The value itself."""
        return self._value

    def __repr__(self) -> str:
        return SEALED

    __str__ = __repr__


def _cut(error: ReferralKitError) -> ReferralKitError:
    """``error`` with no traceback below the boundary and nothing chained to it."""
    error.__cause__ = None
    error.__context__ = None
    error.__suppress_context__ = True
    return error.with_traceback(None)


def boundary(function: Callable[P, R]) -> Callable[P, R]:
    """Make ``function`` a public entry point: a library error leaves it with a traceback that
    starts here, holding neither the arguments nor anything below (see the module docs).

    Other exceptions pass unchanged: a bug keeps its whole traceback.
    """

    @functools.wraps(function)
    def entry(*args: P.args, **kwargs: P.kwargs) -> R:
        # the arguments would be reported as this frame's locals (for any exception passing
        # through): they stay sealed here, and reach the function unnamed
        call = Sealed((args, kwargs))
        del args, kwargs
        try:
            return function(*call.reveal()[0], **call.reveal()[1])
        except ReferralKitError as exc:
            error = exc
        raise _cut(error)

    return entry


def boundary_iter(function: Callable[P, Iterator[T]]) -> Callable[P, Iterator[T]]:
    """:func:`boundary` for a generator (a library error raised while it is iterated)."""

    @functools.wraps(function)
    def entry(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        call = Sealed((args, kwargs))
        del args, kwargs
        items = function(*call.reveal()[0], **call.reveal()[1])
        try:
            yield from items
        except ReferralKitError as exc:
            error = exc
        else:
            return
        raise _cut(error)

    return entry
