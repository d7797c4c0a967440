"""A private three-node RabbitMQ cluster: its own nodes, ports, data and Erlang cookie."""

from __future__ import annotations

import logging
import secrets
import subprocess
from dataclasses import dataclass, field

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from tests.faults.support import PrivateBroker, _run
from tests.processes import eventually, running

log = logging.getLogger(__name__)


@dataclass
class ClusterNode(PrivateBroker):
    """A private node that carries the cluster's cookie: a node or CLI without it cannot reach
    it, and it cannot reach the machine's own node (whose cookie is another)."""

    cookie: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env,
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"-setcookie {self.cookie}"}

    def ctl(self, *args: str) -> str:
        return _run(["rabbitmqctl", "-n", self.node, "--erlang-cookie", self.cookie, "-q",
                     *args], self.env)

    def boot(self) -> None:
        """Start the node's VM again after a kill or a shutdown, and wait until it serves."""
        pid_file = self.workdir / "pid"
        pid_file.unlink(missing_ok=True)  # the killed VM's: `wait` would take it for the new
        _run(["rabbitmq-server", "-detached"], self.env)
        for attempt in Retrying(stop=stop_after_delay(90), wait=wait_fixed(0.2), reraise=True,
                                retry=retry_if_exception(_read_while_written)):
            with attempt:
                self.ctl("wait", str(pid_file), "--timeout", "90")
        self.ctl("await_startup", "--timeout", "90")

    def kill(self) -> None:
        """SIGKILL the node's VM: no goodbye to its peers or clients."""
        self._kill()

        def gone() -> None:
            assert not _vm_alive(self), f"{self.node} survived SIGKILL"

        eventually(gone, timeout=30, interval=0.05)

    def shutdown(self) -> None:
        self.ctl("shutdown")


@dataclass
class PrivateCluster:
    """Three private nodes joined into one cluster."""

    size: int = 3
    cookie: str = field(default_factory=lambda: secrets.token_hex(20).upper())
    nodes: list[ClusterNode] = field(default_factory=list)

    def start(self) -> PrivateCluster:
        self.nodes = [ClusterNode(cookie=self.cookie) for _ in range(self.size)]
        for node in self.nodes:
            node.start()
        first = self.nodes[0].node
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first)
            node.start_app()
        self.nodes[0].ctl("await_online_nodes", str(self.size), "--timeout", "90")
        return self

    def urls(self, order: list[int] | None = None) -> str:
        """HOOKLINE_AMQP_URL naming the nodes in `order` (all, in their order, by default)."""
        return ",".join(self.nodes[k].url for k in (order or range(self.size)))

    def node_named(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.node == name)

    def running(self) -> list[ClusterNode]:
        """The nodes whose application runs, as the first reachable node sees them."""
        for node in self.nodes:
            try:
                listing = node.ctl("eval", "rabbit_nodes:all_running().")
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            return [n for n in self.nodes if n.node in listing]
        return []

    def leader(self, stream: str) -> ClusterNode:
        """The node that leads `stream` now."""
        for node in self.nodes:
            try:
                listing = node.ctl("list_queues", "name", "leader", "--no-table-headers")
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            for line in listing.splitlines():
                name, _, leader = line.partition("\t")
                if name == stream:
                    return self.node_named(leader.strip())
        raise LookupError(f"no node reports a leader for {stream}")

    def heal(self) -> None:
        """Every node running again, whatever a scenario did to it."""
        for node in self.nodes:
            if not _vm_alive(node):
                node.boot()
            else:
                node.start_app()
        self.nodes[0].ctl("await_online_nodes", str(self.size), "--timeout", "90")

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()


def _vm_alive(node: ClusterNode) -> bool:
    pid_file = node.workdir / "pid"
    pid = pid_file.read_text().strip() if pid_file.exists() else ""
    return pid.isdigit() and bool(running([int(pid)]))


def _read_while_written(exc: BaseException) -> bool:
    """The pid file read while the new VM was still writing it."""
    return isinstance(exc, RuntimeError) and "garbage_in_pid_file" in str(exc)
