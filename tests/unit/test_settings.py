"""Settings: every HOOKLINE_* variable, its default, its _FILE variant and its error sentence."""

from __future__ import annotations

import base64
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from hookline.config import (
    OperatorToken,
    Settings,
    SettingsError,
    load_settings,
    mask_url,
    parse_duration,
)

SECRET_VALUE = "s3cret-value-never-shown"
STRIPE_SECRET = "whsec_test_secret_for_stripe_0001"
STANDARD_B = "whsec_" + base64.b64encode(b"bookings-secret-of-32-bytes-0001").decode()
STANDARD_C = "whsec_" + base64.b64encode(b"transactions-secret-32-bytes-001").decode()
OPERATOR_TOKEN = "test-operator-token-0001"
METRICS_TOKEN = "test-metrics-token-0001"
# ed25519 public keys as Standard Webhooks writes them (whpk_ + base64 of 32 bytes)
PUBLIC_A = "whpk_" + base64.b64encode(bytes(range(32))).decode()
PUBLIC_B = "whpk_" + base64.b64encode(bytes(range(32, 64))).decode()
SECRET_LISTS = ["HOOKLINE_STRIPE_SECRETS", "HOOKLINE_CHAPA_SECRETS", "HOOKLINE_BOOKINGS_SECRETS",
                "HOOKLINE_TRANSACTIONS_SECRETS", "HOOKLINE_OPERATOR_TOKENS",
                "HOOKLINE_METRICS_TOKENS", "HOOKLINE_BOOKINGS_PUBLIC_KEYS",
                "HOOKLINE_TRANSACTIONS_PUBLIC_KEYS"]

