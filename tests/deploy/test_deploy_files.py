"""The deployment files, checked without a container engine: compose.yaml against the Compose
Specification's schema and against hookline itself, Prometheus and its alerts with promtool,
the Grafana dashboard against the metrics hookline exports, the Dockerfile's shape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import hookline.mail.mailer
import hookline.processes.leadership
import hookline.processes.metrics
import hookline.processes.scheduler
import hookline.web.metrics
from hookline.config import load_settings
from hookline.processes.cli import _parser
from hookline.senders.registry import ingresses

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEPLOY = ROOT / "deploy"
HOOKLINE_IMAGE = "hookline:latest"
PROCESSES = {"migrate", "front", "ingest", "project", "mail", "schedule", "api"}
METRIC_MODULES = (hookline.web.metrics, hookline.processes.metrics, hookline.mail.mailer,
                  hookline.processes.scheduler, hookline.processes.leadership)
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created")}
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def make_secrets(folder: Path) -> Path:
    """Run deploy/make-secrets into `folder`; the repository ships no secret of its own."""
    subprocess.run([str(DEPLOY / "make-secrets"), str(folder)], check=True, capture_output=True,
                   timeout=30)
    return folder


@pytest.fixture(scope="module")
def made_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_secrets(tmp_path_factory.mktemp("deploy") / "secrets")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(ROOT / "compose.yaml")  # type: ignore[no-any-return]


def hookline_services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose["services"].items():
        if service.get("image") == HOOKLINE_IMAGE:
            yield name, service


def secret_files(service: dict[str, Any]) -> dict[str, str]:
    """Where each secret of the service is mounted: /run/secrets/NAME unless a target says."""
    mounted = {}
    for entry in service.get("secrets", []):
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        mounted[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    return mounted


# --- compose.yaml ------------------------------------------------------------------------------

def test_compose_file_is_valid_against_the_compose_specification_schema(
        compose: dict[str, Any]) -> None:
    # the Compose Specification's schema as the docker-compose 1.29.2 wheel on PyPI ships it
    # (compose/config/compose_spec.json, Apache License 2.0): no package installs it alone
    schema = json.loads((HERE / "compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose)]
    assert errors == []
    broken = {**compose, "services": {**compose["services"], "api": {
        **compose["services"]["api"], "depends_on": {"migrate": {"condition": "done"}}}}}
    assert list(validator.iter_errors(broken)), "the schema accepts a wrong condition"


def test_the_docker_client_accepts_the_compose_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30, check=False).returncode != 0:
        pytest.skip("this docker client has no compose plugin (`docker compose` is not a "
                    "command); the schema check above stands in for `docker compose config`")
    done = subprocess.run([docker, "compose", "-f", str(ROOT / "compose.yaml"), "config",
                           "--quiet"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_every_hookline_service_runs_a_real_hookline_command(compose: dict[str, Any]) -> None:
    parser = _parser()
    run = set()
    for name, service in hookline_services(compose):
        program, *args = service["command"]
        assert program == "hookline", name
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{name}: `hookline {' '.join(args)}` is not a hookline command")
        run.add(args[0])
    assert run == PROCESSES


def test_every_file_setting_points_at_a_secret_the_service_mounts(
        compose: dict[str, Any], made_secrets: Path) -> None:
    declared = compose["secrets"]
    file_settings = 0
    for name, service in compose["services"].items():
        mounted = secret_files(service)
        assert set(mounted.values()) <= set(declared), name
        for variable, value in service.get("environment", {}).items():
            if variable.endswith("_FILE"):
                file_settings += 1
                assert value in mounted, f"{name}: {variable} names {value}, not a secret"
    assert file_settings >= 10
    for secret in declared.values():
        assert secret["file"].startswith("./deploy/secrets/"), secret["file"]
        assert (made_secrets / Path(secret["file"]).name).is_file(), secret["file"]


def test_every_hookline_variable_in_compose_is_a_setting_hookline_reads(
        compose: dict[str, Any]) -> None:
    sources = "".join((ROOT / "hookline" / path).read_text()
                      for path in ("config.py", "processes/cli.py"))
    known = set(re.findall(r'"(HOOKLINE_[A-Z_]+)"', sources))
    for name, service in hookline_services(compose):
        for variable in service["environment"]:
            if variable.startswith("HOOKLINE_"):
                assert variable.removesuffix("_FILE") in known, f"{name}: {variable}"


def test_the_stack_starts_in_dependency_order_with_health_checks(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, needs in service.get("depends_on", {}).items():
            if needs["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            elif needs["condition"] == "service_completed_successfully":
                assert services[target]["restart"] == "no", f"{target} must run once"
        if name != "migrate":
            assert "healthcheck" in service, f"{name} has no health check"
    for name, service in hookline_services(compose):
        waits_for = service.get("depends_on", {})
        if name in {"projector", "scheduler", "mailer", "api"}:
            assert waits_for["migrate"] == {"condition": "service_completed_successfully"}, name
    # the ingress never touches PostgreSQL: a database outage must not stop it from starting
    assert set(services["ingest"]["depends_on"]) == {"rabbitmq"}
    assert services["front"]["depends_on"] == {"ingest": {"condition": "service_healthy"}}
    assert "database_url" not in services["ingest"]["secrets"]
    assert services["projector"]["deploy"]["replicas"] >= 2
    assert services["scheduler"]["deploy"]["replicas"] >= 2


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port; "" is every one."""
    ports = []
    for entry in service.get("ports", []):
        assert isinstance(entry, str), f"write ports as HOST:PORT:PORT strings: {entry}"
        parts = entry.rsplit(":", 2)
        host, public, inside = parts if len(parts) == 3 else ["", *parts]
        ports.append((host, int(public), int(inside)))
    return ports


