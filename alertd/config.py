"""Settings: one frozen object from TOML, overlaid by ALERTD_<SECTION>__<KEY> variables."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from alertd.errors import ConfigError
from alertd.redact import redact

ENV_PREFIX = "ALERTD_"
CONFIG_ENV = "ALERTD_CONFIG"
DEFAULT_SECRET_KEY = "change-me"
# HMAC-SHA256 keys: shorter than the hash's own 32 bytes, a key is the weak point of a link.
MIN_SECRET_KEY_BYTES = 32
# A bearer token for /metrics on the public port: guessed online, so as long as a key.
MIN_METRICS_TOKEN_CHARS = 32
# Below this many different characters a secret is a pattern, not random: 32 random hex
# digits hold about 14 different ones (fewer than 7: a chance of about one in 10^9).
MIN_SECRET_DISTINCT_CHARS = 7


def http_url(url: str) -> str:
    """The URL, if it is an absolute http(s) one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return url


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class DatabaseSettings(_Section):
    url: str = "sqlite:///alertd.db"
    busy_timeout_ms: int = Field(default=10_000, ge=0)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return _home_written_out(url)


def _home_written_out(url: str) -> str:
    """A SQLite URL whose path starts with ~ or ~user, with that home folder written out:
    sqlite3 itself would look for a folder named "~"."""
    scheme, separator, path = url.partition(":///")
    if not scheme.startswith("sqlite") or not separator or not path.startswith("~"):
        return url
    try:
        expanded = Path(path).expanduser()
    except RuntimeError:
        raise ValueError(f"no home folder for {path.split('/', 1)[0]}") from None
    return f"{scheme}:///{expanded}"


class ParliamentSettings(_Section):
    enabled: bool = True
    base_url: str = "https://questions-statements-api.parliament.uk"
    poll_interval_minutes: int = Field(default=30, ge=1)
    lookback_days: int = Field(default=3, ge=0)
    page_size: int = Field(default=100, ge=1, le=1000)
    timeout_s: float = Field(default=30.0, gt=0)
    detail_concurrency: int = Field(default=4, ge=1, le=32)
    retry_base_s: float = Field(default=2.0, gt=0)
    user_agent: str = "alertd/0.1 (+https://github.com/alertd)"
    # Every fetch of the daemon (this API, feeds): the whole of it, redirects and body
    # included, ends within fetch_deadline_s; a body larger than max_response_bytes once
    # decoded (gzip included) is refused.
    fetch_deadline_s: float = Field(default=60.0, gt=0)
    max_response_bytes: int = Field(default=5_000_000, ge=1024)
    # Also list the questions tabled in the window (for alerts that hear about them).
    poll_tabled: bool = True


class StatementsSettings(_Section):
    """Ministers' written statements, from the same API as the questions."""

    # Unset: as parliament.enabled (turning Parliament off runs alertd on feeds alone).
    enabled: bool | None = None
    poll_interval_minutes: int = Field(default=60, ge=1)


class HansardSettings(_Section):
    """What is said in debates, from the Hansard API (the look-back and fetch bounds are
    parliament's)."""

    # Unset: as parliament.enabled (turning Parliament off runs alertd on feeds alone).
    enabled: bool | None = None
    base_url: str = "https://hansard-api.parliament.uk"
    poll_interval_minutes: int = Field(default=60, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)


class OralQuestionsSettings(_Section):
    """Oral questions and Early Day Motions, from the Oral Questions and Motions API (the
    look-back and fetch bounds are parliament's)."""

    # Unset: as parliament.enabled.
    enabled: bool | None = None
    base_url: str = "https://oralquestionsandmotions-api.parliament.uk"
    poll_interval_minutes: int = Field(default=60, ge=1)
    # Motions tabled this many days back are listed on each poll, to hear of new signatures.
    signatures_days: int = Field(default=60, ge=0, le=400)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)


