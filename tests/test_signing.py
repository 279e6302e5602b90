"""DKIM signatures on the stored bytes, verified after SMTP; VERP envelope senders."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import socket
from collections.abc import Callable
from pathlib import Path

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import Session, select

from alertd.config import Settings, load_settings
from alertd.db import open_database
from alertd.digests.render import build_environment
from alertd.errors import ConfigError
from alertd.mail.identity import VerpTag, envelope_sender, read_verp_tag, sign_message
from alertd.mail.transports import MaildirMailer, SmtpMailer
from alertd.models import OutboxKind, Subscriber
from alertd.web import serve_web

from digest_cases import case_settings, compose_case
from smtp_server import SmtpSink
from waiting import wait_until_async

SELECTOR = "alertd2024"
DOMAIN = "alertd.test"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_path(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


def _dns(rsa_key: rsa.RSAPrivateKey) -> Callable[..., bytes | None]:
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def _signed_settings(tmp_path: Path, key_path: Path) -> Settings:
    base = case_settings(tmp_path, "mixed")
    mail = base.mail.model_copy(update={"dkim_selector": SELECTOR, "dkim_key_path": key_path})
    return base.model_copy(update={"mail": mail})


def _signature_tags(message: bytes) -> dict[str, str]:
    found = re.search(rb"^DKIM-Signature: (.*?)\r\n(?! )", message, re.S | re.M)
    assert found is not None
    flat = re.sub(r"\s+", "", found.group(1).decode())
    return dict(tag.split("=", 1) for tag in flat.split(";") if tag)


@pytest.mark.slow
def test_digest_is_signed_over_list_unsubscribe_and_verifies(
    tmp_path: Path, key_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    signed = compose_case(tmp_path, "mixed", _signed_settings(tmp_path, key_path))
    assert signed.startswith(b"DKIM-Signature: ")
    tags = _signature_tags(signed)
    assert (tags["d"], tags["s"], tags["a"], tags["c"]) == (
        DOMAIN,
        SELECTOR,
        "rsa-sha256",
        "relaxed/relaxed",
    )
    signed_headers = tags["h"].lower().split(":")
    for header in ("from", "to", "subject", "list-unsubscribe", "list-unsubscribe-post"):
        assert header in signed_headers
    assert dkim.verify(signed, dnsfunc=_dns(rsa_key))


@pytest.mark.slow
def test_a_changed_unsubscribe_link_breaks_the_signature(
    tmp_path: Path, key_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    signed = compose_case(tmp_path, "mixed", _signed_settings(tmp_path, key_path))
    tampered = re.sub(rb"(List-Unsubscribe: <https://)alerts", rb"\1evil", signed)
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=_dns(rsa_key))
    added = signed.replace(b"\r\n\r\n", b"\r\nList-Unsubscribe: <https://evil/>\r\n\r\n", 1)
    assert not dkim.verify(added, dnsfunc=_dns(rsa_key))


@pytest.mark.slow
async def test_signed_bytes_are_sent_as_is_from_the_verp_address(
    tmp_path: Path, key_path: Path, rsa_key: rsa.RSAPrivateKey, smtp_sink: SmtpSink
) -> None:
    settings = _signed_settings(tmp_path, key_path)
    mail = settings.mail.model_copy(update={"verp_address": "bounces@alertd.test"})
    smtp = settings.smtp.model_copy(update={"host": smtp_sink.host, "port": smtp_sink.port})
    settings = settings.model_copy(update={"mail": mail, "smtp": smtp})
    stored = compose_case(tmp_path, "mixed", settings)
    sender = envelope_sender(settings, 1)
    async with SmtpMailer(settings.smtp) as mailer:
        await mailer.send(sender, "parent@example.org", stored)
    (received,) = smtp_sink.wait_for_messages(1)
    assert received.mail_from == sender
    assert re.fullmatch(r"bounces\+1-[0-9a-f]{16}@alertd\.test", sender)
    assert received.raw.rstrip(b"\r\n") == stored.rstrip(b"\r\n")
    assert dkim.verify(received.raw, dnsfunc=_dns(rsa_key))


async def test_the_maildir_copy_has_the_envelope_sender_as_return_path(
    tmp_path: Path, key_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = _signed_settings(tmp_path, key_path)
    mail = settings.mail.model_copy(update={"verp_address": "bounces@alertd.test"})
    settings = settings.model_copy(update={"mail": mail})
    stored = compose_case(tmp_path, "mixed", settings)
    sender = envelope_sender(settings, 1)
    async with MaildirMailer(tmp_path / "mail") as mailer:
        await mailer.send(sender, "parent@example.org", stored)
    [copy] = (tmp_path / "mail" / "new").iterdir()
    delivered = copy.read_bytes().replace(b"\n", b"\r\n")
    # As an MTA's local delivery writes it: first, from MAIL FROM; the signature still holds.
    first_line, _, rest = delivered.partition(b"\r\n")
    assert first_line == f"Return-Path: <{sender}>".encode()
    assert rest == stored
    assert dkim.verify(delivered, dnsfunc=_dns(rsa_key))
    assert read_verp_tag(settings, sender) == VerpTag(1, OutboxKind.DIGEST)


def test_unsigned_when_dkim_is_off() -> None:
    assert sign_message(b"Subject: x\r\n\r\nx\r\n", Settings().mail) == b"Subject: x\r\n\r\nx\r\n"


def test_unreadable_or_bad_key_stops_start_up(tmp_path: Path, key_path: Path) -> None:
    settings = _signed_settings(tmp_path, tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="mail.dkim_key_path: cannot read"):
        build_environment(settings)
    key_path.write_text("not a key\n")
    with pytest.raises(ConfigError, match="not a usable RSA private key"):
        build_environment(_signed_settings(tmp_path, key_path))


def test_dkim_selector_and_key_go_together() -> None:
    with pytest.raises(ConfigError, match="dkim_selector and dkim_key_path"):
        load_settings(environ={"ALERTD_MAIL__DKIM_SELECTOR": "s1"})
    with pytest.raises(ConfigError, match="dkim_selector"):
        load_settings(
            environ={"ALERTD_MAIL__DKIM_SELECTOR": "s1\r\nX: y", "ALERTD_MAIL__DKIM_KEY_PATH": "k"}
        )


def test_envelope_sender_without_verp_is_the_from_address() -> None:
    settings = Settings.model_validate({"mail": {"from": "alerts@example.org"}})
    assert envelope_sender(settings, 7) == "alerts@example.org"
    assert read_verp_tag(settings, "alerts@example.org") is None


def test_verp_address_names_the_subscriber_and_cannot_be_forged() -> None:
    settings = Settings.model_validate(
        {"mail": {"verp_address": "bounces@example.org"}, "web": {"secret_key": "k1"}}
    )
    sender = envelope_sender(settings, 42)
    assert sender.startswith("bounces+42-") and sender.endswith("@example.org")
    assert read_verp_tag(settings, sender) == VerpTag(42, OutboxKind.DIGEST)
    assert read_verp_tag(settings, f"<{sender.upper()}>") == VerpTag(42, OutboxKind.DIGEST)
    forged = re.sub(r"\+42-", "+43-", sender)
    assert read_verp_tag(settings, forged) is None
    assert read_verp_tag(settings, sender.replace("example.org", "other.org")) is None
    other_key = Settings.model_validate(
        {"mail": {"verp_address": "bounces@example.org"}, "web": {"secret_key": "k2"}}
    )
    assert read_verp_tag(other_key, sender) is None


def test_verp_tags_use_their_own_subkey_and_survive_a_key_rotation() -> None:
    def verp(**web: object) -> Settings:
        return Settings.model_validate({"mail": {"verp_address": "b@example.org"}, "web": web})

    old = verp(secret_key="k1")
    sender = envelope_sender(old, 42)
    tag = sender.split("+", 1)[1].split("@")[0].split("-")[1]
    # Not the raw key's HMAC of the same text (the signature of the old scheme): a subkey.
    raw = hmac.new(b"k1", b"verp.42", hashlib.sha256).hexdigest()[:16]
    assert tag != raw
    rotated = verp(secret_keys=["k2", "k1"])
    assert read_verp_tag(rotated, sender) == VerpTag(42, OutboxKind.DIGEST)
    assert read_verp_tag(verp(secret_keys=["k2"]), sender) is None  # k1 removed
    assert envelope_sender(verp(secret_keys=["k2", "k1"]), 42) == envelope_sender(
        verp(secret_key="k2"), 42
    )


async def test_a_confirmation_queued_while_smtp_is_down_goes_out_signed_once_it_is_back(
    make_settings: Callable[..., Settings],
    key_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `alertd web` alone: its own sender retries the outbox every send_interval_s.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        smtp_port = probe.getsockname()[1]  # nothing listens there yet
    settings = make_settings(
        mail={
            "delivery": "smtp",
            "dkim_selector": SELECTOR,
            "dkim_key_path": str(key_path),
            "verp_address": "bounces@alertd.test",
        },
        smtp={"host": "127.0.0.1", "port": smtp_port},
        delivery={"send_interval_s": 0.2},
    )
    engine = open_database(settings.database)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_web(settings, engine, stop, sock=sock))
    form = {"email": "late@example.org", "follow": "topic", "query": "visas"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as client:
        for _ in range(100):
            try:
                await client.get("/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        response = await client.post("/signup", data={**form, "step": "subscribe"})
    assert response.status_code == 200 and "Check your email" in response.text
    # A few tries while the server is down: each one stops its delivery run.
    await wait_until_async(
        lambda: sum("delivery stopped" in r.getMessage() for r in caplog.records) >= 2,
        10,
        "a few tries while the server is down",
    )
    with SmtpSink(port=smtp_port) as sink:
        [mail] = await asyncio.to_thread(sink.wait_for_messages, 1, 10.0)
    stop.set()
    await serving
    sock.close()
    with Session(engine) as session:
        subscriber_id = session.exec(select(Subscriber.id)).one()
    engine.dispose()
    assert mail.subject == "Confirm your alert" and mail.rcpt_tos == ["late@example.org"]
    assert mail.raw.startswith(b"DKIM-Signature: ")
    assert dkim.verify(mail.raw, dnsfunc=_dns(rsa_key))
    assert subscriber_id is not None
    assert mail.mail_from == envelope_sender(settings, subscriber_id, OutboxKind.TRANSACTIONAL)
    assert mail.mail_from.startswith("bounces+")