# variable, value given, Settings attribute, value expected
PARSED = [
    ("HOOKLINE_AMQP_URL", "amqps://u:p@broker:5671/vh", "amqp_url",
     "amqps://u:p@broker:5671/vh"),
    ("HOOKLINE_DATABASE_URL", "postgresql://u:p@db:5433/x", "database_url",
     "postgresql://u:p@db:5433/x"),
    ("HOOKLINE_STREAM", "orders.log", "stream", "orders.log"),
    ("HOOKLINE_PARTITIONS", "4", "partitions", 4),
    ("HOOKLINE_STREAM_REPLICAS", "3", "stream_replicas", 3),
    ("HOOKLINE_STREAM_MAX_BYTES", "1000000", "stream_max_bytes", 1_000_000),
    ("HOOKLINE_STREAM_MAX_AGE", "7D", "stream_max_age", "7D"),
    ("HOOKLINE_STREAM_MAX_SEGMENT_BYTES", "50000000", "stream_max_segment_bytes", 50_000_000),
    ("HOOKLINE_SMTP_URL", "smtp://mail:2525", "smtp_url", "smtp://mail:2525"),
    ("HOOKLINE_STRIPE_SECRETS", STRIPE_SECRET, "stripe_secrets", (STRIPE_SECRET,)),
    ("HOOKLINE_CHAPA_SECRETS", "chapa-key-0123456789", "chapa_secrets",
     ("chapa-key-0123456789",)),
    ("HOOKLINE_BOOKINGS_SECRETS", STANDARD_B, "bookings_secrets", (STANDARD_B,)),
    ("HOOKLINE_TRANSACTIONS_SECRETS", STANDARD_C, "transactions_secrets", (STANDARD_C,)),
    ("HOOKLINE_OPERATOR_TOKENS", OPERATOR_TOKEN, "operator_tokens",
     (OperatorToken("token-1", "operator", OPERATOR_TOKEN),)),
    ("HOOKLINE_METRICS_TOKENS", METRICS_TOKEN, "metrics_tokens", (METRICS_TOKEN,)),
    ("HOOKLINE_CONSOLE_SECRET", SECRET_VALUE, "console_secret", SECRET_VALUE),
    ("HOOKLINE_ENV", "development", "development", True),
    ("HOOKLINE_CHAPA_SECRET_ONLY_SIGNATURES", "allow", "chapa_secret_only_signatures", True),
    ("HOOKLINE_BOOKINGS_PUBLIC_KEYS", f"{PUBLIC_A},{PUBLIC_B}", "bookings_public_keys",
     (PUBLIC_A, PUBLIC_B)),
    ("HOOKLINE_TRANSACTIONS_PUBLIC_KEYS", PUBLIC_A, "transactions_public_keys", (PUBLIC_A,)),
    ("HOOKLINE_TRANSACTIONS_UNSIGNED", "allow", "transactions_unsigned", True),
    ("HOOKLINE_BOOKING_TTL", "20m", "booking_ttl", 1200),
    ("HOOKLINE_PAYMENT_TIMEOUT", "2d", "payment_timeout", 172_800),
    ("HOOKLINE_MAX_BODY_BYTES", "4096", "max_body_bytes", 4096),
    ("HOOKLINE_PUBLISH_TIMEOUT", "2.5", "publish_timeout", 2.5),
    ("HOOKLINE_INGEST_BIND", "0.0.0.0:9000", "ingest_bind", "0.0.0.0:9000"),
    ("HOOKLINE_API_BIND", "[::1]:9001", "api_bind", "[::1]:9001"),
    ("HOOKLINE_INGEST_INTERNAL_BIND", "ingest:8000", "ingest_internal_bind", "ingest:8000"),
    ("HOOKLINE_API_INTERNAL_BIND", "127.0.0.1:9011", "api_internal_bind", "127.0.0.1:9011"),
    ("HOOKLINE_PROJECTOR_METRICS_BIND", "127.0.0.1:9002", "projector_metrics_bind",
     "127.0.0.1:9002"),
    ("HOOKLINE_PROJECTOR_BATCH", "50", "projector_batch", 50),
    ("HOOKLINE_STRIPE_TOLERANCE", "10m", "stripe_tolerance", 600),
    ("HOOKLINE_SCHEDULE_INTERVAL", "30s", "schedule_interval", 30),
    ("HOOKLINE_SCHEDULER_METRICS_BIND", "127.0.0.1:9004", "scheduler_metrics_bind",
     "127.0.0.1:9004"),
    ("HOOKLINE_MAIL_FROM", "Bookings <bookings@example.com>", "mail_from",
     "Bookings <bookings@example.com>"),
    ("HOOKLINE_MAIL_MAX_ATTEMPTS", "3", "mail_max_attempts", 3),
    ("HOOKLINE_MAIL_BACKOFF_BASE", "0.5", "mail_backoff_base", 0.5),
    ("HOOKLINE_MAILER_METRICS_BIND", "127.0.0.1:9003", "mailer_metrics_bind", "127.0.0.1:9003"),
    ("HOOKLINE_DEV_SMTP_BIND", "127.0.0.1:2525", "dev_smtp_bind", "127.0.0.1:2525"),
    ("HOOKLINE_ACCEPT_GAPS", "true", "accept_gaps", True),
]

