"""The notifiers: the outbox and SMTP (against a local aiosmtpd server) pass the contract."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import smtplib
import stat
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from referralkit import ContactPoint, ContactSystem, DeliveryError
from referralkit.messages import KEY_HEADER, OutboxNotifier, Receipt, SmtpNotifier
from referralkit.testing import FakeClock
from referralkit.testing.notifiers import Delivered, NotifierContract, sample_message


def read_email(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


class TestOutbox(NotifierContract):
    @pytest.fixture
    def notifier(self, tmp_path: Path) -> OutboxNotifier:
        return OutboxNotifier(tmp_path / "outbox", clock=FakeClock())

    @pytest.fixture
    def delivered(self, notifier: OutboxNotifier) -> Delivered:
        def read(receipt: Receipt) -> EmailMessage | str:
            path = notifier.folder / receipt.transport_id
            if path.suffix == ".eml":
                return read_email(path.read_bytes())
            return path.read_text()

        return read

    def test_second_send_is_a_duplicate_and_writes_nothing(self, notifier: OutboxNotifier) -> None:
        """The same message to the same contact is written once; the retry says duplicate."""
        message = sample_message()
        contact = ContactPoint(ContactSystem.SMS, "+1-555-0100")
        first = notifier.send(message, contact)
        path = notifier.folder / first.transport_id
        before = path.stat().st_mtime_ns
        again = notifier.send(message, contact)
        assert again.duplicate
        assert not first.duplicate
        assert path.stat().st_mtime_ns == before
        assert len(list(notifier.folder.iterdir())) == 1

    def test_files_are_private_and_named_without_phi(self, notifier: OutboxNotifier) -> None:
        """Outbox files are owner-only (they hold PHI) and their names hold no address."""
        receipt = notifier.send(
            sample_message(), ContactPoint(ContactSystem.EMAIL, "alex.canary@example.org")
        )
        path = notifier.folder / receipt.transport_id
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "canary" not in path.name
        assert "example" not in path.name
        assert not [p for p in notifier.folder.iterdir() if p.name.startswith(".outbox-")]

    def test_unwritable_folder_is_a_retryable_delivery_error(self, tmp_path: Path) -> None:
        """A write that fails raises DeliveryError(retry=True) and leaves no temporary file."""
        outbox = OutboxNotifier(tmp_path / "box")
        outbox.folder.chmod(0o500)
        try:
            probe = outbox.folder / "probe"
            try:
                probe.write_text("x")
            except OSError:
                pass
            else:  # running as root: permissions do not stop writes; remove the folder
                probe.unlink()
                outbox.folder.chmod(0o700)
                outbox.folder.rmdir()
            with pytest.raises(DeliveryError) as info:
                outbox.send(sample_message(), ContactPoint(ContactSystem.SMS, "+1-555-0100"))
            assert info.value.retry
        finally:
            if outbox.folder.exists():
                outbox.folder.chmod(0o700)

    def test_sms_number_with_a_line_break_is_refused(self, notifier: OutboxNotifier) -> None:
        """A phone number with a line break would forge the SMS file's headers: refused."""
        with pytest.raises(DeliveryError):
            notifier.send(sample_message(), ContactPoint(ContactSystem.SMS, "555\nKey: x"))

    def test_folder_that_cannot_be_created(self, tmp_path: Path) -> None:
        """An outbox under a file is a ValidationError naming the folder."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(ValueError, match="folder"):
            OutboxNotifier(blocker / "outbox")


class _Inbox:
    """An aiosmtpd handler keeping every message it accepts, and what to answer."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.reply = "250 OK"
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply.startswith("250"):
            self.received.append(read_email(envelope.original_content or envelope.content))
            self.envelopes.append(envelope)
        return self.reply


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Inbox, int]]:
    """A real SMTP server (aiosmtpd) on a free local port, in a thread."""
    inbox = _Inbox()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    servers: list[asyncio.base_events.Server] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            loop.create_server(lambda: SMTP(inbox, hostname="localhost"), "127.0.0.1", 0)
        )
        servers.append(server)
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    port = servers[0].sockets[0].getsockname()[1]
    try:
        yield inbox, port
    finally:

        async def stop() -> None:
            servers[0].close()
            await servers[0].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class TestSmtp(NotifierContract):
    @pytest.fixture
    def notifier(self, smtp_server: tuple[_Inbox, int]) -> SmtpNotifier:
        return SmtpNotifier(
            "127.0.0.1", smtp_server[1], sender="care@example.org", timeout=10, clock=FakeClock()
        )

    @pytest.fixture
    def delivered(self, smtp_server: tuple[_Inbox, int]) -> Delivered:
        def read(receipt: Receipt) -> EmailMessage | str:
            found = [m for m in smtp_server[0].received if m["Message-ID"] == receipt.transport_id]
            assert found, "the server did not receive the message"
            return found[-1]

        return read

    def test_round_trip_reads_back_the_same_message(
        self, notifier: SmtpNotifier, smtp_server: tuple[_Inbox, int]
    ) -> None:
        """Through a real SMTP exchange: envelope sender and recipient, headers, both parts."""
        message = sample_message("en")
        notifier.send(message, ContactPoint(ContactSystem.EMAIL, "alex@example.org"))
        inbox = smtp_server[0]
        (mail,) = inbox.received
        (envelope,) = inbox.envelopes
        assert envelope.mail_from == "care@example.org"
        assert envelope.rcpt_tos == ["alex@example.org"]
        assert mail[KEY_HEADER] == message.key
        assert mail["Subject"] == message.subject
        plain = mail.get_body(preferencelist=("plain",))
        assert plain is not None
        assert plain.get_content().replace("\r\n", "\n").strip() == message.text

    @pytest.mark.parametrize(
        ("reply", "retry"), [("451 try later", True), ("554 no", False)], ids=["4xx", "5xx"]
    )
    def test_server_refusals_say_whether_to_retry(
        self, notifier: SmtpNotifier, smtp_server: tuple[_Inbox, int], reply: str, retry: bool
    ) -> None:
        """A 4xx answer is temporary (retry), a 5xx one permanent; the reply text is not shown."""
        smtp_server[0].reply = reply
        with pytest.raises(DeliveryError) as info:
            notifier.send(sample_message(), ContactPoint(ContactSystem.EMAIL, "a@example.org"))
        assert info.value.retry is retry
        assert "later" not in str(info.value)
        assert "no" not in str(info.value).split()

    def test_unreachable_server_is_retryable(self) -> None:
        """Nothing listening: DeliveryError with retry, naming no address."""
        with ClosedPort() as port:
            notifier = SmtpNotifier("127.0.0.1", port, timeout=2)
            with pytest.raises(DeliveryError) as info:
                notifier.send(sample_message(), ContactPoint(ContactSystem.EMAIL, "a@example.org"))
        assert info.value.retry
        assert "a@example.org" not in str(info.value)

    def test_refused_recipient(
        self, notifier: SmtpNotifier, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A server refusing the recipient: a permanent DeliveryError without the address."""

        def refuse(self: smtplib.SMTP, *args: Any, **kwargs: Any) -> None:
            raise smtplib.SMTPRecipientsRefused({"a@example.org": (550, b"no such user")})

        monkeypatch.setattr(smtplib.SMTP, "send_message", refuse)
        with pytest.raises(DeliveryError) as info:
            notifier.send(sample_message(), ContactPoint(ContactSystem.EMAIL, "a@example.org"))
        assert not info.value.retry
        assert "a@example.org" not in str(info.value)

    def test_login_and_starttls_are_used_when_asked(
        self, monkeypatch: pytest.MonkeyPatch, smtp_server: tuple[_Inbox, int]
    ) -> None:
        """starttls and login are called, in that order, before the message is sent."""
        calls: list[str] = []
        monkeypatch.setattr(smtplib.SMTP, "starttls", lambda self, **kw: calls.append("tls"))
        monkeypatch.setattr(smtplib.SMTP, "login", lambda self, u, p: calls.append(f"login {u}"))
        notifier = SmtpNotifier(
            "127.0.0.1", smtp_server[1], starttls=True, username="desk", password="s3cret"
        )
        notifier.send(sample_message(), ContactPoint(ContactSystem.EMAIL, "a@example.org"))
        assert calls == ["tls", "login desk"]
        assert "s3cret" not in repr(notifier)


class ClosedPort:
    """A local port with nothing listening (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        return self.port

    def __exit__(self, *exc: object) -> None:
        return None


def test_receipt_time_is_utc() -> None:
    """A receipt refuses a time that is not UTC."""
    with pytest.raises(ValueError, match="at"):
        Receipt("k", ContactSystem.EMAIL, dt.datetime(2026, 1, 1), "id")  # type: ignore[arg-type]