def test_only_the_webhooks_are_published_beyond_the_hosts_loopback(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    exposed = {(name, port) for name, service in services.items()
               for address, port, _ in published(service) if address != "127.0.0.1"}
    assert exposed == {("front", 8000)}
    loopback = {(name, port) for name, service in services.items()
                for address, port, _ in published(service) if address == "127.0.0.1"}
    assert loopback == {("front", 8001), ("rabbitmq", 15672), ("mailpit", 8025),
                        ("prometheus", 9090), ("grafana", 3000)}
    # ingest and the api are reached through the front only
    assert "ports" not in services["ingest"]
    assert "ports" not in services["api"]


def test_the_front_serves_its_ports_and_passes_requests_where_ingest_and_the_api_listen(
        compose: dict[str, Any], made_secrets: Path) -> None:
    services = compose["services"]
    front = load_settings(services["front"]["environment"])
    for address, public, inside in published(services["front"]):
        assert inside in {int(front.ingest_bind.rpartition(":")[2]),
                          int(front.api_bind.rpartition(":")[2])}, (address, public)
    for name, internal in (("ingest", front.ingest_internal_bind),
                           ("api", front.api_internal_bind)):
        host, _, port = internal.rpartition(":")
        command = services[name]["command"]
        assert host == name
        assert command[command.index("--bind") + 1] == f"0.0.0.0:{port}"
    assert services["front"]["secrets"] == [], "the front needs no secret"
    # the same body limit as ingest: the front's buffer holds the largest body ingest accepts
    assert front.max_body_bytes == load_settings(
        settings_env(services["ingest"], made_secrets)).max_body_bytes


def rabbitmq_nodes(compose: dict[str, Any]) -> list[str]:
    """The host names of the RabbitMQ services, the cluster profile's included."""
    return [service["hostname"] for service in compose["services"].values()
            if str(service.get("image", "")).startswith("rabbitmq:")]


def test_the_cluster_profile_runs_three_nodes_that_every_process_is_given(
        compose: dict[str, Any], made_secrets: Path) -> None:
    services = compose["services"]
    assert rabbitmq_nodes(compose) == ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
    assert "profiles" not in services["rabbitmq"]  # alone without the profile
    assert all(services[n]["profiles"] == ["cluster"] for n in ("rabbitmq-2", "rabbitmq-3"))
    cluster_conf = (DEPLOY / "rabbitmq" / "cluster.conf").read_text()
    for node in rabbitmq_nodes(compose):
        assert f"= rabbit@{node}\n" in cluster_conf, node
        assert "rabbitmq_erlang_cookie" in secret_files(services[node]).values(), node
    for name, service in hookline_services(compose):
        if "HOOKLINE_AMQP_URL_FILE" not in service["environment"]:
            continue  # the front: HTTP only
        settings = load_settings(settings_env(service, made_secrets))
        assert [urlsplit(url).hostname for url in settings.amqp_urls] == rabbitmq_nodes(
            compose), name
        assert settings.stream_replicas == 3, name


def settings_env(service: dict[str, Any], secrets_dir: Path) -> dict[str, str]:
    """The service's environment with each /run/secrets/NAME replaced by the file in the repo."""
    mounted = secret_files(service)
    return {k: str(secrets_dir / Path(compose_file(mounted[v])).name) if k.endswith("_FILE")
            else str(v) for k, v in service["environment"].items()}


def compose_file(secret: str) -> str:
    return str(load_yaml(ROOT / "compose.yaml")["secrets"][secret]["file"])


def check_secrets(compose: dict[str, Any], secrets_dir: Path) -> None:
    for name, service in hookline_services(compose):
        settings = load_settings(settings_env(service, secrets_dir))
        if name == "ingest":
            assert set(ingresses(settings)) == {"transactions", "stripe", "chapa", "bookings"}
    read = {path.name: path.read_text().strip() for path in secrets_dir.iterdir()}
    credentials = dict(line.split(" = ") for line in read["rabbitmq_credentials.conf"].splitlines())
    assert read["amqp_url"] == ",".join(
        f"amqp://{credentials['default_user']}:{credentials['default_pass']}@{node}:5672/%2F"
        for node in rabbitmq_nodes(compose))
    assert read["rabbitmq_password"] == credentials["default_pass"]
    assert read["database_url"] == (f"postgresql+psycopg://hookline:{read['postgres_password']}"
                                    "@postgres:5432/hookline")


def test_the_repository_ships_no_secret_values() -> None:
    tracked = subprocess.run(["git", "ls-files", "deploy/secrets"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
    assert tracked == ["deploy/secrets/.gitignore"]


def test_made_secrets_agree_with_each_other_and_load_as_production_settings(
        compose: dict[str, Any], made_secrets: Path) -> None:
    check_secrets(compose, made_secrets)  # HOOKLINE_ENV unset: no well-known value passes


def test_make_secrets_replaces_every_secret_with_consistent_random_values(
        compose: dict[str, Any], made_secrets: Path, tmp_path: Path) -> None:
    shutil.copytree(made_secrets, tmp_path / "secrets")
    make_secrets(tmp_path / "secrets")
    check_secrets(compose, tmp_path / "secrets")
    for path in made_secrets.iterdir():
        if path.name != "smtp_url":
            assert (tmp_path / "secrets" / path.name).read_text() != path.read_text(), path.name


def test_made_metrics_token_is_one_token_fit_for_prometheus(made_secrets: Path) -> None:
    token = (made_secrets / "metrics_token").read_text().strip()
    settings = load_settings({"HOOKLINE_METRICS_TOKENS_FILE": str(made_secrets / "metrics_token")})
    assert settings.metrics_tokens == (token,)
    job = next(job for job in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]
               if job["job_name"] == "api")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "secrets/metrics_token"}


# --- Dockerfile ----------------------------------------------------------------------------------

def test_one_slim_non_root_image_installs_hookline_with_pip() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert [line for line in instructions if line.startswith("FROM ")] == [
        "FROM python:3.12-slim"]
    user = max(i for i, line in enumerate(instructions) if line.startswith("USER "))
    assert instructions[user] == "USER hookline"
    assert user > max(i for i, line in enumerate(instructions) if line.startswith("RUN "))
    assert any("pip install" in line and "." in line.split() for line in instructions)
    installs = [line for line in instructions if "pip install" in line]
    assert installs[0] == "RUN pip install --require-hashes -r requirements.lock"
    assert all("--require-hashes" in line or "--no-deps" in line for line in installs)
    assert instructions[-1].startswith('CMD ["hookline"')
    copied = [line.split()[1] for line in instructions if line.startswith("COPY ")]
    assert all((ROOT / source).exists() for source in copied)
    packages = {"hookline"}
    assert packages <= set(copied)
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"deploy", ".git", "tests", ".venv"} <= ignored  # no secrets or history baked in
    assert packages.isdisjoint(ignored)


