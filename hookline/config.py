"""Every process's configuration, read once from the environment at start."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Literal, TypeVar, get_args
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_SECRET_BYTES = 16  # 128 bits: a shorter HMAC key or token can be guessed
# Values anyone can read (shipped once in deploy/secrets/, or marked as `hookline up`'s own):
# a process takes them only when HOOKLINE_ENV=development.
DEVELOPMENT_MARK = "hookline-dev-"
_WELL_KNOWN = frozenset({
    "dev-operator-token", "whsec_hookline-dev-stripe",
    "whsec_aG9va2xpbmUtZGV2LWJvb2tpbmdzLXNlY3JldC0zMmI=",
    "whsec_aG9va2xpbmUtZGV2LXRyYW5zYWN0aW9ucy1zZWNyZXQ=",
})


class SettingsError(Exception):
    """A setting is invalid; the message names the variable and what is wrong."""


Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = get_args(Role)
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class OperatorToken:
    """Who may call the operator API: a name (what the audit trail shows), a role, a token."""

    name: str
    role: Role
    token: str = field(repr=False)  # a printed Settings must not show it

    def may(self, role: Role) -> bool:
        """Whether this token's role includes `role` (an operator may do what a viewer may)."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Settings:
    amqp_url: str = "amqp://guest:guest@localhost:5672/%2F"
    database_url: str = "postgresql+psycopg://postgres@localhost:5432/hookline"
    stream: str = "hookline.events"
    partitions: int = 1
    stream_max_bytes: int = 20_000_000_000
    stream_max_age: str | None = None
    stream_max_segment_bytes: int | None = None
    stream_replicas: int | None = None
    smtp_url: str | None = None
    stripe_secrets: tuple[str, ...] = ()
    stripe_tolerance: int = 300
    chapa_secrets: tuple[str, ...] = ()
    chapa_secret_only_signatures: bool = False  # True: taken, but marked untrusted
    bookings_secrets: tuple[str, ...] = ()
    transactions_secrets: tuple[str, ...] = ()
    bookings_public_keys: tuple[str, ...] = ()
    transactions_public_keys: tuple[str, ...] = ()
    transactions_unsigned: bool = False  # development only: accept them, never trusted
    operator_tokens: tuple[OperatorToken, ...] = ()
    metrics_tokens: tuple[str, ...] = ()
    console_secret: str | None = None  # signs the console's session cookie; unset: no console
    development: bool = False
    booking_ttl: int = 15 * 60
    payment_timeout: int = 3 * 86400
    max_body_bytes: int = 256 * 1024
    publish_timeout: float = 5.0
    ingest_bind: str = "127.0.0.1:8000"
    api_bind: str = "127.0.0.1:8001"
    # where gunicorn listens behind `hookline front` (which serves the two binds above)
    ingest_internal_bind: str = "127.0.0.1:8010"
    api_internal_bind: str = "127.0.0.1:8011"
    projector_metrics_bind: str = "127.0.0.1:8002"
    projector_batch: int = 2000  # measured: 500 → 2000 gave a quarter more records/s
    schedule_interval: int = 10
    scheduler_metrics_bind: str = "127.0.0.1:8004"
    mail_from: str = "hookline <no-reply@localhost>"
    mail_max_attempts: int = 8
    mail_backoff_base: float = 30.0
    mailer_metrics_bind: str = "127.0.0.1:8003"
    dev_smtp_bind: str = "127.0.0.1:8025"
    accept_gaps: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker's nodes, in the order clients try them."""
        return tuple(self.amqp_url.split(","))

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream of the log, partition 0 first."""
        return tuple(stream_name(self.stream, k, self.partitions) for k in range(self.partitions))

    def stream_for(self, subject: str) -> str:
        """The stream a record about `subject` is appended to."""
        return stream_name(self.stream, partition_of(subject, self.partitions), self.partitions)

    def partition(self, k: int) -> Settings:
        """These settings as seen by a reader of partition k: `stream` is that partition's."""
        return replace(self, stream=self.streams[k], partitions=1)

    @property
    def psycopg_url(self) -> str:
        """The database URL as libpq understands it (no SQLAlchemy driver suffix)."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def mask_url(url: str) -> str:
    """The URL with its password replaced, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from HOOKLINE_* variables, raising SettingsError on the first bad one."""
    env = os.environ if env is None else env
    development = _Reader(env, True).parsed("HOOKLINE_ENV", False, _environment,
                                             "production or development")
    read = _Reader(env, development)
    settings = Settings(
        amqp_url=read.parsed("HOOKLINE_AMQP_URL", Settings.amqp_url, _amqp_url,
                             "an amqp:// or amqps:// URL, or several separated by commas",
                             secret=True),
        database_url=read.parsed("HOOKLINE_DATABASE_URL", Settings.database_url, _database_url,
                                 "a postgresql:// or postgresql+psycopg:// URL", secret=True),
        stream=read.text("HOOKLINE_STREAM", Settings.stream),
        partitions=read.parsed("HOOKLINE_PARTITIONS", Settings.partitions, _partitions,
                               f"a whole number from 1 to {MAX_PARTITIONS}"),
        stream_max_bytes=read.parsed("HOOKLINE_STREAM_MAX_BYTES", Settings.stream_max_bytes,
                                     _positive_int, "a positive whole number of bytes"),
        stream_max_age=read.optional("HOOKLINE_STREAM_MAX_AGE", _stream_age,
                                     "an age such as 7D, 12h, 30m (units Y M D h m s)"),
        stream_max_segment_bytes=read.optional("HOOKLINE_STREAM_MAX_SEGMENT_BYTES", _positive_int,
                                               "a positive whole number of bytes"),
        stream_replicas=read.optional("HOOKLINE_STREAM_REPLICAS", _positive_int,
                                      "a positive whole number of nodes, such as 3"),
        smtp_url=read.optional("HOOKLINE_SMTP_URL", _smtp_url,
                               "an smtp:// or smtps:// URL", secret=True),
        stripe_secrets=read.secrets("HOOKLINE_STRIPE_SECRETS"),
        stripe_tolerance=read.parsed("HOOKLINE_STRIPE_TOLERANCE", Settings.stripe_tolerance,
                                     parse_duration, "a duration such as 300, 300s or 5m"),
        chapa_secrets=read.secrets("HOOKLINE_CHAPA_SECRETS"),
        chapa_secret_only_signatures=read.parsed(
            "HOOKLINE_CHAPA_SECRET_ONLY_SIGNATURES", False, _allow, "allow or refuse"),
        bookings_secrets=read.secrets("HOOKLINE_BOOKINGS_SECRETS", standard=True),
        transactions_secrets=read.secrets("HOOKLINE_TRANSACTIONS_SECRETS", standard=True),
        bookings_public_keys=read.secrets("HOOKLINE_BOOKINGS_PUBLIC_KEYS"),
        transactions_public_keys=read.secrets("HOOKLINE_TRANSACTIONS_PUBLIC_KEYS"),
        transactions_unsigned=read.parsed("HOOKLINE_TRANSACTIONS_UNSIGNED", False, _allow,
                                          "allow or refuse"),
        operator_tokens=read.operator_tokens("HOOKLINE_OPERATOR_TOKENS"),
        metrics_tokens=read.secrets("HOOKLINE_METRICS_TOKENS"),
        console_secret=read.secret("HOOKLINE_CONSOLE_SECRET"),
        development=development,
        booking_ttl=read.parsed("HOOKLINE_BOOKING_TTL", Settings.booking_ttl, parse_duration,
                                "a duration such as 900, 900s, 15m, 2h or 3d"),
        payment_timeout=read.parsed("HOOKLINE_PAYMENT_TIMEOUT", Settings.payment_timeout,
                                    parse_duration, "a duration such as 3d, 72h or 259200"),
        max_body_bytes=read.parsed("HOOKLINE_MAX_BODY_BYTES", Settings.max_body_bytes,
                                   _positive_int, "a positive whole number of bytes"),
        publish_timeout=read.parsed("HOOKLINE_PUBLISH_TIMEOUT", Settings.publish_timeout,
                                    _positive_float, "a positive number of seconds"),
        ingest_bind=read.parsed("HOOKLINE_INGEST_BIND", Settings.ingest_bind, _bind,
                                "HOST:PORT"),
        api_bind=read.parsed("HOOKLINE_API_BIND", Settings.api_bind, _bind, "HOST:PORT"),
        ingest_internal_bind=read.parsed("HOOKLINE_INGEST_INTERNAL_BIND",
                                         Settings.ingest_internal_bind, _bind, "HOST:PORT"),
        api_internal_bind=read.parsed("HOOKLINE_API_INTERNAL_BIND", Settings.api_internal_bind,
                                      _bind, "HOST:PORT"),
        projector_metrics_bind=read.parsed("HOOKLINE_PROJECTOR_METRICS_BIND",
                                           Settings.projector_metrics_bind, _bind, "HOST:PORT"),
        projector_batch=read.parsed("HOOKLINE_PROJECTOR_BATCH", Settings.projector_batch,
                                    _positive_int, "a positive whole number of records"),
        schedule_interval=read.parsed("HOOKLINE_SCHEDULE_INTERVAL", Settings.schedule_interval,
                                      parse_duration, "a duration such as 10, 10s or 1m"),
        scheduler_metrics_bind=read.parsed("HOOKLINE_SCHEDULER_METRICS_BIND",
                                           Settings.scheduler_metrics_bind, _bind, "HOST:PORT"),
        mail_from=read.parsed("HOOKLINE_MAIL_FROM", Settings.mail_from, _mail_from,
                              "an address such as 'Bookings <bookings@example.com>'"),
        mail_max_attempts=read.parsed("HOOKLINE_MAIL_MAX_ATTEMPTS", Settings.mail_max_attempts,
                                      _positive_int, "a positive whole number of attempts"),
        mail_backoff_base=read.parsed("HOOKLINE_MAIL_BACKOFF_BASE", Settings.mail_backoff_base,
                                      _positive_float, "a positive number of seconds"),
        mailer_metrics_bind=read.parsed("HOOKLINE_MAILER_METRICS_BIND",
                                        Settings.mailer_metrics_bind, _bind, "HOST:PORT"),
        dev_smtp_bind=read.parsed("HOOKLINE_DEV_SMTP_BIND", Settings.dev_smtp_bind, _bind,
                                  "HOST:PORT"),
        accept_gaps=read.parsed("HOOKLINE_ACCEPT_GAPS", False, _boolean, "true or false"),
        extra={k: v for k, v in env.items() if k.startswith("HOOKLINE_")},
    )
    if settings.console_secret is not None and settings.console_secret in (
            *(t.token for t in settings.operator_tokens), *settings.metrics_tokens):
        raise SettingsError(f"{read.where('HOOKLINE_CONSOLE_SECRET')} is also a token; the "
                            "key that signs the console's sessions must be a secret of its own")
    return settings


class _Reader:
    def __init__(self, env: Mapping[str, str], development: bool) -> None:
        self.env = env
        self.development = development

    def where(self, name: str) -> str:
        """The variable a value was read from: NAME_FILE when that is set, else NAME."""
        return f"{name}_FILE" if self.env.get(f"{name}_FILE") else name

    def raw(self, name: str) -> str | None:
        """The variable's value, or the content of the file named by NAME_FILE."""
        file_name = self.env.get(f"{name}_FILE")
        if file_name:
            try:
                return Path(file_name).read_text().strip()
            except OSError as exc:
                raise SettingsError(
                    f"{name}_FILE names {file_name!r}, which cannot be read: {exc.strerror}"
                ) from None
            except UnicodeDecodeError:
                raise SettingsError(
                    f"{name}_FILE names {file_name!r}, which is not UTF-8 text") from None
        value = self.env.get(name)
        return value if value not in (None, "") else None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def optional(self, name: str, parse: Callable[[str], T], expected: str,
                 secret: bool = False) -> T | None:
        value = self.raw(name)
        return None if value is None else self._parse(name, value, parse, expected, secret)

    def parsed(self, name: str, default: T, parse: Callable[[str], T], expected: str,
               secret: bool = False) -> T:
        value = self.raw(name)
        return default if value is None else self._parse(name, value, parse, expected, secret)

    def secrets(self, name: str, standard: bool = False) -> tuple[str, ...]:
        """Comma-separated secrets; set at all, each must be a real one (fail closed)."""
        items = self.items(name)
        for position, item in enumerate(items, 1):
            check_secret(self.where(name), position, item, standard)
            self.refuse_well_known(self.where(name), item)
        return items

    def items(self, name: str) -> tuple[str, ...]:
        """The comma-separated items of a list of secrets: none when unset, some when set."""
        if name not in self.env and not self.env.get(f"{name}_FILE"):
            return ()  # not configured
        where, value = self.where(name), self.raw(name) or ""
        items = tuple(part.strip() for part in value.split(","))
        if not any(items):
            raise SettingsError(f"{where} is set but holds no secret; give at least one of "
                                f"{MIN_SECRET_BYTES} bytes or more, or unset it")
        return items

    def operator_tokens(self, name: str) -> tuple[OperatorToken, ...]:
        """`name:role:token` entries, or plain tokens (operators named token-N by position)."""
        where = self.where(name)
        tokens = tuple(_operator_token(where, position, entry)
                       for position, entry in enumerate(self.items(name), 1))
        for seen, later in ((a, b) for i, a in enumerate(tokens) for b in tokens[i + 1:]):
            if seen.name == later.name or seen.token == later.token:
                what = "name" if seen.name == later.name else "token"
                raise SettingsError(f"{where} gives the same {what} to two entries; each "
                                    "token needs a name and a value of its own")
        for token in tokens:
            self.refuse_well_known(where, token.token)
        return tokens

    def secret(self, name: str) -> str | None:
        """One secret; set at all, it must be a real one (fail closed)."""
        if name not in self.env and not self.env.get(f"{name}_FILE"):
            return None  # not configured
        where, value = self.where(name), (self.raw(name) or "").strip()
        if not value:
            raise SettingsError(f"{where} is set but blank; give a random secret of "
                                f"{MIN_SECRET_BYTES} bytes or more, or unset it")
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"{where} must be a random secret of at least {MIN_SECRET_BYTES} "
                                "bytes (head -c 32 /dev/urandom | base64 makes one); the value "
                                "given is shorter")
        self.refuse_well_known(where, value)
        return value

    def refuse_well_known(self, where: str, value: str) -> None:
        if not self.development and (value in _WELL_KNOWN or DEVELOPMENT_MARK in value):
            raise SettingsError(f"{where} holds a well-known development value; generate a "
                                "real one (deploy/make-secrets), or set HOOKLINE_ENV=development "
                                "on a development machine")

    def _parse(self, name: str, value: str, parse: Callable[[str], T], expected: str,
               secret: bool) -> T:
        try:
            parsed = parse(value)
        except ValueError:
            shown = "the value given" if secret else repr(value)
            raise SettingsError(f"{name} must be {expected}; got {shown}") from None
        if secret:  # a URL, or a cluster's list of them: a password may be a shipped one
            for url in value.split(","):
                self.refuse_well_known(self.where(name), urlsplit(url.strip()).password or "")
        return parsed