# variable, invalid value; secret variables must never echo the value
INVALID = [
    ("HOOKLINE_AMQP_URL", "nonsense"),
    ("HOOKLINE_AMQP_URL", "amqp://guest:guest@host:notaport/%2F"),
    ("HOOKLINE_AMQP_URL", "amqp://u:p@node-a:5672/%2F,,amqp://u:p@node-c:5672/%2F"),
    ("HOOKLINE_AMQP_URL", "amqp://u:p@node-a:5672/%2F,http://node-b"),
    ("HOOKLINE_DATABASE_URL", "mysql://root@db/x"),
    ("HOOKLINE_STREAM_MAX_BYTES", "0"),
    ("HOOKLINE_STREAM_MAX_BYTES", "lots"),
    ("HOOKLINE_STREAM_MAX_AGE", "a week"),
    ("HOOKLINE_STREAM_MAX_SEGMENT_BYTES", "big"),
    ("HOOKLINE_SMTP_URL", "http://mail"),
    ("HOOKLINE_BOOKING_TTL", "soon"),
    ("HOOKLINE_BOOKING_TTL", "0"),
    ("HOOKLINE_BOOKING_TTL", "-5m"),
    ("HOOKLINE_PAYMENT_TIMEOUT", "3 weeks"),
    ("HOOKLINE_MAX_BODY_BYTES", "abc"),
    ("HOOKLINE_MAX_BODY_BYTES", "-1"),
    ("HOOKLINE_PUBLISH_TIMEOUT", "0"),
    ("HOOKLINE_PUBLISH_TIMEOUT", "nan"),
    ("HOOKLINE_PUBLISH_TIMEOUT", "inf"),
    ("HOOKLINE_INGEST_BIND", "nonsense"),
    ("HOOKLINE_INGEST_BIND", "127.0.0.1:99999"),
    ("HOOKLINE_API_BIND", ":8001"),
    ("HOOKLINE_INGEST_INTERNAL_BIND", "8010"),
    ("HOOKLINE_PROJECTOR_METRICS_BIND", "localhost:http"),
    ("HOOKLINE_PROJECTOR_BATCH", "many"),
    ("HOOKLINE_PARTITIONS", "0"),
    ("HOOKLINE_STREAM_REPLICAS", "0"),
    ("HOOKLINE_STREAM_REPLICAS", "three"),
    ("HOOKLINE_PARTITIONS", "65"),
    ("HOOKLINE_PARTITIONS", "two"),
    ("HOOKLINE_ACCEPT_GAPS", "perhaps"),
    ("HOOKLINE_TRANSACTIONS_UNSIGNED", "true"),
    ("HOOKLINE_STRIPE_TOLERANCE", "forever"),
    ("HOOKLINE_SCHEDULE_INTERVAL", "often"),
    ("HOOKLINE_SCHEDULER_METRICS_BIND", "nowhere"),
    ("HOOKLINE_MAIL_FROM", "nobody"),
    ("HOOKLINE_MAIL_MAX_ATTEMPTS", "0"),
    ("HOOKLINE_MAIL_BACKOFF_BASE", "-1"),
    ("HOOKLINE_MAILER_METRICS_BIND", "127.0.0.1"),
]
SECRET_VARIABLES = {"HOOKLINE_AMQP_URL", "HOOKLINE_DATABASE_URL", "HOOKLINE_SMTP_URL"}


def test_every_setting_is_covered_here() -> None:
    covered = {attribute for _, _, attribute, _ in PARSED}
    assert {f.name for f in fields(Settings)} - {"extra"} == covered


def test_defaults_when_nothing_is_set() -> None:
    assert load_settings({}) == Settings()
    defaults = Settings()
    assert defaults.amqp_url == "amqp://guest:guest@localhost:5672/%2F"
    assert defaults.database_url == "postgresql+psycopg://postgres@localhost:5432/hookline"
    assert defaults.stream == "hookline.events"
    assert (defaults.booking_ttl, defaults.payment_timeout) == (900, 3 * 86400)
    assert defaults.max_body_bytes == 256 * 1024
    assert defaults.transactions_secrets == ()
    assert defaults.accept_gaps is False


def test_empty_variables_mean_the_default() -> None:
    blank_refused = {*SECRET_LISTS, "HOOKLINE_CONSOLE_SECRET"}  # set at all: a real secret
    settings = load_settings({name: "" for name, *_ in PARSED if name not in blank_refused})
    assert replace(settings, extra={}) == Settings()


@pytest.mark.parametrize(("name", "given", "attribute", "expected"), PARSED)
def test_each_variable_is_parsed(name: str, given: str, attribute: str, expected: Any) -> None:
    settings = load_settings({name: given})
    assert getattr(settings, attribute) == expected
    assert settings.extra[name] == given


