"""The figures table: printed at the end of a run and kept in docs/reliability.md."""

from __future__ import annotations

import re
from pathlib import Path

from tests.chaos.harness import Figures

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
COMMAND = "scripts/test tests/chaos"
COLUMNS = ["scenario", "requests sent", "202", "503", "4xx", "no answer", "records in the log",
           "projected", "duplicates absorbed", "emails sent", "recovery (s)", "run on"]
RECORDED: dict[str, Figures] = {}  # this run's, by scenario
ORDER = ["RabbitMQ stopped for 10 s, twice", "PostgreSQL restarted",
         "PostgreSQL unreachable for 10 s", "projector killed (SIGKILL) 10 times",
         "a gunicorn worker killed (SIGKILL)", "SMTP server refusing for 10 s",
         "RabbitMQ memory alarm (publishers blocked)"]

INTRO = f"""# Reliability figures

Each row is one fault injected into the real processes (ingest with two gunicorn workers,
projector, mailer, scheduler) on a private RabbitMQ node and a private PostgreSQL cluster,
under a steady load of about 30 signed webhooks a second on loopback: transactions, Stripe,
Chapa and bookings, one delivery in four sent twice, a few forged or invalid ones. Every
delivery answered 503 or not answered at all is sent again once the fault is over, as a
provider would. Each scenario then checks that:

- every delivery answered 202 is in the log, and projected exactly once (one `events` row per
  record, one that is not a `duplicate` per id);
- nothing answered 4xx is in the log, and no valid delivery was ever refused;
- every email was sent, and at most once: the SMTP sink never receives a Message-ID twice and
  the outbox never holds an (event, template) twice.

*Records in the log* also count the scheduler's deadline records (bookings left unpaid expire,
more of them the longer a scenario runs), and records whose 503 or lost answer came after the
broker had them; each is *projected* once or absorbed as a *duplicate*.

*Recovery* is the time from the fault's end until the lag is zero: every record in the log
projected and every email that met the fault sent. While RabbitMQ is stopped or blocked nothing
reaches the log, so the projector has nothing to catch up on; the deliveries answered 503 are
the senders' to retry, and are counted in the table.

Durations: RabbitMQ is stopped for 10 s, twice; PostgreSQL is unreachable for 30 s; the SMTP
server refuses for 20 s; the projector is killed 10 times.

The figures below are the last ones each scenario produced, written by the test run itself
(`tests/chaos/conftest.py`) with:

```sh
{COMMAND}
```

"""


CLUSTER_COMMAND = "scripts/test tests/chaos/test_cluster.py"
CLUSTER_COLUMNS = ["scenario", "load", "requests sent", "202", "503", "no answer", "4xx",
                   "202 lost", "projected twice", "503 for (s)", "projector resumed after (s)",
                   "recovery (s)", "run on"]
CLUSTER_RECORDED: dict[tuple[str, ...], list[str]] = {}  # this run's, by (scenario, load)
CLUSTER_ORDER = ["the node leading the stream killed (SIGKILL)",
                 "the node ingest and the projector use killed (SIGKILL)",
                 "the leading node cut off (stop_app) for 10 s", "rolling restart, node by node"]

CLUSTER_INTRO = f"""
## On a three-node cluster

The same processes and load, on three private RabbitMQ 3.10 nodes joined into one cluster, the
log's stream on all three (`HOOKLINE_STREAM_REPLICAS=3`) and every process given the three
nodes in `HOOKLINE_AMQP_URL`. The stream is declared on node 0, which leads it; the processes
are given the nodes in the order 1, 2, 0 and so connect to node 1. The load is a bounded
generator of signed deliveries at a fixed rate (*load*: rate, duration; in a rolling restart it
runs until the third node is back), on loopback; *requests sent* shows the rate reached (on the
test machine's two shared cores, about 190/s of 200 asked, 275/s of 300).

*503 for* is the time from the first to the last answer 503 (or no answer) after the fault
(in a rolling restart, the sum of that over the three nodes' restarts); *projector resumed
after* is the time from the fault until the first delivery sent after it is projected (in a
rolling restart, the longest of the three). *202 lost* and *projected twice* are counted from
the `events` table and asserted zero. A node *cut off* is stopped with `rabbitmqctl stop_app`
(its application stops, its connections close, its peers see it gone; the VM stays up) for
10 s and started again: this machine has no `iptables`, so a real partition of the
distribution port was not made.

Written by the test run itself with:

```sh
{CLUSTER_COMMAND}
```

A longer run is the same code with `CLUSTER_LOAD_RATE=300 CLUSTER_LOAD_SECONDS=60`.

"""


def table(rows: list[list[str]], columns: list[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def previous_rows(columns: list[str] = COLUMNS, key: int = 1) -> dict[tuple[str, ...], list[str]]:
    """The rows of the document's table with these columns, by their first `key` cells (a
    load by its rate only: a rolling restart's duration differs from run to run)."""
    if not DOC.exists():
        return {}
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == len(columns) and cells[0] != columns[0]:
            rows[tuple(cell.split("/s")[0] for cell in cells[:key])] = cells
    return rows


def record_cluster(done: Figures, load: str, refusing: float, resumed: float,
                   lost_doubled: tuple[int, int]) -> None:
    row = [done.scenario, load, str(done.requests), str(done.accepted), str(done.unavailable),
           str(done.no_answer), str(done.refused), str(lost_doubled[0]), str(lost_doubled[1]),
           f"{refusing:.1f}", f"{resumed:.1f}", f"{done.recovery:.1f}", done.when]
    CLUSTER_RECORDED[(done.scenario, load.split("/s")[0])] = row
    print(f"\ncluster figures: {row}")


def cluster_rows() -> list[list[str]]:
    """This run's cluster figures, with the last known ones of the others."""
    rows = previous_rows(CLUSTER_COLUMNS, key=2)
    rows.update(CLUSTER_RECORDED)
    place = {name: n for n, name in enumerate(CLUSTER_ORDER)}
    return [rows[key] for key in sorted(rows, key=lambda k: (place.get(k[0], 99), float(k[1])))]


def merged_rows() -> list[list[str]]:
    """This run's figures, with the last known ones of scenarios that did not run."""
    rows = {key[0]: row for key, row in previous_rows().items()}
    rows.update({name: figures.row() for name, figures in RECORDED.items()})
    place = {name: n for n, name in enumerate(ORDER)}
    return [rows[name] for name in sorted(rows, key=lambda name: place.get(name, len(ORDER)))]


def write_doc() -> None:
    DOC.write_text(INTRO + table(merged_rows()) + hand_written_sections() + CLUSTER_INTRO
                   + table(cluster_rows(), CLUSTER_COLUMNS))


def hand_written_sections() -> str:
    """The document's `## ` sections this writer does not make (measured and written by hand,
    such as the slow-client figures), kept as they are."""
    if not DOC.exists():
        return ""
    parts = re.split(r"(?m)^(?=## )", DOC.read_text())[1:]
    own = CLUSTER_INTRO.lstrip("\n").splitlines()[0]
    return "".join("\n" + part.rstrip("\n") + "\n" for part in parts
                   if not part.startswith(own))
