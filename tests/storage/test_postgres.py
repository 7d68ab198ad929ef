"""What only the PostgreSQL store does: the TLS rule for non-local hosts, schemas, migrations,
the pool, retries on serialization failures and deadlocks, index use, and driver errors
mapped without row values (a duplicate-key message repeats the key)."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from storage_support import IN_CI, fresh_schema, with_schema

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # pragma: no cover - the postgres extra is missing
    if IN_CI:
        raise  # under CI every adapter is tested for real: a missing driver fails
    pytest.skip("psycopg is not installed (the postgres extra)", allow_module_level=True)

from referralkit import (
    Actor,
    ConcurrencyError,
    FakeClock,
    Query,
    ReferralDesk,
    Role,
    StorageError,
    ValidationError,
)
from referralkit.storage import open_store, upgrade
from referralkit.storage.postgres import SCHEMA_VERSION, PostgresStore, connection_settings
from referralkit.testing import sample_request

ACTOR = Actor("postgres-test", {Role.COORDINATOR})
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=5)


def desk_over(store: Any) -> ReferralDesk:
    counter = iter(range(1, 1_000_000))
    return ReferralDesk(store, clock=FakeClock(START), new_id=lambda: f"id-{next(counter):06d}")


@pytest.fixture
def store(postgres_schema: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(postgres_schema)
    yield opened
    opened.close()


class TestConnectionSettings:
    """No server needed: how a URL becomes libpq settings, and the TLS rule."""

    @pytest.mark.parametrize(
        "host",
        ["localhost", "127.0.0.1", "[::1]", "%2Fvar%2Frun%2Fpostgresql", "127.0.0.5"],
    )
    def test_local_hosts_may_go_without_tls(self, host: str) -> None:
        settings, _ = connection_settings(f"postgresql://app@{host}/db?sslmode=disable")
        assert "sslmode=disable" in settings

    def test_unix_socket_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PGHOST", raising=False)
        settings, _ = connection_settings("postgresql:///db?sslmode=disable")
        assert "sslmode=disable" in settings

    def test_remote_host_defaults_to_verify_full(self) -> None:
        """require encrypts but does not check who answers; the default checks the
        server's certificate and name."""
        settings, schema = connection_settings("postgresql://app@db.example.org:6543/db")
        assert conninfo_to_dict(settings) == {
            "user": "app",
            "dbname": "db",
            "host": "db.example.org",
            "port": "6543",
            "sslmode": "verify-full",
            "connect_timeout": "5",
        }
        assert schema == "public"

    @pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
    def test_remote_host_without_tls_is_refused(self, mode: str) -> None:
        """disable/allow/prefer could all end up in clear text: refused before connecting;
        the message does not repeat the URL's password."""
        with pytest.raises(ValidationError) as info:
            open_store(f"postgresql://app:S3CRET-pw@10.1.2.3/db?sslmode={mode}")
        assert info.value.path == "sslmode"
        assert "S3CRET" not in str(info.value)

    @pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
    def test_remote_host_keeps_a_tls_mode(self, mode: str) -> None:
        settings, _ = connection_settings(f"postgresql://app@db.example.org/db?sslmode={mode}")
        assert f"sslmode={mode}" in settings

    def test_any_remote_host_in_a_list_needs_tls(self) -> None:
        settings, _ = connection_settings("postgresql://app@localhost,db.example.org/db")
        assert "sslmode=verify-full" in settings

    def test_remote_hostaddr_needs_tls(self) -> None:
        settings, _ = connection_settings("host=localhost hostaddr=10.0.0.7 dbname=db")
        assert "sslmode=verify-full" in settings

    def test_pghost_from_the_environment_counts(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PGHOST", "db.example.org")
        settings, _ = connection_settings("postgresql:///db")
        assert "sslmode=verify-full" in settings

    def test_a_verifying_pgsslmode_is_not_weakened(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PGSSLMODE", "verify-full")
        settings, _ = connection_settings("postgresql://app@db.example.org/db")
        assert "sslmode" not in settings

    @pytest.mark.parametrize("mode", ["disable", "prefer"])
    def test_a_pgsslmode_without_tls_is_overridden(
        self, mode: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The connection string wins over PGSSLMODE in libpq: verify-full is written in."""
        monkeypatch.setenv("PGSSLMODE", mode)
        settings, _ = connection_settings("postgresql://app@db.example.org/db")
        assert "sslmode=verify-full" in settings

    def test_connect_timeout_is_kept_when_given(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """connect_timeout defaults to 5 s; the URL's value or PGCONNECT_TIMEOUT is kept."""
        settings, _ = connection_settings("postgresql://127.0.0.1/db?connect_timeout=20")
        assert conninfo_to_dict(settings)["connect_timeout"] == "20"
        monkeypatch.setenv("PGCONNECT_TIMEOUT", "11")
        assert "connect_timeout" not in connection_settings("postgresql://127.0.0.1/db")[0]

    def test_schema_parameter_is_taken_out(self) -> None:
        settings, schema = connection_settings(
            "postgresql://app@127.0.0.1/db?application_name=x&schema=clinic_7"
        )
        assert schema == "clinic_7"
        assert "schema" not in settings
        assert "application_name=x" in settings

    @pytest.mark.parametrize("schema", ["", "a-b", "1abc", 'x"; DROP', "a" * 64])
    def test_bad_schema_names_are_refused(self, schema: str) -> None:
        with pytest.raises(ValidationError) as info:
            connection_settings(f"postgresql://app@127.0.0.1/db?schema={schema}")
        assert info.value.path == "schema"

    def test_bad_url_is_a_validation_error_without_the_password(self) -> None:
        with pytest.raises(ValidationError) as info:
            connection_settings("postgresql://app:S3CRET-pw@127.0.0.1/db?nonsense=1")
        assert info.value.path == "url"
        assert "S3CRET" not in str(info.value)
        with pytest.raises(ValidationError):
            connection_settings(42)  # type: ignore[arg-type]

    def test_postgres_scheme_alias(self) -> None:
        settings, _ = connection_settings("postgres://app@127.0.0.1/db")
        assert "host=127.0.0.1" in settings


class TestServices:
    """A libpq connection service (``service=`` in the URL, or PGSERVICE) cannot bypass the
    TLS rule: its file is read, its host checked, its TLS mode checked and written in."""

    @pytest.fixture(autouse=True)
    def service_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        """A per-user service file of our own; no system directory, no PG* defaults."""
        for name in ("PGSERVICE", "PGSYSCONFDIR", "PGHOST", "PGHOSTADDR", "PGSSLMODE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        path = tmp_path / "services.conf"
        path.write_text(
            "# services of the tests\n"
            "[remote]\nhost=db.example.org\nport=6543\ndbname=referrals\n\n"
            "[remote-plain]\nhost=db.example.org\nsslmode=disable\n"
            "[remote-ca]\nhost=db.example.org\nsslmode=verify-ca\n"
            "[hidden-address]\n  host=localhost\n  hostaddr=10.0.0.7\n"
            "[local]\nhost=127.0.0.1\nsslmode=disable\n"
            "[remote]\nhost=127.0.0.1\n"
            "[ldap]\nldap://ldap.example.org/dc=example?uniqueMember?one?(cn=db)\n"
            "[broken]\nhost db.example.org\n",
            encoding="utf-8",
        )
        monkeypatch.setenv("PGSERVICEFILE", str(path))
        return path

    def test_a_service_host_gets_verify_full(self) -> None:
        """The host comes from the service (its first section of that name): verify-full
        and the host itself are written into the connection string, which libpq prefers."""
        settings, _ = connection_settings("postgresql:///?service=remote")
        assert conninfo_to_dict(settings) == {
            "service": "remote",
            "host": "db.example.org",
            "port": "6543",
            "sslmode": "verify-full",
            "connect_timeout": "5",
        }

    def test_pgservice_counts_too(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PGSERVICE", "remote")
        settings, _ = connection_settings("postgresql:///")
        assert "sslmode=verify-full" in settings
        assert "host=db.example.org" in settings

    def test_a_service_without_tls_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="service 'remote-plain'") as info:
            connection_settings("postgresql://app:S3CRET-pw@/db?service=remote-plain")
        assert info.value.path == "sslmode"
        assert "S3CRET" not in str(info.value)

    def test_a_service_tls_mode_is_kept(self) -> None:
        settings, _ = connection_settings("postgresql:///db?service=remote-ca")
        assert "sslmode=verify-ca" in settings

    def test_the_url_wins_over_the_service(self) -> None:
        """As in libpq, the URL's own host and sslmode take precedence over the service."""
        settings, _ = connection_settings("postgresql://127.0.0.1/db?service=remote-plain")
        assert "host=127.0.0.1" in settings
        assert "sslmode" not in settings
        with pytest.raises(ValidationError):
            connection_settings("postgresql:///db?service=remote&sslmode=prefer")

    def test_a_service_hostaddr_counts(self) -> None:
        settings, _ = connection_settings("service=hidden-address")
        assert "hostaddr=10.0.0.7" in settings
        assert "sslmode=verify-full" in settings

    def test_a_local_service_may_go_without_tls(self) -> None:
        settings, _ = connection_settings("postgresql:///db?service=local")
        assert "host=127.0.0.1" in settings
        assert "sslmode=verify-full" not in settings

    def test_the_system_directory_is_read_after_the_user_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        system = tmp_path / "etc"
        system.mkdir()
        (system / "pg_service.conf").write_text("[shared]\nhost=db.example.org\n")
        monkeypatch.setenv("PGSYSCONFDIR", str(system))
        assert "sslmode=verify-full" in connection_settings("service=shared")[0]
        monkeypatch.delenv("PGSERVICEFILE")  # ~/.pg_service.conf, absent here
        assert "sslmode=verify-full" in connection_settings("service=shared")[0]

    @pytest.mark.parametrize(
        ("service", "reason"),
        [
            ("missing", "not defined"),
            ("ldap", "LDAP"),
            ("broken", "syntax error"),
        ],
    )
    def test_a_service_that_cannot_be_checked_is_refused(self, service: str, reason: str) -> None:
        """A service neither file defines (libpq might find it in its compiled-in system
        directory), one looked up over LDAP, or one libpq would not parse: refused."""
        with pytest.raises(ValidationError, match=reason) as info:
            connection_settings(f"postgresql:///db?service={service}")
        assert info.value.path == "service"

    def test_an_unreadable_service_file_is_refused(self, service_file: Path) -> None:
        service_file.write_bytes(b"[remote]\nhost=\xff\n")
        with pytest.raises(ValidationError, match="cannot read"):
            connection_settings("service=remote")


class TestConnecting:
    def test_no_server_is_a_storage_error_without_the_password(self) -> None:
        """Nothing listens on port 1: a StorageError naming host and port only."""
        with pytest.raises(StorageError) as info:
            PostgresStore(
                "postgresql://app:S3CRET-pw@127.0.0.1:1/db?connect_timeout=1", timeout=1.5
            )
        message = str(info.value)
        assert "127.0.0.1:1/db" in message
        assert "S3CRET" not in message
        assert info.value.__cause__ is None

    def test_repr_has_no_password(self, postgres_url: str) -> None:
        secret = postgres_url.replace("postgres@", "postgres:S3CRET-pw@")
        with fresh_schema(secret) as url, PostgresStore(url) as store:
            assert "S3CRET" not in repr(store)
            assert store.schema in repr(store)

    def test_pool_exhaustion_is_a_storage_error(self, postgres_schema: str) -> None:
        """With every connection busy (an export holds one), a read waits ``timeout`` and
        then fails with a StorageError instead of hanging."""
        with PostgresStore(postgres_schema, min_size=1, max_size=1, timeout=0.3) as store:
            desk = desk_over(store)
            desk.intake(ACTOR, sample_request())
            exporting = iter(store.export())
            next(exporting)
            with pytest.raises(StorageError, match="no PostgreSQL connection free"):
                store.load("id-000001")
            del exporting  # the generator is closed and its connection returned
            assert store.load("id-000001").version == 1

    def test_a_dropped_connection_is_replaced(self, postgres_schema: str) -> None:
        """A pooled connection the server dropped (a restart, a failover, an administrator)
        is checked when lent out and replaced: the next operation succeeds."""
        name = f"rk-test-{uuid.uuid4().hex[:8]}"
        with PostgresStore(f"{postgres_schema}&application_name={name}", max_size=2) as store:
            desk = desk_over(store)
            made = desk.intake(ACTOR, sample_request())
            with psycopg.connect(str(store._pool.conninfo), autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    [name],
                ).fetchone()
            assert killed is not None
            assert killed[0] >= 1
            assert store.load(made.id) == made
            assert desk.assign(ACTOR, made.id, "coord-2").version == 2


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestFailingFast:
    def test_a_closed_port_is_one_clear_error(
        self, caplog: pytest.LogCaptureFixture, figures: Callable[..., None]
    ) -> None:
        """A wrong port: one StorageError line with libpq's reason, and no pool retries
        logging warnings until the pool's timeout (was 30 s and six warnings)."""
        port = closed_port()
        caplog.set_level(logging.INFO, logger="psycopg")
        started = time.perf_counter()
        with pytest.raises(StorageError) as info:
            PostgresStore(f"postgresql://app:S3CRET-pw@127.0.0.1:{port}/db")
        figures("wrong port", seconds_to_error=round(time.perf_counter() - started, 3))
        message = str(info.value)
        assert message.startswith(f"could not connect to PostgreSQL at 127.0.0.1:{port}/db: ")
        assert "refused" in message
        assert "\n" not in message
        assert "S3CRET" not in message
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

    def test_a_wrong_database_names_it(self, postgres_url: str) -> None:
        """The server's refusal is the reason given (here: no such database)."""
        missing = f"rk_missing_{uuid.uuid4().hex[:8]}"
        with pytest.raises(StorageError, match=f'database "{missing}" does not exist'):
            PostgresStore(postgres_url.rsplit("/", 1)[0] + f"/{missing}")


class TestDroppedConnections:
    """Backends killed under the store (pg_terminate_backend): reads go on without a pause."""

    @staticmethod
    def terminate(admin: psycopg.Connection[Any], name: str) -> int:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def test_reads_go_on_while_backends_are_killed(
        self, postgres_url: str, postgres_schema: str, figures: Callable[..., None]
    ) -> None:
        """Every read after a kill succeeds; the latency is recorded, not asserted (it was
        about 1 s a read: psycopg_pool's check waits 1 s, then 2, 4... after a failure)."""
        name = f"rk-test-{uuid.uuid4().hex[:8]}"
        url = f"{postgres_schema}&application_name={name}"
        with (
            PostgresStore(url, max_size=4) as store,
            psycopg.connect(postgres_url, autocommit=True) as admin,
        ):
            desk = desk_over(store)
            made = desk.intake(ACTOR, sample_request())
            latencies, killed = [], 0
            for _ in range(25):
                killed += self.terminate(admin, name)
                started = time.perf_counter()
                assert store.load(made.id) == made
                latencies.append(time.perf_counter() - started)
            assert killed >= 25
            self.terminate(admin, name)
            assert desk.assign(ACTOR, made.id, "coord-2").version == 2
        figures(
            "reads after pg_terminate_backend",
            rounds=len(latencies),
            median_ms=round(1000 * statistics.median(latencies), 1),
            max_ms=round(1000 * max(latencies), 1),
        )

    def test_a_read_that_loses_its_connection_is_retried(
        self, postgres_url: str, postgres_schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the check on lending out defeated, the read itself meets the dead
        connection: it is retried once, on a new one."""
        name = f"rk-test-{uuid.uuid4().hex[:8]}"
        with (
            PostgresStore(f"{postgres_schema}&application_name={name}") as store,
            psycopg.connect(postgres_url, autocommit=True) as admin,
        ):
            made = desk_over(store).intake(ACTOR, sample_request())
            monkeypatch.setattr(
                "referralkit.storage.postgres.ConnectionPool.check_connection",
                lambda conn: None,
            )
            assert self.terminate(admin, name) >= 1
            assert store.load(made.id) == made

    def test_checks_that_keep_failing_end_in_a_storage_error(
        self, postgres_schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A check failing on every connection lent out ends, after max_size + 1 tries."""
        with PostgresStore(postgres_schema, max_size=2) as store:

            def failing(conn: Any) -> None:
                raise psycopg.OperationalError("the server closed the connection")

            monkeypatch.setattr(
                "referralkit.storage.postgres.ConnectionPool.check_connection", failing
            )
            with pytest.raises(StorageError, match="was dropped"):
                store.count()


class TestReadOnlyOpen:
    """open_store(url, create=False): for code that only reads; nothing is created."""

    @staticmethod
    def namespace_count(postgres_url: str, schema: str) -> int:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema]
            ).fetchone()
        assert row is not None
        return int(row[0])

    def test_a_missing_schema_is_refused_and_not_created(self, postgres_url: str) -> None:
        schema = f"rk_test_{uuid.uuid4().hex[:12]}"
        with pytest.raises(StorageError, match=f"no referralkit tables in schema '{schema}'"):
            open_store(with_schema(postgres_url, schema), create=False)
        assert self.namespace_count(postgres_url, schema) == 0

    def test_a_schema_without_tables_is_refused_and_left_empty(
        self, postgres_url: str, postgres_schema: str
    ) -> None:
        schema = postgres_schema.rsplit("schema=", 1)[1]
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        with pytest.raises(StorageError, match="no referralkit tables"):
            open_store(postgres_schema, create=False)
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s", [schema]
            ).fetchone()
        assert row == (0,)

    def test_an_existing_store_opens(self, postgres_schema: str) -> None:
        with open_store(postgres_schema) as store:
            made = desk_over(store).intake(ACTOR, sample_request())
        with open_store(postgres_schema, create=False) as store:
            assert store.load(made.id) == made


class TestSchemas:
    def test_schemas_isolate_stores(self, postgres_url: str) -> None:
        with (
            fresh_schema(postgres_url) as one_url,
            fresh_schema(postgres_url) as two_url,
            open_store(one_url) as one,
            open_store(two_url) as two,
        ):
            desk_over(one).intake(ACTOR, sample_request())
            assert one.count() == 1
            assert two.count() == 0

    def test_version_1_schema_moves_forward_keeping_its_data(self, postgres_schema: str) -> None:
        store = PostgresStore(postgres_schema, migrate=False)
        assert store.schema_version() == 0
        assert store.upgrade(target=1) == 1
        desk = desk_over(store)
        made = desk.send(ACTOR, desk.intake(ACTOR, sample_request()).id)
        store.close()
        assert upgrade(postgres_schema) == (1, SCHEMA_VERSION)
        assert upgrade(postgres_schema) == (SCHEMA_VERSION, SCHEMA_VERSION)
        with PostgresStore(postgres_schema) as store:
            assert store.load(made.id) == made
            assert store.claim("c1", 3, now=START, lease=LEASE) == [made.id]

    def test_upgrade_target_is_checked(self, store: PostgresStore) -> None:
        for bad in (-1, SCHEMA_VERSION + 1, True):
            with pytest.raises(ValidationError):
                store.upgrade(target=bad)

    def test_newer_schema_is_refused(self, store: PostgresStore, postgres_schema: str) -> None:
        with psycopg.connect(str(store._pool.conninfo), autocommit=True) as conn:
            conn.execute(f'INSERT INTO "{store.schema}".schema_version (version) VALUES (99)')
        with pytest.raises(StorageError, match="newer"):
            PostgresStore(postgres_schema)
        with pytest.raises(StorageError, match="newer"):
            PostgresStore(postgres_schema, migrate=False)

    def test_concurrent_openers_migrate_once(self, postgres_schema: str) -> None:
        """Stores opened at the same moment on a new schema: one migrates, none fails."""
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                PostgresStore(postgres_schema).close()
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


class TestDriverErrors:
    def test_unique_violation_message_is_not_repeated(self, store: PostgresStore) -> None:
        """An event row already there violates events_pkey, whose message repeats the key:
        the StorageError names class, SQLSTATE and constraint only, and is not chained."""
        desk = desk_over(store)
        made = desk.intake(ACTOR, sample_request())
        with psycopg.connect(str(store._pool.conninfo), autocommit=True) as conn:
            conn.execute(
                f'INSERT INTO "{store.schema}".events VALUES '
                "(%s, 2, 0, now(), 'x', 'owner_assigned', '{}')",
                [made.id],
            )
        with pytest.raises(StorageError) as info:
            desk.assign(ACTOR, made.id, "coord-9")
        error = info.value
        assert (error.driver_error, error.sqlstate) == ("UniqueViolation", "23505")
        assert "events_pkey" in str(error)
        assert made.id not in str(error)
        assert "Key (" not in str(error)
        assert error.__cause__ is None
        assert error.__suppress_context__
        assert store.load(made.id).version == 1

    def test_value_the_server_refuses(self, store: PostgresStore) -> None:
        """A value the server refuses (its message quotes it) is a StorageError naming the
        driver class and SQLSTATE, without the value, not chained."""
        with pytest.raises(StorageError) as info:
            store._fetch("testing", "SELECT %s::integer", ["PHI-CANARY"])
        assert (info.value.driver_error, info.value.sqlstate) == (
            "InvalidTextRepresentation",
            "22P02",
        )
        assert "PHI-CANARY" not in str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__

    def test_text_with_nul_never_reaches_the_server(self, store: PostgresStore) -> None:
        """PostgreSQL text cannot hold a NUL: the desk refuses it first, naming the argument,
        as it does over every store (the model decides what text is valid)."""
        desk = desk_over(store)
        made = desk.intake(ACTOR, sample_request())
        with pytest.raises(ValidationError) as info:
            desk.assign(ACTOR, made.id, "PHI-CANARY\x00")
        assert info.value.path == "owner"
        assert "PHI-CANARY" not in str(info.value)
        with pytest.raises(ValidationError) as refused:
            attrs_evolve(sample_request(), reason="chest\x00pain")
        assert refused.value.path == "reason"
        assert store.load(made.id) == made


def attrs_evolve(value: Any, **changes: Any) -> Any:
    import attrs

    return attrs.evolve(value, **changes)


class TestRetries:
    def test_serialization_failures_are_retried(self, store: PostgresStore) -> None:
        """A transaction failing with SQLSTATE 40001 or 40P01 runs again from the start."""
        failures = [pg_errors.SerializationFailure(), pg_errors.DeadlockDetected()]
        attempts: list[int] = []

        def work(conn: psycopg.Connection[Any]) -> str:
            attempts.append(1)
            if failures:
                raise failures.pop(0)
            return "done"

        assert store._transact("testing", work) == "done"
        assert len(attempts) == 3
        assert store.retried == 2

    def test_retries_give_up(self, postgres_schema: str) -> None:
        with PostgresStore(postgres_schema, retries=2) as store:

            def work(conn: psycopg.Connection[Any]) -> None:
                raise pg_errors.SerializationFailure()

            with pytest.raises(StorageError) as info:
                store._transact("testing", work)
            assert info.value.sqlstate == "40001"
            assert store.retried == 2

    def test_serializable_database_loses_no_update(self, postgres_url: str) -> None:
        """Under SERIALIZABLE (set for the session through the URL) concurrent writers
        provoke real serialization failures: they are retried, and optimistic concurrency
        still accounts for every change."""
        options = "options=-c%20default_transaction_isolation%3Dserializable"
        with fresh_schema(f"{postgres_url}?{options}") as url, PostgresStore(url) as store:
            desk = desk_over(store)
            made = desk.intake(ACTOR, sample_request())
            accepted: list[int] = []
            lock = threading.Lock()

            def work(k: int) -> None:
                for n in range(15):
                    while True:
                        try:
                            changed = desk.assign(ACTOR, made.id, f"w{k}-{n}")
                        except ConcurrencyError:
                            continue
                        with lock:
                            accepted.append(changed.version)
                        break

            threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(accepted) == list(range(2, 62))
            assert store.load(made.id).version == 61
            assert store.retried > 0


class TestIndexes:
    """With sequential scans priced out, each worklist query has an index that answers it
    in order (no Sort node): what keeps the top-50 fast with a million rows (see
    benchmarks/bench_storage.py)."""

    @staticmethod
    def plan(store: PostgresStore, sql: str, params: list[Any]) -> str:
        with store._pool.connection() as conn, conn.transaction():
            # price out every plan but an index scan: the question is whether an index can
            # answer the query in order, not what the planner picks for a handful of rows
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            rows = conn.execute("EXPLAIN " + store._sql(sql), params).fetchall()
        return "\n".join(r[0] for r in rows)

    def test_ids_by_prefix(self, store: PostgresStore) -> None:
        """ids_starting_with is a range on the primary key (ids are COLLATE "C")."""
        sql, params = store._prefix_sql("3fa2", 2)
        plan = self.plan(store, sql, params)
        assert "referrals_pkey" in plan
        assert "Index Cond: ((id >= '3fa2'::text) AND (id < '3fa3'::text))" in plan
        assert "Sort" not in plan

    def test_worklist_top(self, store: PostgresStore) -> None:
        where, params = store._where(Query(open_only=True))
        plan = self.plan(
            store,
            "SELECT snapshot FROM {s}.referrals" + where + " ORDER BY priority_rank DESC, "
            "due_sort, received_sort, id LIMIT 50",
            params,
        )
        assert "referrals_worklist" in plan
        assert "Sort" not in plan

    @pytest.mark.parametrize(
        ("query", "index"),
        [
            (Query(specialty="cardiology", open_only=True), "referrals_specialty"),
            (Query(owner="coord-1", open_only=True), "referrals_owner"),
            (Query(status="received"), "referrals_status"),
        ],
    )
    def test_one_worklist_in_order(self, store: PostgresStore, query: Query, index: str) -> None:
        """A specialty's, an owner's or a status's worklist comes in order off its index."""
        where, params = store._where(query)
        plan = self.plan(
            store,
            "SELECT snapshot FROM {s}.referrals" + where + " ORDER BY priority_rank DESC, "
            "due_sort, received_sort, id LIMIT 50",
            params,
        )
        assert index in plan
        assert "Sort" not in plan

    def test_claim_walks_the_worklist_index(self, store: PostgresStore) -> None:
        where, params = store._where(Query(open_only=True))
        plan = self.plan(
            store,
            "SELECT id FROM {s}.referrals" + where + " AND (lease_until IS NULL OR "
            "lease_until <= %s) ORDER BY priority_rank DESC, due_sort, received_sort, id "
            "LIMIT 10 FOR UPDATE SKIP LOCKED",
            [*params, START],
        )
        assert "referrals_worklist" in plan
        assert "Sort" not in plan

    def test_updated_order(self, store: PostgresStore) -> None:
        plan = self.plan(
            store,
            "SELECT snapshot FROM {s}.referrals WHERE updated_at >= %s "
            "ORDER BY updated_at DESC, id DESC LIMIT 50",
            [START],
        )
        assert "referrals_updated" in plan
        assert "Sort" not in plan

    @pytest.mark.parametrize(
        ("query", "index"),
        [
            (Query(specialty="cardiology", open_only=True), "referrals_specialty"),
            (Query(owner="coord-1", open_only=True), "referrals_owner"),
            (Query(patient_id="pat-1"), "referrals_patient"),
            (Query(status="received"), "referrals_status"),
            (Query(due_before=START), "referrals_due"),
        ],
    )
    def test_filters_use_their_index(self, store: PostgresStore, query: Query, index: str) -> None:
        where, params = store._where(query)
        plan = self.plan(store, "SELECT snapshot FROM {s}.referrals" + where, params)
        assert index in plan


def test_ci_flag_is_read() -> None:
    """conftest reads CI=true; under it a missing server fails the PostgreSQL tests."""
    assert isinstance(IN_CI, bool)


def test_with_schema_joins_parameters() -> None:
    assert with_schema("postgresql://h/db", "s") == "postgresql://h/db?schema=s"
    assert with_schema("postgresql://h/db?a=1", "s") == "postgresql://h/db?a=1&schema=s"


def test_without_the_extra_the_hint_works_in_a_checkout_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without psycopg, open_store says how to install the extra, from an index or a
    checkout."""
    monkeypatch.setitem(sys.modules, "referralkit.storage.postgres", None)
    with pytest.raises(ValidationError) as info:
        open_store("postgresql://app@127.0.0.1/db")
    assert info.value.path == "url"
    assert 'pip install "referralkit[postgres]"' in info.value.reason
    assert 'pip install ".[postgres]"' in info.value.reason
