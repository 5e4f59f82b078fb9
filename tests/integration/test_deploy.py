"""deploy/ checked as its users' tools check it: hadolint on the Dockerfile, dclint (the compose
specification's schema and best practices) on the compose file, `kubectl kustomize` and
kubernetes-validate (strict, offline) on both Kubernetes overlays; and the contracts between
them and the code: every MCPGW_* variable they set is a setting, secrets are required and
never inlined, every dependency waits for health, and the lock file pins every dependency."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from services.settings import AuditSettings, ConnectorSettings, EdgeSettings, RegistrySettings
from tests.processes import NODE, NODE_DIR, ROOT

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
DCLINT = NODE_DIR / "node_modules" / ".bin" / "dclint"
KUBECTL = shutil.which("kubectl")
OVERLAYS = [DEPLOY / "k8s" / "base", DEPLOY / "k8s" / "overlays" / "production"]
SETTINGS = {
    f"MCPGW_{name.upper()}"
    for settings in (RegistrySettings, ConnectorSettings, EdgeSettings, AuditSettings)
    for name in settings.model_fields
}
SECRETS = {"MCPGW_SESSION_SECRET", "MCPGW_ADMIN_TOKEN", "MCPGW_REGISTRY_KEY"}


def run(argv: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, **kwargs)


def test_the_dockerfile_is_hadolint_clean() -> None:
    done = run([BIN / "hadolint", DEPLOY / "Dockerfile"])
    assert done.returncode == 0, done.stdout + done.stderr


def dclint(path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{NODE.parent}:/usr/bin:/bin"}
    return run([DCLINT, "-c", DEPLOY / ".dclintrc", "--max-warnings", "0", path], env=env)


@pytest.mark.skipif(not DCLINT.exists(), reason="dclint is not installed: run `make install`")
def test_the_compose_file_meets_the_compose_schema_and_dclint(tmp_path: Path) -> None:
    done = dclint(DEPLOY / "docker-compose.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    # The check can fail: a key the specification does not know is an error.
    broken = tmp_path / "docker-compose.yml"
    text = (DEPLOY / "docker-compose.yml").read_text()
    broken.write_text(text.replace("  balancer:\n", "  balancer:\n    replicas_please: 2\n", 1))
    refused = dclint(broken)
    assert refused.returncode != 0 and "additional properties" in refused.stdout


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def test_every_dependency_waits_for_health_and_every_service_restarts() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        for needed, how in service.get("depends_on", {}).items():
            assert how == {"condition": "service_healthy"}, (name, needed)
            # What is waited on has a health check: its own, or the image's HEALTHCHECK.
            assert "healthcheck" in services[needed] or "build" in services[needed], needed


def test_compose_sets_only_settings_and_requires_every_secret() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for variable, value in (service.get("environment") or {}).items():
            if variable.startswith("MCPGW_"):
                assert variable in SETTINGS, (name, variable)
            if variable in SECRETS or "PASSWORD" in variable:
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), (name, variable)
    # Session and admin secrets only where they are read: the edges.
    holders = {n for n, s in services.items() if "MCPGW_SESSION_SECRET" in (s.get("environment") or {})}
    assert holders == {"edge-1", "edge-2"}
    example = (DEPLOY / "mcpgw.env.example").read_text()
    assert all(f"\n{secret}=\n" in example for secret in SECRETS)


def test_the_balancer_sends_to_every_edge_in_the_compose_file() -> None:
    edges = {name for name in compose()["services"] if name.startswith("edge-")}
    config = (DEPLOY / "haproxy.cfg").read_text()
    assert set(re.findall(r"^\s+server (\S+) \1:8080$", config, re.MULTILINE)) == edges


def rendered(overlay: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    done = run([KUBECTL, "kustomize", overlay])
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[o.name for o in OVERLAYS])
def test_the_kubernetes_manifests_render_and_validate_strictly(overlay: Path, tmp_path: Path) -> None:
    documents = rendered(overlay)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    done = run([BIN / "kubernetes-validate", "--strict", "--quiet", manifest])
    assert done.returncode == 0, done.stdout + done.stderr
    # The check can fail: a field the schema does not know is refused.
    documents[-1].setdefault("spec", {})["replicaz"] = 1
    manifest.write_text(yaml.safe_dump_all(documents))
    assert run([BIN / "kubernetes-validate", "--strict", "--quiet", manifest]).returncode != 0


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[o.name for o in OVERLAYS])
def test_pods_run_locked_down_probed_and_with_referenced_secrets(overlay: Path) -> None:
    documents = rendered(overlay)
    assert not [d for d in documents if d["kind"] == "Secret"], "secrets are referenced, never created"
    kinds = {d["kind"] for d in documents}
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "StatefulSet"} <= kinds
    for workload in (d for d in documents if d["kind"] in ("Deployment", "StatefulSet")):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert "readinessProbe" in container, container["name"]
            for variable in container.get("env", []):
                if variable["name"].startswith("MCPGW_"):
                    assert variable["name"] in SETTINGS, variable["name"]
                if variable["name"] in SECRETS:
                    assert variable["valueFrom"]["secretKeyRef"]["name"] == "mcpgw-secrets"
    env = next(d for d in documents if d["metadata"]["name"].startswith("mcpgw-env"))
    assert set(env["data"]) <= SETTINGS


def test_the_lock_file_pins_every_dependency_the_project_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = (DEPLOY / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", lock, re.MULTILINE))
    canonical = {name.lower().replace("_", "-"): version for name, version in pinned.items()}
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = requirement.name.lower().replace("_", "-")
        assert name in canonical, f"{name} is not in deploy/requirements.lock: run uv pip compile"
        assert requirement.specifier.contains(canonical[name], prereleases=True), (name, canonical[name])
    assert lock.count("--hash=sha256:") >= len(pinned)


def test_every_service_is_given_every_nats_node_and_replicates_on_all() -> None:
    services = compose()["services"]
    nodes = {name for name in services if name.startswith("nats-")}
    for name, service in services.items():
        env = service.get("environment") or {}
        if "MCPGW_NATS_URL" in env:
            urls = env["MCPGW_NATS_URL"].split(",")
            assert {u.removeprefix("nats://").split(":")[0] for u in urls} == nodes, name
            assert int(env["MCPGW_NATS_REPLICAS"]) == len(nodes), name


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_the_kubernetes_nats_url_names_every_pod_of_the_statefulset() -> None:
    documents = rendered(OVERLAYS[0])
    nats = next(d for d in documents if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "nats")
    env = next(d for d in documents if d["metadata"]["name"].startswith("mcpgw-env"))["data"]
    pods = {f"nats-{i}.nats" for i in range(nats["spec"]["replicas"])}
    assert {u.removeprefix("nats://").split(":")[0] for u in env["MCPGW_NATS_URL"].split(",")} == pods
    assert int(env["MCPGW_NATS_REPLICAS"]) == nats["spec"]["replicas"]