# --- Prometheus ----------------------------------------------------------------------------------

def promtool(*args: str, cwd: Path = ROOT) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed: install Debian's 'prometheus' package")
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def served_port(service: dict[str, Any]) -> int:
    """The port a hookline service answers /metrics on, from its command or its settings."""
    command = service["command"]
    if "--bind" in command:
        return int(command[command.index("--bind") + 1].rpartition(":")[2])
    binds = [v for k, v in service["environment"].items() if k.endswith("_METRICS_BIND")]
    assert len(binds) == 1, service["command"]
    return int(binds[0].rpartition(":")[2])


def test_prometheus_scrapes_every_process_where_it_serves_metrics(
        compose: dict[str, Any], made_secrets: Path) -> None:
    # beside the secrets make-secrets wrote, as in the container: promtool reads the token file
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(DEPLOY / name, made_secrets.parent / name)
    promtool("check", "config", "prometheus.yml", cwd=made_secrets.parent)
    jobs = {job["job_name"]: job for job in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    for name, service in hookline_services(compose):
        if name in {"migrate", "front"}:  # the front serves no metrics of its own
            continue
        [discovery] = jobs[name]["dns_sd_configs"]
        assert discovery["names"] == [name]
        assert discovery["port"] == served_port(service), name
    assert jobs["rabbitmq"]["static_configs"] == [{"targets": ["rabbitmq:15692"]}]
    plugins = (DEPLOY / "rabbitmq/enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in plugins


def test_alert_rules_are_clean_and_their_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("check", "rules", "deploy/alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=HERE)


def test_every_alert_has_a_runbook_section_in_the_operations_guide() -> None:
    headings = set(re.findall(r"^### (\w+)$", (ROOT / "docs/operations.md").read_text(), re.M))
    for rule in alert_rules():
        assert rule["alert"] in headings
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"


# --- metric names --------------------------------------------------------------------------------

def exported_metrics() -> set[str]:
    names = set()
    for module in METRIC_MODULES:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", text):
        if match.group() not in PROMQL_WORDS and not text[match.end():].lstrip().startswith("("):
            names.add(match.group())
    return names


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(DEPLOY / "alerts.yml")["groups"]
            for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads((DEPLOY / "grafana/hookline.json").read_text())["panels"]
    return [p for p in panels if p["type"] != "row"]


def test_the_promql_reader_finds_metrics_and_skips_functions_labels_and_durations() -> None:
    expr = ('(sum by (source) (increase(hookline_a_total{outcome="x"}[1d] offset 1h)) >= 1e3)'
            ' unless on (source) histogram_quantile(0.99, sum(rate(b_bucket[$__rate_interval])))'
            ' / ignoring (le) c and absent(up{job="ingest"} == 1)')
    assert metric_names(expr) == {"hookline_a_total", "b_bucket", "c", "up"}


def test_alerts_select_only_metrics_hookline_exports() -> None:
    exported = exported_metrics()
    assert {"hookline_outbox_oldest_pending_seconds", "hookline_stream_bytes",
            "hookline_leader", "hookline_publish_seconds_bucket"} <= exported
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names - {"up"} <= exported, f"{rule['alert']}: {names - exported}"


def test_every_dashboard_panel_queries_only_metrics_hookline_exports() -> None:
    exported = exported_metrics()
    panels = dashboard_panels()
    assert len(panels) >= 12
    queried = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']}"
            assert names <= exported, f"{panel['title']}: {names - exported}"
            queried |= names
    for wanted in ("hookline_webhooks_received_total", "hookline_ingest_request_seconds_bucket",
                   "hookline_publish_seconds_bucket", "hookline_consumer_lag",
                   "hookline_events_projected_total", "hookline_emails_total"):
        assert wanted in queried


def test_the_dashboard_is_provisioned_from_where_compose_mounts_it(
        compose: dict[str, Any]) -> None:
    provisioning = DEPLOY / "grafana/provisioning"
    [source] = load_yaml(provisioning / "datasources/prometheus.yml")["datasources"]
    [provider] = load_yaml(provisioning / "dashboards/hookline.yml")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"]
                  if v.startswith("./"))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert Path(mounts["./deploy/grafana/hookline.json"]).parent == Path(
        provider["options"]["path"])
    assert source["url"] == "http://prometheus:9090"
    panels = dashboard_panels()
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
