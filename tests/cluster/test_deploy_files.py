"""deploy/ checked where it cannot run here: systemd units (``systemd-analyze verify``
when present, else a parse), the compose file and the Kubernetes manifests (YAML
parsed, the fields that matter asserted)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit(unit: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    service = parser["Service"]
    assert service["ExecStart"] and service["Restart"] == "always"
    assert "0.0.0.0" not in unit.read_text().split("#")[0]
    if shutil.which("systemd-analyze") is None:
        return
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # the binaries live on the target machine, not here: only that may be missing
    problems = [
        ln for ln in (out.stderr + out.stdout).splitlines()
        if ln.strip() and "is not executable" not in ln and "No such file" not in ln
    ]  # fmt: skip
    assert not problems, problems


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_compose_file() -> None:
    (doc,) = _docs(DEPLOY / "compose" / "compose.yaml")
    services = doc["services"]
    assert {"n1", "n2", "n3", "actors", "api"} <= set(services)
    for i in (1, 2, 3):
        assert services[f"n{i}"]["command"] == ["-c", f"/etc/rbot/nats/node{i}.conf"]
        assert "ports" not in services[f"n{i}"]  # NATS is not published
    assert services["actors"]["deploy"]["replicas"] == 3
    assert services["api"]["deploy"]["replicas"] == 2
    assert all(p.startswith("127.0.0.1:") for p in services["api"]["ports"])
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("actors", "api"):
        env = services[name]["environment"]
        assert env["RBOT_REPLICAS"] == "3" and env["NATS_URL"].startswith("tls://")


def test_kubernetes_manifests() -> None:
    docs = _docs(DEPLOY / "k8s" / "nats.yaml") + _docs(DEPLOY / "k8s" / "rbot.yaml")
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    sts = kinds[("StatefulSet", "nats")]
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["volumeClaimTemplates"]
    assert kinds[("Service", "nats")]["spec"]["clusterIP"] == "None"
    actors = kinds[("Deployment", "rbot-actors")]["spec"]
    api = kinds[("Deployment", "rbot-api")]["spec"]
    assert actors["replicas"] == 3 and api["replicas"] == 2
    (container,) = api["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for spec in (actors, api):
        env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
        assert env["RBOT_REPLICAS"] == "3"
        assert env["NATS_URL"].startswith("tls://") and env["NATS_URL"].count("nats-") == 3
        assert env["NATS_CREDS_DIR"] and env["SSL_CERT_FILE"]