class MailSettings(_Section):
    from_address: str = Field(default="alerts@localhost", alias="from")
    from_name: str = "alertd"
    delivery: Literal["maildir", "smtp"] = "maildir"
    maildir: Path = Path("./mail")
    # DKIM signing (both set, or neither): a PEM RSA private key and its DNS selector.
    dkim_selector: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    dkim_key_path: Path | None = None
    dkim_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
    # VERP: envelope sender bounces+<subscriber tag>@domain, from this base address.
    verp_address: str | None = None

    @field_validator("from_address", "verp_address")
    @classmethod
    def _address_shape(cls, address: str | None) -> str | None:
        if address is None:
            return None
        if "@" not in address or any(c in address for c in "\r\n\0 <>"):
            raise ValueError("must be a bare email address such as alerts@example.org")
        return address

    @field_validator("verp_address")
    @classmethod
    def _verp_base(cls, address: str | None) -> str | None:
        if address is not None and "+" in address:
            raise ValueError("must have no '+': alertd adds +<tag> to it")
        return address

    @field_validator("from_name")
    @classmethod
    def _one_line(cls, name: str) -> str:
        if any(c in name for c in "\r\n\0"):
            raise ValueError("must be one line")
        return name

    @model_validator(mode="after")
    def _dkim_pair(self) -> MailSettings:
        if (self.dkim_selector is None) != (self.dkim_key_path is None):
            raise ValueError("dkim_selector and dkim_key_path must be set together")
        return self


class SmtpSettings(_Section):
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    connections: int = Field(default=4, ge=1, le=64)
    max_per_second: float | None = Field(default=None, gt=0)
    # Reconnect after this many messages: relays cap messages per session (421 past it).
    messages_per_connection: int = Field(default=100, ge=1)
    # A username/password with tls = "none" to a host other than loopback is refused at start
    # (the password would cross the network in clear) unless this is true.
    allow_cleartext_password: bool = False


class WebSettings(_Section):
    base_url: str = "http://localhost:8000"
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    host: str = "127.0.0.1"
    # 0 picks any free port (several workers on one machine, tests).
    port: int = Field(default=8000, ge=0, le=65535)
    # Proxies whose X-Forwarded-For/-Proto are believed (uvicorn's forwarded_allow_ips).
    forwarded_allow_ips: str = "127.0.0.1"
    confirm_days: int = Field(default=7, ge=1)
    max_alerts_per_address: int = Field(default=50, ge=1)
    signups_per_ip_per_hour: int = Field(default=20, ge=1)
    mails_per_ip_per_hour: int = Field(default=20, ge=1)
    mails_per_address_per_hour: int = Field(default=3, ge=1)
    lookups_per_ip_per_minute: int = Field(default=60, ge=1)
    # Previews and sign-up breadth checks (each reads the stored history): at most this many
    # computed at once by a process, the rest refused with 503; and per client IP a minute.
    preview_concurrency: int = Field(default=2, ge=1, le=64)
    previews_per_ip_per_minute: int = Field(default=10, ge=1)
    # Request bodies larger than this are refused with 413, before the app reads them.
    max_body_bytes: int = Field(default=65_536, ge=1024)
    # /metrics on its own listener (metrics_host:metrics_port), never on the public port; no
    # port: not served, unless metrics_token is set (then also on the public port, for a
    # request with "Authorization: Bearer <token>").
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_token: SecretStr | None = None
    # /openapi.json and /docs on the public app.
    openapi_docs: bool = False
    # Whether previews and sign-up breadth estimates (open to anyone) count feed items.
    preview_feed_items: bool = False
    # Key rotation: newest first (it signs), every one verifies; replaces secret_key when set.
    secret_keys: tuple[SecretStr, ...] = ()
    # `alertd run` serves the web app too; false on all but one worker of a machine (or give
    # each its own port): two cannot listen on one port.
    enabled: bool = True

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url).rstrip("/")

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
        # From the environment (ALERTD_WEB__SECRET_KEYS) the keys come comma-separated.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def signing_keys(self) -> tuple[str, ...]:
        """The keys that sign (the first) and verify (all): secret_keys, else secret_key."""
        if self.secret_keys:
            return tuple(key.get_secret_value() for key in self.secret_keys)
        return (self.secret_key.get_secret_value(),)


class MembersSettings(_Section):
    """The Members API, for finding Members by name (results cached in the database)."""

    base_url: str = "https://members-api.parliament.uk"
    timeout_s: float = Field(default=10.0, gt=0)
    cache_hours: float = Field(default=24.0, ge=0)
    # One lookup, redirects and body included, and its body's size once decoded.
    fetch_deadline_s: float = Field(default=15.0, gt=0)
    max_response_bytes: int = Field(default=1_000_000, ge=1024)
    # Cached searches kept at most (the oldest go first); older than cache_hours go anyway.
    cache_max_rows: int = Field(default=10_000, ge=1)
    # Members named only by id in a poll's items are looked up by id, at most this many a poll.
    lookups_per_poll: int = Field(default=50, ge=0, le=1000)