def check_secret(where: str, position: int, secret: str, standard: bool) -> None:
    """SettingsError naming the variable (never the value) for an empty or short secret."""
    if not secret:
        raise SettingsError(f"{where} has an empty item (#{position}); secrets are "
                            "comma-separated, with nothing between two commas or at either end")
    key = secret.encode()
    if standard:  # Standard Webhooks: the key is the base64 after `whsec_`
        text = secret.removeprefix("whsec_")
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SettingsError(f"{where}: secret #{position} is not valid base64") from None
    if len(key) < MIN_SECRET_BYTES:
        noun = "tokens" if where.removesuffix("_FILE").endswith("TOKENS") else "secrets"
        decoded = " once decoded" if standard else ""
        raise SettingsError(f"{where} must hold {noun} of at least {MIN_SECRET_BYTES} bytes "
                            f"each{decoded}; #{position} is shorter")


def _operator_token(where: str, position: int, entry: str) -> OperatorToken:
    """One entry of HOOKLINE_OPERATOR_TOKENS; a sentence never quotes it: a plain token may
    hold a colon, so any part of an entry may be secret."""
    if ":" not in entry:  # as before roles: an operator, named by its place in the list
        check_secret(where, position, entry, standard=False)
        return OperatorToken(f"token-{position}", "operator", entry)
    name, _, rest = entry.partition(":")
    role, _, token = rest.partition(":")
    if role not in ROLES:
        raise SettingsError(f"{where}: entry #{position} has a colon, so it must be "
                            f"name:role:token with a role of {' or '.join(ROLES)}")
    if not _TOKEN_NAME.fullmatch(name):
        raise SettingsError(f"{where}: entry #{position} needs a name of 1 to 64 letters, "
                            "digits, '.', '_', '-' or '@', starting with a letter or digit")
    if not token.strip():
        raise SettingsError(f"{where}: entry #{position} has no token after its role")
    check_secret(where, position, token, standard=False)
    return OperatorToken(name, role, token)


