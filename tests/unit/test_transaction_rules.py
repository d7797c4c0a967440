"""The transaction state rules: the projection does not depend on arrival order or repeats.

A history is what sources said about a few payments, in the order they said it (canonical).
A payment is one source's: several sources may use the same id, each its own row. Each payment
has one set of facts (amount, currency, accounts, booking), which each report states or omits;
reports from senders ingress could not verify (untrusted) are mixed in. What arrives is the same
records permuted, some repeated (the log's idempotency key projects a repeat once), the payments
interleaved. The one constraint kept is the log's own: the scheduler times out only a
transaction it has read as verified, so a `payment.timed_out` follows a trusted report of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.domain.events import (
    PaymentDisputed,
    PaymentEvent,
    PaymentRefunded,
    PaymentReported,
    PaymentStatus,
    PaymentTimedOut,
)
from hookline.domain.transactions import REFUNDED, Refused, TransactionState, apply

BOOKKEEPING = {"processed_at", "updated_at", "last_offset"}  # when, not what
PROVIDER_TIMES = [datetime(2024, 5, day, 12, tzinfo=UTC) for day in (1, 2, 3)]
PROJECTED_FROM = datetime(2024, 6, 1, tzinfo=UTC)  # projection happens after the providers
SETTLED = {"succeeded"} | REFUNDED
Key = tuple[str, str]


@dataclass(frozen=True)
class Logged:
    key: int  # the record's idempotency key: a repeat is projected once
    source: str
    event: PaymentEvent
    trusted: bool = True

    @property
    def row(self) -> Key:
        return self.event.transaction_id, self.source


def maybe(values: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | values


cents = st.integers(1, 100_000).map(lambda n: Decimal(n).scaleb(-2))


@st.composite
def payment_events(draw: st.DrawFn, transaction_id: str, source: str,
                   ) -> list[tuple[PaymentEvent, bool]]:
    """One payment's reports, each trusted or not; each states its facts or omits them."""
    fact = {name: draw(values) for name, values in (
        ("amount", cents), ("currency", st.sampled_from(["EUR", "ETB"])),
        ("booking_reference", st.sampled_from(["BK-1", "BK-2"])),
        ("source_account", st.sampled_from(["acct-a", "acct-b"])))}
    running_total = draw(st.booleans())  # a source reports refunds one way
    reported = st.builds(
        PaymentReported,
        transaction_id=st.just(transaction_id),
        status=st.sampled_from(["pending", "succeeded", "failed"]),
        **{name: maybe(st.just(value)) for name, value in fact.items()},
        provider_reference=maybe(st.sampled_from(["ch_1", "ch_2"])),
        failure_reason=maybe(st.sampled_from(["card declined", "insufficient funds"])),
        occurred_at=st.sampled_from(PROVIDER_TIMES),
    )
    refunded = st.builds(
        PaymentRefunded,
        transaction_id=st.just(transaction_id),
        amount_refunded=cents,  # may exceed the amount: the rules must cap it
        currency=maybe(st.just(fact["currency"])),
        occurred_at=st.sampled_from(PROVIDER_TIMES),
        running_total=st.just(running_total),
    )
    others = st.sampled_from([PaymentTimedOut(transaction_id, source),
                              PaymentDisputed(transaction_id)])
    first = draw(reported)  # every payment is reported at least once, with a provider time
    rest: list[PaymentEvent] = draw(st.lists(st.one_of(reported, refunded, others),
                                             max_size=8))
    marked = [(e, isinstance(e, PaymentTimedOut) or draw(st.booleans()))
              for e in [first, *draw(st.permutations(rest))]]
    if not marked[0][1] and any(trusted for _, trusted in marked):
        marked.append((draw(reported), True))  # a verified payment is reported verified too
    return marked


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Logged], list[Logged]]:
    """(canonical, arrived): the same records, the second permuted, repeated, interleaved."""
    rows = draw(st.lists(st.tuples(st.sampled_from(["tx-0", "tx-1"]),
                                   st.sampled_from(["stripe", "chapa", "transactions"])),
                         min_size=1, max_size=4, unique=True))
    canonical: list[Logged] = []
    for transaction_id, source in rows:
        for event, trusted in draw(payment_events(transaction_id, source)):
            canonical.append(Logged(len(canonical), source, event, trusted))
    repeats = draw(st.lists(st.sampled_from(canonical), max_size=len(canonical)))
    arrived = draw(st.permutations(canonical + repeats))
    return after_creation(canonical), after_creation(arrived)


