"""The transaction state rules: the projection does not depend on arrival order or repeats.

A history is what providers said about a few payments, in the order they said it (canonical).
What arrives is the same events permuted, some duplicated, the payments interleaved. The one
constraint kept is the log's own: the scheduler times out only a transaction it has read, so
a `payment.timed_out` never precedes the first record of its payment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.domain import (
    PaymentDisputed,
    PaymentEvent,
    PaymentRefunded,
    PaymentReported,
    PaymentStatus,
    PaymentTimedOut,
)
from projections.transactions import REFUNDED, TransactionState, apply

BOOKKEEPING = {"processed_at", "updated_at", "last_offset"}  # when, not what
PROVIDER_TIMES = [datetime(2024, 5, day, 12, tzinfo=UTC) for day in (1, 2, 3)]
PROJECTED_FROM = datetime(2024, 6, 1, tzinfo=UTC)  # projection happens after the providers
SETTLED = {"succeeded"} | REFUNDED


@dataclass(frozen=True)
class Logged:
    source: str
    event: PaymentEvent


def maybe(values: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | values


cents = st.integers(0, 100_000).map(lambda n: Decimal(n).scaleb(-2))


@st.composite
def payment_events(draw: st.DrawFn, transaction_id: str) -> list[PaymentEvent]:
    """One payment's events; the providers may disagree on a field, and often omit one."""
    amounts = st.sampled_from([draw(cents), draw(cents)])
    reported = st.builds(
        PaymentReported,
        transaction_id=st.just(transaction_id),
        status=st.sampled_from(["pending", "succeeded", "failed"]),
        amount=maybe(amounts),
        currency=maybe(st.sampled_from(["EUR", "ETB"])),
        booking_reference=maybe(st.sampled_from(["BK-1", "BK-2"])),
        provider_reference=maybe(st.sampled_from(["ch_1", "ch_2"])),
        failure_reason=maybe(st.sampled_from(["card declined", "insufficient funds"])),
        occurred_at=st.sampled_from(PROVIDER_TIMES),
    )
    refunded = st.builds(
        PaymentRefunded,
        transaction_id=st.just(transaction_id),
        amount_refunded=cents,  # may exceed the amount: the rules must cap it
        currency=maybe(st.just("EUR")),
        occurred_at=st.sampled_from(PROVIDER_TIMES),
    )
    others = st.sampled_from([PaymentTimedOut(transaction_id), PaymentDisputed(transaction_id)])
    first = draw(reported)  # every payment is reported at least once, with a provider time
    rest: list[PaymentEvent] = draw(st.lists(st.one_of(reported, refunded, others),
                                             max_size=8))
    return [first, *draw(st.permutations(rest))]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Logged], list[Logged]]:
    """(canonical, arrived): the same facts, the second permuted, duplicated, interleaved."""
    canonical: list[Logged] = []
    for n in range(draw(st.integers(1, 4))):
        source = draw(st.sampled_from(["stripe", "chapa", "transactions"]))
        canonical += [Logged(source, e) for e in draw(payment_events(f"tx-{n}"))]
    repeats = draw(st.lists(st.sampled_from(canonical), max_size=len(canonical)))
    arrived = draw(st.permutations(canonical + repeats))
    return after_creation(canonical), after_creation(arrived)


def after_creation(logged: Iterable[Logged]) -> list[Logged]:
    """Move each time-out just after its payment's first record, as the log guarantees."""
    ordered: list[Logged] = []
    waiting: dict[str, list[Logged]] = {}
    created: set[str] = set()
    for item in logged:
        payment = item.event.transaction_id
        if isinstance(item.event, PaymentTimedOut) and payment not in created:
            waiting.setdefault(payment, []).append(item)
            continue
        ordered.append(item)
        if payment not in created:
            created.add(payment)
            ordered += waiting.pop(payment, [])
    return ordered


def project(logged: Sequence[Logged]) -> tuple[dict[str, TransactionState], list[tuple[
        TransactionState | None, TransactionState]]]:
    """Apply in order as the projector does; also return every step that changed a state."""
    states: dict[str, TransactionState] = {}
    steps: list[tuple[TransactionState | None, TransactionState]] = []
    for offset, item in enumerate(logged):
        before = states.get(item.event.transaction_id)
        at = PROJECTED_FROM + timedelta(seconds=offset)
        after = apply(before, item.event, item.source, offset, at)
        if after is not None:
            states[after.transaction_id] = after
            steps.append((before, after))
    return states, steps