@pytest.mark.parametrize(("name", "given", "attribute", "expected"), PARSED)
def test_each_variable_has_a_file_variant_that_wins(
        tmp_path: Path, name: str, given: str, attribute: str, expected: Any) -> None:
    path = tmp_path / "value"
    path.write_text(given + "\n")
    assert getattr(load_settings({f"{name}_FILE": str(path), name: "ignored"}),
                   attribute) == expected


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_an_invalid_value_is_a_sentence_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({name: value})
    message = str(raised.value)
    assert message.startswith(f"{name} must be ")
    if name in SECRET_VARIABLES:
        assert value not in message
        assert "the value given" in message
    else:
        assert repr(value) in message


def test_a_secret_url_that_is_invalid_is_not_echoed() -> None:
    bad = f"smtp-ish://user:{SECRET_VALUE}@mail"
    for name in sorted(SECRET_VARIABLES):
        with pytest.raises(SettingsError) as raised:
            load_settings({name: bad})
        assert SECRET_VALUE not in str(raised.value)
        assert name in str(raised.value)


def test_an_invalid_secret_read_from_a_file_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "smtp"
    path.write_text(f"ftp://user:{SECRET_VALUE}@mail")
    with pytest.raises(SettingsError) as raised:
        load_settings({"HOOKLINE_SMTP_URL_FILE": str(path)})
    assert "HOOKLINE_SMTP_URL" in str(raised.value)
    assert SECRET_VALUE not in str(raised.value)


def test_a_missing_file_names_the_variable_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SettingsError) as raised:
        load_settings({"HOOKLINE_TRANSACTIONS_SECRETS_FILE": str(missing)})
    message = str(raised.value)
    assert "HOOKLINE_TRANSACTIONS_SECRETS_FILE" in message
    assert str(missing) in message
    assert "No such file" in message


def test_a_file_that_is_not_text_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe\x00secret")
    with pytest.raises(SettingsError, match=r"HOOKLINE_OPERATOR_TOKENS_FILE .* not UTF-8"):
        load_settings({"HOOKLINE_OPERATOR_TOKENS_FILE": str(path)})


@pytest.mark.parametrize("name", ["HOOKLINE_STRIPE_SECRETS", "HOOKLINE_CHAPA_SECRETS",
                                  "HOOKLINE_BOOKINGS_SECRETS", "HOOKLINE_TRANSACTIONS_SECRETS",
                                  "HOOKLINE_OPERATOR_TOKENS"])
def test_secrets_are_comma_separated_for_rotation(name: str) -> None:
    attribute = name.removeprefix("HOOKLINE_").lower()
    new, old = _long_enough(name, "new"), _long_enough(name, "old")
    settings = load_settings({name: f" {new} , {old} "})
    found = getattr(settings, attribute)
    assert tuple(getattr(item, "token", item) for item in found) == (new, old)


def test_secrets_from_a_file_are_comma_separated_too(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{STANDARD_B},{STANDARD_C}\n")
    settings = load_settings({"HOOKLINE_TRANSACTIONS_SECRETS_FILE": str(path)})
    assert settings.transactions_secrets == (STANDARD_B, STANDARD_C)


def _long_enough(name: str, word: str) -> str:
    """A secret for `name` of exactly 16 bytes (decoded, for Standard Webhooks)."""
    raw = f"{word}-".ljust(16, "x").encode()
    standard = name in {"HOOKLINE_BOOKINGS_SECRETS", "HOOKLINE_TRANSACTIONS_SECRETS"}
    return "whsec_" + base64.b64encode(raw).decode() if standard else raw.decode()


@pytest.mark.parametrize("name", SECRET_LISTS)
@pytest.mark.parametrize("value", ["", " ", ",", " , ", ",,,"])
def test_a_secret_list_set_but_empty_stops_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name} is set but holds no "):
        load_settings({name: value})


