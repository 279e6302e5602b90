"""Sending identity: DKIM signatures on the stored bytes, and VERP envelope senders."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

import dkim

from alertd.config import MailSettings, Settings
from alertd.errors import ConfigError
from alertd.keys import subkeys
from alertd.models import OutboxKind

# Signed even when absent (so none can be added later): the headers a receiver shows or
# acts on, List-Unsubscribe and List-Unsubscribe-Post included (RFC 8058 asks for both).
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"auto-submitted",
    b"precedence",
    b"reply-to",
    b"cc",
)
# <subscriber id>-<signature> on a digest, <subscriber id>-t-<signature> on a transactional
# mail. The id has at most 19 digits (a 64-bit integer): a longer one is no tag of ours.
_VERP_TAG = re.compile(r"^(\d{1,19})-(t-)?([0-9a-f]{16})$")
# Longer than any address (RFC 5321 caps a path at 256): not read any further.
MAX_ADDRESS_CHARS = 320
_TRANSACTIONAL_MARK = "t-"


@dataclass(frozen=True)
class VerpTag:
    """What a valid VERP tag says: whose mail it was, and what kind of mail."""

    subscriber_id: int
    kind: OutboxKind


def dkim_domain(mail: MailSettings) -> str:
    """The d= domain: ``mail.dkim_domain``, else the domain of ``mail.from``."""
    return mail.dkim_domain or mail.from_address.rpartition("@")[2]


@functools.lru_cache(maxsize=4)
def _read_key(path: Path, mtime_ns: int) -> bytes:
    # Keyed on the modification time too, so a rotated key is picked up without a restart.
    return path.read_bytes()


def _private_key(path: Path) -> bytes:
    try:
        return _read_key(path, path.stat().st_mtime_ns)
    except OSError as exc:
        raise ConfigError(f"config error: mail.dkim_key_path: cannot read {path}: {exc}") from exc


def sign_message(message: bytes, mail: MailSettings) -> bytes:
    """The message with a DKIM-Signature header added on top; unchanged when DKIM is off.

    The bytes returned are what must be sent, as they are: any re-serialisation could
    break the signature.

    Raises:
        ConfigError: the key cannot be read or is not an RSA private key (PEM).
    """
    if mail.dkim_selector is None or mail.dkim_key_path is None:
        return message
    key = _private_key(mail.dkim_key_path)
    try:
        header = dkim.sign(
            message,
            mail.dkim_selector.encode("ascii"),
            dkim_domain(mail).encode("ascii"),
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
    except dkim.DKIMException as exc:
        raise ConfigError(
            f"config error: mail.dkim_key_path: {mail.dkim_key_path} is not a usable "
            f"RSA private key: {exc}"
        ) from exc
    return bytes(header) + message


def _verp_tag(key: bytes, subscriber_id: int, kind: OutboxKind) -> str:
    # The kind is signed too: a digest's tag cannot be turned into a transactional one's.
    if kind == OutboxKind.TRANSACTIONAL:
        signed, mark = f"verp.transactional.{subscriber_id}", _TRANSACTIONAL_MARK
    else:
        # As before kinds were told apart: tags of digests mailed then stay valid.
        signed, mark = f"verp.{subscriber_id}", ""
    # Lower-case hex: some mail servers fold the case of local parts.
    digest = hmac.new(key, signed.encode(), hashlib.sha256)
    return f"{subscriber_id}-{mark}{digest.hexdigest()[:16]}"


def envelope_sender(
    settings: Settings, subscriber_id: int, kind: OutboxKind = OutboxKind.DIGEST
) -> str:
    """The SMTP envelope sender (MAIL FROM) for one subscriber's mail of one kind.

    With ``mail.verp_address`` set (``bounces@example.org``) it is
    ``bounces+<id>-<signature>@example.org`` for a digest and
    ``bounces+<id>-t-<signature>@example.org`` for a transactional mail, so a bounce or a
    complaint names the subscriber and the kind of mail it is about; otherwise it is
    ``mail.from``.
    """
    verp = settings.mail.verp_address
    if verp is None:
        return settings.mail.from_address
    local, _, domain = verp.rpartition("@")
    tag = _verp_tag(subkeys(settings, "verp")[0], subscriber_id, kind)
    return f"{local}+{tag}@{domain}"


def read_verp_tag(settings: Settings, recipient: str) -> VerpTag | None:
    """What the VERP tag of an address says; None if it is no valid tag of ours."""
    verp = settings.mail.verp_address
    if verp is None or len(recipient) > MAX_ADDRESS_CHARS:
        return None
    # Compared without case: some mail servers fold the case of the whole address.
    local, _, domain = recipient.strip().strip("<>").lower().rpartition("@")
    base_local, _, base_domain = verp.lower().rpartition("@")
    prefix = base_local + "+"
    if domain != base_domain or not local.startswith(prefix):
        return None
    found = _VERP_TAG.match(local[len(prefix) :])
    if found is None:
        return None
    subscriber_id = int(found.group(1))
    kind = OutboxKind.TRANSACTIONAL if found.group(2) else OutboxKind.DIGEST
    # Any configured key: a bounce of a mail sent before a key rotation is still ours.
    for key in subkeys(settings, "verp"):
        if hmac.compare_digest(_verp_tag(key, subscriber_id, kind), found.group(0)):
            return VerpTag(subscriber_id, kind)
    return None