class DigestSettings(_Section):
    daily_at: time = time(7, 0)
    weekly_day: Literal[
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"
    ] = "monday"
    timezone: str = "Europe/London"
    max_per_alert: int = Field(default=20, ge=1)
    excerpt_chars: int = Field(default=400, ge=50)
    # A folder of templates (digest.txt, digest.html) that replace the shipped ones.
    templates_dir: Path | None = None
    # Worker processes that render digests, for a machine with cores to spare; 0: render in
    # the daemon's own process.
    render_processes: int = Field(default=0, ge=0, le=64)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
        return name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class DeliverySettings(_Section):
    retry_for_hours: float = Field(default=72.0, gt=0)
    max_bounces: int = Field(default=3, ge=1)
    batch_size: int = Field(default=5000, ge=1)
    send_interval_s: float = Field(default=60.0, gt=0)
    lease_s: float = Field(default=300.0, gt=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    # The backoff between attempts at one message doubles from first_retry_s up to
    # max_retry_s (Postfix's minimal_backoff_time / maximal_backoff_time).
    first_retry_s: float = Field(default=300.0, gt=0)
    max_retry_s: float = Field(default=21600.0, gt=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> DeliverySettings:
        if self.max_retry_s < self.first_retry_s:
            raise ValueError("max_retry_s must be at least first_retry_s")
        return self


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


FEED_NAME_MAX = 95


class FeedConfig(_Section):
    """One [[feeds]] entry: an RSS or Atom feed polled as a source."""

    name: str
    url: str
    poll_interval_minutes: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _readable_name(cls, name: str) -> str:
        # Shown in lists, logs and digests, and stored as "feed:NAME" (at most 100 characters).
        if not name or not name[0].isalnum():
            raise ValueError("a feed name must start with a letter or a digit")
        if len(name) > FEED_NAME_MAX:
            raise ValueError(f"a feed name can be at most {FEED_NAME_MAX} characters long")
        if name != name.rstrip() or any(not c.isprintable() for c in name):
            raise ValueError("a feed name cannot hold control characters or end in a space")
        return name

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)


class Settings(_Section):
    database: DatabaseSettings = DatabaseSettings()
    parliament: ParliamentSettings = ParliamentSettings()
    mail: MailSettings = MailSettings()
    smtp: SmtpSettings = SmtpSettings()
    web: WebSettings = WebSettings()
    members: MembersSettings = MembersSettings()
    digest: DigestSettings = DigestSettings()
    delivery: DeliverySettings = DeliverySettings()
    log: LogSettings = LogSettings()
    feeds: tuple[FeedConfig, ...] = ()
    statements: StatementsSettings = StatementsSettings()
    hansard: HansardSettings = HansardSettings()
    oral_questions: OralQuestionsSettings = OralQuestionsSettings()

    def as_parliament(self, enabled: bool | None) -> bool:
        """Whether a source of Parliament's business whose ``enabled`` is unset follows
        ``parliament.enabled`` (turning Parliament off runs alertd on feeds alone)."""
        return self.parliament.enabled if enabled is None else enabled

    @property
    def polls_statements(self) -> bool:
        """Whether the written statements are polled: ``statements.enabled``, else as
        ``parliament.enabled``."""
        return self.as_parliament(self.statements.enabled)


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the Settings from a TOML file (or none) and the environment.

    Args:
        path: the TOML file; when None, ``ALERTD_CONFIG`` names it, else defaults apply.
        environ: the environment to read ``ALERTD_<SECTION>__<KEY>`` overrides from.

    Raises:
        ConfigError: the file is unreadable, or a key is unknown or has a bad value.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    data: dict[str, Any] = _read_toml(Path(path)) if path is not None else {}
    # Where a setting came from the environment, its errors name the variable, not a key.
    variables: dict[tuple[str, ...], str] = {}
    for name, section, key, value in _env_overrides(env):
        if section not in data:
            variables.setdefault((section,), name)
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"config error: {section} must be a table")
        target[key] = value
        variables[(section, key)] = name
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, variables)) from None
    _check_secret(settings)
    _check_metrics_token(settings)
    _check_smtp_password(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
    """Each ALERTD_SECTION__KEY variable as (its name, section, key, value)."""
    # Only SECTION__KEY names are settings: ALERTD_CONFIG and ALERTD_TEST_* are not.
    overrides = []
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not section or not key:
            raise ConfigError(f"config error: environment variable {name} names no setting")
        overrides.append((name, section, key, value))
    return overrides


def _describe(exc: ValidationError, variables: Mapping[tuple[str, ...], str]) -> str:
    error = exc.errors()[0]
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        if loc in variables:
            return f"config error: unknown setting {variables[loc]} (environment)"
        return f"config error: unknown key {key}"
    # A bad value (or an item of one, web.secret_keys.0) of a setting; not a whole section's.
    variable = variables.get(loc[:2]) if len(loc) >= 2 else None
    if variable is not None:
        key = f"{key} (environment {variable})"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    secret = any(word in key for word in ("secret", "password", "token"))
    shown = "" if secret or isinstance(value, dict) else f" ({value!r})"
    return redact(f"config error: {key}: {message}{shown}")


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine only (localhost, 127.0.0.0/8, ::1)."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_public(web: WebSettings) -> bool:
    """Whether the web app can be reached from other machines: a public base_url, or a
    listener on an address other than loopback (0.0.0.0, a LAN address)."""
    return not is_loopback(urlsplit(web.base_url).hostname or "") or not is_loopback(web.host)


def is_guessable(secret: str) -> bool:
    """Whether a secret of any length is a pattern someone would try: few different
    characters ("a" * 32), a shorter piece repeated ("abcd" * 8), or mostly counting up or
    down ("abcdef…", "123456…"). Not an entropy measure: only what no random value looks like."""
    if len(set(secret)) < MIN_SECRET_DISTINCT_CHARS:
        return True
    if secret in (secret + secret)[1:-1]:
        return True
    steps = [ord(b) - ord(a) for a, b in zip(secret, secret[1:], strict=False)]
    return sum(step in (-1, 0, 1) for step in steps) * 2 > len(steps)


def secret_key_problem(name: str, key: str, web: WebSettings) -> str | None:
    """Why one signing key is refused (None when it is fine): a public app needs a key of
    at least MIN_SECRET_KEY_BYTES bytes that is not the shipped default."""
    if not is_public(web):
        return None
    if key == DEFAULT_SECRET_KEY:
        return (
            f"config error: {name} is the default; set a long random value (openssl rand -hex 32)"
        )
    if len(key.encode()) < MIN_SECRET_KEY_BYTES:
        return (
            f"config error: {name} is shorter than {MIN_SECRET_KEY_BYTES} bytes; "
            "set a long random value (openssl rand -hex 32)"
        )
    if is_guessable(key):
        return (
            f"config error: {name} is a pattern, not a random value; "
            "set a long random value (openssl rand -hex 32)"
        )
    return None


def configured_secret_keys(web: WebSettings) -> list[tuple[str, str]]:
    """Every signing key with the setting it comes from, for the checks."""
    if web.secret_keys:
        return [
            (f"web.secret_keys[{index}]", key.get_secret_value())
            for index, key in enumerate(web.secret_keys)
        ]
    return [("web.secret_key", web.secret_key.get_secret_value())]


def _check_secret(settings: Settings) -> None:
    web = settings.web
    single = web.secret_key.get_secret_value()
    if web.secret_keys and single != DEFAULT_SECRET_KEY and single not in web.signing_keys:
        # Both set and disagreeing: which one signs would be a guess.
        raise ConfigError(
            "config error: web.secret_key is set but not listed in web.secret_keys: "
            "put it in web.secret_keys (newest first) and remove web.secret_key"
        )
    for name, key in configured_secret_keys(settings.web):
        problem = secret_key_problem(name, key, settings.web)
        if problem is not None:
            raise ConfigError(problem)


def _check_metrics_token(settings: Settings) -> None:
    # Checked whether or not the app is public: a token is only set to open /metrics on the
    # public port.
    token = settings.web.metrics_token
    if token is None:
        return
    value = token.get_secret_value()
    if len(value) < MIN_METRICS_TOKEN_CHARS or is_guessable(value):
        raise ConfigError(
            f"config error: web.metrics_token must be at least {MIN_METRICS_TOKEN_CHARS} "
            "random characters; set one with openssl rand -hex 32"
        )


def _check_smtp_password(settings: Settings) -> None:
    smtp = settings.smtp
    if settings.mail.delivery != "smtp" or smtp.tls != "none" or smtp.allow_cleartext_password:
        return
    if (smtp.username or smtp.password) and not is_loopback(smtp.host):
        raise ConfigError(
            "config error: smtp.password would be sent in clear to "
            f"{smtp.host}: set smtp.tls to starttls or implicit "
            "(or smtp.allow_cleartext_password = true)"
        )