@pytest.mark.parametrize("name", SECRET_LISTS)
def test_an_empty_item_in_a_secret_list_stops(name: str) -> None:
    good = _long_enough(name, "good")
    for value in (f"{good},", f",{good}", f"{good}, ,{good}"):
        with pytest.raises(SettingsError, match=rf"^{name} has an empty item") as raised:
            load_settings({name: value})
        assert good not in str(raised.value)


@pytest.mark.parametrize("name", SECRET_LISTS)
def test_a_secret_shorter_than_16_bytes_stops_without_showing_it(name: str) -> None:
    assert getattr(load_settings({name: _long_enough(name, "ok")}),
                   name.removeprefix("HOOKLINE_").lower())
    good = _long_enough(name, "good")
    short = _long_enough(name, "short").removesuffix("x")
    if short.startswith("whsec_"):  # 15 bytes once decoded, though longer as text
        short = "whsec_" + base64.b64encode(b"fifteen-bytes!!").decode()
    with pytest.raises(SettingsError) as raised:
        load_settings({name: f"{good},{short}"})
    message = str(raised.value)
    assert message.startswith(f"{name} must hold ")
    assert "at least 16 bytes" in message
    assert "#2" in message
    assert short.removeprefix("whsec_") not in message
    assert good.removeprefix("whsec_") not in message


def test_a_one_character_secret_stops() -> None:
    with pytest.raises(SettingsError, match="at least 16 bytes"):
        load_settings({"HOOKLINE_CHAPA_SECRETS": "x"})


def test_a_standard_webhooks_secret_counts_its_decoded_bytes() -> None:
    # 20 characters of text, 15 bytes of key: too short
    secret = "whsec_" + base64.b64encode(b"fifteen-bytes!!").decode()
    with pytest.raises(SettingsError, match=r"^HOOKLINE_BOOKINGS_SECRETS must hold "):
        load_settings({"HOOKLINE_BOOKINGS_SECRETS": secret})
    # the same text is fine as a Stripe secret, whose key is the whole string
    assert load_settings({"HOOKLINE_STRIPE_SECRETS": secret}).stripe_secrets == (secret,)


@pytest.mark.parametrize("name", SECRET_LISTS)
def test_an_empty_secrets_file_stops_naming_the_file_variable(tmp_path: Path, name: str) -> None:
    path = tmp_path / "empty"
    path.write_text("\n")
    with pytest.raises(SettingsError, match=rf"^{name}_FILE is set but holds no "):
        load_settings({f"{name}_FILE": str(path)})


def test_unset_secret_lists_mean_not_configured() -> None:
    settings = load_settings({})
    assert settings.stripe_secrets == settings.operator_tokens == settings.metrics_tokens == ()


# values that were once shipped in deploy/secrets/, and one `hookline up` makes
WELL_KNOWN = [
    ("HOOKLINE_OPERATOR_TOKENS", "dev-operator-token"),
    ("HOOKLINE_CHAPA_SECRETS", "hookline-dev-chapa"),
    ("HOOKLINE_STRIPE_SECRETS", "whsec_hookline-dev-stripe"),
    ("HOOKLINE_BOOKINGS_SECRETS", "whsec_aG9va2xpbmUtZGV2LWJvb2tpbmdzLXNlY3JldC0zMmI="),
    ("HOOKLINE_TRANSACTIONS_SECRETS", "whsec_aG9va2xpbmUtZGV2LXRyYW5zYWN0aW9ucy1zZWNyZXQ="),
    ("HOOKLINE_OPERATOR_TOKENS", "hookline-dev-Xq3v9QmB2s8LkPz1RtY4uWcE"),
    ("HOOKLINE_METRICS_TOKENS", "hookline-dev-metrics-token"),
    ("HOOKLINE_DATABASE_URL",
     "postgresql+psycopg://hookline:hookline-dev-postgres@postgres:5432/hookline"),
    ("HOOKLINE_AMQP_URL", "amqp://hookline:hookline-dev-rabbitmq@rabbitmq:5672/%2F"),
    # a cluster's nodes: every URL is checked, not only the first
    ("HOOKLINE_AMQP_URL", "amqp://hookline:Rk29vQm3xT8pLs7z@rabbitmq:5672/%2F,"
                          "amqp://hookline:hookline-dev-rabbitmq@rabbitmq-2:5672/%2F"),
]