def after_creation(logged: Iterable[Logged]) -> list[Logged]:
    """Move each time-out just after its payment's first trusted report, as the log
    guarantees (the scheduler reads only trusted rows); one with none is never written."""
    ordered: list[Logged] = []
    waiting: dict[Key, list[Logged]] = {}
    created: set[Key] = set()
    for item in logged:
        if isinstance(item.event, PaymentTimedOut) and item.row not in created:
            waiting.setdefault(item.row, []).append(item)
            continue
        ordered.append(item)
        if item.trusted and item.row not in created:
            created.add(item.row)
            ordered += waiting.pop(item.row, [])
    return ordered


def project(logged: Sequence[Logged]) -> tuple[dict[Key, TransactionState], list[tuple[
        TransactionState | None, TransactionState]]]:
    """Apply in order as the projector does; also return every step that changed a state."""
    states: dict[Key, TransactionState] = {}
    steps: list[tuple[TransactionState | None, TransactionState]] = []
    seen: set[int] = set()
    refusals: list[tuple[str, bool]] = []
    for offset, item in enumerate(logged):
        if item.key in seen:
            continue
        seen.add(item.key)
        before = states.get(item.row)
        at = PROJECTED_FROM + timedelta(seconds=offset)
        try:
            after = apply(before, item.event, item.source, offset, at, item.trusted)
        except Refused as refused:
            refusals.append((refused.outcome, item.trusted))
            continue
        if after is not None:
            states[item.row] = after
            steps.append((before, after))
    # no conflicts in these histories: only an unverified report about a verified payment
    assert set(refusals) <= {("ignored", False)}
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
def test_a_row_holds_only_what_its_own_source_reported(
        history: tuple[list[Logged], list[Logged]]) -> None:
    states, _ = project(history[1])
    for (transaction_id, source), state in states.items():
        own = [i for i in history[0] if i.row == (transaction_id, source)
               and i.trusted == state.trusted]  # a trusted row: trusted reports only
        for name in ("amount", "booking_reference", "source_account", "provider_reference",
                     "failure_reason"):
            said = {getattr(i.event, name, None) for i in own}
            assert getattr(state, name) in said | {None}, (name, source)
        assert state.source == source
        assert own


@settings(max_examples=100, deadline=None)
@given(history=histories())
def test_a_verified_succeeded_payment_is_never_downgraded(
        history: tuple[list[Logged], list[Logged]]) -> None:
    _, steps = project(history[1])
    for before, after in steps:
        if before is not None and before.trusted and before.status in SETTLED:
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


def once_only(event: PaymentEvent) -> bool:
    """A refund reported one by one adds up: the log's key, not the rule, keeps it once."""
    return isinstance(event, PaymentRefunded) and not event.running_total


@settings(max_examples=50, deadline=None)
@given(history=histories())
def test_applying_a_report_twice_changes_nothing_the_second_time(
        history: tuple[list[Logged], list[Logged]]) -> None:
    states, _ = project(history[0])
    for offset, item in enumerate(history[0], start=1000):
        state = states.get(item.row)
        if once_only(item.event) or state is None:
            continue
        if not item.trusted and state.trusted:  # an untrusted report about a verified payment
            with pytest.raises(Refused, match="untrusted"):
                apply(state, item.event, item.source, offset, PROJECTED_FROM, item.trusted)
            continue
        assert apply(state, item.event, item.source, offset, PROJECTED_FROM,
                     item.trusted) is None


# --- the rules on examples an operator would recognise --------------------------------------


def run(*events: PaymentEvent, source: str = "stripe", trusted: bool = True) -> TransactionState:
    states, _ = project([Logged(n, source, event, trusted) for n, event in enumerate(events)])
    return states[("pi_1", source)]


def paid(status: PaymentStatus = "succeeded", **extra: object) -> PaymentReported:
    return PaymentReported("pi_1", status, **{"amount": Decimal("100.00"), "currency": "EUR",
                                              "occurred_at": PROVIDER_TIMES[0], **extra})  # type: ignore[arg-type]


def refund(total: str, running_total: bool = True) -> PaymentRefunded:
    return PaymentRefunded("pi_1", Decimal(total), "EUR", PROVIDER_TIMES[1], running_total)


def test_a_failure_arriving_after_success_leaves_it_succeeded() -> None:
    state = run(paid(), paid("failed", failure_reason="card declined"))
    assert (state.status, state.failure_reason) == ("succeeded", None)


def test_a_failed_payment_that_is_retried_successfully_is_succeeded_without_the_reason() -> None:
    state = run(paid("failed", failure_reason="card declined"), paid())
    assert (state.status, state.failure_reason) == ("succeeded", None)


