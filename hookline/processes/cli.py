"""The `hookline` command: one sub-command per process, plus `up` to run them all."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hookline.config import Settings, SettingsError, load_settings
from hookline.lifecycle import Unreachable
from hookline.processes.logformat import LineFormatter

log = logging.getLogger("hookline")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    level = os.environ.get("HOOKLINE_LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        sys.exit(f"hookline: invalid setting: HOOKLINE_LOG_LEVEL must be DEBUG, INFO, WARNING "
                 f"or ERROR; got {level!r}")
    handler = logging.StreamHandler()
    # the web servers' filter sets `request` (" request_id=…") on lines about a request
    handler.setFormatter(LineFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s%(request)s", defaults={"request": ""}))
    logging.basicConfig(level=level, handlers=[handler])
    # pika logs a refused connection with a traceback; ours says it in one line with the URL
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # noise at import
    if args.command is up:  # the development runner: it and its children are development
        os.environ.setdefault("HOOKLINE_ENV", "development")
    try:
        settings = load_settings()
        args.command(settings, args)
    except SettingsError as exc:
        sys.exit(f"hookline: invalid setting: {exc}")
    except Unreachable as exc:
        sys.exit(f"hookline: {exc}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookline", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[Settings, argparse.Namespace], None],
                text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(command=run)
        return sub

    command("migrate", migrate, "create the database if missing and migrate it to the newest "
            "schema")
    ingest = command("ingest", ingest_command, "serve the webhook endpoints (gunicorn)")
    ingest.add_argument("--bind", help="HOST:PORT (default HOOKLINE_INGEST_BIND)")
    ingest.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ingest.add_argument("--threads", type=int, default=16, help="threads per worker (16)")
    projector = command("project", project, "project the log into PostgreSQL")
    projector.add_argument("--partition", type=int, action="append", metavar="K",
                           help="project partition K only (repeatable; default every partition "
                           "of HOOKLINE_PARTITIONS)")
    repartition = command("migrate-partitions", migrate_partitions_command, "move the "
                          "one-stream log (HOOKLINE_STREAM) into N partition streams, offline: "
                          "with ingest, the scheduler and the projector stopped")
    repartition.add_argument("--to", type=int, required=True, metavar="N",
                             help="the number of partitions (2 to 64)")
    repartition.add_argument("--restart", action="store_true",
                             help="first delete the partition streams a run that stopped "
                             "midway left behind")
    command("mail", mail, "send the email outbox over SMTP (HOOKLINE_SMTP_URL)")
    command("schedule", schedule, "append booking.expired and payment.timed_out records when "
            "deadlines pass")
    devsmtp = command("devsmtp", devsmtp_command, "a development SMTP server that keeps each "
                      "message as an .eml file")
    devsmtp.add_argument("--bind", help="HOST:PORT (default HOOKLINE_DEV_SMTP_BIND)")
    devsmtp.add_argument("--folder", default="var/mail", help="where messages go (var/mail)")
    api = command("api", api_command, "serve the operator API")
    api.add_argument("--bind", help="HOST:PORT (default HOOKLINE_API_BIND)")
    command("front", front_command, "serve HOOKLINE_INGEST_BIND and HOOKLINE_API_BIND through "
            "HAProxy, which passes only whole, well-formed requests to ingest and the API on "
            "their internal binds")
    command("up", up, "migrate, then run every process, restarting any that dies")
    from hookline.processes.operations import add_commands

    add_commands(commands, command)  # status, rebuild, outbox retry, events tail
    return parser


def migrate(settings: Settings, _args: argparse.Namespace) -> None:
    from hookline.db.schema import ensure_database, migrate

    if ensure_database(settings):
        log.info("created the database")
    migrate(settings)
    log.info("database schema is up to date")


def ingest_command(settings: Settings, args: argparse.Namespace) -> None:
    _fresh_multiprocess_dir()
    from hookline.log.topology import ensure_stream
    from hookline.web.servers import IngestServer, check_address

    bind = args.bind or settings.ingest_bind
    check_address(bind)
    _check_sources(settings)
    ensure_stream(settings)
    IngestServer(settings, bind, args.workers, args.threads).run()


def project(settings: Settings, args: argparse.Namespace) -> None:
    from hookline.config import not_a_partition
    from hookline.db.schema import check_reachable
    from hookline.lifecycle import Stopper
    from hookline.log.topology import ensure_stream
    from hookline.processes.projector import project

    partitions = sorted(set(args.partition or range(settings.partitions)))
    for k in partitions:
        if refusal := not_a_partition(k, settings.partitions):
            raise SettingsError(refusal)
    check_reachable(settings)
    ensure_stream(settings)
    _serve_metrics("HOOKLINE_PROJECTOR_METRICS_BIND", settings.projector_metrics_bind)
    project(settings, Stopper().install(), partitions)


def migrate_partitions_command(settings: Settings, args: argparse.Namespace) -> None:
    from hookline.lifecycle import Stopper
    from hookline.projection.repartition import MigrationError, migrate_partitions

    try:
        migrate_partitions(settings, args.to, Stopper().install(), restart=args.restart)
    except MigrationError as exc:
        sys.exit(f"hookline: {exc}")


def mail(settings: Settings, _args: argparse.Namespace) -> None:
    from hookline.db.schema import check_reachable
    from hookline.lifecycle import Stopper
    from hookline.processes.mailer import run_mailer

    if settings.smtp_url is None:
        raise SettingsError("HOOKLINE_SMTP_URL must be set for the mailer, e.g. "
                            "smtp://localhost:25 or smtps://user:password@host:465")
    check_reachable(settings)
    _serve_metrics("HOOKLINE_MAILER_METRICS_BIND", settings.mailer_metrics_bind)
    run_mailer(settings, Stopper().install())


def schedule(settings: Settings, _args: argparse.Namespace) -> None:
    from hookline.db.schema import check_reachable
    from hookline.lifecycle import Stopper
    from hookline.log.publisher import Publisher
    from hookline.log.topology import ensure_stream
    from hookline.processes.scheduler import Scheduler

    check_reachable(settings)
    ensure_stream(settings)
    _serve_metrics("HOOKLINE_SCHEDULER_METRICS_BIND", settings.scheduler_metrics_bind)
    stopper = Stopper().install()
    publisher = Publisher(settings, name="scheduler")
    publisher.start()
    publisher.wait_ready(10)
    try:
        Scheduler(settings, stopper, publisher).run()
    finally:
        publisher.stop()


def devsmtp_command(settings: Settings, args: argparse.Namespace) -> None:
    from hookline.lifecycle import Stopper
    from hookline.mail.devsmtp import serve

    bind = args.bind or settings.dev_smtp_bind
    try:
        serve(bind, Path(args.folder), Stopper().install())
    except OSError as exc:
        raise SettingsError(f"HOOKLINE_DEV_SMTP_BIND {bind} cannot be bound: {exc.strerror}"
                            ) from None


def _serve_metrics(variable: str, bind: str) -> None:
    from prometheus_client import start_http_server

    host, _, port = bind.rpartition(":")
    try:
        start_http_server(int(port), host)
    except OSError as exc:
        raise SettingsError(f"{variable} {bind} cannot be bound: {exc.strerror}") from None


def api_command(settings: Settings, args: argparse.Namespace) -> None:
    from hookline.db.schema import check_reachable
    from hookline.web.servers import ApiServer

    check_reachable(settings)
    if not settings.operator_tokens:
        log.warning("HOOKLINE_OPERATOR_TOKENS is not set: every API request will be refused")
    ApiServer(settings, args.bind or settings.api_bind).run()


def front_command(settings: Settings, _args: argparse.Namespace) -> None:
    from hookline.web.front import serve
    from hookline.web.servers import check_address

    for bind in (settings.ingest_bind, settings.api_bind):
        check_address(bind, reuse_port=False)
    sys.exit(serve(settings))


def up(settings: Settings, _args: argparse.Namespace) -> None:
    from hookline.processes.supervisor import run_pipeline
    from hookline.web.front import haproxy_program

    haproxy_program()  # the front needs it: say so now, not in a loop of restarts
    migrate(settings, _args)
    run_pipeline(settings)


def _check_sources(settings: Settings) -> None:
    """A malformed secret fails here in one sentence, not in a traceback from each worker."""
    from hookline.senders.registry import ingresses

    logging.disable(logging.WARNING)  # each worker logs the sources' warnings; once is enough
    try:
        ingresses(settings)
    except ValueError as exc:
        raise SettingsError(f"a webhook secret is invalid: {exc}") from None
    finally:
        logging.disable(logging.NOTSET)


def _fresh_multiprocess_dir() -> None:
    """gunicorn workers share metrics through files; start each run with none left over."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="hookline-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


if __name__ == "__main__":
    main()
