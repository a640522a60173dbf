"""``rbot cluster-config``: render a 3-node cluster's nats-server configs.

    rbot cluster-config DIR                    deploy/'s layout: hosts n1..n3, default ports
    rbot cluster-config DIR --hosts a,b,c      your hosts (names or addresses)
    rbot cluster-config DIR --loopback         all on 127.0.0.1, free ports, stores in DIR
    ... --make-ca                              a throwaway CA and node certificates in the TLS dir

Writes ``node{1,2,3}.conf``, ``auth.conf`` (bcrypt hashes and permissions of the
identities; the passwords are generated once in ``DIR/nats-identities``, 0600,
and never printed) and, with ``--loopback``, ``cluster.env``: what a process on
this machine needs (``NATS_URL_1..3`` seeded at each node, ``NATS_CREDS_DIR``,
``RBOT_REPLICAS=3``, ``SSL_CERT_FILE`` for client TLS), no secret in it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

from rbot.bus.config import Settings
from rbot.bus.credentials import CREDS_DIR, ensure_credentials, password_hashes
from rbot.bus.identities import render_authorization

from .clusterconf import AUTH_FILE, Cluster, Node, deploy_cluster, loopback_cluster, render_node
from .clustertls import make_tls


def add_parser(subparsers: Any) -> None:
    c = subparsers.add_parser(
        "cluster-config", help="render a 3-node NATS cluster's configs (auth, TLS routes)"
    )
    c.add_argument("dir", type=Path)
    c.add_argument("--hosts", default="n1,n2,n3", help="three host names or addresses")
    c.add_argument("--loopback", action="store_true", help="127.0.0.1, free ports, local stores")
    c.add_argument("--base-port", type=int, default=None, help="loopback: ports N..N+8")
    c.add_argument("--tls-dir", default=None, help="certificates (default /etc/rbot/tls)")
    c.add_argument("--make-ca", action="store_true", help="a throwaway CA and node certs")
    c.add_argument("--no-client-tls", action="store_true", help="plain clients (loopback only)")


def free_ports(n: int) -> list[int]:
    """``n`` ports free right now (bound to port 0, then released: a tiny race)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def node_file(i: int) -> str:
    return f"node{i + 1}.conf"


def write_cluster(folder: Path, cluster: Cluster, settings: Settings) -> list[Path]:
    """Node configs and ``auth.conf`` (0600) in ``folder``; credentials beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    hashes = password_hashes(ensure_credentials(folder / CREDS_DIR))
    _write_private(folder / AUTH_FILE, render_authorization(hashes, settings.subjects()))
    paths = []
    for i, node in enumerate(cluster.nodes):
        path = folder / node_file(i)
        path.write_text(render_node(cluster, node.name))
        paths.append(path)
    return paths


def cluster_env(folder: Path, cluster: Cluster) -> str:
    lines = [f"NATS_URL_{i + 1}={cluster.client_urls(i)}" for i in range(len(cluster.nodes))]
    lines += [f"NATS_CREDS_DIR={folder.resolve() / CREDS_DIR}", "RBOT_REPLICAS=3"]
    if cluster.client_tls:
        lines.append(f"SSL_CERT_FILE={cluster.tls_dir}/ca.pem")
    lines += [f"NATS_MONITOR_{i + 1}={n.monitor_port}" for i, n in enumerate(cluster.nodes)]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def run(args: argparse.Namespace, settings: Settings) -> int:
    folder: Path = args.dir.resolve()
    if args.loopback:
        ports = list(range(args.base_port, args.base_port + 9)) if args.base_port else free_ports(9)
        cluster = loopback_cluster(str(folder), ports, client_tls=not args.no_client_tls)
        if args.tls_dir:
            cluster = _with_tls_dir(cluster, args.tls_dir)
    else:
        hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
        if len(hosts) != 3:
            raise SystemExit("--hosts needs three hosts")
        base = deploy_cluster()
        nodes = tuple(Node(n.name, h) for n, h in zip(base.nodes, hosts, strict=True))
        cluster = Cluster(nodes=nodes, tls_dir=args.tls_dir or base.tls_dir)
    if args.make_ca:
        make_tls(Path(cluster.tls_dir), {n.name: n.host for n in cluster.nodes})
    paths = write_cluster(folder, cluster, settings)
    if args.loopback:
        (folder / "cluster.env").write_text(cluster_env(folder, cluster))
    for p in paths:
        sys.stdout.write(f"{p}\n")
    return 0


def _with_tls_dir(c: Cluster, tls_dir: str) -> Cluster:
    return Cluster(
        nodes=c.nodes,
        tls_dir=tls_dir,
        client_tls=c.client_tls,
        sync_always=c.sync_always,
        max_file_store=c.max_file_store,
        max_memory_store=c.max_memory_store,
    )