def test_a_report_whose_money_differs_is_a_conflict_never_merged() -> None:
    pending = paid("pending", amount=Decimal("100"), currency="USD")
    state = apply(None, pending, "transactions", 0, PROJECTED_FROM)
    other = paid("succeeded", amount=Decimal("5000"), currency="EUR")
    with pytest.raises(Refused, match="conflict: the report's ") as refused:
        apply(state, other, "transactions", 1, PROJECTED_FROM)
    assert refused.value.outcome == "rejected"
    with pytest.raises(Refused, match="currency differs EUR where USD is known"):
        apply(state, replace(other, amount=Decimal("100.00")), "transactions", 1, PROJECTED_FROM)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_the_captured_amount_of_a_success_supersedes_the_amount_asked_for(
        order: tuple[int, int]) -> None:
    """A Stripe intent asks for 100.00 while processing and captures 80.00 (a partial capture,
    or an amount changed before confirmation): the payment succeeded with 80.00, whichever of
    the two reports arrives first; it is no conflict."""
    reports = (paid("pending"), paid(amount=Decimal("80.00")))
    state = run(*(reports[k] for k in order))
    assert (state.status, state.amount) == ("succeeded", Decimal("80.00"))


def test_two_successes_with_different_amounts_conflict() -> None:
    state = apply(None, paid(), "stripe", 0, PROJECTED_FROM)
    with pytest.raises(Refused, match=r"conflict: the report's amount differs 80\.00 where"):
        apply(state, paid(amount=Decimal("80.00")), "stripe", 1, PROJECTED_FROM)


def test_a_pending_report_in_another_currency_still_conflicts_with_a_success() -> None:
    state = apply(None, paid(), "stripe", 0, PROJECTED_FROM)
    with pytest.raises(Refused, match="currency differs USD where EUR is known"):
        apply(state, paid("pending", currency="USD"), "stripe", 1, PROJECTED_FROM)


def test_a_refund_arriving_before_the_payment_is_settled_by_amount_when_it_comes() -> None:
    state = run(refund("40.00"))
    assert (state.status, state.amount) == ("refunded", None)
    state = run(refund("40.00"), paid())
    assert (state.status, state.refunded_amount) == ("partially_refunded", Decimal("40.00"))


def test_refunds_keep_the_largest_running_total_up_to_the_amount() -> None:
    assert run(paid(), refund("60.00"), refund("30.00")).refunded_amount == Decimal("60.00")
    full = run(paid(), refund("250.00"))
    assert (full.status, full.refunded_amount) == ("refunded", Decimal("100.00"))


def test_refunds_reported_one_by_one_add_up_to_the_amount() -> None:
    state = run(paid(), refund("40.00", False), refund("30.00", False), source="chapa")
    assert (state.status, state.refunded_amount) == ("partially_refunded", Decimal("70.00"))
    state = run(refund("80.00", False), paid(), refund("30.00", False), source="chapa")
    assert (state.status, state.refunded_amount) == ("refunded", Decimal("100.00"))


def test_an_unverified_report_never_changes_a_verified_payment() -> None:
    verified = apply(None, paid("pending"), "transactions", 0, PROJECTED_FROM)
    with pytest.raises(Refused, match="untrusted report for a verified payment"):
        apply(verified, paid(), "transactions", 1, PROJECTED_FROM, trusted=False)


def test_a_verified_report_replaces_what_only_unverified_ones_said() -> None:
    unverified = run(paid(source_account="acct-x"), trusted=False)
    assert (unverified.trusted, unverified.status) == (False, "succeeded")
    verified = apply(unverified, paid("pending", source_account="acct-y"), "stripe", 1,
                     PROJECTED_FROM)
    assert verified is not None
    assert (verified.trusted, verified.status, verified.source_account) == (
        True, "pending", "acct-y")


def test_a_dispute_arriving_first_is_kept_once_the_payment_is_reported() -> None:
    state = run(PaymentDisputed("pi_1"), paid())
    assert (state.disputed, state.status, state.amount) == (True, "succeeded", Decimal("100.00"))


def test_a_time_out_applies_only_to_a_payment_still_pending() -> None:
    timed_out = PaymentTimedOut("pi_1", "stripe")
    assert run(paid("pending"), timed_out).status == "timed_out"
    assert run(paid(), timed_out).status == "succeeded"
    assert run(paid("pending"), timed_out, paid()).status == "succeeded"
    assert run(paid("pending"), timed_out, trusted=False).status == "pending"


def test_created_at_is_the_earliest_provider_time() -> None:
    later = replace(paid("pending"), occurred_at=PROVIDER_TIMES[2])
    assert run(later, paid()).created_at == PROVIDER_TIMES[0]
