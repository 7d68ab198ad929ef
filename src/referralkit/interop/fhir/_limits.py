"""Bounds on FHIR input: how large one Bundle, one import and one Bundle's entry list may be.

Parsing JSON costs memory in proportion to its size (a 200 MB Bundle peaked at 2.5 GB, about
12 bytes of Python objects per byte of JSON), so input is measured before it is parsed, and
read no further than the limit: an endless stream stops at the limit, not at memory's end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final

import attrs

from ._json import FhirError

MiB: Final = 1 << 20
_BOM: Final = b"\xef\xbb\xbf"


def _positive(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FhirError(attribute.name, "expected a positive whole number")


@attrs.frozen
class Limits:
    """How much FHIR input referralkit reads; past a limit it raises :class:`FhirLimitError`.

    ``bundle_bytes``: one Bundle, as a JSON document or as one NDJSON line (16 MiB: a
    referral with a dozen documents of a megabyte each fits; ``fhir import`` of a 12.6 MB
    Bundle peaked at 126 MB, measured here).
    ``total_bytes``: everything one import reads, all lines together (1 GiB: about 100,000
    referral Bundles of 10 kB). ``entries``: the entries of one Bundle (10,000; a referral
    Bundle has tens). The command line sets them with ``--max-bundle-bytes``,
    ``--max-total-bytes`` and ``--max-entries``.

    >>> Limits(bundle_bytes=1024).bundle_bytes
    1024
    """

    bundle_bytes: int = attrs.field(default=16 * MiB, validator=_positive)
    total_bytes: int = attrs.field(default=1024 * MiB, validator=_positive)
    entries: int = attrs.field(default=10_000, validator=_positive)


DEFAULT_LIMITS: Final = Limits()


class FhirLimitError(FhirError):
    """FHIR input exceeds one of the :class:`Limits`; ``reason`` names the limit and its value,
    never the input."""


def _too_large(path: str, what: str, limit: int, option: str) -> FhirLimitError:
    return FhirLimitError(
        path, f"{what} is larger than the limit of {limit:,} bytes ({option} raises it)"
    )


def loads(data: bytes | str, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The JSON value of one FHIR document (a Bundle, or a resource), refused with
    :class:`FhirLimitError` when it is larger than ``limits.bundle_bytes`` (before it is
    parsed) or has more than ``limits.entries`` entries, and with :class:`FhirError` when it
    is not JSON. A leading UTF-8 byte order mark is ignored.

    >>> loads('{"resourceType": "Bundle", "type": "collection"}')["type"]
    'collection'
    >>> try:
    ...     loads(b"x" * 2048, limits=Limits(bundle_bytes=1024))
    ... except FhirLimitError as exc:
    ...     print(exc.reason)
    the document is larger than the limit of 1,024 bytes (Limits.bundle_bytes raises it)
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > limits.bundle_bytes:
        raise _too_large("", "the document", limits.bundle_bytes, "Limits.bundle_bytes")
    value = _parse(raw.removeprefix(_BOM), "")
    check_entries(value, limits)
    return value


def _parse(raw: bytes, path: str) -> Any:
    failure: str | None = None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        failure = "not UTF-8 text"
    except (ValueError, RecursionError):  # nested past the interpreter's recursion limit
        failure = "not valid JSON"
    # raised here, outside the handler, so that the parser's error (which quotes the input)
    # is not its context
    raise FhirError(path, failure)


def check_entries(value: Any, limits: Limits, where: str = "") -> None:
    """Refuse a Bundle with more than ``limits.entries`` entries."""
    if isinstance(value, Mapping):
        entries = value.get("entry")
        if isinstance(entries, list) and len(entries) > limits.entries:
            raise FhirLimitError(
                f"{where}entry",
                f"more than the limit of {limits.entries:,} entries (Limits.entries raises it)",
            )


def read_ndjson(stream: IO[bytes], *, limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[int, Any]]:
    """The JSON values of an NDJSON stream (one Bundle per line; blank lines skipped), each
    with its line number, read a line at a time: a line is read no further than
    ``limits.bundle_bytes``, the stream no further than ``limits.total_bytes``, so that an
    endless stream (``/dev/zero``, a pipe that never closes) stops at a limit with a
    :class:`FhirLimitError` whose path is ``line N``. A line that is not JSON raises
    :class:`FhirError` naming the line only.

    >>> import io
    >>> lines = b'{"resourceType": "Bundle"}\\n\\n{"resourceType": "Bundle"}\\n'
    >>> [number for number, _ in read_ndjson(io.BytesIO(lines))]
    [1, 3]
    """
    for number, line in bounded_lines(stream, limits, "Limits"):
        if line.strip():
            value = _parse(line, f"line {number}")
            check_entries(value, limits, f"line {number}: ")
            yield number, value


def bounded_lines(stream: IO[bytes], limits: Limits, how: str) -> Iterator[tuple[int, bytes]]:
    """The lines of ``stream``, numbered from 1 (a leading BOM removed), each read no further
    than ``limits.bundle_bytes`` and all together no further than ``limits.total_bytes``.
    ``how`` names the setting in the refusal (``Limits`` or ``--max``)."""
    total = 0
    number = 0
    while True:
        line = stream.readline(limits.bundle_bytes + 1)
        if not line:
            return
        number += 1
        total += len(line)
        if total > limits.total_bytes:
            raise _too_large(
                f"line {number}", "the input", limits.total_bytes, _option(how, "total_bytes")
            )
        if number == 1:
            line = line.removeprefix(_BOM)
        content = line.rstrip(b"\r\n")
        if len(content) > limits.bundle_bytes:
            raise _too_large(
                f"line {number}", "the line", limits.bundle_bytes, _option(how, "bundle_bytes")
            )
        yield number, line


def _option(how: str, name: str) -> str:
    if how == "Limits":
        return f"Limits.{name}"
    return "--max-" + name.replace("_", "-")
