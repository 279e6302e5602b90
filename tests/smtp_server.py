"""A real SMTP server (aiosmtpd, own thread) that records messages and injects server faults."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["mail", "rcpt", "data"]
STAGES: tuple[Stage, ...] = ("mail", "rcpt", "data")
AUTH_REQUIRED = "530 5.7.0 Authentication required"
DEFAULT_TEXTS = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox unavailable, try later",
    451: "4.7.1 Try later",
    452: "4.3.1 Insufficient system storage",
    550: "5.1.1 No such user",
    552: "5.2.2 Mailbox full",
    553: "5.1.3 Bad recipient address syntax",
    554: "5.7.1 Transaction failed",
}
_AFTER_CLOSE_WAIT = 60.0  # the session task is cancelled as soon as the connection is lost


@dataclass(frozen=True)
class ReceivedMessage:
    """One message accepted at end of DATA: envelope, raw bytes (CRLF) and parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    login: str | None = None

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))


@dataclass
class SmtpFault:
    """A server-side fault for matching SMTP commands.

    stage: "mail" (MAIL FROM), "rcpt" (RCPT TO) or "data" (after the message content, before
      the final reply).
    reply: the reply to send instead of 250, e.g. "550 5.1.1 No such user". A reply starting
      with "421" is sent and then the connection is closed.
    address: only commands about this address (the sender at "mail", the recipient at "rcpt",
      any envelope recipient at "data"); case-insensitive. None matches all.
    count: how many matching commands fail; None for every one.
    drop: close the connection without replying.
    stall: seconds to wait before replying (bounded by the sink's ``max_stall``); with no
      reply and no drop, the command then succeeds normally.
    hits: how many commands this rule has affected so far.
    """

    stage: Stage
    reply: str | None = None
    address: str | None = None
    count: int | None = 1
    drop: bool = False
    stall: float = 0.0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown SMTP stage {self.stage!r}")
        if self.reply is not None and not self.reply[:3].isdigit():
            raise ValueError(f"an SMTP reply starts with a 3-digit code: {self.reply!r}")

    def matches(self, stage: Stage, addresses: Iterable[str]) -> bool:
        if self.stage != stage or (self.count is not None and self.hits >= self.count):
            return False
        if self.address is None:
            return True
        return any(a.lower() == self.address.lower() for a in addresses)


@dataclass(frozen=True)
class SmtpEvent:
    """One MAIL/RCPT/DATA command seen by the sink and what it answered."""

    stage: Stage
    addresses: tuple[str, ...]
    outcome: str  # the reply sent, "drop", or "421 ..." for reply-and-close


