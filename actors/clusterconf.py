"""The nats-server configs of a JetStream cluster: one pure renderer for every use.

``deploy/nats/node{1,2,3}.conf`` are its output for hosts ``n1..n3`` (a test keeps
them equal), the test harness and ``scripts/cluster.sh`` render the same text for
127.0.0.1 with free ports and temporary store dirs (``rbot cluster-config``).

What a node config holds:

* clients on ``<host>:<client_port>`` (never 0.0.0.0: bind the address that the
  other machines reach, and firewall the rest), optional client TLS;
* monitoring on 127.0.0.1 only;
* JetStream with its own store dir and ``sync_interval`` (``always``: fsync each
  write before the ack; ``None``: the server's default, every 2 minutes);
* the cluster: routes to every node (itself included: a server ignores its own
  route), **mutual TLS on routes** (each node presents a certificate of the
  cluster's CA and verifies the other's: a process without one cannot join, and
  no route password travels in a URL);
* ``include "auth.conf"``: the users (bcrypt hashes) and their permissions,
  rendered by ``bus.identities.render_authorization`` into the same folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

AUTH_FILE: Final = "auth.conf"
CLUSTER_NAME: Final = "rbot"


@dataclass(frozen=True, slots=True)
class Node:
    name: str  # server_name and the stem of its certificate files: n1
    host: str  # the address it binds and others reach it on: n1, 10.0.0.11, 127.0.0.1
    client_port: int = 4222
    cluster_port: int = 6222
    monitor_port: int = 8222
    store_dir: str = "/var/lib/rbot/nats"

    @property
    def client_url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"


@dataclass(frozen=True, slots=True)
class Cluster:
    nodes: tuple[Node, ...]
    tls_dir: str = "/etc/rbot/tls"  # ca.pem, <node>.pem, <node>-key.pem
    client_tls: bool = True  # clients must use tls:// (passwords cross the wire at CONNECT)
    sync_always: bool = True
    max_file_store: str = "50GB"
    max_memory_store: str = "1GB"

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def client_urls(self, first: int = 0) -> str:
        """``NATS_URL`` for a process, seeded at node ``first`` (then the others)."""
        order = self.nodes[first:] + self.nodes[:first]
        scheme = "tls" if self.client_tls else "nats"
        return ",".join(f"{scheme}://{n.host}:{n.client_port}" for n in order)


def deploy_cluster() -> Cluster:
    """The three-machine layout of ``deploy/``: hosts n1..n3, default ports."""
    return Cluster(nodes=tuple(Node(f"n{i}", f"n{i}") for i in (1, 2, 3)))


def loopback_cluster(
    root: str, ports: list[int], *, client_tls: bool = False, sync_always: bool = True
) -> Cluster:
    """Three nodes on 127.0.0.1: ``ports`` is 9 free ports (client, cluster, monitor x3)."""
    if len(ports) != 9 or len(set(ports)) != 9:
        raise ValueError("need 9 distinct ports")
    nodes = tuple(
        Node(
            f"n{i + 1}",
            "127.0.0.1",
            client_port=ports[3 * i],
            cluster_port=ports[3 * i + 1],
            monitor_port=ports[3 * i + 2],
            store_dir=f"{root}/n{i + 1}/jetstream",
        )
        for i in range(3)
    )
    return Cluster(
        nodes=nodes,
        tls_dir=f"{root}/tls",
        client_tls=client_tls,
        sync_always=sync_always,
        max_file_store="2GB",
        max_memory_store="256MB",
    )


def _tls_block(c: Cluster, n: Node, indent: str, verify: bool) -> list[str]:
    lines = [
        f"{indent}tls {{",
        f'{indent}  cert_file: "{c.tls_dir}/{n.name}.pem"',
        f'{indent}  key_file: "{c.tls_dir}/{n.name}-key.pem"',
        f'{indent}  ca_file: "{c.tls_dir}/ca.pem"',
    ]
    if verify:
        lines.append(f"{indent}  verify: true  # mutual TLS: only the cluster's CA gets in")
    lines += [f"{indent}  timeout: 2", f"{indent}}}"]
    return lines


def render_node(c: Cluster, name: str) -> str:
    """One node's config text (``include``s ``auth.conf`` from its own folder)."""
    n = c.node(name)
    out = [
        f"# RBOT Arena: node {n.name} of a {len(c.nodes)}-node NATS cluster with JetStream.",
        "# Rendered by `rbot cluster-config` (actors/clusterconf.py): edit there, not here.",
        f"# Start: nats-server -c node{c.nodes.index(n) + 1}.conf   (auth.conf beside it;"
        f" certificates in {c.tls_dir})",
        "# Every rbot process: RBOT_REPLICAS=3 and NATS_URL listing the nodes (deploy/README.md).",
        f"server_name: {n.name}",
        "# the address the other machines reach; never 0.0.0.0 without a firewall in front",
        f"listen: {n.host}:{n.client_port}",
        f"http: 127.0.0.1:{n.monitor_port}",
        "max_payload: 1MB",
        "",
    ]
    if c.client_tls:
        out.append("# clients: TLS (passwords are sent at CONNECT); clients use tls:// URLs")
        out += _tls_block(c, n, "", verify=False)
        out.append("")
    out += ["jetstream {", f'  store_dir: "{n.store_dir}"']
    if c.sync_always:
        out += [
            "  # fsync every write before the ack (the default fsyncs every 2 minutes):",
            "  # with replicas=3 an acknowledged write is also on a quorum of nodes",
            "  sync_interval: always",
        ]
    out += [
        f"  max_file_store: {c.max_file_store}",
        f"  max_memory_store: {c.max_memory_store}",
        "}",
        "",
        "cluster {",
        f"  name: {CLUSTER_NAME}",
        f"  listen: {n.host}:{n.cluster_port}",
        "  # routes are authenticated by mutual TLS: a certificate of the cluster's CA",
        *_tls_block(c, n, "  ", verify=True),
        "  routes: [",
        *(f"    {m.route_url}" for m in c.nodes),
        "  ]",
        "}",
        "",
        "# the users, bcrypt hashes only, and their permissions (bus/identities.py)",
        f'include "{AUTH_FILE}"',
        "",
    ]
    return "\n".join(out)
