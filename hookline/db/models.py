"""The projection tables; alembic owns the schema, these models describe it."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Timestamp = Annotated[datetime, mapped_column(DateTime(timezone=True))]
Money = Annotated[Decimal, mapped_column(Numeric)]
ShortText = Annotated[str, mapped_column(String(255))]


class Base(DeclarativeBase):
    pass


class ConsumerOffset(Base):
    """A consumer's checkpoint: the last offset whose effects are committed."""

    __tablename__ = "consumer_offsets"
    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_offset: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """One row per record of the log: the operators' inbox and audit trail."""

    __tablename__ = "events"
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    partition: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False,
                                           server_default="0")
    id: Mapped[str] = mapped_column(Text)
    source: Mapped[ShortText]
    type: Mapped[ShortText]
    subject: Mapped[str] = mapped_column(Text)
    received_at: Mapped[Timestamp]
    projected_at: Mapped[Timestamp]
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[Any | None] = mapped_column(JSONB)

    __table_args__ = (
        Index("events_first_id", "id", unique=True,
              postgresql_where=text("outcome <> 'duplicate'")),
        Index("events_subject", "subject", "offset"),
        # the operator API's filters, each read newest first (migrations 0004, 0005)
        Index("events_source", "source", "offset", "partition"),
        Index("events_type", "type", "offset", "partition"),
        Index("events_outcome", "outcome", "offset", "partition"),
        Index("events_received_at", "received_at"),
    )


# the words of every string and number of a payload, as written (no stemming, no stop words)
PAYLOAD_WORDS = func.jsonb_to_tsvector(text("'simple'::regconfig"), Event.payload,
                                       text("""'["string", "numeric"]'::jsonb"""))
# GET /v1/events?q= (migration 0009)
Index("events_payload_search", PAYLOAD_WORDS, postgresql_using="gin")


class OperatorRejection(Base):
    """A record an operator rejected ahead of the projector: projected `rejected`, never read."""

    __tablename__ = "operator_rejections"
    partition: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reason: Mapped[str] = mapped_column(Text)
    rejected_at: Mapped[Timestamp]


class OperatorAudit(Base):
    """One operator action (or refused or failed attempt): who, what, when, on which records."""

    __tablename__ = "operator_audit"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    actor: Mapped[str] = mapped_column(Text)  # a token's name or cli:<OS user>, never a token
    action: Mapped[str] = mapped_column(Text)
    targets: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    detail: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    outcome: Mapped[str] = mapped_column(String(20))

    __table_args__ = (
        CheckConstraint("outcome IN ('succeeded', 'refused', 'failed')",
                        name="operator_audit_outcome"),
        # GET /v1/audit's filters, each read newest first
        Index("operator_audit_actor", "actor", "id"),
        Index("operator_audit_action", "action", "id"),
        Index("operator_audit_at", "at"),
    )


class Transaction(Base):
    """One row per payment or transfer, whatever order its events arrived in."""

    __tablename__ = "transactions"
    # identity is (source, transaction_id); the key leads with the id for lookups by id alone
    transaction_id: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    booking_reference: Mapped[str | None] = mapped_column(Text)
    source_account: Mapped[str | None] = mapped_column(Text)
    destination_account: Mapped[str | None] = mapped_column(Text)
    provider_reference: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Money | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    refunded_amount: Mapped[Money] = mapped_column(server_default="0")
    disputed: Mapped[bool] = mapped_column(server_default="false")
    created_at: Mapped[Timestamp]
    processed_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]
    last_offset: Mapped[int] = mapped_column(BigInteger)
    # false while every report of this payment came from a sender ingress could not verify
    trusted: Mapped[bool] = mapped_column(server_default="true")

    __table_args__ = (
        Index("transactions_booking_reference", "booking_reference"),
        # the scheduler's question: which payments have been pending too long
        Index("transactions_pending_since", "created_at",
              postgresql_where=text("status = 'pending'")),
        # the operator API's filters, each read newest first (migrations 0004, 0006)
        Index("transactions_created", "created_at", "transaction_id", "source"),
        Index("transactions_status", "status", "created_at", "transaction_id", "source"),
        Index("transactions_source", "source", "created_at", "transaction_id"),
        Index("transactions_disputed", "created_at", "transaction_id", "source",
              postgresql_where=text("disputed")),
        Index("transactions_refunded", "created_at", "transaction_id", "source",
              postgresql_where=text("refunded_amount > 0")),
    )


class Booking(Base):
    """One row per booking reference; the booking's fields are null until it is created."""

    __tablename__ = "bookings"
    reference: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    customer_email: Mapped[str | None] = mapped_column(Text)
    customer_name: Mapped[str | None] = mapped_column(Text)
    destination: Mapped[str | None] = mapped_column(Text)
    travel_date: Mapped[date | None] = mapped_column(Date)
    return_date: Mapped[date | None] = mapped_column(Date)
    travelers: Mapped[int | None] = mapped_column(Integer)
    total_amount: Mapped[Money | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    created_at: Mapped[Timestamp | None]
    expires_at: Mapped[Timestamp | None]
    confirmed_at: Mapped[Timestamp | None]
    cancelled_at: Mapped[Timestamp | None]
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    late_payment: Mapped[bool] = mapped_column(server_default="false")
    amount_mismatch: Mapped[bool] = mapped_column(server_default="false")
    updated_at: Mapped[Timestamp]
    last_offset: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # the scheduler's question: which pending bookings are past their deadline
        Index("bookings_pending_expiry", "expires_at", postgresql_where=text("status = 'pending'")),
        # the operator API's filters, each read newest first (migration 0004)
        Index("bookings_created", "created_at", "reference"),
        Index("bookings_status", "status", "created_at", "reference"),
        Index("bookings_customer_email", "customer_email", "created_at", "reference"),
        Index("bookings_late_payment", "created_at", "reference",
              postgresql_where=text("late_payment")),
        Index("bookings_amount_mismatch", "created_at", "reference",
              postgresql_where=text("amount_mismatch")),
    )


class EmailOutbox(Base):
    """An email owed to a customer, written with the projection change that caused it."""

    __tablename__ = "email_outbox"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(Text)
    template: Mapped[str] = mapped_column(String(50))
    booking_reference: Mapped[str | None] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(Text)
    context: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # rendered by the mailer from template + context when it sends
    subject: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[Timestamp]
    last_attempt_at: Mapped[Timestamp | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[Timestamp | None]
    created_at: Mapped[Timestamp]

    __table_args__ = (
        UniqueConstraint("event_id", "template", name="email_outbox_event_template"),
        # the mailer's claim and the depth gauges read only rows not yet sent
        Index("email_outbox_open", "status", "next_attempt_at",
              postgresql_where=text("status <> 'sent'")),
        # the operator API's filters and a booking's emails (migration 0004)
        Index("email_outbox_status", "status", "id"),
        Index("email_outbox_template", "template", "id"),
        Index("email_outbox_booking_reference", "booking_reference"),
    )