def parse_duration(value: str) -> int:
    """Seconds from '900', '900s', '15m', '2h' or '3d'."""
    match = _DURATION.match(value)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(value)
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(value)
    return number


def _partitions(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_PARTITIONS:
        raise ValueError(value)
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not 0 < number < math.inf:
        raise ValueError(value)
    return number


def _environment(value: str) -> bool:
    if value.strip() not in {"production", "development"}:
        raise ValueError(value)
    return value.strip() == "development"


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in {"1", "0", "true", "false", "yes", "no"}:
        raise ValueError(value)
    return lowered in {"1", "true", "yes"}


def _allow(value: str) -> bool:
    if value not in {"allow", "refuse"}:
        raise ValueError(value)
    return value == "allow"


def _stream_age(value: str) -> str:
    if not re.fullmatch(r"\d+[YMDhms]", value.strip()):
        raise ValueError(value)
    return value.strip()


def _smtp_url(value: str) -> str:
    if urlsplit(value).scheme not in {"smtp", "smtps"} or not urlsplit(value).hostname:
        raise ValueError(value)
    return value


def _amqp_url(value: str) -> str:
    """One node's URL, or a cluster's as a comma-separated list (commas in a password: %2C)."""
    nodes = [_url(node.strip(), {"amqp", "amqps"}) for node in value.split(",")]
    return ",".join(nodes)


def _database_url(value: str) -> str:
    return _url(value, {"postgresql", "postgresql+psycopg"})


def _url(value: str, schemes: set[str]) -> str:
    parts = urlsplit(value)
    _ = parts.port  # ValueError for a port that is not a number in range
    if parts.scheme not in schemes:
        raise ValueError(value)
    return value


def _mail_from(value: str) -> str:
    if "@" not in parseaddr(value)[1]:
        raise ValueError(value)
    return value


def _bind(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(value)
    return value


# --- Partitions of the log ---------------------------------------------------------------
# Partitions of the log: which stream a subject's records go to, and what each is called.
#
# With one partition the log is the stream named by HOOKLINE_STREAM, as it always was. With N,
# it is N streams `<name>.0` … `<name>.N-1`; a record goes to the partition its subject hashes
# to, so a booking and its payments (which share a subject) keep their order in one stream.

MAX_PARTITIONS = 64
PROJECTOR = "projector"  # the projector's checkpoint and leader lock (`projector.K` per partition)


def partition_of(subject: str, partitions: int) -> int:
    """Stable across processes, machines and languages: the first 8 bytes of SHA-256, mod N."""
    if partitions == 1:
        return 0
    digest = hashlib.sha256(subject.encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def stream_name(base: str, partition: int, partitions: int) -> str:
    return base if partitions == 1 else f"{base}.{partition}"


def not_a_partition(partition: int, partitions: int) -> str | None:
    """Why `partition` names no partition of a log of `partitions`, or None when it does."""
    if 0 <= partition < partitions:
        return None
    return (f"--partition {partition} is not a partition: HOOKLINE_PARTITIONS is {partitions}, "
            f"so K runs from 0 to {partitions - 1}")


def consumer_name(base: str, partition: int, partitions: int) -> str:
    """The checkpoint and leader lock of one partition's consumer: `projector`, `projector.K`,
    named by the same rule as the partition's stream."""
    return stream_name(base, partition, partitions)
