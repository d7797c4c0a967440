"""The load, the senders' bookkeeping, and the end-of-scenario checks shared by every fault."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika.exceptions
import psycopg
import requests

from hookline.config import Settings
from hookline.log.topology import BrokerUnreachable, log_end_offset, open_connection
from tests.chaos import webhooks
from tests.chaos.webhooks import Delivery, Secrets
from tests.faults.support import log_ids
from tests.mailbox import Mailbox
from tests.processes import NotYet, Pipeline, eventually

NO_ANSWER = 0  # the connection failed before a status line arrived
BOUND = 2.0  # HOOKLINE_PUBLISH_TIMEOUT in every scenario
MARGIN = 3.0  # what a busy two-core machine adds to the bound


@dataclass(frozen=True)
class Attempt:
    envelope_id: str
    status: int
    seconds: float
    at: float  # time.monotonic() when it was sent


class Senders:
    """Posts deliveries as the providers do and keeps every answer, by envelope id."""

    def __init__(self, ingest_url: str, secrets: Secrets) -> None:
        self.ingest_url, self.secrets = ingest_url, secrets
        self.deliveries: dict[str, Delivery] = {}
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()

    def send(self, delivery: Delivery) -> int:
        session = self._session()
        started = time.monotonic()
        try:
            response = session.post(f"{self.ingest_url}/v1/webhooks/{delivery.source}",
                                    data=delivery.body, headers=delivery.headers(self.secrets),
                                    timeout=(5, 30))
            status = response.status_code
            if status == 202:  # the id the senders expect is the one hookline gave
                assert response.json()["id"] == delivery.envelope_id, response.text
        except requests.RequestException:
            status = NO_ANSWER
            session.close()  # a fresh connection next time
        with self._lock:
            self.deliveries[delivery.envelope_id] = delivery
            self.attempts.append(Attempt(delivery.envelope_id, status,
                                         time.monotonic() - started, started))
        return status

    def answered_between(self, start: float, end: float) -> list[int]:
        """The answers to valid deliveries sent in [start, end]; forged ones are refused."""
        with self._lock:
            return [a.status for a in self.attempts
                    if start <= a.at <= end and self.deliveries[a.envelope_id].valid]

    def answers(self) -> dict[str, list[int]]:
        with self._lock:
            found: dict[str, list[int]] = {}
            for attempt in self.attempts:
                found.setdefault(attempt.envelope_id, []).append(attempt.status)
            return found

    def unsettled(self) -> list[Delivery]:
        """Deliveries that never got a final answer (a 202 or a 4xx): a sender retries them."""
        return [self.deliveries[key] for key, statuses in self.answers().items()
                if not any(s == 202 or 400 <= s < 500 for s in statuses)]

    def resend_unsettled(self, timeout: float = 60) -> None:
        """What a provider does once the fault is over: retry each until it is answered."""
        def settle(delivery: Delivery) -> None:
            def answered() -> None:
                status = self.send(delivery)
                if status != 202 and not 400 <= status < 500:
                    raise NotYet(f"{delivery.envelope_id}: {status}")
            eventually(answered, timeout=timeout, interval=0.5)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(settle, self.unsettled()))


class Mix:
    """Mixed traffic: bookings and their payments, plain transactions, Stripe and Chapa
    payments, a few forged or invalid deliveries, and one delivery in four sent twice."""

    def __init__(self, tag: str) -> None:
        self.tag, self.n = tag, 0
        self.later: deque[tuple[int, Delivery]] = deque()
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Delivery]:
        return self

    def __next__(self) -> Delivery:
        with self._lock:
            self.n += 1
            if self.later and self.later[0][0] <= self.n:
                return self.later.popleft()[1]
            delivery = self._fresh(self.n)
            if delivery.valid and self.n % 4 == 0:
                self.later.append((self.n + 5, delivery))  # a provider's retry, re-signed
            return delivery

    def _fresh(self, n: int) -> Delivery:
        key = f"{self.tag}-{n}"
        if n % 50 == 7:  # each source in turn
            build = (webhooks.transaction, webhooks.stripe, webhooks.chapa,
                     lambda k: webhooks.booking(f"BK-{k}", f"forger-{k}@example.com"))
            return webhooks.forged(build[n // 50 % 4](key))
        if n % 50 == 32:
            return webhooks.unkeyed_stripe(key)
        kind = n % 5
        if kind == 0:
            reference = f"BK-{key}"
            if n % 20:  # most bookings are paid a moment later; the rest expire
                payment = webhooks.transaction(f"pay-{key}", "250.00", reference, "succeeded")
                self.later.append((n + 3, payment))
            return webhooks.booking(reference, f"guest-{key}@example.com")
        if kind == 1:
            return webhooks.stripe(key, 1000 + n)
        if kind == 2:
            return webhooks.chapa(key, f"{100 + n}.00")
        return webhooks.transaction(key, f"{n}.25")


class Load:
    """A steady, bounded load: `rate` deliveries a second from a few sender threads, for at
    most `seconds` (it stops by itself then, if not stopped before)."""

    def __init__(self, senders: Senders, mix: Mix, rate: float = 30, threads: int = 4,
                 seconds: float = 600) -> None:
        self.senders, self.mix, self.rate, self.threads = senders, mix, rate, threads
        self.seconds = seconds
        self.stopping = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True, name=f"load-{i}")
                         for i in range(threads)]

    def _run(self) -> None:
        pause = self.threads / self.rate
        ends = time.monotonic() + self.seconds
        while not self.stopping.is_set() and time.monotonic() < ends:
            started = time.monotonic()
            self.senders.send(next(self.mix))
            self.stopping.wait(max(0.0, pause - (time.monotonic() - started)))

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        eventually(self._accepted_some, timeout=30)
        return self

    def _accepted_some(self) -> None:
        accepted = sum(1 for a in list(self.senders.attempts) if a.status == 202)
        assert accepted >= 20, f"only {accepted} deliveries accepted so far"

    def __exit__(self, *_: Any) -> None:
        self.stopping.set()
        self.join()

    def join(self) -> None:
        """Wait for the senders to stop (at the latest when `seconds` have passed)."""
        for worker in self._workers:
            worker.join(timeout=self.seconds + 60)


@dataclass
class Figures:
    scenario: str
    requests: int
    accepted: int
    unavailable: int
    refused: int
    no_answer: int
    in_log: int
    projected: int
    duplicates: int
    emails: int
    recovery: float
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%d"))

    def row(self) -> list[str]:
        return [self.scenario, str(self.requests), str(self.accepted), str(self.unavailable),
                str(self.refused), str(self.no_answer), str(self.in_log), str(self.projected),
                str(self.duplicates), str(self.emails), f"{self.recovery:.1f}", self.when]


@dataclass
class Chaos:
    """One scenario's world: the processes on the private broker and cluster, the senders,
    the SMTP sink, and how to tell when everything has caught up."""

    pipeline: Pipeline
    settings: Settings
    database_url: str
    mailbox: Mailbox
    senders: Senders
    mix: Mix
    workdir: Path

    @contextmanager
    def load(self, rate: float = 30, threads: int = 4, seconds: float = 600) -> Iterator[Load]:
        """The load running, once every process has shown it works: a fault injected before
        a process has started would only test that it refuses to start."""
        with Load(self.senders, self.mix, rate, threads, seconds) as running:
            eventually(self._warmed_up, timeout=60, interval=0.3)
            yield running

    def _warmed_up(self) -> None:
        with psycopg.connect(self.settings.psycopg_url, autocommit=True) as conn:
            row = conn.execute("SELECT last_offset FROM consumer_offsets "
                               "WHERE consumer = 'projector'").fetchone()
        assert row is not None, "the projector has not committed yet"
        assert self.mailbox.received(), "the mailer has not sent anything yet"
        scheduler = self.pipeline.processes["scheduler"].output()
        assert "leading scheduler" in scheduler, "the scheduler is not working yet"

    def lag(self) -> int:
        """Records not yet projected, plus emails that met a failure and are not sent yet."""
        connection = open_connection(self.settings, "chaos-lag")
        try:
            end = log_end_offset(connection, self.settings.stream)
        finally:
            connection.close()
        with psycopg.connect(self.settings.psycopg_url, autocommit=True,
                             connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT (SELECT coalesce(max(last_offset), -1) FROM consumer_offsets "
                "        WHERE consumer = 'projector'), "
                "       (SELECT count(*) FROM email_outbox WHERE status = 'failed')").fetchone()
        assert row is not None
        return max(0, end - int(row[0])) + int(row[1])

    def recovered_after(self, fault_end: float, timeout: float = 90) -> float:
        """Seconds from the fault's end until the lag is first seen at zero."""
        def caught_up() -> None:
            try:
                lag = self.lag()
            except (BrokerUnreachable, pika.exceptions.AMQPError,
                    psycopg.OperationalError) as exc:
                raise NotYet(f"cannot read the lag yet: {exc}") from None
            assert lag == 0, f"lag {lag}"
        eventually(caught_up, timeout=timeout, interval=0.2)
        return time.monotonic() - fault_end

    def settle(self, recovery: float, scenario: str) -> Figures:
        """Resend what was not answered, wait for everything to land, check, and count."""
        self.senders.resend_unsettled()
        in_log = log_ids(self.settings)  # offsets 0 … n-1; the scheduler may append more
        eventually(lambda: self._projected_up_to(len(in_log) - 1), timeout=90, interval=0.3)
        eventually(self._all_mailed, timeout=90, interval=0.3)
        return self._check(scenario, in_log, recovery)

    def _projected_up_to(self, offset: int) -> None:
        with psycopg.connect(self.settings.psycopg_url, autocommit=True) as conn:
            row = conn.execute("SELECT last_offset FROM consumer_offsets "
                               "WHERE consumer = 'projector'").fetchone()
        assert row is not None
        assert row[0] >= offset, f"projected up to {row[0]} of {offset}"

    def _all_mailed(self) -> None:
        with psycopg.connect(self.settings.psycopg_url, autocommit=True) as conn:
            open_rows = conn.execute(
                "SELECT count(*) FROM email_outbox WHERE status <> 'sent'").fetchone()
        assert open_rows is not None
        assert open_rows[0] == 0, f"{open_rows[0]} emails not sent yet"

    def _check(self, scenario: str, in_log: list[str], recovery: float) -> Figures:
        answers = self.senders.answers()
        accepted = {key for key, statuses in answers.items() if 202 in statuses}
        refused = {key for key, statuses in answers.items()
                   if any(400 <= s < 500 for s in statuses)}
        valid = {key for key, d in self.senders.deliveries.items() if d.valid}
        logged = set(in_log)
        assert _shown(accepted - logged, answers) == {}, "answered 202 but not in the log"
        assert _shown(refused & logged, answers) == {}, "answered 4xx but in the log"
        assert _shown(valid - accepted, answers) == {}, "a valid delivery was never accepted"
        assert refused == set(answers) - valid, "a valid delivery was refused, or a bad one not"
        events = self._events(len(in_log))
        assert set(events) == logged, "the events table and the log hold different ids"
        assert sum(events.values(), Counter()) == Counter(
            {"rows": len(in_log), "projected": len(logged)}), "not one events row per record"
        assert [key for key, c in events.items() if c["projected"] != 1] == [], \
            "a record projected more or less than once"
        emails = self._check_emails()
        statuses = [a.status for a in self.senders.attempts]
        figures = Figures(
            scenario, len(statuses), statuses.count(202), statuses.count(503),
            sum(1 for s in statuses if 400 <= s < 500), statuses.count(NO_ANSWER),
            len(in_log), len(logged), len(in_log) - len(logged), emails, recovery)
        print(f"\nfigures {scenario}: {figures}")
        return figures

    def _events(self, records: int) -> dict[str, Counter[str]]:
        """Per id, the events rows of the first `records` offsets, and how many are not
        duplicates."""
        with psycopg.connect(self.settings.psycopg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT id, count(*), count(*) FILTER (WHERE outcome <> 'duplicate'), "
                "       count(*) FILTER (WHERE outcome = 'rejected') "
                "FROM events WHERE \"offset\" < %s GROUP BY id", (records,)).fetchall()
        rejected = [key for key, _, _, bad in rows if bad]
        assert rejected == [], f"records rejected when projected: {rejected[:5]}"
        return {key: Counter({"rows": total, "projected": once}) for key, total, once, _ in rows}

    def _check_emails(self) -> int:
        """At most once: no Message-ID twice at the sink, no (event, template) twice."""
        with psycopg.connect(self.settings.psycopg_url, autocommit=True) as conn:
            doubled = conn.execute(
                "SELECT event_id, template FROM email_outbox GROUP BY 1, 2 HAVING count(*) > 1"
            ).fetchall()
            rows = conn.execute("SELECT count(*) FROM email_outbox").fetchone()
        assert doubled == [], f"outbox rows doubled: {doubled[:5]}"
        received = Counter(str(m["Message-ID"]) for m in self.mailbox.received())
        assert [key for key, n in received.items() if n > 1] == [], "an email arrived twice"
        assert rows is not None
        assert len(received) == rows[0], "an outbox row was never sent"
        return sum(received.values())


def _shown(ids: set[str], answers: dict[str, list[int]]) -> dict[str, list[int]]:
    """A few of `ids` with the answers each got, for a failure message."""
    return {key: answers.get(key, []) for key in sorted(ids)[:10]}


def bounded(attempts: list[Attempt]) -> None:
    """No request was held past the publish bound (plus what a busy machine adds)."""
    slowest = max(attempts, key=lambda a: a.seconds)
    assert slowest.seconds < BOUND + MARGIN, f"a request took {slowest.seconds:.1f} s"


def workers(master: int) -> list[int]:
    """The pids of a gunicorn master's worker processes."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)
