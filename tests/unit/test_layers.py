"""The package's layers: a module imports only its own layer and the ones below it.

Read from the source (every import, also those inside functions), so a new upward import fails
here before it runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hookline"
LAYERS = ["domain", "config", "lifecycle", "log", "senders", "db", "mail", "projection",
          "readside", "web", "processes"]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else "processes"


def imports_of(path: Path) -> set[str]:
    return {name for name in every_import_of(path) if name.split(".")[0] == "hookline"}


def every_import_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def module_of(path: Path, package: Path) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    return ".".join(part for part in relative.parts if part != "__init__")


def upward_imports(package: Path = PACKAGE) -> set[tuple[str, str, str]]:
    upward = set()
    for path in package.rglob("*.py"):
        importer = module_of(path, package)
        rank = LAYERS.index(layer_of(importer))
        for imported in imports_of(path):
            target = layer_of(imported)
            if target in LAYERS and LAYERS.index(target) > rank:
                upward.add((importer, layer_of(importer), imported))
    return upward


def test_no_module_imports_a_higher_layer() -> None:
    assert upward_imports() == set()


def test_the_domain_imports_nothing_of_hookline_outside_it() -> None:
    wrong = [(p.name, name) for p in (PACKAGE / "domain").glob("*.py")
             for name in imports_of(p) if layer_of(name) != "domain"]
    assert wrong == []


def test_senders_import_only_the_domain_config_and_log() -> None:
    allowed = {"domain", "config", "log", "senders"}
    wrong = [(p.name, name) for p in (PACKAGE / "senders").glob("*.py")
             for name in imports_of(p) if layer_of(name) not in allowed]
    assert wrong == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    fake = tmp_path / "hookline"
    (fake / "domain").mkdir(parents=True)
    (fake / "domain" / "rules.py").write_text("def f():\n    from hookline.web import api\n")
    assert upward_imports(fake) == {("hookline.domain.rules", "domain", "hookline.web.api"),
                                    ("hookline.domain.rules", "domain", "hookline.web")}


BROKER_LIBRARIES = ("pika", "kombu")


def _within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == module or name.startswith(f"{module}.") for module in modules)


def broker_clients(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module that reaches RabbitMQ, with the imports by which it does: pika or kombu, or a
    module of the package that reaches it (so a path through another module counts too)."""
    imports = {module_of(path, package): every_import_of(path) for path in package.rglob("*.py")}
    clients: dict[str, set[str]] = {}
    while True:
        reaching = (*BROKER_LIBRARIES, *clients)
        found = {module: {name for name in names if _within(name, reaching)}
                 for module, names in imports.items()}
        found = {module: names for module, names in found.items() if names}
        if found == clients:
            return clients
        clients = found


def test_the_read_side_reaches_no_broker() -> None:
    clients = broker_clients()
    # the modules that open connections are found, so the check below is not vacuous
    opening = {"hookline.log.topology", "hookline.log.publisher", "hookline.log.reader"}
    assert opening <= set(clients)
    assert {module: names for module, names in clients.items()
            if layer_of(module) == "readside"} == {}


def test_the_check_finds_a_read_side_module_that_reaches_a_broker(tmp_path: Path) -> None:
    fake = tmp_path / "hookline"
    for layer in ("log", "readside"):
        (fake / layer).mkdir(parents=True)
    (fake / "log" / "topology.py").write_text("import pika\n")
    (fake / "log" / "ends.py").write_text("from dataclasses import dataclass\n")
    (fake / "readside" / "queries.py").write_text(
        "from hookline.log.ends import LogEnds\nfrom hookline.log.topology import read_log_ends\n")
    (fake / "readside" / "tail.py").write_text("def f():\n    from kombu import Connection\n")
    assert broker_clients(fake) == {
        "hookline.log.topology": {"pika"},
        "hookline.readside.queries": {"hookline.log.topology",
                                      "hookline.log.topology.read_log_ends"},
        "hookline.readside.tail": {"kombu", "kombu.Connection"},
    }
