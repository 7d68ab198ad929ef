"""Bounded FHIR input (issue 9, item 10): per Bundle, per NDJSON line, in total and per
Bundle's entries, in the Python API (:class:`Limits`, :func:`loads`, :func:`read_ndjson`,
``from_fhir(limits=...)``) and in ``referralkit fhir import`` (the ``--max-*`` options).

Endless input is a stream that never ends (a generator, ``/dev/zero``, a pipe), never a huge
file on disk: the reader must stop at the limit, having read little more than it.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from referralkit import cli
from referralkit.interop.fhir import (
    FhirError,
    FhirLimitError,
    Limits,
    from_fhir,
    loads,
    read_ndjson,
    to_fhir,
)
from referralkit.testing import sample_request

MiB = 1 << 20


def run_main(argv: list[str], stdin: Any = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        old = sys.stdin
        if stdin is not None:
            sys.stdin = stdin
        try:
            status = cli.main(argv)
        finally:
            sys.stdin = old
    return status, out.getvalue(), err.getvalue()


class Endless(io.RawIOBase):
    """A byte stream that never ends (``pattern`` repeated), counting what was read."""

    def __init__(self, pattern: bytes = b"\0") -> None:
        self.pattern = pattern
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        start = self.served % len(self.pattern)
        repeats = (start + size) // len(self.pattern) + 1
        buffer[:size] = (self.pattern * repeats)[start : start + size]
        self.served += size
        return size


def bundle_line() -> bytes:
    import datetime as dt

    r = sample_request().referral("r-1", dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
    return json.dumps(to_fhir(r), separators=(",", ":")).encode() + b"\n"


class TestLimits:
    def test_defaults_are_documented_and_the_cli_agrees(self) -> None:
        """16 MiB a Bundle, 1 GiB in all, 10,000 entries: the CLI's defaults are the same."""
        limits = Limits()
        assert (limits.bundle_bytes, limits.total_bytes, limits.entries) == (
            16 * MiB,
            1024 * MiB,
            10_000,
        )
        assert {
            "bundle_bytes": limits.bundle_bytes,
            "total_bytes": limits.total_bytes,
            "entries": limits.entries,
        } == cli._DEFAULT_LIMITS

    @pytest.mark.parametrize("value", [0, -1, True, 1.5, "10"])
    def test_a_limit_is_a_positive_whole_number(self, value: Any) -> None:
        with pytest.raises(FhirError) as caught:
            Limits(bundle_bytes=value)
        assert caught.value.path == "bundle_bytes"


class TestLoads:
    def test_a_document_larger_than_the_limit_is_refused_before_parsing(self) -> None:
        with pytest.raises(FhirLimitError) as caught:
            loads(b"[" * 2000, limits=Limits(bundle_bytes=1000))
        assert "1,000 bytes" in caught.value.reason
        assert isinstance(caught.value, FhirError)

    def test_too_many_entries_are_refused(self) -> None:
        data = json.dumps({"resourceType": "Bundle", "entry": [{}] * 11})
        with pytest.raises(FhirLimitError) as caught:
            loads(data, limits=Limits(entries=10))
        assert caught.value.path == "entry"
        assert len(loads(data, limits=Limits(entries=11))["entry"]) == 11

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"{", "not valid JSON"),
            (b"\xff{}", "not UTF-8 text"),
            (b"[" * 100_000, "not valid JSON"),
        ],
    )
    def test_what_is_not_json_is_refused_without_context(self, data: bytes, reason: str) -> None:
        """Deep nesting past the parser's recursion limit included; the parser's error (which
        quotes the input) is not chained."""
        with pytest.raises(FhirError) as caught:
            loads(data)
        assert caught.value.reason == reason
        assert caught.value.__context__ is None

    def test_a_bom_is_ignored(self) -> None:
        assert loads(b"\xef\xbb\xbf{}") == {}

    def test_from_fhir_counts_entries(self) -> None:
        bundle = json.loads(bundle_line())
        with pytest.raises(FhirLimitError) as caught:
            from_fhir(bundle, limits=Limits(entries=3))
        assert caught.value.path == "entry"
        assert from_fhir(bundle, limits=Limits(entries=len(bundle["entry"]))).id == "r-1"


class TestReadNdjson:
    def test_an_endless_line_stops_at_the_limit(self) -> None:
        """/dev/zero as a generator: refused at line 1 after about the limit's bytes."""
        stream = io.BufferedReader(Endless(), buffer_size=1 << 16)
        with pytest.raises(FhirLimitError) as caught:
            list(read_ndjson(stream, limits=Limits(bundle_bytes=MiB)))
        assert caught.value.path == "line 1"
        assert "1,048,576 bytes" in caught.value.reason
        assert stream.raw.served <= MiB + (1 << 17)  # type: ignore[attr-defined]

    def test_endless_short_lines_stop_at_the_total(self) -> None:
        stream = io.BufferedReader(Endless(bundle_line()), buffer_size=1 << 16)
        limits = Limits(total_bytes=10 * MiB)
        read = 0
        with pytest.raises(FhirLimitError) as caught:
            for read, _ in read_ndjson(stream, limits=limits):  # noqa: B007 - counted
                pass
        assert caught.value.path == f"line {read + 1}"
        assert "Limits.total_bytes" in caught.value.reason
        assert stream.raw.served <= 10 * MiB + (1 << 17)  # type: ignore[attr-defined]

    def test_lines_are_numbered_and_errors_name_the_line(self) -> None:
        line = bundle_line()
        stream = io.BytesIO(line + b"\n" + line + b"{broken\n")
        values = read_ndjson(stream)
        assert [n for n, _ in [next(values), next(values)]] == [1, 3]
        with pytest.raises(FhirError) as caught:
            next(values)
        assert (caught.value.path, caught.value.reason) == ("line 4", "not valid JSON")

    def test_a_line_with_too_many_entries_names_its_line(self) -> None:
        with pytest.raises(FhirLimitError) as caught:
            list(read_ndjson(io.BytesIO(bundle_line()), limits=Limits(entries=2)))
        assert caught.value.path == "line 1: entry"


