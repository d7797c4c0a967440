"""What the senders send: signed deliveries of every source, each with the envelope id hookline
must give it, signed afresh at each attempt as the providers do when they retry."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from hookline.senders.chapa import delivery_key
from hookline.senders.signatures import sign_chapa, sign_standard_webhooks, sign_stripe

SOURCES = ("transactions", "stripe", "chapa", "bookings")


@dataclass(frozen=True)
class Secrets:
    transactions: str = "whsec_Y2hhb3MtdHJhbnNhY3Rpb25zLXNlY3JldA=="
    stripe: str = "whsec_chaos_stripe_secret"
    chapa: str = "chaos-chapa-secret"
    bookings: str = "whsec_Y2hhb3MtYm9va2luZ3Mtc2VjcmV0LTMy"

    def env(self) -> dict[str, str]:
        return {f"HOOKLINE_{source.upper()}_SECRETS": getattr(self, source) for source in SOURCES}


FORGER = Secrets(transactions="whsec_Zm9yZ2VkLXRyYW5zYWN0aW9ucw==", stripe="whsec_forged",
                 chapa="forged", bookings="whsec_Zm9yZ2VkLWJvb2tpbmdz")


def signed(source: str, secrets: Secrets, body: bytes, msg_id: str,
           at: int | None = None) -> dict[str, str]:
    """The headers `source` sends with `body`, signed at `at` (now by default)."""
    now = int(time.time()) if at is None else at
    headers = {"Content-Type": "application/json"}
    if source == "stripe":
        headers["Stripe-Signature"] = sign_stripe(secrets.stripe, now, body)
    elif source == "chapa":
        # the body's signature only: the secret-only header would let any body through
        headers["x-chapa-signature"] = sign_chapa(secrets.chapa, body)["x-chapa-signature"]
    else:
        secret = secrets.transactions if source == "transactions" else secrets.bookings
        headers.update({"webhook-id": msg_id, "webhook-timestamp": str(now),
                        "webhook-signature": sign_standard_webhooks(secret, msg_id, now, body)})
    return headers


@dataclass(frozen=True)
class Delivery:
    """One webhook as its sender keeps it for retries; `valid` ones must be accepted."""

    source: str
    body: bytes
    envelope_id: str
    msg_id: str
    valid: bool = True
    forged: bool = False

    def headers(self, secrets: Secrets, at: int | None = None) -> dict[str, str]:
        return signed(self.source, FORGER if self.forged else secrets, self.body, self.msg_id, at)


def _dump(payload: Any) -> bytes:
    return orjson.dumps(payload)


def transaction(key: str, amount: str = "12.50", reference: str | None = None,
                status: str | None = None) -> Delivery:
    body = {"transaction_id": key, "source_account": f"acct-{key}",
            "destination_account": "acct-hotel", "amount": amount, "currency": "EUR",
            "booking_reference": reference, "status": status}
    suffix = f":{status}" if status else ""
    return Delivery("transactions", _dump(body), f"transactions:{key}{suffix}", f"msg_{key}")


def stripe(key: str, minor: int = 2590) -> Delivery:
    created = int(time.time())
    intent = {"id": f"pi_{key}", "object": "payment_intent", "amount": minor,
              "amount_received": minor, "currency": "eur", "status": "succeeded",
              "created": created, "metadata": {}, "latest_charge": f"ch_{key}"}
    event = {"id": f"evt_{key}", "object": "event", "type": "payment_intent.succeeded",
             "created": created, "livemode": False, "data": {"object": intent}}
    return Delivery("stripe", _dump(event), f"stripe:evt_{key}", f"evt_{key}")


def chapa(key: str, amount: str = "400.00") -> Delivery:
    payload = {"event": "charge.success", "tx_ref": f"chapa-{key}", "reference": f"AP{key}",
               "status": "success", "currency": "ETB", "amount": amount, "charge": "12.00",
               "mode": "test", "email": None, "created_at": datetime.now(UTC).isoformat(),
               "meta": None}
    return Delivery("chapa", _dump(payload), f"chapa:{delivery_key(payload)}", f"chapa_{key}")


def booking(reference: str, email: str, total: str = "250.00") -> Delivery:
    notification = {"type": "booking.created", "booking": {
        "reference": reference, "customer": {"email": email, "name": "Chaos Guest"},
        "destination": "Bahir Dar", "travel_date": "2027-10-02", "travelers": 2,
        "total_amount": total, "currency": "EUR", "created_at": datetime.now(UTC).isoformat()}}
    msg_id = f"msg_{reference}"
    return Delivery("bookings", _dump(notification), f"bookings:{msg_id}", msg_id)


def forged(delivery: Delivery) -> Delivery:
    """The delivery signed with a secret hookline does not hold: must be a 401."""
    return replace(delivery, valid=False, forged=True)


def unkeyed_stripe(key: str) -> Delivery:
    """Signed, but an event without an id: nothing to key it by, so a 422, never the log."""
    event = orjson.loads(stripe(key).body)
    del event["id"]
    return Delivery("stripe", _dump(event), f"stripe:unkeyed-{key}", f"unkeyed-{key}",
                    valid=False)
