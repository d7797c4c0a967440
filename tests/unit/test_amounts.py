"""One amount parser for every source: positive, exact, below 10^15, ASCII digits only."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookline.domain.amounts import AmountInvalid, from_minor_units, parse_amount
from hookline.domain.events import Rejected
from hookline.log.envelope import Envelope
from hookline.senders import chapa, stripe

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "providers"
RECEIVED = datetime(2024, 5, 1, tzinfo=UTC)
NOT_AMOUNTS = ["0", "-0", "0.00", "1_000", "1e3", "\u0661\u0662", " 5", "5 ", "+5", "-5", "",
               "1e999999", "NaN", "Infinity", "0x10", "1.2.3", "1000000000000000"]


@pytest.mark.parametrize("text", NOT_AMOUNTS)
def test_the_parser_refuses_what_is_not_a_plain_positive_amount(text: str) -> None:
    with pytest.raises(AmountInvalid):
        parse_amount(text)


def test_the_parser_reads_exactly_and_counts_places() -> None:
    assert parse_amount("999999999999999.99", 2) == Decimal("999999999999999.99")
    assert parse_amount(Decimal("0.0001")) == Decimal("0.0001")
    with pytest.raises(AmountInvalid, match="2 decimal places"):
        parse_amount("1.005", 2)


def test_minor_units_convert_exactly_by_the_same_rules() -> None:
    assert str(from_minor_units(1099, 2)) == "10.99"
    assert str(from_minor_units(10**17 - 1, 2)) == "999999999999999.99"  # no rounding
    assert str(from_minor_units(12345, 4)) == "1.2345"
    for minor, rule in [(0, "positive"), (-5, "positive"), (10**17, "10\\^15")]:
        with pytest.raises(AmountInvalid, match=rule):
            from_minor_units(minor, 2)
    with pytest.raises(AmountInvalid, match="2 decimal places"):
        from_minor_units(1, 3, places=2)


def chapa_charge(amount: Any) -> list[Any]:
    payload = json.loads((FIXTURES / "chapa_charge.success.json").read_text())
    payload["amount"] = amount
    return chapa.interpret(Envelope("chapa:k", "chapa", "charge.success", "s", RECEIVED,
                                    orjson.dumps(payload)))


@pytest.mark.parametrize("text", ["0", "-0", "1_000", "1e3", "\u0661\u0662", " 400.00 ",
                                  "400.00 "])
def test_a_chapa_amount_that_is_not_plain_positive_digits_is_rejected(text: str) -> None:
    with pytest.raises(Rejected, match="amount"):
        chapa_charge(text)


def stripe_intent(minor: int) -> list[Any]:
    body = {"id": "evt_1", "object": "event", "type": "payment_intent.succeeded",
            "created": 1714521600, "data": {"object": {
                "id": "pi_1", "object": "payment_intent", "amount": minor,
                "amount_received": minor, "currency": "usd", "metadata": {}}}}
    return stripe.interpret(Envelope("stripe:evt_1", "stripe", body["type"], "s", RECEIVED,
                                     orjson.dumps(body)))


def test_a_stripe_amount_from_ten_to_the_fifteen_up_is_rejected() -> None:
    with pytest.raises(Rejected, match="10\\^15"):
        stripe_intent(18 * 10**18)  # 1.8 x 10^17 USD
    with pytest.raises(Rejected, match="10\\^15"):
        stripe_intent(10**17)
    [reported] = stripe_intent(10**17 - 1)
    assert reported.amount == Decimal("999999999999999.99")
