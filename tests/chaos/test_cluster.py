"""A 202 survives the loss of a node: the processes on a private three-node RabbitMQ cluster,
the log's streams on all three, under a steady load of signed webhooks while a node is killed,
cut off or restarted. Every delivery answered 202 is projected exactly once; each scenario
records its figures (docs/reliability.md, "On a three-node cluster").

The stream is declared on node 0, which therefore leads it; ingest, the projector, the mailer
and the scheduler are given the nodes in the order 1, 2, 0, so they connect to node 1."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from math import inf
from pathlib import Path

import psycopg
import pytest

from hookline.config import Settings, mask_url
from hookline.log.topology import ensure_stream
from tests.chaos import figures
from tests.chaos.conftest import running_chaos
from tests.chaos.harness import NO_ANSWER, Chaos, Figures
from tests.faults.cluster import ClusterNode, PrivateCluster
from tests.mailbox import Mailbox
from tests.processes import eventually

pytestmark = pytest.mark.disruptive
RATE = float(os.environ.get("CLUSTER_LOAD_RATE", "200"))  # deliveries a second
SECONDS = float(os.environ.get("CLUSTER_LOAD_SECONDS", "20"))  # each scenario's load
THREADS = max(4, int(RATE // 12))  # a sender thread manages about 12 deliveries a second here
PARTITION = 10.0  # how long a node stays cut off
LEADER, CLIENTS = 0, 1  # the nodes that lead the stream and that the processes use


@pytest.fixture
def chaos(rabbit_cluster: PrivateCluster, database_url: str, private_stream: str,
          mailbox: Mailbox, tmp_path: Path) -> Iterator[Chaos]:
    leader = rabbit_cluster.nodes[LEADER]
    ensure_stream(Settings(amqp_url=leader.url, stream=private_stream, stream_replicas=3))
    env = {"HOOKLINE_AMQP_URL": rabbit_cluster.urls([CLIENTS, 2, LEADER]),
           "HOOKLINE_STREAM_REPLICAS": "3"}
    with running_chaos(env, database_url, private_stream, mailbox, tmp_path) as world:
        assert rabbit_cluster.leader(private_stream) is leader
        yield world


def pause(seconds: float) -> None:
    """Let the load run through a fault for a while (pacing, not waiting for a result)."""
    time.sleep(seconds)


def test_the_stream_leader_killed_loses_no_202_and_projects_each_once(
        chaos: Chaos, rabbit_cluster: PrivateCluster) -> None:
    leader = rabbit_cluster.nodes[LEADER]
    eventually(lambda: _uses(chaos, rabbit_cluster.nodes[CLIENTS]), timeout=30)
    with chaos.load(RATE, THREADS, SECONDS) as load:
        pause(SECONDS / 3)
        fault = time.monotonic()
        leader.kill()
        resumed = _projector_resumed(chaos, fault)
        load.join()
    _record(chaos, "the node leading the stream killed (SIGKILL)", [(fault, inf)], resumed)
    assert rabbit_cluster.leader(chaos.settings.stream) is not leader


def test_the_node_the_processes_use_killed_loses_no_202_and_they_move_to_another(
        chaos: Chaos, rabbit_cluster: PrivateCluster) -> None:
    used = rabbit_cluster.nodes[CLIENTS]
    eventually(lambda: _uses(chaos, used), timeout=30)
    with chaos.load(RATE, THREADS, SECONDS) as load:
        pause(SECONDS / 3)
        fault = time.monotonic()
        used.kill()
        resumed = _projector_resumed(chaos, fault)
        load.join()
    _record(chaos, "the node ingest and the projector use killed (SIGKILL)", [(fault, inf)],
            resumed)
    eventually(lambda: _moved_away_from(chaos, used), timeout=30)


def test_a_node_cut_off_and_back_loses_no_202(chaos: Chaos,
                                              rabbit_cluster: PrivateCluster) -> None:
    leader = rabbit_cluster.nodes[LEADER]
    with chaos.load(RATE, THREADS, SECONDS) as load:
        pause(SECONDS / 4)
        fault = time.monotonic()
        leader.stop_app()  # see docs/reliability.md: the closest this machine allows
        resumed = _projector_resumed(chaos, fault)
        pause(max(0.0, fault + PARTITION - time.monotonic()))
        leader.start_app()
        healed = time.monotonic()
        load.join()
    _record(chaos, f"the leading node cut off (stop_app) for {PARTITION:g} s", [(fault, inf)],
            resumed)
    assert 202 in chaos.senders.answered_between(fault, healed), "nothing accepted while cut off"


def test_a_rolling_restart_keeps_intake_answering(chaos: Chaos,
                                                  rabbit_cluster: PrivateCluster) -> None:
    windows: list[tuple[float, float]] = []
    with chaos.load(RATE, THREADS, seconds=SECONDS + 120), ThreadPoolExecutor(3) as watch:
        started = time.monotonic()
        pause(SECONDS / 4)
        resumed = []
        for node in rabbit_cluster.nodes:
            down = time.monotonic()
            resumed.append(watch.submit(_projector_resumed, chaos, down))
            node.shutdown()
            node.boot()
            windows.append((down, time.monotonic()))
        rabbit_cluster.nodes[0].ctl("await_online_nodes", "3", "--timeout", "90")
        slowest = max(done.result() for done in resumed)
        seconds = time.monotonic() - started
    _record(chaos, "rolling restart, node by node", windows, slowest, seconds)
    for down, up in windows:
        assert 202 in chaos.senders.answered_between(down, up), "intake stopped accepting"


def _uses(chaos: Chaos, node: ClusterNode) -> None:
    """ingest's publisher and the projector's reader are connected to `node` (their last
    connection, by their logs)."""
    published, read = _last_connections(chaos)
    assert published.startswith(mask_url(node.url)), f"ingest uses {published[:60]!r}"
    assert read.startswith(f"127.0.0.1:{node.port}"), f"the projector reads {read[:40]!r}"


def _moved_away_from(chaos: Chaos, node: ClusterNode) -> None:
    """Both have connected again since `node` went away, each to one of the other nodes."""
    published, read = _last_connections(chaos)
    assert not published.startswith(mask_url(node.url)), f"ingest uses {published[:60]!r}"
    assert not read.startswith(f"127.0.0.1:{node.port}"), f"the projector reads {read[:40]!r}"
    ingest = chaos.pipeline.processes["ingest"].output()
    assert ingest.count("publisher connected to ") >= 4, "a worker has not reconnected"


def _last_connections(chaos: Chaos) -> tuple[str, str]:
    """What follows the last 'publisher connected to' of ingest and 'on node' of the
    projector."""
    ingest = chaos.pipeline.processes["ingest"].output()
    projector = chaos.pipeline.processes["projector"].output()
    return (ingest.rsplit("publisher connected to ", 1)[-1],
            projector.rsplit(" on node ", 1)[-1])


def _projector_resumed(chaos: Chaos, fault: float) -> float:
    """Seconds from the fault until the projector has projected a delivery first sent after
    it (and answered 202)."""
    before = {a.envelope_id for a in list(chaos.senders.attempts) if a.at <= fault}

    def projected_a_fresh_one() -> None:
        fresh = [a.envelope_id for a in list(chaos.senders.attempts)
                 if a.at > fault and a.status == 202 and a.envelope_id not in before]
        with psycopg.connect(chaos.settings.psycopg_url, autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM events WHERE id = ANY(%s) LIMIT 1",
                               (fresh,)).fetchone()
        assert row is not None, "nothing sent since the fault is projected yet"
    eventually(projected_a_fresh_one, timeout=120, interval=0.1)
    return time.monotonic() - fault


def _record(chaos: Chaos, scenario: str, faults: list[tuple[float, float]],
            resumed: float, seconds: float = SECONDS) -> Figures:
    """Settle (resend what was not answered; check every 202 projected exactly once) and keep
    the figures with the time ingest answered 503 and the projector took to resume."""
    recovery = chaos.recovered_after(time.monotonic())
    done = chaos.settle(recovery, scenario)
    refusing = sum(_refusing(chaos, start, end) for start, end in faults)
    figures.record_cluster(done, f"{RATE:g}/s, {seconds:.0f} s", refusing, resumed,
                           _lost_and_doubled(chaos))
    return done


def _refusing(chaos: Chaos, start: float, end: float) -> float:
    """From the first to the last answer 503 (or none) to a delivery sent in [start, end]."""
    refused = [a for a in list(chaos.senders.attempts)
               if start <= a.at <= end and a.status in (503, NO_ANSWER)]
    if not refused:
        return 0.0
    return max(a.at + a.seconds for a in refused) - min(a.at for a in refused)


def _lost_and_doubled(chaos: Chaos) -> tuple[int, int]:
    """Deliveries answered 202 that are not projected, and those projected more than once."""
    accepted = {key for key, statuses in chaos.senders.answers().items() if 202 in statuses}
    with psycopg.connect(chaos.settings.psycopg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, count(*) FILTER (WHERE outcome <> 'duplicate') "
                            "FROM events GROUP BY id").fetchall()
    projected = {key: int(n) for key, n in rows}
    lost = sum(1 for key in accepted if projected.get(key, 0) == 0)
    return lost, sum(1 for n in projected.values() if n > 1)
