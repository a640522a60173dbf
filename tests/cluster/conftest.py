"""Fixtures: a 3-node NATS cluster of the test's own (tests/cluster/harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rbot.bus.connection import Bus
from tests.chaos.conftest import spawn  # noqa: F401 (the fixture)
from tests.cluster.harness import NatsCluster


@pytest.fixture
def nats_cluster(
    tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "cluster", prefix, partitions=3)
    # client TLS: nats-py's default SSL context trusts SSL_CERT_FILE (the test's CA)
    monkeypatch.setenv("SSL_CERT_FILE", cluster.ca_file)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        for node in cluster.nodes:  # kept for a failure's diagnosis, beside the rbot logs
            (tmp_path / f"{node.name}.log").write_text("".join(node.log))


@pytest.fixture
async def cluster_bus(nats_cluster: NatsCluster) -> AsyncIterator[Bus]:
    """The test's own connection, as the operator (it provisions)."""
    bus = await nats_cluster.connect("operator", name="cluster-test")
    try:
        yield bus
    finally:
        await bus.close()
