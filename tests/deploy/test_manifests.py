"""docker-compose.yml, deploy/Dockerfile and deploy/k8s/*.yaml, parsed and checked for consistency.

No Docker engine or cluster runs here: these checks catch what would only fail
at deploy time (a setting name with a typo, a target naming no Service, a probe
on the wrong path, a Deployment without its headless Service or HPA).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from derivd.config import Settings
from derivd.dispatch.pools import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
WORKER_PORT = 50052


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") != "Kustomization"]
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def worker_command(cmd: list[str]) -> tuple[list[str], str]:
    assert cmd[:2] == ["derivd", "worker"], cmd
    args = dict(zip(cmd[2::2], cmd[3::2]))
    return args["--engines"].split(","), args["--listen"]


def check_settings_names(env: dict):
    fields = set(Settings.model_fields)
    for name in env:
        assert name.startswith("DERIVD_") and name[len("DERIVD_"):].lower() in fields, f"unknown setting {name}"


def test_compose_one_worker_service_per_family():
    services = compose()["services"]
    families = {}
    for name, svc in services.items():
        if svc.get("command", [None])[:2] == ["derivd", "worker"]:
            engines, listen = worker_command(svc["command"])
            assert listen == f"0.0.0.0:{WORKER_PORT}"
            for e in engines:
                families[e] = name
    assert set(families) == set(FAMILIES)

    gateway = services["gateway"]
    assert gateway["command"][:2] == ["derivd", "serve"]
    env = gateway["environment"]
    check_settings_names(env)
    for family in FAMILIES:
        target = env[f"DERIVD_POOL_{family.upper()}"]
        assert target == f"dns:///{families[family]}:{WORKER_PORT}"
    assert env["DERIVD_REDIS_URL"].startswith("redis://redis:")
    for svc in services.values():
        check_settings_names(svc.get("environment", {}))
    redis_args = dict(zip(services["redis"]["command"][1::2], services["redis"]["command"][2::2]))
    assert "--maxmemory" in redis_args and redis_args["--maxmemory-policy"] == "volatile-lru"  # registrations stay
    assert redis_args["--appendonly"] == "yes" and redis_args["--appendfsync"] == "everysec"
    assert f'redis-data:{redis_args["--dir"]}' in services["redis"]["volumes"]  # the file outlives the container


def test_dockerfile_builds_from_repo_paths_and_runs_the_gateway_command():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _ = line.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such path"
    cmd = yaml.safe_load(re.search(r"^CMD (\[.+\])$", text, re.M).group(1))
    assert cmd == compose()["services"]["gateway"]["command"]
    assert "OMP_NUM_THREADS=1" in text


def test_k8s_every_worker_deployment_has_headless_service_and_hpa():
    deployments, services, hpas = by_kind("Deployment"), by_kind("Service"), by_kind("HorizontalPodAutoscaler")
    families = {}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        if container.get("command", [])[:2] != ["derivd", "worker"]:
            continue
        engines, listen = worker_command(container["command"])
        assert listen == f"0.0.0.0:{WORKER_PORT}"
        svc = services[name]
        assert svc["spec"]["clusterIP"] == "None"  # headless: DNS gives every pod, gRPC balances
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert svc["spec"]["ports"][0]["port"] == WORKER_PORT
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"]["port"] == WORKER_PORT
        for e in engines:
            families[e] = name
    assert set(families) == set(FAMILIES)
    for name in deployments:
        if name == "redis":
            continue
        hpa = hpas[name]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    gateway_env = {e["name"]: e["value"] for e in
                   deployments["derivd-gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    for family in FAMILIES:
        assert gateway_env[f"DERIVD_POOL_{family.upper()}"] == f"dns:///{families[family]}:{WORKER_PORT}"


def test_k8s_gateway_probes_and_service():
    dep = by_kind("Deployment")["derivd-gateway"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    args = dict(zip(c["command"][2::2], c["command"][3::2]))
    assert ports == {"http": int(args["--port"]), "grpc": int(args["--grpc-port"])}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    svc = by_kind("Service")["derivd"]
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"http", "grpc"}
    check_settings_names({e["name"]: e["value"] for e in c["env"]})


def test_k8s_config_names_real_settings_and_redis_is_bounded():
    check_settings_names(by_kind("ConfigMap")["derivd-config"]["data"])
    pod = by_kind("Deployment")["redis"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == compose()["services"]["redis"]["command"][1:]  # one Redis configuration
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == container["args"][container["args"].index("--dir") + 1]
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and volume["persistentVolumeClaim"]["claimName"] in by_kind(
        "PersistentVolumeClaim")
    assert by_kind("Service")["redis"]["spec"]["ports"][0]["port"] == 6379
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")


def all_commands() -> list[list[str]]:
    cmds = [svc["command"] for svc in compose()["services"].values() if svc.get("command", [""])[0] == "derivd"]
    for dep in by_kind("Deployment").values():
        cmds += [c["command"] for c in dep["spec"]["template"]["spec"]["containers"] if "command" in c]
    return cmds


@pytest.mark.parametrize("sub", ["serve", "worker"])
def test_commands_are_valid_cli_invocations(sub):
    """Every command the files name uses only options of derivd's own parser (its --help, exit 0)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "derivd.cli", sub, "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    cmds = [c for c in all_commands() if c[1] == sub]
    assert cmds
    for cmd in cmds:
        for flag in cmd[2::2]:
            assert flag in r.stdout.split(), f"{shlex.join(cmd)}: {flag} is not an option of derivd {sub}"


SECRETS = ("DERIVD_TAPE_CACHE_HMAC_KEY", "DERIVD_WORKER_TOKEN")


def test_no_file_ships_a_secret_and_compose_refuses_to_start_without_them():
    """Compose interpolates each secret with ``${NAME:?message}`` (no default: `docker compose up`
    stops naming it); k8s has no Secret object to apply (the instructions create it, from
    `openssl rand`); every pod that needs them reads derivd-secrets."""
    env = compose()["x-derivd-env"]
    for name in SECRETS:
        assert re.fullmatch(r"\$\{" + name + r":\?[^}]+\}", env[name]), env[name]
    for svc in compose()["services"].values():
        if svc.get("command", [""])[0] == "derivd":
            assert all(svc["environment"][name] == env[name] for name in SECRETS)
    assert "Secret" not in {d["kind"] for d in k8s_docs()}
    instructions = (K8S / "config.yaml").read_text()
    for name in SECRETS:
        assert f'--from-literal={name}="$(openssl rand -hex 32)"' in instructions
    for dep in by_kind("Deployment").values():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c.get("command", [""])[0] == "derivd":
                assert {"secretRef": {"name": "derivd-secrets"}} in c["envFrom"]


@pytest.mark.parametrize("sub", ["serve", "worker"])
def test_a_placeholder_secret_is_refused_at_start(sub):
    """What the manifests used to ship: the server exits 2 naming the setting, before listening."""
    import subprocess
    import sys

    for name in SECRETS:
        env = {**os.environ, "DERIVD_WORKER_TOKEN": "tests-token", name: "change-me-in-production"}
        r = subprocess.run([sys.executable, "-m", "derivd.cli", sub, "--port" if sub == "serve" else "--listen",
                            "1" if sub == "serve" else "127.0.0.1:1"], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 2 and name in r.stderr and "placeholder" in r.stderr, r.stderr
