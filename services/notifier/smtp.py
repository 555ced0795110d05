"""SMTP adapter on aiosmtplib: a pool of reused connections, a token-bucket rate limit, and one send
attempt classified into an outcome the mailer can act on (retry, fail, stop, uncertain)."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum

import aiosmtplib
from aiosmtplib import SMTPResponseException, SMTPServerDisconnected, SMTPStatus
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from services.settings import SmtpSettings


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # 4xx or a connection error before the message was handed over
    FAILED = "failed"  # 5xx: permanent for this message
    UNCERTAIN = "uncertain"  # connection lost after DATA was accepted, before the final reply
    CONFIG = "config"  # 530/535, or its TLS certificate is not trusted: stop sending and alert


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    code: int | None
    reason: str  # the server's reply text, trimmed; never message content


class TokenBucket:
    """``rate`` tokens a second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class SmtpPool:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.smtp_pool_size)
        self.bucket = TokenBucket(settings.smtp_rate_per_second)

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        context = None
        if s.smtp_security != "none":  # certificate and host name verified (create_default_context)
            context = ssl.create_default_context(cafile=str(s.smtp_ca_file) if s.smtp_ca_file else None)
            if s.smtp_ca_file:
                context.load_default_certs()
        return aiosmtplib.SMTP(
            hostname=s.smtp_host, port=s.smtp_port, timeout=s.smtp_timeout_seconds,
            use_tls=s.smtp_security == "tls", start_tls=s.smtp_security == "starttls",
            tls_context=context,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )

    async def _checkout(self) -> aiosmtplib.SMTP:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
        client = self._client()
        await client.connect()
        return client

    async def send(self, message: EmailMessage | bytes, sender: str, recipient: str,
                   before_data: Callable[[], Awaitable[None]] | None = None) -> Attempt:
        """One attempt. The message is handed over as MAIL, RCPT, DATA; after the server accepts
        DATA (354), a lost connection leaves the outcome unknown (RFC 1047)."""
        await self.bucket.take()
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            handed_over = False
            try:
                client = await self._checkout()
                await client.mail(sender)
                await client.rcpt(recipient)
                if before_data is not None:
                    await before_data()
                start = await client.execute_command(b"DATA")
                if start.code != SMTPStatus.start_input:
                    raise SMTPResponseException(start.code, start.message)
                handed_over = True
                data = message if isinstance(message, bytes) else message.as_bytes()
                reply = await _transfer(client, data)
                if reply.code != SMTPStatus.completed:
                    raise SMTPResponseException(reply.code, reply.message)
                self._idle.put_nowait(client)
                client = None
                return Attempt(Outcome.SENT, reply.code, scrub(reply.message))
            except SMTPResponseException as exc:
                await _reset(client)
                if client is not None and client.is_connected:
                    self._idle.put_nowait(client)
                    client = None
                return _classify(exc.code, exc.message)
            except ssl.SSLCertVerificationError as exc:  # a configuration fault: retrying cannot help
                return Attempt(Outcome.CONFIG, None, f"relay certificate not trusted: {exc.verify_message}")
            except (SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPConnectError,
                    ConnectionError, OSError) as exc:
                cause = exc.__cause__ or exc.__context__  # implicit TLS: aiosmtplib wraps the TLS error
                if isinstance(cause, ssl.SSLCertVerificationError):
                    return Attempt(Outcome.CONFIG, None, f"relay certificate not trusted: {cause.verify_message}")
                if handed_over:
                    return Attempt(Outcome.UNCERTAIN, None, f"connection lost after DATA: {type(exc).__name__}")
                return Attempt(Outcome.RETRY, None, f"connection error: {type(exc).__name__}")
            finally:
                if client is not None:
                    client.close()

    async def probe(self) -> None:
        """Readiness: a connection of our own (greeting, EHLO, TLS and login as configured), then QUIT.
        Raises what connecting raises; the pool's connections are left alone."""
        client = self._client()
        try:
            await client.connect()
            await client.quit()
        finally:
            client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


async def _transfer(client: aiosmtplib.SMTP, message: bytes) -> aiosmtplib.SMTPResponse:
    """The message after a 354: what aiosmtplib's ``execute_data_command`` does past its own DATA, so
    that we know the moment the content is handed over (a loss after it is UNCERTAIN)."""
    protocol = client.protocol
    if protocol is None:
        raise SMTPServerDisconnected("connection lost")
    body = data_body(message)
    protocol._response_pending = True
    protocol.write(body)
    return await protocol.read_response(timeout=client.timeout)


def data_body(message: bytes) -> bytes:
    """What goes on the wire after a 354, exactly as aiosmtplib writes it: every line end CRLF, a dot
    at the start of a line doubled, the final dot. The regular expressions are skipped when they
    would change nothing (a message already in CRLF without a leading dot: what ``to_bytes`` writes)."""
    crlf = message.count(b"\r\n")
    if not (message.endswith(b"\r\n") and message.count(b"\r") == crlf == message.count(b"\n")):
        message = normalize_message_line_endings(message)
    if message.startswith(b".") or b"\n." in message:
        message = PERIOD_REGEX.sub(b"..", message)
    return message + b".\r\n"


async def _reset(client: aiosmtplib.SMTP | None) -> None:
    if client is not None and client.is_connected:
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")


def scrub(text: str | None) -> str:
    """A server reply made safe for logs and status events: addresses removed, trimmed."""
    return _ADDRESS.sub("<address>", text or "")[:200]


def _classify(code: int, message: str) -> Attempt:
    text = scrub(message)
    if code in (530, 535, 534, 538):
        return Attempt(Outcome.CONFIG, code, text)
    if 400 <= code < 500:
        return Attempt(Outcome.RETRY, code, text)
    return Attempt(Outcome.FAILED, code, text)
