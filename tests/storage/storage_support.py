"""Helpers the storage tests share (imported by module name: conftest.py puts this directory
on ``sys.path``, for the worker processes of the reliability tests too)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

POSTGRES_URL = os.environ.get(
    "REFERRALKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
"""Where the PostgreSQL tests find their server."""

IN_CI = os.environ.get("CI", "").lower() == "true"
"""Under CI a missing PostgreSQL server (or driver) fails the tests instead of skipping them."""


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used for the tests, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (install the 'postgres' extra)"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except psycopg.Error as error:
        # the driver's message names host and port, never row data; it helps whoever reads it
        text = str(error).strip()
        first = text.splitlines()[0] if text else ""
        return f"no server answered ({type(error).__name__}: {first})"
    return None


def with_schema(url: str, schema: str) -> str:
    """``url`` with its ``schema`` parameter set."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A URL naming a new, empty schema (``rk_test_<random>``), dropped on exit."""
    schema = f"rk_test_{uuid.uuid4().hex[:12]}"
    try:
        yield with_schema(url, schema)
    finally:
        drop_schema(url, schema)