def comparable(state: TransactionState) -> dict[str, object]:
    return {f.name: getattr(state, f.name) for f in fields(state) if f.name not in BOOKKEEPING}


@settings(max_examples=200, deadline=None)
@given(history=histories())
def test_projection_is_the_same_whatever_the_arrival_order(
        history: tuple[list[Logged], list[Logged]]) -> None:
    canonical, arrived = history
    expected, _ = project(canonical)
    got, _ = project(arrived)
    assert {k: comparable(v) for k, v in got.items()} == {
        k: comparable(v) for k, v in expected.items()}


@settings(max_examples=100, deadline=None)
@given(history=histories())
def test_succeeded_is_never_downgraded(history: tuple[list[Logged], list[Logged]]) -> None:
    _, steps = project(history[1])
    for before, after in steps:
        if before is not None and before.status in SETTLED:
            assert after.status in SETTLED, (before.status, after.status)


@settings(max_examples=100, deadline=None)
@given(history=histories())
def test_a_refund_never_exceeds_the_captured_amount(
        history: tuple[list[Logged], list[Logged]]) -> None:
    _, steps = project(history[1])
    for _, after in steps:
        assert after.refunded_amount >= 0
        if after.amount is not None:
            assert after.refunded_amount <= after.amount
        if after.refunded_amount > 0 and after.status in REFUNDED:
            assert after.status == ("partially_refunded" if after.amount is not None
                                    and after.refunded_amount < after.amount else "refunded")


@settings(max_examples=50, deadline=None)
@given(history=histories())
def test_applying_an_event_twice_changes_nothing_the_second_time(
        history: tuple[list[Logged], list[Logged]]) -> None:
    states, _ = project(history[0])
    for offset, item in enumerate(history[0], start=1000):
        state = states[item.event.transaction_id]
        assert apply(state, item.event, item.source, offset, PROJECTED_FROM) is None


# --- the rules on examples an operator would recognise --------------------------------------


def run(*events: PaymentEvent, source: str = "stripe") -> TransactionState:
    states, _ = project([Logged(source, event) for event in events])
    return states["pi_1"]


def paid(status: PaymentStatus = "succeeded", **extra: object) -> PaymentReported:
    return PaymentReported("pi_1", status, amount=Decimal("100.00"), currency="EUR",
                           occurred_at=PROVIDER_TIMES[0], **extra)  # type: ignore[arg-type]


def refund(total: str) -> PaymentRefunded:
    return PaymentRefunded("pi_1", Decimal(total), "EUR", PROVIDER_TIMES[1])


def test_a_failure_arriving_after_success_leaves_it_succeeded() -> None:
    state = run(paid(), paid("failed", failure_reason="card declined"))
    assert state.status == "succeeded"


def test_a_failed_payment_that_is_retried_successfully_is_succeeded() -> None:
    state = run(paid("failed", failure_reason="card declined"), paid())
    assert (state.status, state.failure_reason) == ("succeeded", "card declined")


def test_a_refund_arriving_before_the_payment_is_settled_by_amount_when_it_comes() -> None:
    state = run(refund("40.00"))
    assert (state.status, state.amount) == ("refunded", None)
    state = run(refund("40.00"), paid())
    assert (state.status, state.refunded_amount) == ("partially_refunded", Decimal("40.00"))


def test_refunds_keep_the_largest_running_total_up_to_the_amount() -> None:
    assert run(paid(), refund("60.00"), refund("30.00")).refunded_amount == Decimal("60.00")
    full = run(paid(), refund("250.00"))
    assert (full.status, full.refunded_amount) == ("refunded", Decimal("100.00"))


def test_a_dispute_arriving_first_is_kept_once_the_payment_is_reported() -> None:
    state = run(PaymentDisputed("pi_1"), paid())
    assert (state.disputed, state.status, state.amount) == (True, "succeeded", Decimal("100.00"))


def test_a_time_out_applies_only_to_a_payment_still_pending() -> None:
    assert run(paid("pending"), PaymentTimedOut("pi_1")).status == "timed_out"
    assert run(paid(), PaymentTimedOut("pi_1")).status == "succeeded"
    assert run(paid("pending"), PaymentTimedOut("pi_1"), paid()).status == "succeeded"


def test_created_at_is_the_earliest_provider_time() -> None:
    later = replace(paid("pending"), occurred_at=PROVIDER_TIMES[2])
    assert run(later, paid()).created_at == PROVIDER_TIMES[0]
