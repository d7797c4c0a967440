"""The figures table: printed at the end of a run and kept in docs/reliability.md."""

from __future__ import annotations

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


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def previous_rows() -> dict[str, list[str]]:
    """The rows the document holds now, by scenario."""
    if not DOC.exists():
        return {}
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == len(COLUMNS) and cells[0] != COLUMNS[0]:
            rows[cells[0]] = cells
    return rows


def merged_rows() -> list[list[str]]:
    """This run's figures, with the last known ones of scenarios that did not run."""
    rows = previous_rows()
    rows.update({name: figures.row() for name, figures in RECORDED.items()})
    place = {name: n for n, name in enumerate(ORDER)}
    return [rows[name] for name in sorted(rows, key=lambda name: place.get(name, len(ORDER)))]


def write_doc() -> None:
    DOC.write_text(INTRO + table(merged_rows()))