class _Handler:
    """aiosmtpd handler hooks; all state lives on the SmtpSink."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.sink.auth is not None and not session.authenticated:
            self.sink._record("mail", (address,), AUTH_REQUIRED)
            return AUTH_REQUIRED
        reply = await self.sink._apply_fault(server, "mail", (address,))
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return self.sink._record("mail", (address,), "250 2.1.0 OK")

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = await self.sink._apply_fault(server, "rcpt", (address,))
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return self.sink._record("rcpt", (address,), "250 2.1.5 OK")

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = tuple(envelope.rcpt_tos)
        reply = await self.sink._apply_fault(server, "data", recipients)
        if reply is not None:
            return reply
        raw = envelope.original_content or b""
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        # The parsed copy uses "\n" line ends (raw keeps the CRLFs seen on the wire).
        parser = BytesParser(_class=EmailMessage, policy=default_policy)
        message = parser.parsebytes(raw.replace(b"\r\n", b"\n"))
        received = ReceivedMessage(str(envelope.mail_from), list(recipients), raw, message, login)
        self.sink._store(received)
        return self.sink._record("data", recipients, "250 2.0.0 OK: queued")


class _Controller(Controller):
    """A Controller that listens on an ephemeral port and learns it before self-testing."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = int(self.server.sockets[0].getsockname()[1])
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpSink:
    """A threaded aiosmtpd server on 127.0.0.1 (free port) recording what it receives.

    Works with clients in any thread or process (it is a real socket). Faults are rules
    (SmtpFault) consumed in the order added; each command uses at most one rule.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: tuple[str, str] | None = None,
        max_stall: float = 30.0,
        hostname: str = "smtp-sink.alertd.test",
    ) -> None:
        self.host = host
        self._port = port  # 0: a free one
        self.auth = auth
        self.max_stall = max_stall
        self.hostname = hostname
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._faults: list[SmtpFault] = []
        self._events: list[SmtpEvent] = []
        self._controller: _Controller | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def _smtp_options(self) -> dict[str, Any]:
        if self.auth is None:
            # AUTH stays unadvertised: aiosmtpd offers it only over TLS by default.
            return {}
        # Offer AUTH over plain TCP. auth_required stays False (True would warn); MAIL is
        # refused with 530 before AUTH instead (see _Handler.handle_MAIL).
        return {"authenticator": self._authenticate, "auth_require_tls": False}

    def start(self) -> Self:
        if self._controller is not None:
            raise RuntimeError("already started")
        controller = _Controller(
            _Handler(self),
            hostname=self.host,
            port=self._port,
            server_hostname=self.hostname,
            ready_timeout=10.0,
            **self._smtp_options(),
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop the server; stalled sessions are cancelled. Idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Self:
        return self.start() if self._controller is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the SMTP sink is not running")
        return int(self._controller.port)

    # -- results --------------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    def messages_to(self, address: str) -> list[ReceivedMessage]:
        wanted = address.lower()
        return [m for m in self.messages if wanted in (r.lower() for r in m.rcpt_tos)]

    @property
    def events(self) -> list[SmtpEvent]:
        """Every MAIL/RCPT/DATA command handled, with the reply given, oldest first."""
        with self._lock:
            return list(self._events)

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._messages)} of {count} messages arrived")
                self._lock.wait(remaining)
            return list(self._messages)

    def reset(self) -> None:
        """Forget messages, events and fault rules."""
        with self._lock:
            self._messages.clear()
            self._events.clear()
            self._faults.clear()

    # -- faults ---------------------------------------------------------------------------------

    def add_fault(self, fault: SmtpFault) -> SmtpFault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def reject_recipient(
        self, address: str, reply: str = "550 5.1.1 No such user", count: int | None = None
    ) -> SmtpFault:
        """Answer RCPT TO:<address> with ``reply`` (every time unless ``count``)."""
        return self.add_fault(SmtpFault("rcpt", reply, address=address, count=count))

    def fail_rcpt(
        self,
        address: str | None = None,
        code: int = 550,
        text: str | None = None,
        *,
        count: int | None = 1,
    ) -> SmtpFault:
        """Answer the next ``count`` RCPT TO:<address> (any address if None) with ``code``.

        The text defaults to a usual one for the code, e.g. 451 "4.7.1 Try later", 550
        "5.1.1 No such user"; 421 also closes the connection.
        """
        return self.fail_next("rcpt", _reply(code, text), count, address=address)

    def fail_data(
        self,
        code: int = 451,
        text: str | None = None,
        *,
        count: int | None = 1,
        address: str | None = None,
    ) -> SmtpFault:
        """Answer the end of the next ``count`` DATA (to ``address`` if given) with ``code``."""
        return self.fail_next("data", _reply(code, text), count, address=address)

    def fail_next(
        self, stage: Stage, reply: str, count: int | None = 1, *, address: str | None = None
    ) -> SmtpFault:
        """Answer the next ``count`` commands at ``stage`` with ``reply`` (e.g. "451 4.7.1 ...")."""
        return self.add_fault(SmtpFault(stage, reply, address=address, count=count))

    def drop_next(self, stage: Stage = "data", count: int | None = 1) -> SmtpFault:
        """Close the connection without replying (at "data": after the content arrived)."""
        return self.add_fault(SmtpFault(stage, drop=True, count=count))

    def stall_next(
        self, stage: Stage, seconds: float, count: int | None = 1, *, reply: str | None = None
    ) -> SmtpFault:
        """Wait ``seconds`` before replying (normally, or with ``reply``)."""
        return self.add_fault(SmtpFault(stage, reply, count=count, stall=seconds))

    @property
    def faults(self) -> list[SmtpFault]:
        with self._lock:
            return list(self._faults)

    # -- internals (called on the server's event loop thread) -----------------------------------

    def _take_fault(self, stage: Stage, addresses: tuple[str, ...]) -> SmtpFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(stage, addresses):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, stage: Stage, addresses: tuple[str, ...], outcome: str) -> str:
        with self._lock:
            self._events.append(SmtpEvent(stage, addresses, outcome))
        return outcome

    def _store(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()

    async def _apply_fault(
        self, server: SMTP, stage: Stage, addresses: tuple[str, ...]
    ) -> str | None:
        """The reply a fault imposes, or None to carry on normally."""
        fault = self._take_fault(stage, addresses)
        if fault is None:
            return None
        if fault.stall > 0:
            await asyncio.sleep(min(fault.stall, self.max_stall))
        if fault.drop:
            self._record(stage, addresses, "drop")
            await _close(server)
        if fault.reply is None:
            return None
        self._record(stage, addresses, fault.reply)
        if fault.reply.startswith("421"):
            await server.push(fault.reply)
            await _close(server)
        return fault.reply

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            self.auth is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self.auth
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


def _reply(code: int, text: str | None) -> str:
    return f"{code} {text or DEFAULT_TEXTS.get(code, 'Error')}"


async def _close(server: SMTP) -> None:
    """Close the client connection; the session task is then cancelled while waiting here."""
    if server.transport is not None:
        server.transport.close()
    await asyncio.sleep(_AFTER_CLOSE_WAIT)
    raise ConnectionResetError("connection closed by the SMTP sink")