@pytest.mark.parametrize(("name", "value"), WELL_KNOWN)
def test_a_well_known_development_value_is_refused_outside_development(
        tmp_path: Path, name: str, value: str) -> None:
    good = _long_enough(name, "real") if name in SECRET_LISTS else None
    given = f"{good},{value}" if good else value
    with pytest.raises(SettingsError) as raised:
        load_settings({name: given})
    message = str(raised.value)
    assert message.startswith(f"{name} holds a well-known development value"), message
    assert "HOOKLINE_ENV=development" in message
    assert value.removeprefix("whsec_") not in message
    path = tmp_path / "value"
    path.write_text(given)
    with pytest.raises(SettingsError, match=rf"^{name}_FILE holds a well-known "):
        load_settings({f"{name}_FILE": str(path)})
    assert load_settings({name: given, "HOOKLINE_ENV": "development"}).development


def test_hookline_env_is_production_unless_it_says_development() -> None:
    assert load_settings({}).development is False
    assert load_settings({"HOOKLINE_ENV": "production"}).development is False
    with pytest.raises(SettingsError, match=r"^HOOKLINE_ENV must be production or development"):
        load_settings({"HOOKLINE_ENV": "dev"})


@pytest.mark.parametrize(("text", "seconds"), [
    ("900", 900), ("900s", 900), ("15m", 900), ("2h", 7200), ("3d", 259_200), (" 5m ", 300),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "15 minutes", "1.5h", "-3d", "3w"])
def test_invalid_durations_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(text)}$"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("1", True), ("yes", True), ("TRUE", True), ("0", False), ("no", False), ("False", False),
])
def test_accept_gaps_spellings(text: str, expected: bool) -> None:
    assert load_settings({"HOOKLINE_ACCEPT_GAPS": text}).accept_gaps is expected


def test_stream_max_age_is_optional() -> None:
    assert load_settings({}).stream_max_age is None
    assert load_settings({}).smtp_url is None


def test_variables_other_than_hookline_are_not_kept() -> None:
    settings = load_settings({"PATH": "/bin", "HOOKLINE_STREAM": "s"})
    assert dict(settings.extra) == {"HOOKLINE_STREAM": "s"}


def test_several_broker_nodes_are_kept_in_the_order_given(tmp_path: Path) -> None:
    nodes = "amqp://u:p@node-a:5672/%2F, amqp://u:p@node-b:5672/%2F,amqps://u:p@node-c/vh"
    path = tmp_path / "amqp"
    path.write_text(nodes + "\n")
    for env in ({"HOOKLINE_AMQP_URL": nodes}, {"HOOKLINE_AMQP_URL_FILE": str(path)}):
        assert load_settings(env).amqp_urls == (
            "amqp://u:p@node-a:5672/%2F", "amqp://u:p@node-b:5672/%2F", "amqps://u:p@node-c/vh")


def test_one_broker_node_is_a_list_of_one() -> None:
    assert Settings().amqp_urls == ("amqp://guest:guest@localhost:5672/%2F",)


def test_the_libpq_url_drops_the_driver_suffix() -> None:
    settings = load_settings({"HOOKLINE_DATABASE_URL": "postgresql+psycopg://u@h:5432/d"})
    assert settings.psycopg_url == "postgresql://u@h:5432/d"


@pytest.mark.parametrize(("url", "masked"), [
    ("amqp://guest:s3cret@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
    ("postgresql+psycopg://postgres:s3cret@db/x", "postgresql+psycopg://postgres:***@db/x"),
    ("postgresql+psycopg://postgres@db/x", "postgresql+psycopg://postgres@db/x"),
])
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