class TestCommandLine:
    """``referralkit fhir import`` stops at its limits with exit status 2 and one line."""

    def test_dev_zero_is_refused(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'x.db'}"
        status, stdout, stderr = run_main(
            ["fhir", "import", "/dev/zero", "--db", url, "--max-bundle-bytes", str(MiB)]
        )
        assert (status, stdout) == (2, "")
        assert stderr == (
            "referralkit: error: /dev/zero line 1: the line is larger than the limit of "
            "1,048,576 bytes (--max-bundle-bytes raises it)\n"
        )
        assert not (tmp_path / "x.db").exists()

    @pytest.mark.parametrize(
        ("option", "value", "message"),
        [
            ("--max-bundle-bytes", "100", "the line is larger than the limit of 100 bytes"),
            ("--max-total-bytes", "100", "the input is larger than the limit of 100 bytes"),
            ("--max-entries", "2", "more than the limit of 2 entries"),
        ],
    )
    def test_each_limit_has_its_option(
        self, tmp_path: Path, option: str, value: str, message: str
    ) -> None:
        path = tmp_path / "one.ndjson"
        path.write_bytes(bundle_line())
        url = f"sqlite:///{tmp_path / 'x.db'}"
        status, _, stderr = run_main(["fhir", "import", str(path), "--db", url, option, value])
        assert status == 2
        assert message in stderr
        assert run_main(["fhir", "import", str(path), "--db", url])[0] == 0

    def test_a_single_document_is_bounded_too(self, tmp_path: Path) -> None:
        path = tmp_path / "one.json"
        path.write_text(json.dumps(json.loads(bundle_line()), indent=2), encoding="utf-8")
        url = f"sqlite:///{tmp_path / 'x.db'}"
        status, _, stderr = run_main(
            ["fhir", "import", str(path), "--db", url, "--max-bundle-bytes", "1000"]
        )
        assert status == 2
        assert "the document is larger than the limit of 1,000 bytes" in stderr

    def test_endless_stdin_stops_at_a_limit(self, tmp_path: Path) -> None:
        """Standard input is spooled no further than the limits: an endless line, or endless
        short lines."""
        url = f"sqlite:///{tmp_path / 'x.db'}"
        zeros = io.TextIOWrapper(io.BufferedReader(Endless()), encoding="latin-1")
        status, _, stderr = run_main(
            ["fhir", "import", "-", "--db", url, "--max-bundle-bytes", str(MiB)], zeros
        )
        assert status == 2
        assert "<stdin>: a line is larger than the limit of 1,048,576 bytes" in stderr
        lines = io.TextIOWrapper(io.BufferedReader(Endless(bundle_line())), encoding="utf-8")
        status, _, stderr = run_main(
            ["fhir", "import", "-", "--db", url, "--max-total-bytes", str(4 * MiB)], lines
        )
        assert status == 2
        assert "<stdin>: the input is larger than the limit of 4,194,304 bytes" in stderr

    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
    @pytest.mark.parametrize("source", ["/dev/zero", "-"])
    def test_in_a_process_memory_stays_bounded(self, tmp_path: Path, source: str) -> None:
        """/dev/zero and an endless pipe, in a real process with the default limits: exit
        status 2, one line on stderr, and a peak resident size near the 16 MiB line limit
        (measured here: 61 MB for /dev/zero, 31 MB for the pipe, interpreter included)."""
        # VmHWM, the process's own peak: ru_maxrss survives execve, so a child forked from a
        # large test process would report the parent's size
        script = (
            "import re, sys\n"
            "from referralkit import cli\n"
            "status = cli.main(sys.argv[1:])\n"
            "status_text = open('/proc/self/status').read()\n"
            "print(re.search(r'VmHWM:\\s+(\\d+) kB', status_text).group(1))\n"
            "sys.exit(status)\n"
        )
        url = f"sqlite:///{tmp_path / 'x.db'}"
        out_path, err_path = tmp_path / "out", tmp_path / "err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            child = subprocess.Popen(
                [sys.executable, "-c", script, "fhir", "import", source, "--db", url],
                stdin=subprocess.PIPE if source == "-" else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
            if child.stdin is not None:
                pipe = child.stdin

                def feed() -> None:  # until the importer stops reading
                    with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                        while True:
                            pipe.write(b"\0" * (1 << 16))

                threading.Thread(target=feed, daemon=True).start()
            child.wait(timeout=300)
            if child.stdin is not None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    child.stdin.close()
        stderr = err_path.read_bytes()
        assert child.returncode == 2, stderr
        assert b"is larger than the limit of 16,777,216 bytes" in stderr
        assert len(stderr.splitlines()) == 1
        peak_mb = int(out_path.read_text().split()[-1]) / 1024
        print(f"{source}: peak {peak_mb:.0f} MB")
        assert peak_mb < 200
