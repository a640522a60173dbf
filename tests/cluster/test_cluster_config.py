"""The cluster's configs: deploy/'s files are the renderer's output, they parse
(``nats-server -t``), and on a running 3-node cluster every stream and KV bucket
is created with three replicas, routes are mutual TLS and clients must log in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rbot.actors.clustercli import write_cluster
from rbot.actors.clusterconf import Cluster, deploy_cluster, render_node
from rbot.actors.clustertls import make_tls
from rbot.bus.connection import AuthRefused, Bus, BusClosed, connect
from rbot.bus.credentials import NatsAuth
from rbot.bus.provision import BUCKET_SPECS, provision, stream_configs
from tests.cluster.harness import NatsCluster
from tests.conftest import make_settings
from tests.natsd import nats_server_bin

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_deploy_configs_are_the_rendered_ones() -> None:
    c = deploy_cluster()
    for i, node in enumerate(c.nodes):
        text = (DEPLOY / "nats" / f"node{i + 1}.conf").read_text()
        assert text == render_node(c, node.name), f"regenerate deploy/nats/node{i + 1}.conf"
        assert not [ln for ln in text.splitlines() if ln.strip().startswith("listen: 0.0.0.0")]
        assert "verify: true" in text and 'include "auth.conf"' in text


def test_deploy_configs_parse(tmp_path: Path) -> None:
    """``nats-server -t`` on deploy's layout (hosts n1..n3), certificates and users made here."""
    base = deploy_cluster()
    c = Cluster(nodes=base.nodes, tls_dir=str(tmp_path / "tls"))
    make_tls(tmp_path / "tls", {n.name: n.host for n in c.nodes})
    for path in write_cluster(tmp_path / "nats", c, make_settings("nats://x", "rbot")):
        out = subprocess.run(
            [nats_server_bin(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0 and "is valid" in out.stderr + out.stdout, out.stderr
    assert oct((tmp_path / "nats" / "auth.conf").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "tls" / "n1-key.pem").stat().st_mode & 0o777) == "0o600"


@pytest.mark.timeout(90)
async def test_every_stream_and_bucket_has_three_replicas(
    nats_cluster: NatsCluster, cluster_bus: Bus
) -> None:
    bus = cluster_bus
    await provision(bus, 3)
    names = [cfg.name for cfg in stream_configs(bus)]
    names += [f"KV_{bus.subjects.bucket(spec.name)}" for spec in BUCKET_SPECS]
    for name in names:
        assert name is not None
        info = await bus.js.stream_info(name)
        assert info.config.num_replicas == 3, name
        assert info.cluster is not None and info.cluster.leader, name
        peers = info.cluster.replicas or []
        assert len(peers) == 2, (name, peers)
    # a leader is named by the JS API, as the node-loss test asks it
    assert await nats_cluster.stream_leader(bus, "ORDERS") in {n.name for n in nats_cluster.nodes}
    # clients must log in: none, or a wrong password, is refused at once
    with pytest.raises(BusClosed):
        await connect(nats_cluster.url(1), bus.subjects, "anon", first_attempts=1)
    from pydantic import SecretStr

    with pytest.raises(AuthRefused):
        await connect(
            nats_cluster.url(2), bus.subjects, "wrong",
            auth=NatsAuth("api", SecretStr("not-the-password")), first_attempts=1,
        )  # fmt: skip
    # every node has the others as routes, over TLS
    for node in nats_cluster.nodes:
        assert any("Route connection created" in line for line in node.log), node.name
